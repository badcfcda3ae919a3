"""CloudFormation resource types and attributes moto 5.2.5 lacks, so that bake's five stacks
(cloudformation/*.yaml) deploy into the emulator from the real templates.

moto's CloudFormation finds a resource type's model among the direct subclasses of
``CloudFormationModel`` (``moto.cloudformation.parsing.get_model_map``, cached); a type it does not
find is skipped with a warning (the stack still completes, without it), and a Ref/GetAtt to it
then breaks the stack. The classes below register by being defined (importing this module);
``install`` adds the inert ones, patches the attributes and clears moto's caches.

- With their behaviour, because the product relies on it (moto's own backends do the work):
  ``AWS::CloudWatch::Alarm`` (a real alarm in the emulator's CloudWatch, evaluated and running its
  SNS actions, see ``cloudwatch``), ``AWS::AutoScaling::ScalingPolicy`` (recorded in moto's Auto
  Scaling backend, DescribePolicies lists it), ``AWS::SNS::Subscription`` (a real subscription),
  ``AWS::CertificateManager::Certificate`` (in moto's ACM, where moto's listener looks it up),
  ``AWS::DocDB::DBCluster``, ``DBInstance``, ``DBSubnetGroup``, ``DBClusterParameterGroup`` (in
  moto's RDS backend, whose API DocumentDB's is, with the engine ``docdb`` added).
- Created but inert (``INERT``): a physical id, Ref and the GetAtt attributes later stacks use,
  and nothing else, each with the reason nothing more is needed (docs/emulator.md lists them).

Also what moto's existing models lack: an Auto Scaling group's ``LifecycleHookSpecificationList``
and ``DefaultInstanceWarmup``, a target group's ``TargetGroupFullName``, a load
balancer's ``LoadBalancerFullName`` and ``CanonicalHostedZoneID``, an EFS access point's ``Arn``
and Ref, Ref of an RDS parameter or subnet group and of a security group ingress rule, an RDS
instance's ``MasterUserSecret.SecretArn`` (with ``ManageMasterUserPassword``, which moto's
CloudFormation ignores), its engine's default port, ``VPCSecurityGroups`` and
``DeletionProtection``; a managed master secret with the master user's name; a resource whose
Condition is false left out of the stack's resources; and ``!GetAtt A.B.C`` read as attribute
``B.C`` of ``A``, as AWS does.
"""

from __future__ import annotations

import uuid
from typing import Any

from moto.autoscaling import models as as_models
from moto.autoscaling.models import autoscaling_backends
from moto.cloudformation import parsing
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.ec2.models import security_groups as ec2_sg_models
from moto.efs import models as efs_models
from moto.elbv2 import models as elbv2_models
from moto.rds import models as rds_models
from moto.sns.models import sns_backends
from moto.utilities.utils import get_partition

from . import autoscaling

_installed = False


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class _RefAndAttributes:
    """Ref and Fn::GetAtt read from instance attributes: ``REF`` names the one Ref returns (the
    physical id), ``ATTRS`` maps each GetAtt attribute to one. A mixin, not a base class: moto
    finds models among the *direct* subclasses of ``CloudFormationModel``."""

    REF = "arn"
    ATTRS: dict[str, str] = {}

    @property
    def physical_resource_id(self) -> str:
        return getattr(self, self.REF)

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRS

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        if attribute_name in self.ATTRS:
            return getattr(self, self.ATTRS[attribute_name])
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()


# --------------------------------------------------------------------------------------------
# Types with behaviour
# --------------------------------------------------------------------------------------------


