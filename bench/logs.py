#!/usr/bin/env python3
"""Log shipping, file -> CloudWatch Logs protocol over HTTPS: bake-logship against fluent-bit.

    bench/logs.py [--lines 1000000 --lines 10000000] [--repeats 3] [--fluent-bit-dir DIR]
                  [--emulator-lines 20000] [--cwlogs-lines 0] [--json OUT]

Each size gets one file of N lines of exactly 100 bytes ("%09d " + 90 x's), written once and
hard-linked into every run's own directory. Each run starts a fresh bench/logsink (a local
CloudWatch Logs endpoint that checks every PutLogEvents limit and, with --check-sequence, counts
every line number it receives: lost, duplicated and out-of-order lines are counted apart), starts
the shipper on the file and measures the time until the sink holds all N numbers, the shipper's
CPU time (utime + stime of all its threads, /proc/PID/stat), its peak RSS (VmHWM) and the sink's
CPU time.

HTTPS: at each bench run a throw-away CA and a server certificate for IP:127.0.0.1 are made with
`openssl` in the run's temporary directory, and the sink serves HTTPS with them (fluent-bit's
cloudwatch_logs output speaks nothing else to an endpoint, and CloudWatch is HTTPS). bake-logship
and `bake-agent run` trust the CA through SSL_CERT_FILE (the SDK's client is rustls with the
native roots of rustls-native-certs, which reads SSL_CERT_FILE); fluent-bit through `tls.ca_file`
(FB_CA). Before the rows, one bake-logship run *without* SSL_CERT_FILE must deliver nothing (the
certificate is verified, not just accepted).

Rows (one round = each row once, rounds repeated --repeats times, medians):
- bake-logship (target/release, the agent's shipping code alone; docs/logs.md), over HTTPS;
- bake-logship over plain HTTP to the same sink without TLS: the TLS cost, same run;
- `bake-agent run` with the same [logs] section (the whole agent: supervising `sleep 3600`,
  metrics off; IMDS from restart.py's hand-written stand-in), over HTTPS;
- fluent-bit (defaults) and fluent-bit (tuned): Fluent Bit v5.1.1, the prebuilt anchor of
  --fluent-bit-dir (default $FLUENT_BIT_DIR, else ../shared/anchors/fluent-bit next to the repo)
  with its two configurations (its README: `tail` from the head, `cloudwatch_logs` out). Absent
  or not runnable: the rows are missing and the reason is printed.
- awscli-cwlogs (`aws logs push`, the old CloudWatch Logs agent's engine) is no longer in the
  default run: it is ~100x slower than the others and an abandoned tool. With --cwlogs-lines N and
  .tools/cwlogs-venv (bench/run install with CWLOGS_LINES set) it runs as an extra row labelled
  "old", over HTTPS too (botocore trusts the CA through AWS_CA_BUNDLE).

fluent-bit keeps many PutLogEvents to one stream in flight, so its batches arrive out of order: a
run passes the count check when every number arrived exactly once; "in order" is reported apart
(with the number of late batches). For bake-logship and `bake-agent run`, in order is required.

With --emulator-lines N (run it with tests/emulator/.venv/bin/python, which has boto3), each
shipper also ships N lines once into the emulator (moto), and every line is read back with
GetLogEvents and checked. moto serves plain HTTP; every row reaches it through a small TLS
front in this script (the same CA), so fluent-bit can take part and every row uses HTTPS.

Exit status 0 when every bake row passed all checks (the anchors' results are reported, not
judged). Loopback only; every wait is bounded.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restart  # noqa: E402  (the IMDS stand-in for `bake-agent run`)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CWLOGS_AWS = os.path.join(ROOT, ".tools/cwlogs-venv/bin/aws")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FB_ROWS = {"fluent-bit (defaults)": "fluent-bit.conf", "fluent-bit (tuned)": "fluent-bit-tuned.conf"}
BAKE_ROWS = ["bake-logship", "bake-logship (HTTP)", "bake-agent run"]
OLD_ROW = "aws logs push (old)"


def load_avg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def load_label(la):
    """How the tables name the machine's state: loaded when the 1-minute load average is above 0.5."""
    return f"measured on a loaded machine: load average {la}" if float(la.split()[0]) > 0.5 else f"load average {la}"


