"""Instance refresh capacity, end states and progress, checked against the AWS documentation.

Each test quotes the passage it checks. Lifecycle hooks hold every launch in Pending:Wait, so the
test decides when a new instance goes InService. BAKE_EMULATOR_TIME_SCALE=0.01.
"""

import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from test_autoscaling_refresh import continue_all, hooked_group, start, versions


def in_service_v(h, g):
    """(number of InService instances, their launch template versions)."""
    ins = h.instances(g, "InService")
    return len(ins), sorted(i["LaunchTemplate"]["Version"] for i in ins)


def watch(h, g, seconds, floor):
    """Sample the group for ``seconds``: the InService count must never drop below ``floor``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n, _ = in_service_v(h, g)
        assert n >= floor, f"only {n} instance(s) InService, MinHealthyPercentage wants {floor}"
        time.sleep(0.01)


def test_rollback_keeps_min_healthy_percentage(asg_helper):
    """RefreshPreferences, MinHealthyPercentage: "Specifies the minimum percentage of the group to
    keep in service, healthy, and ready to use to support your workload to allow the operation to
    continue." Instance maintenance policies: "your Auto Scaling group can only increase and
    decrease capacity within that minimum-maximum range when replacing instances."
    A rollback replaces instances too: with 50% of 2, one instance stays in service throughout,
    also while the group refills the aborted replacement's slot."""
    h = asg_helper
    g = hooked_group(h, "cap-rollback-min", 2)
    rid = start(h, g, MinHealthyPercentage=50)
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first)
    h.wait_for(
        "second replacement", lambda: [i for i in h.ids(g, "Pending:Wait") if i != first]
    )
    h.asg.rollback_instance_refresh(AutoScalingGroupName=g)
    watch(h, g, 0.5, 1)
    for _ in range(20):
        ids = h.ids(g, "Pending:Wait")
        if not ids and h.refresh(g, rid)["Status"] == "RollbackSuccessful":
            break
        for i in ids:
            h.complete(g, "launch", i)
            watch(h, g, 0.2, 1)
    assert h.wait_status(g, rid, "RollbackSuccessful")
    assert versions(h, g) == ["1", "1"]


def test_refresh_counts_a_health_replacement_as_in_flight(asg_helper):
    """MinHealthyPercentage "to keep in service, healthy, and ready to use": an instance that the
    group is still launching to replace an unhealthy one is neither. A refresh started meanwhile
    on a 2-instance group with MinHealthyPercentage 50 must not take the last healthy instance
    out of service ("at least one at a time" counts every instance in flight)."""
    h = asg_helper
    g = hooked_group(h, "cap-health-in-flight", 2)
    sick, _ = h.ids(g)
    h.asg.set_instance_health(InstanceId=sick, HealthStatus="Unhealthy")
    (refill,) = h.wait_for("the health replacement", lambda: h.ids(g, "Pending:Wait"))
    rid = start(h, g, MinHealthyPercentage=50)
    watch(h, g, 0.5, 1)
    assert h.ids(g, "Pending:Wait") == [refill], "the refresh replaced an instance anyway"
    h.complete(g, "launch", refill)
    for _ in range(20):
        if h.refresh(g, rid)["Status"] == "Successful":
            break
        for i in h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait") or [None]):
            if i:
                h.complete(g, "launch", i)
            watch(h, g, 0.1, 1)
    assert h.wait_status(g, rid, "Successful")
    assert versions(h, g) == ["2", "2"]


def test_manual_rollback_waits_for_the_group_to_be_whole(asg_helper):
    """RollbackInstanceRefresh: "This restores your Auto Scaling group to the configuration that it
    was using before the start of the instance refresh." A rollback that ends RollbackSuccessful
    leaves the group at its desired capacity on the previous configuration, every instance
    InService: the instance that refills the aborted replacement's slot is launched by the group,
    not by the rollback, and the rollback waits for it."""
    h = asg_helper
    g = hooked_group(h, "cap-manual-whole", 2)
    rid = start(h, g, MinHealthyPercentage=50)
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.asg.rollback_instance_refresh(AutoScalingGroupName=g)
    (refill,) = h.wait_for(
        "the refill of the aborted replacement",
        lambda: [i for i in h.ids(g, "Pending:Wait") if i != first],
    )
    time.sleep(0.3)
    r = h.refresh(g, rid)
    assert r["Status"] == "RollbackInProgress", (r["Status"], h.instances(g))
    h.complete(g, "launch", refill)
    r = h.wait_status(g, rid, "RollbackSuccessful")
    assert in_service_v(h, g) == (2, ["1", "1"])


