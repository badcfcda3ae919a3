"""EC2's image lifecycle as the AWS EC2 API reference and user guide describe it, where moto 5.2.5
lacks it or differs (docs/emulator.md, "EC2 images: lifecycle").

1. **EnableImageDeprecation / DisableImageDeprecation** (moto: not implemented, 500). DeprecateAt
   is rounded to the nearest minute ("If you specify a value for seconds, Amazon EC2 rounds the
   seconds to the nearest minute"), may not be in the past, at most 10 years from now (2 years from
   the creation date for a public AMI); DescribeImages shows it as ``DeprecationTime``. The wait
   until it takes effect is an emulated delay (``BAKE_EMULATOR_TIME_SCALE``), so a test need not
   wait a real minute.
2. **DescribeImages**: "AMI owners continue to see deprecated AMIs"; to others a deprecated AMI
   appears only with ``IncludeDeprecated=true`` or when asked by ``ImageIds`` (user guide,
   "Deprecate an AMI"). "No disabled AMIs are included in the response" unless
   ``IncludeDisabled=true``. Images of other accounts of the emulator shared with the caller
   (``LaunchPermission`` with its account id, or public) are listed too ("private images owned by
   other AWS accounts for which you have explicit launch permissions"): moto lists only the
   caller's own account's images.
3. **DisableImage** "removes all launch permissions from the AMI" (moto keeps them); a disabled AMI
   "can't be shared" (ModifyImageAttribute adding launch permissions is refused) and "can't be
   used for instance launches" (RunInstances, by ImageId or through a launch template: moto
   launches it). Only the owner may disable, enable or deprecate an AMI.
4. **CopyImage**: the copy keeps the source's architecture, virtualization type, root device and
   boot mode (moto: ``/dev/sda1``, ``standard``), its snapshot records ``Encrypted``/``KmsKeyId``
   (an encrypted source gives an encrypted copy; ``Encrypted`` without a key: the destination
   Region's ``aws/ebs`` key; ``KmsKeyId`` needs ``Encrypted``), and ``CopyImageTags=true``
   copies the source's tags but those prefixed ``aws:``; ``TagSpecifications`` tag the new AMI
   and snapshots (moto ignores all of these). Block device mappings show ``Encrypted`` and
   ``KmsKeyId``.
5. **ModifySnapshotAttribute** ``CreateVolumePermission={Add|Remove: [{UserId|Group}]}`` (the
   form the SDKs send for a structure): moto reads only ``OperationType``/``UserIds``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidAMIIdError,
    InvalidParameterDependency,
    MalformedAMIIdError,
    UnvailableAMIIdError,
)
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.utils import generic_filter
from moto.core.responses import ActionResult, EmptyResult

from . import autoscaling

_installed = False


# --------------------------------------------------------------------------------------------
# Deprecation
# --------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(value) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip().strip('"')
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = datetime.fromtimestamp(float(text), timezone.utc)
            except ValueError:
                raise _invalid("DeprecateAt", text) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def round_to_minute(moment: datetime) -> datetime:
    """EnableImageDeprecation: "Amazon EC2 rounds the seconds to the nearest minute" (30 s up)."""
    base = moment.replace(second=0, microsecond=0)
    return base + timedelta(minutes=1) if moment - base >= timedelta(seconds=30) else base


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _invalid(parameter: str, value: str, why: str = "") -> EC2ClientError:
    return EC2ClientError(
        "InvalidParameterValue", f"Value ({value}) for parameter {parameter} is invalid.{why}"
    )


def is_deprecated(ami) -> bool:
    """Whether the AMI's deprecation has taken effect: its DeprecationTime, reached on the
    emulator's scalable clock (the wait from EnableImageDeprecation on is an emulated delay)."""
    due = getattr(ami, "bake_deprecated_at", None)
    return due is not None and time.monotonic() >= due


