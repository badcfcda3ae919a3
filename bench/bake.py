#!/usr/bin/env python3
"""bake against the local AWS emulator: the wall time it adds around Packer, and the AWS API calls
it makes while watching an instance refresh; each figure next to an anchor measured in the same run.

    tests/emulator/.venv/bin/python bench/bake.py [--bake target/release/bake] [--runs 5]
        [--parts build,release] [--json OUT]

1. build: a fresh emulator (tests/emulator/serve 0) and a copy of bake's Packer test fixture
   (bake/tests/fixtures/packer: Packer's amazon-ebs builder, no communicator, pointed at the
   emulator). One warm-up `bake build`, then --runs rounds, each of: `packer build` of the same
   template with the same variables run directly (the anchor: what a user would run without
   bake), and `bake build --force -o json` (its JSON has total_secs and packer_secs, the time
   Packer ran). The two alternate so that load on the machine hits both alike. Then --runs cache
   hits: `bake build -o json` with unchanged inputs (whole process wall).
2. release: a fresh emulator in real time (BAKE_EMULATOR_TIME_SCALE=1: bake's poll schedule is
   real time, so the refresh is too), a group of --instances on launch template version 1, and a
   counting HTTP proxy of this script between the client and the emulator (AWS_ENDPOINT_URL /
   --endpoint-url point at it; it forwards every request unchanged and records its operation,
   from `X-Amz-Target`, the Smithy RPC v2 path, or the query-protocol body's `Action=`).
   First `bake release --ami ID` with the default watch schedule (5 s, x1.5 per unchanged poll,
   at most 30 s), then the anchor: the same release the way an ops script does it without bake,
   AWS CLI 1.x (.tools/cwlogs-venv, from `bench/run install`) describe-launch-templates /
   create-launch-template-version / modify-launch-template / start-instance-refresh, then a shell
   loop polling describe-instance-refreshes every --cli-poll seconds (15 s, the AWS CLI waiters'
   usual delay) until a terminal status. Both refreshes: MinHealthyPercentage 50 and
   InstanceWarmup --warmup seconds, so --instances / 2 are replaced at a time, in two batches; the
   new group is first left in service for the warm-up (the emulator, like AWS, does not count an
   instance still warming up as healthy, which would add a batch to the first refresh).

Loopback only: the proxy listens on 127.0.0.1 and forwards only to the emulator's 127.0.0.1
address; every loop is bounded in count and time.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "bake/tests/fixtures/packer")
CLI_AWS = os.path.join(ROOT, ".tools/cwlogs-venv/bin/aws")
REGION = "us-east-1"
BASE_AMI = "ami-1e749f67"  # one of moto's stock images (bake/tests/util.rs)
TERMINAL = ("Successful", "Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed")


# ---------------------------------------------------------------------------------------------
# The emulator and a counting proxy in front of it
# ---------------------------------------------------------------------------------------------

def start_emulator(work, time_scale=None):
    """tests/emulator/serve 0 in its own process group; (process, url). time_scale None = real time."""
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("BAKE_EMULATOR_LOG_REQUESTS", None)
    if time_scale is None:
        env.pop("BAKE_EMULATOR_TIME_SCALE", None)
    else:
        env["BAKE_EMULATOR_TIME_SCALE"] = str(time_scale)
    err = open(os.path.join(work, "emulator.err"), "w")
    p = subprocess.Popen([os.path.join(ROOT, "tests/emulator/serve"), "0"], stdout=subprocess.PIPE,
                         stderr=err, stdin=subprocess.DEVNULL, text=True, env=env,
                         start_new_session=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        stop_emulator(p)
        raise SystemExit(f"emulator did not start: {line!r} (see {err.name})")
    url = line.split()[-1]
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    end = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > end:
                stop_emulator(p)
                raise SystemExit(f"emulator at {url} did not accept connections")
            time.sleep(0.02)
    return p, url


def stop_emulator(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
              "upgrade", "proxy-authenticate", "proxy-authorization", "content-length"}


def operation(method, path, headers, body):
    """The AWS operation of a request: JSON/CBOR X-Amz-Target, Smithy RPC v2 path, query Action."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "/operation/" in path:  # Smithy RPC v2 CBOR: /service/NAME/operation/OP
        return path.rstrip("/").rsplit("/", 1)[-1]
    if body and b"Action=" in body:
        q = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if q.get("Action"):
            return q["Action"][0]
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if q.get("Action"):
        return q["Action"][0]
    return f"{method} {urllib.parse.urlsplit(path).path}"


