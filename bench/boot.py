#!/usr/bin/env python3
"""bake-agent boot to ready, per step, against the local AWS emulator (moto).

    tests/emulator/.venv/bin/python bench/boot.py [--agent target/release/bake-agent] [--repeats 3]
        [--modes standalone,group] [--json OUT]

Starts tests/emulator/serve (real time), puts 5 SecureString parameters under /bench/app, then
boots `bake-agent run` with [secrets] and a tcp readiness probe every 10 ms on the tiny C app of
bench/restart.py, and reads the agent's JSON log lines. Two modes, both by default:

- standalone: `[identity] standalone = true`, no Auto Scaling group, so no lifecycle hook;
- group: the emulator has a group with an `autoscaling:EC2_INSTANCE_LAUNCHING` hook whose
  DefaultResult is ABANDON; before each boot the group grows by one, the new instance waits in
  Pending:Wait, the IMDS stand-in answers its instance id, and the agent (`[identity] asg_name`)
  looks the hook up (DescribeLifecycleHooks), waits for readiness and completes it with CONTINUE.
  Afterwards the instance must be InService in the emulator (checked; only the agent's CONTINUE
  can get it there).

Steps: identity (IMDSv2 round trips to a hand-written stand-in, the only fake: there is no IMDS
off EC2; plus config and AWS SDK set-up), secrets (GetParametersByPath), supervise (the app
spawned), "agent up" (the agent's start -> the app spawned), readiness (the probe's first
success, from the probe's start): the agent's own `elapsed_ms` fields. The lifecycle completion
has no `elapsed_ms` field in the agent's log, so it comes from the log lines' microsecond
timestamps: "lifecycle action completed" - ("agent up" - its elapsed_ms). Wall = spawn of the agent
process -> the line read by this script.

One unmeasured warm-up boot comes first; then, per mode, --repeats boots straight against the
emulator (the step rows), and --repeats more with a counting proxy (bench/bake.py) between the
agent and the emulator (the "proxied:" rows): the proxy times every AWS call (request in ->
response out: the emulator's own time and the forwarding) and the IMDS stand-in every request it
answers. The agent's own overhead = "agent up" - the IMDS and AWS round trips made before it - the
supervise step (the app's spawn), all from the same proxied boot. The proxy adds a few ms to each
AWS call, which is why the step rows come from the boots without it.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bake as bakebench  # noqa: E402  (the emulator start and the counting proxy)
import restart  # noqa: E402  (the C app, the IMDS stand-in, free_port)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGION = "us-east-1"
GROUP = "bench-boot"
LIFECYCLE_OPS = ("DescribeLifecycleHooks", "CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
# Paths the agent polls after boot (termination watch); not part of the boot's round trips.
WATCH_PATHS = ("/latest/meta-data/autoscaling/target-lifecycle-state",
               "/latest/meta-data/spot/instance-action")


ORDER = ["identity", "secrets", "supervise", "agent up", "readiness", "app ready (from agent start)",
         "CompleteLifecycleAction (elapsed_ms)", "lifecycle done (from agent start)", "wall: spawn -> ready line",
         "wall: spawn -> completed line"]
PROXIED = "proxied: "
PROXIED_ORDER = ["agent up", "IMDS round trips in boot", "AWS round trips in boot", "supervise (the app's spawn)",
                 "agent's own overhead", "DescribeLifecycleHooks round trip", "CompleteLifecycleAction round trip"]


def row_order(key):
    if key.startswith(PROXIED):
        return (1, PROXIED_ORDER.index(key[len(PROXIED):]))
    return (0, ORDER.index(key))


class TimedImds(restart.Imds):
    """restart.py's hand-written IMDSv2 stand-in, answering the server's instance id and timing
    each request it answers (handler entry -> response written)."""

    def do_PUT(self):
        t0 = time.perf_counter()
        super().do_PUT()
        self.server.record(self.path, t0)

    def do_GET(self):
        t0 = time.perf_counter()
        body = {
            "/latest/meta-data/instance-id": self.server.instance_id.encode(),
            "/latest/meta-data/placement/region": REGION.encode(),
            "/latest/meta-data/placement/availability-zone": b"us-east-1a",
        }.get(self.path)
        self._send(200 if body else 404, body or b"")
        self.server.record(self.path, t0)


class TimedImdsServer(restart.QuietServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), TimedImds)
        self.instance_id = "i-0bench"
        self.calls = []
        self._lock = threading.Lock()

    def record(self, path, t0):
        with self._lock:
            self.calls.append({"path": path, "t0": t0, "t1": time.perf_counter()})

    def since(self, mark):
        with self._lock:
            return list(self.calls[mark:])

    def mark(self):
        with self._lock:
            return len(self.calls)


def ts(rec):
    return datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()


def one_boot(agent, app, url, proxy, imds, tmp, group):
    """One boot; with `proxy` (a CountingProxy in front of url) only the round-trip rows."""
    port = restart.free_port()
    cfg = os.path.join(tmp, f"agent-{port}.toml")
    identity = f'asg_name = "{group}"' if group else "standalone = true"
    with open(cfg, "w") as f:
        f.write(f"""[identity]
{identity}
[app]
user = "root"
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
    env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{imds.server_port}/",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": REGION,
           "AWS_ENDPOINT_URL": proxy.url if proxy else url, "RUST_LOG": "info"}
    end_msg = "lifecycle action completed" if group else "app is ready"
    pm, im = proxy.mark() if proxy else 0, imds.mark()
    t0 = time.perf_counter()
    p = subprocess.Popen([agent, "--config", cfg, "--log-format", "json", "run"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    recs, seen, lines = {}, {}, []
    failure, ended = None, False
    deadline = threading.Timer(30, p.kill)
    deadline.start()
    try:
        for line in p.stderr:
            lines.append(line)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec = rec.get("fields", rec) | {"timestamp": rec.get("timestamp")}
            msg = rec.get("message", "")
            key = msg if msg == "lifecycle action completed" else (rec.get("step") or msg)
            if "elapsed_ms" in rec or msg == "lifecycle action completed":
                recs.setdefault(key, rec)
                seen.setdefault(key, time.perf_counter())
            if msg in ("cannot complete the launch hook", "cannot find the launch hook") or \
                    rec.get("level") == "ERROR":
                failure = line.strip()
                break
            if msg == end_msg:
                ended = True
                break
    finally:
        deadline.cancel()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if failure or not ended:
        raise SystemExit(f"the agent never logged {end_msg!r} ({failure or 'no error logged'}); "
                         f"its log:\n{''.join(lines[-30:])}")
    steps = {k: float(recs[k]["elapsed_ms"]) for k in ("identity", "secrets", "supervise", "agent up",
                                                       "readiness") if k in recs}
    start = ts(recs["agent up"]) - steps["agent up"] / 1000
    ready = recs["readiness"]
    steps["app ready (from agent start)"] = (ts(ready) - start) * 1000
    steps["wall: spawn -> ready line"] = (seen["readiness"] - t0) * 1000
    if group:
        done = recs["lifecycle action completed"]
        # The agent's own elapsed_ms of the call when it logs one; else the log timestamps.
        steps["CompleteLifecycleAction (elapsed_ms)"] = float(done["elapsed_ms"]) if "elapsed_ms" in done \
            else (ts(done) - ts(ready)) * 1000
        steps["lifecycle done (from agent start)"] = (ts(done) - start) * 1000
        steps["wall: spawn -> completed line"] = (seen["lifecycle action completed"] - t0) * 1000
    boot_imds = [c for c in imds.since(im) if c["path"] not in WATCH_PATHS]
    if not proxy:
        return {"steps": {k: steps[k] for k in sorted(steps, key=ORDER.index)},
                "imds_paths": [c["path"] for c in boot_imds]}
    aws = proxy.since(pm)
    boot_aws = [c for c in aws if c["op"] not in LIFECYCLE_OPS and c["t0"] < seen["agent up"]]
    rt_imds = sum(c["t1"] - c["t0"] for c in boot_imds) * 1000
    rt_aws = sum(c["t1"] - c["t0"] for c in boot_aws) * 1000
    rows = {"agent up": steps["agent up"], "IMDS round trips in boot": rt_imds,
            "AWS round trips in boot": rt_aws, "supervise (the app's spawn)": steps["supervise"],
            "agent's own overhead": steps["agent up"] - rt_imds - rt_aws - steps["supervise"]}
    for op, key in (("DescribeLifecycleHooks", "DescribeLifecycleHooks round trip"),
                    ("CompleteLifecycleAction", "CompleteLifecycleAction round trip")):
        calls = [c for c in aws if c["op"] == op]
        if calls:
            rows[key] = (calls[0]["t1"] - calls[0]["t0"]) * 1000
    return {"steps": {PROXIED + k: v for k, v in rows.items()}, "imds_paths": [c["path"] for c in boot_imds],
            "aws_ops": [c["op"] for c in aws]}


def new_pending_instance(asg, known, capacity):
    """Grows the group to `capacity`; the id of the new instance once it is in Pending:Wait."""
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=capacity)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        inst = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]["Instances"]
        fresh = [i for i in inst if i["InstanceId"] not in known]
        if fresh and fresh[0]["LifecycleState"] == "Pending:Wait":
            return fresh[0]["InstanceId"]
        time.sleep(0.1)
    raise SystemExit(f"no new instance in Pending:Wait in group {GROUP} (capacity {capacity})")


