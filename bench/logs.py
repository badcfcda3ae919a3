#!/usr/bin/env python3
"""Log shipping, file -> CloudWatch Logs protocol: bake-logship against `aws logs push`.

    bench/logs.py [--lines 2000000] [--anchor-lines 200000] [--repeats 3] [--json OUT]

Each run writes one file of N lines of exactly 100 bytes ("%09d " + 90 x's), starts a fresh
bench/logsink (a local CloudWatch Logs endpoint that checks every PutLogEvents limit and, with
--check-sequence, that every line arrives once and in order), starts the shipper on the file and
measures the time until the sink holds N events, the shipper's CPU time (utime + stime of all its
threads, /proc/PID/stat) and its peak RSS (VmHWM). A run passes only when the sink got exactly N
events, no limit was violated and no line was lost, duplicated or reordered.

Shippers:
- bake-logship (target/release, the agent's shipping code alone; docs/logs.md), tailing the file;
- `bake-agent run` with the same [logs] section (the whole agent: supervising `sleep 3600`,
  metrics off; IMDS from restart.py's hand-written stand-in), tailing the same file;
- the anchor: `aws logs push --config-file` from the awscli-cwlogs plugin (PyPI 1.4.6, the
  CloudWatch Logs agent's engine), tailing the same file, in .tools/cwlogs-venv; its config keeps
  its defaults, which are already the maximum batch (1,048,576 bytes, 10,000 events) and the
  minimum buffer duration (5 s). The anchor gets fewer lines (it is ~100x slower); the figures
  are per line.

With --emulator-lines N (run it with tests/emulator/.venv/bin/python, which has boto3), each
shipper also ships N lines once into the emulator (moto), and every line is read back with
GetLogEvents and checked: all there, once, in order.

Medians over --repeats. Loopback only; every wait is bounded.
"""
import argparse
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restart  # noqa: E402  (the IMDS stand-in for `bake-agent run`)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CWLOGS_AWS = os.path.join(ROOT, ".tools/cwlogs-venv/bin/aws")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def write_lines(path, n):
    pad = "x" * 90
    with open(path, "w") as f:
        for start in range(0, n, 100000):
            f.write("".join(f"{i:09d} {pad}\n" for i in range(start, min(n, start + 100000))))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.load(r)


def start_sink(sink_bin, work):
    out = open(os.path.join(work, "sink.out"), "w+")
    p = subprocess.Popen([sink_bin, "--check-sequence"], stdout=out, stderr=subprocess.STDOUT)
    for _ in range(200):
        out.seek(0)
        line = out.readline()
        if line.startswith("listening on "):
            return p, line.split()[-1]
        time.sleep(0.025)
    p.kill()
    raise SystemExit("logsink did not start")


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


