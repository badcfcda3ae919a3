"""Amazon DocumentDB in the emulator's CloudFormation (bake_emulator/cloudformation.py), checked
against the AWS CloudFormation resource reference of AWS::DocDB::DBCluster, DBInstance,
DBSubnetGroup and DBClusterParameterGroup ("Return values": what Ref and Fn::GetAtt give) and
against the DocumentDB API's view of what was created (DescribeDBClusters, DescribeDBInstances,
DescribeDBSubnetGroups, DescribeDBClusterParameters of the docdb client). Also what data.yaml
relies on besides: a resource whose Condition is false is not in the stack, and an
AWS::RDS::DBInstance gets its engine's port, its VPCSecurityGroups and DeletionProtection.

moto 5.2.5 alone has no AWS::DocDB::* types (the stack completes without them, a Ref to them
breaks it) and no engine docdb, so every DocumentDB test here fails on moto alone.
"""

import json
import re

VPC = {
    "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.8.0.0/16"}},
    "SubnetA": {
        "Type": "AWS::EC2::Subnet",
        "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.8.1.0/24", "AvailabilityZone": "us-east-1a"},
    },
    "SubnetB": {
        "Type": "AWS::EC2::Subnet",
        "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.8.2.0/24", "AvailabilityZone": "us-east-1b"},
    },
    "DbGroup": {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {"GroupDescription": "db", "VpcId": {"Ref": "Vpc"}},
    },
    "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Version": "2012-10-17", "Statement": []}}},
}

DOCDB = {
    "Subnets": {
        "Type": "AWS::DocDB::DBSubnetGroup",
        "Properties": {
            "DBSubnetGroupName": "Docs-Subnets",
            "DBSubnetGroupDescription": "two AZs",
            "SubnetIds": [{"Ref": "SubnetA"}, {"Ref": "SubnetB"}],
        },
    },
    "Parameters": {
        "Type": "AWS::DocDB::DBClusterParameterGroup",
        "Properties": {
            "Name": "docs-params",
            "Family": "docdb5.0",
            "Description": "tls",
            "Parameters": {"tls": "enabled", "audit_logs": "enabled"},
        },
    },
    "Cluster": {
        "Type": "AWS::DocDB::DBCluster",
        "Properties": {
            "DBClusterIdentifier": "Docs-Cluster",
            "EngineVersion": "5.0.0",
            "MasterUsername": "admin1",
            "ManageMasterUserPassword": True,
            "MasterUserSecretKmsKeyId": {"Fn::GetAtt": ["Key", "Arn"]},
            "StorageEncrypted": True,
            "KmsKeyId": {"Fn::GetAtt": ["Key", "Arn"]},
            "BackupRetentionPeriod": 7,
            "DeletionProtection": True,
            "DBSubnetGroupName": {"Ref": "Subnets"},
            "DBClusterParameterGroupName": {"Ref": "Parameters"},
            "VpcSecurityGroupIds": [{"Ref": "DbGroup"}],
            "EnableCloudwatchLogsExports": ["audit"],
        },
    },
    "InstanceA": {
        "Type": "AWS::DocDB::DBInstance",
        "Properties": {
            "DBClusterIdentifier": {"Ref": "Cluster"},
            "DBInstanceIdentifier": "docs-a",
            "DBInstanceClass": "db.t4g.medium",
            "AvailabilityZone": "us-east-1a",
        },
    },
    "InstanceB": {
        "Type": "AWS::DocDB::DBInstance",
        "Properties": {
            "DBClusterIdentifier": {"Ref": "Cluster"},
            "DBInstanceIdentifier": "docs-b",
            "DBInstanceClass": "db.t4g.medium",
            "AvailabilityZone": "us-east-1b",
        },
    },
}


def deploy(emu, resources, outputs, name="cfn-docdb", conditions=None):
    cfn = emu.client("cloudformation")
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources, "Outputs": outputs}
    if conditions:
        body["Conditions"] = conditions
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body))
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    created = {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}, created


