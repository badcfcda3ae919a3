"""IAM enforcement closer to AWS's than moto's own, once it is switched on.

moto enforces IAM after ``POST /moto-api/reset-auth`` with body ``N``: the first N requests after
the switch are free, every later one is signed and authorized against the caller's identity
policies (IAM users' and assumed roles'). This module changes what is evaluated then:

1. **Resource-level permissions.** moto authorizes every action against the resource ``*``, so a
   statement naming a resource ARN never matches. Here the actions in ``RESOURCES`` are
   authorized against the ARNs of the resources the request names, as the Service Authorization
   Reference lists them ("Actions, resources, and condition keys for <service>"); IAM evaluates
   every resource of a request, so every one must be allowed. Actions not in the table have no
   resource types (Describe*, PutMetricData...) and stay ``*``.
2. **The action's service prefix**, not the signing name: CloudWatch signs as ``monitoring`` and
   its actions are ``cloudwatch:*``.
3. **AssumeRoleWithWebIdentity** needs no signature (AWS: "Calling AssumeRoleWithWebIdentity does
   not require the use of AWS security credentials"); the role's trust policy is evaluated
   instead: the token's issuer must be an IAM OIDC provider of the role's account and the
   statement's ``Principal.Federated``, its audience one of the provider's client IDs, and the
   statement's conditions on ``<provider>:aud`` / ``:sub`` / ``:amr`` must hold. The token is a
   JWT whose payload is read **without checking its signature**: the emulator cannot fetch or
   trust the provider's keys. An expired token (``exp`` in the past) is refused. The credentials
   are moto's assumed-role credentials, held to the role's policies afterwards.
   AssumeRoleWithSAML needs no signature either; its assertion is not evaluated.
4. **Trust policies of AssumeRole** are evaluated here (principal, action, conditions on
   ``sts:ExternalId``) instead of by moto, which answers 500 for a statement whose principal is
   only a service.
5. **EC2's delivery of instance-role credentials** (``POST /bake-emulator/ec2/role-credentials``,
   see ``role_credentials_app``): what EC2 does for an instance launched with a profile.
6. **Errors as each protocol carries them** (``AccessDeniedException`` in JSON, EC2's
   ``UnauthorizedOperation``, AWS's query ``ErrorResponse/Error``), naming action and resource;
   an unsigned request is refused with 403 instead of moto's 500.

Not evaluated (moto ignores them in identity policies, and so does this module): condition keys
of identity policies (``aws:ResourceTag/...``, ``aws:RequestedRegion``, service keys),
resource-based policies, permission boundaries, session policies, and the calls a service makes
on the caller's behalf (KMS for SecureStrings, iam:PassRole). docs/emulator.md lists them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
import urllib.parse
import uuid

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import AccessDeniedError, JsonRESTError
from moto.core.exceptions import _RESTError  # noqa: PLC2701 - moto's query error shape
from moto.iam import access_control
from moto.iam.access_control import IAMRequest
from moto.iam.models import iam_backends
from moto.s3.exceptions import S3AccessDeniedError
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

ROLE_CREDENTIALS_PATH = "/bake-emulator/ec2/role-credentials"
DEFAULT_ACCOUNT = "123456789012"

#: Signing name (the credential scope's service) -> IAM service prefix, where they differ.
SERVICE_PREFIX = {"monitoring": "cloudwatch"}

#: Actions that need no signature: AWS evaluates the role's trust policy only.
UNSIGNED_STS_ACTIONS = ("AssumeRoleWithWebIdentity", "AssumeRoleWithSAML")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class _Error(_RESTError):
    """A query-protocol error as AWS shapes it (``ErrorResponse/Error`` and ``RequestId``, which
    the Rust SDK reads; moto's ``ErrorResponse/Errors/Error`` it does not), with its HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = status
        fault = "Sender" if status < 500 else "Receiver"
        self.description = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
            f"<Type>{fault}</Type><Code>{html.escape(code)}</Code><Message>{html.escape(message)}</Message>"
            f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        )


def _access_denied(message: str) -> _Error:
    return _Error(403, "AccessDenied", message)


