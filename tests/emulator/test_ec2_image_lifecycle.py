"""EC2's image lifecycle (bake_emulator/ec2_images.py), written from the AWS documentation:

- EC2 API reference: EnableImageDeprecation, DisableImageDeprecation, DescribeImages
  (``IncludeDeprecated``, ``IncludeDisabled``), DisableImage, EnableImage, DeregisterImage,
  CopyImage, ModifyImageAttribute, DescribeImageAttribute, ModifySnapshotAttribute,
  DescribeSnapshotAttribute
  (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_<Action>.html);
- EC2 user guide: "Deprecate an Amazon EC2 AMI" (ami-deprecate.html), "Disable an Amazon EC2 AMI"
  (disable-an-ami.html).

One emulator for the module; each test names its images after itself. Another account of the
emulator is reached with moto's ``x-moto-account-id`` header.
"""

import time
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

OWNER = "123456789012"
OTHER = "111122223333"
SOURCE, DEST = "us-east-1", "eu-west-1"


def client_as(emu, account, region=SOURCE):
    ec2 = emu.client("ec2", region)

    def add_account(request, **_):
        request.headers["x-moto-account-id"] = account

    ec2.meta.events.register("before-sign.ec2.*", add_account)
    return ec2


def register(ec2, name, **kw):
    return ec2.register_image(
        Name=name,
        Description=f"{name} description",
        Architecture="arm64",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        **kw,
    )["ImageId"]


def by_name(ec2, name, **kw):
    out = ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}], **kw)["Images"]
    return [i["ImageId"] for i in out]


def by_id(ec2, image_id, **kw):
    return [i["ImageId"] for i in ec2.describe_images(ImageIds=[image_id], **kw)["Images"]]


def image(ec2, image_id, **kw):
    return ec2.describe_images(ImageIds=[image_id], IncludeDisabled=True, **kw)["Images"][0]


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def share(ec2, image_id, account=OTHER):
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": account}]})


def deprecated_soon(ec2, image_id):
    """Deprecate a minute or so from now (the earliest DeprecateAt rounding allows), and wait for
    it: on the emulator's clock at time scale 0.01 that minute is 0.6 real seconds."""
    at = datetime.now(timezone.utc) + timedelta(seconds=61)
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=at)
    time.sleep(1.0)
    return at


# ---------------------------------------------------------------------------- deprecation


def test_deprecation_time_is_rounded_to_the_nearest_minute_and_cancelled(shared_emulator):
    # EnableImageDeprecation, DeprecateAt: "If you specify a value for seconds, Amazon EC2 rounds
    # the seconds to the nearest minute." DescribeImages: Image.DeprecationTime.
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "deprecation-rounded")
    day = (datetime.now(timezone.utc) + timedelta(days=30)).replace(hour=13, minute=17, microsecond=0)
    assert ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=day.replace(second=29))["Return"] is True
    assert image(ec2, image_id)["DeprecationTime"] == day.strftime("%Y-%m-%dT13:17:00.000Z")
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=day.replace(second=30))
    assert image(ec2, image_id)["DeprecationTime"] == day.strftime("%Y-%m-%dT13:18:00.000Z")
    # DisableImageDeprecation: "Cancels the deprecation of the specified AMI."
    assert ec2.disable_image_deprecation(ImageId=image_id)["Return"] is True
    assert "DeprecationTime" not in image(ec2, image_id)


def test_deprecate_at_in_the_past_or_beyond_the_upper_limit_is_refused(shared_emulator):
    # "You can't specify a date in the past. The upper limit for DeprecateAt is 10 years from
    # now, except for public AMIs, where the upper limit is 2 years from the creation date."
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "deprecation-limits")
    now = datetime.now(timezone.utc)
    for at in (now - timedelta(minutes=5), now + timedelta(days=3660)):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=at)
        assert error_code(refused) == "InvalidParameterValue"
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=now + timedelta(days=3600))
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    with pytest.raises(botocore.exceptions.ClientError) as public:
        ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=now + timedelta(days=800))
    assert error_code(public) == "InvalidParameterValue"
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=now + timedelta(days=700))


