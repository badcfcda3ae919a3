#!/usr/bin/env python3
"""A large upload through the sample app and back, with its resident memory (issue 20).

    bench/upload.py [--size 6GiB] [--agent target/release/bake-agent] [--json OUT]

A throwaway PostgreSQL (tests/infra/pgserver.py: initdb in a temporary directory, 127.0.0.1 on a
free port), the app's migrations (bin/migrate), then examples/app/server.js with
DB_CONNECTION_STRING and UPLOADS_DIR (a temporary directory on the disk of /tmp). The body is
generated while it is sent (one random 1 MiB block, repeated), never stored on the client side:
only the upload lands on disk, once. PUT /upload/NAME with its Content-Length, then GET
/download/NAME read to the end; both sides hash it (SHA-256) and the figures count only if the
app's hash, the client's and the download's agree.

Sampled every 100 ms during both transfers, from /proc/PID/status: the app's VmRSS (its peak) and,
at the end, its VmHWM (the kernel's own high-water mark since start); the same for bake-agent
when the app runs under it (--agent: `bake-agent run`, standalone, with the hand-written IMDS
stand-in of bench/restart.py, [uploads] dir set, no [logs]: the app's output goes to the agent's
stderr, a file here). The client (this process, hashing too) shares the machine's CPUs with the
app; the download is read back from the page cache when RAM holds the file. Loopback only;
everything started is stopped and the directories are removed at the end, also on failure.
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests/infra"))
sys.path.insert(0, HERE)
import pgserver  # noqa: E402

APP = os.path.join(ROOT, "examples/app")
MIB = 1 << 20
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": MIB,
         "g": 10**9, "gb": 10**9, "gib": 1 << 30}


def size_arg(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", s)
    if not m or m[2].lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 6GiB, 512MiB, 1000000)")
    return int(float(m[1]) * UNITS[m[2].lower()])


def status_kib(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, v = line.split(":", 1)
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class Sampler(threading.Thread):
    """The highest VmRSS of each pid, every `every` s until stop()."""

    def __init__(self, pids, every=0.1):
        super().__init__(daemon=True)
        self.pids, self.every, self.peak, self.samples = pids, every, {p: 0 for p in pids}, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], status_kib(p).get("VmRSS", 0))
            self.samples += 1
            self.halt.wait(self.every)

    def stop(self):
        self.halt.set()
        self.join()


def wait_listening(port, proc, deadline_s=20):
    import socket
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the app (or agent) exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {port} after {deadline_s} s")
            time.sleep(0.05)


def children(pid):
    """The children of every thread of pid (a thread's children file lists only its own)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def start_app(args, url, uploads, tmp):
    """(process we started, app pid, agent pid or None, port)."""
    port = pgserver.free_port()
    log = open(os.path.join(tmp, "app.log"), "w")
    if not args.agent:
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DB_CONNECTION_STRING": url,
               "UPLOADS_DIR": uploads}
        proc = subprocess.Popen(["node", os.path.join(APP, "server.js")], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(port, proc)
        except BaseException:
            stop(proc)
            raise
        return proc, proc.pid, None, port
    cfg = os.path.join(tmp, "agent.toml")
    with open(cfg, "w") as f:
        # The bench's own database: its connection string in a file of the bench's temporary
        # directory (on an instance it comes from SSM, [secrets]).
        f.write(f"""[identity]
standalone = true
[app]
user = "root"
command = ["{shutil.which('node')}", "{APP}/server.js"]
working_dir = "{APP}"
port = {port}
[app.env]
HOST = "127.0.0.1"
DB_CONNECTION_STRING = {json.dumps(url)}
[uploads]
dir = "{uploads}"
[metrics]
enabled = false
""")
    os.chmod(cfg, 0o600)
    env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{args.imds_port}/",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "RUST_LOG": "warn"}
    proc = subprocess.Popen([args.agent, "--config", cfg, "run"], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
    try:
        wait_listening(port, proc)
        kids = [p for p in children(proc.pid) if "server.js" in open(f"/proc/{p}/cmdline").read()]
        if len(kids) != 1:
            raise SystemExit(f"cannot tell the app's pid among the agent's children {children(proc.pid)}")
    except BaseException:
        stop(proc)  # not returned: the caller cannot stop it
        raise
    return proc, kids[0], proc.pid, port


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def transfer(port, size, block):
    """Upload then download; returns the figures."""
    h_up = hashlib.sha256()

    def body():
        sent = 0
        while sent < size:
            c = block if size - sent >= len(block) else block[: size - sent]
            h_up.update(c)
            sent += len(c)
            yield c

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.monotonic()
    c.request("PUT", "/upload/bench.bin", body=body(), headers={"Content-Length": str(size)})
    r = c.getresponse()
    answer = r.read()
    up_s = time.monotonic() - t
    c.close()
    if r.status != 201:
        raise SystemExit(f"upload: {r.status} {answer[:200]!r}")
    stored = json.loads(answer)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.monotonic()
    c.request("GET", "/download/bench.bin")
    r = c.getresponse()
    h_down, n = hashlib.sha256(), 0
    buf = bytearray(MIB)
    view = memoryview(buf)
    while True:
        k = r.readinto(buf)
        if not k:
            break
        h_down.update(view[:k])
        n += k
    down_s = time.monotonic() - t
    c.close()
    if r.status != 200:
        raise SystemExit(f"download: {r.status}")
    ok = stored["bytes"] == size == n and stored["sha256"] == h_up.hexdigest() == h_down.hexdigest()
    if not ok:
        raise SystemExit(f"mismatch: sent {size} {h_up.hexdigest()}, stored {stored}, got {n} {h_down.hexdigest()}")
    return {"size": size, "up_s": up_s, "down_s": down_s, "sha256": stored["sha256"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=size_arg, default=6 << 30, help="bytes of the upload (default 6GiB)")
    ap.add_argument("--agent", help="run the app under this bake-agent (`bake-agent run`)")
    ap.add_argument("--json")
    args = ap.parse_args()
    imds = None
    if args.agent:
        args.agent = os.path.abspath(args.agent)
        if not os.access(args.agent, os.X_OK):
            ap.error(f"--agent {args.agent}: not an executable (bench/run build)")
        import restart  # the hand-written IMDS stand-in
        imds = restart.QuietServer(("127.0.0.1", 0), restart.Imds)
        threading.Thread(target=imds.serve_forever, daemon=True).start()
        args.imds_port = imds.server_port
    tmp = tempfile.mkdtemp(prefix="bench-upload-")
    uploads = os.path.join(tmp, "uploads")
    os.mkdir(uploads)
    proc = None
    try:
        with pgserver.postgres() as (url, _port, _dir):
            m = subprocess.run(["node", os.path.join(APP, "bin/migrate")], capture_output=True, text=True,
                               env={**os.environ, "DB_CONNECTION_STRING": url})
            if m.returncode:
                raise SystemExit(f"migrate failed: {m.stderr}")
            proc, app_pid, agent_pid, port = start_app(args, url, uploads, tmp)
            pids = [app_pid] + ([agent_pid] if agent_pid else [])
            before = {p: status_kib(p) for p in pids}
            sampler = Sampler(pids)
            sampler.start()
            try:
                r = transfer(port, args.size, os.urandom(MIB))
            finally:
                sampler.stop()
            after = {p: status_kib(p) for p in pids}
            r["app"] = {"rss_start_kib": before[app_pid].get("VmRSS"), "rss_peak_kib": sampler.peak[app_pid],
                        "hwm_kib": after[app_pid].get("VmHWM"), "rss_end_kib": after[app_pid].get("VmRSS")}
            if agent_pid:
                r["agent"] = {"binary": args.agent, "rss_start_kib": before[agent_pid].get("VmRSS"),
                              "rss_peak_kib": sampler.peak[agent_pid], "hwm_kib": after[agent_pid].get("VmHWM")}
            r["samples"] = sampler.samples
            stop(proc)
            proc = None
    finally:
        stop(proc)
        if imds:
            imds.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    mb = r["size"] / 1e6
    print(f"\nUpload and download through the sample app (PostgreSQL row, SHA-256 on both sides), "
          f"{r['size']} bytes ({r['size'] / (1 << 30):.2f} GiB), {r['samples']} RSS samples")
    print(f"| {'direction':<9} | {'s':>8} | {'MB/s':>8} |")
    print(f"|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    print(f"| {'up':<9} | {r['up_s']:8.2f} | {mb / r['up_s']:8.1f} |")
    print(f"| {'down':<9} | {r['down_s']:8.2f} | {mb / r['down_s']:8.1f} |")
    print(f"| {'process':<10} | {'RSS start':>10} | {'RSS peak':>10} | {'VmHWM':>10} |  (MiB)")
    print(f"|{'-' * 12}|{'-' * 12}|{'-' * 12}|{'-' * 12}|")
    rows = [("app (node)", r["app"])] + ([("bake-agent", r["agent"])] if "agent" in r else [])
    for name, x in rows:
        print(f"| {name:<10} | {x['rss_start_kib'] / 1024:10.1f} | {x['rss_peak_kib'] / 1024:10.1f} | "
              f"{x['hwm_kib'] / 1024:10.1f} |")
    if "agent" not in r:
        print("bake-agent: not measured (no --agent)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f)


if __name__ == "__main__":
    main()