class _JsonError(JsonRESTError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = status


class _Ec2Error(_Error):
    """EC2's error shape (``Response/Errors/Error`` and ``RequestID``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.description = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{html.escape(code)}</Code><Message>{html.escape(message)}</Message>"
            f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
        )


def _in_protocol(resp, status: int, code: str, message: str) -> _RESTError:
    """The error as the request's protocol carries it: JSON services answer
    ``AccessDeniedException`` in a JSON body, EC2 ``UnauthorizedOperation`` in its own XML, the
    other query services moto's XML."""
    content_type = (resp.headers.get("Content-Type") or "").lower()
    if resp.headers.get("X-Amz-Target") or content_type.startswith("application/x-amz-json"):
        return _JsonError(status, "AccessDeniedException" if code == "AccessDenied" else code, message)
    if resp.service_name == "ec2":
        return _Ec2Error(status, "UnauthorizedOperation" if code == "AccessDenied" else code, message)
    return _Error(status, code, message)


# --------------------------------------------------------------------------------------------
# Resource ARNs of a request
# --------------------------------------------------------------------------------------------


def _param(resp, name):
    value = resp._get_param(name)  # noqa: SLF001 - moto's own parameter access
    return value if value not in ("", None) else None


def _list_param(resp, name) -> list:
    value = resp._get_param(name)  # noqa: SLF001
    if value is None:
        value = resp._get_multi_param(name) if hasattr(resp, "_get_multi_param") else None  # noqa: SLF001
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _base(resp, service: str) -> str:
    return f"arn:{resp.partition}:{service}:{resp.region}:{resp.current_account}"


def ssm_parameter_arn(resp, name: str) -> str:
    """``arn:aws:ssm:R:A:parameter/NAME``; a selector (``NAME:3``, ``NAME:label``) is not part of it,
    a name without a leading ``/`` gets one, a name that is an ARN is taken as is."""
    if name.startswith("arn:"):
        head, sep, tail = name.partition(":parameter/")
        return head + sep + tail.split(":", 1)[0]
    name = name.split(":", 1)[0]
    return f"{_base(resp, 'ssm')}:parameter{name if name.startswith('/') else '/' + name}"


def _ssm_name(resp):
    name = _param(resp, "Name")
    return [ssm_parameter_arn(resp, name)] if name else None


def _ssm_names(resp):
    return [ssm_parameter_arn(resp, n) for n in _list_param(resp, "Names")] or None


def _ssm_path(resp):
    # "GetParametersByPath ... authorizes against the path in the request rather than against the
    # parameters it returns" (Parameter Store user guide, "How Parameter Store authorizes parameter
    # retrieval"). /a/b/ and /a/b are one path.
    path = _param(resp, "Path")
    if not path:
        return None
    return [ssm_parameter_arn(resp, path.rstrip("/") or "/")]


def _ssm_tagged(resp):
    if _param(resp, "ResourceType") != "Parameter" or not _param(resp, "ResourceId"):
        return None
    return [ssm_parameter_arn(resp, _param(resp, "ResourceId"))]


def _log_group_name(resp):
    ident = _param(resp, "logGroupIdentifier")
    if ident and ident.startswith("arn:"):
        return ident.split(":log-group:", 1)[1].removesuffix(":*")
    return _param(resp, "logGroupName") or ident


def _logs_group(resp):
    # The log group as the group-level actions are authorized: "log-group:NAME:*" in a policy
    # matches it, "log-group:NAME" does not (CloudWatch Logs user guide, "Overview of managing
    # access permissions": the ARN with the trailing :* is the one for IAM policies).
    name = _log_group_name(resp)
    return [f"{_base(resp, 'logs')}:log-group:{name}:log-stream:"] if name else None


def _logs_stream(resp):
    name, stream = _log_group_name(resp), _param(resp, "logStreamName")
    if not name or not stream:
        return _logs_group(resp)
    return [f"{_base(resp, 'logs')}:log-group:{name}:log-stream:{stream}"]


def _asg_arn(resp, name: str) -> str:
    from moto.autoscaling.models import autoscaling_backends

    group = autoscaling_backends[resp.current_account][resp.region].autoscaling_groups.get(name)
    if group is not None:
        return group.arn
    # A group that does not exist: the ARN with any id, as AWS evaluates it; the service then
    # answers its own ValidationError when the policy allows it.
    return f"{_base(resp, 'autoscaling')}:autoScalingGroup:*:autoScalingGroupName/{name}"


def _asg_group(resp):
    name = _param(resp, "AutoScalingGroupName")
    return [_asg_arn(resp, name)] if name else None


def _asg_instance_group(resp):
    """The group of the request's InstanceId (SetInstanceHealth, TerminateInstance...)."""
    from moto.autoscaling.models import autoscaling_backends

    instance_id = _param(resp, "InstanceId")
    if not instance_id:
        return None
    for group in autoscaling_backends[resp.current_account][resp.region].autoscaling_groups.values():
        if any(state.instance.id == instance_id for state in group.instance_states):
            return [group.arn]
    # Not in any group: no group ARN can name it.
    return [f"{_base(resp, 'autoscaling')}:autoScalingGroup:*:autoScalingGroupName/*"]


def _ec2_launch_template(resp):
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[resp.current_account][resp.region]
    tmpl_id = _param(resp, "LaunchTemplateId")
    name = _param(resp, "LaunchTemplateName")
    if not tmpl_id and name:
        tmpl_id = backend.launch_template_name_to_ids.get(name)
    if not tmpl_id and not name:
        return None
    return [f"{_base(resp, 'ec2')}:launch-template/{tmpl_id or '*'}"]


#: EC2 resource id prefix -> its resource type in an ARN (Service Authorization Reference, Amazon
#: EC2, "Resource types": image ARNs have no account, ``arn:${Partition}:ec2:${Region}::image/${ImageId}``).
_EC2_ID_TYPES = {
    "ami-": "image",
    "i-": "instance",
    "snap-": "snapshot",
    "vol-": "volume",
    "lt-": "launch-template",
    "sg-": "security-group",
    "subnet-": "subnet",
    "vpc-": "vpc",
    "eni-": "network-interface",
}


def _ec2_tagged(resp):
    """CreateTags / DeleteTags: authorized on every resource of ``ResourceId.N``."""
    arns = []
    # moto parses `ResourceId.N` by the API model into its member name, `Resources`.
    for rid in _list_param(resp, "Resources") or _list_param(resp, "ResourceId"):
        kind = next((t for p, t in _EC2_ID_TYPES.items() if rid.startswith(p)), None)
        if kind is None:
            arns.append("*")  # a resource type not listed here: evaluated as AWS would not know it
        elif kind in ("image", "snapshot"):
            arns.append(f"arn:{resp.partition}:ec2:{resp.region}::{kind}/{rid}")
        else:
            arns.append(f"{_base(resp, 'ec2')}:{kind}/{rid}")
    return arns or None


def _ec2_image(resp):
    """The image of ``ImageId`` (Enable/DisableImageDeprecation, Disable/EnableImage,
    DeregisterImage, Modify/DescribeImageAttribute): ``arn:aws:ec2:R::image/ami-…``."""
    image_id = _param(resp, "ImageId")
    return [f"arn:{resp.partition}:ec2:{resp.region}::image/{image_id}"] if image_id else None


def _ec2_copy_image(resp):
    """CopyImage: the source AMI in its Region (resource-level permissions on the source "starting
    October 28, 2024", EC2 user guide, "Grant permissions to copy Amazon EC2 AMIs") and the new
    AMI in the destination Region, whose id is not known yet: ``image/*``."""
    source, region = _param(resp, "SourceImageId"), _param(resp, "SourceRegion") or resp.region
    arns = [f"arn:{resp.partition}:ec2:{resp.region}::image/*"]
    if source:
        arns.insert(0, f"arn:{resp.partition}:ec2:{region}::image/{source}")
    return arns


def _ec2_snapshot(resp):
    """Modify/DescribeSnapshotAttribute: ``arn:aws:ec2:R::snapshot/snap-…`` (no account, as the
    user guide's policies write snapshot ARNs)."""
    snapshot_id = _param(resp, "SnapshotId")
    return [f"arn:{resp.partition}:ec2:{resp.region}::snapshot/{snapshot_id}"] if snapshot_id else None


def _cfn_stack(resp):
    from moto.cloudformation.models import cloudformation_backends

    name = _param(resp, "StackName")
    if not name:
        return None  # DescribeStacks of every stack: "*"
    stacks = cloudformation_backends[resp.current_account][resp.region].stacks.values()
    found = [s for s in stacks if name in (s.stack_id, s.name)]
    live = [s for s in found if s.status != "DELETE_COMPLETE"]
    stack = (live or found or [None])[-1]
    if stack is not None:
        return [stack.stack_id]
    return [f"{_base(resp, 'cloudformation')}:stack/{name}/*"]


def _cw_alarm(resp):
    names = _list_param(resp, "AlarmNames") or ([_param(resp, "AlarmName")] if _param(resp, "AlarmName") else [])
    return [f"{_base(resp, 'cloudwatch')}:alarm:{n}" for n in names] or None


def _iam_instance_profile(resp):
    name = _param(resp, "InstanceProfileName")
    if not name:
        return None
    try:
        return [iam_backends[resp.current_account][resp.partition].get_instance_profile(name).arn]
    except Exception:  # noqa: BLE001 - moto's NotFoundException: the service answers NoSuchEntity
        return [f"arn:{resp.partition}:iam::{resp.current_account}:instance-profile/{name}"]


#: (moto service name, action) -> the request's resource ARNs (None: "*"). Everything else is "*".
RESOURCES = {
    ("ssm", "GetParametersByPath"): _ssm_path,
    ("ssm", "GetParameter"): _ssm_name,
    ("ssm", "GetParameters"): _ssm_names,
    ("ssm", "GetParameterHistory"): _ssm_name,
    ("ssm", "PutParameter"): _ssm_name,
    ("ssm", "DeleteParameter"): _ssm_name,
    ("ssm", "DeleteParameters"): _ssm_names,
    ("ssm", "LabelParameterVersion"): _ssm_name,
    ("ssm", "UnlabelParameterVersion"): _ssm_name,
    ("ssm", "AddTagsToResource"): _ssm_tagged,
    ("ssm", "RemoveTagsFromResource"): _ssm_tagged,
    ("ssm", "ListTagsForResource"): _ssm_tagged,
    ("autoscaling", "CompleteLifecycleAction"): _asg_group,
    ("autoscaling", "RecordLifecycleActionHeartbeat"): _asg_group,
    ("autoscaling", "StartInstanceRefresh"): _asg_group,
    ("autoscaling", "CancelInstanceRefresh"): _asg_group,
    ("autoscaling", "RollbackInstanceRefresh"): _asg_group,
    ("autoscaling", "UpdateAutoScalingGroup"): _asg_group,
    ("autoscaling", "CreateAutoScalingGroup"): _asg_group,
    ("autoscaling", "DeleteAutoScalingGroup"): _asg_group,
    ("autoscaling", "PutLifecycleHook"): _asg_group,
    ("autoscaling", "DeleteLifecycleHook"): _asg_group,
    ("autoscaling", "SetDesiredCapacity"): _asg_group,
    ("autoscaling", "SetInstanceHealth"): _asg_instance_group,
    ("autoscaling", "TerminateInstanceInAutoScalingGroup"): _asg_instance_group,
    ("logs", "CreateLogGroup"): _logs_group,
    ("logs", "DeleteLogGroup"): _logs_group,
    ("logs", "PutRetentionPolicy"): _logs_group,
    ("logs", "DeleteRetentionPolicy"): _logs_group,
    ("logs", "DescribeLogStreams"): _logs_group,
    ("logs", "FilterLogEvents"): _logs_group,
    ("logs", "CreateLogStream"): _logs_stream,
    ("logs", "PutLogEvents"): _logs_stream,
    ("logs", "GetLogEvents"): _logs_stream,
    ("ec2", "CreateLaunchTemplateVersion"): _ec2_launch_template,
    ("ec2", "ModifyLaunchTemplate"): _ec2_launch_template,
    ("ec2", "DeleteLaunchTemplateVersions"): _ec2_launch_template,
    ("ec2", "DeleteLaunchTemplate"): _ec2_launch_template,
    ("ec2", "CreateTags"): _ec2_tagged,
    ("ec2", "EnableImageDeprecation"): _ec2_image,
    ("ec2", "DisableImageDeprecation"): _ec2_image,
    ("ec2", "DisableImage"): _ec2_image,
    ("ec2", "EnableImage"): _ec2_image,
    ("ec2", "DeregisterImage"): _ec2_image,
    ("ec2", "ModifyImageAttribute"): _ec2_image,
    ("ec2", "DescribeImageAttribute"): _ec2_image,
    ("ec2", "CopyImage"): _ec2_copy_image,
    ("ec2", "ModifySnapshotAttribute"): _ec2_snapshot,
    ("ec2", "DescribeSnapshotAttribute"): _ec2_snapshot,
    ("ec2", "DeleteTags"): _ec2_tagged,
    ("cloudformation", "DescribeStacks"): _cfn_stack,
    ("cloudformation", "DescribeStackResources"): _cfn_stack,
    ("cloudformation", "DescribeStackEvents"): _cfn_stack,
    ("cloudformation", "UpdateStack"): _cfn_stack,
    ("cloudformation", "DeleteStack"): _cfn_stack,
    ("iam", "GetInstanceProfile"): _iam_instance_profile,
    ("cloudwatch", "PutMetricAlarm"): _cw_alarm,
    ("cloudwatch", "DeleteAlarms"): _cw_alarm,
    ("cloudwatch", "SetAlarmState"): _cw_alarm,
}


def request_resources(resp) -> list[str]:
    """The ARNs the request is authorized against (``["*"]`` for actions without resource types)."""
    resolve = RESOURCES.get((resp.service_name, resp._get_action()))  # noqa: SLF001
    return (resolve(resp) if resolve else None) or ["*"]


# --------------------------------------------------------------------------------------------
# Policy evaluation the trust checks share
# --------------------------------------------------------------------------------------------


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


_STRING_OPERATORS = {
    "StringEquals": (lambda p, v: p == v, False),
    "StringLike": (_glob, False),
    "StringNotEquals": (lambda p, v: p == v, True),
    "StringNotLike": (_glob, True),
    "StringEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), True),
}


def _condition_holds(operator: str, key: str, expected, context: dict[str, list[str]]) -> bool:
    """One condition key of a statement (single-valued keys; ``...IfExists`` understood).
    Operators other than the string ones make the condition fail: the statement does not apply."""
    if_exists = operator.endswith("IfExists")
    op = operator.removesuffix("IfExists")
    if op not in _STRING_OPERATORS:
        return False
    match, negated = _STRING_OPERATORS[op]
    actual = next((v for k, v in context.items() if k.lower() == key.lower()), None)
    if actual is None:
        # IAM user guide, condition operators: a missing key matches no value; the negated
        # operators are then true, and so is any ...IfExists.
        return if_exists or negated
    hit = any(match(str(p), a) for p in _as_list(expected) for a in actual)
    return not hit if negated else hit


def _statement_applies(statement: dict, action: str, principal, context) -> bool:
    actions = statement.get("Action")
    if actions is not None:
        if not any(_glob(a, action, case=False) for a in _as_list(actions)):
            return False
    elif "NotAction" in statement:
        if any(_glob(a, action, case=False) for a in _as_list(statement["NotAction"])):
            return False
    else:
        return False
    expected = statement.get("Principal")
    if expected != "*":
        if not isinstance(expected, dict):
            return False  # NotPrincipal or no principal: not understood, the statement is skipped
        if not any(principal(kind, value) for kind, values in expected.items() for value in _as_list(values)):
            return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, value in keys.items():
            if not _condition_holds(operator, key, value, context):
                return False
    return True


def trust_allows(document, action: str, principal, context: dict[str, list[str]]) -> bool:
    """Whether a trust policy allows ``action`` for the principal (``principal(kind, value)`` says
    whether ``Principal.<kind>: value`` names it) with the request's condition ``context``:
    an applicable Deny wins, else an applicable Allow is needed (IAM policy evaluation logic)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            document = json.loads(urllib.parse.unquote(document))
    allowed = False
    for statement in _as_list(document.get("Statement")):
        if _statement_applies(statement, action, principal, context):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _role(account: str, partition: str, role_arn: str):
    try:
        return iam_backends[account][partition].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - moto's NotFoundException or a malformed ARN
        return None


# --------------------------------------------------------------------------------------------
# AssumeRoleWithWebIdentity
# --------------------------------------------------------------------------------------------


def jwt_claims(token: str) -> dict:
    """The payload of a JWT (``header.payload.signature``), **signature not checked**."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, TypeError) as err:
        raise _Error(400, "InvalidIdentityToken", "The web identity token is not a JWT") from err
    if not isinstance(claims, dict):
        raise _Error(400, "InvalidIdentityToken", "The web identity token's payload is not a JSON object")
    return claims


def check_web_identity(resp) -> None:
    """AWS's checks of AssumeRoleWithWebIdentity before it issues credentials."""
    token = _param(resp, "WebIdentityToken") or ""
    role_arn = _param(resp, "RoleArn") or ""
    claims = jwt_claims(token)
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp <= time.time():
        now = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
        until = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(exp))
        raise _Error(
            400,
            "ExpiredTokenException",
            f"Token expired: current date/time {now} must be before the expiration date/time {until}",
        )
    parts = role_arn.split(":")
    if len(parts) < 6 or not parts[5].startswith("role/"):
        raise _access_denied("Not authorized to perform sts:AssumeRoleWithWebIdentity")
    partition, account = parts[1], parts[4]
    issuer = str(claims.get("iss", ""))
    provider_url = issuer.removeprefix("https://").rstrip("/")
    provider_arn = f"arn:{partition}:iam::{account}:oidc-provider/{provider_url}"
    provider = iam_backends[account][partition].open_id_providers.get(provider_arn)
    if provider is None:
        raise _Error(400, "InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {issuer}")
    audiences = [str(a) for a in _as_list(claims.get("aud"))]
    if not any(a in provider.client_id_list for a in audiences):
        raise _Error(400, "InvalidIdentityToken", "Incorrect token audience")
    role = _role(account, partition, role_arn)
    context = {f"{provider_url}:aud": audiences}
    for claim in ("sub", "amr"):
        if claim in claims:
            context[f"{provider_url}:{claim}"] = [str(v) for v in _as_list(claims[claim])]

    def principal(kind, value):
        return kind == "Federated" and value in ("*", provider_arn)

    if role is None or not trust_allows(
        role.assume_role_policy_document, "sts:AssumeRoleWithWebIdentity", principal, context
    ):
        raise _access_denied("Not authorized to perform sts:AssumeRoleWithWebIdentity")


