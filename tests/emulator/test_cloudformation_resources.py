"""CloudFormation resource types the emulator adds to moto's CloudFormation, checked against the
AWS CloudFormation resource reference (each type's "Return values": what Ref and Fn::GetAtt give)
and against what the resource does once created.

moto 5.2.5 alone skips AWS::CloudWatch::Alarm, AWS::AutoScaling::ScalingPolicy and the inert
types silently (the stack still reaches CREATE_COMPLETE, without them), so every test here fails
on moto without bake_emulator/cloudformation.py.
"""

import json
import time
import urllib.request
from datetime import datetime, timezone


NETWORK = {
    "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
    "Subnet": {
        "Type": "AWS::EC2::Subnet",
        "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.9.1.0/24", "AvailabilityZone": "us-east-1a"},
    },
    "LaunchTemplate": {
        "Type": "AWS::EC2::LaunchTemplate",
        "Properties": {"LaunchTemplateData": {"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}},
    },
    "Group": {
        "Type": "AWS::AutoScaling::AutoScalingGroup",
        "Properties": {
            "AutoScalingGroupName": "cfn-group",
            "LaunchTemplate": {"LaunchTemplateId": {"Ref": "LaunchTemplate"}, "Version": "1"},
            "MinSize": "0",
            "MaxSize": "2",
            "VPCZoneIdentifier": [{"Ref": "Subnet"}],
        },
    },
    "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "cfn-alarms"}},
}


def deploy(emu, resources, outputs, name="cfn-test"):
    cfn = emu.client("cloudformation")
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources, "Outputs": outputs}
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body))
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    created = {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}
    assert set(created) == set(resources), "moto left resources out of the stack"
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def test_alarm_is_created_in_cloudwatch_with_the_template_properties_and_fires_to_sns(emulator_factory):
    emu = emulator_factory()
    alarm = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": "cfn-cpu-peak",
            "Namespace": "Bake/Agent",
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": {"Ref": "Group"}}],
            "Statistic": "Maximum",
            "Period": 10,
            "EvaluationPeriods": 6,
            "DatapointsToAlarm": 1,
            "Threshold": 90,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "Topic"}],
            "OKActions": [{"Ref": "Topic"}],
        },
    }
    out = deploy(
        emu,
        {**NETWORK, "Alarm": alarm},
        # AWS::CloudWatch::Alarm, Return values: "When you pass the logical ID of this resource to
        # the intrinsic Ref function, Ref returns the alarm name"; Fn::GetAtt "Arn: The ARN of the
        # CloudWatch alarm, such as arn:aws:cloudwatch:us-west-2:123456789012:alarm:myCloudWatchAlarm-CPUAlarm-UXMMZK36R55Z".
        {"Name": {"Value": {"Ref": "Alarm"}}, "Arn": {"Value": {"Fn::GetAtt": ["Alarm", "Arn"]}}},
    )
    assert out["Name"] == "cfn-cpu-peak"
    assert out["Arn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:cfn-cpu-peak"
    cw = emu.client("cloudwatch")
    (got,) = cw.describe_alarms(AlarmNames=["cfn-cpu-peak"])["MetricAlarms"]
    topic = emu.client("sns").create_topic(Name="cfn-alarms")["TopicArn"]  # idempotent: its ARN
    assert (got["Namespace"], got["MetricName"], got["Statistic"]) == ("Bake/Agent", "CPUUtilization", "Maximum")
    assert (got["Period"], got["EvaluationPeriods"], got["DatapointsToAlarm"]) == (10, 6, 1)
    assert (got["Threshold"], got["ComparisonOperator"]) == (90.0, "GreaterThanOrEqualToThreshold")
    assert got["TreatMissingData"] == "notBreaching"
    assert got["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "cfn-group"}]
    assert got["AlarmActions"] == [topic] and got["OKActions"] == [topic]
    # PutMetricAlarm: "the alarm state is immediately set to INSUFFICIENT_DATA".
    assert got["StateValue"] == "INSUFFICIENT_DATA"

    # It is a real alarm: a peak in the last complete 10 s period sets it off, and its action
    # publishes to the topic.
    into = time.time() % 10
    if 10 - into < 1.5:
        time.sleep(10 - into + 0.05)
    end = time.time() - time.time() % 10
    cw.put_metric_data(
        Namespace="Bake/Agent",
        MetricData=[{
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "cfn-group"}],
            "Timestamp": datetime.fromtimestamp(end - 5, timezone.utc),
            "Value": 97.0,
            "StorageResolution": 1,
        }],
    )
    deadline = time.monotonic() + 30
    while cw.describe_alarms(AlarmNames=["cfn-cpu-peak"])["MetricAlarms"][0]["StateValue"] != "ALARM":
        assert time.monotonic() < deadline, "the alarm made by CloudFormation never went to ALARM"
        time.sleep(0.2)
    # A period that ended before the datapoint arrived may have moved the alarm to OK first
    # (missing data is notBreaching), which its OKActions publish too: wait for the ALARM one.
    url = f"{emu.url}/bake-emulator/sns-notifications?TopicArn={topic}"
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=5) as resp:
            states = [json.loads(n["Message"])["NewStateValue"] for n in json.loads(resp.read())]
        if "ALARM" in states:
            break
        assert time.monotonic() < deadline, f"no ALARM published to the alarm's topic: {states}"
        time.sleep(0.2)

    # Deleting the stack deletes the alarm.
    emu.client("cloudformation").delete_stack(StackName="cfn-test")
    assert cw.describe_alarms(AlarmNames=["cfn-cpu-peak"])["MetricAlarms"] == []