def state_of(asg, instance_id):
    out = asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    return out[0]["LifecycleState"] if out else "gone"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/release/bake-agent"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="standalone,group")
    ap.add_argument("--json")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"standalone", "group"} or not modes:
        ap.error("--modes: standalone and/or group")
    agent = os.path.abspath(args.agent)
    tmp = tempfile.mkdtemp(prefix="bench-boot-")
    app = os.path.join(tmp, "app")
    with open(app + ".c", "w") as f:
        f.write(restart.APP_C)
    subprocess.run(["cc", "-O2", "-o", app, app + ".c"], check=True)
    imds = TimedImdsServer()
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    t_start = time.monotonic()
    emu, url = bakebench.start_emulator(tmp)  # real time: the hook's timeout stays far away
    proxy = bakebench.CountingProxy(url)
    result = {"agent": agent, "modes": {}, "in_service": []}
    try:
        kw = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="bench",
                  aws_secret_access_key="bench")
        ssm, asg, ec2 = (boto3.client(s, **kw) for s in ("ssm", "autoscaling", "ec2"))
        for i in range(5):
            ssm.put_parameter(Name=f"/bench/app/secret{i}", Value=f"value-{i}", Type="SecureString",
                              Overwrite=True)
        if "group" in modes:
            ec2.create_launch_template(LaunchTemplateName=f"{GROUP}-lt",
                                       LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
            asg.create_auto_scaling_group(
                AutoScalingGroupName=GROUP, MinSize=0, MaxSize=2 * args.repeats + 1, DesiredCapacity=0,
                AvailabilityZones=["us-east-1a"],
                LaunchTemplate={"LaunchTemplateName": f"{GROUP}-lt", "Version": "$Latest"})
            # DefaultResult ABANDON: only the agent's CONTINUE brings an instance InService.
            asg.put_lifecycle_hook(AutoScalingGroupName=GROUP, LifecycleHookName="ready",
                                   LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                   DefaultResult="ABANDON", HeartbeatTimeout=300)
        one_boot(agent, app, url, None, imds, tmp, None)  # warm-up, not counted: page cache, emulator
        known = []
        for mode in modes:
            runs = result["modes"][mode] = []
            # Direct boots for the step times; then boots through the proxy for the round trips.
            for via in [None] * args.repeats + [proxy] * args.repeats:
                if mode == "group":
                    imds.instance_id = new_pending_instance(asg, known, len(known) + 1)
                    known.append(imds.instance_id)
                else:
                    imds.instance_id = "i-0bench"
                runs.append(one_boot(agent, app, url, via, imds, tmp, GROUP if mode == "group" else None))
                if mode == "group":
                    result["in_service"].append([imds.instance_id, state_of(asg, imds.instance_id)])
    finally:
        proxy.close()
        bakebench.stop_emulator(emu)
        imds.shutdown()
    print_table(result, args.repeats)
    print(f"part runtime {time.monotonic() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    ok = all(s == "InService" for _, s in result["in_service"])
    return 0 if ok else 1


def print_table(result, repeats):
    modes = result["modes"]
    keys = sorted({k for rs in modes.values() for r in rs for k in r["steps"]}, key=row_order)
    print(f"\nBoot to ready: 5 secrets from moto, tcp probe every 10 ms, medians of {repeats} boots after "
          f"one warm-up (ms);\n\"proxied:\" rows from {repeats} more boots with the AWS calls through the timing "
          f"proxy")
    head = "".join(f" | {m + ' median':>17} | {'min':>7} | {'max':>7}" for m in modes)
    w = max(len(k) for k in keys)
    print(f"| {'step':<{w}}{head} |")
    print(f"|{'-' * (w + 2)}" + "".join(f"|{'-' * 19}|{'-' * 9}|{'-' * 9}" for _ in modes) + "|")
    for k in keys:
        cells = ""
        for m, rs in modes.items():
            xs = [r["steps"][k] for r in rs if k in r["steps"]]
            cells += (f" | {statistics.median(xs):>17.1f} | {min(xs):>7.1f} | {max(xs):>7.1f}" if xs
                      else f" | {'-':>17} | {'-':>7} | {'-':>7}")
        print(f"| {k:<{w}}{cells} |")
    for m, rs in modes.items():
        r = rs[-1]
        print(f"{m}: IMDS requests in boot {len(r['imds_paths'])} "
              f"({', '.join(sorted(set(p.rsplit('/', 1)[-1] or p for p in r['imds_paths'])))}); "
              f"AWS calls {', '.join(r['aws_ops'])}")
    if result["in_service"]:
        ok = sum(1 for _, s in result["in_service"] if s == "InService")
        print(f"group: instances InService after the agent's CONTINUE: {ok}/{len(result['in_service'])}"
              + ("" if ok == len(result["in_service"]) else f"  FAILED: {result['in_service']}"))
    print("identity/secrets/supervise/agent up/readiness: the agent's elapsed_ms (whole ms); the "
          "CompleteLifecycleAction row: its\nelapsed_ms too; lifecycle done: log timestamps; "
          "round trips: timed by the IMDS stand-in and the proxy (request in ->\nresponse out); "
          "overhead = agent up - IMDS and AWS round trips before it - supervise (the app's spawn).")


if __name__ == "__main__":
    sys.exit(main())