# --------------------------------------------------------------------------------------------
# The authorization of every request
# --------------------------------------------------------------------------------------------


def _enforced() -> bool:
    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def _caller_principal(access_key, account: str, partition: str):
    """``principal(kind, value)`` for a signed caller: its own ARN, its role's ARN for a role
    session, its account (``ACCOUNT`` or ``arn:...:root``) or ``*``."""
    arn = access_key.arn
    names = {arn, "*", account, f"arn:{partition}:iam::{account}:root"}
    if ":assumed-role/" in arn:
        role_name = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        names.add(f"arn:{partition}:iam::{account}:role/{role_name}")

    def principal(kind, value):
        return kind == "AWS" and value in names

    return principal


def _check_role_trust_relationship(self, role_arn: str) -> bool:
    """AssumeRole: the role's trust policy must allow the caller (replaces moto's check)."""
    role = self.backend.get_role_by_arn(role_arn)
    context = {}
    if self._data.get("ExternalId"):  # noqa: SLF001
        context["sts:ExternalId"] = [_as_list(self._data["ExternalId"])[0]]  # noqa: SLF001
    principal = _caller_principal(self._access_key, self.account_id, get_partition(self._region))  # noqa: SLF001
    return trust_allows(role.assume_role_policy_document, self._action, principal, context)  # noqa: SLF001