def write_lines(path, n):
    pad = "x" * 90
    with open(path, "w") as f:
        for start in range(0, n, 100000):
            f.write("".join(f"{i:09d} {pad}\n" for i in range(start, min(n, start + 100000))))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def thread_cpu(pid):
    """[name, CPU seconds] of each thread of a process."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out.append([f.read().strip(), cpu_s(f"{pid}/task/{tid}")])
        except OSError:
            pass
    return out


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def make_certs(d):
    """A throw-away CA and a server certificate for IP:127.0.0.1 signed by it (RSA 2048, 2 days)."""
    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    cert, key, csr = os.path.join(d, "server.pem"), os.path.join(d, "server.key"), os.path.join(d, "server.csr")
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=bake bench throw-away CA",
        "-addext", "basicConstraints = critical, CA:TRUE", "-addext", "keyUsage = critical, keyCertSign, cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return {"ca": ca, "cert": cert, "key": key}


class Stats:
    """GET /stats of a sink over one kept-alive connection (a TLS handshake per poll would load
    the sink it measures)."""

    def __init__(self, url, ca):
        scheme, hostport = url.split("://")
        host, port = hostport.rsplit(":", 1)
        if scheme == "https":
            ctx = ssl.create_default_context(cafile=ca)
            self.new = lambda: http.client.HTTPSConnection(host, int(port), timeout=5, context=ctx)
        else:
            self.new = lambda: http.client.HTTPConnection(host, int(port), timeout=5)
        self.conn = None

    def get(self):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = self.new()
                self.conn.request("GET", "/stats")
                return json.loads(self.conn.getresponse().read())
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        return None

    def close(self):
        if self.conn:
            self.conn.close()


def start_sink(sink_bin, work, tls):
    out = open(os.path.join(work, "sink.out"), "w+")
    argv = [sink_bin, "--check-sequence"]
    if tls:
        argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(200):
        out.seek(0)
        line = out.readline()
        if line.startswith("listening on "):
            return p, line.split()[-1]
        if p.poll() is not None:
            break
        time.sleep(0.025)
    p.kill()
    raise SystemExit(f"logsink did not start (see {out.name})")


class TlsFront:
    """HTTPS in front of a plain-HTTP endpoint (moto): a thread pair per connection copies bytes."""

    def __init__(self, target_port, tls):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tls["cert"], tls["key"])
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
            u = socket.create_connection(self.target)
        except OSError:
            c.close()
            return

        def pump(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(u, s), daemon=True)
        t.start()
        pump(s, u)
        t.join()
        s.close()
        u.close()

    def close(self):
        self.sock.close()


def emulator_events(url, group):
    """Every message in the emulator's stream `group`/i-bench, oldest first (None: no stream yet)."""
    import boto3  # only in the emulator's venv
    logs = boto3.client("logs", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")
    out, token = [], None
    try:
        while True:
            kw = {"nextToken": token} if token else {}
            r = logs.get_log_events(logGroupName=group, logStreamName="i-bench", startFromHead=True,
                                    limit=10000, **kw)
            out += [e["message"] for e in r["events"]]
            if not r["events"] or r["nextForwardToken"] == token:
                return out
            token = r["nextForwardToken"]
    except logs.exceptions.ResourceNotFoundException:
        return None


def check_messages(msgs, n):
    """The sink's counters computed from a read-back list of messages."""
    seen = bytearray(n)
    s = {"events": len(msgs), "violations": 0, "duplicates": 0, "unnumbered": 0, "distinct": 0,
         "sequence_errors": 0, "late_batches": None}
    prev = -1
    for m in msgs:
        x = int(m[:9]) if m[:9].isdigit() else -1
        if not 0 <= x < n:
            s["unnumbered"] += 1
            continue
        s["sequence_errors"] += x != prev + 1
        prev = x
        if seen[x]:
            s["duplicates"] += 1
        else:
            s["distinct"] += 1
            seen[x] = 1
    return s


def shipper_argv(kind, work, group, url, tls, fb_dir, imds_port, bins):
    """argv and environment of one shipper run."""
    log = os.path.join(work, "logs", "app.log")
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    if url.startswith("https:") and tls:
        env["SSL_CERT_FILE"] = tls["ca"]
    if kind.startswith("bake-logship"):
        cfg = os.path.join(work, "ship.toml")
        with open(cfg, "w") as f:
            f.write(f"""instance_id = "i-bench"
[logs]
state_dir = "{work}/state"
poll_interval = "50ms"
[[logs.files]]
path = "{work}/logs/*.log"
log_group = "{group}"
log_stream = "{{instance_id}}"
""")
        env.update({"AWS_ENDPOINT_URL": url, "RUST_LOG": "warn"})
        return [bins["logship"], cfg], env
    if kind == "bake-agent run":
        cfg = os.path.join(work, "agent.toml")
        with open(cfg, "w") as f:
            f.write(f"""[identity]
standalone = true
[app]
user = "root"
command = ["/bin/sleep", "3600"]
[metrics]
enabled = false
[logs]
state_dir = "{work}/state"
poll_interval = "50ms"
[[logs.files]]
path = "{work}/logs/*.log"
log_group = "{group}"
log_stream = "i-bench"
""")
        env.update({"AWS_ENDPOINT_URL": url, "RUST_LOG": "warn",
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{imds_port}/"})
        del env["AWS_EC2_METADATA_DISABLED"]
        return [bins["agent"], "--config", cfg, "run"], env
    if kind in FB_ROWS:
        env.update({"FB_FILE": log, "FB_DB": os.path.join(work, "tail.db"), "FB_PORT": url.rsplit(":", 1)[1],
                    "FB_GROUP": group, "FB_STREAM": "i-bench", "FB_CA": tls["ca"],
                    "FB_LOG_LEVEL": os.environ.get("FB_LOG_LEVEL", "warn")})
        return [os.path.join(fb_dir, "fluent-bit"), "-c", os.path.join(fb_dir, FB_ROWS[kind])], env
    # The old anchor: awscli-cwlogs.
    os.makedirs(os.path.join(work, ".aws"))
    with open(os.path.join(work, ".aws", "config"), "w") as f:
        f.write("[plugins]\ncwlogs = cwlogs\n")
    cfg = os.path.join(work, "push.conf")
    with open(cfg, "w") as f:
        f.write(f"""[general]
state_file = {work}/push-state
[app]
file = {log}
log_group_name = {group}
log_stream_name = i-bench
initial_position = start_of_file
""")
    env["AWS_CA_BUNDLE"] = tls["ca"]
    return [CWLOGS_AWS, "--endpoint-url", url, "logs", "push", "--config-file", cfg], env


def run_one(kind, n, lines_file, ctx, timeout_s, emulator=None):
    """One shipper run; a result dict (ok False with the reason when it did not deliver)."""
    work = tempfile.mkdtemp(prefix="run-", dir=ctx["work"])
    os.mkdir(os.path.join(work, "logs"))
    os.link(lines_file, os.path.join(work, "logs", "app.log"))
    group = "/bench/" + os.path.basename(work) if emulator else "/bench"
    tls = ctx["tls"]
    read_url = ctx.get("emulator_url")  # moto itself, for the read-back (emulator: maybe its TLS front)
    if emulator:
        sink, url = None, emulator
    else:
        sink, url = start_sink(ctx["bins"]["sink"], work, None if kind == "bake-logship (HTTP)" else tls)
    try:
        argv, env = shipper_argv(kind, work, group, url, tls, ctx["fb_dir"], ctx["imds_port"], ctx["bins"])
        errlog = open(os.path.join(work, "shipper.err"), "w")
        poll = None if emulator else Stats(url, tls["ca"])
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errlog)
        errlog.close()
    except BaseException:
        if sink:
            sink.kill()
            sink.wait()
        raise

    def distinct():
        if emulator:
            return check_messages(emulator_events(read_url, group) or [], n)["distinct"]
        return poll.get()["distinct"]

    why, secs, cpu, hwm, sink_cpu, threads = None, None, None, None, None, []
    try:
        got, last_change, last_got = 0, t0, -1
        while got < n:
            now = time.monotonic()
            if got != last_got:
                last_got, last_change = got, now
            if now - t0 > timeout_s:
                why = f"only {got} of {n} lines within {timeout_s} s"
                break
            if now - last_change > 30:
                why = f"stalled at {got} of {n} lines for 30 s"
                break
            if p.poll() is not None:
                why = f"exited ({p.returncode}) after {got} of {n} lines"
                break
            time.sleep(0.5 if emulator else 0.02)
            got = distinct()
        secs = time.monotonic() - t0
        if p.poll() is None:
            cpu, hwm, threads = cpu_s(p.pid), hwm_kib(p.pid), thread_cpu(p.pid)
        if sink:
            sink_cpu = cpu_s(sink.pid)
        time.sleep(0.3)  # anything sent twice after the count was reached shows up now
        if emulator:
            s = check_messages(emulator_events(read_url, group) or [], n)
        else:
            s = poll.get()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if poll:
            poll.close()
        if sink:
            sink.kill()
            sink.wait()
    lost = n - s["distinct"]
    in_order = s["sequence_errors"] == 0 and not s.get("late_batches")
    ok = why is None and lost == 0 and s["duplicates"] == 0 and s["unnumbered"] == 0 and s["violations"] == 0
    if why is not None:
        why += f" (see {work}/shipper.err)"
    if ok:
        shutil.rmtree(work, ignore_errors=True)  # kept when a check failed
    return {"lines": n, "secs": secs, "cpu_s": cpu, "hwm_kib": hwm, "threads": threads, "sink_cpu_s": sink_cpu,
            "sink": s,
            "lost": lost, "in_order": in_order, "ok": ok, "error": why}


def trust_check(ctx, lines_file):
    """bake-logship without SSL_CERT_FILE must deliver nothing: the certificate is verified."""
    work = tempfile.mkdtemp(prefix="trust-", dir=ctx["work"])
    os.mkdir(os.path.join(work, "logs"))
    os.link(lines_file, os.path.join(work, "logs", "app.log"))
    sink, url = start_sink(ctx["bins"]["sink"], work, ctx["tls"])
    argv, env = shipper_argv("bake-logship", work, "/bench", url, None, None, None, ctx["bins"])
    err = open(os.path.join(work, "shipper.err"), "w")
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    time.sleep(3)
    poll = Stats(url, ctx["tls"]["ca"])
    events = poll.get()["events"]
    poll.close()
    p.kill()
    p.wait()
    sink.kill()
    sink.wait()
    err.close()
    with open(err.name) as f:
        text = f.read()
    shutil.rmtree(work, ignore_errors=True)
    lines = [ln for ln in text.splitlines() if "certificate" in ln.lower() or "UnknownIssuer" in ln]
    if not lines:
        return events, None
    at = lines[0].find("TLS handshake")
    return events, lines[0][at:at + 200] if at >= 0 else lines[0][:200]


def fluent_bit(fb_dir):
    """(dir, version, None) when the prebuilt fluent-bit runs, else (None, None, the reason)."""
    exe = os.path.join(fb_dir, "fluent-bit")
    if not os.path.isfile(exe):
        return None, None, f"no fluent-bit at {exe} (set FLUENT_BIT_DIR or --fluent-bit-dir)"
    for conf in FB_ROWS.values():
        if not os.path.isfile(os.path.join(fb_dir, conf)):
            return None, None, f"no {conf} in {fb_dir}"
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except OSError as e:
        return None, None, f"{exe} does not run: {e}"
    if r.returncode != 0:
        return None, None, (f"{exe} --version failed ({r.returncode}): {(r.stderr or r.stdout).strip()[:300]}"
                            " (it needs Debian's libyaml-0-2 libsqlite3-0 libssl3)")
    return fb_dir, r.stdout.splitlines()[0].strip(), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, action="append",
                    help="lines per run (repeatable; default: 1000000 and 10000000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--release", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--fluent-bit-dir", default=os.environ.get("FLUENT_BIT_DIR") or
                    os.path.join(os.path.dirname(ROOT), "shared/anchors/fluent-bit"))
    ap.add_argument("--cwlogs-lines", type=int, default=0,
                    help="also run the old anchor, awscli-cwlogs, with this many lines (needs .tools/cwlogs-venv)")
    ap.add_argument("--emulator-lines", type=int, default=0,
                    help="also ship this many lines into the emulator, once per shipper (needs boto3)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sizes = args.lines or [1_000_000, 10_000_000]
    bins = {"sink": os.path.join(args.release, "logsink"), "logship": os.path.join(args.release, "bake-logship"),
            "agent": os.path.join(args.release, "bake-agent")}
    fb_dir, fb_version, fb_missing = fluent_bit(os.path.abspath(args.fluent_bit_dir))
    if fb_missing:
        print(f"fluent-bit rows MISSING: {fb_missing}")
    else:
        print(f"fluent-bit: {fb_version} from {fb_dir}")
    rows = BAKE_ROWS + (list(FB_ROWS) if fb_dir else [])
    if args.cwlogs_lines:
        if os.access(CWLOGS_AWS, os.X_OK):
            rows.append(OLD_ROW)
        else:
            print(f"{OLD_ROW}: not run, no {CWLOGS_AWS} (bench/run install with CWLOGS_LINES set)")
    imds = restart.QuietServer(("127.0.0.1", 0), restart.Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="bench-logs-")
    ctx = {"work": work, "tls": make_certs(work), "bins": bins, "fb_dir": fb_dir, "fb_missing": fb_missing,
           "imds_port": imds.server_port}
    result = {"fluent_bit": fb_version, "fluent_bit_missing": fb_missing, "sizes": {}}
    every = []
    try:
        small = os.path.join(work, "lines-1000.log")
        write_lines(small, 1000)
        events, cert_error = trust_check(ctx, small)
        result["trust_check"] = {"events_without_ca": events, "certificate_error": cert_error}
        print(f"trust check: bake-logship without SSL_CERT_FILE delivered {events} events in 3 s;"
              f" its log: {cert_error or 'no certificate error'}")
        if events:
            raise SystemExit("the sink's certificate was accepted without its CA: the HTTPS rows prove nothing")
        for n in sizes:
            la = load_avg()
            print(f"\n== {n:,} lines x {args.repeats} rounds, load average at start: {la}", flush=True)
            lines_file = os.path.join(work, f"lines-{n}.log")
            write_lines(lines_file, n)
            runs = {k: [] for k in rows}
            for _ in range(args.repeats):
                for kind in rows:
                    m = args.cwlogs_lines if kind == OLD_ROW else n
                    f = lines_file
                    if kind == OLD_ROW:
                        f = os.path.join(work, f"lines-{m}.log")
                        if not os.path.exists(f):
                            write_lines(f, m)
                    r = run_one(kind, m, f, ctx, 900)
                    runs[kind].append(r)
                    if r["error"]:
                        print(f"  {kind}: {r['error']}", flush=True)
            os.unlink(lines_file)
            result["sizes"][str(n)] = {"load_average": la, "runs": runs}
            every += [(k, r) for k, rs in runs.items() for r in rs]
            print_table(runs, f"logsink over HTTPS, {n:,} lines of 100 bytes, medians of {args.repeats} runs "
                        f"({load_label(la)})", "lost/dup")
            if fb_missing:
                print(f"fluent-bit rows missing: {fb_missing}")
            print_targets(runs)
            print_bounds(runs)
        if args.emulator_lines:
            every += emulator_part(args, ctx, rows, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0 if all(r["ok"] and r["in_order"] for k, r in every if k in BAKE_ROWS) else 1


def emulator_part(args, ctx, rows, result):
    import bake as bakebench  # needs boto3: run with tests/emulator/.venv/bin/python
    la = load_avg()
    print(f"\n== the emulator, {args.emulator_lines:,} lines, load average at start: {la}", flush=True)
    emu_work = tempfile.mkdtemp(prefix="emulator-", dir=ctx["work"])
    emu, url = bakebench.start_emulator(emu_work)
    front = TlsFront(int(url.rsplit(":", 1)[1]), ctx["tls"])
    ctx["emulator_url"] = url
    https = f"https://127.0.0.1:{front.port}"
    lines_file = os.path.join(ctx["work"], f"lines-{args.emulator_lines}.log")
    write_lines(lines_file, args.emulator_lines)
    emu_runs = {k: [] for k in rows if k != OLD_ROW}
    try:
        for kind in emu_runs:
            r = run_one(kind, args.emulator_lines, lines_file, ctx, 300,
                        emulator=url if kind == "bake-logship (HTTP)" else https)
            emu_runs[kind].append(r)
            if r["error"]:
                print(f"  {kind} into the emulator: {r['error']}")
    finally:
        front.close()
        bakebench.stop_emulator(emu)
    result["emulator"] = {"load_average": la, "runs": emu_runs}
    print_table(emu_runs, "the emulator (moto behind a TLS front; GetLogEvents reads every line back), "
                f"one run each ({load_label(la)})", "lost/dup")
    if ctx["fb_missing"]:
        print(f"fluent-bit rows missing: {ctx['fb_missing']}")
    return [(k, r) for k, rs in emu_runs.items() for r in rs]


def med(rs, f):
    xs = [f(r) for r in rs if r["secs"] and r["cpu_s"] is not None and not r["error"]]
    return statistics.median(xs) if xs else None


def summary(rs):
    return (med(rs, lambda r: r["lines"] / r["secs"]), med(rs, lambda r: r["cpu_s"] / (r["lines"] / 1e6)),
            med(rs, lambda r: r["hwm_kib"] / 1024))


def print_table(runs, into, check_name):
    tuned = summary(runs["fluent-bit (tuned)"]) if runs.get("fluent-bit (tuned)") else None
    print(f"\nLog shipping: file -> {into}")
    print(f"| {'shipper':<21} | {'lines/run':>9} | {'lines/s':>10} | {'x fb tuned':>10} | {'CPU-s/M lines':>13} "
          f"| {'x fb tuned':>10} | {'peak RSS MiB':>12} | {check_name:>9} | {'in order':<24} |")
    print(f"|{'-' * 23}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 15}|{'-' * 12}|{'-' * 14}|{'-' * 11}|{'-' * 26}|")
    for name, rs in runs.items():
        if not rs:
            continue
        lps, cpm, hwm = summary(rs)
        ok_tuned = tuned and tuned[0] and lps
        x1 = f"{lps / tuned[0]:.2f}x" if ok_tuned else "-"
        x2 = f"{cpm / tuned[1]:.3f}x" if ok_tuned and cpm is not None else "-"
        lost = max(r["lost"] for r in rs)
        dup = max(r["sink"]["duplicates"] for r in rs)
        late = [r["sink"].get("late_batches") for r in rs]
        if all(r["in_order"] for r in rs):
            order = "yes"
        elif None in late:
            order = f"no ({max(r['sink']['sequence_errors'] for r in rs)} jumps)"
        else:
            order = f"no ({statistics.median(late):.0f} late batches)"
        fmt = (lambda v, spec: format(v, spec) if v is not None else "-")
        print(f"| {name:<21} | {rs[0]['lines']:>9} | {fmt(lps, '>10,.0f')} | {x1:>10} | {fmt(cpm, '>13.3f')} "
              f"| {x2:>10} | {fmt(hwm, '>12.1f')} | {f'{lost}/{dup}':>9} | {order:<24} |")
        for r in rs:
            if r["error"]:
                print(f"    {name}: a run failed: {r['error']}")


def print_targets(runs):
    me, fb = runs.get("bake-logship"), runs.get("fluent-bit (tuned)")
    if not me or not fb:
        print("targets: not judged (no fluent-bit (tuned) row)")
        return
    (lps, cpm, hwm), (flps, fcpm, _) = summary(me), summary(fb)
    if None in (lps, cpm, flps, fcpm):
        print("targets: not judged (a row has no complete run)")
        return
    lost = max(r["lost"] for r in me) + max(r["sink"]["duplicates"] for r in me)
    order = all(r["in_order"] for r in me)
    hwm_mb = hwm * 1024 * 1024 / 1e6

    def mark(ok):
        return "met" if ok else "MISSED"
    print("targets (bake-logship against fluent-bit (tuned)):")
    print(f"  lines/s >= 3x:           {lps / flps:6.2f}x  {mark(lps >= 3 * flps)}")
    print(f"  CPU-s per line <= 1/3:   {cpm / fcpm:6.3f}x  {mark(cpm <= fcpm / 3)}")
    print(f"  peak RSS <= 20 MB:       {hwm_mb:6.1f} MB  {mark(hwm_mb <= 20)}")
    print(f"  0 lost, 0 duplicated:    {lost:6d}    {mark(lost == 0)}")
    print(f"  in order:                {'yes' if order else 'no':>6}    {mark(order)}")


def bound(rs):
    """Medians of what bounds a shipper: its share of a CPU, the sink's, and the per-put cycle."""
    rs = [r for r in rs if not r["error"] and r["sink_cpu_s"] is not None and r["sink"]["requests"]]
    if not rs:
        return None

    def m(f):
        return statistics.median(f(r) for r in rs)
    return {
        "shipper_cpu_share": m(lambda r: r["cpu_s"] / r["secs"]),
        "sink_cpu_share": m(lambda r: r["sink_cpu_s"] / r["secs"]),
        "sink_cpu_per_m": m(lambda r: r["sink_cpu_s"] / (r["lines"] / 1e6)),
        "puts_per_s": m(lambda r: r["sink"]["requests"] / r["secs"]),
        "events_per_put": m(lambda r: r["sink"]["events"] / r["sink"]["requests"]),
        "cycle_ms": m(lambda r: r["secs"] * 1000 / r["sink"]["requests"]),
        "handle_ms": m(lambda r: r["sink"]["put_handle_us"] / 1000 / r["sink"]["requests"]),
        "gap_ms": m(lambda r: r["sink"]["put_gap_us"] / 1000 / max(1, r["sink"]["requests"] - 1)),
        "max_in_flight": max(r["sink"]["max_in_flight"] for r in rs),
        # The busiest thread (by name) and its share of a core.
        "top_thread": statistics.mode(max(r["threads"], key=lambda t: t[1])[0] for r in rs if r["threads"]),
        "top_thread_share": m(lambda r: max(t[1] for t in r["threads"]) / r["secs"]),
        "threads": statistics.mode(len(r["threads"]) for r in rs),
    }


def print_bounds(runs):
    print("\nWhat bounds each shipper (medians; CPU share: CPU-seconds per second of the run, 1.0 = one core):")
    print(f"| {'shipper':<21} | {'shipper CPU':>11} | {'sink CPU':>8} | {'sink CPU-s/M':>12} | {'puts/s':>7} "
          f"| {'events/put':>10} | {'s/put ms':>8} | {'sink ms/put':>11} | {'gap ms/put':>10} | {'in flight':>9} "
          f"| {'busiest thread':<26} |")
    print("|" + "|".join("-" * w for w in (23, 13, 10, 14, 9, 12, 10, 13, 12, 11, 28)) + "|")
    for name, rs in runs.items():
        b = bound(rs)
        if not b:
            continue
        print(f"| {name:<21} | {b['shipper_cpu_share']:>11.2f} | {b['sink_cpu_share']:>8.2f} "
              f"| {b['sink_cpu_per_m']:>12.3f} | {b['puts_per_s']:>7.1f} | {b['events_per_put']:>10.0f} "
              f"| {b['cycle_ms']:>8.2f} | {b['handle_ms']:>11.2f} | {b['gap_ms']:>10.2f} | {b['max_in_flight']:>9} "
              f"| {b['top_thread'][:15]:<15} {b['top_thread_share']:4.2f} of {b['threads']:>2} |")
        if b["max_in_flight"] == 1:
            print(f"    {name}: one put in flight, so rate = events/put / (sink + gap); with a sink that answered at"
                  f" once: <= {b['events_per_put'] / b['gap_ms'] * 1000:,.0f} lines/s")
    print("  s/put: the run's wall time per PutLogEvents; sink ms/put: from the request's headers to the"
          " sink's reply (body read, parsed, checked); gap ms/put: from a stream's reply to its next"
          " request's headers (the shipper's side of the round trip; with several puts in flight it"
          " overlaps and means little); busiest thread: the shipper's thread with the most CPU (its"
          " name, CPU-seconds per second of the run) of its N threads.")
    https, http = summary(runs.get("bake-logship") or []), summary(runs.get("bake-logship (HTTP)") or [])
    bh, bp = bound(runs.get("bake-logship") or []), bound(runs.get("bake-logship (HTTP)") or [])
    if https[1] is not None and http[1] is not None and bh and bp:
        print(f"TLS cost, bake-logship HTTPS - HTTP: shipper {https[1] - http[1]:+.3f} CPU-s per million lines"
              f" ({https[1]:.3f} vs {http[1]:.3f}), sink {bh['sink_cpu_per_m'] - bp['sink_cpu_per_m']:+.3f}"
              f" ({bh['sink_cpu_per_m']:.3f} vs {bp['sink_cpu_per_m']:.3f}); rate {https[0]:,.0f} vs {http[0]:,.0f}"
              " lines/s")


if __name__ == "__main__":
    sys.exit(main())
