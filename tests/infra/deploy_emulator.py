"""Deploys the CloudFormation stacks into the local emulator (moto's CloudFormation).

Usage: python deploy_emulator.py ENDPOINT_URL   (run by tests/infra/run with tests/emulator/.venv)

The five stacks are created from the real templates in their real order (network, data, edge,
iam, fleet), with the exports wired through Fn::ImportValue, exactly as in AWS; the data stack
with its default engine (DbEngine postgres), and once more, with DbEngine docdb, in a second
environment (its own network and data stacks: the exports are per environment). The resource types
moto lacks are added by the emulator (tests/emulator/bake_emulator/cloudformation.py; the inert
ones are listed in docs/emulator.md). Every stack must reach CREATE_COMPLETE, and the script then
checks what the emulator now holds, not just the stack status: the Auto Scaling group (min 2, ELB
health checks, two subnets, the edge's target group, the template's lifecycle hooks and default
instance warm-up), its launch template (IMDSv2 required, hop limit 1, the image of the SSM
parameter the fleet stack is given, put first as docs/deploy.md says), the target tracking policy (ALBRequestCountPerTarget 600 on the edge's load balancer and
target group), the SNS topic, and each alarm with the template's metric, dimensions, statistic,
period, threshold, comparison and SNS actions. For each engine, the database as the emulator's
RDS/DocumentDB API describes it (Multi-AZ, 7-day backups, encrypted with the stack's key, deletion
protection, the master secret, the engine's port and no other in the database's security group,
the outputs).
Prints one line per stack and per failed check; exit 1 if any stack or check fails.
"""

import sys
import time
from pathlib import Path

import boto3
import yaml

import cfn  # tests/infra/cfn.py, next to this script
from cfn import CfnLoader

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "cloudformation"
ENV = "emu"
ENV_DOCDB = "emu-docdb"  # the second environment: network + data with DbEngine docdb
REGION = "us-east-1"
PARTS = ["network", "data", "edge", "iam", "fleet"]


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


def resolve(value, names):
    """A template value with Ref and ${Name} in Fn::Sub replaced from ``names`` (parameters with
    their defaults, logical ids with what the emulator created), for comparing with the emulator."""
    if isinstance(value, dict) and "Ref" in value:
        return names[value["Ref"]]
    if isinstance(value, dict) and "Fn::Sub" in value:
        out = value["Fn::Sub"]
        for key, val in names.items():
            out = out.replace("${" + key + "}", str(val))
        return out
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, names) for k, v in value.items()}
    return value


def check_alarms(cw, template, names, errors):
    """Every AWS::CloudWatch::Alarm of the template exists in the emulator's CloudWatch as written."""
    alarms = {logical: res["Properties"] for logical, res in template["Resources"].items() if res["Type"] == "AWS::CloudWatch::Alarm"}
    if not alarms:
        errors.append("the fleet template has no alarms")
    for logical, props in alarms.items():
        want = resolve(props, names)
        got = cw.describe_alarms(AlarmNames=[want["AlarmName"]])["MetricAlarms"]
        if len(got) != 1:
            errors.append(f"alarm {logical} ({want['AlarmName']}): not in the emulator's CloudWatch")
            continue
        got = got[0]
        for key in ["Namespace", "MetricName", "Statistic", "ComparisonOperator", "TreatMissingData"]:
            if got.get(key) != want[key]:
                errors.append(f"alarm {logical}: {key} {got.get(key)!r}, template {want[key]!r}")
        for key in ["Period", "EvaluationPeriods", "DatapointsToAlarm"]:
            if key in want and got.get(key) != int(want[key]):
                errors.append(f"alarm {logical}: {key} {got.get(key)!r}, template {want[key]!r}")
        if got["Threshold"] != float(want["Threshold"]):
            errors.append(f"alarm {logical}: Threshold {got['Threshold']!r}, template {want['Threshold']!r}")
        dims = sorted((d["Name"], d["Value"]) for d in got["Dimensions"])
        if dims != sorted((d["Name"], d["Value"]) for d in want["Dimensions"]):
            errors.append(f"alarm {logical}: Dimensions {dims}, template {want['Dimensions']}")
        for key in ["AlarmActions", "OKActions"]:
            if sorted(got.get(key, [])) != sorted(want.get(key, [])):
                errors.append(f"alarm {logical}: {key} {got.get(key)}, template {want.get(key, [])}")
        if not want["AlarmActions"] or not all(a == names["AlarmTopic"] for a in want["AlarmActions"]):
            errors.append(f"alarm {logical}: AlarmActions {want['AlarmActions']} are not the SNS topic")
        if got["StateValue"] not in ("OK", "ALARM", "INSUFFICIENT_DATA"):
            errors.append(f"alarm {logical}: state {got['StateValue']!r}")


