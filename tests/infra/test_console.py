"""The stacks as the CloudFormation console shows them (run by tests/infra/run's `templates` check).

A console user fills in the parameters from their descriptions, picks ids from drop-downs (which
the console offers only for AWS-specific parameter types) and reads the groups and labels of
AWS::CloudFormation::Interface; the outputs are read from their descriptions too.

    tests/emulator/.venv/bin/python -m pytest -q tests/infra/test_console.py
"""

import re

import cfn

# Parameter names that hold an id of this kind, and the types the console offers a picker for.
TYPED = [
    (re.compile(r"SubnetIds$"), {"List<AWS::EC2::Subnet::Id>"}),
    (re.compile(r"SubnetId$"), {"AWS::EC2::Subnet::Id"}),
    (re.compile(r"VpcId$"), {"AWS::EC2::VPC::Id"}),
    (
        re.compile(r"ImageId$"),
        {"AWS::EC2::Image::Id", "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"},
    ),
    # The name of an SSM parameter holding an AMI id (CloudFormation reads its value).
    (re.compile(r"ImageParameter$"), {"AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"}),
    (re.compile(r"SecurityGroupIds$"), {"List<AWS::EC2::SecurityGroup::Id>"}),
    (re.compile(r"SecurityGroupId$"), {"AWS::EC2::SecurityGroup::Id"}),
    (re.compile(r"HostedZoneId$"), {"AWS::Route53::HostedZone::Id"}),
    (re.compile(r"KeyName$"), {"AWS::EC2::KeyPair::KeyName"}),
]


def description_problems(template):
    """Parameters and outputs without a (non-empty) Description."""
    out = []
    for kind in ("Parameters", "Outputs"):
        for name, body in (template.get(kind) or {}).items():
            d = body.get("Description")
            if not isinstance(d, str) or not d.strip():
                out.append(f"{kind[:-1].lower()} {name} has no Description")
    return out


def type_problems(template):
    """Parameters named like an id (…SubnetIds, …VpcId, …ImageId, …) but of another type."""
    out = []
    for name, body in (template.get("Parameters") or {}).items():
        for pattern, types in TYPED:
            if pattern.search(name):
                if body.get("Type") not in types:
                    out.append(f"parameter {name} is {body.get('Type')}, not {' or '.join(sorted(types))}")
                break
    return out


def interface_problems(template):
    """Every parameter in exactly one ParameterGroup and labelled; nothing unknown named."""
    params = set(template.get("Parameters") or {})
    ui = (template.get("Metadata") or {}).get("AWS::CloudFormation::Interface")
    if not params:
        return []
    if not ui:
        return ["no AWS::CloudFormation::Interface"]
    out, seen = [], []
    for group in ui.get("ParameterGroups") or []:
        if not (group.get("Label") or {}).get("default"):
            out.append(f"parameter group {group.get('Parameters')} has no Label")
        seen += group.get("Parameters") or []
    for name in sorted(params - set(seen)):
        out.append(f"parameter {name} is in no ParameterGroup")
    for name in sorted({n for n in seen if seen.count(n) > 1}):
        out.append(f"parameter {name} is in more than one ParameterGroup")
    for name in sorted(set(seen) - params):
        out.append(f"ParameterGroups name {name}, which is no parameter")
    labels = ui.get("ParameterLabels") or {}
    for name in sorted(params):
        if not (labels.get(name) or {}).get("default"):
            out.append(f"parameter {name} has no ParameterLabel")
    for name in sorted(set(labels) - params):
        out.append(f"ParameterLabels name {name}, which is no parameter")
    return out


def _all(check):
    problems = []
    for stem, t in cfn.templates().items():
        problems += [f"{stem}.yaml: {p}" for p in check(t)]
    return problems


def test_every_parameter_and_output_is_described():
    assert _all(description_problems) == []


def test_id_parameters_have_aws_types():
    assert _all(type_problems) == []


def test_interface_groups_and_labels_every_parameter():
    assert _all(interface_problems) == []


# The checks themselves, on templates that break them (so that a check that finds nothing
# anywhere cannot pass the tests above).
BAD = {
    "Parameters": {
        "PrivateSubnetIds": {"Type": "CommaDelimitedList", "Description": "subnets"},
        "VpcId": {"Type": "String"},
        "ImageId": {"Type": "String", "Description": "AMI"},
        "Other": {"Type": "String", "Description": ""},
    },
    "Metadata": {
        "AWS::CloudFormation::Interface": {
            "ParameterGroups": [
                {"Label": {"default": "Network"}, "Parameters": ["PrivateSubnetIds", "VpcId", "Gone"]},
                {"Label": {"default": "Image"}, "Parameters": ["VpcId"]},
            ],
            "ParameterLabels": {"VpcId": {"default": "VPC"}},
        }
    },
    "Outputs": {"Thing": {"Value": "x"}, "Other": {"Value": "y", "Description": "described"}},
}


