"""Every AWS API action each shipped binary can call, read from the Rust sources.

    python3 tests/infra/aws_calls.py      prints "binary  iam-action  file:line" for every call

An SDK call is a fluent-builder method with no arguments whose name is an operation of one of
the SDK crates the workspace uses (`aws.asg.describe_auto_scaling_groups()`): the operation names
and their IAM action names ("DescribeAutoScalingGroups" of service prefix "autoscaling") come
from the crates' own sources in Cargo's registry (`src/operation/<op>.rs`), at the versions in
Cargo.lock (`cargo metadata --offline`). A name that more than one of those crates has (ec2 and
autoscaling both have `describe_tags`) is resolved from its receiver (`.ec2.`, `.asg.`,
`asg_client.`, ...) or, failing that, from the one SDK `Client` type the file names; otherwise
it is an error, so no call goes unaccounted for.

Which binary: bake/src/** is `bake` (run with the release role), agent/src/** is `bake-agent`
and `bake-logship` (the instance role), common/src/** is both. Unit tests (`#[cfg(test)] mod`)
are left out: they run in CI, not in AWS.
"""

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# SDK crate -> IAM service prefix (the Metadata service names are not always the IAM prefix:
# CloudWatch Logs' is "CloudWatch Logs", IAM's is "logs").
IAM_PREFIX = {
    "aws-sdk-autoscaling": "autoscaling",
    "aws-sdk-cloudformation": "cloudformation",
    "aws-sdk-cloudwatch": "cloudwatch",
    "aws-sdk-cloudwatchlogs": "logs",
    "aws-sdk-ec2": "ec2",
    "aws-sdk-elasticloadbalancingv2": "elasticloadbalancing",
    "aws-sdk-iam": "iam",
    "aws-sdk-kms": "kms",
    "aws-sdk-s3": "s3",
    "aws-sdk-secretsmanager": "secretsmanager",
    "aws-sdk-sns": "sns",
    "aws-sdk-ssm": "ssm",
    "aws-sdk-sts": "sts",
}
# Receiver names used for each crate's client in the code (`aws.asg`, `asg_client`, `self.cw`).
RECEIVERS = {
    "aws-sdk-autoscaling": {"asg", "asg_client", "autoscaling"},
    "aws-sdk-cloudformation": {"cfn", "cloudformation"},
    "aws-sdk-cloudwatch": {"cw", "cloudwatch"},
    "aws-sdk-cloudwatchlogs": {"logs", "cwl"},
    "aws-sdk-ec2": {"ec2", "ec2_client"},
    "aws-sdk-elasticloadbalancingv2": {"elb", "elbv2"},
    "aws-sdk-ssm": {"ssm", "ssm_client"},
}
# Directories of the shipped code, and the binaries built from each.
BINARIES = {"bake/src": ["bake"], "agent/src": ["bake-agent"], "common/src": ["bake", "bake-agent"]}
# SDK crates that only the SSO/STS credential providers use (aws-config's own calls).
NOT_CALLED = {"aws-sdk-sso", "aws-sdk-ssooidc"}


@functools.cache
def sdk_operations():
    """{op_snake: [(crate, iam action)]} for every aws-sdk-* package in Cargo.lock."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline", "--locked"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    ops = {}
    for pkg in meta["packages"]:
        name = pkg["name"]
        if not name.startswith("aws-sdk-") or name in NOT_CALLED:
            continue
        if name not in IAM_PREFIX:
            raise SystemExit(f"{name}: add its IAM service prefix to IAM_PREFIX in {__file__}")
        opdir = Path(pkg["manifest_path"]).parent / "src" / "operation"
        for f in opdir.glob("*.rs"):
            m = re.search(r'Metadata::new\(\s*"(\w+)"', f.read_text())
            if m:
                ops.setdefault(f.stem, []).append((name, f"{IAM_PREFIX[name]}:{m.group(1)}"))
    if not ops:
        raise SystemExit("no SDK operations found: is Cargo's registry populated?")
    return ops


def _strip_test_modules(text):
    """`text` with every `#[cfg(test)] mod NAME { ... }` blanked (line numbers kept)."""
    out = text
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blank = re.sub(r"[^\n]", " ", text[m.start():i])
        out = out[: m.start()] + blank + out[i:]
    return out


def calls():
    """[(binary, iam action, "file:line")] of every SDK call in the shipped code."""
    ops = sdk_operations()
    found, errors = [], []
    for d, bins in BINARIES.items():
        for f in sorted((ROOT / d).rglob("*.rs")):
            text = _strip_test_modules(f.read_text())
            file_clients = {c for c in RECEIVERS if f"{c.replace('-', '_')}::Client" in text}
            for m in re.finditer(r"(\w+)?\s*\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)", text):
                op = m.group(2)
                if op not in ops:
                    continue
                where = f"{f.relative_to(ROOT)}:{text.count(chr(10), 0, m.start(2)) + 1}"
                cands = ops[op]
                if len(cands) > 1:
                    recv = m.group(1) or ""
                    by_recv = [c for c in cands if recv in RECEIVERS.get(c[0], ())]
                    by_file = [c for c in cands if c[0] in file_clients]
                    cands = by_recv or (by_file if len(by_file) == 1 else [])
                    if len(cands) != 1:
                        errors.append(f"{where}: cannot tell which SDK's `{op}()` this is "
                                      f"({', '.join(c[0] for c in ops[op])}); name the client "
                                      f"after its service (see RECEIVERS in {Path(__file__).name})")
                        continue
                for b in bins:
                    found.append((b, cands[0][1], where))
    if errors:
        raise SystemExit("\n".join(errors))
    return found


def actions(binary):
    """{iam action: [file:line, ...]} that `binary` can call."""
    out = {}
    for b, action, where in calls():
        if b == binary:
            out.setdefault(action, []).append(where)
    return out


if __name__ == "__main__":
    for b, action, where in sorted(calls()):
        print(f"{b:12} {action:50} {where}")
    sys.exit(0)
