"""The shipped IAM policies (cloudformation/iam.yaml) grant every AWS action the binaries call.

The actions come from the code (aws_calls.py scans the Rust sources for SDK operation calls)
and, for `bake build`, from Packer's documented needs (packer-iam-actions.txt): a call added to
the code without its permission fails here, not in the first real deployment. Actions only:
the emulator does not enforce IAM (yet), and resource scoping is checked below only where a
contract between the binaries names the resource.
"""

import fnmatch
import re
import tomllib
from pathlib import Path

import aws_calls
import cfn

HERE = Path(__file__).resolve().parent
# Values for ${...} in Fn::Sub when matching resource ARNs.
SAMPLE = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "EnvName": "prod"}
# Which role each binary runs with.
ROLE_OF = {"bake": "ReleaseRole", "bake-agent": "InstanceRole"}


def _iam():
    return cfn.load(cfn.CFN / "iam.yaml")


def _statements(role):
    """Allow statements of `role`'s inline policies and of the AWS::IAM::Policy resources
    attached to it. A statement under Fn::If counts only if both branches grant it (here: never,
    the other branch is AWS::NoValue), so a conditional grant is not taken for granted."""
    res = _iam()["Resources"]
    docs = [p["PolicyDocument"] for p in res[role]["Properties"].get("Policies", [])]
    for r in res.values():
        if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {"Ref": role} in r["Properties"].get("Roles", []):
            docs.append(r["Properties"]["PolicyDocument"])
    out = []
    for d in docs:
        for s in d["Statement"]:
            if isinstance(s, dict) and s.get("Effect") == "Allow" and "Action" in s:
                out.append(s)
    return out


def _as_list(v):
    return v if isinstance(v, list) else [v]


def _grants(statements, action):
    return [s for s in statements if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(s["Action"]))]


def _resolve(value):
    """A resource ARN pattern with the sample values, or None when it cannot be resolved here."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: SAMPLE.get(m.group(1), "<?>"), value["Fn::Sub"])
    return None


# Calls that need no permission ("No permissions are required to perform this operation", the
# STS API reference of GetCallerIdentity: not even an explicit deny stops it).
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


def _missing(binary, wanted):
    grants = _statements(ROLE_OF[binary])
    return {
        a: w for a, w in wanted.items() if a not in NEEDS_NO_PERMISSION and not _grants(grants, a)
    }


def test_calls_are_found_in_the_code():
    """The scan itself: each binary's best-known calls are among what it finds."""
    bake, agent = aws_calls.actions("bake"), aws_calls.actions("bake-agent")
    assert "autoscaling:StartInstanceRefresh" in bake and "ec2:CreateLaunchTemplateVersion" in bake, bake
    assert "elasticloadbalancing:DescribeTargetHealth" in bake, bake  # `bake status`
    assert "ssm:GetParametersByPath" in agent and "cloudwatch:PutMetricData" in agent, agent
    assert len(bake) >= 15 and len(agent) >= 12, (len(bake), len(agent))


