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
  ``AWS::CertificateManager::Certificate`` (in moto's ACM, where moto's listener looks it up).
- Created but inert (``INERT``): a physical id, Ref and the GetAtt attributes later stacks use,
  and nothing else, each with the reason nothing more is needed (docs/emulator.md lists them).

Also what moto's existing models lack: an Auto Scaling group's ``LifecycleHookSpecificationList``
and ``DefaultInstanceWarmup``, a target group's ``TargetGroupFullName``, a load
balancer's ``LoadBalancerFullName`` and ``CanonicalHostedZoneID``, an EFS access point's ``Arn``
and Ref, Ref of an RDS parameter or subnet group and of a security group ingress rule, an RDS
instance's ``MasterUserSecret.SecretArn`` (with ``ManageMasterUserPassword``, which moto's
CloudFormation ignores); and ``!GetAtt A.B.C`` read as attribute ``B.C`` of ``A``, as AWS does.
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
        db = db_create(cls, resource_name, cloudformation_json, *args, **kwargs)
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
    _models.extend(_inert_models())
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()
    _installed = True


__all__ = ["install", "INERT"]