class CfnAlarm(_RefAndAttributes, CloudFormationModel):
    """AWS::CloudWatch::Alarm: "Ref returns the alarm name"; "Fn::GetAtt ... Arn: The ARN of the
    CloudWatch alarm" (AWS CloudFormation resource reference). Created with PutMetricAlarm on the
    emulator's CloudWatch, so it is evaluated and its actions published like any other alarm."""

    REF = "name"
    ATTRS = {"Arn": "arn"}

    def __init__(self, name: str, arn: str) -> None:
        self.name = name
        self.arn = arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnAlarm:
        p = cloudformation_json.get("Properties", {})
        backend = cloudwatch_backends[account_id][region_name]
        with autoscaling._cond:  # noqa: SLF001 - the emulator's one lock
            alarm = backend.put_metric_alarm(
                name=resource_name,
                namespace=p.get("Namespace"),
                metric_name=p.get("MetricName"),
                comparison_operator=p["ComparisonOperator"],
                evaluation_periods=int(p["EvaluationPeriods"]),
                period=_int(p.get("Period")),
                threshold=_float(p.get("Threshold")),
                statistic=p.get("Statistic"),
                description=p.get("AlarmDescription"),
                dimensions=[{"Name": d["Name"], "Value": d["Value"]} for d in p.get("Dimensions", [])],
                alarm_actions=p.get("AlarmActions", []),
                datapoints_to_alarm=_int(p.get("DatapointsToAlarm")),
                extended_statistic=p.get("ExtendedStatistic"),
                ok_actions=p.get("OKActions", []),
                insufficient_data_actions=p.get("InsufficientDataActions", []),
                unit=p.get("Unit"),
                actions_enabled=str(p.get("ActionsEnabled", True)).lower() == "true",
                treat_missing_data=p.get("TreatMissingData"),
                evaluate_low_sample_count_percentile=p.get("EvaluateLowSampleCountPercentile"),
                threshold_metric_id=p.get("ThresholdMetricId"),
                tags=p.get("Tags"),
            )
        return cls(resource_name, alarm.alarm_arn)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        with autoscaling._cond:  # noqa: SLF001
            cloudwatch_backends[account_id][region_name].delete_alarms([resource_name])

    def delete(self, account_id: str, region_name: str) -> None:
        self.delete_from_cloudformation_json(self.name, {}, account_id, region_name)


class CfnScalingPolicy(_RefAndAttributes, CloudFormationModel):
    """AWS::AutoScaling::ScalingPolicy: "Ref returns the policy ARN"; "Fn::GetAtt ... Arn: The ARN
    of the AutoScaling scaling policy" and "PolicyName: The name of the AutoScaling scaling policy"
    (AWS CloudFormation resource reference). Recorded with PutScalingPolicy in moto's Auto Scaling
    backend; the emulator does not scale on it (no ALB request metrics exist locally)."""

    REF = "arn"
    ATTRS = {"Arn": "arn", "PolicyName": "name"}

    def __init__(self, name: str, arn: str) -> None:
        self.name = name
        self.arn = arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "PolicyName"  # not a template property: CloudFormation generates the name

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::AutoScaling::ScalingPolicy"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnScalingPolicy:
        p = cloudformation_json.get("Properties", {})
        tracking = dict(p.get("TargetTrackingConfiguration") or {})
        if "TargetValue" in tracking:
            tracking["TargetValue"] = float(tracking["TargetValue"])
        if "DisableScaleIn" in tracking:
            tracking["DisableScaleIn"] = str(tracking["DisableScaleIn"]).lower() == "true"
        with autoscaling._cond:  # noqa: SLF001
            policy = autoscaling_backends[account_id][region_name].put_scaling_policy(
                name=resource_name,
                policy_type=p.get("PolicyType", "SimpleScaling"),
                metric_aggregation_type=p.get("MetricAggregationType"),
                adjustment_type=p.get("AdjustmentType"),
                as_name=p["AutoScalingGroupName"],
                min_adjustment_magnitude=p.get("MinAdjustmentMagnitude"),
                scaling_adjustment=_int(p.get("ScalingAdjustment")),
                cooldown=_int(p.get("Cooldown")),
                target_tracking_config=tracking,
                step_adjustments=p.get("StepAdjustments", []),
                estimated_instance_warmup=p.get("EstimatedInstanceWarmup"),
                predictive_scaling_configuration=p.get("PredictiveScalingConfiguration", {}),
            )
        return cls(resource_name, policy.arn)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        with autoscaling._cond:  # noqa: SLF001
            autoscaling_backends[account_id][region_name].delete_policy(resource_name)


class CfnSubscription(_RefAndAttributes, CloudFormationModel):
    """AWS::SNS::Subscription: "Ref returns the ARN of the subscription" (AWS CloudFormation
    resource reference). A real subscription on moto's SNS topic (an email one stays pending
    confirmation there too; nothing is sent)."""

    REF = "arn"
    ATTRS = {"Arn": "arn"}

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnSubscription:
        p = cloudformation_json.get("Properties", {})
        backend = sns_backends[account_id][region_name]
        sub = backend.subscribe(p["TopicArn"], p["Endpoint"], p["Protocol"])
        return cls(sub.arn)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


