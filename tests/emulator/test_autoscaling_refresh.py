"""Instance refresh, checked against the AWS documentation.

Sources: the API reference for StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh,
RollbackInstanceRefresh, InstanceRefresh and RefreshPreferences, and the user guide chapters
"Use an instance refresh to update instances", "Add checkpoints to an instance refresh",
"Undo changes with a manual or auto rollback" and "Understand the default values for an instance
refresh". Lifecycle hooks make the pace deterministic: a replacement is only counted once its
launch hook is completed and its warm-up has passed.
The emulator runs at BAKE_EMULATOR_TIME_SCALE=0.01: 100 emulated seconds take 1 real second.
"""

import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import botocore.exceptions
import pytest

HOOKED = [("launch", "launch", 30000, "ABANDON")]


def start(h, group, version="2", **prefs):
    prefs.setdefault("InstanceWarmup", 0)
    return h.asg.start_instance_refresh(
        AutoScalingGroupName=group,
        DesiredConfiguration={"LaunchTemplate": h.lt(version)},
        Preferences=prefs,
    )["InstanceRefreshId"]


def hooked_group(h, name, desired, **kwargs):
    """A group whose instances are all InService on v1, with a launch hook for what comes next."""
    g = h.create_group(name, desired, hooks=HOOKED, **kwargs)
    for i in h.ids(g, "Pending:Wait"):
        h.complete(g, "launch", i)
    assert len(h.ids(g, "InService")) == desired
    return g


def continue_all(h, g):
    """Complete the launch hook of every instance waiting in Pending:Wait; returns their ids."""
    ids = h.ids(g, "Pending:Wait")
    for i in ids:
        h.complete(g, "launch", i)
    return ids


def versions(h, g):
    return sorted(i["LaunchTemplate"]["Version"] for i in h.instances(g))


