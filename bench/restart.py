#!/usr/bin/env python3
"""Crash -> replacement accepting on its port, for bake-agent and the supervisors users pick instead.

    bench/restart.py [--kills 200] [--fast-trials 10] [--poll-us 50] [--agent target/release/bake-agent]
                     [--boot-helper target/debug/bake-boot-bench] [--only NAME,...] [--json OUT]

A tiny C server (it answers each connection with its pid and closes) runs under each supervisor:
a bare `while true; do app; done` shell loop (the floor), bake-agent, supervisord, runit (runsv),
s6 (s6-supervise) and daemontools (supervise). Each one gets its own port on 127.0.0.1.

systemd's own Restart=always (what bake-agent.service runs under) needs systemd as PID 1, which
the host does not have: the rows "systemd" (RestartSec= unset: systemd's default 100 ms),
"systemd RS=0" (RestartSec=0) and "shell (veth)" (the shell loop, their floor) run in one booted
instance of the local image (`bake-boot-bench hold`: systemd-nspawn, its own network namespace
and veth; tests/e2e/src/boot/), the app bound in read-only, one unit each (IN_INSTANCE), its port
opened in the image's nftables set as `bake-agent firewall` does, the image's bake-agent.service
masked. Those apps listen on the instance's address and are polled over the veth (the others on
loopback), killed from the host by their host pid; their "floor" is shell (veth), and a table
line gives what the veth adds to one answered connection.

1. Restart: all supervisors run side by side; in rounds (the order shuffled each round), the app
   of each is killed with SIGKILL and the time from kill() to the first connection answered by a
   *new* pid is measured (the poller pauses --poll-us between attempts, 50 us by default, and
   gives an attempt 20 ms before starting the next: see ATTEMPT_S). Between two kills of the
   same app it has run for --gap seconds (1.2 s:
   runsv, supervise and s6-supervise wait up to 1 s before restarting an app that ran less than
   1 s; supervisord with its default startsecs=1 likewise).
   --cpu-load N keeps N bounded busy processes running through everything (a machine whose cores
   are saturated, as /generatecert's CPU peaks make it); the rows "bake-agent nice-10" and
   "bake-agent rr" (not run by default: --only) are bake-agent under nice -n -10 and chrt --rr 1,
   the levers a unit's Nice= and CPUSchedulingPolicy= are (the agent starts its app at the
   default priority whatever its own). "bake-agent (unit)" is the image's own bake-agent.service
   in the booted instance, running --agent with the bench's app.
2. Fast crash: a freshly started supervisor, its app killed as soon as it accepts (< 1 s after its
   start): the time to the first restart. Each trial starts the supervisor anew (the in-instance
   rows: their unit, with `systemctl start`; systemd itself runs on).
3. Resident memory (VmRSS) of each supervisor process once idle, and again after the restarts
   (the systemd rows: the instance's PID 1, which is the whole init system).

Loopback and the booted instance's veth only; every loop is bounded in count and time; the
instance is powered off and removed at the end, also on a failure (the helper's stdin closes). bake-agent needs instance metadata: a
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
  const char *addr = getenv("ADDR") ? getenv("ADDR") : "127.0.0.1";
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, addr, &a.sin_addr);
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


def ask_pid(port, timeout=1.0, host="127.0.0.1"):
    """The pid of the process answering on host:port, or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
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


