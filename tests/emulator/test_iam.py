"""IAM enforcement (bake_emulator/iam.py), checked against the AWS documentation.

Every test here runs with enforcement on (``POST /moto-api/reset-auth`` with body ``0``, moto's
switch) on an emulator of its own module (or its own test), so no other test sees it: an admin
user is made first, every later call is signed by the admin or by a role's credentials.
"""

import base64
import datetime as dt
import gzip
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import boto3
import botocore.exceptions
import cbor2
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from conftest import Emulator

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
GITHUB = "token.actions.githubusercontent.com"
PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{GITHUB}"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def _post(url, body=b"", content_type="application/x-www-form-urlencoded"):
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Enforced:
    """An emulator with IAM enforced, its admin user, and roles made for a test."""

    def __init__(self, emu):
        self.emu = emu
        self.url = emu.url
        iam = emu.client("iam")
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin_creds = {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }
        status, body = _post(f"{self.url}/moto-api/reset-auth", b"0", "text/plain")
        assert status == 200, body

    def switch_off(self):
        status, body = _post(f"{self.url}/moto-api/reset-auth", b"inf", "text/plain")
        assert status == 200, body

    def client(self, service, creds, **kw):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **creds, **kw)

    def admin(self, service):
        return self.client(service, self.admin_creds)

    def role(self, name, statements, trust=None):
        """A role (trusting EC2 unless ``trust``) with one inline policy, in an instance profile
        of the same name."""
        iam = self.admin("iam")
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or EC2_TRUST))
        if statements:
            iam.put_role_policy(
                RoleName=name,
                PolicyName="p",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
            )
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return name

    def role_credentials(self, **params):
        body = "&".join(f"{k}={urllib.request.quote(str(v), safe='')}" for k, v in params.items())
        status, out = _post(f"{self.url}/bake-emulator/ec2/role-credentials", body.encode())
        return status, json.loads(out)

    def instance_creds(self, profile, instance_id="i-0123456789abcdef0"):
        status, out = self.role_credentials(InstanceProfileName=profile, InstanceId=instance_id)
        assert status == 200, out
        return {
            "aws_access_key_id": out["AccessKeyId"],
            "aws_secret_access_key": out["SecretAccessKey"],
            "aws_session_token": out["Token"],
        }


@pytest.fixture(scope="module")
def enforced():
    emu = Emulator(time_scale=0.01)
    try:
        env = Enforced(emu)
        yield env
        env.switch_off()
    finally:
        emu.stop()


def allow(actions, resources):
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def ssm_arn(name):
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


# ------------------------------------------------------------------------------------ SSM


def test_ssm_path_role_reads_its_path_and_not_another(enforced):
    # "GetParametersByPath ... authorizes against the path in the request rather than against the
    # parameters it returns"; GetParameter(s) against "each requested parameter" (Systems Manager
    # user guide, "How Parameter Store authorizes parameter retrieval").
    admin = enforced.admin("ssm")
    for env in ("a", "b"):
        admin.put_parameter(Name=f"/bake/{env}/app/DB_URL", Value=f"db-{env}", Type="SecureString")
    role = enforced.role(
        "ssm-a",
        [allow(["ssm:GetParametersByPath", "ssm:GetParameter", "ssm:GetParameters"],
               [ssm_arn("/bake/a/app"), ssm_arn("/bake/a/app/*")])],
    )
    ssm = enforced.client("ssm", enforced.instance_creds(role))

    got = ssm.get_parameters_by_path(Path="/bake/a/app", Recursive=True, WithDecryption=True)
    assert [(p["Name"], p["Value"]) for p in got["Parameters"]] == [("/bake/a/app/DB_URL", "db-a")]
    # The same path with a trailing slash.
    assert len(ssm.get_parameters_by_path(Path="/bake/a/app/", Recursive=True)["Parameters"]) == 1
    assert ssm.get_parameter(Name="/bake/a/app/DB_URL", WithDecryption=True)["Parameter"]["Value"] == "db-a"

    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameters_by_path(Path="/bake/b/app", Recursive=True)
    assert error_code(denied) == "AccessDeniedException"
    assert ssm_arn("/bake/b/app") in str(denied.value)
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameter(Name="/bake/b/app/DB_URL")
    assert error_code(denied) == "AccessDeniedException"
    # Every parameter of a GetParameters call must be allowed.
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameters(Names=["/bake/a/app/DB_URL", "/bake/b/app/DB_URL"])
    assert error_code(denied) == "AccessDeniedException"
    assert len(ssm.get_parameters(Names=["/bake/a/app/DB_URL"])["Parameters"]) == 1


def test_ssm_path_is_authorized_as_the_path_itself(enforced):
    # A policy on parameter/bake/c/app/* covers the parameters under the path, not the path: the
    # guide's "For GetParametersByPath, deny every ancestor path" follows from the same rule
    # ("Restricting access to specific parameters and paths").
    enforced.admin("ssm").put_parameter(Name="/bake/c/app/K", Value="v", Type="String")
    role = enforced.role("ssm-c", [allow(["ssm:GetParametersByPath", "ssm:GetParameter"], ssm_arn("/bake/c/app/*"))])
    ssm = enforced.client("ssm", enforced.instance_creds(role))
    assert ssm.get_parameter(Name="/bake/c/app/K")["Parameter"]["Value"] == "v"
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameters_by_path(Path="/bake/c/app")
    assert error_code(denied) == "AccessDeniedException"
    # A sub-path is under the wildcard.
    assert ssm.get_parameters_by_path(Path="/bake/c/app/sub")["Parameters"] == []


