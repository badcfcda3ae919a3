#!/usr/bin/env python3
"""Crash -> replacement accepting on its port, for bake-agent and the supervisors users pick instead.

    bench/restart.py [--kills 200] [--fast-trials 10] [--poll-us 50] [--agent target/release/bake-agent]
                     [--only NAME,...] [--json OUT]

A tiny C server (it answers each connection with its pid and closes) runs under each supervisor:
a bare `while true; do app; done` shell loop (the floor), bake-agent, supervisord, runit (runsv),
s6 (s6-supervise) and daemontools (supervise). Each one gets its own port.

1. Restart: all supervisors run side by side; in rounds (the order shuffled each round), the app
   of each is killed with SIGKILL and the time from kill() to the first connection answered by a
   *new* pid is measured (the poller pauses --poll-us between attempts, 50 us by default, and
   gives an attempt 20 ms before starting the next: see ATTEMPT_S). Between two kills of the
   same app it has run for --gap seconds (1.2 s:
   runsv, supervise and s6-supervise wait up to 1 s before restarting an app that ran less than
   1 s; supervisord with its default startsecs=1 likewise).
2. Fast crash: a freshly started supervisor, its app killed as soon as it accepts (< 1 s after its
   start): the time to the first restart. Each trial starts the supervisor anew.
3. Resident memory (VmRSS) of each supervisor process once idle, and again after the restarts.

Loopback only; every loop is bounded in count and time. bake-agent needs instance metadata: a
hand-written IMDSv2 stand-in (token + instance id + placement; everything else 404) runs in this
process for the agent's boot (there is no real IMDS off EC2).
"""
import argparse
import http.server
import json
import os
import random
import re
import shutil
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".tools/bench-venv/bin")


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


class QuietServer(http.server.ThreadingHTTPServer):
    """An agent that hangs up early (stopped mid-poll) is no error worth a traceback."""

    def handle_error(self, request, client_address):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask_pid(port, timeout=1.0):
    """The pid of the process answering on port, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            data = c.recv(32)
            return int(data) if data.strip() else None
    except (OSError, ValueError):
        return None


# Pause between two connection attempts. A poller that never sleeps keeps one of the two CPUs
# busy and so competes with the very supervisor and app it measures (tails of 10-20 ms for every
# row, the shell loop included, on a 2-CPU host); 50 us adds at most ~0.1 ms (sleep + timer
# slack) to every row alike. --poll-us 0 restores busy polling.
POLL_S = 50e-6


# One connection attempt gives up after this long and the next one starts. About once in 1,500
# kills the SYN of an attempt made while the killed app's listening socket is torn down is
# dropped without an answer (no RST), and TCP retransmits it only after its 1 s initial RTO: a
# 1,001 ms sample in any row, the shell loop's included, that says nothing about the supervisor.
# On loopback an answered attempt takes well under a millisecond.
ATTEMPT_S = 0.02


def wait_pid(port, not_pid=None, deadline_s=10.0):
    """Poll until a process other than not_pid answers on port; its pid (None on timeout)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pid = ask_pid(port, timeout=ATTEMPT_S)
        if pid is not None and pid != not_pid:
            return pid
        if POLL_S:
            time.sleep(POLL_S)
    return None


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def write_exec(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


class Sup:
    """One supervisor running the app on its own port."""

    def __init__(self, name, app, tmp, imds_port, agent, fast):
        self.name, self.app, self.imds_port, self.agent, self.fast = name, app, imds_port, agent, fast
        self.dir = tempfile.mkdtemp(prefix=name.replace(" ", "-") + "-", dir=tmp)
        self.port = free_port()
        self.proc = None
        self.app_pid = None
        self.started = 0.0

    def argv_env(self):
        env = {"PATH": "/usr/bin:/bin", "PORT": str(self.port)}
        d, app = self.dir, self.app
        if self.name == "shell loop":
            return ["/bin/sh", "-c", f"while true; do {app}; done"], env
        if self.name in ("runit", "s6", "daemontools"):
            write_exec(os.path.join(d, "run"), f"#!/bin/sh\nPORT={self.port} exec {app}\n")
            exe = {"runit": "runsv", "s6": "s6-supervise", "daemontools": "supervise"}[self.name]
            return [exe, d], env
        if self.name == "supervisord":
            conf = os.path.join(d, "supervisord.conf")
            with open(conf, "w") as f:
                f.write(f"""[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
loglevel=warn
[program:app]
command={app}
environment=PORT="{self.port}"
autorestart=true
startretries=1000000
stdout_logfile=NONE
stderr_logfile=NONE
""")
            return [os.path.join(VENV_BIN, "supervisord"), "-c", conf], env
        if self.name == "bake-agent":
            cfg = os.path.join(d, "agent.toml")
            # Restart rounds: an app that ran --gap counts as stable (the agent's default is 60 s).
            supervise = "" if self.fast else """[supervise]
stable_after = "1s"
crash_loop_count = 100000
mark_unhealthy = false
"""
            with open(cfg, "w") as f:
                f.write(f"""[identity]
standalone = true
[app]
user = "root"
command = ["{app}"]
env = {{ PORT = "{self.port}" }}
{supervise}[metrics]
enabled = false
""")
            env.update({
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{self.imds_port}/",
                "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn"),
            })
            return [self.agent, "--config", cfg, "run"], env
        raise ValueError(self.name)

    def start(self):
        argv, env = self.argv_env()
        log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                     start_new_session=True, cwd=self.dir)
        log.close()
        self.app_pid = wait_pid(self.port, deadline_s=20)
        if self.app_pid is None:
            self.stop()
            raise SystemExit(f"{self.name}: the app never answered (see {self.dir}/stderr.log)")
        self.started = time.monotonic()

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for kill in (lambda: os.killpg(self.proc.pid, signal.SIGKILL),
                     lambda: os.kill(self.app_pid, signal.SIGKILL) if self.app_pid else None):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        # A replacement started between our kills: whoever answers on the port now.
        pid = ask_pid(self.port)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def kill_and_time(self, deadline_s=10.0):
        """SIGKILL the app; ms until a new pid answers."""
        t0 = time.perf_counter_ns()
        os.kill(self.app_pid, signal.SIGKILL)
        new = wait_pid(self.port, not_pid=self.app_pid, deadline_s=deadline_s)
        ms = (time.perf_counter_ns() - t0) / 1e6
        if new is None:
            raise SystemExit(f"{self.name}: no replacement within {deadline_s} s")
        self.app_pid, self.started = new, time.monotonic()
        return ms