def wait_pid(port, not_pid=None, deadline_s=10.0, host="127.0.0.1"):
    """Poll until a process other than not_pid answers on host:port; its pid (None on timeout)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pid = ask_pid(port, timeout=ATTEMPT_S, host=host)
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
        if self.name == "bake-agent" or self.name in AGENT_LEVERS:
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
            return AGENT_LEVERS.get(self.name, []) + [self.agent, "--config", cfg, "run"], env
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

    def sup_pid(self):
        """The supervisor process (whose memory the RSS table reports)."""
        return self.proc.pid

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


# The rows that run inside one booted instance of the local image (tests/e2e/src/boot/:
# systemd-nspawn, systemd as PID 1, its own network namespace and veth): systemd's own
# Restart=always (what bake-agent itself runs under) with its default RestartSec=100ms and with
# RestartSec=0, and the shell loop in there as their floor (the same path over the veth).
# (name, unit, port in the instance, [Service] lines). StartLimitIntervalSec=0 in every unit:
# systemd's default start limit (5 starts in 10 s, automatic restarts included) would fail the
# unit after the 5th kill 1.2 s apart.
IN_INSTANCE = [
    ("systemd", "bench-app.service", 8101, "Restart=always\n"),
    ("systemd RS=0", "bench-app-rs0.service", 8102, "Restart=always\nRestartSec=0\n"),
    ("shell (veth)", "bench-shell.service", 8103, None),
    # The image's own bake-agent.service (its sandboxing, Type=notify, its priority settings),
    # running the --agent binary (bound over the image's) with AGENT_IN_INSTANCE_TOML as its
    # configuration (bound over the baked one): not a unit this script writes.
    ("bake-agent (unit)", "bake-agent.service", 8104, "agent"),
]
IN_INSTANCE_NAMES = [n for n, *_ in IN_INSTANCE]
APP_IN_INSTANCE = "/usr/local/bin/bench-app"
# The in-instance agent's configuration: the restart rounds' (an app that ran 1 s is stable), as
# the host's bake-agent row; the app as the image's app user. The instance's IMDS stand-in
# (tests/e2e/src/boot/) answers its identity; no AWS call is made (no secrets, no metrics).
AGENT_IN_INSTANCE_TOML = f"""[identity]
standalone = true
[app]
user = "app"
command = ["{APP_IN_INSTANCE}"]
env = {{ PORT = "8104", ADDR = "0.0.0.0" }}
[supervise]
stable_after = "1s"
crash_loop_count = 100000
mark_unhealthy = false
[metrics]
enabled = false
"""


def unit_text(name, port, service):
    if service is None:
        service = f"ExecStart=/bin/sh -c 'while true; do {APP_IN_INSTANCE}; done'\n"
    else:
        service = f"ExecStart={APP_IN_INSTANCE}\n{service}"
    return (f"[Unit]\nDescription=bench/restart.py: the C app under {name}\nStartLimitIntervalSec=0\n"
            f"[Service]\nEnvironment=PORT={port} ADDR=0.0.0.0\n{service}")


class Booted:
    """One booted instance of the local image for the IN_INSTANCE rows, held by
    `bake-boot-bench hold` (it powers the instance off when its stdin closes)."""

    def __init__(self, helper, app, tmp, agent=None):
        if not os.path.exists(helper):
            raise SystemExit(f"{helper} is not built (cargo build --workspace --bins): the rows "
                             f"{', '.join(IN_INSTANCE_NAMES)} boot an instance with it")
        argv = [helper, "hold", "--bind-ro", f"{app}:{APP_IN_INSTANCE}"]
        for name, unit, port, service in IN_INSTANCE:
            if service == "agent":
                continue
            path = os.path.join(tmp, unit)
            with open(path, "w") as f:
                f.write(unit_text(name, port, service))
            argv += ["--bind-ro", f"{path}:/etc/systemd/system/{unit}"]
        ports = ", ".join(str(p) for _, _, p, _ in IN_INSTANCE)
        if agent:
            # The image's bake-agent.service runs the bench's agent with the bench's app.
            cfg = os.path.join(tmp, "agent-in-instance.toml")
            with open(cfg, "w") as f:
                f.write(AGENT_IN_INSTANCE_TOML)
            argv += ["--bind-ro", f"{agent}:/usr/local/bin/bake-agent",
                     "--bind-ro", f"{cfg}:/etc/bake/agent.toml",
                     "--exec", "systemctl restart bake-agent.service"]
        else:
            # No agent in there (the image's baked configuration runs the real app, which needs
            # the fleet's userdata).
            argv += ["--exec", "systemctl mask --runtime --now bake-agent.service"]
        # The apps' ports opened as `bake-agent firewall` opens the app's: in the image's own set.
        argv += ["--exec", f"nft add element inet filter app_ports {{ {ports} }}"]
        self.log = os.path.join(tmp, "hold.log")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True)
        # Bounded: the image build (a few minutes with a cold cache) and the boot.
        timer = threading.Timer(20 * 60, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            self.proc.wait()
            with open(self.log) as f:
                raise SystemExit(f"bake-boot-bench hold failed ({self.proc.returncode}):\n{f.read()[-3000:]}")
        self.info = json.loads(line)
        self.addr, self.leader = self.info["addr"], self.info["leader"]
        self.pidns = os.readlink(f"/proc/{self.leader}/ns/pid")

    def sh(self, cmd):
        subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", "/bin/sh", "-c", cmd], check=True,
                       timeout=60, stdout=subprocess.DEVNULL)

    def host_pid(self, pid):
        """The host pid of the instance's process `pid` (the app answers with its own pid)."""
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{e}/ns/pid") != self.pidns:
                    continue
                with open(f"/proc/{e}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:") and int(line.split()[-1]) == pid:
                            return int(e)
            except (OSError, ValueError):
                continue
        raise SystemExit(f"no process {pid} in the booted instance {self.info['machine']}")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class InstanceSup(Sup):
    """An IN_INSTANCE row: its unit in the booted instance, the app polled at the instance's
    address over the veth, killed from the host by its host pid."""

    def __init__(self, name, booted, fast):
        self.name, self.booted, self.fast = name, booted, fast
        _, self.unit, self.port, _ = next(r for r in IN_INSTANCE if r[0] == name)
        self.host, self.app_pid, self.started, self.proc = booted.addr, None, 0.0, None

    def start(self):
        self.booted.sh(f"systemctl reset-failed {self.unit} 2>/dev/null; systemctl start {self.unit}")
        self.app_pid = wait_pid(self.port, deadline_s=20, host=self.host)
        if self.app_pid is None:
            raise SystemExit(f"{self.name}: the app never answered at {self.host}:{self.port}")
        self.started = time.monotonic()

    def stop(self):
        self.booted.sh(f"systemctl stop {self.unit}")

    def sup_pid(self):
        if self.name.startswith("systemd"):
            return self.booted.leader
        out = subprocess.run(["nsenter", "-t", str(self.booted.leader), "-a", "--", "systemctl", "show", "-P",
                              "MainPID", self.unit], capture_output=True, text=True, check=True, timeout=60)
        return self.booted.host_pid(int(out.stdout))

    def kill_and_time(self, deadline_s=10.0):
        victim = self.booted.host_pid(self.app_pid)
        t0 = time.perf_counter_ns()
        os.kill(victim, signal.SIGKILL)
        new = wait_pid(self.port, not_pid=self.app_pid, deadline_s=deadline_s, host=self.host)
        ms = (time.perf_counter_ns() - t0) / 1e6
        if new is None:
            raise SystemExit(f"{self.name}: no replacement within {deadline_s} s")
        self.app_pid, self.started = new, time.monotonic()
        return ms