def test_deprecated_image_stays_visible_to_its_owner(shared_emulator):
    # User guide, "Deprecate an AMI": "AMI owners continue to see deprecated AMIs in
    # DescribeImages API calls." IncludeDeprecated: "If you are the AMI owner, all deprecated
    # AMIs appear in the response regardless of what you specify for this parameter."
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "deprecated-owner")
    deprecated_soon(ec2, image_id)
    assert by_name(ec2, "deprecated-owner") == [image_id]
    assert by_name(ec2, "deprecated-owner", Owners=["self"], IncludeDeprecated=False) == [image_id]


def test_deprecated_image_is_hidden_from_others_unless_asked_for(shared_emulator):
    # User guide: "For AMI users, the deprecated AMI does not appear in DescribeImages API calls
    # unless you specify its ID or specify that deprecated AMIs must appear." IncludeDeprecated:
    # "Default: No deprecated AMIs are included in the response." DescribeImages: the images
    # available include "private images owned by other AWS accounts for which you have explicit
    # launch permissions".
    owner = shared_emulator.client("ec2")
    user = client_as(shared_emulator, OTHER)
    image_id = register(owner, "deprecated-shared")
    share(owner, image_id)
    assert by_name(user, "deprecated-shared") == [image_id]
    assert by_name(user, "deprecated-shared", ExecutableUsers=["self"]) == [image_id]
    assert image(user, image_id)["OwnerId"] == OWNER
    deprecated_soon(owner, image_id)
    assert by_name(user, "deprecated-shared") == []
    assert by_name(user, "deprecated-shared", ExecutableUsers=["self"]) == []
    assert by_name(user, "deprecated-shared", IncludeDeprecated=True) == [image_id]
    assert by_id(user, image_id) == [image_id]
    # Cancelled: visible again.
    owner.disable_image_deprecation(ImageId=image_id)
    assert by_name(user, "deprecated-shared") == [image_id]