def test_target_tracking_policy_is_recorded_and_describable(emulator_factory):
    emu = emulator_factory()
    policy = {
        "Type": "AWS::AutoScaling::ScalingPolicy",
        "Properties": {
            "AutoScalingGroupName": {"Ref": "Group"},
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "ALBRequestCountPerTarget",
                    "ResourceLabel": "app/bake-lb/50dc6c495c0c9188/targetgroup/bake-tg/cbf133c568e0d028",
                },
                "TargetValue": "600",  # a Number parameter reaches the resource as a string
            },
        },
    }
    out = deploy(
        emu,
        {**NETWORK, "Policy": policy},
        # AWS::AutoScaling::ScalingPolicy, Return values: "Ref returns the policy ARN";
        # Fn::GetAtt "Arn: Returns the ARN of a scaling policy" and "PolicyName: Returns the name
        # of a scaling policy".
        {"Ref": {"Value": {"Ref": "Policy"}}, "Arn": {"Value": {"Fn::GetAtt": ["Policy", "Arn"]}},
         "Name": {"Value": {"Fn::GetAtt": ["Policy", "PolicyName"]}}},
    )
    (got,) = emu.client("autoscaling").describe_policies(AutoScalingGroupName="cfn-group")["ScalingPolicies"]
    assert got["PolicyType"] == "TargetTrackingScaling"
    assert got["PolicyARN"] == out["Ref"] == out["Arn"]
    assert got["PolicyName"] == out["Name"]
    cfg = got["TargetTrackingConfiguration"]
    assert cfg["TargetValue"] == 600.0
    assert cfg["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    assert cfg["PredefinedMetricSpecification"]["ResourceLabel"].endswith("/targetgroup/bake-tg/cbf133c568e0d028")


def test_subscription_is_a_real_subscription_of_the_topic(emulator_factory):
    emu = emulator_factory()
    sub = {
        "Type": "AWS::SNS::Subscription",
        "Properties": {"TopicArn": {"Ref": "Topic"}, "Protocol": "email", "Endpoint": "ops@example.org"},
    }
    # AWS::SNS::Subscription, Return values: "Ref returns the ARN of the subscription".
    out = deploy(emu, {"Topic": NETWORK["Topic"], "Sub": sub}, {"Arn": {"Value": {"Ref": "Sub"}}})
    topic = emu.client("sns").create_topic(Name="cfn-alarms")["TopicArn"]
    (got,) = emu.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (got["Protocol"], got["Endpoint"]) == ("email", "ops@example.org")
    assert out["Arn"].startswith(topic + ":")


def test_inert_types_are_created_with_a_physical_id_and_their_attributes(emulator_factory):
    """The types docs/emulator.md lists as created but inert: in the stack, with a Ref and the
    Fn::GetAtt attributes bake's templates use, so the stacks after them deploy."""
    emu = emulator_factory()
    resources = {
        "Vault": {"Type": "AWS::Backup::BackupVault", "Properties": {"BackupVaultName": "cfn-vault"}},
        "Plan": {"Type": "AWS::Backup::BackupPlan", "Properties": {"BackupPlan": {"BackupPlanName": "p", "BackupPlanRule": []}}},
        "Stream": {"Type": "AWS::KinesisFirehose::DeliveryStream", "Properties": {}},
        "Acl": {"Type": "AWS::WAFv2::WebACL", "Properties": {"Name": "cfn-acl", "Scope": "REGIONAL"}},
        "Oidc": {"Type": "AWS::IAM::OIDCProvider", "Properties": {"Url": "https://token.actions.githubusercontent.com"}},
    }
    out = deploy(
        emu,
        resources,
        {
            # BackupVault: Fn::GetAtt "BackupVaultArn: An Amazon Resource Name (ARN) that uniquely
            # identifies a backup vault".
            "VaultArn": {"Value": {"Fn::GetAtt": ["Vault", "BackupVaultArn"]}},
            "PlanId": {"Value": {"Fn::GetAtt": ["Plan", "BackupPlanId"]}},
            # DeliveryStream: Fn::GetAtt "Arn: The Amazon Resource Name (ARN) of the delivery stream".
            "StreamArn": {"Value": {"Fn::GetAtt": ["Stream", "Arn"]}},
            # WebACL: Fn::GetAtt "Arn: The Amazon Resource Name (ARN) of the web ACL".
            "AclArn": {"Value": {"Fn::GetAtt": ["Acl", "Arn"]}},
            # OIDCProvider: "Ref returns the ARN of the OIDC provider".
            "OidcArn": {"Value": {"Ref": "Oidc"}},
        },
    )
    assert out["VaultArn"] == "arn:aws:backup:us-east-1:123456789012:backup-vault:cfn-vault"
    assert len(out["PlanId"]) == 36
    assert out["StreamArn"].startswith("arn:aws:firehose:us-east-1:123456789012:deliverystream/")
    assert out["AclArn"].startswith("arn:aws:wafv2:us-east-1:123456789012:regional/webacl/cfn-acl/")
    assert out["OidcArn"] == "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"


def test_short_form_getatt_keeps_a_dotted_attribute_name(emulator_factory):
    """Fn::GetAtt short form: "!GetAtt logicalNameOfResource.attributeName"; an RDS instance's
    Endpoint.Address is one attribute (moto split it at every dot and refused the template)."""
    emu = emulator_factory()
    body = """
Resources:
  Db:
    Type: AWS::RDS::DBInstance
    Properties:
      DBInstanceIdentifier: cfn-db
      Engine: postgres
      DBInstanceClass: db.t4g.micro
      AllocatedStorage: "20"
      MasterUsername: bake
      ManageMasterUserPassword: true
Outputs:
  Address:
    Value: !GetAtt Db.Endpoint.Address
  Secret:
    Value: !GetAtt Db.MasterUserSecret.SecretArn
"""
    cfn = emu.client("cloudformation")
    cfn.create_stack(StackName="cfn-db", TemplateBody=body)
    stack = cfn.describe_stacks(StackName="cfn-db")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    (db,) = emu.client("rds").describe_db_instances(DBInstanceIdentifier="cfn-db")["DBInstances"]
    assert out["Address"] == db["Endpoint"]["Address"]
    # AWS::RDS::DBInstance: "MasterUserSecret.SecretArn: The Amazon Resource Name (ARN) of the secret".
    assert out["Secret"] == db["MasterUserSecret"]["SecretArn"]
    assert emu.client("secretsmanager").describe_secret(SecretId=out["Secret"])["ARN"] == out["Secret"]


def test_group_gets_its_lifecycle_hooks_and_warmup_from_the_template(emulator_factory):
    """AWS::AutoScaling::AutoScalingGroup, LifecycleHookSpecificationList: "One or more lifecycle
    hooks to add to the Auto Scaling group before instances are launched"; DefaultInstanceWarmup:
    "The amount of time, in seconds, until a new instance is considered to have finished
    initializing and resource consumption to become stable after it enters the InService state"."""
    emu = emulator_factory()
    group = json.loads(json.dumps(NETWORK["Group"]))
    group["Properties"].update(
        MinSize="1",
        DefaultInstanceWarmup=60,
        LifecycleHookSpecificationList=[
            {"LifecycleHookName": "bake-launch", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
             "HeartbeatTimeout": 600, "DefaultResult": "ABANDON"},
            {"LifecycleHookName": "bake-terminate", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
             "HeartbeatTimeout": 300, "DefaultResult": "CONTINUE"},
        ],
    )
    deploy(emu, {**NETWORK, "Group": group}, {})
    asg = emu.client("autoscaling")
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName="cfn-group")["LifecycleHooks"]
    assert sorted((h["LifecycleHookName"], h["LifecycleTransition"], h["HeartbeatTimeout"], h["DefaultResult"]) for h in hooks) == [
        ("bake-launch", "autoscaling:EC2_INSTANCE_LAUNCHING", 600, "ABANDON"),
        ("bake-terminate", "autoscaling:EC2_INSTANCE_TERMINATING", 300, "CONTINUE"),
    ]
    (g,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["cfn-group"])["AutoScalingGroups"]
    assert g["DefaultInstanceWarmup"] == 60
    # The hooks existed before the first instance launched: it waits on the launch hook.
    assert [i["LifecycleState"] for i in g["Instances"]] == ["Pending:Wait"]
