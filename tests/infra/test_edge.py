"""R12 at the edge: every request the app would route to its /crash or /generatecert handler is
refused by the local edge (haproxy with tests/fleet/haproxy.cfg.in), and the WAF rule in
cloudformation/edge.yaml is the same rule.

The app (examples/app/server.js, node) and haproxy (/usr/sbin/haproxy) run on loopback ports.
Each variant is first sent, byte for byte, straight to the app to learn whether it acts on it
(the handler's answer, or the process ending), then through haproxy to a fresh app.
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import cfn

ROOT = cfn.ROOT
APP = ROOT / "examples/app/server.js"
TEMPLATE = ROOT / "tests/fleet/haproxy.cfg.in"
# What the two handlers answer (GENERATECERT_MS=1 keeps /generatecert short).
MARKERS = (b"crashing", b"generated after")

# Request targets, sent as they are. Case, percent-encoding, double encoding, '//', '/./',
# '/x/../', trailing '/', ';params', '?query', backslashes, fragments, absolute form.
VARIANTS = [
    b"/crash", b"/generatecert", b"/CRASH", b"/Crash", b"/GenerateCert", b"/generateCERT",
    b"/%63rash", b"/%63%72%61%73%68", b"/%43RASH", b"/generate%63ert",
    b"/%2563rash", b"/%252e/crash", b"/%25%36%33rash",
    b"//crash", b"///crash", b"//x/crash", b"//x//crash", b"//%78/crash", b"//user@x/crash",
    b"//x:80/generatecert", b"/\\crash", b"/\\x/crash",
    b"/./crash", b"/././crash", b"/%2e/crash", b"/%2E/crash", b"/.%2e/crash",
    b"/x/../crash", b"/x/y/../../crash", b"/x/%2e%2e/crash", b"/x/.%2E/crash", b"/../crash",
    b"/%2e%2e/crash", b"/x\\..\\crash", b"/x/..%2fcrash", b"/%zz/../crash", b"/x/./../generatecert",
    b"/crash/", b"/crash//", b"/crash/.", b"/crash/x/..", b"/generatecert/",
    b"/crash;x", b"/crash;/", b"/generatecert;jsessionid=1",
    b"/crash?x=1", b"/crash?", b"/generatecert?y", b"/crash%3fx", b"/crash#x",
    b"http://x/crash", b"HTTP://x/generatecert", b"http://x/x/../crash",
    b"/crash%00", b"/%2fcrash", b"/crash%2f", b"/crash%20",
]
# Ordinary requests: the edge must pass them to the app.
ORDINARY = [
    b"/", b"/health", b"/env/HOME", b"/download/crash", b"/download/generatecert",
    b"/crashes", b"/crash-report", b"/generatecertificate", b"/x/crash", b"/a.b/c..d",
    b"/download/..a", b"/?next=/crash", b"/health?x=/../crash",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} not listening on {port} after 10 s")


class App:
    """The sample app on a loopback port, restarted when a request ended it."""

    def __init__(self):
        self.port = _free_port()
        self.proc = None
        self.uploads = tempfile.TemporaryDirectory(prefix="bake-edge-uploads-")
        self.start()

    def start(self):
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "GENERATECERT_MS": "1",
               "UPLOADS_DIR": self.uploads.name}
        self.proc = subprocess.Popen(["node", str(APP)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "the app")

    def ensure(self, answer):
        """True if the app ended after giving `answer` (it is then started again). It exits
        right after answering /crash; other answers end nothing unless the exit is immediate."""
        status, body = answer
        try:
            self.proc.wait(5 if b"crashing" in body else 0.2 if status == 0 else 0.01)
        except subprocess.TimeoutExpired:
            return False
        self.start()
        return True

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.uploads.cleanup()


def _request(port, target):
    """Status line and body of `GET target` on a new connection ('' when the peer closed)."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        body = _dechunk(body)
    status = head.split(b"\r\n", 1)[0].split(b" ")
    return (int(status[1]) if len(status) > 1 and status[1].isdigit() else 0), body


def _dechunk(body):
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2:]
    return out


