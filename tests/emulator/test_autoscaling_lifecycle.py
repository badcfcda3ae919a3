"""Lifecycle hooks and actions, checked against the AWS documentation.

- "Amazon EC2 Auto Scaling lifecycle hooks": a launch hook puts an instance in Pending:Wait; on
  CONTINUE it goes InService, on ABANDON it is terminated and replaced. A terminate hook puts it
  in Terminating:Wait until the action completes or times out.
- PutLifecycleHook: HeartbeatTimeout (seconds; default 3600) and DefaultResult (CONTINUE|ABANDON;
  default ABANDON) applied when the timeout elapses.
- RecordLifecycleActionHeartbeat: "Records a heartbeat for the lifecycle action ... This extends
  the timeout by the length of time defined using the HeartbeatTimeout parameter".
- CompleteLifecycleAction: by LifecycleActionToken or InstanceId.
The emulator runs at BAKE_EMULATOR_TIME_SCALE=0.01: 100 emulated seconds take 1 real second.
"""

import time

import botocore.exceptions
import pytest
from conftest import AutoScalingHelper

LAUNCH = "autoscaling:EC2_INSTANCE_LAUNCHING"


def test_launch_hook_holds_new_instances_in_pending_wait_until_continue(asg_helper):
    h = asg_helper
    g = h.create_group("lc-continue", 2, hooks=[("launch", "launch", 3000, "ABANDON")])
    pending = h.ids(g, "Pending:Wait")
    assert len(pending) == 2
    assert h.ids(g, "InService") == []
    details = h.asg.describe_auto_scaling_instances(InstanceIds=pending)["AutoScalingInstances"]
    assert {d["LifecycleState"] for d in details} == {"Pending:Wait"}

    h.complete(g, "launch", pending[0])
    assert h.ids(g, "InService") == [pending[0]]
    assert h.ids(g, "Pending:Wait") == [pending[1]]

    h.complete(g, "launch", pending[1])
    assert h.ids(g, "InService") == pending
    assert {h.ec2_state(i) for i in pending} == {"running"}


def test_hooks_added_after_creation_apply_to_scale_out(asg_helper):
    h = asg_helper
    g = h.create_group("lc-scaleout", 1)
    (first,) = h.ids(g, "InService")
    h.asg.put_lifecycle_hook(
        AutoScalingGroupName=g,
        LifecycleHookName="launch",
        LifecycleTransition=LAUNCH,
        HeartbeatTimeout=3000,
    )
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=2)
    assert h.ids(g, "InService") == [first]
    (second,) = h.ids(g, "Pending:Wait")
    h.complete(g, "launch", second)
    assert sorted(h.ids(g, "InService")) == sorted([first, second])


def test_abandon_terminates_the_instance_and_launches_a_replacement(asg_helper):
    h = asg_helper
    g = h.create_group("lc-abandon", 1, hooks=[("launch", "launch", 3000, "CONTINUE")])
    (first,) = h.ids(g, "Pending:Wait")
    h.complete(g, "launch", first, "ABANDON")
    assert h.ec2_state(first) == "terminated"
    replacement = h.wait_for("a replacement launch", lambda: h.ids(g, "Pending:Wait"))
    assert replacement != [first]
    assert first not in h.ids(g)


@pytest.mark.parametrize(
    ("default_result", "expected"), [("CONTINUE", "InService"), ("ABANDON", "terminated")]
)
def test_heartbeat_timeout_applies_the_default_result(asg_helper, default_result, expected):
    h = asg_helper
    g = h.create_group(
        f"lc-timeout-{default_result}", 1, hooks=[("launch", "launch", 30, default_result)]
    )
    (first,) = h.ids(g, "Pending:Wait")
    start = time.monotonic()
    if expected == "InService":
        h.wait_for("InService by default result", lambda: h.ids(g, "InService") == [first])
    else:
        h.wait_for("termination by default result", lambda: h.ec2_state(first) == "terminated")
        assert first not in h.ids(g)
    # HeartbeatTimeout 30 s at time scale 0.01: 0.3 s, not at once.
    assert time.monotonic() - start >= 0.2


def test_heartbeats_extend_the_timeout(asg_helper):
    h = asg_helper
    g = h.create_group("lc-heartbeat", 1, hooks=[("launch", "launch", 60, "ABANDON")])
    (first,) = h.ids(g, "Pending:Wait")
    # 0.6 s timeout; keep it alive for 1.5 s with a heartbeat every 0.2 s.
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        h.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=g, LifecycleHookName="launch", InstanceId=first
        )
        time.sleep(0.2)
        assert h.ids(g, "Pending:Wait") == [first], "timed out despite heartbeats"
    # Without heartbeats, the DefaultResult (ABANDON) ends it.
    h.wait_for("timeout after the last heartbeat", lambda: h.ec2_state(first) == "terminated")


def test_terminate_hook_holds_instance_in_terminating_wait(asg_helper):
    h = asg_helper
    g = h.create_group("lc-terminate", 2, hooks=[("bye", "terminate", 3000, "CONTINUE")])
    assert len(h.ids(g, "InService")) == 2
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=1)
    (leaving,) = h.ids(g, "Terminating:Wait")
    assert len(h.ids(g, "InService")) == 1
    assert h.ec2_state(leaving) == "running"
    detail = h.asg.describe_auto_scaling_instances(InstanceIds=[leaving])["AutoScalingInstances"]
    assert detail[0]["LifecycleState"] == "Terminating:Wait"

    h.complete(g, "bye", leaving)
    assert leaving not in h.ids(g)
    assert h.ec2_state(leaving) == "terminated"
    assert len(h.ids(g, "InService")) == 1