def test_checks_find_what_they_look_for():
    assert description_problems(BAD) == [
        "parameter VpcId has no Description",
        "parameter Other has no Description",
        "output Thing has no Description",
    ]
    assert type_problems(BAD) == [
        "parameter PrivateSubnetIds is CommaDelimitedList, not List<AWS::EC2::Subnet::Id>",
        "parameter VpcId is String, not AWS::EC2::VPC::Id",
        "parameter ImageId is String, not AWS::EC2::Image::Id or "
        "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
    ]
    assert interface_problems(BAD) == [
        "parameter ImageId is in no ParameterGroup",
        "parameter Other is in no ParameterGroup",
        "parameter VpcId is in more than one ParameterGroup",
        "ParameterGroups name Gone, which is no parameter",
        "parameter ImageId has no ParameterLabel",
        "parameter Other has no ParameterLabel",
        "parameter PrivateSubnetIds has no ParameterLabel",
    ]
    assert interface_problems({"Parameters": {"A": {"Type": "String"}}}) == ["no AWS::CloudFormation::Interface"]


def test_fleet_rules_refuse_max_below_min():
    """Each MinSize rule lists exactly the MaxSize values below it (MaxSize's own MinValue is 2)."""
    fleet = cfn.templates()["fleet"]
    assert fleet["Parameters"]["MaxSize"]["MinValue"] == fleet["Parameters"]["MinSize"]["MinValue"] == 2
    rules = fleet["Rules"]
    assert len(rules) >= 5
    for name, rule in rules.items():
        cond = rule["RuleCondition"]["Fn::Equals"]
        assert cond[0] == {"Ref": "MinSize"}, name
        k = int(cond[1])
        (a,) = rule["Assertions"]
        values, ref = a["Assert"]["Fn::Not"][0]["Fn::Contains"]
        assert ref == {"Ref": "MaxSize"}, name
        assert values == [str(i) for i in range(2, k)], name


def test_network_endpoints_cover_the_agents_services():
    """The S3 gateway endpoint always; interface endpoints (opt-in) for every service bake-agent
    calls and for Session Manager, in both private subnets, behind HTTPS-only ingress."""
    import aws_calls

    net = cfn.templates()["network"]
    res = net["Resources"]
    eps = {r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: (lid, r) for lid, r in res.items() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    lid, s3 = eps.pop("s3")
    assert s3["Properties"]["VpcEndpointType"] == "Gateway" and "Condition" not in s3
    assert cfn.refs(s3["Properties"]["RouteTableIds"]) == {"PrivateRouteTableA", "PrivateRouteTableB"}
    # IAM prefix -> endpoint service name (CloudWatch's endpoint is "monitoring").
    endpoint = {"cloudwatch": "monitoring"}
    agent_services = {endpoint.get(a.split(":")[0], a.split(":")[0]) for a in aws_calls.actions("bake-agent")}
    assert agent_services, "no AWS call found in agent/src"
    assert agent_services | {"ssmmessages", "ec2messages"} <= set(eps), sorted(eps)
    for svc, (lid, ep) in eps.items():
        p = ep["Properties"]
        assert ep.get("Condition") == "WithInterfaceEndpoints", lid
        assert p["VpcEndpointType"] == "Interface" and p["PrivateDnsEnabled"] is True, lid
        assert cfn.refs(p["SubnetIds"]) == {"PrivateSubnetA", "PrivateSubnetB"}, lid
        assert cfn.refs(p["SecurityGroupIds"]) == {"EndpointSecurityGroup"}, lid
    sg = res["EndpointSecurityGroup"]["Properties"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in sg["SecurityGroupIngress"]] == [("tcp", 443, 443)]


def _deploy_md_parameters():
    """{stem: {name: (type, default, description)}} from docs/deploy.md's "### Parameters"."""
    text = (cfn.ROOT / "docs" / "deploy.md").read_text()
    section = text.split("### Parameters\n", 1)[1].split("\n### ", 1)[0]
    out, stem = {}, None
    for line in section.splitlines():
        m = re.match(r"^\*\*(\w+)\.yaml\*\*$", line)
        if m:
            stem = m.group(1)
            out[stem] = {}
            continue
        m = re.match(r"^\| `(\w+)` \| `([^`]+)` \| (.+?) \| (.+) \|$", line)
        if m and stem:
            out[stem][m.group(1)] = (m.group(2), m.group(3), m.group(4).replace("\\|", "|"))
    return out


def test_deploy_md_lists_every_parameter_as_the_console_shows_it():
    doc = _deploy_md_parameters()
    want = {}
    for stem, t in cfn.templates().items():
        if "Parameters" not in t:  # .checkov.yaml
            continue
        want[stem] = {}
        for k, v in t["Parameters"].items():
            if k == "EnvName":
                assert v.get("Default") == "prod", stem
                continue
            d = v.get("Default")
            d = "–" if d is None else ('`""`' if d == "" else f"`{d}`")
            want[stem][k] = (v["Type"], d, " ".join(v["Description"].split()))
    assert doc == want
