"""Health replacement, checked against the AWS documentation.

"Health checks for instances in an Auto Scaling group": an instance marked unhealthy (for example
with SetInstanceHealth) is scheduled for replacement: Amazon EC2 Auto Scaling terminates it (its
terminate lifecycle hooks run) and launches a new instance (through the launch hooks) to keep the
desired capacity. The emulator replaces it 10 emulated seconds after it was marked (or after it
went InService), so the Unhealthy state can be seen first.
"""

import boto3
from moto import mock_aws


def test_stock_moto_leaves_an_unhealthy_instance_in_service():
    """Why the extension exists: moto alone never replaces an instance marked Unhealthy."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        asg = boto3.client("autoscaling", region_name="us-east-1")
        lt = ec2.create_launch_template(
            LaunchTemplateName="stock", LaunchTemplateData={"ImageId": "ami-12c6146b"}
        )["LaunchTemplate"]
        asg.create_auto_scaling_group(
            AutoScalingGroupName="stock",
            MinSize=1,
            MaxSize=1,
            AvailabilityZones=["us-east-1a"],
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
        )
        (inst,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
        asg.set_instance_health(InstanceId=inst["InstanceId"], HealthStatus="Unhealthy")
        (after,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
        assert after["InstanceId"] == inst["InstanceId"]
        assert (after["LifecycleState"], after["HealthStatus"]) == ("InService", "Unhealthy")


def test_unhealthy_instance_is_replaced_through_both_hooks(asg_helper):
    h = asg_helper
    g = h.create_group(
        "health-hooks",
        1,
        hooks=[("launch", "launch", 3000, "ABANDON"), ("bye", "terminate", 3000, "ABANDON")],
    )
    (old,) = h.ids(g, "Pending:Wait")
    h.complete(g, "launch", old)
    assert h.ids(g, "InService") == [old]

    h.asg.set_instance_health(InstanceId=old, HealthStatus="Unhealthy")
    h.wait_for("the terminate hook", lambda: h.ids(g, "Terminating:Wait") == [old])
    (new,) = h.wait_for("the replacement", lambda: h.ids(g, "Pending:Wait"))
    assert new != old
    assert h.ec2_state(old) == "running"

    h.complete(g, "bye", old)
    assert h.ec2_state(old) == "terminated"
    h.complete(g, "launch", new)
    (inst,) = h.instances(g)
    assert (inst["InstanceId"], inst["LifecycleState"], inst["HealthStatus"]) == (
        new,
        "InService",
        "Healthy",
    )


def test_unhealthy_instance_is_observable_then_replaced(asg_helper):
    """User guide, "Health checks for instances in an Auto Scaling group": "When Amazon EC2 Auto
    Scaling determines that an InService instance is unhealthy, it replaces it with a new
    instance to maintain the desired capacity of the group." The replacement is a scaling
    activity of its own, after the SetInstanceHealth call has returned; as AWS put it when
    SetInstanceHealth came out: "When you call DescribeAutoScalingGroups, you'll be able to see
    which instances are healthy and which are not. The unhealthy instances will, of course,
    remain in the group for a very short time." (moto's own suite checks the same:
    test_autoscaling_groups.py::TestAutoScalingGroup::test_set_instance_health.)"""
    h = asg_helper
    g = h.create_group("health-plain", 2)
    before = h.ids(g)
    h.asg.set_instance_health(InstanceId=before[0], HealthStatus="Unhealthy")
    states = {i["InstanceId"]: (i["LifecycleState"], i["HealthStatus"]) for i in h.instances(g)}
    assert states[before[0]] == ("InService", "Unhealthy")
    after = h.wait_for(
        "the health replacement",
        lambda: (lambda ids: ids if before[0] not in ids and len(ids) == 2 else None)(
            h.ids(g, "InService")
        ),
    )
    assert before[1] in after
    assert h.ec2_state(before[0]) == "terminated"


def test_unhealthy_set_during_pending_wait_is_acted_on_after_continue(asg_helper):
    """SetInstanceHealth: "Set to Unhealthy to have the instance be out of service. Amazon EC2
    Auto Scaling terminates and replaces the unhealthy instance." An instance marked while its
    launch hook holds it in Pending:Wait is replaced once it is InService ("determines that an
    InService instance is unhealthy, it replaces it"), not left Unhealthy in service forever."""
    h = asg_helper
    g = h.create_group("health-pending", 1, hooks=[("launch", "launch", 3000, "ABANDON")])
    (first,) = h.ids(g, "Pending:Wait")
    h.asg.set_instance_health(InstanceId=first, HealthStatus="Unhealthy")
    assert h.ids(g, "Pending:Wait") == [first]
    h.complete(g, "launch", first)
    (new,) = h.wait_for(
        "a replacement of the unhealthy instance",
        lambda: [i for i in h.ids(g, "Pending:Wait") if i != first],
    )
    h.wait_for("the unhealthy instance to be gone", lambda: first not in h.ids(g))
    assert h.ec2_state(first) == "terminated"
    h.complete(g, "launch", new)
    assert h.ids(g, "InService") == [new]


def test_health_check_grace_period_defaults_to_zero_and_so_does_the_refresh_warmup(asg_helper):
    """CreateAutoScalingGroup, HealthCheckGracePeriod: "Default: 0 seconds"; user guide: "In the
    console, by default, the health check grace period is 300 seconds when you create an Auto
    Scaling group. Its default value is 0 seconds when you create an Auto Scaling group using
    the AWS CLI or an SDK." RefreshPreferences, InstanceWarmup: "If you do not specify this
    property, the instance warmup by default is the value of the DefaultInstanceWarmup
    property, if defined (which is recommended in all cases), or the HealthCheckGracePeriod
    property otherwise." """
    h = asg_helper
    g = h.create_group("health-grace", 1)
    assert h.group(g)["HealthCheckGracePeriod"] == 0
    rid = h.asg.start_instance_refresh(
        AutoScalingGroupName=g, DesiredConfiguration={"LaunchTemplate": h.lt("2")}
    )["InstanceRefreshId"]
    assert h.refresh(g, rid)["Preferences"]["InstanceWarmup"] == 0
    h.wait_status(g, rid, "Successful")

    explicit = h.create_group("health-grace-60", 1, HealthCheckGracePeriod=60)
    assert h.group(explicit)["HealthCheckGracePeriod"] == 60
    zero = h.create_group("health-grace-0", 1, HealthCheckGracePeriod=0)
    assert h.group(zero)["HealthCheckGracePeriod"] == 0


def test_healthy_again_is_only_recorded(asg_helper):
    h = asg_helper
    g = h.create_group("health-healthy", 1)
    (only,) = h.ids(g)
    h.asg.set_instance_health(InstanceId=only, HealthStatus="Healthy")
    assert h.ids(g, "InService") == [only]
