"""Scaling activities, checked against the AWS documentation.

Sources: the API reference for DescribeScalingActivities ("Activities are sorted by start time.
Activities still in progress are described first"; ActivityIds, IncludeDeletedGroups, MaxRecords
"The default value is 100 and the maximum value is 100", NextToken) and Activity, the CLI examples
of describe-scaling-activities and terminate-instance-in-auto-scaling-group, the user guide's
"Troubleshoot Amazon EC2 Auto Scaling" (the latest activities first; a launch abandoned through
its lifecycle hook is "Cancelled" with "Instance failed to complete user's Lifecycle Action ...";
activities of deleted groups with --include-deleted-groups, "AutoScalingGroupState": "Deleted")
and "Health checks" ("an instance was taken out of service in response to a user health-check").
Every launch and termination the emulator performs is one activity.
The emulator runs at BAKE_EMULATOR_TIME_SCALE=0.01: 100 emulated seconds take 1 real second.
"""

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

HOOKED = [("launch", "launch", 30000, "ABANDON")]
CAUSE_TIME = r"At \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
ABANDONED = (
    r"Instance failed to complete user's Lifecycle Action: Lifecycle Action with token"
    r" [0-9a-f-]{36} was abandoned: Lifecycle Action Completed with ABANDON Result"
)
REFRESH_TERMINATION = "an instance was taken out of service in response to an instance refresh."
REFRESH_LAUNCH = "an instance was launched in response to an instance refresh."


def activities(h, group=None, **kwargs):
    if group is not None:
        kwargs["AutoScalingGroupName"] = group
    return h.asg.describe_scaling_activities(**kwargs)["Activities"]


def instance_of(activity):
    return re.search(r"i-[0-9a-f]+", activity["Description"]).group(0)


def launches(acts):
    return [a for a in acts if a["Description"].startswith("Launching a new EC2 instance: ")]


def terminations(acts):
    return [a for a in acts if a["Description"].startswith("Terminating EC2 instance: ")]


def by_instance(acts):
    return {instance_of(a): a for a in acts}