def test_docdb_cluster_instances_and_groups_have_their_return_values_and_exist(emulator_factory):
    emu = emulator_factory()
    outputs = {
        "ClusterRef": {"Value": {"Ref": "Cluster"}},
        "Endpoint": {"Value": {"Fn::GetAtt": ["Cluster", "Endpoint"]}},
        "ReadEndpoint": {"Value": {"Fn::GetAtt": ["Cluster", "ReadEndpoint"]}},
        "Port": {"Value": {"Fn::GetAtt": ["Cluster", "Port"]}},
        "ResourceId": {"Value": {"Fn::GetAtt": ["Cluster", "ClusterResourceId"]}},
        "InstanceRef": {"Value": {"Ref": "InstanceA"}},
        "InstanceEndpoint": {"Value": {"Fn::GetAtt": ["InstanceA", "Endpoint"]}},
        "InstancePort": {"Value": {"Fn::GetAtt": ["InstanceB", "Port"]}},
        "SubnetsRef": {"Value": {"Ref": "Subnets"}},
        "ParametersRef": {"Value": {"Ref": "Parameters"}},
        "KeyArn": {"Value": {"Fn::GetAtt": ["Key", "Arn"]}},
    }
    out, created = deploy(emu, {**VPC, **DOCDB}, outputs)
    assert set(created) == set(VPC) | set(DOCDB), "moto left resources out of the stack"
    for logical in DOCDB:
        assert created[logical]["PhysicalResourceId"], created[logical]

    # "Ref returns the cluster identifier" (stored lowercase, as every DocumentDB identifier);
    # Endpoint "such as sample-cluster.cluster-cozrlsfrcjoc.us-east-1.docdb.amazonaws.com",
    # Port "For example: 27017".
    assert out["ClusterRef"] == "docs-cluster"
    assert re.fullmatch(r"docs-cluster\.cluster-[a-z0-9]+\.us-east-1\.docdb\.amazonaws\.com", out["Endpoint"]), out
    assert re.fullmatch(r"docs-cluster\.cluster-ro-[a-z0-9]+\.us-east-1\.docdb\.amazonaws\.com", out["ReadEndpoint"]), out
    assert out["Port"] == "27017"
    assert out["ResourceId"].startswith("cluster-"), out
    # DBInstance: "Ref returns the instance identifier"; Endpoint and Port of the instance.
    assert out["InstanceRef"] == "docs-a"
    assert re.fullmatch(r"docs-a\.[a-z0-9]+\.us-east-1\.docdb\.amazonaws\.com", out["InstanceEndpoint"]), out
    assert out["InstancePort"] == "27017"
    # DBSubnetGroup: "Ref returns the name of the subnet group"; DBClusterParameterGroup:
    # "Ref returns the cluster parameter group name".
    assert out["SubnetsRef"] == "docs-subnets"
    assert out["ParametersRef"] == "docs-params"

    docdb = emu.client("docdb")
    cluster = docdb.describe_db_clusters(DBClusterIdentifier="docs-cluster")["DBClusters"][0]
    assert cluster["Engine"] == "docdb"
    assert cluster["EngineVersion"] == "5.0.0"
    assert cluster["Port"] == 27017
    assert cluster["Endpoint"] == out["Endpoint"]
    assert cluster["ReaderEndpoint"] == out["ReadEndpoint"]
    assert cluster["MasterUsername"] == "admin1"
    assert cluster["StorageEncrypted"] is True
    assert cluster["KmsKeyId"] == out["KeyArn"]
    assert cluster["BackupRetentionPeriod"] == 7
    assert cluster["DeletionProtection"] is True
    assert cluster["DBSubnetGroup"] == "docs-subnets"
    assert cluster["DBClusterParameterGroup"] == "docs-params"
    assert [g["VpcSecurityGroupId"] for g in cluster["VpcSecurityGroups"]] == [created["DbGroup"]["PhysicalResourceId"]]
    assert cluster["EnabledCloudwatchLogsExports"] == ["audit"]
    assert sorted(m["DBInstanceIdentifier"] for m in cluster["DBClusterMembers"]) == ["docs-a", "docs-b"]
    # ManageMasterUserPassword: the password is a secret of Secrets Manager, under the given key.
    secret = cluster["MasterUserSecret"]
    assert secret["SecretArn"].startswith("arn:aws:secretsmanager:us-east-1:"), secret
    described = emu.client("secretsmanager").describe_secret(SecretId=secret["SecretArn"])
    assert described["KmsKeyId"] == out["KeyArn"], described
    password = json.loads(emu.client("secretsmanager").get_secret_value(SecretId=secret["SecretArn"])["SecretString"])
    assert password["username"] == "admin1" and password["password"], "the secret holds the master user and a password"

    instances = docdb.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": ["docs-cluster"]}])["DBInstances"]
    by_id = {i["DBInstanceIdentifier"]: i for i in instances}
    assert set(by_id) == {"docs-a", "docs-b"}
    assert by_id["docs-a"]["AvailabilityZone"] == "us-east-1a"
    assert by_id["docs-b"]["AvailabilityZone"] == "us-east-1b"
    for i in instances:
        assert i["Engine"] == "docdb" and i["DBInstanceClass"] == "db.t4g.medium", i
        assert i["Endpoint"]["Port"] == 27017, i
        assert i["DBClusterIdentifier"] == "docs-cluster", i
    assert by_id["docs-a"]["Endpoint"]["Address"] == out["InstanceEndpoint"]

    group = docdb.describe_db_subnet_groups(DBSubnetGroupName="docs-subnets")["DBSubnetGroups"][0]
    assert sorted(s["SubnetAvailabilityZone"]["Name"] for s in group["Subnets"]) == ["us-east-1a", "us-east-1b"]
    params = docdb.describe_db_cluster_parameters(DBClusterParameterGroupName="docs-params")["Parameters"]
    assert {p["ParameterName"]: p["ParameterValue"] for p in params} == {"tls": "enabled", "audit_logs": "enabled"}


