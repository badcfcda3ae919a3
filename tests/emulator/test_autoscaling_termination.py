"""EC2 termination protection and Auto Scaling, checked against the AWS documentation.

EC2 user guide, "Change instance termination protection", considerations: "Enabling termination
protection does not prevent Amazon EC2 Auto Scaling from terminating an instance when the instance
is unhealthy or during scale-in events. You can control whether an Auto Scaling group can terminate
a particular instance when scaling using instance scale-in protection."
"""


def protect(h, instance_id):
    h.ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})


def test_scale_in_terminates_a_termination_protected_instance(asg_helper):
    h = asg_helper
    g = h.create_group("term-scale-in", 1)
    (only,) = h.ids(g)
    protect(h, only)
    h.asg.set_desired_capacity(AutoScalingGroupName=g, DesiredCapacity=0)
    h.wait_for("the scale-in", lambda: h.ids(g) == [])
    assert h.ec2_state(only) == "terminated"


def test_unhealthy_termination_protected_instance_is_replaced(asg_helper):
    h = asg_helper
    g = h.create_group("term-unhealthy", 1)
    (only,) = h.ids(g)
    protect(h, only)
    h.asg.set_instance_health(InstanceId=only, HealthStatus="Unhealthy")
    h.wait_for("the replacement", lambda: only not in h.ids(g) and len(h.ids(g)) == 1)
    assert h.ec2_state(only) == "terminated"


def test_deleting_the_group_terminates_termination_protected_instances(asg_helper):
    """DeleteAutoScalingGroup, ForceDelete: "Specifies that the group is to be deleted along with
    all instances associated with the group, without waiting for all instances to be terminated."
    Deleting the group scales it in to nothing, which termination protection does not prevent.
    (moto expects OperationNotPermitted here: test_elbv2.py::TestAutoscalignELBv2::
    test_failed_delete_preserves_target_group_attachments, allow-listed in peer-suite.)"""
    h = asg_helper
    g = h.create_group("term-delete", 2)
    ids = h.ids(g)
    protect(h, ids[0])
    h.asg.delete_auto_scaling_group(AutoScalingGroupName=g, ForceDelete=True)
    assert h.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[g])["AutoScalingGroups"] == []
    assert {h.ec2_state(i) for i in ids} == {"terminated"}
