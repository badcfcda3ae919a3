"""Health replacement, checked against the AWS documentation.

"Health checks for instances in an Auto Scaling group": an instance marked unhealthy (for example
with SetInstanceHealth) is scheduled for replacement: Amazon EC2 Auto Scaling terminates it (its
terminate lifecycle hooks run) and launches a new instance (through the launch hooks) to keep the
desired capacity.
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
    assert h.ids(g, "Terminating:Wait") == [old]
    (new,) = h.ids(g, "Pending:Wait")
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


def test_unhealthy_instance_without_hooks_is_replaced_at_once(asg_helper):
    h = asg_helper
    g = h.create_group("health-plain", 2)
    before = h.ids(g)
    h.asg.set_instance_health(InstanceId=before[0], HealthStatus="Unhealthy")
    after = h.ids(g, "InService")
    assert len(after) == 2
    assert before[0] not in after and before[1] in after
    assert h.ec2_state(before[0]) == "terminated"


def test_healthy_again_is_only_recorded(asg_helper):
    h = asg_helper
    g = h.create_group("health-healthy", 1)
    (only,) = h.ids(g)
    h.asg.set_instance_health(InstanceId=only, HealthStatus="Healthy")
    assert h.ids(g, "InService") == [only]
