"""What moto's EC2 lacks and bake relies on.

1. ModifyImageAttribute ``ImdsSupport=v2.0`` (AWS: "the AMI's instances require IMDSv2"; it
   cannot be undone): moto ignores it. Here it is recorded and shown by DescribeImages
   (``ImdsSupport``) and DescribeImageAttribute (``imdsSupport``).

2. Launch template versions that inherit from their SourceVersion, as AWS documents.

CreateLaunchTemplateVersion with ``SourceVersion``: "The new version inherits the same launch
parameters as the source version, except for parameters that you specify in LaunchTemplateData."
moto ignores SourceVersion, so a new version that only names an ImageId would lose the source's
UserData, instance type, metadata options, profile… This keeps top-level keys of the source's data
that the request does not set (AWS merges at the top level of LaunchTemplateData as well).

3. RegisterImage's ``Architecture``, ``VirtualizationType``, ``RootDeviceName`` and
``BlockDeviceMappings``: moto keeps only the name and description, so a registered image has no
architecture and root device type ``standard``, and no ``source_ami_filter`` (architecture,
root-device-type, virtualization-type) can find it. AWS: the root device type is ``ebs`` when the
root device's mapping is an EBS volume.
"""

import copy

from moto.ec2.exceptions import InvalidParameterValueError
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.launch_templates import LaunchTemplates

_installed = False


def install():
    """Patch moto's CreateLaunchTemplateVersion. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    original = LaunchTemplates.create_launch_template_version

    def create_launch_template_version(self):
        source = self._get_param("SourceVersion")
        if not source:
            return original(self)
        name = self._get_param("LaunchTemplateName")
        tmpl_id = self._get_param("LaunchTemplateId")
        template = (
            self.ec2_backend.get_launch_template(tmpl_id)
            if tmpl_id
            else self.ec2_backend.get_launch_template_by_name(name)
        )
        base = copy.deepcopy(template.get_version(source).data)
        get_param = self._get_param

        def merged_get_param(param_name, if_none=None):
            value = get_param(param_name, if_none)
            if param_name == "LaunchTemplateData":
                return {**base, **(value or {})}
            return value

        self._get_param = merged_get_param
        try:
            return original(self)
        finally:
            del self._get_param

    LaunchTemplates.create_launch_template_version = create_launch_template_version

    original_modify = AmisResponse.modify_image_attribute

    def modify_image_attribute(self):
        imds = self._get_param("ImdsSupport.Value") or (self._get_param("ImdsSupport") or {}).get("Value")
        if not imds:
            return original_modify(self)
        if imds != "v2.0":
            raise InvalidParameterValueError(imds)
        ami = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
        ami.imds_support = imds
        ami.imds = imds
        return original_modify(self)

    AmisResponse.modify_image_attribute = modify_image_attribute

    original_register = AmisResponse.register_image

    def register_image(self):
        result = original_register(self)
        ami = self.ec2_backend.describe_images(ami_ids=[result.result["ImageId"]])[0]
        ami.architecture = self._get_param("Architecture") or "x86_64"
        ami.virtualization_type = self._get_param("VirtualizationType") or "hvm"
        root = self._get_param("RootDeviceName")
        if root:
            ami.root_device_name = root
        mappings = self._get_param("BlockDeviceMappings") or self._get_param("BlockDeviceMapping") or []
        if any(m.get("DeviceName") == ami.root_device_name and "Ebs" in m for m in mappings):
            ami.root_device_type = "ebs"
        return result

    AmisResponse.register_image = register_image