def _authorize(self, resource: str = "*") -> None:
    """Replaces ``_authenticate_and_authorize_normal_action`` of every moto response handler."""
    if not _enforced():
        return _original_authorize(self, resource)
    action = self._get_action()
    if self.service_name == "sts" and action in UNSIGNED_STS_ACTIONS:
        if action == "AssumeRoleWithWebIdentity":
            check_web_identity(self)
        return None
    headers = getattr(self, "signed_headers", None) or self.headers
    try:
        if "Authorization" not in headers:
            raise _Error(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        _check(self, action, headers, resource)
    except _RESTError as err:
        if isinstance(err, (_JsonError, _Ec2Error)):
            raise
        raise _in_protocol(self, err.code, err.error_type, err.message) from None
    return None


def _check(self, action: str, headers, resource: str) -> None:
    """moto's signature check, then the identity policies for each resource of the request."""
    path = self.raw_path
    query = urllib.parse.urlparse(self.uri).query
    if query:
        path += "?" + query
    request = IAMRequest(
        account_id=self.current_account,
        method=self.method,
        path=path,
        data=self.data,
        # What was signed: the bytes as received. The CBOR layer keeps them (maybe gzip) here;
        # for a form body (the query protocols) werkzeug leaves moto no raw body, and moto would
        # re-encode the parsed form, which need not give the client's bytes (a space is `%20`
        # from the Rust SDK, `+` from Python's encoder), so [`received_body_app`] keeps them.
        body=getattr(self, "signed_body", None) or _received_body(self) or self.raw_body,
        headers=headers,
        action=action,
    )
    service = request._service  # noqa: SLF001 - the signing name from the credential scope
    request._action = f"{SERVICE_PREFIX.get(service, service)}:{action}"  # noqa: SLF001
    request.check_signature()
    resources = [resource] if resource != "*" else request_resources(self)
    for arn in resources:
        try:
            request.check_action_permitted(arn)
        except AccessDeniedError:
            caller = request._access_key.arn  # noqa: SLF001
            on = "" if arn == "*" else f" on resource: {arn}"
            raise _access_denied(
                f"User: {caller} is not authorized to perform: {request._action}{on}"  # noqa: SLF001
            ) from None


RECEIVED_BODY = "bake_emulator.received_body"


def _received_body(resp) -> bytes | None:
    request = getattr(resp, "normalized_request", None)
    return getattr(request, "environ", {}).get(RECEIVED_BODY)


def received_body_app(app):
    """A WSGI app that keeps the body of each request as received (``environ[RECEIVED_BODY]``)
    before anything parses it, and hands ``app`` a copy to read, so a signature is checked on the
    bytes the client signed."""

    def serve(environ, start_response):
        stream = environ.get("wsgi.input")
        if stream is not None and environ.get("REQUEST_METHOD") in ("POST", "PUT", "PATCH"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > 0:
                body = stream.read(length)
            elif environ.get("wsgi.input_terminated") or "chunked" in environ.get(
                "HTTP_TRANSFER_ENCODING", ""
            ).lower():
                body = stream.read()
            else:
                body = b""
            environ[RECEIVED_BODY] = body
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return serve


def _authenticate(self, iam_request_cls, resource: str = "*") -> None:
    """moto's check for every other handler (S3's): an unsigned request is refused, not a 500."""
    headers = getattr(self, "headers", {})
    if _enforced() and "Authorization" not in headers and not self.querystring.get("X-Amz-Signature"):
        if iam_request_cls.__name__ == "S3IAMRequest":
            raise S3AccessDeniedError()
        raise _Error(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
    return _original_authenticate(self, iam_request_cls, resource)


_original_authorize = None
_original_authenticate = None


def install() -> None:
    """Patch moto's authorization. Idempotent."""
    global _original_authorize, _original_authenticate
    if _original_authorize is not None:
        return
    _original_authenticate = ActionAuthenticatorMixin._authenticate_and_authorize_action  # noqa: SLF001
    ActionAuthenticatorMixin._authenticate_and_authorize_action = _authenticate  # noqa: SLF001
    _original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action  # noqa: SLF001
    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = _authorize  # noqa: SLF001
    access_control.IAMRequestBase._check_role_trust_relationship = _check_role_trust_relationship  # noqa: SLF001
    policy_init = access_control.IAMPolicy.__init__

    def iam_policy_init(self, policy):
        # Inline policies of roles made by CloudFormation are kept as dicts, not JSON text.
        if isinstance(policy, dict) and "policy_document" not in policy:
            policy = json.dumps(policy)
        policy_init(self, policy)
        # A statement CloudFormation left out (Fn::If ... AWS::NoValue) is stored as null.
        statements = self._policy_json.get("Statement")  # noqa: SLF001
        if isinstance(statements, list):
            self._policy_json["Statement"] = [st for st in statements if st]  # noqa: SLF001

    access_control.IAMPolicy.__init__ = iam_policy_init


# --------------------------------------------------------------------------------------------
# EC2's delivery of instance-role credentials
# --------------------------------------------------------------------------------------------


def role_credentials(params: dict[str, str]) -> tuple[int, dict]:
    """What EC2 does for an instance launched with an instance profile: the profile's role must
    trust ``Service: ec2.amazonaws.com`` with sts:AssumeRole, then the instance gets that role's
    credentials (session name = instance id). ``(status, JSON body)``."""
    account = params.get("Account") or DEFAULT_ACCOUNT
    region = params.get("Region") or "us-east-1"
    partition = get_partition(region)
    profile_arn = params.get("InstanceProfileArn")
    profile_name = params.get("InstanceProfileName")
    instance_id = params.get("InstanceId")
    if not (profile_arn or profile_name):
        return 400, {"Error": "InstanceProfileArn or InstanceProfileName is required"}
    if not instance_id:
        return 400, {"Error": "InstanceId is required (the role session's name)"}
    try:
        duration = int(params.get("DurationSeconds") or 3600)
    except ValueError:
        return 400, {"Error": f"DurationSeconds must be an integer, got {params['DurationSeconds']!r}"}
    if not 900 <= duration <= 43200:
        return 400, {"Error": f"DurationSeconds must be between 900 and 43200, got {duration}"}
    backend = iam_backends[account][partition]
    which = profile_arn or profile_name
    try:
        profile = (
            backend.get_instance_profile_by_arn(profile_arn)
            if profile_arn
            else backend.get_instance_profile(profile_name)
        )
    except Exception:  # noqa: BLE001 - moto's NotFoundException
        return 404, {"Error": f"instance profile {which} does not exist in account {account}"}
    if len(profile.roles) != 1:
        return 404, {"Error": f"instance profile {which} holds {len(profile.roles)} roles, not one"}
    role = profile.roles[0]

    def principal(kind, value):
        return kind == "Service" and value in ("*", "ec2.amazonaws.com")

    if not trust_allows(role.assume_role_policy_document, "sts:AssumeRole", principal, {}):
        return 403, {
            "Error": f"role {role.arn} (instance profile {which}) does not trust ec2.amazonaws.com "
            "with sts:AssumeRole"
        }
    assumed = sts_backends[account][partition].assume_role(
        region_name=region,
        role_session_name=instance_id,
        role_arn=role.arn,
        policy=None,
        duration=duration,
        external_id=None,
    )
    return 200, {
        "RoleName": role.name,
        "RoleArn": role.arn,
        "AccessKeyId": assumed.access_key_id,
        "SecretAccessKey": assumed.secret_access_key,
        "Token": assumed.session_token,
        "Expiration": assumed.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _request_params(environ) -> dict[str, str]:
    params = {k: v[0] for k, v in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()}
    content_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    if body and content_type in ("", "application/x-www-form-urlencoded"):
        params.update({k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()})
    return params


def role_credentials_app(app, lock):
    """``POST /bake-emulator/ec2/role-credentials`` (form or query parameters InstanceProfileArn or
    InstanceProfileName, InstanceId, DurationSeconds=3600, Account, Region): the instance role's
    credentials as JSON (``role_credentials``). A control endpoint, not an AWS API; everything
    else goes on to ``app``."""

    def serve(environ, start_response):
        if environ.get("PATH_INFO") != ROLE_CREDENTIALS_PATH:
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            status, out = 405, {"Error": f"{ROLE_CREDENTIALS_PATH} takes POST"}
        else:
            params = _request_params(environ)
            with lock:
                status, out = role_credentials(params)
        body = json.dumps(out).encode()
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
        start_response(
            f"{status} {reason[status]}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return serve