class CfnCertificate(_RefAndAttributes, CloudFormationModel):
    """AWS::CertificateManager::Certificate: "Ref returns the certificate's ARN" (AWS
    CloudFormation resource reference). Requested from moto's ACM, since moto's load balancer
    listener looks its certificate up there; no validation or TLS happens locally."""

    REF = "arn"
    ATTRS = {}

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CertificateManager::Certificate"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnCertificate:
        from moto.acm.models import acm_backends

        p = cloudformation_json.get("Properties", {})
        arn = acm_backends[account_id][region_name].request_certificate(
            p["DomainName"], None, p.get("SubjectAlternativeNames") or [], p.get("Tags") or []
        )
        return cls(arn)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Amazon DocumentDB: moto has its API (the RDS one, which DocumentDB's API is: the docdb client
# signs for "rds"), but no engine "docdb" and no AWS::DocDB::* types. The types below create the
# resources in moto's RDS backend, so DescribeDBClusters/DescribeDBInstances (docdb or rds
# client) show them; ``_allow_docdb`` adds the engine.
# --------------------------------------------------------------------------------------------

DOCDB_ENGINE = "docdb"
DOCDB_PORT = 27017  # "Default: 27017" (CreateDBCluster Port, DocumentDB API reference)
DOCDB_VERSION = "5.0.0"


def _rds(account_id: str, region_name: str) -> Any:
    return rds_models.rds_backends[account_id][region_name]


def _bool(value: Any, default: bool = False) -> bool:
    return default if value is None else str(value).lower() == "true"


def _lower_name(name: str) -> str:
    """DocumentDB stores identifiers and group names "as a lowercase string" (API reference)."""
    return name.lower()


class CfnDocDBCluster(_RefAndAttributes, CloudFormationModel):
    """AWS::DocDB::DBCluster: "Ref returns the cluster identifier"; Fn::GetAtt "ClusterResourceId",
    "Endpoint: The connection endpoint for the cluster, such as
    sample-cluster.cluster-cozrlsfrcjoc.us-east-1.docdb.amazonaws.com", "Port: The port number
    on which the cluster accepts connections. For example: 27017", "ReadEndpoint" (AWS
    CloudFormation resource reference). A cluster of engine docdb in moto's RDS backend, with
    ManageMasterUserPassword's secret in moto's Secrets Manager. Deleting the stack leaves it (a
    cluster with DeletionProtection cannot be deleted on AWS either)."""

    REF = "identifier"
    ATTRS = {"ClusterResourceId": "resource_id", "Endpoint": "endpoint", "Port": "port", "ReadEndpoint": "read_endpoint"}

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.identifier = cluster.db_cluster_identifier
        self.resource_id = cluster.db_cluster_resource_id
        self.endpoint = cluster.endpoint
        self.read_endpoint = cluster.reader_endpoint
        self.port = str(cluster.port)  # GetAtt values are strings

    @staticmethod
    def cloudformation_name_type() -> str:
        return "DBClusterIdentifier"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::DocDB::DBCluster"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnDocDBCluster:
        p = cloudformation_json.get("Properties", {})
        args: dict[str, Any] = {
            "db_cluster_identifier": _lower_name(resource_name),
            "engine": DOCDB_ENGINE,
            "engine_version": p.get("EngineVersion") or DOCDB_VERSION,
            "port": int(p.get("Port", DOCDB_PORT)),
            "master_username": p.get("MasterUsername"),
            "backup_retention_period": int(p.get("BackupRetentionPeriod", 1)),
            "storage_encrypted": _bool(p.get("StorageEncrypted")),
            "deletion_protection": _bool(p.get("DeletionProtection")),
            "copy_tags_to_snapshot": _bool(p.get("CopyTagsToSnapshot")),
            "enable_cloudwatch_logs_exports": list(p.get("EnableCloudwatchLogsExports") or []),
            "vpc_security_group_ids": list(p.get("VpcSecurityGroupIds") or []),
            "tags": list(p.get("Tags") or []),
        }
        if _bool(p.get("ManageMasterUserPassword")):
            args["manage_master_user_password"] = True
            args["master_user_secret_kms_key_id"] = p.get("MasterUserSecretKmsKeyId")
        else:
            args["master_user_password"] = p.get("MasterUserPassword")
        optional = {
            "DBClusterParameterGroupName": "db_cluster_parameter_group_name",
            "DBSubnetGroupName": "db_subnet_group_name",
            "KmsKeyId": "kms_key_id",
            "PreferredBackupWindow": "preferred_backup_window",
            "PreferredMaintenanceWindow": "preferred_maintenance_window",
            "AvailabilityZones": "availability_zones",
            "StorageType": "storage_type",
        }
        for prop, arg in optional.items():
            if p.get(prop) is not None:
                args[arg] = p[prop]
        backend = _rds(account_id, region_name)
        for prop, groups in (("DBSubnetGroupName", backend.subnet_groups), ("DBClusterParameterGroupName", backend.db_cluster_parameter_groups)):
            if p.get(prop) is not None and _lower_name(p[prop]) not in groups:
                raise ValueError(f"{prop} {p[prop]!r} does not exist")
        return cls(backend.create_db_cluster(args))

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


class CfnDocDBInstance(_RefAndAttributes, CloudFormationModel):
    """AWS::DocDB::DBInstance: "Ref returns the instance identifier"; Fn::GetAtt "Endpoint: The
    connection endpoint for the instance. For example:
    sample-cluster.cluster-abcdefghijkl.us-east-1.docdb.amazonaws.com", "Port: The port number on
    which the database accepts connections, such as 27017" (AWS CloudFormation resource
    reference). An instance of its cluster (engine docdb) in moto's RDS backend, in the template's
    AvailabilityZone."""

    REF = "identifier"
    ATTRS = {"Endpoint": "endpoint", "Port": "port"}

    def __init__(self, db: Any) -> None:
        self.db = db
        self.identifier = db.db_instance_identifier
        self.endpoint = db.address
        self.port = str(db.port)

    @staticmethod
    def cloudformation_name_type() -> str:
        return "DBInstanceIdentifier"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::DocDB::DBInstance"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnDocDBInstance:
        p = cloudformation_json.get("Properties", {})
        backend = _rds(account_id, region_name)
        cluster = backend.clusters[_lower_name(p["DBClusterIdentifier"])]
        args: dict[str, Any] = {
            "db_instance_identifier": _lower_name(resource_name),
            "db_instance_class": p["DBInstanceClass"],
            "engine": DOCDB_ENGINE,
            "db_cluster_identifier": cluster.db_cluster_identifier,
            "port": cluster.port,
            "auto_minor_version_upgrade": _bool(p.get("AutoMinorVersionUpgrade"), True),
            "tags": list(p.get("Tags") or []),
        }
        if p.get("AvailabilityZone"):
            args["availability_zone"] = p["AvailabilityZone"]
        if p.get("PreferredMaintenanceWindow"):
            args["preferred_maintenance_window"] = p["PreferredMaintenanceWindow"]
        return cls(backend.create_db_instance(args))

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


class CfnDocDBSubnetGroup(_RefAndAttributes, CloudFormationModel):
    """AWS::DocDB::DBSubnetGroup: "Ref returns the name of the subnet group" (AWS CloudFormation
    resource reference). The same properties as AWS::RDS::DBSubnetGroup, made by moto's RDS
    model of it (DocumentDB's subnet groups are RDS's)."""

    REF = "name"
    ATTRS = {}

    def __init__(self, group: Any) -> None:
        self.group = group
        self.name = group.name

    @staticmethod
    def cloudformation_name_type() -> str:
        return "DBSubnetGroupName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::DocDB::DBSubnetGroup"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnDocDBSubnetGroup:
        group = rds_models.DBSubnetGroup.create_from_cloudformation_json(
            _lower_name(resource_name), cloudformation_json, account_id, region_name
        )
        return cls(group)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


class CfnDocDBClusterParameterGroup(_RefAndAttributes, CloudFormationModel):
    """AWS::DocDB::DBClusterParameterGroup: "Ref returns the cluster parameter group name"
    (AWS CloudFormation resource reference; Family, Description, Parameters as a JSON object of
    name: value). In moto's RDS backend (DescribeDBClusterParameters lists the parameters)."""

    REF = "name"
    ATTRS = {}

    def __init__(self, group: Any) -> None:
        self.group = group
        self.name = group.name

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::DocDB::DBClusterParameterGroup"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CfnDocDBClusterParameterGroup:
        p = cloudformation_json.get("Properties", {})
        backend = _rds(account_id, region_name)
        group = backend.create_db_cluster_parameter_group(
            db_cluster_parameter_group_name=_lower_name(resource_name),
            db_parameter_group_family=p["Family"],
            description=p["Description"],
            tags=list(p.get("Tags") or []),
        )
        group.update_cluster_parameters(
            [
                {"ParameterName": k, "ParameterValue": str(v), "ApplyMethod": "pending-reboot"}
                for k, v in (p.get("Parameters") or {}).items()
            ]
        )
        return cls(group)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


def _allow_docdb() -> None:
    """Engine docdb in moto's RDS backend: a cluster engine and an instance engine, port 27017,
    version 5.0.0 by default, and endpoints in docdb.amazonaws.com as DocumentDB's are."""
    from moto.rds import utils as rds_utils

    cluster_engines = rds_utils.ClusterEngine.list_cluster_engines.__func__
    instance_engines = rds_utils.DbInstanceEngine.valid_db_instance_engine.__func__
    rds_utils.ClusterEngine.list_cluster_engines = classmethod(lambda c: sorted([*cluster_engines(c), DOCDB_ENGINE]))
    rds_utils.DbInstanceEngine.valid_db_instance_engine = classmethod(lambda c: sorted([*instance_engines(c), DOCDB_ENGINE]))

    cluster = rds_models.DBCluster
    version, port, storage = cluster.default_engine_version, cluster.default_port, cluster.default_allocated_storage
    cluster.default_engine_version = staticmethod(lambda e: DOCDB_VERSION if e == DOCDB_ENGINE else version(e))
    cluster.default_port = staticmethod(lambda e: DOCDB_PORT if e == DOCDB_ENGINE else port(e))
    cluster.default_allocated_storage = staticmethod(
        lambda engine, storage_type: 1 if engine == DOCDB_ENGINE else storage(engine=engine, storage_type=storage_type)
    )
    endpoint, reader = cluster.endpoint.fget, cluster.reader_endpoint.fget

    def docdb_host(value: str, engine: str) -> str:
        return value.replace(".rds.amazonaws.com", ".docdb.amazonaws.com") if engine == DOCDB_ENGINE else value

    cluster.endpoint = property(lambda self: docdb_host(endpoint(self), self.engine))
    cluster.reader_endpoint = property(lambda self: docdb_host(reader(self), self.engine))

    instance = rds_models.DBInstance
    instance_port = instance.default_port
    instance.default_port = staticmethod(lambda e: DOCDB_PORT if e == DOCDB_ENGINE else instance_port(e))
    instance.default_engine_versions[DOCDB_ENGINE] = DOCDB_VERSION
    address = instance.address.fget

    def instance_address(self: Any) -> str:
        # "sample-instance.abcdefghijkl.us-east-1.docdb.amazonaws.com" (DocumentDB endpoints)
        if self.engine == DOCDB_ENGINE and getattr(self, "cluster", None) is not None:
            return f"{self.db_instance_identifier}.{self.cluster.url_identifier}.{self.region}.docdb.amazonaws.com"
        return address(self)

    instance.address = property(instance_address)

    # The managed master secret holds "the master user name and password" of its cluster or
    # instance (RDS and DocumentDB user guides, "Password management with AWS Secrets Manager");
    # moto wrote {"username": "admin", "password": "P@55w0rd!"} whatever the master user.
    def secret_string(self: Any) -> str:
        import json
        import secrets

        return json.dumps({"username": self.resource.master_username, "password": secrets.token_urlsafe(24)})

    rds_models.MasterUserSecret._generate_secret_string = secret_string  # noqa: SLF001


# --------------------------------------------------------------------------------------------
# Created but inert
# --------------------------------------------------------------------------------------------

# type -> (what Ref returns: "arn" or "id", ARN template or None, the GetAtt attributes, why inert)
# ARN templates take {partition}, {region}, {account}, {name}, {id}.
INERT: dict[str, tuple[str, str | None, tuple[str, ...], str]] = {
    "AWS::EC2::SecurityGroupEgress": (
        "id", None, ("Id",),
        "egress rules are not enforced: the emulator's instances are processes on the host",
    ),
    "AWS::S3::BucketPolicy": (
        "id", None, ("Id",),
        "moto does not evaluate bucket policies; nothing local writes to the log archive bucket",
    ),
    "AWS::Backup::BackupVault": (
        "id", "arn:{partition}:backup:{region}:{account}:backup-vault:{name}",
        ("BackupVaultArn", "BackupVaultName"), "no backups are taken locally",
    ),
    "AWS::Backup::BackupPlan": (
        "id", "arn:{partition}:backup:{region}:{account}:backup-plan:{id}",
        ("BackupPlanArn", "BackupPlanId", "VersionId"), "no backups are taken locally",
    ),
    "AWS::Backup::BackupSelection": (
        "id", None, ("BackupPlanId", "SelectionId"), "no backups are taken locally",
    ),
    "AWS::KinesisFirehose::DeliveryStream": (
        "id", "arn:{partition}:firehose:{region}:{account}:deliverystream/{name}", ("Arn",),
        "logs are read from CloudWatch Logs by the tests; the archive copy is not reproduced",
    ),
    "AWS::Logs::SubscriptionFilter": (
        "id", None, (),
        "logs are read from CloudWatch Logs by the tests; the archive copy is not reproduced",
    ),
    "AWS::WAFv2::WebACL": (
        "id", "arn:{partition}:wafv2:{region}:{account}:regional/webacl/{name}/{id}",
        ("Arn", "Id", "Capacity", "LabelNamespace"),
        "the local edge applies the same rule itself (tests/infra/test_edge.py)",
    ),
    "AWS::WAFv2::WebACLAssociation": (
        "id", None, (), "the local edge applies the same rule itself (tests/infra/test_edge.py)",
    ),
    "AWS::IAM::OIDCProvider": (
        "arn", "arn:{partition}:iam::{account}:oidc-provider/{name}", ("Arn",),
        "also registered in IAM (the issuer AssumeRoleWithWebIdentity looks up); GitHub's token "
        "signatures are not verified",
    ),
}


def _name(props: dict) -> str | None:
    """The name a template gives an inert resource (an OIDC provider's is its URL's host/path)."""
    for key in ("BackupVaultName", "DeliveryStreamName", "Name"):
        if props.get(key):
            return str(props[key])
    url = props.get("Url")
    return url.removeprefix("https://") if url else None


class InertResource(CloudFormationModel):
    """A resource CloudFormation reports as created, with a physical id and the attributes later
    stacks use, and no effect in the emulator (the types and reasons are in ``INERT``)."""

    TYPE = ""

    def __init__(self, type_: str, name: str, account_id: str, region_name: str, props: dict) -> None:
        ref, arn_template, _attrs, _why = INERT[type_]
        self.type_ = type_
        self.name = name
        self.id = str(uuid.uuid4())
        self.props = props
        self.arn = (
            arn_template.format(
                partition=get_partition(region_name),
                region=region_name,
                account=account_id,
                name=_name(props) or name,
                id=self.id,
            )
            if arn_template
            else None
        )
        self.ref = self.arn if ref == "arn" else (f"{name}|{self.id}" if type_.startswith("AWS::WAFv2") else name)

    @property
    def physical_resource_id(self) -> str:
        return self.ref

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in INERT[cls.TYPE][2]

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        if attribute_name not in INERT[self.type_][2]:
            from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

            raise UnformattedGetAttTemplateException()
        if attribute_name.endswith("Arn"):
            return self.arn
        if attribute_name in ("Id", "BackupPlanId", "SelectionId", "VersionId"):
            return self.id
        if attribute_name == "BackupVaultName":
            return _name(self.props) or self.name
        if attribute_name == "Capacity":
            return 0
        return f"awswaf:{self.id}:webacl:{self.name}:"  # LabelNamespace

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> InertResource:
        props = cloudformation_json.get("Properties", {})
        resource = cls(cls.TYPE, resource_name, account_id, region_name, props)
        if cls.TYPE == "AWS::IAM::OIDCProvider":
            # Registered in IAM too: AssumeRoleWithWebIdentity looks its issuer up there
            # (iam.py) when IAM is enforced.
            from moto.iam.models import iam_backends

            iam_backends[account_id][get_partition(region_name)].create_open_id_connect_provider(
                url=props.get("Url", ""),
                thumbprint_list=list(props.get("ThumbprintList") or []),
                client_id_list=list(props.get("ClientIdList") or []),
                tags=list(props.get("Tags") or []),
            )
        return resource

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        if cls.TYPE == "AWS::IAM::OIDCProvider":
            from moto.iam.models import iam_backends

            props = (cloudformation_json or {}).get("Properties", {})
            url = props.get("Url", "").removeprefix("https://")
            partition = get_partition(region_name)
            iam_backends[account_id][partition].delete_open_id_connect_provider(
                f"arn:{partition}:iam::{account_id}:oidc-provider/{url}"
            )
        return None


_models: list[type] = []  # moto finds models through __subclasses__, which holds weak references


def _inert_models() -> list[type]:
    # One direct subclass of CloudFormationModel per type: moto maps types to direct subclasses.
    return [
        type(
            "Inert" + t.replace("AWS::", "").replace("::", ""),
            (InertResource, CloudFormationModel),
            {"TYPE": t, "__module__": __name__},
        )
        for t in INERT
    ]


# --------------------------------------------------------------------------------------------
# Attributes moto's models lack
# --------------------------------------------------------------------------------------------


def _patch_attributes() -> None:
    lb_get = elbv2_models.FakeLoadBalancer.get_cfn_attribute

    def lb_attribute(self: Any, attribute_name: str) -> Any:
        # "LoadBalancerFullName: The full name of the load balancer. For example,
        # app/my-load-balancer/50dc6c495c0c9188" (resource reference).
        if attribute_name == "LoadBalancerFullName":
            return self.arn.split(":loadbalancer/", 1)[1]
        if attribute_name == "CanonicalHostedZoneID":
            return "Z35SXDOTRQ7X7K"  # us-east-1's ALB zone; the local DNS record is inert
        return lb_get(self, attribute_name)

    elbv2_models.FakeLoadBalancer.get_cfn_attribute = lb_attribute

    tg_get = getattr(elbv2_models.FakeTargetGroup, "get_cfn_attribute", None)

    def tg_attribute(self: Any, attribute_name: str) -> Any:
        # "TargetGroupFullName: The full name of the target group. For example,
        # targetgroup/my-target-group/cbf133c568e0d028" (resource reference).
        if attribute_name == "TargetGroupFullName":
            return self.arn.split(":", 5)[5]
        if attribute_name == "TargetGroupName":
            return self.name
        if attribute_name == "TargetGroupArn":
            return self.arn
        if attribute_name == "LoadBalancerArns":
            return list(self.load_balancer_arns)
        if tg_get is not None:
            return tg_get(self, attribute_name)
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    elbv2_models.FakeTargetGroup.get_cfn_attribute = tg_attribute

    db_create = rds_models.DBInstance.create_from_cloudformation_json.__func__
    db_get = rds_models.DBInstance.get_cfn_attribute

    def db_create_managed(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        props = cloudformation_json.get("Properties", {})
        group = props.get("DBSubnetGroupName")
        if isinstance(group, str):  # Ref of the group, its name (moto's model wants the object)
            account_id, region_name = args[0], args[1]
            props["DBSubnetGroupName"] = rds_models.rds_backends[account_id][region_name].subnet_groups[group]
        # "VPCSecurityGroups: A list of the VPC security group IDs to assign to the DB instance"
        # (resource reference); moto's model reads VpcSecurityGroupIds, and so gave none.
        if "VPCSecurityGroups" in props:
            props.setdefault("VpcSecurityGroupIds", list(props["VPCSecurityGroups"]))
        # Without Port, the engine's default port (CreateDBInstance: "PostgreSQL Default: 5432");
        # moto's model took 3306 for every engine.
        if props.get("Port") is None and props.get("Engine"):
            props["Port"] = rds_models.DBInstance.default_port(props["Engine"])
        db = db_create(cls, resource_name, cloudformation_json, *args, **kwargs)
        # DeletionProtection, ignored by moto's model.
        db.deletion_protection = str(props.get("DeletionProtection", False)).lower() == "true"
        if str(props.get("ManageMasterUserPassword", False)).lower() == "true":
            db.update(
                manage_master_user_password=True,
                master_user_secret_kms_key_id=(props.get("MasterUserSecret") or {}).get("KmsKeyId"),
            )
        return db

    def db_attribute(self: Any, attribute_name: str) -> Any:
        # "MasterUserSecret.SecretArn: The Amazon Resource Name (ARN) of the secret"
        if attribute_name == "MasterUserSecret.SecretArn" and hasattr(self, "master_user_secret"):
            return self.master_user_secret.secret.arn
        return db_get(self, attribute_name)

    # AWS::EFS::AccessPoint: "Ref returns the access point ID"; "Fn::GetAtt ... AccessPointId",
    # "Arn: The Amazon Resource Name (ARN) of the access point" (resource reference).
    def ap_attribute(self: Any, attribute_name: str) -> Any:
        if attribute_name == "Arn":
            return self.access_point_arn
        if attribute_name == "AccessPointId":
            return self.access_point_id
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    efs_models.AccessPoint.get_cfn_attribute = ap_attribute
    efs_models.AccessPoint.has_cfn_attr = classmethod(lambda cls, attr: attr in ("Arn", "AccessPointId"))
    efs_models.AccessPoint.physical_resource_id = property(lambda self: self.access_point_id)

    # AWS::RDS::DBParameterGroup, DBSubnetGroup: "Ref returns the name" (resource reference);
    # moto's models have no physical id, so a Ref gave the model object itself.
    for group in (rds_models.DBParameterGroup, rds_models.DBSubnetGroup):
        group.physical_resource_id = property(lambda self: self.name)

    # AWS::EC2::SecurityGroupIngress: "Ref returns the rule's ID" (resource reference); moto's
    # model (which does authorize the rule) has none.
    def rule_id(self: Any) -> str:
        if not hasattr(self, "bake_rule_id"):
            self.bake_rule_id = "sgr-" + uuid.uuid4().hex[:17]
        return self.bake_rule_id

    ec2_sg_models.SecurityGroupIngress.physical_resource_id = property(rule_id)

    # AWS::AutoScaling::AutoScalingGroup: "LifecycleHookSpecificationList: One or more lifecycle
    # hooks to add to the Auto Scaling group before instances are launched" and
    # DefaultInstanceWarmup, both ignored by moto's model (the emulator's CreateAutoScalingGroup
    # takes them, autoscaling._wrap_group_params).
    asg_create = as_models.FakeAutoScalingGroup.create_from_cloudformation_json.__func__

    def asg_create_with_hooks(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json.get("Properties", {})
        name = props.get("AutoScalingGroupName", resource_name)
        backend = autoscaling_backends[account_id][region_name]
        with autoscaling._cond:  # noqa: SLF001
            for spec in props.get("LifecycleHookSpecificationList") or []:
                backend.create_lifecycle_hook(
                    name=spec["LifecycleHookName"],
                    as_name=name,
                    transition=spec["LifecycleTransition"],
                    timeout=_int(spec.get("HeartbeatTimeout")),
                    result=spec.get("DefaultResult"),
                )
            group = asg_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
            warmup = _int(props.get("DefaultInstanceWarmup"))
            if warmup is not None:
                group.default_instance_warmup = None if warmup < 0 else warmup
        return group

    as_models.FakeAutoScalingGroup.create_from_cloudformation_json = classmethod(asg_create_with_hooks)

    db_has = rds_models.DBInstance.has_cfn_attr.__func__

    def db_has_attr(cls: Any, attr: str) -> bool:
        return attr == "MasterUserSecret.SecretArn" or db_has(cls, attr)

    rds_models.DBInstance.has_cfn_attr = classmethod(db_has_attr)
    rds_models.DBInstance.create_from_cloudformation_json = classmethod(db_create_managed)
    rds_models.DBInstance.get_cfn_attribute = db_attribute


def _patch_stack_resources() -> None:
    """DescribeStackResources lists what the stack created: moto also listed a resource whose
    Condition is false, as an entry without a logical id (its model is None). AWS: "If a
    resource's condition evaluates to false, CloudFormation doesn't create the resource" (the
    Conditions section reference), so it is no resource of the stack."""
    from moto.cloudformation import models as cfn_models

    resources = cfn_models.Stack.stack_resources.fget
    cfn_models.Stack.stack_resources = property(lambda self: [r for r in resources(self) if r is not None])


def _yaml_tag_constructor(loader: Any, tag: Any, node: Any) -> Any:
    """moto's YAML short-form reader, but ``!GetAtt A.B.C`` is ``[A, "B.C"]``: "!GetAtt
    logicalNameOfResource.attributeName" (Fn::GetAtt reference), and attribute names such as an
    RDS instance's ``Endpoint.Address`` contain a dot (moto splits at every dot)."""
    if tag == "!GetAtt" and not isinstance(node.value, list):
        return {"Fn::GetAtt": node.value.split(".", 1)}
    return _orig_yaml_tag_constructor(loader, tag, node)


def _patch_yaml() -> None:
    global _orig_yaml_tag_constructor
    from moto.cloudformation import models as cfn_models
    from moto.cloudformation import responses as cfn_responses
    from moto.cloudformation import utils as cfn_utils

    _orig_yaml_tag_constructor = cfn_utils.yaml_tag_constructor
    for module in (cfn_utils, cfn_models, cfn_responses):
        module.yaml_tag_constructor = _yaml_tag_constructor


_orig_yaml_tag_constructor: Any = None


def install() -> None:
    """Register the resource types with moto's CloudFormation and patch the attributes. Idempotent."""
    global _installed
    if _installed:
        return
    _patch_yaml()
    _patch_attributes()
    _allow_docdb()
    _patch_stack_resources()
    _models.extend(_inert_models())
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()
    _installed = True


__all__ = ["install", "INERT"]