def deploy_all(cfn, env, parts, params, outputs):
    """Creates the stacks bake-<env>-<part> in order; fills ``outputs[part]``; returns the parts
    that failed. A resource must be in the stack exactly when its Condition is true, an output
    likewise."""
    failed = []
    for part in parts:
        name = f"bake-{env}-{part}"
        body = (CFN / f"{part}.yaml").read_text()
        p = [{"ParameterKey": "EnvName", "ParameterValue": env}]
        p += [{"ParameterKey": k, "ParameterValue": v} for k, v in params[part].items()]
        try:
            cfn.create_stack(StackName=name, TemplateBody=body, Parameters=p, Capabilities=["CAPABILITY_NAMED_IAM"])
            stack = wait(cfn, name)
            status = stack["StackStatus"]
        except Exception as e:  # moto raises while creating (a model's error, a missing export)
            status, stack = f"error: {e}", None
        if status != "CREATE_COMPLETE":
            reasons = failure_reasons(cfn, name) if stack else [status]
            print(f"FAIL: {name} did not deploy into the emulator: {'; '.join(reasons)}")
            failed.append(part)
            break  # the later stacks import this one's exports
        template = yaml.load(body, Loader=CfnLoader)
        conds = cfn_conditions(template, params[part])
        created = cfn.describe_stack_resources(StackName=name)["StackResources"]
        ids = {r["LogicalResourceId"] for r in created}
        absent = [f"{r['LogicalResourceId']} ({r['ResourceType']})" for r in created if not r.get("PhysicalResourceId")]
        # moto leaves a resource type it has no model for out of the stack, silently.
        absent += [
            f"{logical} ({res['Type']}): not created"
            for logical, res in template["Resources"].items()
            if conds.get(res.get("Condition"), True) and logical not in ids
        ]
        absent += [
            f"{logical} ({res['Type']}): created, its Condition {res['Condition']} is false"
            for logical, res in template["Resources"].items()
            if not conds.get(res.get("Condition"), True) and logical in ids
        ]
        if absent:
            print(f"FAIL: {name}: resources without a physical id: {', '.join(absent)}")
            failed.append(part)
        outputs[part] = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        want = {k for k, o in template.get("Outputs", {}).items() if conds.get(o.get("Condition"), True)}
        missing = sorted(want - set(outputs[part]))
        extra = sorted(set(outputs[part]) - want)
        if missing or extra:
            print(f"FAIL: {name}: outputs missing in the emulator: {', '.join(missing)}; outputs of false conditions: {', '.join(extra)}")
            failed.append(part)
        n = sum(1 for r in template["Resources"].values() if conds.get(r.get("Condition"), True))
        print(f"deployed   {name} ({n} resources, {len(outputs[part])} outputs)")
    return failed


def cfn_conditions(template, params):
    return {None: True, **cfn.conditions(template, params)}