def client_error(fn, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        fn(**kwargs)
    return err.value.response


def continue_all(h, g):
    ids = h.ids(g, "Pending:Wait")
    for i in ids:
        h.complete(g, "launch", i)
    return ids


def test_group_creation_records_one_successful_launch_per_instance(asg_helper):
    h = asg_helper
    g = h.create_group("act-create", 2)
    group = h.group(g)
    acts = activities(h, g)
    assert len(acts) == 2
    assert sorted(instance_of(a) for a in acts) == h.ids(g)
    zones = {i["InstanceId"]: i["AvailabilityZone"] for i in group["Instances"]}
    assert len({a["ActivityId"] for a in acts}) == 2
    for a in acts:
        uuid.UUID(a["ActivityId"])
        assert a["Description"] == f"Launching a new EC2 instance: {instance_of(a)}"
        assert (a["StatusCode"], a["Progress"]) == ("Successful", 100)
        assert a["AutoScalingGroupName"] == g
        assert a["AutoScalingGroupARN"] == group["AutoScalingGroupARN"]
        assert a["EndTime"] >= a["StartTime"]
        assert "StatusMessage" not in a and "AutoScalingGroupState" not in a
        # As in the CLI example: the request, then why an instance was started.
        assert re.fullmatch(
            CAUSE_TIME + "a user request created an AutoScalingGroup changing the desired"
            " capacity from 0 to 2.  " + CAUSE_TIME + "an instance was started in response to"
            " a difference between desired and actual capacity, increasing the capacity from 0"
            " to 2.",
            a["Cause"],
        ), a["Cause"]
        details = json.loads(a["Details"])
        assert details["Availability Zone"] == zones[instance_of(a)]
        assert details["Subnet ID"].startswith("subnet-")
        # The Details string is compact JSON, as AWS writes it.
        assert a["Details"] == json.dumps(details, separators=(",", ":"))


def test_launch_hook_keeps_the_activity_in_progress_until_continue(asg_helper):
    h = asg_helper
    g = h.create_group("act-hook", 1, hooks=HOOKED)
    (pending,) = h.ids(g, "Pending:Wait")
    (a,) = activities(h, g)
    assert instance_of(a) == pending
    assert a["StatusCode"] == "InProgress"
    assert a["Progress"] < 100 and "EndTime" not in a
    time.sleep(0.05)
    before = datetime.now(timezone.utc)
    h.complete(g, "launch", pending)
    (a,) = activities(h, g)
    assert (a["StatusCode"], a["Progress"]) == ("Successful", 100)
    # EndTime: when the instance finished launching, i.e. when its launch hook was completed.
    assert a["StartTime"] < before - timedelta(milliseconds=20)
    assert a["EndTime"] >= before - timedelta(milliseconds=2)


def test_abandon_cancels_the_launch_activity(asg_helper):
    h = asg_helper
    g = h.create_group("act-abandon", 1, hooks=HOOKED)
    (first,) = h.ids(g, "Pending:Wait")
    h.complete(g, "launch", first, "ABANDON")
    (replacement,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    acts = activities(h, g)
    # No termination activity for an instance that never got in service: two launches.
    assert len(acts) == 2 and terminations(acts) == []
    cancelled = by_instance(acts)[first]
    assert cancelled["StatusCode"] == "Cancelled" and cancelled["Progress"] == 100
    assert re.fullmatch(ABANDONED, cancelled["StatusMessage"]), cancelled["StatusMessage"]
    assert cancelled["Description"] == (
        f"Launching a new EC2 instance: {first}.  Status Reason: {cancelled['StatusMessage']}"
    )
    assert cancelled["EndTime"] >= cancelled["StartTime"]
    again = by_instance(acts)[replacement]
    assert again["StatusCode"] == "InProgress"
    assert again["Cause"].endswith(
        "an instance was started in response to a difference between desired and actual"
        " capacity, increasing the capacity from 0 to 1."
    )
    # Still in progress: listed first.
    assert acts[0]["ActivityId"] == again["ActivityId"]


def test_launch_hook_timing_out_with_abandon_cancels_the_activity(asg_helper):
    h = asg_helper
    g = h.create_group("act-timeout", 1, hooks=[("launch", "launch", 30, "ABANDON")])
    (first,) = h.ids(g, "Pending:Wait")
    h.wait_for("the timeout", lambda: h.ec2_state(first) == "terminated")
    cancelled = by_instance(activities(h, g))[first]
    assert cancelled["StatusCode"] == "Cancelled"
    assert re.fullmatch(ABANDONED, cancelled["StatusMessage"])


def test_scale_in_termination_activity_waits_for_the_terminate_hook(asg_helper):
    h = asg_helper
    g = h.create_group("act-scale-in", 2, hooks=[("bye", "terminate", 3000, "CONTINUE")])
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=1)
    (leaving,) = h.ids(g, "Terminating:Wait")
    (t,) = terminations(activities(h, g))
    assert t["Description"] == f"Terminating EC2 instance: {leaving}"
    assert (t["StatusCode"], t["Progress"]) == ("InProgress", 50)
    assert "EndTime" not in t
    assert re.fullmatch(
        CAUSE_TIME + "a user request explicitly set group desired capacity changing the desired"
        " capacity from 2 to 1.  " + CAUSE_TIME + "an instance was taken out of service in"
        " response to a difference between desired and actual capacity, shrinking the capacity"
        " from 2 to 1.  " + CAUSE_TIME + f"instance {leaving} was selected for termination.",
        t["Cause"],
    ), t["Cause"]
    time.sleep(0.05)
    before = datetime.now(timezone.utc)
    h.complete(g, "bye", leaving)
    (t,) = terminations(activities(h, g))
    assert (t["StatusCode"], t["Progress"]) == ("Successful", 100)
    # EndTime: when the instance left the group, after its terminate hook.
    assert t["EndTime"] >= before - timedelta(milliseconds=2)
    assert len(activities(h, g)) == 3


def test_update_auto_scaling_group_scale_out_names_the_request(asg_helper):
    h = asg_helper
    g = h.create_group("act-update", 1)
    h.asg.update_auto_scaling_group(AutoScalingGroupName=g, MinSize=0, MaxSize=5, DesiredCapacity=3)
    new = launches(activities(h, g))[:2]
    assert len(new) == 2
    for a in new:
        assert re.fullmatch(
            CAUSE_TIME + "a user request update of AutoScalingGroup constraints to min: 0, max:"
            " 5, desired: 3 changing the desired capacity from 1 to 3.  " + CAUSE_TIME + "an"
            " instance was started in response to a difference between desired and actual"
            " capacity, increasing the capacity from 1 to 3.",
            a["Cause"],
        ), a["Cause"]


def test_terminate_instance_in_auto_scaling_group_returns_and_records_the_activity(asg_helper):
    h = asg_helper
    g = h.create_group("act-terminate", 2)
    one, two = h.ids(g)
    returned = h.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=one, ShouldDecrementDesiredCapacity=True
    )["Activity"]
    # The activity as it began (CLI example: InProgress, Progress 0).
    assert (returned["StatusCode"], returned["Progress"]) == ("InProgress", 0)
    assert returned["Description"] == f"Terminating EC2 instance: {one}"
    assert re.fullmatch(
        CAUSE_TIME + f"instance {one} was taken out of service in response to a user request,"
        " shrinking the capacity from 2 to 1.",
        returned["Cause"],
    ), returned["Cause"]
    (listed,) = terminations(activities(h, g, ActivityIds=[returned["ActivityId"]]))
    assert listed["StatusCode"] == "Successful"

    # Without decrementing: the group launches a replacement.
    h.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=two, ShouldDecrementDesiredCapacity=False
    )
    (replacement,) = h.ids(g)
    acts = activities(h, g)
    assert by_instance(terminations(acts))[two]["Cause"].endswith(
        f"instance {two} was taken out of service in response to a user request."
    )
    assert by_instance(launches(acts))[replacement]["Cause"].endswith(
        "increasing the capacity from 0 to 1."
    )