def test_terminate_hook_times_out_into_termination(asg_helper):
    h = asg_helper
    g = h.create_group("lc-term-timeout", 1, hooks=[("bye", "terminate", 30, "ABANDON")])
    (only,) = h.ids(g, "InService")
    h.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=only, ShouldDecrementDesiredCapacity=True
    )
    assert h.ids(g, "Terminating:Wait") == [only]
    h.wait_for("terminate hook timeout", lambda: h.ec2_state(only) == "terminated")
    assert h.ids(g) == []


def test_complete_lifecycle_action_rejects_unknown_actions(asg_helper):
    h = asg_helper
    g = h.create_group("lc-errors", 1, hooks=[("launch", "launch", 3000, "ABANDON")])
    (first,) = h.ids(g, "Pending:Wait")
    cases = [
        dict(LifecycleHookName="launch", InstanceId="i-0000000000000000", LifecycleActionResult="CONTINUE"),
        dict(LifecycleHookName="launch", LifecycleActionToken="00000000-0000-0000-0000-000000000000", LifecycleActionResult="CONTINUE"),
        dict(LifecycleHookName="nope", InstanceId=first, LifecycleActionResult="CONTINUE"),
        dict(LifecycleHookName="launch", InstanceId=first, LifecycleActionResult="MAYBE"),
    ]
    for case in cases:
        with pytest.raises(botocore.exceptions.ClientError) as err:
            h.asg.complete_lifecycle_action(AutoScalingGroupName=g, **case)
        assert err.value.response["Error"]["Code"] == "ValidationError", case
    # Nothing above touched the instance.
    assert h.ids(g, "Pending:Wait") == [first]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        h.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=g, LifecycleHookName="launch", InstanceId="i-0000000000000000"
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_instances_record_the_concrete_launch_template_version(asg_helper):
    h = asg_helper
    g = h.create_group("lc-version", 1, version="$Latest")
    (old,) = h.instances(g)
    assert old["LaunchTemplate"]["Version"] == "2"  # $Latest resolved at launch
    h.ec2.create_launch_template_version(
        LaunchTemplateId=h.lt_id,
        LaunchTemplateData={"ImageId": "ami-0aa0aa0a", "InstanceType": "t3.small"},
    )
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=2)
    versions = {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in h.instances(g)}
    new = next(i for i in versions if i != old["InstanceId"])
    assert versions == {old["InstanceId"]: "2", new: "3"}
    assert h.ec2_image(old["InstanceId"]) == h.V2_IMAGE
    assert h.ec2_image(new) == "ami-0aa0aa0a"
    assert h.group(g)["LaunchTemplate"]["Version"] == "$Latest"


def test_without_time_scale_delays_are_real_seconds(emulator_factory):
    """BAKE_EMULATOR_TIME_SCALE unset: a 1-second heartbeat timeout takes one real second."""
    h = AutoScalingHelper(emulator_factory(time_scale=None), "realtime")
    # AWS's minimum HeartbeatTimeout is 30 s; the emulator accepts 1 s to keep this test short.
    g = h.create_group("lc-realtime", 1, hooks=[("launch", "launch", 1, "ABANDON")])
    (first,) = h.ids(g, "Pending:Wait")
    start = time.monotonic()
    time.sleep(0.6)
    assert h.ids(g, "Pending:Wait") == [first]
    h.wait_for("the 1 s timeout", lambda: h.ec2_state(first) == "terminated", timeout=10)
    assert 0.9 <= time.monotonic() - start < 5


def test_deleting_a_group_ends_its_instances_hooks_and_refresh(asg_helper):
    h = asg_helper
    hooks = [("launch", "launch", 30000, "ABANDON"), ("bye", "terminate", 30000, "ABANDON")]
    g = h.create_group("lc-delete", 2, hooks=hooks)
    ids = h.ids(g)
    for i in ids:
        h.complete(g, "launch", i)
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName=g, DesiredConfiguration={"LaunchTemplate": h.lt("2")}
    )["InstanceRefreshId"]
    h.wait_for("a refresh replacement", lambda: h.ids(g, "Terminating:Wait"))
    h.asg.delete_auto_scaling_group(AutoScalingGroupName=g, ForceDelete=True)
    assert h.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[g])["AutoScalingGroups"] == []
    assert {h.ec2_state(i) for i in ids} == {"terminated"}
    assert h.refresh(g, rid)["Status"] == "Cancelled"
    # A new group of the same name starts clean: the old hooks went with the old group.
    h.create_group(g, 1)
    assert len(h.ids(g, "InService")) == 1
    assert h.asg.describe_lifecycle_hooks(AutoScalingGroupName=g)["LifecycleHooks"] == []


def test_launch_configuration_groups_launch_scale_and_refresh(asg_helper):
    h = asg_helper
    h.asg.create_launch_configuration(
        LaunchConfigurationName="lc-legacy", ImageId=h.V1_IMAGE, InstanceType="t3.micro"
    )
    h.asg.create_auto_scaling_group(
        AutoScalingGroupName="lc-legacy",
        LaunchConfigurationName="lc-legacy",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=2,
        AvailabilityZones=["us-east-1a"],
    )
    old = h.ids("lc-legacy", "InService")
    assert len(old) == 2
    assert {i["LaunchConfigurationName"] for i in h.instances("lc-legacy")} == {"lc-legacy"}
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName="lc-legacy", Preferences={"InstanceWarmup": 0}
    )["InstanceRefreshId"]
    h.wait_status("lc-legacy", rid, "Successful")
    new = h.ids("lc-legacy", "InService")
    assert len(new) == 2 and not set(new) & set(old)
    assert {h.ec2_image(i) for i in new} == {h.V1_IMAGE}