def check_database(endpoint, env, engine, outputs, errors):
    """The data stack's database as the emulator's RDS (postgres) or DocumentDB (docdb) API
    describes it, against what data.yaml promises; problems go to ``errors``."""
    data, network = outputs["data"], outputs["network"]
    ec2 = client("ec2", endpoint)
    key = data["DataKeyArn"]
    want_port = {"postgres": 5432, "docdb": 27017}[engine]

    def expect(what, got, want):
        if got != want:
            errors.append(f"{engine} database: {what} {got!r}, want {want!r}")

    expect("output DatabaseEngine", data.get("DatabaseEngine"), engine)
    expect("output DatabasePort", data.get("DatabasePort"), str(want_port))
    if engine == "postgres":
        db = client("rds", endpoint).describe_db_instances(DBInstanceIdentifier=f"bake-{env}")["DBInstances"][0]
        expect("Engine", db["Engine"], "postgres")
        expect("MultiAZ", db["MultiAZ"], True)
        expect("BackupRetentionPeriod", db["BackupRetentionPeriod"], 7)
        expect("StorageEncrypted", db["StorageEncrypted"], True)
        expect("KmsKeyId", db.get("KmsKeyId"), key)
        expect("DeletionProtection", db["DeletionProtection"], True)
        expect("Endpoint", db["Endpoint"]["Address"], data["DatabaseEndpoint"])
        expect("Port", db["Endpoint"]["Port"], want_port)
        expect("MasterUserSecret", (db.get("MasterUserSecret") or {}).get("SecretArn"), data.get("DatabaseMasterSecretArn"))
        subnets = {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]}
        groups = [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]]
        template = data["DatabaseConnectionStringTemplate"]
        expect("connection string template", template,
               f"postgres://APP_USER:APP_PASSWORD@{db['Endpoint']['Address']}:5432/APP_DATABASE?sslmode=verify-full")
    else:
        docdb = client("docdb", endpoint)
        cluster = docdb.describe_db_clusters(DBClusterIdentifier=f"bake-{env}")["DBClusters"][0]
        expect("Engine", cluster["Engine"], "docdb")
        expect("BackupRetentionPeriod", cluster["BackupRetentionPeriod"], 7)
        expect("StorageEncrypted", cluster["StorageEncrypted"], True)
        expect("KmsKeyId", cluster.get("KmsKeyId"), key)
        expect("DeletionProtection", cluster["DeletionProtection"], True)
        expect("Endpoint", cluster["Endpoint"], data["DatabaseEndpoint"])
        expect("ReaderEndpoint", cluster["ReaderEndpoint"], data["DatabaseReaderEndpoint"])
        expect("Port", cluster["Port"], want_port)
        expect("EnabledCloudwatchLogsExports", sorted(cluster.get("EnabledCloudwatchLogsExports", [])), ["audit", "profiler"])
        secret = (cluster.get("MasterUserSecret") or {}).get("SecretArn")
        if not secret:
            errors.append(f"docdb database: no MasterUserSecret (ManageMasterUserPassword): {cluster}")
        else:
            described = client("secretsmanager", endpoint).describe_secret(SecretId=secret)
            expect("master secret's KmsKeyId", described.get("KmsKeyId"), key)
        members = docdb.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": [cluster["DBClusterIdentifier"]]}])["DBInstances"]
        expect("instances", len(members), 2)
        azs = {m["AvailabilityZone"] for m in members}
        expect("instances' AZs distinct", len(azs), len(members))
        expect("instances' engine", {m["Engine"] for m in members}, {"docdb"})
        expect("instances' port", {m["Endpoint"]["Port"] for m in members}, {want_port})
        expect("instances' cluster", {m["DBClusterIdentifier"] for m in members}, {cluster["DBClusterIdentifier"]})
        group = docdb.describe_db_subnet_groups(DBSubnetGroupName=cluster["DBSubnetGroup"])["DBSubnetGroups"][0]
        subnets = {s["SubnetIdentifier"] for s in group["Subnets"]}
        expect("subnet group's AZs cover the instances'", azs <= {s["SubnetAvailabilityZone"]["Name"] for s in group["Subnets"]}, True)
        groups = [g["VpcSecurityGroupId"] for g in cluster["VpcSecurityGroups"]]
        params = docdb.describe_db_cluster_parameters(DBClusterParameterGroupName=cluster["DBClusterParameterGroup"])["Parameters"]
        values = {q["ParameterName"]: q.get("ParameterValue") for q in params}
        expect("parameter tls", values.get("tls"), "enabled")
        expect("parameter audit_logs", values.get("audit_logs"), "enabled")
        template = data["DatabaseConnectionStringTemplate"]
        expect(
            "connection string template",
            template,
            f"mongodb://APP_USER:APP_PASSWORD@{cluster['Endpoint']}:27017/?tls=true&tlsCAFile=global-bundle.pem"
            "&replicaSet=rs0&readPreference=secondaryPreferred&retryWrites=false",
        )
    expect("subnets", subnets, set(network["PrivateSubnetIds"].split(",")))
    expect("security groups", len(groups), 1)
    sg = ec2.describe_security_groups(GroupIds=groups[:1])["SecurityGroups"][0]
    rules = [
        (r["IpProtocol"], r.get("FromPort"), r.get("ToPort"), sorted(g["GroupId"] for g in r.get("UserIdGroupPairs", [])), r.get("IpRanges", []))
        for r in sg["IpPermissions"]
    ]
    expect("database ingress", rules, [("tcp", want_port, want_port, [data["AppSecurityGroupId"]], [])])
    if not [e for e in errors if e.startswith(f"{engine} ")]:
        print(f"checked    {engine} database of bake-{env}: {data['DatabaseEndpoint']}:{want_port}")


