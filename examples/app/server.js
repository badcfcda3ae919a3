#!/usr/bin/env node
// Sample app in the spirit of Phoenix (seed 002): a small HTTP server, no npm dependencies.
//
// Environment:
//   PORT                  port to listen on (default 3000), on HOST (default 127.0.0.1)
//   LISTEN_FDS, LISTEN_PID  socket activation (bake-agent's [app] listen, as systemd passes
//                         sockets): when LISTEN_FDS is "1" and LISTEN_PID is this process's pid,
//                         serve on the inherited listening socket, fd 3, instead of PORT/HOST
//   APP_VERSION           answered by GET /; unset: the release's own VERSION file (next to this
//                         file, one line, written when the release is cut), else "dev"
//   DB_CONNECTION_STRING  the database; only whether it is set is reported (never its value)
//   UPLOADS_DIR           where uploads go (bake-agent sets it from agent.toml [uploads] dir);
//                         unset: PUT/POST /upload and GET /download answer 503
//   READY_DELAY_MS        /health answers 503 until this long after start (default 0)
//   NEVER_READY=1         /health never answers 200 (tests of ABANDON and rollback)
//   CRASH_ON_START=1      exit(1) at once (crash-loop tests)
//   LATENCY_MS            GET / answers this long after the request came (default 0), as if it
//                         waited on a database (latency of a release, canary tests)
//   ERROR_RATE            the share of GET / answered 500 "app <version>: injected error"
//                         (default 0; a release with a bug, canary tests)
//   EMF_NAMESPACE         namespace of the request metrics it writes (default Bake/App);
//                         EMF=0: write none
//
// Request metrics: for every request except GET /health, one CloudWatch embedded-metric-format
// line on stdout once the answer is sent: Requests (1), Errors5xx (1 for a 5xx answer, else 0)
// and Latency (ms from the request's arrival to the end of the answer), all high resolution, in
// EMF_NAMESPACE with the dimension Route (the route's first path segment, "other" for a path no
// route serves: a bounded set of values), plus method and status as
// plain members. bake-agent publishes them by release (docs/metrics.md); CloudWatch Logs
// extracts them from the shipped log by Route.
//
// Routes:
//   GET  /                 "app <version>"
//   GET  /health           200 "ok" once ready, else 503
//   GET  /crash            exits the process (status 1), as Phoenix's does
//   GET  /generatecert     burns every CPU the instance has for GENERATECERT_MS (default 3000)
//                         ms, then answers: one worker thread per CPU (os.availableParallelism()),
//                         each hashing until its deadline; the answer comes once all have ended.
//                         Bounded: at most one burn runs at a time (a request that arrives during
//                         one waits for it and gets its answer), and the server keeps answering
//                         other routes (/health too) meanwhile
//   PUT|POST /upload/NAME  streams the body to UPLOADS_DIR/NAME
//   GET  /download/NAME    streams UPLOADS_DIR/NAME back
//   GET  /env/NAME         whether env variable NAME is set (yes/no; never the value)
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const os = require('os');
const { Worker } = require('worker_threads');

if (process.env.CRASH_ON_START === '1') {
  console.error('CRASH_ON_START=1: exiting');
  process.exit(1);
}

const port = parseInt(process.env.PORT || '3000', 10);
const host = process.env.HOST || '127.0.0.1';
// The release says which version it is: an image carries one release, so a fleet's instances
// answer the version of their own image whatever the launch template's environment says.
function releaseVersion() {
  try {
    return fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
  } catch {
    return '';
  }
}
const version = process.env.APP_VERSION || releaseVersion() || 'dev';
// No default: a directory under the (read-only) release would fail at the first upload, and one
// on the instance's disk would not be shared by the fleet nor reaped.
const uploadDir = process.env.UPLOADS_DIR || '';
const readyAt = Date.now() + parseInt(process.env.READY_DELAY_MS || '0', 10);
const neverReady = process.env.NEVER_READY === '1';
const certMs = Math.max(0, parseInt(process.env.GENERATECERT_MS || '3000', 10) || 0);
const cpus = (os.availableParallelism ? os.availableParallelism() : os.cpus().length) || 1;

// One thread's share of /generatecert: SHA-256 until the deadline, then the count.
const BURNER = `
const { parentPort, workerData } = require('worker_threads');
const crypto = require('crypto');
let n = 0;
while (Date.now() < workerData.end) crypto.createHash('sha256').update(String(n++)).digest();
parentPort.postMessage(n);
`;
let burning = null;

// The burn in progress, or a new one: every CPU busy until now + GENERATECERT_MS. Resolves to
// the hashes done and the threads that did them.
function burn() {
  if (burning) return burning;
  const end = Date.now() + certMs;
  const threads = Array.from({ length: cpus }, () => new Promise((resolve, reject) => {
    const w = new Worker(BURNER, { eval: true, workerData: { end } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`burner thread exited with ${code}`)));
  }));
  burning = Promise.all(threads)
    .then((counts) => ({ hashes: counts.reduce((a, b) => a + b, 0), threads: cpus }))
    .finally(() => { burning = null; });
  return burning;
}

function safeName(name) {
  // One path component: no traversal out of UPLOADS_DIR. A malformed escape (%zz) is a bad
  // name, not an exception that would end the process.
  let n;
  try {
    n = decodeURIComponent(name || '');
  } catch {
    return null;
  }
  if (!n || n === '.' || n === '..' || n.includes('/') || n.includes('\0')) return null;
  return n;
}