def test_health_replacement_records_a_termination_and_a_launch(asg_helper):
    h = asg_helper
    g = h.create_group("act-health", 1)
    (old,) = h.ids(g)
    h.asg.set_instance_health(InstanceId=old, HealthStatus="Unhealthy")
    (new,) = h.wait_for("the replacement", lambda: [i for i in h.ids(g) if i != old])
    acts = activities(h, g)
    t = by_instance(terminations(acts))[old]
    assert re.fullmatch(
        CAUSE_TIME + "an instance was taken out of service in response to a user health-check.",
        t["Cause"],
    ), t["Cause"]
    assert t["StatusCode"] == "Successful"
    launch = by_instance(launches(acts))[new]
    assert launch["Cause"].endswith(
        "an instance was launched in response to an unhealthy instance needing to be replaced."
    )


def test_ec2_terminate_instances_is_a_termination_activity(asg_helper):
    h = asg_helper
    g = h.create_group("act-ec2", 1)
    (old,) = h.ids(g)
    h.ec2.terminate_instances(InstanceIds=[old])
    (new,) = h.wait_for("the replacement", lambda: [i for i in h.ids(g) if i != old])
    acts = activities(h, g)
    assert by_instance(terminations(acts))[old]["Cause"].endswith(
        "an instance was taken out of service in response to an EC2 health check indicating it"
        " has been terminated or stopped."
    )
    assert new in by_instance(launches(acts))


def test_refresh_records_its_launches_and_terminations(asg_helper):
    h = asg_helper
    g = h.create_group("act-refresh", 2)
    old = h.ids(g)
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName=g,
        DesiredConfiguration={"LaunchTemplate": h.lt("2")},
        Preferences={"InstanceWarmup": 0},
    )["InstanceRefreshId"]
    h.wait_status(g, rid, "Successful")
    new = h.ids(g)
    acts = activities(h, g)
    assert len(acts) == 6
    ended = terminations(acts)
    assert sorted(instance_of(a) for a in ended) == old
    for a in ended:
        assert re.fullmatch(
            CAUSE_TIME + REFRESH_TERMINATION + "  " + CAUSE_TIME
            + f"instance {instance_of(a)} was selected for termination.",
            a["Cause"],
        ), a["Cause"]
        assert a["StatusCode"] == "Successful"
    refresh_launches = [a for a in launches(acts) if REFRESH_LAUNCH in a["Cause"]]
    assert sorted(instance_of(a) for a in refresh_launches) == new
    assert {a["StatusCode"] for a in acts} == {"Successful"}
    # Newest first: the refresh's four activities before the group's two first launches.
    assert {instance_of(a) for a in acts[4:]} == set(old)
    assert all(a["Description"].startswith("Launching") for a in acts[4:])
    starts = [a["StartTime"] for a in acts]
    assert starts == sorted(starts, reverse=True)


