#!/usr/bin/env python3
"""Crash -> replacement accepting on its port: bake-agent versus a bare shell loop.

    bench/restart.py [--kills 300] [--agent target/debug/bake-agent]

Builds a tiny C server (it answers each connection with its pid and closes), then for each
supervisor (a bare `while true; do app; done` loop, and `bake-agent run`) kills the app with
SIGKILL N times and measures the time from kill() to the first connection answered by the new
process (a connection that reaches the dying socket does not count). Prints p50/p95/p99 and the
agent's idle RSS. Loopback only; every loop is bounded in count and time.

The agent needs instance metadata: a minimal IMDSv2 stand-in (hand-written, token + instance id
+ placement; everything else 404) runs in this process for the agent's boot.
"""
import argparse
import http.server
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

APP_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int port = atoi(getenv("PORT") ? getenv("PORT") : "0");
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) { perror("bind/listen"); return 1; }
  char buf[32]; int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  for (;;) { int c = accept(s, 0, 0); if (c >= 0) { write(c, buf, n); close(c); } }
}
"""


class Imds(http.server.BaseHTTPRequestHandler):
    """Hand-written IMDSv2 stand-in for the bench (the agent's boot reads identity)."""

    def log_message(self, *a):
        pass

    def do_PUT(self):
        self._send(200, b"bench-token", {"x-aws-ec2-metadata-token-ttl-seconds": "21600"})

    def do_GET(self):
        body = {
            "/latest/meta-data/instance-id": b"i-0bench",
            "/latest/meta-data/placement/region": b"us-east-1",
            "/latest/meta-data/placement/availability-zone": b"us-east-1a",
        }.get(self.path)
        self._send(200 if body else 404, body or b"")

    def _send(self, code, body, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask_pid(port):
    """The pid of the process answering on port, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            data = c.recv(32)
            return int(data) if data.strip() else None
    except (OSError, ValueError):
        return None


def measure(port, kills, deadline_s=120):
    """Kill the app `kills` times; return the kill -> new-process-answers latencies (ms)."""
    end = time.monotonic() + deadline_s
    pid = None
    while pid is None:
        if time.monotonic() > end:
            raise SystemExit("app never answered")
        pid = ask_pid(port)
        time.sleep(0.01)
    out = []
    for _ in range(kills):
        time.sleep(0.02)  # a short stable run between crashes
        t0 = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        while True:
            new = ask_pid(port)
            if new is not None and new != pid:
                break
            if time.monotonic() > end:
                raise SystemExit("no replacement within the deadline")
        out.append((time.perf_counter_ns() - t0) / 1e6)
        pid = new
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name, xs):
    print(f"{name:>12}: n={len(xs)} p50={pct(xs, 50):.3f} ms p95={pct(xs, 95):.3f} ms "
          f"p99={pct(xs, 99):.3f} ms mean={statistics.mean(xs):.3f} ms")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=300)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--agent", default=os.path.join(root, "target/debug/bake-agent"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-restart-")
    app = os.path.join(tmp, "app")
    with open(app + ".c", "w") as f:
        f.write(APP_C)
    subprocess.run(["cc", "-O2", "-o", app, app + ".c"], check=True)

    # 1. The bare shell loop (its "Killed" notices go to /dev/null).
    port = free_port()
    loop = subprocess.Popen(["/bin/sh", "-c", f"while true; do {app}; done"], stderr=subprocess.DEVNULL,
                            env={"PORT": str(port), "PATH": "/usr/bin:/bin"}, start_new_session=True)
    try:
        shell = measure(port, args.kills)
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()

    # 2. bake-agent.
    imds = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    port = free_port()
    cfg = os.path.join(tmp, "agent.toml")
    with open(cfg, "w") as f:
        f.write(f"""[identity]
standalone = true
[app]
command = ["{app}"]
env = {{ PORT = "{port}" }}
[supervise]
stable_after = "10ms"
crash_loop_count = 100000
mark_unhealthy = false
""")
    env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{imds.server_port}/",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "error")}
    log = open(os.path.join(tmp, "agent.log"), "w")
    agent = subprocess.Popen([args.agent, "--config", cfg, "run"], env=env, stderr=log)
    try:
        time.sleep(0.5)
        ask_pid(port)
        time.sleep(2)
        idle_kb = rss_kb(agent.pid)
        baked = measure(port, args.kills)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
        imds.shutdown()

    print(f"crash -> replacement accepting on its port, {args.kills} SIGKILLs each ({args.agent})")
    report("shell loop", shell)
    report("bake-agent", baked)
    print(f"  p50 difference: {pct(baked, 50) - pct(shell, 50):+.3f} ms (target: within 0.3 ms)")
    print(f"bake-agent idle RSS: {idle_kb / 1024:.1f} MiB (target: at most 10 MB)")


if __name__ == "__main__":
    sys.exit(main())
