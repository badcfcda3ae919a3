"""pytest fixtures: one emulator process per test (isolated state), on a free loopback port."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

HERE = Path(__file__).resolve().parent


class Emulator:
    """A running emulator: ``url``, ``client(service)``, ``stop()``."""

    def __init__(self, time_scale=None):
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        if time_scale is not None:
            env["BAKE_EMULATOR_TIME_SCALE"] = str(time_scale)
        # Its own process group: stop() takes every thread and child down with it.
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "bake_emulator.server", "--port", "0"],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def client(self, service, region="us-east-1"):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def emulator_factory():
    """Start emulators with chosen settings; all are stopped at the end of the test, pass or fail."""
    started = []

    def start(time_scale=None):
        emu = Emulator(time_scale=time_scale)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory):
    """An emulator on a fast clock (BAKE_EMULATOR_TIME_SCALE=0.01)."""
    return emulator_factory(time_scale=0.01)


@pytest.fixture(scope="module")
def shared_emulator():
    """One emulator (BAKE_EMULATOR_TIME_SCALE=0.01) for a whole test module: starting one costs
    seconds on a loaded machine. Tests using it isolate themselves by resource names."""
    emu = Emulator(time_scale=0.01)
    yield emu
    emu.stop()


class AutoScalingHelper:
    """boto3 clients plus the waits the Auto Scaling tests share; one launch template with two
    versions (``v1_image`` and ``v2_image``) per helper."""

    V1_IMAGE = "ami-12c6146b"
    V2_IMAGE = "ami-1a2b3c4d"

    def __init__(self, emu, prefix):
        self.emu = emu
        self.prefix = prefix
        self.ec2 = emu.client("ec2")
        self.asg = emu.client("autoscaling")
        self.cw = emu.client("cloudwatch")
        lt = self.ec2.create_launch_template(
            LaunchTemplateName=f"{prefix}-lt",
            LaunchTemplateData={"ImageId": self.V1_IMAGE, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]
        self.lt_id = lt["LaunchTemplateId"]
        self.ec2.create_launch_template_version(
            LaunchTemplateId=self.lt_id,
            LaunchTemplateData={"ImageId": self.V2_IMAGE, "InstanceType": "t3.micro"},
        )

    def lt(self, version):
        return {"LaunchTemplateId": self.lt_id, "Version": str(version)}

    def create_group(self, name, desired, version="1", hooks=(), **kwargs):
        """``hooks``: (name, "launch"|"terminate", heartbeat_timeout_secs, default_result)."""
        specs = [
            {
                "LifecycleHookName": hook_name,
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"
                if kind == "launch"
                else "autoscaling:EC2_INSTANCE_TERMINATING",
                "HeartbeatTimeout": timeout,
                "DefaultResult": result,
            }
            for hook_name, kind, timeout, result in hooks
        ]
        extra = {"LifecycleHookSpecificationList": specs} if specs else {}
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=20,
            DesiredCapacity=desired,
            AvailabilityZones=["us-east-1a", "us-east-1b"],
            LaunchTemplate=self.lt(version),
            **extra,
            **kwargs,
        )
        return name

    def group(self, name):
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
            "AutoScalingGroups"
        ][0]

    def instances(self, name, state=None):
        out = self.group(name)["Instances"]
        return [i for i in out if state is None or i["LifecycleState"] == state]

    def ids(self, name, state=None):
        return sorted(i["InstanceId"] for i in self.instances(name, state))

    def ec2_state(self, instance_id):
        res = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return res[0]["Instances"][0]["State"]["Name"]

    def ec2_image(self, instance_id):
        res = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return res[0]["Instances"][0]["ImageId"]

    def refresh(self, name, refresh_id):
        return self.asg.describe_instance_refreshes(
            AutoScalingGroupName=name, InstanceRefreshIds=[refresh_id]
        )["InstanceRefreshes"][0]

    def complete(self, name, hook, instance_id, result="CONTINUE"):
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=name,
            LifecycleHookName=hook,
            InstanceId=instance_id,
            LifecycleActionResult=result,
        )

    def wait_for(self, what, predicate, timeout=15.0, interval=0.02):
        """Poll ``predicate()`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def wait_status(self, name, refresh_id, *statuses, timeout=15.0):
        return self.wait_for(
            f"refresh {refresh_id} to reach {statuses}",
            lambda: (lambda r: r if r["Status"] in statuses else None)(
                self.refresh(name, refresh_id)
            ),
            timeout=timeout,
        )


@pytest.fixture
def asg_helper(shared_emulator, request):
    """An AutoScalingHelper on the module's shared emulator, names prefixed by the test's name."""
    prefix = request.node.name.replace("_", "-")[-40:].strip("-")
    return AutoScalingHelper(shared_emulator, prefix)