@pytest.fixture(scope="module")
def edge():
    """(app, haproxy port): the shipped template with the app as its only server."""
    app = App()
    port = _free_port()
    cfg = TEMPLATE.read_text().replace("@PORT@", str(port)).replace(
        "@SERVERS@\n", f"    server app 127.0.0.1:{app.port} check\n")
    # The target group's values (the fleet reads them from edge.yaml; any valid ones do here).
    for k, v in {"SOCKET": "/dev/null/unused", "CHECK_PATH": "/health", "MATCHER": "200-399",
                 "INTERVAL": "100ms", "HEALTHY": "2", "UNHEALTHY": "3", "CHECK_TIMEOUT": "1s",
                 "CONNECT_TIMEOUT": "10s", "IDLE_TIMEOUT": "60s"}.items():
        cfg = cfg.replace(f"@{k}@", v)
    cfg = cfg.replace("    stats socket /dev/null/unused mode 600 level admin\n", "")
    with tempfile.TemporaryDirectory(prefix="bake-edge-") as d:
        path = Path(d) / "haproxy.cfg"
        path.write_text(cfg)
        subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], check=True)
        hap = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        try:
            _wait_port(port, hap, "haproxy")
            yield app, port
        finally:
            os.killpg(hap.pid, signal.SIGKILL)
            hap.wait(5)
            app.stop()


def _wait_up(port):
    """Until haproxy's health check sees the (restarted) app: 200 on /health through it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _request(port, b"/health")[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the app is not healthy behind haproxy")


def test_edge_refuses_everything_the_app_routes_to_its_handlers(edge):
    app, port = edge
    acted = []
    for v in VARIANTS:
        status, body = _request(app.port, v)
        ended = app.ensure((status, body))
        if ended or any(m in body for m in MARKERS):
            acted.append(v)
    # The list must exercise the app's parser: these are known to reach the handlers.
    for v in (b"/crash", b"/x/../crash", b"/%2e/crash", b"//x/crash", b"/x\\..\\crash", b"/crash?x=1"):
        assert v in acted, f"the app no longer routes {v!r}: revisit the variant list"
    assert len(acted) >= 20, acted

    leaked = []
    for v in acted:
        _wait_up(port)
        status, body = _request(port, v)
        ended = app.ensure((status, body))
        if ended or any(m in body for m in MARKERS) or status not in (400, 403):
            leaked.append(f"{v!r}: edge answered {status}{', the app ended' if ended else ''}")
    assert not leaked, "requests the app acts on that the edge let through:\n" + "\n".join(leaked)


def test_edge_passes_ordinary_requests(edge):
    app, port = edge
    _wait_up(port)
    for v in ORDINARY:
        direct = _request(app.port, v)
        through = _request(port, v)
        assert through == direct, f"{v!r}: direct {direct[0]}, through the edge {through[0]}"
        assert through[0] not in (400, 403), v


def test_waf_rule_is_the_local_edge_rule():
    """The WAF's regex is haproxy's, on the same input (decoded once, then lower-cased)."""
    rules = cfn.load(cfn.CFN / "edge.yaml")["Resources"]["WebAcl"]["Properties"]["Rules"]
    rule = next(r for r in rules if r["Name"] == "block-unwanted-paths")
    stmt = rule["Statement"]["RegexMatchStatement"]
    assert stmt["FieldToMatch"] == {"UriPath": {}}
    steps = [t["Type"] for t in sorted(stmt["TextTransformations"], key=lambda t: t["Priority"])]
    assert steps == ["URL_DECODE", "LOWERCASE"], steps
    assert "Block" in rule["Action"], rule["Action"]
    m = re.search(r"\{ path,url_dec,lower -m reg '([^']+)' \}", TEMPLATE.read_text())
    assert m, "haproxy.cfg.in has no `path,url_dec,lower -m reg '...'` condition"
    assert m.group(1) == stmt["RegexString"], (m.group(1), stmt["RegexString"])


def test_app_survives_an_unparsable_target():
    """A target its URL parser rejects (//[) or a malformed escape in an upload name is a 400,
    not an exception that ends the app (the edge would otherwise be its only protection)."""
    app = App()
    try:
        for v in (b"//[/x", b"/download/%zz"):
            status, body = _request(app.port, v)
            assert status == 400, (v, status)
            assert not app.ensure((status, body)), f"{v!r} ended the app"
    finally:
        app.stop()