def _creation_date(ami) -> datetime:
    created = ami.creation_date
    if isinstance(created, str):
        created = _parse_time(created)
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return created


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def _own_image(resp, ami_id: str):
    """The caller's image (its own account's backend), or moto's errors for an unknown one."""
    backend = resp.ec2_backend
    if ami_id and not ami_id.startswith("ami-"):
        raise MalformedAMIIdError([ami_id])
    if ami_id in backend.deleted_amis:
        raise UnvailableAMIIdError(ami_id)
    ami = backend.amis.get(ami_id)
    if ami is None:
        raise InvalidAMIIdError(ami_id)
    return ami


def _owned_image(resp, ami_id: str):
    """"Only the AMI owner can" disable, enable or deprecate it."""
    ami = _own_image(resp, ami_id)
    if ami.owner_id != resp.current_account:
        raise EC2ClientError("AuthFailure", f"Not authorized for image:{ami_id}")
    return ami


def _shared_with(ami, account: str) -> bool:
    return {"Group": "all"} in ami.launch_permissions or {"UserId": account} in ami.launch_permissions


def _shared_images(resp) -> list:
    """Images of the emulator's other accounts in this Region that are shared with the caller."""
    caller, region = resp.current_account, resp.region
    seen = set(resp.ec2_backend.amis)
    out = []
    for account, per_region in list(ec2_backends.items()):
        if account == caller:
            continue
        backend = dict.get(per_region, region)  # the Region's backend only if it exists
        if backend is None:
            continue
        for ami in list(backend.amis.values()):
            if ami.id not in seen and ami.owner_id == account and _shared_with(ami, caller):
                seen.add(ami.id)
                out.append(ami)
    return out


def _scope_shared(images, caller: str, ami_ids, owners, exec_users, filters) -> list:
    """moto's DescribeImages scoping (``backend.describe_images``) for shared images."""
    if ami_ids:
        return [a for a in images if a.id in ami_ids]
    if exec_users:
        users = {caller if u == "self" else u for u in exec_users}
        images = [
            a
            for a in images
            if ("all" in users and a.is_public) or any({"UserId": u} in a.launch_permissions for u in users)
        ]
    if owners:
        owners = {caller if o == "self" else o for o in owners}
        images = [a for a in images if a.owner_id in owners or a.owner_alias in owners]
    if filters:
        images = generic_filter(filters, images)
    return images


def describe_images(self) -> ActionResult:
    """DescribeImages with AWS's lifecycle rules and the images shared by other accounts."""
    self.error_on_dryrun()
    caller = self.current_account
    ami_ids = self._get_param("ImageIds", [])
    filters = self._filters_from_querystring()
    owners = self._get_param("Owners", [])
    exec_users = self._get_param("ExecutableUsers", [])
    include_deprecated = bool(self._get_bool_param("IncludeDeprecated", False))
    include_disabled = bool(self._get_bool_param("IncludeDisabled", False))
    shared = _scope_shared(_shared_images(self), caller, ami_ids, owners, exec_users, filters)
    try:
        images = self.ec2_backend.describe_images(
            ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners
        )
    except InvalidAMIIdError:
        if not shared:
            raise
        images = []
    images = list(images) + shared

    def shown(ami) -> bool:
        if ami.state == "disabled" and not include_disabled:
            return False
        if is_deprecated(ami) and ami.owner_id != caller:
            return include_deprecated or bool(ami_ids)
        return True

    return ActionResult({"Images": [a for a in images if shown(a)]})


def enable_image_deprecation(self) -> ActionResult:
    ami = _owned_image(self, self._get_param("ImageId"))
    raw = self._get_param("DeprecateAt")
    if raw in (None, ""):
        raise EC2ClientError("MissingParameter", "The request must contain the parameter DeprecateAt")
    asked = _parse_time(raw)
    now = _utcnow()
    if asked < now:
        raise _invalid("DeprecateAt", raw if isinstance(raw, str) else asked.isoformat(), " You can't specify a date in the past.")
    at = round_to_minute(asked)
    limit = _add_years(_creation_date(ami), 2) if ami.is_public else _add_years(now, 10)
    if at > limit:
        which = "2 years from the creation date of a public AMI" if ami.is_public else "10 years from now"
        raise _invalid("DeprecateAt", at.strftime("%Y-%m-%dT%H:%M:%SZ"), f" The upper limit is {which}.")
    self.error_on_dryrun()
    ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ami.bake_deprecated_at = time.monotonic() + autoscaling._delay(max(0.0, (at - now).total_seconds()))  # noqa: SLF001
    return ActionResult({"Return": True})