def client_error(fn, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        fn(**kwargs)
    return err.value.response


def test_refresh_replaces_every_instance_and_adopts_the_desired_configuration(asg_helper):
    h = asg_helper
    g = h.create_group("rf-happy", 3)
    old = h.ids(g)
    rid = start(h, g, InstanceWarmup=10)
    seen = []
    while True:
        r = h.refresh(g, rid)
        seen.append((r["Status"], r.get("PercentageComplete"), r.get("InstancesToUpdate")))
        if r["Status"] not in ("Pending", "InProgress"):
            break
        time.sleep(0.02)
    assert r["Status"] == "Successful", r
    assert r["PercentageComplete"] == 100 and r["InstancesToUpdate"] == 0
    assert r["ProgressDetails"]["LivePoolProgress"] == {
        "PercentageComplete": 100,
        "InstancesToUpdate": 0,
    }
    assert r["EndTime"] >= r["StartTime"]
    assert r["DesiredConfiguration"]["LaunchTemplate"]["LaunchTemplateId"] == h.lt_id
    percentages = [p for _, p, _ in seen if p is not None]
    assert percentages == sorted(percentages), "PercentageComplete went backwards"
    # The documented CLI/SDK defaults are reported back.
    assert r["Preferences"] == {
        "MinHealthyPercentage": 90,
        "MaxHealthyPercentage": 100,
        "InstanceWarmup": 10,
        "SkipMatching": False,
        "AutoRollback": False,
        "ScaleInProtectedInstances": "Wait",
        "StandbyInstances": "Wait",
        "BakeTime": 0,
    }
    new = h.ids(g)
    assert len(new) == 3 and not set(new) & set(old)
    assert versions(h, g) == ["2", "2", "2"]
    assert {h.ec2_image(i) for i in new} == {h.V2_IMAGE}
    assert {h.ec2_state(i) for i in old} == {"terminated"}
    assert h.group(g)["LaunchTemplate"]["Version"] == "2"


def test_default_min_healthy_replaces_one_instance_at_a_time(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-one-at-a-time", 4)
    rid = start(h, g)
    for step in range(4):
        (launching,) = h.wait_for("one replacement", lambda: h.ids(g, "Pending:Wait"))
        # 90% of 4 rounds up to 4: only one instance may be out of service at a time.
        assert len(h.ids(g, "InService")) == 3
        r = h.refresh(g, rid)
        assert (r["Status"], r["InstancesToUpdate"]) == ("InProgress", 4 - step)
        h.complete(g, "launch", launching)
    assert h.wait_status(g, rid, "Successful")["Status"] == "Successful"
    assert versions(h, g) == ["2"] * 4


def test_min_healthy_percentage_sets_the_batch_size(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-batches", 4)
    old = h.ids(g)
    rid = start(h, g, MinHealthyPercentage=50)
    batch = h.wait_for("first batch", lambda: (lambda p: p if len(p) == 2 else None)(h.ids(g, "Pending:Wait")))
    # 50% of 4: two stay in service, two are replaced together (terminate, then launch).
    assert len(h.ids(g, "InService")) == 2
    assert len(set(old) - set(h.ids(g))) == 2
    time.sleep(0.2)
    assert h.ids(g, "Pending:Wait") == batch, "next batch started before this one finished"
    for i in batch:
        h.complete(g, "launch", i)
    second = h.wait_for("second batch", lambda: (lambda p: p if len(p) == 2 else None)(h.ids(g, "Pending:Wait")))
    assert h.refresh(g, rid)["PercentageComplete"] == 50
    for i in second:
        h.complete(g, "launch", i)
    h.wait_status(g, rid, "Successful")
    assert versions(h, g) == ["2"] * 4


def test_max_healthy_above_100_launches_before_terminating(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-launch-first", 2)
    old = h.ids(g)
    rid = start(h, g, MinHealthyPercentage=100, MaxHealthyPercentage=200)
    new = h.wait_for("two launches", lambda: (lambda p: p if len(p) == 2 else None)(h.ids(g, "Pending:Wait")))
    # The old instances stay in service while the new ones launch: 200% of 2 = 4 instances.
    assert h.ids(g, "InService") == old
    assert h.group(g)["DesiredCapacity"] == 2
    for i in new:
        h.complete(g, "launch", i)
    h.wait_status(g, rid, "Successful")
    assert h.ids(g) == new
    assert {h.ec2_state(i) for i in old} == {"terminated"}


def test_instance_warmup_delays_the_next_replacement(asg_helper):
    h = asg_helper
    g = h.create_group("rf-warmup", 2)
    began = time.monotonic()
    rid = start(h, g, InstanceWarmup=50)  # 0.5 s per instance, one at a time
    h.wait_status(g, rid, "Successful")
    assert time.monotonic() - began >= 0.9


def test_default_warmup_is_the_group_default_instance_warmup(asg_helper):
    h = asg_helper
    g = h.create_group("rf-default-warmup", 1, DefaultInstanceWarmup=7, HealthCheckGracePeriod=99)
    assert h.group(g)["DefaultInstanceWarmup"] == 7
    rid = h.asg.start_instance_refresh(AutoScalingGroupName=g)["InstanceRefreshId"]
    assert h.refresh(g, rid)["Preferences"]["InstanceWarmup"] == 7
    g2 = h.create_group("rf-grace-warmup", 1, HealthCheckGracePeriod=11)
    rid2 = h.asg.start_instance_refresh(AutoScalingGroupName=g2)["InstanceRefreshId"]
    assert h.refresh(g2, rid2)["Preferences"]["InstanceWarmup"] == 11
    h.wait_status(g, rid, "Successful")
    h.wait_status(g2, rid2, "Successful")


def test_skip_matching_leaves_instances_on_the_desired_configuration(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-skip", 2)
    on_v1 = h.ids(g)
    h.asg.update_auto_scaling_group(
        AutoScalingGroupName=g, LaunchTemplate=h.lt("2"), DesiredCapacity=4
    )
    on_v2 = continue_all(h, g)
    assert versions(h, g) == ["1", "1", "2", "2"]
    h.asg.update_auto_scaling_group(AutoScalingGroupName=g, LaunchTemplate=h.lt("1"))
    rid = start(h, g, SkipMatching=True, MinHealthyPercentage=50)
    h.wait_for("the first batch", lambda: h.ids(g, "Pending:Wait"))
    r = h.refresh(g, rid)
    assert r["InstancesToUpdate"] == 2 and r["PercentageComplete"] == 50

    def settle():
        continue_all(h, g)
        return h.refresh(g, rid)["Status"] == "Successful"

    h.wait_for("the refresh to finish", settle)
    assert set(on_v2) <= set(h.ids(g)), "matching instances were replaced"
    assert not set(on_v1) & set(h.ids(g))
    assert versions(h, g) == ["2"] * 4


def test_without_skip_matching_every_instance_is_replaced(asg_helper):
    h = asg_helper
    g = h.create_group("rf-noskip", 2, version="2")
    before = h.ids(g)
    rid = start(h, g, version="2")
    h.wait_status(g, rid, "Successful")
    assert not set(before) & set(h.ids(g))


def test_checkpoint_pauses_the_refresh_with_a_reason(asg_helper):
    h = asg_helper
    g = h.create_group("rf-checkpoint", 4)
    rid = start(h, g, MinHealthyPercentage=50, CheckpointPercentages=[50, 100], CheckpointDelay=100)
    r = h.wait_for(
        "the 50% checkpoint",
        lambda: (lambda r: r if r.get("StatusReason") else None)(h.refresh(g, rid)),
    )
    paused_at = time.monotonic()
    assert r["Status"] == "InProgress"
    assert r["PercentageComplete"] == 50 and r["InstancesToUpdate"] == 2
    assert "checkpoint" in r["StatusReason"].lower()
    assert r["Preferences"]["CheckpointPercentages"] == [50, 100]
    assert r["Preferences"]["CheckpointDelay"] == 100
    time.sleep(0.3)
    assert h.refresh(g, rid)["PercentageComplete"] == 50, "did not wait at the checkpoint"
    h.wait_status(g, rid, "Successful")
    assert time.monotonic() - paused_at >= 0.9  # CheckpointDelay 100 s at 0.01


def test_refresh_with_a_checkpoint_below_100_then_100_replaces_every_instance(asg_helper):
    # AWS, RefreshPreferences.CheckpointPercentages: "To replace all instances in the Auto
    # Scaling group, the last number in the array must be 100." With 3 instances and [50, 100]
    # the refresh pauses at the first checkpoint, then goes on to replace the rest.
    h = asg_helper
    g = h.create_group("rf-checkpoint-3", 3)
    rid = start(h, g, MinHealthyPercentage=50, CheckpointPercentages=[50, 100], CheckpointDelay=10)
    r = h.wait_status(g, rid, "Successful")
    assert r["PercentageComplete"] == 100
    assert versions(h, g) == ["2", "2", "2"]


def test_cancel_waits_for_transitioning_instances_then_stops(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-cancel", 3)
    rid = start(h, g)
    (launching,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    assert h.asg.cancel_instance_refresh(AutoScalingGroupName=g)["InstanceRefreshId"] == rid
    assert h.refresh(g, rid)["Status"] == "Cancelling"
    h.complete(g, "launch", launching)
    r = h.wait_status(g, rid, "Cancelled")
    assert "EndTime" in r
    # Replacements already made stay; no new ones start; the group keeps its configuration.
    time.sleep(0.2)
    assert versions(h, g) == ["1", "1", "2"]
    assert h.group(g)["LaunchTemplate"]["Version"] == "1"
    err = client_error(h.asg.cancel_instance_refresh, AutoScalingGroupName=g)
    assert err["Error"]["Code"] == "ActiveInstanceRefreshNotFound"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_failed_replacement_with_auto_rollback_restores_the_previous_configuration(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-autorollback", 2)
    rid = start(h, g, AutoRollback=True)
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first)
    (second,) = h.wait_for(
        "second replacement",
        lambda: [i for i in h.ids(g, "Pending:Wait") if i != first],
    )
    h.complete(g, "launch", second, "ABANDON")
    r = h.wait_status(g, rid, "RollbackInProgress", "RollbackSuccessful")
    assert r["RollbackDetails"]["PercentageCompleteOnRollback"] == 50
    assert r["RollbackDetails"]["InstancesToUpdateOnRollback"] == 1
    assert "RollbackReason" in r["RollbackDetails"] and "RollbackStartTime" in r["RollbackDetails"]
    # The rollback replaces what was deployed (the v2 instance) with v1 instances.
    def settle():
        continue_all(h, g)
        return h.refresh(g, rid)["Status"] == "RollbackSuccessful"

    h.wait_for("rollback to finish", settle)
    assert versions(h, g) == ["1", "1"]
    assert h.ec2_state(first) == "terminated"
    assert h.group(g)["LaunchTemplate"]["Version"] == "1"


def test_failed_replacement_without_rollback_fails_the_refresh(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-failed", 2)
    rid = start(h, g)
    (first,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first, "ABANDON")
    r = h.wait_status(g, rid, "Failed")
    assert first in r["StatusReason"]
    assert "RollbackDetails" not in r and "EndTime" in r
    assert h.group(g)["LaunchTemplate"]["Version"] == "1"


def test_replacement_failing_health_checks_fails_the_refresh(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-unhealthy", 1)
    rid = start(h, g, InstanceWarmup=3000)
    (new,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", new)
    h.asg.set_instance_health(InstanceId=new, HealthStatus="Unhealthy")
    assert new in h.wait_status(g, rid, "Failed")["StatusReason"]


def test_rollback_instance_refresh(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-manual-rollback", 2)
    rid = start(h, g)
    (first,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first)
    h.wait_for("first replaced", lambda: h.refresh(g, rid)["PercentageComplete"] == 50)
    assert h.asg.rollback_instance_refresh(AutoScalingGroupName=g)["InstanceRefreshId"] == rid
    r = h.refresh(g, rid)
    assert r["Status"] == "RollbackInProgress"
    assert r["RollbackDetails"]["PercentageCompleteOnRollback"] == 50

    def settle():
        continue_all(h, g)
        return h.refresh(g, rid)["Status"] == "RollbackSuccessful"

    h.wait_for("rollback to finish", settle)
    assert versions(h, g) == ["1", "1"]
    err = client_error(h.asg.rollback_instance_refresh, AutoScalingGroupName=g)
    assert err["Error"]["Code"] == "ActiveInstanceRefreshNotFound"


def test_rollback_is_refused_when_it_cannot_be_undone(asg_helper):
    h = asg_helper
    hooks = [("launch", "launch", 30000, "ABANDON")]
    # No desired configuration: nothing to roll back to.
    g = h.create_group("rf-irrev-nodesired", 1, hooks=hooks)
    h.asg.start_instance_refresh(AutoScalingGroupName=g)
    err = client_error(h.asg.rollback_instance_refresh, AutoScalingGroupName=g)
    assert err["Error"]["Code"] == "IrreversibleInstanceRefresh"
    # The group uses $Default: the previous configuration is not a fixed version.
    g2 = h.create_group("rf-irrev-default", 1, version="$Default", hooks=hooks)
    start(h, g2)
    err = client_error(h.asg.rollback_instance_refresh, AutoScalingGroupName=g2)
    assert err["Error"]["Code"] == "IrreversibleInstanceRefresh"
    err = client_error(
        h.asg.start_instance_refresh,
        AutoScalingGroupName=h.create_group("rf-irrev-auto", 0, version="$Latest"),
        DesiredConfiguration={"LaunchTemplate": h.lt("2")},
        Preferences={"AutoRollback": True},
    )
    assert err["Error"]["Code"] == "ValidationError"


def test_bake_time_keeps_the_refresh_baking_before_success(asg_helper):
    h = asg_helper
    g = h.create_group("rf-bake", 1)
    rid = start(h, g, BakeTime=100)
    r = h.wait_status(g, rid, "Baking")
    baking_since = time.monotonic()
    assert r["PercentageComplete"] == 100 and r["Preferences"]["BakeTime"] == 100
    h.wait_status(g, rid, "Successful")
    assert time.monotonic() - baking_since >= 0.8
    assert h.group(g)["LaunchTemplate"]["Version"] == "2"


def test_alarm_in_alarm_state_triggers_the_auto_rollback(asg_helper):
    h = asg_helper
    h.cw.put_metric_alarm(
        AlarmName="rf-alarm-5xx",
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    g = h.create_group("rf-alarm", 1)
    rid = start(
        h, g, BakeTime=100000, AutoRollback=True, AlarmSpecification={"Alarms": ["rf-alarm-5xx"]}
    )
    h.wait_status(g, rid, "Baking")
    h.cw.set_alarm_state(AlarmName="rf-alarm-5xx", StateValue="ALARM", StateReason="test")
    r = h.wait_status(g, rid, "RollbackInProgress", "RollbackSuccessful")
    assert "rf-alarm-5xx" in r["RollbackDetails"]["RollbackReason"]
    h.wait_status(g, rid, "RollbackSuccessful")
    assert versions(h, g) == ["1"]


def test_second_start_while_active_is_instance_refresh_in_progress(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-in-progress", 1)
    rid = start(h, g)
    err = client_error(h.asg.start_instance_refresh, AutoScalingGroupName=g)
    assert err["Error"]["Code"] == "InstanceRefreshInProgress"
    assert err["Error"]["Type"] == "Sender"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    h.asg.cancel_instance_refresh(AutoScalingGroupName=g, WaitForTransitioningInstances=False)
    h.wait_status(g, rid, "Cancelled")
    start(h, g)  # allowed again once nothing is active


def test_describe_filters_pages_and_lists_newest_first(asg_helper):
    h = asg_helper
    g = h.create_group("rf-describe", 0)
    ids = []
    for _ in range(3):
        ids.append(start(h, g))
        h.wait_status(g, ids[-1], "Successful")
    listed = h.asg.describe_instance_refreshes(AutoScalingGroupName=g)["InstanceRefreshes"]
    assert [r["InstanceRefreshId"] for r in listed] == ids[::-1]
    page1 = h.asg.describe_instance_refreshes(AutoScalingGroupName=g, MaxRecords=2)
    assert [r["InstanceRefreshId"] for r in page1["InstanceRefreshes"]] == ids[:0:-1]
    page2 = h.asg.describe_instance_refreshes(
        AutoScalingGroupName=g, MaxRecords=2, NextToken=page1["NextToken"]
    )
    assert [r["InstanceRefreshId"] for r in page2["InstanceRefreshes"]] == [ids[0]]
    assert "NextToken" not in page2
    only = h.asg.describe_instance_refreshes(AutoScalingGroupName=g, InstanceRefreshIds=[ids[1]])
    assert [r["InstanceRefreshId"] for r in only["InstanceRefreshes"]] == [ids[1]]
    err = client_error(
        h.asg.describe_instance_refreshes, AutoScalingGroupName=g, NextToken="bogus"
    )
    assert err["Error"]["Code"] == "InvalidNextToken"


@pytest.mark.parametrize(
    "prefs",
    [
        {"MaxHealthyPercentage": 150},  # needs MinHealthyPercentage too
        {"MinHealthyPercentage": 10, "MaxHealthyPercentage": 200},  # range wider than 100
        {"CheckpointDelay": 60},  # needs CheckpointPercentages
        {"CheckpointPercentages": [50, 20]},  # ascending
        {"AutoRollback": True, "_no_desired": True},  # nothing to roll back to
    ],
)
def test_invalid_preferences_are_validation_errors(asg_helper, prefs):
    h = asg_helper
    g = h.create_group("rf-invalid", 0)
    kwargs = {"AutoScalingGroupName": g, "Preferences": dict(prefs)}
    if not kwargs["Preferences"].pop("_no_desired", False):
        kwargs["DesiredConfiguration"] = {"LaunchTemplate": h.lt("2")}
    err = client_error(h.asg.start_instance_refresh, **kwargs)
    assert err["Error"]["Code"] == "ValidationError"
    assert h.asg.describe_instance_refreshes(AutoScalingGroupName=g)["InstanceRefreshes"] == []


def test_unknown_launch_template_or_version_is_a_validation_error(asg_helper):
    h = asg_helper
    g = h.create_group("rf-unknown-lt", 0)
    for spec in ({"LaunchTemplateId": "lt-0123456789abcdef0"}, h.lt("9")):
        err = client_error(
            h.asg.start_instance_refresh,
            AutoScalingGroupName=g,
            DesiredConfiguration={"LaunchTemplate": spec},
        )
        assert err["Error"]["Code"] == "ValidationError", spec


def test_query_protocol_xml_shape(asg_helper):
    """The Rust SDK parses the raw XML: check the envelope, result wrapper and error shape."""
    h = asg_helper
    g = hooked_group(h, "rf-xml", 1)
    rid = start(h, g)

    def call(**params):
        body = urllib.parse.urlencode({"Version": "2011-01-01", **params}).encode()
        req = urllib.request.Request(
            h.emu.url + "/",
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=x",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, ET.fromstring(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, ET.fromstring(e.read())

    ns = "{http://autoscaling.amazonaws.com/doc/2011-01-01/}"
    status, root = call(Action="DescribeInstanceRefreshes", AutoScalingGroupName=g)
    assert status == 200 and root.tag == f"{ns}DescribeInstanceRefreshesResponse"
    member = root.find(f"{ns}DescribeInstanceRefreshesResult/{ns}InstanceRefreshes/{ns}member")
    assert member.find(f"{ns}InstanceRefreshId").text == rid
    assert member.find(f"{ns}Preferences/{ns}MinHealthyPercentage").text == "90"
    assert member.find(f"{ns}DesiredConfiguration/{ns}LaunchTemplate/{ns}Version").text == "2"
    assert root.find(f"{ns}ResponseMetadata/{ns}RequestId") is not None

    status, root = call(Action="StartInstanceRefresh", AutoScalingGroupName=g)
    assert status == 400 and root.tag.endswith("ErrorResponse")
    assert root.find(f"{ns}Error/{ns}Code").text == "InstanceRefreshInProgress"
    assert root.find(f"{ns}Error/{ns}Type").text == "Sender"


def test_scale_in_protected_instances_wait_or_are_ignored(asg_helper):
    h = asg_helper
    g = h.create_group("rf-protected", 2)
    protected, plain = h.ids(g)
    h.asg.set_instance_protection(
        AutoScalingGroupName=g, InstanceIds=[protected], ProtectedFromScaleIn=True
    )
    # Default (CLI/SDK) is Wait: the refresh waits for the protection to be removed.
    rid = start(h, g)
    r = h.wait_for(
        "a wait on the protected instance",
        lambda: (lambda r: r if protected in (r.get("StatusReason") or "") else None)(
            h.refresh(g, rid)
        ),
    )
    assert r["Status"] == "InProgress" and r["InstancesToUpdate"] == 1
    assert plain not in h.ids(g)
    h.asg.set_instance_protection(
        AutoScalingGroupName=g, InstanceIds=[protected], ProtectedFromScaleIn=False
    )
    h.wait_status(g, rid, "Successful")
    assert protected not in h.ids(g)

    # Ignore: protected instances are left as they are.
    (keep,) = h.ids(g)[:1]
    h.asg.set_instance_protection(AutoScalingGroupName=g, InstanceIds=[keep], ProtectedFromScaleIn=True)
    rid = start(h, g, version="1", ScaleInProtectedInstances="Ignore")
    h.wait_status(g, rid, "Successful")
    assert keep in h.ids(g)
    assert sorted(v for v in versions(h, g)) == ["1", "2"]


def test_concurrent_clients_during_a_refresh(asg_helper):
    """moto's server is threaded: parallel reads and writes must not break a running refresh."""
    from concurrent.futures import ThreadPoolExecutor

    h = asg_helper
    g = h.create_group("rf-concurrent", 6)
    rid = start(h, g, MinHealthyPercentage=50, InstanceWarmup=5)

    def hammer(n):
        asg = h.emu.client("autoscaling")
        ec2 = h.emu.client("ec2")
        for _ in range(15):
            asg.describe_auto_scaling_groups(AutoScalingGroupNames=[g])
            asg.describe_auto_scaling_instances()
            asg.describe_instance_refreshes(AutoScalingGroupName=g)
            ec2.describe_instances()
            if n == 0:
                asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=6)
        return n

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sorted(pool.map(hammer, range(4))) == [0, 1, 2, 3]
    h.wait_status(g, rid, "Successful")
    assert versions(h, g) == ["2"] * 6


def test_refresh_whose_launch_template_disappears_fails_cleanly(asg_helper):
    h = asg_helper
    g = hooked_group(h, "rf-lt-gone", 2)
    other = h.ec2.create_launch_template(
        LaunchTemplateName=f"{h.prefix}-gone", LaunchTemplateData={"ImageId": h.V2_IMAGE}
    )["LaunchTemplate"]["LaunchTemplateId"]
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName=g,
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": other, "Version": "1"}},
        Preferences={"InstanceWarmup": 0},
    )["InstanceRefreshId"]
    h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    h.ec2.delete_launch_template(LaunchTemplateId=other)
    continue_all(h, g)
    r = h.wait_status(g, rid, "Failed", "Successful")
    # The first replacement may finish; the next launch cannot: the refresh fails with a reason.
    assert r["Status"] == "Failed" and r["StatusReason"]
    # The group is still usable afterwards.
    rid2 = start(h, g, version="1")
    h.wait_for("a v1 refresh", lambda: continue_all(h, g) or h.refresh(g, rid2)["Status"] == "Successful")