def connect_ms(host, port, n):
    """n connections answered (connect + the pid read + close), each in ms."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        if ask_pid(port, host=host) is None:
            raise SystemExit(f"{host}:{port} did not answer")
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


# Host rows of bake-agent with a raised priority (the levers a unit grants: Nice=, a real-time
# CPUSchedulingPolicy=), started under nice(1) / chrt(1); the agent starts its app at the default
# priority whatever its own (supervisor/spawn.rs).
AGENT_LEVERS = {"bake-agent nice-10": ["nice", "-n", "-10"], "bake-agent rr": ["chrt", "--rr", "1"]}
NAMES = (["shell loop", "bake-agent"] + list(AGENT_LEVERS) + ["supervisord", "runit", "s6", "daemontools"]
         + IN_INSTANCE_NAMES)
DEFAULT_NAMES = [n for n in NAMES if n not in AGENT_LEVERS]

# A bounded busy worker for --cpu-load: spins until its deadline (argv[1], time.time()).
BUSY = "import sys, time\nend = float(sys.argv[1])\nwhile time.time() < end:\n    sum(range(20000))\n"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--gap", type=float, default=1.2)
    ap.add_argument("--fast-trials", type=int, default=10)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/bake-agent"))
    ap.add_argument("--only", default=",".join(DEFAULT_NAMES),
                    help=f"rows (default: all but the priority levers {', '.join(AGENT_LEVERS)})")
    ap.add_argument("--cpu-load", type=int, default=0,
                    help="busy worker processes running through every measurement (e.g. 2 per core "
                         "saturates the machine), each bounded by the run's time limit")
    ap.add_argument("--poll-us", type=float, default=50.0,
                    help="pause between connection attempts while waiting for the new process")
    ap.add_argument("--boot-helper", default=os.path.join(ROOT, "target/debug/bake-boot-bench"),
                    help=f"boots the instance of the rows {', '.join(IN_INSTANCE_NAMES)}")
    ap.add_argument("--json")
    args = ap.parse_args()
    global POLL_S
    POLL_S = args.poll_us / 1e6
    names = [n for n in NAMES if n in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(NAMES)
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
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
    booted = None
    busy = []
    try:
        if set(names) & set(IN_INSTANCE_NAMES):
            t = time.monotonic()
            agent = args.agent if "bake-agent (unit)" in names else None
            booted = Booted(os.path.abspath(args.boot_helper), app, tmp, agent)
            result["instance"] = booted.info
            print(f"booted instance {booted.info['machine']} at {booted.addr} in {time.monotonic() - t:.1f} s "
                  f"(image {booted.info['image_root']}, agent {booted.info['agent_build']} build, not running)",
                  flush=True)
        result["loadavg_start"] = os.getloadavg()[0]
        if args.cpu_load:
            # Bounded by the longest the rounds and the fast trials may take.
            end = time.time() + args.kills * (args.gap + 0.5) * 2 + 60 + len(names) * args.fast_trials * 12
            busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(end)]) for _ in range(args.cpu_load)]
            result["cpu_load"] = args.cpu_load
            time.sleep(5)
            result["loadavg_loaded"] = os.getloadavg()[0]
            print(f"{args.cpu_load} busy workers running; load average {result['loadavg_loaded']:.2f}", flush=True)
        run(args, names, app, tmp, imds, booted, result)
        result["loadavg_end"] = os.getloadavg()[0]
    finally:
        for b in busy:
            b.kill()
            b.wait()
        if booted:
            booted.close()
        imds.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    print_tables(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


def new_sup(name, app, tmp, imds, agent, booted, fast):
    if name in IN_INSTANCE_NAMES:
        return InstanceSup(name, booted, fast)
    return Sup(name, app, tmp, imds.server_port, agent, fast)


def run(args, names, app, tmp, imds, booted, result):
    # 1 + 3: side by side, round robin.
    sups = [new_sup(n, app, tmp, imds, args.agent, booted, fast=False) for n in names]
    try:
        for s in sups:
            s.start()
        time.sleep(2)
        for s in sups:
            pid = s.sup_pid()
            result["rss_idle_kib"][s.name] = rss_kib(pid)
            result.setdefault("rss_idle_parts_kib", {})[s.name] = {
                "anon": rss_kib(pid, "RssAnon"), "file": rss_kib(pid, "RssFile"), "threads": threads(pid)}
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
            result["rss_after_kib"][s.name] = rss_kib(s.sup_pid())
        result["restart"] = lat
        # What the veth adds to one answered connection: the shell loops' apps, on loopback and
        # in the instance.
        by = {s.name: s for s in sups}
        if "shell loop" in by and "shell (veth)" in by:
            result["connect_ms"] = {n: connect_ms(by[n].host if n == "shell (veth)" else "127.0.0.1", by[n].port, 500)
                                    for n in ("shell loop", "shell (veth)")}
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
            s = new_sup(n, app, tmp, imds, args.agent, booted, fast=True)
            try:
                s.start()
                xs.append(s.kill_and_time(deadline_s=10))
            finally:
                s.stop()
        result["fast"][n] = xs


def floor_of(name, rows):
    """The row a row is compared with: the shell loop on its side of the veth."""
    return rows.get("shell (veth)" if name in IN_INSTANCE_NAMES else "shell loop")


def print_tables(r):
    lat = r["restart"]
    # "best other": the loopback anchors only (the in-instance rows also cross the veth).
    others = [n for n in lat if n not in ["shell loop", "bake-agent"] + list(AGENT_LEVERS) + IN_INSTANCE_NAMES]
    best99 = min((pct(lat[n], 99) for n in others), default=None)
    load = (f"; {r['cpu_load']} busy workers running throughout (load average {r.get('loadavg_loaded', 0):.2f})"
            if r.get("cpu_load") else "")
    print(f"\nload average at the start {r.get('loadavg_start', 0):.2f}, at the end {r.get('loadavg_end', 0):.2f}{load}")
    print(f"\nRestart on crash: SIGKILL -> new pid accepting, {r['kills']} kills each, "
          f"apps up {r['gap_s']} s between kills, poller pausing {r.get('poll_us', 0):g} us between "
          "attempts (ms)" + (f"; bake-agent: {r['agent']}" if "bake-agent" in lat else ""))
    print(f"| {'supervisor':<12} | {'p50':>8} | {'p95':>8} | {'p99':>8} | {'p50 - floor':>11} | {'p99 / best other':>16} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 18}|")
    for n, xs in lat.items():
        floor = floor_of(n, lat)
        d = f"{pct(xs, 50) - pct(floor, 50):+.3f}" if floor else "-"
        q = f"{pct(xs, 99) / best99:.2f}x" if best99 and n not in IN_INSTANCE_NAMES else "-"
        print(f"| {n:<12} | {pct(xs, 50):8.3f} | {pct(xs, 95):8.3f} | {pct(xs, 99):8.3f} | {d:>11} | {q:>16} |")
    if set(lat) & set(IN_INSTANCE_NAMES):
        print(f"{', '.join(n for n in IN_INSTANCE_NAMES if n in lat)}: in a booted instance (systemd as PID 1), "
              "polled over its veth; their floor is shell (veth), the shell loop in there. systemd: "
              "Restart=always with the default RestartSec=100ms; systemd RS=0: RestartSec=0; every "
              "unit StartLimitIntervalSec=0; bake-agent (unit): the image's bake-agent.service. "
              "p99 / best other: the loopback anchors only.")
    if set(lat) & set(AGENT_LEVERS):
        print(f"{', '.join(n for n in AGENT_LEVERS if n in lat)}: bake-agent started under "
              + "; ".join(" ".join(AGENT_LEVERS[n]) for n in AGENT_LEVERS if n in lat)
              + " (its app at the default priority)")
    c = r.get("connect_ms")
    if c:
        lo, ve = c["shell loop"], c["shell (veth)"]
        print(f"one answered connection (connect, read the pid, close; {len(lo)} each): loopback p50 "
              f"{pct(lo, 50):.3f} ms, veth p50 {pct(ve, 50):.3f} ms (+{pct(ve, 50) - pct(lo, 50):.3f})")
    us = r.get("agent_respawn_us")
    if us:
        print(f"bake-agent's own respawn time (exit seen -> new process spawned, its log): "
              f"p50 {pct(us, 50) / 1000:.3f} ms, p99 {pct(us, 99) / 1000:.3f} ms over {len(us)} restarts")
    fast = r["fast"]
    if fast:
        trials = len(next(iter(fast.values())))
        print(f"\nFast crash: first restart of an app killed < 1 s after its start, {trials} fresh starts "
              "each (ms; median and max)")
        print(f"| {'supervisor':<12} | {'median':>8} | {'max':>8} | {'median / floor':>14} |")
        print(f"|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
        for n, xs in fast.items():
            floor = floor_of(n, fast)
            q = f"{statistics.median(xs) / statistics.median(floor):.1f}x" if floor else "-"
            print(f"| {n:<12} | {statistics.median(xs):8.3f} | {max(xs):8.3f} | {q:>14} |")
        if set(fast) & set(IN_INSTANCE_NAMES):
            print("in-instance rows: a fresh `systemctl start` of the unit each time (systemd itself runs on)")
    print("\nResident memory of the supervisor process (VmRSS, MiB; systemd rows: the instance's PID 1)")
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