def disable_image_deprecation(self) -> ActionResult:
    ami = _owned_image(self, self._get_param("ImageId"))
    self.error_on_dryrun()
    ami.deprecation_time = None
    ami.bake_deprecated_at = None
    return ActionResult({"Return": True})


# --------------------------------------------------------------------------------------------
# Disable / enable
# --------------------------------------------------------------------------------------------


def _wrap_owned(original):
    def handler(self):
        _owned_image(self, self._get_param("ImageId"))
        return original(self)

    return handler


def _wrap_disable(original):
    def disable_image(self):
        ami = _owned_image(self, self._get_param("ImageId"))
        result = original(self)
        # "Sets the AMI state to disabled and removes all launch permissions from the AMI."
        ami.launch_permissions = []
        return result

    return disable_image


def _wrap_modify_image_attribute(original):
    def modify_image_attribute(self):
        adds = (self._get_param("LaunchPermission") or {}).get("Add") or []
        if not adds and self._get_param("OperationType") == "add":
            adds = self._get_param("UserIds", []) or self._get_param("UserGroups", []) or ["?"]
        ami_id = self._get_param("ImageId")
        if adds and self.ec2_backend.amis.get(ami_id) is not None:
            if self.ec2_backend.amis[ami_id].state == "disabled":
                # DisableImage: "A disabled AMI can't be shared."
                raise EC2ClientError(
                    "OperationNotPermitted", f"The image {ami_id} is disabled and cannot be shared."
                )
        return original(self)

    return modify_image_attribute


def _launch_image_id(resp):
    image_id = resp._get_param("ImageId")  # noqa: SLF001
    if image_id:
        return image_id
    spec = resp._get_param("LaunchTemplate") or {}  # noqa: SLF001
    tmpl_id, name = spec.get("LaunchTemplateId"), spec.get("LaunchTemplateName")
    if not (tmpl_id or name):
        return None
    backend = resp.ec2_backend
    try:
        template = backend.get_launch_template(tmpl_id) if tmpl_id else backend.get_launch_template_by_name(name)
        version = spec.get("Version") or "$Default"
        if version == "$Default":
            version = template.default_version_number
        elif version == "$Latest":
            version = template.latest_version_number
        return template.get_version(version).image_id
    except Exception:  # noqa: BLE001 - moto answers its own error for a bad template
        return None


def _wrap_run_instances(original):
    def run_instances(self):
        image_id = _launch_image_id(self)
        ami = self.ec2_backend.amis.get(image_id) if image_id else None
        if ami is not None and ami.state == "disabled":
            # DisableImage: "A disabled AMI can't be used for instance launches."
            raise EC2ClientError(
                "InvalidAMIID.Unavailable", f"The image id '[{image_id}]' is disabled and cannot be launched"
            )
        return original(self)

    return run_instances


# --------------------------------------------------------------------------------------------
# CopyImage
# --------------------------------------------------------------------------------------------


def _tag_specs(resp, allowed=("image", "snapshot")) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for spec in resp._get_param("TagSpecifications", []) or []:  # noqa: SLF001
        kind = spec.get("ResourceType")
        if kind not in allowed:
            raise EC2ClientError(
                "InvalidParameterValue", f"'{kind}' is not a valid taggable resource type for this operation."
            )
        for tag in spec.get("Tags", []) or []:
            out.setdefault(kind, {})[tag["Key"]] = tag.get("Value", "")
    return out


