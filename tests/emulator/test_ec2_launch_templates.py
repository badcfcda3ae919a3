"""CreateLaunchTemplateVersion with SourceVersion inherits the source's parameters (AWS EC2 API
reference, CreateLaunchTemplateVersion: SourceVersion)."""

import base64


def test_source_version_is_inherited_except_what_the_request_sets(emulator):
    ec2 = emulator.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    other = ec2.describe_images()["Images"][1]["ImageId"]
    user_data = base64.b64encode(b"[app]\nversion = 1\n").decode()
    lt = ec2.create_launch_template(
        LaunchTemplateName="inherit",
        LaunchTemplateData={
            "ImageId": image,
            "InstanceType": "t3.micro",
            "UserData": user_data,
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        },
    )["LaunchTemplate"]
    v2 = ec2.create_launch_template_version(
        LaunchTemplateId=lt["LaunchTemplateId"],
        SourceVersion="1",
        LaunchTemplateData={"ImageId": other},
    )["LaunchTemplateVersion"]
    assert v2["VersionNumber"] == 2
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"], Versions=["2"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == other
    assert data["InstanceType"] == "t3.micro"
    assert data["UserData"] == user_data
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    # The source version is untouched.
    v1 = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"], Versions=["1"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert v1["ImageId"] == image


def test_without_source_version_nothing_is_inherited(emulator):
    ec2 = emulator.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    lt = ec2.create_launch_template(
        LaunchTemplateName="plain",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]
    ec2.create_launch_template_version(
        LaunchTemplateId=lt["LaunchTemplateId"], LaunchTemplateData={"ImageId": image}
    )
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"], Versions=["2"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "InstanceType" not in data


def test_imds_support_v2_is_recorded_on_the_image(emulator):
    """ModifyImageAttribute ImdsSupport=v2.0 (EC2 API reference): instances launched from the AMI
    require IMDSv2; DescribeImages reports ImdsSupport."""
    ec2 = emulator.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    assert "ImdsSupport" not in ec2.describe_images(ImageIds=[image])["Images"][0]
    ec2.modify_image_attribute(ImageId=image, ImdsSupport={"Value": "v2.0"})
    assert ec2.describe_images(ImageIds=[image])["Images"][0]["ImdsSupport"] == "v2.0"
    attr = ec2.describe_image_attribute(ImageId=image, Attribute="imdsSupport")
    assert attr["ImdsSupport"]["Value"] == "v2.0"