def test_refresh_rollback_records_its_replacements(asg_helper):
    h = asg_helper
    g = h.create_group("act-rollback", 2, hooks=HOOKED)
    continue_all(h, g)
    v1 = h.ids(g)
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName=g,
        DesiredConfiguration={"LaunchTemplate": h.lt("2")},
        Preferences={"InstanceWarmup": 0, "AutoRollback": True},
    )["InstanceRefreshId"]
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first)
    (second,) = h.wait_for(
        "second replacement", lambda: [i for i in h.ids(g, "Pending:Wait") if i != first]
    )
    h.complete(g, "launch", second, "ABANDON")

    def settle():
        continue_all(h, g)
        return h.refresh(g, rid)["Status"] == "RollbackSuccessful"

    h.wait_for("rollback to finish", settle)
    acts = activities(h, g)
    assert by_instance(acts)[second]["StatusCode"] == "Cancelled"
    # The rollback takes the v2 instance out of service as part of the instance refresh.
    ended = by_instance(terminations(acts))
    assert REFRESH_TERMINATION in ended[first]["Cause"]
    assert ended[first]["StatusCode"] == "Successful"
    assert set(ended) == set(v1) | {first}
    # Launched for the refresh: the two forward replacements and the rollback's v1 instance.
    refresh_launches = [a for a in launches(acts) if REFRESH_LAUNCH in a["Cause"]]
    assert len(refresh_launches) == 3
    assert {first, second} <= {instance_of(a) for a in refresh_launches}
    final = set(h.ids(g))
    assert {a["StatusCode"] for a in launches(acts) if instance_of(a) in final} == {"Successful"}


def test_in_progress_first_then_newest_first(asg_helper):
    h = asg_helper
    g = h.create_group("act-order", 1)
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=2)
    h.asg.put_lifecycle_hook(
        AutoScalingGroupName=g,
        LifecycleHookName="launch",
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=30000,
    )
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=3)
    (c,) = h.ids(g, "Pending:Wait")
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=4)
    (d,) = [i for i in h.ids(g, "Pending:Wait") if i != c]
    acts = activities(h, g)
    a, b = [instance_of(x) for x in acts[2:]][::-1]
    assert [instance_of(x) for x in acts] == [d, c, b, a]
    h.complete(g, "launch", d)
    # d is done, c still in progress: c comes first, then by start time, the latest first.
    assert [instance_of(x) for x in activities(h, g)] == [c, d, b, a]
    h.complete(g, "launch", c)
    assert [instance_of(x) for x in activities(h, g)] == [d, c, b, a]


