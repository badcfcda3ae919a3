"""Deploys the CloudFormation stacks into the local emulator (moto's CloudFormation).

Usage: python deploy_emulator.py ENDPOINT_URL   (run by tests/infra/run with tests/emulator/.venv)

The stacks are created in their real order (network, data, edge, iam, fleet) with the exports
wired through Fn::ImportValue, exactly as in AWS. moto does not implement every resource type:
a stack that needs one fails to create there, and its exports are then provided by a stand-in
stack built from the same template's Outputs with made-up values (labelled "emulator stand-in"),
so that the stacks after it can still be deployed. The fleet stack must deploy for real, and the
script then checks what moto now holds (the Auto Scaling group, its launch template with IMDSv2
required and hop limit 1, ELB health checks over two subnets; the lifecycle hooks, the target
tracking policy and the alarms where moto models them), not just the stack status.
Prints one line per stack; exit 1 if the fleet stack (or a check on it) fails.
"""

import json
import sys
import time
from pathlib import Path

import boto3
import yaml

from cfn import CfnLoader  # tests/infra/cfn.py, next to this script

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "cloudformation"
ENV = "emu"
REGION = "us-east-1"
# Stacks moto 5.2.5 cannot create, with the reason. They are not even attempted: a stack that
# fails while evaluating its outputs stays in moto and breaks every later CreateStack (moto
# re-evaluates all exports for uniqueness).
STAND_IN = {
    "data": "moto: Fn::GetAtt DBInstance Endpoint.Address is not supported; AWS::Backup::*, "
    "AWS::KinesisFirehose::DeliveryStream, AWS::Logs::SubscriptionFilter are not modelled",
    "edge": "moto: Fn::GetAtt TargetGroup.TargetGroupFullName / LoadBalancer.LoadBalancerFullName "
    "crash its CloudFormation (FakeTargetGroup has no get_cfn_attribute); "
    "AWS::CertificateManager::Certificate, AWS::WAFv2::* are not modelled",
}


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def wait(cfn, name, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return stack
        time.sleep(0.5)
    raise TimeoutError(f"stack {name} still in progress after {timeout_s} s")


def failure_reasons(cfn, name):
    reasons = []
    for ev in cfn.describe_stack_events(StackName=name)["StackEvents"]:
        if ev.get("ResourceStatus", "").endswith("FAILED") and ev.get("ResourceStatusReason"):
            reasons.append(f'{ev["LogicalResourceId"]} ({ev["ResourceType"]}): {ev["ResourceStatusReason"]}')
    return reasons


def stand_in(cfn, ec2, elbv2, name, template, vpc_id):
    """A stack exporting the template's Outputs with made-up values (emulator stand-in).

    Exports that later stacks use as real resources get real ones made directly in the emulator:
    security groups and the target group."""
    outputs = {}
    for key, out in template.get("Outputs", {}).items():
        if "Export" not in out:
            continue
        if key.endswith("SecurityGroupId"):
            value = ec2.create_security_group(GroupName=f"{name}-{key}", Description="emulator stand-in", VpcId=vpc_id)["GroupId"]
        elif key == "TargetGroupArn":
            tg = elbv2.create_target_group(Name=f"bake-{ENV}-standin", Protocol="HTTP", Port=8080, VpcId=vpc_id)
            value = tg["TargetGroups"][0]["TargetGroupArn"]
        else:
            value = f"emulator-stand-in-{key}"
        outputs[key] = {"Value": value, "Export": out["Export"]}
    body = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"emulator stand-in for {name}",
        "Parameters": {"EnvName": {"Type": "String"}},
        "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
        "Outputs": outputs,
    }
    cfn.create_stack(
        StackName=name + "-standin",
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": "EnvName", "ParameterValue": ENV}],
    )
    return wait(cfn, name + "-standin")


def moto_resource_types():
    """Resource types moto's CloudFormation knows (others are not created by it)."""
    from moto.cloudformation import parsing

    def subclasses(cls):
        out = set()
        for sub in cls.__subclasses__():
            out.add(sub)
            out |= subclasses(sub)
        return out

    known = set(parsing.NULL_MODELS)
    for model in subclasses(parsing.CloudFormationModel):
        try:
            known.add(model.cloudformation_type())
        except Exception:  # abstract models raise NotImplementedError
            pass
    return known