def test_only_the_owner_deprecates_or_disables_an_image(shared_emulator):
    # DisableImage: "Only the AMI owner can disable an AMI." A public AMI of Amazon's (moto's
    # ami-12c6146b) is the caller's to launch, not to change.
    ec2 = shared_emulator.client("ec2")
    at = datetime.now(timezone.utc) + timedelta(days=1)
    for call in (
        lambda: ec2.enable_image_deprecation(ImageId="ami-12c6146b", DeprecateAt=at),
        lambda: ec2.disable_image_deprecation(ImageId="ami-12c6146b"),
        lambda: ec2.disable_image(ImageId="ami-12c6146b"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            call()
        assert error_code(refused) == "AuthFailure"
    with pytest.raises(botocore.exceptions.ClientError) as unknown:
        ec2.enable_image_deprecation(ImageId="ami-0000000000000dead", DeprecateAt=at)
    assert error_code(unknown) == "InvalidAMIID.NotFound"


# ---------------------------------------------------------------------------- disable / enable


def test_disabled_image_is_hidden_unshared_and_cannot_launch(shared_emulator):
    # DisableImage: "Sets the AMI state to disabled and removes all launch permissions from the
    # AMI. A disabled AMI can't be used for instance launches. A disabled AMI can't be shared. If
    # an AMI was ... shared with an AWS account ... they lose access to the disabled AMI. A
    # disabled AMI does not appear in DescribeImages API calls by default." IncludeDisabled:
    # "Default: No disabled AMIs are included in the response."
    owner = shared_emulator.client("ec2")
    user = client_as(shared_emulator, OTHER)
    image_id = register(owner, "disabled-image")
    share(owner, image_id)
    assert owner.disable_image(ImageId=image_id)["Return"] is True
    assert image(owner, image_id)["State"] == "disabled"
    assert by_name(owner, "disabled-image") == []
    assert by_name(owner, "disabled-image", Owners=["self"]) == []
    assert by_id(owner, image_id) == []
    assert by_name(owner, "disabled-image", IncludeDisabled=True) == [image_id]
    perms = owner.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == []
    assert by_name(user, "disabled-image", IncludeDisabled=True) == []
    with pytest.raises(botocore.exceptions.ClientError) as shared:
        share(owner, image_id)
    assert error_code(shared) == "OperationNotPermitted"
    # "Launch services, such as launch templates ... can continue to reference disabled AMIs.
    # Subsequent instance launches from a disabled AMI will fail."
    template = owner.create_launch_template(
        LaunchTemplateName="disabled-image-lt", LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    for launch in (
        lambda: owner.run_instances(ImageId=image_id, MinCount=1, MaxCount=1),
        lambda: owner.run_instances(LaunchTemplate={"LaunchTemplateId": template}, MinCount=1, MaxCount=1),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            launch()
        assert error_code(refused) == "InvalidAMIID.Unavailable"


def test_enabled_image_is_available_and_shared_only_anew(shared_emulator):
    # EnableImage: "Re-enables a disabled AMI. The re-enabled AMI is marked as available and can
    # be used for instance launches, appears in describe operations, and can be shared. AWS
    # accounts ... that lost access to the AMI when it was disabled do not regain access
    # automatically."
    owner = shared_emulator.client("ec2")
    user = client_as(shared_emulator, OTHER)
    image_id = register(owner, "enabled-again")
    share(owner, image_id)
    owner.disable_image(ImageId=image_id)
    assert owner.enable_image(ImageId=image_id)["Return"] is True
    assert image(owner, image_id)["State"] == "available"
    assert by_name(owner, "enabled-again") == [image_id]
    instance = owner.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    assert instance["ImageId"] == image_id
    assert by_name(user, "enabled-again") == []
    share(owner, image_id)
    assert by_name(user, "enabled-again") == [image_id]


def test_disabled_image_can_be_deregistered(shared_emulator):
    # DeregisterImage: "Deregisters the specified AMI" (any state: the API reference names no
    # state it refuses); "A deregistered AMI can't be used to launch new instances".
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "disabled-deregistered")
    ec2.disable_image(ImageId=image_id)
    ec2.deregister_image(ImageId=image_id)
    assert by_name(ec2, "disabled-deregistered", IncludeDisabled=True) == []
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        ec2.enable_image(ImageId=image_id)
    assert error_code(gone) == "InvalidAMIID.Unavailable"


# ---------------------------------------------------------------------------- copy


def test_copy_image_to_another_region_with_encryption_and_tags(shared_emulator):
    # CopyImage: "Initiates an AMI copy operation. You can copy an AMI from one Region to
    # another"; Name/Description "for the new AMI in the destination Region"; Encrypted
    # "Specifies whether the destination snapshots of the copied image should be encrypted";
    # KmsKeyId "The identifier of the symmetric ... KMS key to use when creating encrypted
    # volumes"; CopyImageTags "Indicates whether to include your user-defined AMI tags when
    # copying the AMI".
    src = shared_emulator.client("ec2", SOURCE)
    dst = shared_emulator.client("ec2", DEST)
    source_id = register(src, "copy-source")
    src.create_tags(Resources=[source_id], Tags=[{"Key": "bake:release", "Value": "r42"}])
    key = f"arn:aws:kms:{DEST}:{OWNER}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    before = src.describe_images(Owners=["self"], IncludeDisabled=True)["Images"]
    copy_id = dst.copy_image(
        SourceImageId=source_id,
        SourceRegion=SOURCE,
        Name="copy-dest",
        Description="copied to eu-west-1",
        Encrypted=True,
        KmsKeyId=key,
        CopyImageTags=True,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "bake:copy", "Value": "yes"}]}],
    )["ImageId"]
    assert copy_id != source_id and copy_id.startswith("ami-")
    copy = image(dst, copy_id)
    assert (copy["Name"], copy["Description"]) == ("copy-dest", "copied to eu-west-1")
    assert (copy["Architecture"], copy["RootDeviceName"], copy["RootDeviceType"]) == ("arm64", "/dev/xvda", "ebs")
    assert {t["Key"]: t["Value"] for t in copy["Tags"]} == {"bake:release": "r42"}
    ebs = copy["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["Encrypted"], ebs["KmsKeyId"]) == (True, key)
    snapshot = dst.describe_snapshots(SnapshotIds=[ebs["SnapshotId"]])["Snapshots"][0]
    assert (snapshot["Encrypted"], snapshot["KmsKeyId"]) == (True, key)
    assert {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])} == {"bake:copy": "yes"}
    # The source Region is unchanged: no copy there, the source as it was.
    assert src.describe_images(Owners=["self"], IncludeDisabled=True)["Images"] == before
    assert image(src, source_id)["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is False
    with pytest.raises(botocore.exceptions.ClientError) as elsewhere:
        src.describe_images(ImageIds=[copy_id])
    assert error_code(elsewhere) == "InvalidAMIID.NotFound"


def test_copy_image_defaults_tags_and_the_default_key(shared_emulator):
    # CopyImageTags "Default: Your user-defined AMI tags are not copied." Encrypted: "The default
    # KMS key for Amazon EBS is used unless you specify a non-default ... KMS key using
    # KmsKeyId." KmsKeyId: "If you specify a KMS key, you must also set the encrypted state to
    # true."
    src = shared_emulator.client("ec2", SOURCE)
    dst = shared_emulator.client("ec2", DEST)
    source_id = register(src, "copy-defaults")
    src.create_tags(Resources=[source_id], Tags=[{"Key": "bake:release", "Value": "r43"}])
    plain = image(dst, dst.copy_image(SourceImageId=source_id, SourceRegion=SOURCE, Name="copy-plain")["ImageId"])
    assert plain.get("Tags", []) == []
    assert plain["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is False
    encrypted = image(
        dst, dst.copy_image(SourceImageId=source_id, SourceRegion=SOURCE, Name="copy-enc", Encrypted=True)["ImageId"]
    )
    default_key = shared_emulator.client("kms", DEST).describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    assert encrypted["BlockDeviceMappings"][0]["Ebs"]["KmsKeyId"] == default_key
    # "you cannot create an unencrypted copy of an encrypted snapshot"
    again = image(src, src.copy_image(SourceImageId=encrypted["ImageId"], SourceRegion=DEST, Name="copy-back")["ImageId"])
    assert again["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        dst.copy_image(SourceImageId=source_id, SourceRegion=SOURCE, Name="copy-key-only", KmsKeyId="alias/mine")
    assert error_code(refused) == "InvalidParameterDependency"


# ---------------------------------------------------------------------------- permissions


def test_launch_permission_add_and_remove_by_user_id(shared_emulator):
    # ModifyImageAttribute LaunchPermission Add/Remove (LaunchPermission.UserId);
    # DescribeImageAttribute launchPermission. moto already does this; checked here as the
    # product relies on it.
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "launch-permission")
    share(ec2, image_id)
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == [{"UserId": OTHER}]
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Remove": [{"UserId": OTHER}]})
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == []


def test_create_volume_permission_add_and_remove(shared_emulator):
    # ModifySnapshotAttribute: "Adds or removes permission settings for the specified snapshot",
    # CreateVolumePermission "A JSON representation of the snapshot attribute modification"
    # (CreateVolumePermissionModifications: Add, Remove); DescribeSnapshotAttribute
    # createVolumePermission.
    ec2 = shared_emulator.client("ec2")
    image_id = register(ec2, "volume-permission")
    snapshot = image(ec2, image_id)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]

    def permissions():
        out = ec2.describe_snapshot_attribute(SnapshotId=snapshot, Attribute="createVolumePermission")
        return out["CreateVolumePermissions"]

    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission", CreateVolumePermission={"Add": [{"UserId": OTHER}]}
    )
    assert permissions() == [{"UserId": OTHER}]
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission", CreateVolumePermission={"Remove": [{"UserId": OTHER}]}
    )
    assert permissions() == []
    # The flat form (OperationType, UserId.N), which moto already read.
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot, Attribute="createVolumePermission", OperationType="add", UserIds=[OTHER]
    )
    assert permissions() == [{"UserId": OTHER}]