function send(res, code, body) {
  res.writeHead(code, { 'content-type': 'text/plain' });
  res.end(body + '\n');
}

const latencyMs = Number(process.env.LATENCY_MS || '0');
const errorRate = Number(process.env.ERROR_RATE || '0');
const emfNamespace = process.env.EMF === '0' ? null : (process.env.EMF_NAMESPACE || 'Bake/App');

const ROUTES = new Set(['/', '/crash', '/generatecert', '/env', '/upload', '/download']);

// One EMF document for the request, written when its answer has been sent.
function measure(req, res) {
  if (!emfNamespace) return;
  const start = process.hrtime.bigint();
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const first = '/' + ((req.url || '/').split(/[/?]/)[1] || '');
    const route = ROUTES.has(first) ? first : 'other';
    process.stdout.write(JSON.stringify({
      _aws: {
        Timestamp: Date.now(),
        CloudWatchMetrics: [{
          Namespace: emfNamespace,
          Dimensions: [['Route']],
          Metrics: [
            { Name: 'Requests', Unit: 'Count', StorageResolution: 1 },
            { Name: 'Errors5xx', Unit: 'Count', StorageResolution: 1 },
            { Name: 'Latency', Unit: 'Milliseconds', StorageResolution: 1 },
          ],
        }],
      },
      Route: route,
      Requests: 1,
      Errors5xx: res.statusCode >= 500 ? 1 : 0,
      Latency: Math.round(ms * 100) / 100,
      method: req.method,
      status: res.statusCode,
    }) + '\n');
  });
}

const server = http.createServer((req, res) => {
  if (req.url !== '/health') measure(req, res);
  // WHATWG URL parsing, as Node apps do: dot segments (also %2e), '\\' as '/', and a target
  // starting with '//' taken as //host/path. A target it cannot parse (//[) is a 400, not an
  // exception that would end the process.
  let url;
  try {
    url = new URL(req.url, 'http://x');
  } catch {
    return send(res, 400, 'bad request target');
  }
  const p = url.pathname;
  if (req.method === 'GET' && p === '/') {
    const answer = () => (Math.random() < errorRate
      ? send(res, 500, `app ${version}: injected error`)
      : send(res, 200, `app ${version}`));
    if (latencyMs > 0) setTimeout(answer, latencyMs);
    else answer();
    return;
  }
  if (req.method === 'GET' && p === '/health') {
    if (neverReady || Date.now() < readyAt) return send(res, 503, 'not ready');
    return send(res, 200, 'ok');
  }
  if (req.method === 'GET' && p === '/crash') {
    console.error('GET /crash: exiting');
    res.writeHead(500, { connection: 'close' });
    res.end('crashing\n', () => process.exit(1));
    return;
  }
  if (req.method === 'GET' && p === '/generatecert') {
    burn().then(
      (r) => send(res, 200, `generated after ${r.hashes} hashes on ${r.threads} threads`),
      (err) => send(res, 500, `generatecert failed: ${err.message}`),
    );
    return;
  }
  if (req.method === 'GET' && p.startsWith('/env/')) {
    const name = p.slice('/env/'.length);
    return send(res, 200, process.env[name] !== undefined ? 'yes' : 'no');
  }
  if ((req.method === 'PUT' || req.method === 'POST') && p.startsWith('/upload/')) {
    if (!uploadDir) return send(res, 503, 'no UPLOADS_DIR configured');
    const name = safeName(p.slice('/upload/'.length));
    if (!name) return send(res, 400, 'bad name');
    fs.mkdirSync(uploadDir, { recursive: true });
    const tmp = path.join(uploadDir, `.${name}.part-${process.pid}`);
    const out = fs.createWriteStream(tmp);
    let bytes = 0;
    req.on('data', (c) => { bytes += c.length; });
    req.pipe(out);
    out.on('finish', () => {
      fs.rename(tmp, path.join(uploadDir, name), (err) => {
        if (err) return send(res, 500, 'cannot store');
        send(res, 201, `stored ${bytes} bytes`);
      });
    });
    out.on('error', () => send(res, 500, 'cannot store'));
    req.on('error', () => { out.destroy(); fs.rm(tmp, () => {}); });
    return;
  }
  if (req.method === 'GET' && p.startsWith('/download/')) {
    if (!uploadDir) return send(res, 503, 'no UPLOADS_DIR configured');
    const name = safeName(p.slice('/download/'.length));
    if (!name) return send(res, 400, 'bad name');
    const file = path.join(uploadDir, name);
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return send(res, 404, 'not found');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
      fs.createReadStream(file).pipe(res);
    });
    return;
  }
  send(res, 404, 'not found');
});

const activated = process.env.LISTEN_FDS === '1' && process.env.LISTEN_PID === String(process.pid);
const where = activated ? 'the inherited socket (fd 3)' : `${host}:${port}`;
const onListening = () => {
  console.log(`app ${version} listening on ${where} (db configured: ${process.env.DB_CONNECTION_STRING ? 'yes' : 'no'})`);
};
if (activated) server.listen({ fd: 3 }, onListening);
else server.listen(port, host, onListening);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    console.log(`${sig}: closing`);
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