def test_ssm_describe_parameters_is_authorized_on_star_and_writes_on_the_name(enforced):
    # Service Authorization Reference (Systems Manager): DescribeParameters has no resource type;
    # PutParameter, DeleteParameter, AddTagsToResource (parameter), LabelParameterVersion and
    # GetParameterHistory name the parameter.
    leases = ssm_arn("/bake/d/leases/*")
    role = enforced.role(
        "ssm-d",
        [
            allow("ssm:DescribeParameters", "*"),
            allow(["ssm:PutParameter", "ssm:DeleteParameter", "ssm:AddTagsToResource",
                   "ssm:LabelParameterVersion", "ssm:GetParameterHistory"], leases),
        ],
    )
    ssm = enforced.client("ssm", enforced.instance_creds(role))
    ssm.describe_parameters(ParameterFilters=[{"Key": "Path", "Values": ["/bake/d"]}])
    ssm.put_parameter(Name="/bake/d/leases/job", Value="i-1", Type="String")
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId="/bake/d/leases/job", Tags=[{"Key": "k", "Value": "v"}])
    ssm.label_parameter_version(Name="/bake/d/leases/job", Labels=["held"])
    assert len(ssm.get_parameter_history(Name="/bake/d/leases/job")["Parameters"]) == 1
    ssm.delete_parameter(Name="/bake/d/leases/job")
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.put_parameter(Name="/bake/d/other", Value="x", Type="String")
    assert error_code(denied) == "AccessDeniedException"

    without = enforced.role("ssm-d2", [allow("ssm:GetParameter", "*")])
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        enforced.client("ssm", enforced.instance_creds(without)).describe_parameters()
    assert error_code(denied) == "AccessDeniedException"


# ------------------------------------------------------------------------------------ Logs


def test_logs_role_writes_its_groups_and_not_another(enforced):
    # Service Authorization Reference (CloudWatch Logs): CreateLogGroup, PutRetentionPolicy and
    # DescribeLogStreams on log-group, PutLogEvents/CreateLogStream on the log stream; IAM
    # policies name a group as "log-group:NAME:*" ("Overview of managing access permissions to
    # your CloudWatch Logs resources").
    admin = enforced.admin("logs")
    admin.create_log_group(logGroupName="/bake/b/app")
    admin.create_log_stream(logGroupName="/bake/b/app", logStreamName="i-1")
    base = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group"
    role = enforced.role(
        "logs-a",
        [allow(["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:CreateLogStream",
                "logs:PutLogEvents", "logs:DescribeLogStreams"],
               [f"{base}:/bake/a/*", f"{base}:/bake/a/*:log-stream:*"])],
    )
    logs = enforced.client("logs", enforced.instance_creds(role))
    logs.create_log_group(logGroupName="/bake/a/app")
    logs.put_retention_policy(logGroupName="/bake/a/app", retentionInDays=7)
    logs.create_log_stream(logGroupName="/bake/a/app", logStreamName="i-1")
    event = [{"timestamp": int(time.time() * 1000), "message": "hello"}]
    logs.put_log_events(logGroupName="/bake/a/app", logStreamName="i-1", logEvents=event)
    streams = logs.describe_log_streams(logGroupName="/bake/a/app")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["i-1"]

    with pytest.raises(botocore.exceptions.ClientError) as denied:
        logs.put_log_events(logGroupName="/bake/b/app", logStreamName="i-1", logEvents=event)
    assert error_code(denied) == "AccessDeniedException"
    assert f"{base}:/bake/b/app:log-stream:i-1" in str(denied.value)
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        logs.create_log_group(logGroupName="/bake/b/other")
    assert error_code(denied) == "AccessDeniedException"

    # A policy on "log-group:NAME" without ":*" does not cover the group-level actions.
    exact = enforced.role("logs-e", [allow("logs:CreateLogGroup", f"{base}:/bake/e/app")])
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        enforced.client("logs", enforced.instance_creds(exact)).create_log_group(logGroupName="/bake/e/app")
    assert error_code(denied) == "AccessDeniedException"


# ------------------------------------------------------------------------------------ Auto Scaling


def _group_with_waiting_instance(enforced, name):
    ec2 = enforced.admin("ec2")
    asg = enforced.admin("autoscaling")
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"{name}-lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
        LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
        LifecycleHookSpecificationList=[
            {"LifecycleHookName": "launch", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
             "HeartbeatTimeout": 3000, "DefaultResult": "ABANDON"}
        ],
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
        waiting = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "Pending:Wait"]
        if waiting:
            return waiting[0]
        time.sleep(0.05)
    raise AssertionError(f"no instance of {name} reached Pending:Wait")