def test_auto_rollback_waits_for_the_refill(asg_helper):
    """RefreshPreferences, AutoRollback: "Indicates whether to roll back the Auto Scaling group to
    its previous configuration if the instance refresh fails". The abandoned replacement's slot
    is refilled by the group; RollbackSuccessful waits for it to be InService."""
    h = asg_helper
    g = hooked_group(h, "cap-auto-whole", 2)
    rid = start(h, g, MinHealthyPercentage=50, AutoRollback=True)
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.complete(g, "launch", first, "ABANDON")
    (refill,) = h.wait_for(
        "the refill", lambda: [i for i in h.ids(g, "Pending:Wait") if i != first]
    )
    time.sleep(0.3)
    r = h.refresh(g, rid)
    assert r["Status"] == "RollbackInProgress", (r["Status"], h.instances(g))
    h.complete(g, "launch", refill)
    h.wait_status(g, rid, "RollbackSuccessful")
    assert in_service_v(h, g) == (2, ["1", "1"])


def test_replacement_failing_while_cancelling_ends_cancelled(asg_helper):
    """CancelInstanceRefresh: "Cancels an instance refresh or rollback that is in progress ...
    When you cancel an instance refresh, this does not roll back any changes that it made."
    InstanceRefresh, Status: "Cancelling - An ongoing operation is being cancelled." then
    "Cancelled - The operation is cancelled." A replacement that fails while Cancelling is one
    less instance to wait for: the refresh ends Cancelled, not Failed, and does not roll back."""
    h = asg_helper
    for name, prefs in (("cap-cancel-fail", {}), ("cap-cancel-fail-auto", {"AutoRollback": True})):
        g = hooked_group(h, name, 3)
        rid = start(h, g, **prefs)
        (launching,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
        h.asg.cancel_instance_refresh(AutoScalingGroupName=g)
        assert h.refresh(g, rid)["Status"] == "Cancelling"
        h.complete(g, "launch", launching, "ABANDON")
        r = h.wait_status(g, rid, "Cancelled", "Failed", "RollbackInProgress", "RollbackSuccessful")
        assert r["Status"] == "Cancelled", r
        assert "RollbackDetails" not in r


def test_describe_reports_the_strategy(asg_helper):
    """InstanceRefresh: "Strategy - The strategy to use for the instance refresh. The default
    value is Rolling." (DescribeInstanceRefreshes returns InstanceRefresh objects.) boto3 1.40's
    model predates the member, so the raw XML is read, as the Rust SDK reads it."""
    h = asg_helper
    g = h.create_group("cap-strategy", 1)
    rid = start(h, g)
    body = urllib.parse.urlencode(
        {"Version": "2011-01-01", "Action": "DescribeInstanceRefreshes", "AutoScalingGroupName": g}
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
        root = ET.fromstring(resp.read())
    ns = "{http://autoscaling.amazonaws.com/doc/2011-01-01/}"
    member = root.find(f"{ns}DescribeInstanceRefreshesResult/{ns}InstanceRefreshes/{ns}member")
    assert member.find(f"{ns}InstanceRefreshId").text == rid
    assert member.find(f"{ns}Strategy").text == "Rolling"


def test_checkpoints_reached_together_are_waited_once(asg_helper):
    """Add checkpoints to an instance refresh: "Checkpoints can be skipped in some cases. For
    example, suppose that your Auto Scaling group has two instances and your checkpoint
    percentages are [10, 40, 100]. After the first instance is replaced, Amazon EC2 Auto Scaling
    calculates that 50 percent of the group was replaced. Because 50 percent is higher than the
    first two checkpoints, it skips the first checkpoint (10) and sends a notification for the
    second checkpoint (40).\""""
    h = asg_helper
    g = h.create_group("cap-checkpoints", 2)
    rid = start(h, g, MinHealthyPercentage=50, CheckpointPercentages=[10, 40, 100], CheckpointDelay=50)
    reasons = set()
    while True:
        r = h.refresh(g, rid)
        if "checkpoint" in (r.get("StatusReason") or "").lower():
            reasons.add(r["StatusReason"])
        if r["Status"] not in ("Pending", "InProgress"):
            break
        time.sleep(0.01)
    assert r["Status"] == "Successful"
    assert len(reasons) == 1, reasons
    (reason,) = reasons
    assert "40%" in reason and "10%" not in reason


def test_launch_before_terminating_moves_within_both_bounds(asg_helper):
    """Instance maintenance policies: "You set the minimum and maximum healthy percentage
    parameters for the policy, and your Auto Scaling group can only increase and decrease
    capacity within that minimum-maximum range when replacing instances. A larger range increases
    the number of instances that can be replaced at the same time."
    4 instances, Min 50 / Max 150: between 2 healthy and 6 in the group. The emulator uses the
    whole range (AWS may use less of it, never more): 2 launched first, 2 terminated and launched
    together, so 4 replacements in flight, 2 old instances in service and 6 instances at most."""
    h = asg_helper
    g = hooked_group(h, "cap-range", 4)
    rid = start(h, g, MinHealthyPercentage=50, MaxHealthyPercentage=150)
    pending = h.wait_for(
        "four replacements", lambda: (lambda p: p if len(p) >= 4 else None)(h.ids(g, "Pending:Wait"))
    )
    assert len(pending) == 4
    live = h.instances(g)
    assert len(live) <= 6
    assert in_service_v(h, g) == (2, ["1", "1"])
    for _ in range(20):
        if h.refresh(g, rid)["Status"] == "Successful":
            break
        continue_all(h, g)
        n, _ = in_service_v(h, g)
        assert n >= 2 and len(h.instances(g)) <= 6
        time.sleep(0.05)
    h.wait_status(g, rid, "Successful")
    assert versions(h, g) == ["2"] * 4


def test_rollback_progress_goes_back_down(asg_helper):
    """InstanceRefresh, PercentageComplete: "PercentageComplete does not include instances that are
    replaced during a rollback. This value gradually goes back down to zero during a rollback."
    InstancesToUpdate: "If you roll back the instance refresh, InstancesToUpdate shows you the
    number of instances that were not yet updated by the instance refresh. Therefore, these
    instances don't need to be replaced as part of the rollback.\""""
    h = asg_helper
    g = hooked_group(h, "cap-rollback-progress", 4)
    rid = start(h, g, MinHealthyPercentage=75)
    for _ in range(2):
        (i,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
        h.complete(g, "launch", i)
        h.wait_for("it to count", lambda: i not in h.ids(g, "Pending:Wait"))
    h.wait_for("50%", lambda: h.refresh(g, rid)["PercentageComplete"] == 50)
    h.asg.rollback_instance_refresh(AutoScalingGroupName=g)
    r = h.refresh(g, rid)
    details = r["RollbackDetails"]
    assert (details["PercentageCompleteOnRollback"], details["InstancesToUpdateOnRollback"]) == (50, 2)
    seen = []
    while r["Status"] == "RollbackInProgress":
        seen.append((r["PercentageComplete"], r["InstancesToUpdate"]))
        continue_all(h, g)
        time.sleep(0.02)
        r = h.refresh(g, rid)
    assert r["Status"] == "RollbackSuccessful", r
    seen.append((r["PercentageComplete"], r["InstancesToUpdate"]))
    percentages = [p for p, _ in seen]
    assert percentages[0] == 50 and percentages[-1] == 0, seen
    assert percentages == sorted(percentages, reverse=True), f"went up during the rollback: {seen}"
    assert {todo for _, todo in seen} == {2}, seen
    assert versions(h, g) == ["1"] * 4


def test_scale_in_during_a_refresh_is_not_counted_as_updated(asg_helper):
    """InstanceRefresh, PercentageComplete: "For each instance replacement, Amazon EC2 Auto Scaling
    tracks the instance's health status and warm-up time. When the instance's health status
    changes to healthy and the specified warm-up time passes, the instance is considered updated
    and is added to the percentage complete." Instances removed by a scale-in were not replaced:
    they do not add to it."""
    h = asg_helper
    g = hooked_group(h, "cap-scale-in", 4)
    rid = start(h, g, MinHealthyPercentage=75)
    (first,) = h.wait_for("a replacement", lambda: h.ids(g, "Pending:Wait"))
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=2)
    h.wait_for("the scale-in", lambda: len(h.instances(g)) == 2)
    time.sleep(0.1)
    r = h.refresh(g, rid)
    assert r["PercentageComplete"] == 0, r
    assert r["InstancesToUpdate"] == 2, r
    for _ in range(20):
        if h.refresh(g, rid)["Status"] == "Successful":
            break
        continue_all(h, g)
        time.sleep(0.05)
    r = h.wait_status(g, rid, "Successful")
    assert r["PercentageComplete"] == 100
    assert versions(h, g) == ["2", "2"]


def test_rollback_fails_when_the_capacity_cannot_be_restored(asg_helper):
    """InstanceRefresh, Status: "RollbackFailed - The rollback failed to complete. You can
    troubleshoot using the status reason and the scaling activities." A rollback succeeds only
    with the group whole again, so an instance the group launches to restore its capacity that
    never gets InService (abandoned here) makes the rollback fail rather than wait forever. (AWS
    does not document which failures end a rollback; this is the emulator's reading.)"""
    h = asg_helper
    g = hooked_group(h, "cap-rollback-refill-fails", 2)
    rid = start(h, g, MinHealthyPercentage=50)
    (first,) = h.wait_for("first replacement", lambda: h.ids(g, "Pending:Wait"))
    h.asg.rollback_instance_refresh(AutoScalingGroupName=g)
    (refill,) = h.wait_for(
        "the refill", lambda: [i for i in h.ids(g, "Pending:Wait") if i != first]
    )
    h.complete(g, "launch", refill, "ABANDON")
    r = h.wait_status(g, rid, "RollbackFailed", "RollbackSuccessful")
    assert r["Status"] == "RollbackFailed", r
    assert refill in r["StatusReason"]
