// The sample app's database seam, shared by server.js, bin/migrate and bin/user-stats: the
// connection string from DB_CONNECTION_STRING, a pool (or client) of node-postgres (`pg`, the
// one npm dependency, examples/app/package.json), and the one way to describe a database error.
//
// Only required when DB_CONNECTION_STRING is set: server.js without it needs no node_modules
// (tests copy server.js alone into a directory of their own).
//
// DB_CONNECTION_STRING is a secret (bake-agent writes it from SSM): a postgres:// URL with the
// password in it. It is never logged, echoed nor put in an error message, and neither are its
// parts: errors of pg and of the network name the host, port, user or database ("password
// authentication failed for user …", "connect ECONNREFUSED 10.0.0.5:5432"), so describe()
// prints the error's code and a message with every part of the URL replaced by "***".
'use strict';
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

/// The error as one line that holds nothing of the connection string: "CODE: message".
function describe(err, url = connectionString()) {
  const code = err && err.code ? String(err.code) : 'error';
  let msg = err && err.message ? String(err.message) : String(err);
  for (const p of secretParts(url)) msg = msg.split(p).join('***');
  msg = msg.replace(/\s+/g, ' ').trim();
  return `${code}: ${msg}`;
}

/// A pool on the connection string; errors of idle clients (the server restarted, the network
/// went away) are described on stderr once each, not thrown (that would end the process).
function pool(opts = {}) {
  const p = new Pool({
    connectionString: connectionString(),
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
  const c = new Client({ connectionString: connectionString(), connectionTimeoutMillis: 10000, ...opts });
  c.on('error', (err) => console.error(`database: connection lost: ${describe(err)}`));
  return c;
}

module.exports = { CONNECT_TIMEOUT_MS, connectionString, describe, pool, client };
