"""RegisterImage keeps the architecture, virtualization type and EBS root device (AWS EC2 API
reference, RegisterImage), so a source_ami_filter finds the image."""


def test_registered_image_is_found_by_a_base_image_filter(emulator):
    ec2 = emulator.client("ec2")
    image = ec2.register_image(
        Name="debian-12-amd64-20250101-1980",
        Architecture="x86_64",
        VirtualizationType="hvm",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
    )["ImageId"]
    found = ec2.describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "name", "Values": ["debian-12-amd64-*"]},
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "root-device-type", "Values": ["ebs"]},
            {"Name": "virtualization-type", "Values": ["hvm"]},
        ],
    )["Images"]
    assert [i["ImageId"] for i in found] == [image]
    assert found[0]["RootDeviceType"] == "ebs"
    assert found[0]["Architecture"] == "x86_64"