def test_max_records_and_next_token_page_through_the_activities(asg_helper):
    h = asg_helper
    g = h.create_group("act-paging", 5)
    everything = [a["ActivityId"] for a in activities(h, g)]
    assert len(everything) == 5
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"AutoScalingGroupName": g, "MaxRecords": 2}
        if token:
            kwargs["NextToken"] = token
        page = h.asg.describe_scaling_activities(**kwargs)
        assert len(page["Activities"]) <= 2
        seen += [a["ActivityId"] for a in page["Activities"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert (pages, seen) == (3, everything)
    err = client_error(h.asg.describe_scaling_activities, AutoScalingGroupName=g, NextToken="x")
    assert err["Error"]["Code"] == "InvalidNextToken"
    for bad in (0, 101):
        err = client_error(h.asg.describe_scaling_activities, AutoScalingGroupName=g, MaxRecords=bad)
        assert err["Error"]["Code"] == "ValidationError", bad


def test_activity_ids_filter(asg_helper):
    h = asg_helper
    g = h.create_group("act-ids", 3)
    other = h.create_group("act-ids-other", 1)
    ids = [a["ActivityId"] for a in activities(h, g)]
    wanted = [ids[0], ids[2]]
    unknown = str(uuid.uuid4())
    listed = activities(h, g, ActivityIds=wanted + [unknown])
    assert [a["ActivityId"] for a in listed] == wanted  # unknown IDs are ignored
    # Without a group, the IDs alone select; with another group, "the results are limited to
    # that group".
    assert [a["ActivityId"] for a in activities(h, ActivityIds=[ids[1]])] == [ids[1]]
    assert activities(h, other, ActivityIds=wanted) == []
    err = client_error(
        h.asg.describe_scaling_activities, ActivityIds=[str(uuid.uuid4()) for _ in range(51)]
    )
    assert err["Error"]["Code"] == "ValidationError"


def test_without_a_group_name_every_group_is_listed(asg_helper):
    h = asg_helper
    one = h.create_group("act-all-one", 1)
    two = h.create_group("act-all-two", 1)
    names = {a["AutoScalingGroupName"] for a in activities(h)}
    assert {one, two} <= names
    assert activities(h, "act-no-such-group") == []


def test_deleted_groups_only_with_include_deleted_groups(asg_helper):
    h = asg_helper
    g = h.create_group("act-deleted", 2)
    ids = h.ids(g)
    arn = h.group(g)["AutoScalingGroupARN"]
    h.asg.delete_auto_scaling_group(AutoScalingGroupName=g, ForceDelete=True)
    assert activities(h, g) == []
    assert g not in {a["AutoScalingGroupName"] for a in activities(h)}
    acts = activities(h, g, IncludeDeletedGroups=True)
    assert len(acts) == 4
    assert {a["AutoScalingGroupState"] for a in acts} == {"Deleted"}
    assert {a["AutoScalingGroupARN"] for a in acts} == {arn}
    ended = terminations(acts)
    assert sorted(instance_of(a) for a in ended) == ids
    for a in ended:
        assert a["StatusCode"] == "Successful"
        assert "changing the desired capacity from 2 to 0." in a["Cause"]
    # A new group of the same name: its own activities, the old ones only on request.
    h.create_group(g, 1)
    (fresh,) = activities(h, g)
    assert fresh["AutoScalingGroupARN"] != arn and "AutoScalingGroupState" not in fresh
    assert len(activities(h, g, IncludeDeletedGroups=True)) == 5


def test_query_protocol_xml_shape(asg_helper):
    """The Rust SDK parses the raw XML: envelope, result wrapper, members."""
    h = asg_helper
    g = h.create_group("act-xml", 1)
    (instance,) = h.ids(g)

    body = urllib.parse.urlencode(
        {
            "Action": "DescribeScalingActivities",
            "Version": "2011-01-01",
            "AutoScalingGroupName": g,
            "MaxRecords": "1",
        }
    ).encode()
    req = urllib.request.Request(
        h.emu.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=x",
        },
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        root = ET.fromstring(resp.read())
    ns = "{http://autoscaling.amazonaws.com/doc/2011-01-01/}"
    assert root.tag == f"{ns}DescribeScalingActivitiesResponse"
    member = root.find(f"{ns}DescribeScalingActivitiesResult/{ns}Activities/{ns}member")
    assert member.find(f"{ns}Description").text == f"Launching a new EC2 instance: {instance}"
    assert member.find(f"{ns}StatusCode").text == "Successful"
    assert member.find(f"{ns}Progress").text == "100"
    assert json.loads(member.find(f"{ns}Details").text)["Subnet ID"].startswith("subnet-")
    for field in ("ActivityId", "AutoScalingGroupName", "AutoScalingGroupARN", "Cause"):
        assert member.find(f"{ns}{field}").text, field
    for field in ("StartTime", "EndTime"):
        datetime.fromisoformat(member.find(f"{ns}{field}").text.replace("Z", "+00:00"))
    assert root.find(f"{ns}ResponseMetadata/{ns}RequestId") is not None
