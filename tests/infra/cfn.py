"""CloudFormation templates of cloudformation/ as plain data, for the checks in tests/infra.

The short-form tags (!Sub, !Ref, !GetAtt, ...) become their long form ({"Fn::Sub": ...},
{"Ref": ...}), as CloudFormation itself reads them; `!GetAtt A.B` stays the string "A.B".

    python3 tests/infra/cfn.py alarms    every CloudWatch alarm of every template, as JSON
                                         (agent/tests/agent/alarms.rs compares them with what
                                         the agent publishes)
"""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "cloudformation"


class CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short-form tags as plain data."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def load(path):
    """One template as a dict."""
    return yaml.load(Path(path).read_text(), Loader=CfnLoader)


def templates():
    """{stem: template} for every cloudformation/*.yaml."""
    return {p.stem: load(p) for p in sorted(CFN.glob("*.yaml"))}


def refs(value):
    """Logical ids that `value` refers to through Ref, Fn::GetAtt and ${Name} in Fn::Sub."""
    import re

    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add((v.split(".", 1)[0] if isinstance(v, str) else v[0]))
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([A-Za-z0-9.:]+)\}", text)}
                if not isinstance(v, str):
                    out |= refs(v[1])
            else:
                out |= refs(v)
    elif isinstance(value, list):
        for v in value:
            out |= refs(v)
    return out


def imports(value):
    """Export names (with ${EnvName} unresolved) that `value` imports through Fn::ImportValue."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Fn::ImportValue":
                out.add(v["Fn::Sub"] if isinstance(v, dict) and "Fn::Sub" in v else json.dumps(v))
            else:
                out |= imports(v)
    elif isinstance(value, list):
        for v in value:
            out |= imports(v)
    return out


def alarms():
    """Every AWS::CloudWatch::Alarm: template, logical id, and each metric it reads
    (namespace, name, the sorted dimension names)."""
    out = []
    for stem, t in templates().items():
        for lid, r in (t.get("Resources") or {}).items():
            if r.get("Type") != "AWS::CloudWatch::Alarm":
                continue
            p = r.get("Properties", {})
            stats = []
            if "MetricName" in p:
                stats.append(p)
            for q in p.get("Metrics", []):
                if "MetricStat" in q:
                    stats.append(q["MetricStat"]["Metric"])
            metrics = [
                {
                    "namespace": s.get("Namespace"),
                    "name": s.get("MetricName"),
                    "dimensions": sorted(d["Name"] for d in s.get("Dimensions", [])),
                }
                for s in stats
            ]
            out.append({"template": stem, "alarm": lid, "metrics": metrics})
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["alarms"]:
        json.dump(alarms(), sys.stdout, indent=1)
        print()
    else:
        sys.exit(__doc__)
