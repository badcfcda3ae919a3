"""bake's local AWS emulator: moto's server plus what moto lacks.

- ``autoscaling``: instance refreshes, lifecycle hooks/actions and health replacement for moto's
  Auto Scaling backend, following AWS's documented behaviour, on a scalable clock;
- ``cloudformation``: the resource types and attributes bake's stacks need that moto's
  CloudFormation lacks (alarms, the scaling policy, inert stand-ins for the rest);
- ``cloudwatch``: CloudWatch over AWS JSON 1.0 beside the query protocol, from moto's one handler;
  alarms evaluated on their data, their SNS actions run;
- ``cloudwatch_cbor``: the Smithy RPC v2 CBOR protocol for CloudWatch, which the current Rust SDK
  uses for every call and moto does not speak;
- ``ec2`` and ``ec2_images``: what moto's EC2 lacks: launch template versions from their source,
  RegisterImage's devices, and the image lifecycle (deprecation, disable/enable, copies across
  Regions, launch and create-volume permissions);
- ``iam``: IAM enforcement closer to AWS's once switched on (resource ARNs, web identity trust,
  EC2's delivery of instance-role credentials);
- ``server``: serves it all on 127.0.0.1 (``python -m bake_emulator.server --port N``).
"""