def test_autoscaling_role_acts_on_its_group_only(enforced):
    # Service Authorization Reference (Amazon EC2 Auto Scaling): CompleteLifecycleAction,
    # RecordLifecycleActionHeartbeat, SetInstanceHealth on autoScalingGroup
    # (arn:...:autoScalingGroup:${GroupId}:autoScalingGroupName/${GroupName});
    # DescribeAutoScalingGroups has no resource type.
    own = _group_with_waiting_instance(enforced, "bake-a")
    other = _group_with_waiting_instance(enforced, "bake-b")
    group_arn = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/bake-a"
    role = enforced.role(
        "asg-a",
        [
            allow(["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat",
                   "autoscaling:SetInstanceHealth"], group_arn),
            allow("autoscaling:DescribeAutoScalingGroups", "*"),
        ],
    )
    asg = enforced.client("autoscaling", enforced.instance_creds(role))
    asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="bake-a", LifecycleHookName="launch", InstanceId=own)
    asg.complete_lifecycle_action(
        AutoScalingGroupName="bake-a", LifecycleHookName="launch", InstanceId=own, LifecycleActionResult="CONTINUE"
    )
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["bake-a"])["AutoScalingGroups"]
    assert [i["LifecycleState"] for i in groups[0]["Instances"]] == ["InService"]
    asg.set_instance_health(InstanceId=own, HealthStatus="Healthy")

    with pytest.raises(botocore.exceptions.ClientError) as denied:
        asg.complete_lifecycle_action(
            AutoScalingGroupName="bake-b", LifecycleHookName="launch", InstanceId=other,
            LifecycleActionResult="CONTINUE",
        )
    assert error_code(denied) == "AccessDenied"
    assert ":autoScalingGroupName/bake-b" in str(denied.value)
    # SetInstanceHealth names only the instance: its group is the resource.
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        asg.set_instance_health(InstanceId=other, HealthStatus="Unhealthy")
    assert error_code(denied) == "AccessDenied"


def test_query_protocol_denial_has_the_aws_error_shape(enforced):
    # Query API errors: <ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>
    # (Auto Scaling API reference, "Common Errors": AccessDenied, 403), the shape the SDKs parse.
    role = enforced.role("asg-shape", [allow("autoscaling:DescribeAutoScalingGroups", "*")])
    creds = enforced.instance_creds(role)
    body = b"Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName=bake-a&DesiredCapacity=1"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    req = AWSRequest(method="POST", url=f"{enforced.url}/", data=body, headers=headers)
    SigV4Auth(
        Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"], creds["aws_session_token"]),
        "autoscaling",
        REGION,
    ).add_auth(req)
    request = urllib.request.Request(f"{enforced.url}/", data=body, method="POST", headers=dict(req.headers.items()))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    root = ElementTree.fromstring(refused.value.read())
    assert root.tag == "ErrorResponse"
    assert root.find("Error/Code").text == "AccessDenied"
    assert root.find("Error/Type").text == "Sender"
    assert "autoscaling:SetDesiredCapacity" in root.find("Error/Message").text
    assert root.find("RequestId").text