def test_release_role_grants_every_call_of_bake_and_packer():
    wanted = aws_calls.actions("bake")
    for line in (HERE / "packer-iam-actions.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            wanted.setdefault(line, []).append("packer (tests/infra/packer-iam-actions.txt)")
    missing = _missing("bake", wanted)
    assert not missing, "the release role (iam.yaml ReleaseRole) does not allow:\n" + "\n".join(
        f"  {a}  called at {', '.join(w)}" for a, w in sorted(missing.items()))


def test_instance_role_grants_every_call_of_the_agent():
    wanted = aws_calls.actions("bake-agent")
    missing = _missing("bake-agent", wanted)
    assert not missing, "the instance role (iam.yaml InstanceRole) does not allow:\n" + "\n".join(
        f"  {a}  called at {', '.join(w)}" for a, w in sorted(missing.items()))


def _allows_on(role, action, arn):
    for s in _grants(_statements(role), action):
        for r in _as_list(s["Resource"]):
            pattern = _resolve(r)
            if pattern is not None and fnmatch.fnmatchcase(arn, pattern):
                return True
    return False


def test_refresh_preferences_parameter_is_shared_as_agreed():
    """`bake release` records the refresh preferences in /bake/refresh-preferences/<group>
    (PutParameter) and reads them back; the agent's secret-rotation rollout reads them."""
    arn = "arn:aws:ssm:us-east-1:123456789012:parameter/bake/refresh-preferences/bake-prod"
    assert _allows_on("ReleaseRole", "ssm:PutParameter", arn)
    assert _allows_on("ReleaseRole", "ssm:GetParameter", arn)
    assert _allows_on("InstanceRole", "ssm:GetParameter", arn)
    assert not _allows_on("InstanceRole", "ssm:PutParameter", arn), "instances must not rewrite it"
    other = "arn:aws:ssm:us-east-1:123456789012:parameter/bake/refresh-preferences/bake-staging"
    assert not _allows_on("ReleaseRole", "ssm:PutParameter", other), "scoped to its environment"


def test_build_instance_profile_is_exported_and_passable():
    """Packer's build instance uses iam.yaml's profile (bake.toml iam_instance_profile), so the
    release role needs no IAM write access; it may pass that profile's role and look it up."""
    t = _iam()
    out = t["Outputs"]["BuildInstanceProfileName"]
    assert out["Value"] == {"Ref": "BuildInstanceProfile"}
    assert out["Export"]["Name"] == {"Fn::Sub": "bake-${EnvName}-BuildInstanceProfileName"}
    passes = [s for s in _grants(_statements("ReleaseRole"), "iam:PassRole")]
    assert any({"Fn::GetAtt": "BuildRole.Arn"} in _as_list(s["Resource"]) for s in passes), passes
    assert _allows_on("ReleaseRole", "iam:GetInstanceProfile", "arn:aws:iam::123456789012:instance-profile/bake-prod-build")
    for a in ("iam:CreateRole", "iam:CreateInstanceProfile", "iam:PutRolePolicy"):
        assert not _grants(_statements("ReleaseRole"), a), f"the release role must not {a}"


def test_image_parameter_is_the_one_the_fleet_reads():
    """`bake release` sets the fleet's image parameter (bake.toml target.image_parameter) after a
    successful refresh and reads it back; fleet.yaml's ImageParameter names it by default, and
    the release role may write that one parameter of its environment and no other."""
    fleet = cfn.load(cfn.CFN / "fleet.yaml")
    param = fleet["Parameters"]["ImageParameter"]
    assert param["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    name = param["Default"]
    assert name == f"/bake/{SAMPLE['EnvName']}/image-id", name
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{name}"
    assert _allows_on("ReleaseRole", "ssm:PutParameter", arn)
    assert _allows_on("ReleaseRole", "ssm:GetParameter", arn)
    assert not _allows_on("InstanceRole", "ssm:PutParameter", arn), "instances must not rewrite it"
    for other in ("/bake/staging/image-id", "/bake/prod/app/image-id", "/bake/prod/image-id-old"):
        assert not _allows_on("ReleaseRole", "ssm:PutParameter", f"arn:aws:ssm:us-east-1:123456789012:parameter{other}"), other
    # The example bake.toml writes the parameter the fleet stack reads.
    example = tomllib.loads((HERE.parents[1] / "examples" / "bake.toml").read_text())
    assert example["target"]["image_parameter"] == name


def test_promotion_is_allowed_in_the_promotion_regions_only():
    """`bake promote` calls CopyImage, CreateTags, DescribeImages, ModifyImageAttribute and
    ModifySnapshotAttribute in each destination region, which PackerBuild (this stack's region
    only) does not cover: the Promotion statement allows exactly what bake/src/promote.rs calls,
    in the regions of PromotionRegions only (none by default)."""
    t = _iam()
    p = t["Parameters"]["PromotionRegions"]
    assert p["Type"] == "CommaDelimitedList" and p["Default"] == "", p
    (s,) = [s for s in _statements("ReleaseRole") if s.get("Sid") == "Promotion"]
    assert s["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "PromotionRegions"}}}, s
    called = {a for a, where in aws_calls.actions("bake").items() if any(w.startswith("bake/src/promote.rs:") for w in where)}
    assert called == set(_as_list(s["Action"])), (called, s["Action"])
    packer = [s for s in _statements("ReleaseRole") if s.get("Sid") == "PackerBuild"]
    assert packer[0]["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}
