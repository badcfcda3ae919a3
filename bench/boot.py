#!/usr/bin/env python3
"""bake-agent boot to ready, per step, against the local AWS emulator (moto).

    tests/emulator/.venv/bin/python bench/boot.py [--agent target/release/bake-agent] [--repeats 3]

Starts tests/emulator/serve, puts 5 SecureString parameters under /bench/app, then starts
`bake-agent run` (standalone: no Auto Scaling group, so no lifecycle hook) with [secrets] and a
tcp readiness probe on the tiny C app of bench/restart.py, and reads the agent's JSON log lines:
identity (IMDSv2 round trips to a hand-written stand-in, the only fake: there is no IMDS off
EC2), secrets (GetParametersByPath against moto), supervise (the app spawned), readiness (the
probe's first success). "agent up" is the agent's own elapsed time from its start to the app
spawned; wall is spawn of the agent process -> the "app is ready" line. Medians over --repeats.
Lifecycle completion is not measured here: it needs an instance that is a member of a group with
a pending launch hook (the e2e fleet harness, tests/e2e, does that).
"""
import argparse
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restart  # noqa: E402  (the C app, the IMDS stand-in, free_port)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_emulator():
    p = subprocess.Popen([os.path.join(ROOT, "tests/emulator/serve"), "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return p, line.split()[-1]


def one_boot(agent, app, url, imds_port, tmp):
    port = restart.free_port()
    cfg = os.path.join(tmp, f"agent-{port}.toml")
    with open(cfg, "w") as f:
        f.write(f"""[identity]
standalone = true
[app]
command = ["{app}"]
env = {{ PORT = "{port}" }}
[secrets]
path = "/bench/app"
[readiness]
probe = "tcp://127.0.0.1:{port}"
interval = "10ms"
[metrics]
enabled = false
""")
    env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{imds_port}/",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url, "RUST_LOG": "info"}
    t0 = time.perf_counter()
    p = subprocess.Popen([agent, "--config", cfg, "--log-format", "json", "run"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    steps, wall = {}, None
    deadline = threading.Timer(30, p.kill)
    deadline.start()
    try:
        for line in p.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = rec.get("fields", rec)
            msg = fields.get("message", "")
            if "elapsed_ms" in fields:
                key = fields.get("step") or msg
                steps[key] = float(fields["elapsed_ms"])
            if msg == "app is ready":
                wall = (time.perf_counter() - t0) * 1000
                break
    finally:
        deadline.cancel()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if wall is None:
        raise SystemExit(f"the agent never reported ready; steps seen: {steps}")
    steps["wall: spawn -> ready"] = wall
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/bake-agent"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    agent = os.path.abspath(args.agent)
    tmp = tempfile.mkdtemp(prefix="bench-boot-")
    app = os.path.join(tmp, "app")
    with open(app + ".c", "w") as f:
        f.write(restart.APP_C)
    subprocess.run(["cc", "-O2", "-o", app, app + ".c"], check=True)
    imds = restart.QuietServer(("127.0.0.1", 0), restart.Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    emu, url = start_emulator()
    try:
        ssm = boto3.client("ssm", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="bench", aws_secret_access_key="bench")
        for i in range(5):
            ssm.put_parameter(Name=f"/bench/app/secret{i}", Value=f"value-{i}", Type="SecureString",
                              Overwrite=True)
        runs = [one_boot(agent, app, url, imds.server_port, tmp) for _ in range(args.repeats)]
    finally:
        os.killpg(emu.pid, signal.SIGTERM)
        emu.wait()
        imds.shutdown()
    keys = list(dict.fromkeys(k for r in runs for k in r))
    print(f"\nBoot to ready (standalone agent, 5 secrets from moto, tcp probe every 10 ms), "
          f"median of {len(runs)} boots (ms)")
    print(f"| {'step (agent log elapsed_ms)':<28} | {'median':>8} | {'min':>8} | {'max':>8} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for k in keys:
        xs = [r[k] for r in runs if k in r]
        print(f"| {k:<28} | {statistics.median(xs):8.1f} | {min(xs):8.1f} | {max(xs):8.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f)


if __name__ == "__main__":
    sys.exit(main())
