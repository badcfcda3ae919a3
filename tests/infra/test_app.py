"""The sample app (examples/app/server.js): GET /generatecert burns every CPU the process may
run on for GENERATECERT_MS, one burn at a time, and the app keeps answering its other routes
meanwhile; every request but GET /health writes one embedded-metric-format line. The app (node)
runs on a loopback port.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

import cfn

APP = cfn.ROOT / "examples/app/server.js"
BURN_MS = 1500


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path):
    """(status, body) of GET path on a new connection."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        # HTTP/1.0: the answer is not chunked.
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        s.settimeout(15)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


@pytest.fixture(scope="module")
def app():
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "GENERATECERT_MS": str(BURN_MS)}
    proc = subprocess.Popen(["node", str(APP)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"the app exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app is not listening after 10 s"
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(5)


def _burn(port, out, key):
    t = time.monotonic()
    out[key] = (_get(port, "/generatecert"), time.monotonic() - t)


def test_generatecert_burns_one_thread_per_cpu_once_at_a_time_and_health_answers_meanwhile(app):
    got = {}
    first = threading.Thread(target=_burn, args=(app, got, "first"))
    first.start()
    time.sleep(0.3)
    second = threading.Thread(target=_burn, args=(app, got, "second"))
    second.start()
    t = time.monotonic()
    health = _get(app, "/health")
    health_s = time.monotonic() - t
    first.join(20)
    second.join(20)
    (status, body), took = got["first"]
    assert status == 200, body
    m = re.fullmatch(r"generated after (\d+) hashes on (\d+) threads\n", body)
    assert m, body
    # os.availableParallelism(): the CPUs this process may run on.
    assert int(m.group(2)) == len(os.sched_getaffinity(0)), body
    assert int(m.group(1)) > 0, body
    assert took >= BURN_MS / 1000, took
    # The request that came during the burn got that burn's answer, not a burn of its own.
    (status2, body2), took2 = got["second"]
    assert (status2, body2) == (status, body)
    assert took2 < took, (took, took2)
    # The burn runs off the event loop: /health answered while it ran.
    assert health == (200, "ok\n")
    assert health_s < BURN_MS / 1000 / 2, health_s


def test_every_request_but_health_writes_one_emf_document():
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    proc = subprocess.Popen(["node", str(APP)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        t0 = time.time() * 1000
        answers = [_get(port, p)[0] for p in ["/", "/health", "/nope/x?y", "/env/HOME"]]
        assert answers == [200, 200, 404, 200]
        docs = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.kill()
        proc.wait(5)
    rest = proc.stdout.read()
    assert rest == "", f"more lines than requests measured: {rest!r}"
    assert [(d["Route"], d["status"]) for d in docs] == [("/", 200), ("other", 404), ("/env", 200)]
    for d in docs:
        # As the EMF specification has it: the directive names members of the root.
        (directive,) = d["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Bake/App"
        assert directive["Dimensions"] == [["Route"]]
        assert [m["Name"] for m in directive["Metrics"]] == ["Requests", "Errors5xx", "Latency"]
        assert t0 - 1000 <= d["_aws"]["Timestamp"] <= time.time() * 1000
        assert d["Requests"] == 1 and d["Errors5xx"] == 0
        assert 0 < d["Latency"] < 5000