def _read_chunked(rfile):
    out = bytearray()
    while len(out) < 64 << 20:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            break
        out += rfile.read(size)
        rfile.readline()
    return bytes(out)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs and botocore expect

    def log_message(self, *a):
        pass

    def setup(self):
        # No Nagle: a response written in two segments would wait for the client's delayed ACK.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def do_GET(self):
        self._forward()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _forward(self):
        px = self.server.proxy
        t0, w0 = time.perf_counter(), time.time()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = _read_chunked(self.rfile)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        op = operation(self.command, self.path, self.headers, body)
        if not px.admit():
            self._reply(503, "Service Unavailable", [], b"bench proxy: request limit reached")
            return
        status, reason, rheaders, data = 502, "Bad Gateway", [], b""
        conn = http.client.HTTPConnection(px.host, px.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            status, reason, rheaders, data = resp.status, resp.reason, resp.getheaders(), resp.read()
        except OSError as e:
            data = f"bench proxy: upstream error: {e}".encode()
        finally:
            conn.close()
        self._reply(status, reason, rheaders, data)
        px.record(op, t0, time.perf_counter(), w0, status)

    def _reply(self, status, reason, headers, data):
        """The response in one write: status line, the upstream's end-to-end headers, the body."""
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
        head.append(f"Content-Length: {len(data)}")
        if self.close_connection:
            head.append("Connection: close")
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(out + (data if self.command != "HEAD" else b""))


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-request is no error worth a traceback


class CountingProxy:
    """Loopback HTTP proxy in front of the emulator (bench code, not a fake: it only forwards).

    Records every request as {op, t0, t1 (perf_counter), wall (time.time at arrival), status}.
    At most max_requests are forwarded; later ones get 503, so a runaway client stays bounded.
    """

    def __init__(self, upstream, max_requests=20000):
        u = urllib.parse.urlsplit(upstream)
        if not (u.hostname or "").startswith("127."):
            raise SystemExit(f"the proxy forwards to loopback only, not {upstream}")
        self.host, self.port = u.hostname, u.port
        self.max_requests = max_requests
        self.calls = []
        self._admitted = 0
        self._lock = threading.Lock()
        self.server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self.server.proxy = self
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def admit(self):
        with self._lock:
            self._admitted += 1
            return self._admitted <= self.max_requests

    def record(self, op, t0, t1, wall, status):
        with self._lock:
            self.calls.append({"op": op, "t0": t0, "t1": t1, "wall": wall, "status": status})

    def mark(self):
        with self._lock:
            return len(self.calls)

    def since(self, mark):
        with self._lock:
            return sorted(self.calls[mark:], key=lambda c: c["t0"])

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def aws_env(url, work):
    """Environment for a bake or AWS CLI child: the endpoint, dummy credentials, no config files."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": os.path.join(work, "tmp"),
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(work, "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(work, "no-aws-credentials"),
        "CHECKPOINT_DISABLE": "1",
    }


# ---------------------------------------------------------------------------------------------
# 1. Wall time around Packer
# ---------------------------------------------------------------------------------------------

def packer_version(packer):
    out = subprocess.run([packer, "version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise SystemExit(f"cannot read the version of {packer}: {out!r}")
    return tuple(int(x) for x in m.groups())


def build_world(work, url, packer):
    tpl = os.path.join(work, "packer")
    shutil.copytree(FIXTURE, tpl)
    os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
    with open(os.path.join(work, "bake-agent"), "wb") as f:
        f.write(b"not really an agent")
    with open(os.path.join(work, "bake.toml"), "w") as f:
        f.write(f"""[packer]
template = "packer"
binary = "{packer}"
agent_binary = "bake-agent"
[packer.variables]
endpoint_ec2 = "{url}"
name = "bench-bake"
[app]
release = "1.0.0"
""")
    # The anchor runs the same template the way bake hands it to this Packer: Packer < 1.7 takes
    # one directory and rejects a `required_plugins` block, so it gets the other files only.
    if packer_version(packer) < (1, 7, 0):
        staged = os.path.join(work, "packer-direct")
        os.makedirs(staged)
        for name in sorted(os.listdir(tpl)):
            with open(os.path.join(tpl, name)) as f:
                if "required_plugins" in f.read():
                    continue
            os.symlink(os.path.join(tpl, name), os.path.join(staged, name))
        return tpl, staged
    subprocess.run([packer, "init", tpl], cwd=tpl, check=True, capture_output=True, timeout=300)
    return tpl, tpl


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_bake_build(bake, work, env, force):
    args = [bake, "build", "-o", "json"] + (["--force"] if force else [])
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    j = json.loads(p.stdout)
    return {"wall": wall, "total_secs": j["total_secs"], "packer_secs": j["packer_secs"],
            "reused": j["reused"], "image_id": j["image_id"]}


def run_packer_direct(packer, tpl, staged, work, env, url, bake_version, i):
    built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    variables = {  # what bake passes (bake/src/build.rs), with this run's provenance values
        "region": REGION, "app_release": "1.0.0", "agent_binary": os.path.join(work, "bake-agent"),
        "bake_inputs_hash": f"{i:064x}", "bake_git_commit": "unknown", "bake_version": bake_version,
        "bake_built_at": built_at, "endpoint_ec2": url, "name": "bench-direct",
    }
    args = [packer, "build", "-machine-readable", "-color=false"]
    for k, v in variables.items():
        args += ["-var", f"{k}={v}"]
    args.append(staged)
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=tpl, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    ami = re.search(r",artifact,0,id,[^:]*:(ami-[0-9a-f]+)", p.stdout)
    if p.returncode != 0 or not ami:
        raise SystemExit(f"packer build exited {p.returncode} (AMI: {bool(ami)}):\n{p.stdout[-3000:]}"
                         f"\n{p.stderr[-2000:]}")
    return {"wall": wall, "image_id": ami.group(1)}


def part_build(args, bake, root_tmp):
    work = tempfile.mkdtemp(prefix="build-", dir=root_tmp)
    emu, url = start_emulator(work)
    try:
        tpl, staged = build_world(work, url, args.packer)
        env = aws_env(url, work)
        bake_version = subprocess.run([bake, "--version"], capture_output=True, text=True).stdout.split(
            " ", 1)[-1].strip()
        pv = ".".join(map(str, packer_version(args.packer)))
        t0 = time.monotonic()
        warm = run_bake_build(bake, work, env, force=False)  # warm-up: caches, page cache
        direct, forced, hits = [], [], []
        for i in range(args.runs):
            direct.append(run_packer_direct(args.packer, tpl, staged, work, env, url, bake_version, i))
            forced.append(run_bake_build(bake, work, env, force=True))
        for _ in range(args.runs):
            hits.append(run_bake_build(bake, work, env, force=False))
        if not all(r["reused"] for r in hits) or any(r["reused"] for r in forced):
            raise SystemExit("unexpected cache behaviour: forced builds must build, plain ones reuse")
        return {"packer": pv, "warmup": warm, "direct": direct, "bake_force": forced, "cache_hit": hits,
                "secs": time.monotonic() - t0}
    finally:
        stop_emulator(emu)
        shutil.rmtree(work, ignore_errors=True)


def print_build(r):
    direct = [x["wall"] for x in r["direct"]]
    anchor = statistics.median(direct)
    f = r["bake_force"]
    print(f"\nWall time bake adds around Packer: `bake build --force` vs `packer build` of the same "
          f"template and variables\n(Packer {r['packer']}, amazon-ebs against the emulator; "
          f"{len(f)} rounds, the two alternating; seconds)")
    print(f"| {'round':>5} | {'packer direct':>13} | {'bake wall':>9} | {'of it packer':>12} "
          f"| {'total-packer':>12} | {'wall-packer':>11} |")
    print(f"|{'-' * 7}|{'-' * 15}|{'-' * 11}|{'-' * 14}|{'-' * 14}|{'-' * 13}|")
    for i, (d, b) in enumerate(zip(r["direct"], f), 1):
        print(f"| {i:>5} | {d['wall']:>13.3f} | {b['wall']:>9.3f} | {b['packer_secs']:>12.3f} "
              f"| {b['total_secs'] - b['packer_secs']:>12.3f} | {b['wall'] - b['packer_secs']:>11.3f} |")
    rows = [
        ("packer build, direct (anchor)", direct),
        ("bake build --force: process wall", [x["wall"] for x in f]),
        ("  of it Packer (packer_secs)", [x["packer_secs"] for x in f]),
        ("  bake: total_secs - packer_secs", [x["total_secs"] - x["packer_secs"] for x in f]),
        ("  bake: wall - packer_secs", [x["wall"] - x["packer_secs"] for x in f]),
        ("bake wall - anchor median", [x["wall"] - anchor for x in f]),
        ("bake build, cache hit: wall", [x["wall"] for x in r["cache_hit"]]),
    ]
    print(f"\n| {'measure (s)':<34} | {'median':>8} | {'min':>8} | {'max':>8} | {'% of anchor':>11} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 13}|")
    for name, xs in rows:
        m = statistics.median(xs)
        print(f"| {name:<34} | {m:>8.3f} | {min(xs):>8.3f} | {max(xs):>8.3f} | {100 * m / anchor:>10.1f}% |")
    print("total_secs - packer_secs: bake's own time inside the process (hash the inputs, `packer "
          "version`,\nstaging, `git rev-parse`, DescribeImages/CreateTags/ModifyImageAttribute after the "
          "build);\nwall - packer_secs adds the process start, config and SDK set-up. "
          "Against the emulator Packer's build\nis instant (no instance boots, no communicator, no "
          "snapshot to wait for); on AWS the same build takes minutes,\nso the absolute seconds are the "
          f"figure to carry over, not the percentage. Part runtime {r['secs']:.0f} s.")


# ---------------------------------------------------------------------------------------------
# 2. API calls while watching a refresh
# ---------------------------------------------------------------------------------------------

def boto(url, service):
    import boto3  # the emulator's venv has it
    return boto3.client(service, endpoint_url=url, region_name=REGION,
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def make_fleet(url, name, instances):
    """Launch template (version 1 = BASE_AMI) and a group of `instances` on it; two other AMIs."""
    ec2, asg = boto(url, "ec2"), boto(url, "autoscaling")
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"{name}-lt",
        LaunchTemplateData={"ImageId": BASE_AMI, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=instances, MaxSize=instances * 2,
        DesiredCapacity=instances, AvailabilityZones=["us-east-1a", "us-east-1b"],
        LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
    )
    images = [i["ImageId"] for i in ec2.describe_images(
        Filters=[{"Name": "architecture", "Values": ["x86_64"]}])["Images"]]
    others = sorted(i for i in images if i != BASE_AMI)[:2]
    if len(others) < 2:
        raise SystemExit("the emulator lists fewer than 3 images")
    return lt, others


def refresh_times(url, name, refresh_id):
    r = boto(url, "autoscaling").describe_instance_refreshes(
        AutoScalingGroupName=name, InstanceRefreshIds=[refresh_id])["InstanceRefreshes"][0]
    start, end = r.get("StartTime"), r.get("EndTime")
    return {"status": r["Status"], "start": start.timestamp() if start else None,
            "end": end.timestamp() if end else None}


def watch_stats(calls, start_call, refresh):
    """Polls after StartInstanceRefresh: count, per minute of watch, densest minute, lag after end."""
    t_start = start_call["t1"]
    polls = [c for c in calls if c["op"] == "DescribeInstanceRefreshes" and c["t0"] >= t_start]
    watch = (polls[-1]["t1"] - t_start) if polls else 0.0
    densest = max((sum(1 for q in polls if p["t0"] <= q["t0"] < p["t0"] + 60) for p in polls), default=0)
    lag = None
    if polls and refresh["end"]:
        lag = polls[-1]["wall"] - refresh["end"]
    return {"polls": len(polls), "watch_secs": watch,
            "per_min": len(polls) / (watch / 60) if watch > 0 else 0.0, "densest_60s": densest,
            "seen_after_end_secs": lag,
            "refresh_secs": (refresh["end"] - refresh["start"]) if refresh["end"] and refresh["start"] else None}


CLI_SCRIPT = r"""
set -euo pipefail
aws() { "$AWS" --endpoint-url "$ENDPOINT" --region us-east-1 "$@"; }
src=$(aws ec2 describe-launch-templates --launch-template-ids "$LT" \
  --query 'LaunchTemplates[0].DefaultVersionNumber' --output text)
v=$(aws ec2 create-launch-template-version --launch-template-id "$LT" --source-version "$src" \
  --launch-template-data "{\"ImageId\":\"$AMI\"}" --query 'LaunchTemplateVersion.VersionNumber' --output text)
aws ec2 modify-launch-template --launch-template-id "$LT" --default-version "$v" > /dev/null
id=$(aws autoscaling start-instance-refresh --auto-scaling-group-name "$ASG" \
  --desired-configuration "{\"LaunchTemplate\":{\"LaunchTemplateId\":\"$LT\",\"Version\":\"$v\"}}" \
  --preferences "{\"MinHealthyPercentage\":50,\"InstanceWarmup\":$WARMUP}" \
  --query InstanceRefreshId --output text)
echo "refresh $id"
for _ in $(seq 1 "$MAX_POLLS"); do
  s=$(aws autoscaling describe-instance-refreshes --auto-scaling-group-name "$ASG" \
    --instance-refresh-ids "$id" --query 'InstanceRefreshes[0].Status' --output text)
  case $s in Successful | Failed | Cancelled | RollbackSuccessful | RollbackFailed) echo "status $s"; exit 0 ;; esac
  sleep "$POLL"