def run_one(kind, n, sink_bin, logship_bin, timeout_s, agent_bin=None, imds_port=None, emulator=None):
    work = tempfile.mkdtemp(prefix=f"bench-logs-{kind.replace(' ', '-')}-")
    os.mkdir(os.path.join(work, "logs"))
    log = os.path.join(work, "logs", "app.log")
    write_lines(log, n)
    group = "/bench/" + os.path.basename(work) if emulator else "/bench"
    if emulator:
        sink, url = None, emulator
    else:
        sink, url = start_sink(sink_bin, work)
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    if kind == "bake-logship":
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
        argv = [logship_bin, cfg]
    elif kind == "bake-agent run":
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
        argv = [agent_bin, "--config", cfg, "run"]
    else:
        home = os.path.join(work, "home")
        os.makedirs(os.path.join(home, ".aws"))
        with open(os.path.join(home, ".aws", "config"), "w") as f:
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
        env["HOME"] = home
        argv = [CWLOGS_AWS, "--endpoint-url", url, "logs", "push", "--config-file", cfg]
    errlog = open(os.path.join(work, "shipper.err"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errlog)
    errlog.close()
    def count():
        if not emulator:
            return stats(url)["events"]
        return len(emulator_events(url, group) or [])

    try:
        events = 0
        while events < n:
            if time.monotonic() - t0 > timeout_s:
                raise SystemExit(f"{kind}: only {events} of {n} events within {timeout_s} s "
                                 f"(see {work}/shipper.err)")
            if p.poll() is not None:
                raise SystemExit(f"{kind} exited ({p.returncode}) after {events} of {n} events "
                                 f"(see {work}/shipper.err)")
            time.sleep(0.5 if emulator else 0.02)
            events = count()
        secs = time.monotonic() - t0
        cpu, hwm = cpu_s(p.pid), hwm_kib(p.pid)
        time.sleep(0.3)  # anything sent twice after the count was reached shows up now
        if emulator:
            # The same checks as the sink's: every line once, in order, nothing else.
            msgs = emulator_events(url, group)
            nums = [int(m.split()[0]) if m[:9].isdigit() else -1 for m in msgs]
            s = {"events": len(msgs), "violations": 0,
                 "sequence_errors": sum(1 for i, x in enumerate(nums) if x != i)}
        else:
            s = stats(url)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if sink:
            sink.kill()
            sink.wait()
    ok = s["events"] == n and s["violations"] == 0 and s["sequence_errors"] == 0
    if ok:
        shutil.rmtree(work, ignore_errors=True)  # up to 200 MB of lines; kept when a check failed
    return {"lines": n, "secs": secs, "cpu_s": cpu, "hwm_kib": hwm, "sink": s, "ok": ok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--anchor-lines", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--release", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--emulator-lines", type=int, default=0,
                    help="also ship this many lines into the emulator, once per shipper (needs boto3)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sink_bin = os.path.join(args.release, "logsink")
    logship_bin = os.path.join(args.release, "bake-logship")
    agent_bin = os.path.join(args.release, "bake-agent")
    imds = restart.QuietServer(("127.0.0.1", 0), restart.Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    runs = {"bake-logship": [], "bake-agent run": [], "aws logs push": []}
    anchor_error = None
    for _ in range(args.repeats):
        runs["bake-logship"].append(run_one("bake-logship", args.lines, sink_bin, logship_bin, 300))
        runs["bake-agent run"].append(run_one("bake-agent run", args.lines, sink_bin, logship_bin, 300,
                                              agent_bin, imds.server_port))
        if anchor_error is None:
            try:
                runs["aws logs push"].append(run_one("aws logs push", args.anchor_lines, sink_bin,
                                                     logship_bin, 600))
            except (SystemExit, OSError) as e:
                anchor_error = str(e)
    result = {"runs": runs, "anchor_error": anchor_error}
    print_table(result, "logsink (CloudWatch Logs JSON protocol, every limit and the line sequence "
                "checked)", "sink check")
    if args.emulator_lines:
        import bake as bakebench  # needs boto3: run with tests/emulator/.venv/bin/python
        emu_work = tempfile.mkdtemp(prefix="bench-logs-emulator-")
        emu, url = bakebench.start_emulator(emu_work)
        emu_runs = {"bake-logship": [], "bake-agent run": [], "aws logs push": []}
        try:
            for kind in emu_runs:
                try:
                    emu_runs[kind].append(run_one(kind, args.emulator_lines, sink_bin, logship_bin, 120,
                                                  agent_bin, imds.server_port, emulator=url))
                except (SystemExit, OSError) as e:
                    print(f"{kind} into the emulator failed: {e}")
        finally:
            bakebench.stop_emulator(emu)
            shutil.rmtree(emu_work, ignore_errors=True)
        result["emulator_runs"] = emu_runs
        print_table({"runs": emu_runs, "anchor_error": None},
                    "the emulator (moto; GetLogEvents reads every line back)", "read-back check")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    every = [r for rs in runs.values() for r in rs]
    every += [r for rs in result.get("emulator_runs", {}).values() for r in rs]
    return 0 if all(r["ok"] for r in every) else 1


def summary(rs):
    lps = statistics.median(r["lines"] / r["secs"] for r in rs)
    cpm = statistics.median(r["cpu_s"] / (r["lines"] / 1e6) for r in rs)
    hwm = statistics.median(r["hwm_kib"] for r in rs) / 1024
    return lps, cpm, hwm


def print_table(result, into, check_name):
    runs = result["runs"]
    anchor = summary(runs["aws logs push"]) if runs["aws logs push"] else None
    print(f"\nLog shipping: file -> {into}, medians of {len(runs['bake-logship'])} runs")
    print(f"| {'shipper':<14} | {'lines/run':>9} | {'lines/s':>10} | {'x anchor':>8} | {'CPU-s/M lines':>13} "
          f"| {'x anchor':>8} | {'peak RSS MiB':>12} | {check_name:>22} |")
    print(f"|{'-' * 16}|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 15}|{'-' * 10}|{'-' * 14}|{'-' * 24}|")
    for name, rs in runs.items():
        if not rs:
            continue
        lps, cpm, hwm = summary(rs)
        x1 = f"{lps / anchor[0]:.1f}x" if anchor else "-"
        x2 = f"{cpm / anchor[1]:.3f}x" if anchor else "-"
        got = min(r["sink"]["events"] for r in rs)
        check = "ok" if all(r["ok"] for r in rs) else "FAILED"
        check = f"{check} ({got}/{rs[0]['lines']})"
        print(f"| {name:<14} | {rs[0]['lines']:>9} | {lps:>10,.0f} | {x1:>8} | {cpm:>13.3f} | {x2:>8} "
              f"| {hwm:>12.1f} | {check:>22} |")
    if result["anchor_error"]:
        print(f"anchor failed: {result['anchor_error']}")


if __name__ == "__main__":
    sys.exit(main())