def test_autoscaling_group_that_does_not_exist_gets_the_service_error_when_allowed(enforced):
    role = enforced.role(
        "asg-c",
        [allow("autoscaling:StartInstanceRefresh",
               f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/bake-none")],
    )
    asg = enforced.client("autoscaling", enforced.instance_creds(role))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        asg.start_instance_refresh(AutoScalingGroupName="bake-none")
    assert error_code(err) != "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        asg.start_instance_refresh(AutoScalingGroupName="bake-else")
    assert error_code(denied) == "AccessDenied"


# ------------------------------------------------------------------------------------ EC2, CloudFormation


def test_launch_template_actions_are_authorized_on_the_template_by_id_or_name(enforced):
    # Service Authorization Reference (Amazon EC2): CreateLaunchTemplateVersion,
    # ModifyLaunchTemplate, DeleteLaunchTemplateVersions on launch-template
    # (arn:...:launch-template/${LaunchTemplateId}).
    ec2 = enforced.admin("ec2")
    data = {"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    mine = ec2.create_launch_template(LaunchTemplateName="lt-mine", LaunchTemplateData=data)["LaunchTemplate"]
    ec2.create_launch_template(LaunchTemplateName="lt-other", LaunchTemplateData=data)
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{mine['LaunchTemplateId']}"
    role = enforced.role(
        "lt-role",
        [allow(["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "ec2:DeleteLaunchTemplateVersions"], arn)],
    )
    client = enforced.client("ec2", enforced.instance_creds(role))
    version = client.create_launch_template_version(
        LaunchTemplateName="lt-mine", SourceVersion="1", LaunchTemplateData={"ImageId": "ami-1a2b3c4d"}
    )["LaunchTemplateVersion"]["VersionNumber"]
    client.modify_launch_template(LaunchTemplateId=mine["LaunchTemplateId"], DefaultVersion=str(version))
    for call in (
        lambda: client.create_launch_template_version(LaunchTemplateName="lt-other", LaunchTemplateData=data),
        lambda: client.delete_launch_template_versions(LaunchTemplateName="lt-other", Versions=["1"]),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        # EC2's own code for a denied action (EC2 API reference, "Error codes").
        assert error_code(denied) == "UnauthorizedOperation"


def test_ec2_tags_are_authorized_on_each_resource_tagged(enforced):
    # Service Authorization Reference (Amazon EC2): CreateTags and DeleteTags on the resources
    # tagged; an image's ARN has no account: arn:${Partition}:ec2:${Region}::image/${ImageId}.
    ec2 = enforced.admin("ec2")
    mine = ec2.register_image(Name="tags-mine", RootDeviceName="/dev/xvda")["ImageId"]
    other = ec2.register_image(Name="tags-other", RootDeviceName="/dev/xvda")["ImageId"]
    role = enforced.role(
        "tags-role",
        [allow(["ec2:CreateTags", "ec2:DeleteTags"], f"arn:aws:ec2:{REGION}::image/{mine}")],
    )
    client = enforced.client("ec2", enforced.instance_creds(role))
    client.create_tags(Resources=[mine], Tags=[{"Key": "bake:tested", "Value": "pass"}])
    client.delete_tags(Resources=[mine], Tags=[{"Key": "bake:tested"}])
    for call in (
        lambda: client.create_tags(Resources=[other], Tags=[{"Key": "k", "Value": "v"}]),
        lambda: client.delete_tags(Resources=[other], Tags=[{"Key": "k"}]),
        # Every resource of the request must be allowed.
        lambda: client.create_tags(Resources=[mine, other], Tags=[{"Key": "k", "Value": "v"}]),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        assert error_code(denied) == "UnauthorizedOperation"
    tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[mine])["Images"][0].get("Tags", [])}
    assert "bake:tested" not in tags and "k" not in tags, tags


def test_image_lifecycle_actions_are_authorized_on_the_image_and_snapshot(enforced):
    # Service Authorization Reference (Amazon EC2): EnableImageDeprecation,
    # DisableImageDeprecation, DisableImage, EnableImage, DeregisterImage, ModifyImageAttribute,
    # DescribeImageAttribute on image (arn:${Partition}:ec2:${Region}::image/${ImageId});
    # ModifySnapshotAttribute, DescribeSnapshotAttribute on snapshot; CopyImage on the source AMI
    # and the new one (EC2 user guide, "Grant permissions to copy Amazon EC2 AMIs":
    # "arn:aws:ec2:*::image/*").
    ec2 = enforced.admin("ec2")
    mine = ec2.register_image(Name="life-mine", RootDeviceName="/dev/xvda")["ImageId"]
    other = ec2.register_image(Name="life-other", RootDeviceName="/dev/xvda")["ImageId"]
    snaps = {
        i["ImageId"]: i["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        for i in ec2.describe_images(ImageIds=[mine, other])["Images"]
    }
    image_arn = f"arn:aws:ec2:{REGION}::image/{mine}"
    role = enforced.role(
        "life-role",
        [
            allow(
                [
                    "ec2:EnableImageDeprecation",
                    "ec2:DisableImageDeprecation",
                    "ec2:DisableImage",
                    "ec2:EnableImage",
                    "ec2:ModifyImageAttribute",
                    "ec2:DescribeImageAttribute",
                    "ec2:DeregisterImage",
                ],
                image_arn,
            ),
            allow(["ec2:ModifySnapshotAttribute", "ec2:DescribeSnapshotAttribute"], f"arn:aws:ec2:{REGION}::snapshot/{snaps[mine]}"),
            allow("ec2:CopyImage", [image_arn, "arn:aws:ec2:eu-west-1::image/*"]),
        ],
    )
    creds = enforced.instance_creds(role)
    client = enforced.client("ec2", creds)
    west = boto3.client("ec2", endpoint_url=enforced.url, region_name="eu-west-1", **creds)
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    perm = {"Add": [{"UserId": "111122223333"}]}
    client.enable_image_deprecation(ImageId=mine, DeprecateAt=at)
    client.disable_image_deprecation(ImageId=mine)
    client.modify_image_attribute(ImageId=mine, LaunchPermission=perm)
    client.describe_image_attribute(ImageId=mine, Attribute="launchPermission")
    client.modify_snapshot_attribute(SnapshotId=snaps[mine], Attribute="createVolumePermission", CreateVolumePermission=perm)
    client.describe_snapshot_attribute(SnapshotId=snaps[mine], Attribute="createVolumePermission")
    client.disable_image(ImageId=mine)
    client.enable_image(ImageId=mine)
    west.copy_image(SourceImageId=mine, SourceRegion=REGION, Name="life-copy")
    for action, call in (
        ("EnableImageDeprecation", lambda: client.enable_image_deprecation(ImageId=other, DeprecateAt=at)),
        ("DisableImageDeprecation", lambda: client.disable_image_deprecation(ImageId=other)),
        ("DisableImage", lambda: client.disable_image(ImageId=other)),
        ("EnableImage", lambda: client.enable_image(ImageId=other)),
        ("ModifyImageAttribute", lambda: client.modify_image_attribute(ImageId=other, LaunchPermission=perm)),
        ("DescribeImageAttribute", lambda: client.describe_image_attribute(ImageId=other, Attribute="launchPermission")),
        (
            "ModifySnapshotAttribute",
            lambda: client.modify_snapshot_attribute(
                SnapshotId=snaps[other], Attribute="createVolumePermission", CreateVolumePermission=perm
            ),
        ),
        (
            "DescribeSnapshotAttribute",
            lambda: client.describe_snapshot_attribute(SnapshotId=snaps[other], Attribute="createVolumePermission"),
        ),
        ("CopyImage", lambda: west.copy_image(SourceImageId=other, SourceRegion=REGION, Name="life-copy-other")),
        # The new AMI's Region must be allowed too.
        ("CopyImage", lambda: client.copy_image(SourceImageId=mine, SourceRegion=REGION, Name="life-copy-east")),
        ("DeregisterImage", lambda: client.deregister_image(ImageId=other)),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        assert error_code(denied) == "UnauthorizedOperation"
        assert f"perform: ec2:{action} on resource: arn:aws:ec2:" in denied.value.response["Error"]["Message"]
    client.deregister_image(ImageId=mine)


def test_describe_stacks_is_authorized_on_the_stack(enforced):
    # Service Authorization Reference (CloudFormation): DescribeStacks on stack
    # (arn:...:stack/${StackName}/${Id}); without StackName it lists every stack: "*".
    cfn = enforced.admin("cloudformation")
    body = json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}})
    for name in ("bake-s-fleet", "other-fleet"):
        cfn.create_stack(StackName=name, TemplateBody=body)
    role = enforced.role(
        "cfn-role",
        [allow("cloudformation:DescribeStacks", f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/bake-s-*/*")],
    )
    client = enforced.client("cloudformation", enforced.instance_creds(role))
    assert client.describe_stacks(StackName="bake-s-fleet")["Stacks"][0]["StackName"] == "bake-s-fleet"
    for kwargs in ({"StackName": "other-fleet"}, {}):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            client.describe_stacks(**kwargs)
        assert error_code(denied) == "AccessDenied"


# ------------------------------------------------------------------------------------ CloudWatch over CBOR


def _cbor_put_metric_data(url, creds, namespace, gzipped):
    """PutMetricData as aws-sdk-cloudwatch (Rust) sends it: rpc-v2-cbor, SigV4 over the body as
    sent (gzip when @requestCompression applies)."""
    body = cbor2.dumps({"Namespace": namespace, "MetricData": [{"MetricName": "Up", "Value": 1.0}]})
    headers = {
        "smithy-protocol": "rpc-v2-cbor",
        "Accept": "application/cbor",
        "Content-Type": "application/cbor",
        "x-amzn-query-mode": "true",
    }
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    target = f"{url}/service/GraniteServiceVersion20100801/operation/PutMetricData"
    req = AWSRequest(method="POST", url=target, data=body, headers=headers)
    credentials = Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"], creds["aws_session_token"])
    SigV4Auth(credentials, "monitoring", REGION).add_auth(req)
    request = urllib.request.Request(target, data=body, method="POST", headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.parametrize("gzipped", [False, True])
def test_cbor_put_metric_data_signed_by_a_role(enforced, gzipped):
    # Service Authorization Reference (CloudWatch): PutMetricData has no resource type; the
    # action is cloudwatch:PutMetricData although the signing name is "monitoring".
    suffix = "gz" if gzipped else "plain"
    ok = enforced.role(f"cw-{suffix}", [allow("cloudwatch:PutMetricData", "*")])
    status, _, body = _cbor_put_metric_data(enforced.url, enforced.instance_creds(ok), f"Bake/{suffix}", gzipped)
    assert status == 200, body
    metrics = enforced.admin("cloudwatch").list_metrics(Namespace=f"Bake/{suffix}")["Metrics"]
    assert [m["MetricName"] for m in metrics] == ["Up"]

    without = enforced.role(f"cw-no-{suffix}", [allow("cloudwatch:GetMetricData", "*")])
    status, headers, body = _cbor_put_metric_data(
        enforced.url, enforced.instance_creds(without), f"Bake/{suffix}", gzipped
    )
    assert status == 403
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower.get("x-amzn-query-error") == "AccessDenied;Sender", (headers, body)
    assert "cloudwatch:PutMetricData" in cbor2.loads(body)["message"]


def test_query_signature_is_checked_on_the_form_body_as_sent(enforced):
    # Signature Version 4 signs the payload as sent ("Create a canonical request": the hex
    # SHA-256 of the request body). The Rust SDK encodes a space in a form value as %20, Python's
    # urlencode as "+": both are the same form, and each signature must hold for its own bytes.
    ec2 = enforced.admin("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    target = f"{enforced.url}/"
    creds = Credentials(enforced.admin_creds["aws_access_key_id"], enforced.admin_creds["aws_secret_access_key"])
    for space in ("%20", "+"):
        body = (
            f"Action=CreateTags&Version=2016-11-15&ResourceId.1={image}"
            f"&Tag.1.Key=bake%3Anote&Tag.1.Value=sample{space}app%2F1.0.0%7E%2A"
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        req = AWSRequest(method="POST", url=target, data=body, headers=headers)
        SigV4Auth(creds, "ec2", REGION).add_auth(req)
        status, out = _post_with(target, body, dict(req.headers.items()))
        assert status == 200, (space, out)
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [image]}])["Tags"]
    assert {"Key": "bake:note", "Value": "sample app/1.0.0~*"} in [
        {"Key": t["Key"], "Value": t["Value"]} for t in tags
    ], tags
    # A body changed after signing still fails.
    body = f"Action=CreateTags&Version=2016-11-15&ResourceId.1={image}&Tag.1.Key=a&Tag.1.Value=b".encode()
    req = AWSRequest(method="POST", url=target, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(creds, "ec2", REGION).add_auth(req)
    status, out = _post_with(target, body.replace(b"Value=b", b"Value=c"), dict(req.headers.items()))
    assert status == 401 and b"AuthFailure" in out, (status, out)


def _post_with(url, body, headers):
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_put_metric_alarm_is_authorized_on_the_alarm(enforced):
    # Service Authorization Reference (CloudWatch): PutMetricAlarm on alarm
    # (arn:...:alarm:${AlarmName}); DescribeAlarms has no resource type.
    role = enforced.role(
        "alarm-role",
        [allow("cloudwatch:PutMetricAlarm", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:bake-a-*"),
         allow("cloudwatch:DescribeAlarms", "*")],
    )
    cw = enforced.client("cloudwatch", enforced.instance_creds(role))
    alarm = {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "Average", "Period": 60,
             "EvaluationPeriods": 1, "Threshold": 90.0, "ComparisonOperator": "GreaterThanThreshold"}
    cw.put_metric_alarm(AlarmName="bake-a-cpu", **alarm)
    assert [a["AlarmName"] for a in cw.describe_alarms(AlarmNames=["bake-a-cpu"])["MetricAlarms"]] == ["bake-a-cpu"]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        cw.put_metric_alarm(AlarmName="bake-b-cpu", **alarm)
    assert error_code(denied) == "AccessDenied"


# ------------------------------------------------------------------------------------ web identity


def _jwt(claims):
    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


def _claims(**over):
    claims = {
        "iss": f"https://{GITHUB}",
        "aud": "sts.amazonaws.com",
        "sub": "repo:example/bake:ref:refs/heads/main",
        "exp": int(time.time()) + 300,
    }
    claims.update(over)
    return claims


@pytest.fixture(scope="module")
def release_role(enforced):
    """A role GitHub Actions of example/bake on main may assume, as cloudformation/iam.yaml's."""
    enforced.admin("iam").create_open_id_connect_provider(
        Url=f"https://{GITHUB}", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"]
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": PROVIDER_ARN},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB}:aud": "sts.amazonaws.com",
                        f"{GITHUB}:sub": "repo:example/bake:ref:refs/heads/main",
                    }
                },
            }
        ],
    }
    enforced.role("release", [allow("ssm:GetParameter", ssm_arn("/bake/refresh-preferences/*"))], trust=trust)
    return f"arn:aws:iam::{ACCOUNT}:role/release"


def _assume_web(enforced, role_arn, token):
    sts = boto3.client("sts", endpoint_url=enforced.url, region_name=REGION, config=Config(signature_version=UNSIGNED))
    return sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="ci", WebIdentityToken=token)


def test_web_identity_with_the_trusted_subject_gets_the_roles_credentials(enforced, release_role):
    # STS API reference, AssumeRoleWithWebIdentity: "Calling AssumeRoleWithWebIdentity does not
    # require the use of AWS security credentials"; the trust policy's conditions on
    # token.actions.githubusercontent.com:aud/:sub are evaluated (IAM user guide, "Configuring a
    # role for GitHub OIDC identity provider").
    creds = _assume_web(enforced, release_role, _jwt(_claims()))["Credentials"]
    role_creds = {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }
    enforced.admin("ssm").put_parameter(Name="/bake/refresh-preferences/bake-x", Value="{}", Type="String")
    ssm = enforced.client("ssm", role_creds)
    assert ssm.get_parameter(Name="/bake/refresh-preferences/bake-x")["Parameter"]["Value"] == "{}"
    # Held to the role's policies afterwards.
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameter(Name="/bake/a/app/DB_URL")
    assert error_code(denied) == "AccessDeniedException"
    ident = enforced.client("sts", role_creds).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/release/ci"


@pytest.mark.parametrize(
    ("over", "code"),
    [
        # Another branch: the trust policy's sub condition fails.
        ({"sub": "repo:example/bake:ref:refs/heads/feature"}, "AccessDenied"),
        ({"sub": "repo:someone/else:ref:refs/heads/main"}, "AccessDenied"),
        # An audience the provider does not list (its ClientIDList).
        ({"aud": "https://github.com/example"}, "InvalidIdentityToken"),
        # An issuer with no IAM OIDC provider in the account.
        ({"iss": "https://oidc.example.org"}, "InvalidIdentityToken"),
        # STS: ExpiredTokenException, "The web identity token that was passed is expired".
        ({"exp": -60}, "ExpiredTokenException"),
    ],
    ids=["other-ref", "other-repo", "wrong-aud", "unknown-provider", "expired"],
)
def test_web_identity_refused(enforced, release_role, over, code):
    claims = _claims(**over)
    if "exp" in over:  # seconds from now
        claims["exp"] = int(time.time()) + over["exp"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        _assume_web(enforced, release_role, _jwt(claims))
    assert error_code(refused) == code
    status = refused.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == (403 if code == "AccessDenied" else 400)


def test_web_identity_trust_with_string_like(enforced, release_role):
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": PROVIDER_ARN},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"},
                    "StringLike": {f"{GITHUB}:sub": "repo:example/bake:*"},
                },
            }
        ],
    }
    enforced.role("release-like", [], trust=trust)
    arn = f"arn:aws:iam::{ACCOUNT}:role/release-like"
    assert _assume_web(enforced, arn, _jwt(_claims(sub="repo:example/bake:pull_request")))["Credentials"]
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        _assume_web(enforced, arn, _jwt(_claims(sub="repo:example/other:pull_request")))
    assert error_code(refused) == "AccessDenied"


# ------------------------------------------------------------------------------------ EC2 role delivery, AssumeRole


def test_role_credentials_for_an_ec2_trusting_role(enforced):
    # EC2 user guide, "IAM roles for Amazon EC2": the role of the instance profile, whose trust
    # policy lets ec2.amazonaws.com call sts:AssumeRole; the credentials are the role's.
    enforced.role("deliver", [allow("sts:GetCallerIdentity", "*")])
    status, out = enforced.role_credentials(
        InstanceProfileArn=f"arn:aws:iam::{ACCOUNT}:instance-profile/deliver", InstanceId="i-0abc", DurationSeconds=900
    )
    assert status == 200, out
    assert out["RoleName"] == "deliver"
    assert out["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/deliver"
    assert out["AccessKeyId"].startswith("ASIA")
    expires = time.mktime(time.strptime(out["Expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 800 < expires - time.time() < 1000
    creds = {"aws_access_key_id": out["AccessKeyId"], "aws_secret_access_key": out["SecretAccessKey"],
             "aws_session_token": out["Token"]}
    ident = enforced.client("sts", creds).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deliver/i-0abc"


def test_role_credentials_refused(enforced):
    user_trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"},
                       "Action": "sts:AssumeRole"}],
    }
    enforced.role("user-only", [], trust=user_trust)
    status, out = enforced.role_credentials(InstanceProfileName="user-only", InstanceId="i-1")
    assert status == 403
    assert "user-only" in out["Error"] and "ec2.amazonaws.com" in out["Error"]
    status, out = enforced.role_credentials(InstanceProfileName="no-such-profile", InstanceId="i-1")
    assert status == 404
    assert "no-such-profile" in out["Error"]
    status, out = enforced.role_credentials(InstanceProfileName="user-only")
    assert status == 400
    assert "InstanceId" in out["Error"]
    status, out = enforced.role_credentials(InstanceProfileName="user-only", InstanceId="i-1", DurationSeconds=100)
    assert status == 400
    assert "DurationSeconds" in out["Error"]


def test_assume_role_evaluates_the_trust_policy(enforced):
    # IAM user guide, "Role trust policies": the principal must be named by the trust policy; a
    # role that trusts only a service cannot be assumed by a user (moto answered 500 here).
    admin_sts = enforced.admin("sts")
    enforced.role("svc-only", [])
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        admin_sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/svc-only", RoleSessionName="session")
    assert error_code(denied) == "AccessDenied"
    both = {
        "Version": "2012-10-17",
        "Statement": [
            EC2_TRUST["Statement"][0],
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"},
        ],
    }
    enforced.role("account-trusted", [], trust=both)
    out = admin_sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/account-trusted", RoleSessionName="session")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/account-trusted/session"


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (b"Action=GetCallerIdentity&Version=2011-06-15", None),
        (b"Action=DescribeAutoScalingGroups&Version=2011-01-01", None),
        (b"{}", "AmazonSSM.DescribeParameters"),
    ],
    ids=["sts", "autoscaling", "ssm"],
)
def test_unsigned_request_is_refused_not_a_server_error(enforced, body, target):
    # An unsigned call to an API that needs credentials is refused with 403 ("Request is missing
    # Authentication Token"). moto's dispatcher routes a request without a signature to S3, which
    # refuses anonymous access with AccessDenied (S3 user guide, "Access denied (403 Forbidden)").
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if target:
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    request = urllib.request.Request(f"{enforced.url}/", data=body, method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    assert b"AccessDenied" in refused.value.read()


# ------------------------------------------------------------------------------------ cloudformation/iam.yaml


def test_iam_yaml_instance_role_reads_its_env_secrets_only(emulator_factory):
    """The stacks network, data and iam deployed from the repository's templates; the instance
    role of env "emu", delivered as EC2 does, reads /bake/emu/app and not /bake/prod/app."""
    env = Enforced(emulator_factory(time_scale=0.01))
    cfn = env.admin("cloudformation")
    params = {"iam": [{"ParameterKey": "GitHubRepository", "ParameterValue": "example/bake"}]}
    for part in ("network", "data", "iam"):
        name = f"bake-emu-{part}"
        cfn.create_stack(
            StackName=name,
            TemplateBody=(ROOT / "cloudformation" / f"{part}.yaml").read_text(),
            Parameters=[{"ParameterKey": "EnvName", "ParameterValue": "emu"}, *params.get(part, [])],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        deadline = time.monotonic() + 60
        while (status := cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]).endswith("IN_PROGRESS"):
            assert time.monotonic() < deadline, f"{name} still {status}"
            time.sleep(0.2)
        assert status == "CREATE_COMPLETE", name
    admin = env.admin("ssm")
    admin.put_parameter(Name="/bake/emu/app/DATABASE_URL", Value="postgres://emu", Type="SecureString")
    admin.put_parameter(Name="/bake/prod/app/DATABASE_URL", Value="postgres://prod", Type="SecureString")

    ssm = env.client("ssm", env.instance_creds("bake-emu-instance"))
    got = ssm.get_parameters_by_path(Path="/bake/emu/app", Recursive=True, WithDecryption=True)["Parameters"]
    assert [(p["Name"], p["Value"]) for p in got] == [("/bake/emu/app/DATABASE_URL", "postgres://emu")]
    for call in (
        lambda: ssm.get_parameters_by_path(Path="/bake/prod/app", Recursive=True, WithDecryption=True),
        lambda: ssm.get_parameter(Name="/bake/prod/app/DATABASE_URL", WithDecryption=True),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        assert error_code(denied) == "AccessDeniedException"

    # The release role: trusted for the repository's main branch through the stack's OIDC provider.
    creds = _assume_web(env, f"arn:aws:iam::{ACCOUNT}:role/bake-emu-release", _jwt(_claims()))["Credentials"]
    release = env.client(
        "cloudformation",
        {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
         "aws_session_token": creds["SessionToken"]},
    )
    assert release.describe_stacks(StackName="bake-emu-iam")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    # Packer's check of the build profile (PackerBuildProfile), and no other profile.
    release_iam = env.client(
        "iam",
        {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
         "aws_session_token": creds["SessionToken"]},
    )
    profile = release_iam.get_instance_profile(InstanceProfileName="bake-emu-build")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["bake-emu-build"]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        release_iam.get_instance_profile(InstanceProfileName="bake-emu-instance")
    assert error_code(denied) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        _assume_web(env, f"arn:aws:iam::{ACCOUNT}:role/bake-emu-release",
                    _jwt(_claims(sub="repo:example/bake:ref:refs/heads/other")))
    assert error_code(refused) == "AccessDenied"
    env.switch_off()


# ------------------------------------------------------------------------------------ trust policy evaluation


def test_trust_policy_evaluation_logic():
    """The evaluation the trust checks share (bake_emulator.iam.trust_allows), per the IAM user
    guide's "Policy evaluation logic" (an explicit Deny wins; an Allow is needed) and "IAM JSON
    policy elements: Condition operators" (negated operators and ...IfExists on a missing key)."""
    from bake_emulator.iam import trust_allows

    def fed(kind, value):
        return kind == "Federated" and value == PROVIDER_ARN

    def stmt(effect="Allow", **extra):
        return {"Effect": effect, "Principal": {"Federated": PROVIDER_ARN}, "Action": "sts:AssumeRoleWithWebIdentity", **extra}

    act = "sts:AssumeRoleWithWebIdentity"
    sub = f"{GITHUB}:sub"
    ctx = {sub: ["repo:o/r:ref:refs/heads/main"]}
    assert trust_allows({"Statement": [stmt()]}, act, fed, ctx)
    assert not trust_allows({"Statement": [stmt()]}, "sts:AssumeRole", fed, ctx)
    assert not trust_allows({"Statement": [stmt()]}, act, lambda k, v: False, ctx)
    assert not trust_allows({"Statement": [stmt(), stmt("Deny")]}, act, fed, ctx)
    assert trust_allows({"Statement": [stmt(Condition={"StringNotEquals": {sub: "repo:o/r:pull_request"}})]}, act, fed, ctx)
    assert not trust_allows({"Statement": [stmt(Condition={"StringNotLike": {sub: "repo:o/r:*"}})]}, act, fed, ctx)
    assert trust_allows({"Statement": [stmt(Condition={"StringEqualsIgnoreCase": {sub: "REPO:O/R:REF:REFS/HEADS/MAIN"}})]}, act, fed, ctx)
    # A missing key: StringEquals fails, StringNotEquals and ...IfExists hold.
    missing = {f"{GITHUB}:amr": "x"}
    assert not trust_allows({"Statement": [stmt(Condition={"StringEquals": missing})]}, act, fed, ctx)
    assert trust_allows({"Statement": [stmt(Condition={"StringNotEquals": missing})]}, act, fed, ctx)
    assert trust_allows({"Statement": [stmt(Condition={"StringEqualsIfExists": missing})]}, act, fed, ctx)
    # Condition keys are case-insensitive; an operator not understood: the statement does not apply.
    assert trust_allows({"Statement": [stmt(Condition={"StringEquals": {sub.upper(): ctx[sub][0]}})]}, act, fed, ctx)
    assert not trust_allows({"Statement": [stmt(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}})]}, act, fed, ctx)
    # A single statement instead of a list, and the policy as JSON text.
    assert trust_allows(json.dumps({"Statement": stmt()}), act, fed, ctx)