def _wrap_copy_image(original):
    def copy_image(self):
        encrypted = bool(self._get_bool_param("Encrypted", False))
        kms_key_id = self._get_param("KmsKeyId")
        if kms_key_id and not encrypted:
            # KmsKeyId: "If you specify a KMS key, you must also set the encrypted state to true."
            raise InvalidParameterDependency("KmsKeyId", "Encrypted")
        tags = _tag_specs(self)
        result = original(self)
        backend = self.ec2_backend
        copy = backend.amis[result.result["ImageId"]]
        source_region = self._get_param("SourceRegion")
        source = ec2_backends[self.current_account][source_region].amis[self._get_param("SourceImageId")]
        for attr in ("architecture", "virtualization_type", "root_device_name", "root_device_type", "boot_mode", "imds_support", "imds"):
            if hasattr(source, attr):
                setattr(copy, attr, getattr(source, attr))
        snapshot = copy.ebs_snapshot
        if encrypted or source.ebs_snapshot.encrypted:
            # "You can encrypt a copy of an unencrypted snapshot, but you cannot create an
            # unencrypted copy of an encrypted snapshot. The default KMS key for Amazon EBS is
            # used unless you specify a non-default ... KMS key using KmsKeyId."
            snapshot.encrypted = True
            snapshot.kms_key_id = kms_key_id or backend._create_default_encryption_key()  # noqa: SLF001
        if self._get_bool_param("CopyImageTags", False):
            # "System tags (prefixed with aws:)" are not copied.
            for tag in source.get_tags():
                if not tag["key"].startswith("aws:"):
                    copy.add_tag(tag["key"], tag["value"])
        for key, value in tags.get("image", {}).items():
            copy.add_tag(key, value)
        for key, value in tags.get("snapshot", {}).items():
            snapshot.add_tag(key, value)
        return result

    return copy_image


def _block_device_mappings(self) -> list[dict]:
    """moto's mapping of the root snapshot, with its encryption as DescribeImages shows it."""
    ebs = {
        "SnapshotId": self.ebs_snapshot.id,
        "VolumeSize": 15,
        "DeleteOnTermination": False,
        "VolumeType": "standard",
        "Encrypted": bool(self.ebs_snapshot.encrypted),
    }
    if self.ebs_snapshot.kms_key_id:
        ebs["KmsKeyId"] = self.ebs_snapshot.kms_key_id
    return [{"DeviceName": self.root_device_name, "Ebs": ebs}]


# --------------------------------------------------------------------------------------------
# ModifySnapshotAttribute
# --------------------------------------------------------------------------------------------


def _wrap_modify_snapshot_attribute(original):
    def modify_snapshot_attribute(self):
        permission = self._get_param("CreateVolumePermission") or {}
        if not permission or self._get_param("OperationType"):
            return original(self)
        self.error_on_dryrun()
        snapshot_id = self._get_param("SnapshotId")
        for operation, method in (
            ("Add", self.ec2_backend.add_create_volume_permission),
            ("Remove", self.ec2_backend.remove_create_volume_permission),
        ):
            entries = permission.get(operation) or []
            users = [e["UserId"] for e in entries if e.get("UserId")]
            groups = [e["Group"] for e in entries if e.get("Group")]
            if users or groups:
                method(snapshot_id, user_ids=users, groups=groups)
        return EmptyResult()

    return modify_snapshot_attribute


def install():
    """Patch moto's AMI, instance and snapshot handlers. Idempotent; after ``ec2.install()``."""
    global _installed
    if _installed:
        return
    _installed = True
    Ami.deprecation_time = None
    Ami.bake_deprecated_at = None
    Ami.block_device_mappings = property(_block_device_mappings)
    AmisResponse.describe_images = describe_images
    AmisResponse.enable_image_deprecation = enable_image_deprecation
    AmisResponse.disable_image_deprecation = disable_image_deprecation
    AmisResponse.disable_image = _wrap_disable(AmisResponse.disable_image)
    AmisResponse.enable_image = _wrap_owned(AmisResponse.enable_image)
    AmisResponse.modify_image_attribute = _wrap_modify_image_attribute(AmisResponse.modify_image_attribute)
    AmisResponse.copy_image = _wrap_copy_image(AmisResponse.copy_image)
    InstanceResponse.run_instances = _wrap_run_instances(InstanceResponse.run_instances)
    ElasticBlockStore.modify_snapshot_attribute = _wrap_modify_snapshot_attribute(
        ElasticBlockStore.modify_snapshot_attribute
    )