def main():
    endpoint = sys.argv[1]
    cfn = client("cloudformation", endpoint)
    ec2 = client("ec2", endpoint)
    elbv2 = client("elbv2", endpoint)
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    params = {
        "network": {"InterfaceEndpoints": "true"},  # the opt-in endpoints too
        "data": {},
        "edge": {"HostedZoneId": "Z0000000000000000000"},
        "iam": {"GitHubRepository": "example/bake"},
        "fleet": {"ImageId": image_id, "AlarmEmail": "ops@example.org"},
    }
    unsupported = {}
    fleet_ok = False
    known = moto_resource_types()
    unknown_types = {}
    for part in ["network", "data", "edge", "iam", "fleet"]:
        name = f"bake-{ENV}-{part}"
        if part in STAND_IN:
            template = yaml.load((CFN / f"{part}.yaml").read_text(), Loader=CfnLoader)
            for res in template["Resources"].values():
                if res["Type"] not in known:
                    unknown_types.setdefault(res["Type"], set()).add(part)
            vpc = [o["OutputValue"] for o in cfn.describe_stacks(StackName=f"bake-{ENV}-network")["Stacks"][0]["Outputs"] if o["OutputKey"] == "VpcId"][0]
            stand_in(cfn, ec2, elbv2, name, template, vpc)
            unsupported[part] = [STAND_IN[part]]
            print(f"stand-in   {name}: {STAND_IN[part]}")
            continue
        body = (CFN / f"{part}.yaml").read_text()
        template = yaml.load(body, Loader=CfnLoader)
        for res in template["Resources"].values():
            if res["Type"] not in known:
                unknown_types.setdefault(res["Type"], set()).add(part)
        p = [{"ParameterKey": "EnvName", "ParameterValue": ENV}]
        p += [{"ParameterKey": k, "ParameterValue": v} for k, v in params[part].items()]
        try:
            cfn.create_stack(StackName=name, TemplateBody=body, Parameters=p, Capabilities=["CAPABILITY_NAMED_IAM"])
            stack = wait(cfn, name)
            status = stack["StackStatus"]
        except Exception as e:  # moto raises on unknown resource types during create
            status, stack = f"error: {e}", None
        if status == "CREATE_COMPLETE":
            print(f"deployed   {name}")
            if part == "fleet":
                fleet_ok = True
            continue
        reasons = failure_reasons(cfn, name) if stack else [status]
        unsupported[part] = reasons
        print(f"stand-in   {name}: moto cannot create it: {'; '.join(reasons)[:300]}")
        if part == "fleet":
            break
        try:
            cfn.delete_stack(StackName=name)
        except Exception:
            pass
        vpc = [o["OutputValue"] for o in cfn.describe_stacks(StackName=f"bake-{ENV}-network")["Stacks"][0]["Outputs"] if o["OutputKey"] == "VpcId"][0]
        stand_in(cfn, ec2, elbv2, name, template, vpc)

    if not fleet_ok:
        print("FAIL: the fleet stack did not deploy into the emulator")
        return 1

    # What the emulator now holds.
    asg_client = client("autoscaling", endpoint)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=f"bake-{ENV}-fleet")["Stacks"][0]["Outputs"]}
    errors = []
    asgs = asg_client.describe_auto_scaling_groups(AutoScalingGroupNames=[outputs["AutoScalingGroupName"]])["AutoScalingGroups"]
    if not asgs:
        errors.append(f"no auto scaling group {outputs['AutoScalingGroupName']}")
    else:
        asg = asgs[0]
        if asg["MinSize"] < 2:
            errors.append(f"MinSize {asg['MinSize']} < 2")
        if asg["HealthCheckType"] != "ELB":
            errors.append(f"HealthCheckType {asg['HealthCheckType']}")
        if len(asg["VPCZoneIdentifier"].split(",")) != 2:
            errors.append(f"subnets {asg['VPCZoneIdentifier']}")
    # network.yaml's endpoints (InterfaceEndpoints=true): S3 gateway + six interface endpoints.
    vpc_id = [o["OutputValue"] for o in cfn.describe_stacks(StackName=f"bake-{ENV}-network")["Stacks"][0]["Outputs"] if o["OutputKey"] == "VpcId"][0]
    eps = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    kinds = sorted((e["ServiceName"].rsplit(".", 1)[1], e["VpcEndpointType"]) for e in eps)
    want = sorted([("s3", "Gateway")] + [(s, "Interface") for s in ("autoscaling", "ec2messages", "logs", "monitoring", "ssm", "ssmmessages")])
    if kinds != want:
        errors.append(f"VPC endpoints {kinds}, expected {want}")
    else:
        print(f"network in the emulator: {len(eps)} VPC endpoints ({', '.join(k for k, _ in kinds)})")
    lt = ec2.describe_launch_template_versions(LaunchTemplateId=outputs["LaunchTemplateId"])["LaunchTemplateVersions"][0]
    md = lt["LaunchTemplateData"].get("MetadataOptions", {})
    if md.get("HttpTokens") != "required" or int(md.get("HttpPutResponseHopLimit", 0)) != 1:
        errors.append(f"launch template metadata options {md}")
    hooks = {h["LifecycleHookName"] for h in asg_client.describe_lifecycle_hooks(AutoScalingGroupName=outputs["AutoScalingGroupName"])["LifecycleHooks"]}
    # moto's CloudFormation ignores LifecycleHookSpecificationList (checked by cfn-lint only).
    if hooks and hooks != {"bake-launch", "bake-terminate"}:
        errors.append(f"lifecycle hooks {sorted(hooks)}")
    if not hooks:
        print("note: moto's CloudFormation ignores LifecycleHookSpecificationList (no hooks to check)")
    # Checked only where moto models the resource type (it skips the others silently).
    if "AWS::AutoScaling::ScalingPolicy" in known:
        policies = asg_client.describe_policies(AutoScalingGroupName=outputs["AutoScalingGroupName"])["ScalingPolicies"]
        if not any(p.get("PolicyType") == "TargetTrackingScaling" for p in policies):
            errors.append("no target tracking policy")
    if "AWS::CloudWatch::Alarm" in known:
        cw = client("cloudwatch", endpoint)
        alarms = cw.describe_alarms(AlarmNames=[outputs.get("CpuPeakAlarmName", "?")])["MetricAlarms"]
        if not alarms or alarms[0]["Period"] != 10 or alarms[0]["Namespace"] != "Bake/Agent":
            errors.append(f"cpu peak alarm {alarms}")
    print(f"fleet outputs in the emulator: {', '.join(sorted(outputs))}")
    for e in errors:
        print(f"FAIL: fleet in the emulator: {e}")
    print("resource types moto's CloudFormation does not model (skipped or failing there):")
    for t, parts in sorted(unknown_types.items()):
        print(f"  {t} ({', '.join(sorted(parts))})")
    print("stacks moto could not create (stand-ins used):")
    for part, reasons in unsupported.items():
        for r in reasons:
            print(f"  {part}: {r}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