NAMES = ["shell loop", "bake-agent", "supervisord", "runit", "s6", "daemontools"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--gap", type=float, default=1.2)
    ap.add_argument("--fast-trials", type=int, default=10)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/bake-agent"))
    ap.add_argument("--only", default=",".join(NAMES))
    ap.add_argument("--poll-us", type=float, default=50.0,
                    help="pause between connection attempts while waiting for the new process")
    ap.add_argument("--json")
    args = ap.parse_args()
    global POLL_S
    POLL_S = args.poll_us / 1e6
    names = [n for n in NAMES if n in args.only.split(",")]
    args.agent = os.path.abspath(args.agent)
    tmp = tempfile.mkdtemp(prefix="bench-restart-")
    app = os.path.join(tmp, "app")
    with open(app + ".c", "w") as f:
        f.write(APP_C)
    subprocess.run(["cc", "-O2", "-o", app, app + ".c"], check=True)
    imds = QuietServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    result = {"kills": args.kills, "gap_s": args.gap, "poll_us": args.poll_us, "agent": args.agent, "restart": {}, "fast": {},
              "rss_idle_kib": {}, "rss_after_kib": {}}

    # 1 + 3: side by side, round robin.
    sups = [Sup(n, app, tmp, imds.server_port, args.agent, fast=False) for n in names]
    try:
        for s in sups:
            s.start()
        time.sleep(2)
        for s in sups:
            result["rss_idle_kib"][s.name] = rss_kib(s.proc.pid)
            result.setdefault("rss_idle_parts_kib", {})[s.name] = {
                "anon": rss_kib(s.proc.pid, "RssAnon"), "file": rss_kib(s.proc.pid, "RssFile"),
                "threads": threads(s.proc.pid)}
        lat = {s.name: [] for s in sups}
        end = time.monotonic() + args.kills * (args.gap + 0.5) * 2 + 60
        for _ in range(args.kills):
            random.shuffle(sups)
            for s in sups:
                wait = s.started + args.gap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                lat[s.name].append(s.kill_and_time())
            if time.monotonic() > end:
                raise SystemExit("restart rounds: over the time limit")
        time.sleep(1)
        for s in sups:
            result["rss_after_kib"][s.name] = rss_kib(s.proc.pid)
        result["restart"] = lat
    finally:
        for s in sups:
            s.stop()
    # The agent's own account of each restart: exit seen -> new process spawned (its log line
    # "app exited; restarted at once" carries respawn_us).
    for s in sups:
        if s.name == "bake-agent":
            with open(os.path.join(s.dir, "stderr.log")) as f:
                result["agent_respawn_us"] = [int(m) for m in re.findall(r"respawn_us=(\d+)", f.read())]

    # 2: fast crash, first restart of a freshly started supervisor.
    for n in names:
        xs = []
        for _ in range(args.fast_trials):
            s = Sup(n, app, tmp, imds.server_port, args.agent, fast=True)
            try:
                s.start()
                xs.append(s.kill_and_time(deadline_s=10))
            finally:
                s.stop()
        result["fast"][n] = xs
    imds.shutdown()

    shutil.rmtree(tmp, ignore_errors=True)
    print_tables(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


def print_tables(r):
    lat, floor = r["restart"], r["restart"].get("shell loop")
    others = [n for n in lat if n not in ("shell loop", "bake-agent")]
    best99 = min((pct(lat[n], 99) for n in others), default=None)
    print(f"\nRestart on crash: SIGKILL -> new pid accepting, {r['kills']} kills each, "
          f"apps up {r['gap_s']} s between kills, poller pausing {r.get('poll_us', 0):g} us between "
          "attempts (ms)")
    print(f"| {'supervisor':<12} | {'p50':>8} | {'p95':>8} | {'p99':>8} | {'p50 - floor':>11} | {'p99 / best other':>16} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 18}|")
    for n, xs in lat.items():
        d = f"{pct(xs, 50) - pct(floor, 50):+.3f}" if floor else "-"
        q = f"{pct(xs, 99) / best99:.2f}x" if best99 else "-"
        print(f"| {n:<12} | {pct(xs, 50):8.3f} | {pct(xs, 95):8.3f} | {pct(xs, 99):8.3f} | {d:>11} | {q:>16} |")
    us = r.get("agent_respawn_us")
    if us:
        print(f"bake-agent's own respawn time (exit seen -> new process spawned, its log): "
              f"p50 {pct(us, 50) / 1000:.3f} ms, p99 {pct(us, 99) / 1000:.3f} ms over {len(us)} restarts")
    fast = r["fast"]
    if fast:
        trials = len(next(iter(fast.values())))
        print(f"\nFast crash: first restart of an app killed < 1 s after its start, {trials} fresh starts "
              "each (ms; median and max)")
        sh = statistics.median(fast["shell loop"]) if "shell loop" in fast else None
        print(f"| {'supervisor':<12} | {'median':>8} | {'max':>8} | {'median / floor':>14} |")
        print(f"|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
        for n, xs in fast.items():
            q = f"{statistics.median(xs) / sh:.1f}x" if sh else "-"
            print(f"| {n:<12} | {statistics.median(xs):8.3f} | {max(xs):8.3f} | {q:>14} |")
    print("\nResident memory of the supervisor process (VmRSS, MiB)")
    print(f"| {'supervisor':<12} | {'idle':>7} | {'of it anon':>10} | {'of it file':>10} | {'threads':>7} "
          f"| {'after restarts':>14} |")
    print(f"|{'-' * 14}|{'-' * 9}|{'-' * 12}|{'-' * 12}|{'-' * 9}|{'-' * 16}|")
    for n, kib in r["rss_idle_kib"].items():
        parts = r.get("rss_idle_parts_kib", {}).get(n, {})
        print(f"| {n:<12} | {kib / 1024:7.1f} | {parts.get('anon', -1) / 1024:10.1f} "
              f"| {parts.get('file', -1) / 1024:10.1f} | {parts.get('threads', -1):>7} "
              f"| {r['rss_after_kib'].get(n, -1) / 1024:14.1f} |")


if __name__ == "__main__":
    sys.exit(main())