def main():
    endpoint = sys.argv[1]
    cfn = client("cloudformation", endpoint)
    ec2 = client("ec2", endpoint)
    images = [i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"][:2]]
    image_id = images[0]
    # The fleet's image comes from an SSM parameter (fleet.yaml ImageParameter), put once before
    # the stack as docs/deploy.md says. moto also resolves the parameter's Default
    # (/bake/prod/image-id) when the stack is given another name, so that one must exist too: it
    # holds a different image, and the launch template must get the emulator environment's.
    ssm = client("ssm", endpoint)
    image_parameter = f"/bake/{ENV}/image-id"
    for name, image in [(image_parameter, image_id), ("/bake/prod/image-id", images[1])]:
        ssm.put_parameter(Name=name, Type="String", DataType="aws:ec2:image", Value=image, Overwrite=True)
    # The edge stack takes an existing hosted zone (docs/deploy.md), made here as on AWS.
    zone = client("route53", endpoint).create_hosted_zone(Name="example.org", CallerReference=f"bake-{ENV}")
    zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
    params = {
        "network": {"InterfaceEndpoints": "true"},  # the opt-in endpoints too
        "data": {},
        "edge": {"HostedZoneId": zone_id, "DomainName": "app.example.org"},
        "iam": {"GitHubRepository": "example/bake"},
        "fleet": {"ImageParameter": image_parameter, "AlarmEmail": "ops@example.org"},
    }
    outputs = {}
    failed = deploy_all(cfn, ENV, PARTS, params, outputs)
    # The DocumentDB variant of the data stack, in an environment of its own.
    docdb_outputs = {}
    failed += deploy_all(
        cfn, ENV_DOCDB, ["network", "data"], {"network": {}, "data": {"DbEngine": "docdb"}}, docdb_outputs
    )
    if failed:
        return 1

    # What the emulator now holds.
    asg_client = client("autoscaling", endpoint)
    elbv2 = client("elbv2", endpoint)
    cw = client("cloudwatch", endpoint)
    sns = client("sns", endpoint)
    fleet = outputs["fleet"]
    edge = outputs["edge"]
    template = yaml.load((CFN / "fleet.yaml").read_text(), Loader=CfnLoader)
    errors = []
    group = fleet["AutoScalingGroupName"]
    asgs = asg_client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    if not asgs:
        errors.append(f"no auto scaling group {group}")
    else:
        asg = asgs[0]
        if asg["MinSize"] < 2:
            errors.append(f"MinSize {asg['MinSize']} < 2")
        if asg["HealthCheckType"] != "ELB":
            errors.append(f"HealthCheckType {asg['HealthCheckType']}")
        if len(asg["VPCZoneIdentifier"].split(",")) != 2:
            errors.append(f"subnets {asg['VPCZoneIdentifier']}")
        if asg.get("TargetGroupARNs") != [edge["TargetGroupArn"]]:
            errors.append(f"target groups {asg.get('TargetGroupARNs')}, edge exports {edge['TargetGroupArn']}")
    hooks = {
        h["LifecycleHookName"]: (h["LifecycleTransition"], h["HeartbeatTimeout"], h["DefaultResult"])
        for h in asg_client.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
    }
    want_hooks = {
        h["LifecycleHookName"]: (h["LifecycleTransition"], int(h["HeartbeatTimeout"]), h["DefaultResult"])
        for h in template["Resources"]["Fleet"]["Properties"]["LifecycleHookSpecificationList"]
    }
    if hooks != want_hooks or set(hooks) != {fleet["LaunchHookName"], fleet["TerminateHookName"]}:
        errors.append(f"lifecycle hooks {hooks}, template {want_hooks}")
    if asgs and asgs[0].get("DefaultInstanceWarmup") != int(template["Resources"]["Fleet"]["Properties"]["DefaultInstanceWarmup"]):
        errors.append(f"DefaultInstanceWarmup {asgs[0].get('DefaultInstanceWarmup')}")
    # network.yaml's endpoints (InterfaceEndpoints=true): S3 gateway + six interface endpoints.
    vpc_id = [o["OutputValue"] for o in cfn.describe_stacks(StackName=f"bake-{ENV}-network")["Stacks"][0]["Outputs"] if o["OutputKey"] == "VpcId"][0]
    eps = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    kinds = sorted((e["ServiceName"].rsplit(".", 1)[1], e["VpcEndpointType"]) for e in eps)
    want = sorted([("s3", "Gateway")] + [(s, "Interface") for s in ("autoscaling", "ec2messages", "logs", "monitoring", "ssm", "ssmmessages")])
    if kinds != want:
        errors.append(f"VPC endpoints {kinds}, expected {want}")
    else:
        print(f"network in the emulator: {len(eps)} VPC endpoints ({', '.join(k for k, _ in kinds)})")
    lt = ec2.describe_launch_template_versions(LaunchTemplateId=fleet["LaunchTemplateId"])["LaunchTemplateVersions"][0]
    md = lt["LaunchTemplateData"].get("MetadataOptions", {})
    if md.get("HttpTokens") != "required" or int(md.get("HttpPutResponseHopLimit", 0)) != 1:
        errors.append(f"launch template metadata options {md}")
    if lt["LaunchTemplateData"].get("ImageId") != image_id:
        errors.append(f"launch template image {lt['LaunchTemplateData'].get('ImageId')!r}, SSM parameter {image_parameter} holds {image_id!r}")
    else:
        print(f"fleet in the emulator: launch template image {image_id} from SSM parameter {image_parameter}")

    # The edge's load balancer and target group are real, and their full names are what the
    # scaling policy's ResourceLabel is made of.
    lbs = elbv2.describe_load_balancers()["LoadBalancers"]
    lb = [b for b in lbs if b["LoadBalancerArn"].endswith("/" + edge["LoadBalancerFullName"])]
    tgs = elbv2.describe_target_groups(TargetGroupArns=[edge["TargetGroupArn"]])["TargetGroups"]
    if len(lb) != 1:
        errors.append(f"no load balancer named {edge['LoadBalancerFullName']} (have {[b['LoadBalancerArn'] for b in lbs]})")
    if not edge["TargetGroupArn"].endswith(":" + edge["TargetGroupFullName"]) or len(tgs) != 1:
        errors.append(f"target group {edge['TargetGroupArn']} / {edge['TargetGroupFullName']}")

    # Target tracking on requests per target (R11).
    policies = asg_client.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
    tracking = [p for p in policies if p.get("PolicyType") == "TargetTrackingScaling"]
    want_target = float(template["Parameters"]["RequestsPerTargetPerMinute"]["Default"])
    if want_target != 10 * 60:
        errors.append(f"RequestsPerTargetPerMinute default {want_target}: R11 is 10 req/s per instance = 600 per minute")
    if len(tracking) != 1:
        errors.append(f"target tracking policies {policies}")
    else:
        cfg = tracking[0]["TargetTrackingConfiguration"]
        spec = cfg.get("PredefinedMetricSpecification", {})
        label = f"{edge['LoadBalancerFullName']}/{edge['TargetGroupFullName']}"
        if spec.get("PredefinedMetricType") != "ALBRequestCountPerTarget":
            errors.append(f"scaling policy metric {spec}")
        if spec.get("ResourceLabel") != label:
            errors.append(f"scaling policy ResourceLabel {spec.get('ResourceLabel')!r}, want {label!r}")
        if cfg.get("TargetValue") != want_target:
            errors.append(f"scaling policy TargetValue {cfg.get('TargetValue')}, want {want_target}")

    # The SNS topic the alarms and the group's notifications go to, and its subscription.
    topic = fleet["AlarmTopicArn"]
    attrs = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    if not attrs.get("KmsMasterKeyId"):
        errors.append(f"alarm topic {topic} is not encrypted: {attrs}")
    subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    if [(s["Protocol"], s["Endpoint"]) for s in subs] != [("email", params["fleet"]["AlarmEmail"])]:
        errors.append(f"alarm topic subscriptions {subs}")

    names = {k: v["Default"] for k, v in template["Parameters"].items() if "Default" in v}
    names.update({"EnvName": ENV, "Fleet": group, "AlarmTopic": topic})
    check_alarms(cw, template, names, errors)
    if fleet.get("CpuPeakAlarmName") != f"bake-{ENV}-cpu-peak":
        errors.append(f"output CpuPeakAlarmName {fleet.get('CpuPeakAlarmName')!r}")
    rollback = fleet.get("RollbackAlarmNames", "").split(",")
    if len(cw.describe_alarms(AlarmNames=rollback)["MetricAlarms"]) != len(rollback) or len(rollback) < 2:
        errors.append(f"output RollbackAlarmNames {rollback}: not all alarms in the emulator")

    db_errors = []
    check_database(endpoint, ENV, "postgres", outputs, db_errors)
    check_database(endpoint, ENV_DOCDB, "docdb", docdb_outputs, db_errors)
    for e in db_errors:
        print(f"FAIL: data in the emulator: {e}")

    for e in errors:
        print(f"FAIL: fleet in the emulator: {e}")
    if not errors:
        print(f"checked    fleet: group, launch template, target tracking, SNS topic, {len(cw.describe_alarms()['MetricAlarms'])} alarms")
    return 1 if errors or db_errors else 0


if __name__ == "__main__":
    sys.exit(main())