done
echo "status $s (gave up after $MAX_POLLS polls)"
exit 1
"""


def part_release(args, bake, root_tmp):
    if not os.access(CLI_AWS, os.X_OK):
        raise SystemExit(f"{CLI_AWS} missing: run `bench/run install` first")
    work = tempfile.mkdtemp(prefix="release-", dir=root_tmp)
    os.makedirs(os.path.join(work, "tmp"))
    emu, url = start_emulator(work, time_scale=1)
    proxy = CountingProxy(url)
    name = "bench-release"
    try:
        lt, (ami_bake, ami_cli) = make_fleet(url, name, args.instances)
        with open(os.path.join(work, "bake.toml"), "w") as f:
            f.write(f"""# release --ami: no build; the default watch schedule (no poll_interval settings)
[target]
auto_scaling_group = "{name}"
[refresh]
min_healthy_percentage = 50
instance_warmup = "{args.warmup}s"
timeout = "10m"
""")
        env = aws_env(proxy.url, work)
        t_part = time.monotonic()
        # An instance counts as healthy for a refresh only once its warm-up has passed since it
        # went InService; the new fleet waits that long, so both refreshes start from a warm one.
        time.sleep(args.warmup + 2)
        rows = {}
        # bake release
        m = proxy.mark()
        c0, t0 = children_cpu(), time.perf_counter()
        p = subprocess.run([bake, "release", "--ami", ami_bake, "-o", "json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=900)
        wall, cpu = time.perf_counter() - t0, children_cpu() - c0
        if p.returncode != 0:
            raise SystemExit(f"bake release exited {p.returncode}:\n{p.stderr[-3000:]}")
        j = json.loads(p.stdout)
        calls = proxy.since(m)
        start = next(c for c in calls if c["op"] == "StartInstanceRefresh")
        ref = refresh_times(url, name, j["instance_refresh_id"])
        rows["bake release"] = {"wall": wall, "cpu": cpu, "calls": calls, "result": j["result"], "refresh": ref,
                                "bake_polls": j["polls"], "bake_watch_secs": j["watch_secs"],
                                **watch_stats(calls, start, ref)}
        # The anchor: AWS CLI + shell poll
        m = proxy.mark()
        cli_env = dict(env, AWS=CLI_AWS, ENDPOINT=proxy.url, LT=lt, AMI=ami_cli, ASG=name,
                       WARMUP=str(args.warmup), POLL=str(args.cli_poll), MAX_POLLS="60")
        cli_env.pop("AWS_ENDPOINT_URL")  # the script passes --endpoint-url, as the CLI 1.x needs
        c0, t0 = children_cpu(), time.perf_counter()
        p = subprocess.run(["bash", "-c", CLI_SCRIPT], cwd=work, env=cli_env, capture_output=True,
                           text=True, timeout=900)
        wall, cpu = time.perf_counter() - t0, children_cpu() - c0
        if p.returncode != 0:
            raise SystemExit(f"the AWS CLI release exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}")
        refresh_id = re.search(r"refresh (\S+)", p.stdout).group(1)
        status = re.search(r"status (\S+)", p.stdout).group(1)
        calls = proxy.since(m)
        start = next(c for c in calls if c["op"] == "StartInstanceRefresh")
        ref = refresh_times(url, name, refresh_id)
        rows["AWS CLI + shell"] = {"wall": wall, "cpu": cpu, "calls": calls, "result": status, "refresh": ref,
                                   **watch_stats(calls, start, ref)}
        return {"instances": args.instances, "warmup": args.warmup, "cli_poll": args.cli_poll,
                "rows": rows, "secs": time.monotonic() - t_part}
    finally:
        proxy.close()
        stop_emulator(emu)
        shutil.rmtree(work, ignore_errors=True)


def print_release(r):
    rows = r["rows"]
    names = list(rows)
    print(f"\nAWS API calls of one release, watched to the end: bake release vs the AWS CLI with a "
          f"shell poll every {r['cli_poll']} s\n(counted at a loopback proxy in front of the emulator; "
          f"group of {r['instances']}, MinHealthyPercentage 50, InstanceWarmup {r['warmup']} s,\n"
          f"emulator in real time (BAKE_EMULATOR_TIME_SCALE=1) so the refresh takes real minutes like "
          f"bake's poll schedule;\nboth refreshes start from a fleet in service for longer than the "
          f"warm-up; bake first, then the CLI)")
    ops = []
    for n in names:
        for c in rows[n]["calls"]:
            if c["op"] not in ops:
                ops.append(c["op"])
    w = max(30, max(len(o) for o in ops))
    print(f"| {'operation':<{w}} | " + " | ".join(f"{n:>15}" for n in names) + " |")
    print(f"|{'-' * (w + 2)}|" + "|".join("-" * 17 for _ in names) + "|")
    for o in ops:
        print(f"| {o:<{w}} | " + " | ".join(
            f"{sum(1 for c in rows[n]['calls'] if c['op'] == o):>15}" for n in names) + " |")
    print(f"| {'total':<{w}} | " + " | ".join(f"{len(rows[n]['calls']):>15}" for n in names) + " |")
    print(f"\n| {'client':<15} | {'result':>10} | {'refresh s':>9} | {'watch s':>7} | {'polls':>5} "
          f"| {'polls/min':>9} | {'max in 60 s':>11} | {'seen after end s':>16} | {'wall s':>7} | {'client CPU s':>12} |")
    print(f"|{'-' * 17}|{'-' * 12}|{'-' * 11}|{'-' * 9}|{'-' * 7}|{'-' * 11}|{'-' * 13}|{'-' * 18}|{'-' * 9}|{'-' * 14}|")
    for n in names:
        x = rows[n]
        rs = f"{x['refresh_secs']:.1f}" if x["refresh_secs"] is not None else "-"
        lag = f"{x['seen_after_end_secs']:.1f}" if x["seen_after_end_secs"] is not None else "-"
        print(f"| {n:<15} | {x['result']:>10} | {rs:>9} | {x['watch_secs']:>7.1f} | {x['polls']:>5} "
              f"| {x['per_min']:>9.2f} | {x['densest_60s']:>11} | {lag:>16} | {x['wall']:>7.1f} | {x['cpu']:>12.2f} |")
    b = rows.get("bake release")
    if b:
        print(f"bake's own count: {b['bake_polls']} polls over {b['bake_watch_secs']:.1f} s "
              f"(the proxy counts the polls after StartInstanceRefresh; bake makes one more before it, "
              f"to refuse a release while a refresh runs)")
    print("refresh s = the emulator's StartTime -> EndTime; watch s = "
          "StartInstanceRefresh answered -> last poll answered;\nseen after end = the last poll's arrival "
          f"- EndTime; client CPU = user + system time of the client's\nprocesses (bake; or bash and "
          f"every `aws` process it ran). Part runtime {r['secs']:.0f} s.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bake = os.path.join(ROOT, "target/release/bake")
    if not os.path.exists(default_bake):
        default_bake = os.path.join(ROOT, "target/debug/bake")
    ap.add_argument("--bake", default=default_bake)
    ap.add_argument("--packer", default=shutil.which("packer") or "packer")
    ap.add_argument("--runs", type=int, default=5, help="forced builds, direct Packer builds, cache hits")
    ap.add_argument("--parts", default="build,release")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=45, help="InstanceWarmup, seconds (one per batch)")
    ap.add_argument("--cli-poll", type=int, default=15)
    ap.add_argument("--json")
    args = ap.parse_args()
    bake = os.path.abspath(args.bake)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"build", "release"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)} (build, release)")
    print(f"bake: {bake} ({subprocess.run([bake, '--version'], capture_output=True, text=True).stdout.strip()})")
    root_tmp = tempfile.mkdtemp(prefix="bench-bake-")
    result = {"bake": bake}
    try:
        if "build" in parts:
            result["build"] = part_build(args, bake, root_tmp)
            print_build(result["build"])
        if "release" in parts:
            result["release"] = part_release(args, bake, root_tmp)
            print_release(result["release"])
            if any(r["result"].lower() != "successful" for r in result["release"]["rows"].values()):
                return 1  # a refresh that did not succeed is no basis for the comparison
    finally:
        shutil.rmtree(root_tmp, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