def test_docdb_instance_of_an_unknown_cluster_fails_the_stack(emulator_factory):
    """CreateDBInstance: "DBClusterNotFoundFault: DBClusterIdentifier doesn't refer to an
    existing cluster" (DocumentDB API reference)."""
    emu = emulator_factory()
    cfn = emu.client("cloudformation")
    orphan = {**DOCDB["InstanceA"], "Properties": {**DOCDB["InstanceA"]["Properties"], "DBClusterIdentifier": "no-such-cluster"}}
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Orphan": orphan}}
    try:
        cfn.create_stack(StackName="cfn-orphan", TemplateBody=json.dumps(body))
        status = cfn.describe_stacks(StackName="cfn-orphan")["Stacks"][0]["StackStatus"]
    except Exception as e:  # moto raises while creating
        status = f"error: {e}"
    assert status != "CREATE_COMPLETE"
    assert emu.client("docdb").describe_db_instances()["DBInstances"] == []


def test_a_resource_whose_condition_is_false_is_not_in_the_stack(emulator_factory):
    """"If a resource's condition evaluates to false, CloudFormation doesn't create the
    resource" (Conditions section reference): DescribeStackResources does not list it (moto
    listed it as an entry without a logical id)."""
    emu = emulator_factory()
    resources = {
        "Kept": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "kept"}},
        "Skipped": {"Type": "AWS::SNS::Topic", "Condition": "Never", "Properties": {"TopicName": "skipped"}},
    }
    out, created = deploy(
        emu,
        resources,
        {"Kept": {"Value": {"Ref": "Kept"}}, "Skipped": {"Condition": "Never", "Value": {"Ref": "Skipped"}}},
        conditions={"Never": {"Fn::Equals": ["a", "b"]}},
    )
    assert set(created) == {"Kept"}, created
    assert set(out) == {"Kept"}
    topics = [t["TopicArn"] for t in emu.client("sns").list_topics()["Topics"]]
    assert [t.rsplit(":", 1)[1] for t in topics] == ["kept"]


def test_rds_instance_gets_its_engines_port_security_groups_and_deletion_protection(emulator_factory):
    """AWS::RDS::DBInstance: "VPCSecurityGroups: A list of the VPC security group IDs to assign
    to the DB instance", DeletionProtection, and without Port the engine's default
    (CreateDBInstance: "PostgreSQL Default: 5432"); moto's model took 3306, no groups and no
    protection."""
    emu = emulator_factory()
    db = {
        "Type": "AWS::RDS::DBInstance",
        "Properties": {
            "DBInstanceIdentifier": "pg",
            "Engine": "postgres",
            "DBInstanceClass": "db.t4g.medium",
            "AllocatedStorage": "20",
            "MasterUsername": "admin1",
            "ManageMasterUserPassword": True,
            "VPCSecurityGroups": [{"Ref": "DbGroup"}],
            "DeletionProtection": True,
        },
    }
    out, created = deploy(emu, {**VPC, "Db": db}, {"Port": {"Value": {"Fn::GetAtt": ["Db", "Endpoint.Port"]}}})
    assert out["Port"] == "5432"
    got = emu.client("rds").describe_db_instances(DBInstanceIdentifier="pg")["DBInstances"][0]
    assert got["Endpoint"]["Port"] == 5432
    assert [g["VpcSecurityGroupId"] for g in got["VpcSecurityGroups"]] == [created["DbGroup"]["PhysicalResourceId"]]
    assert got["DeletionProtection"] is True
