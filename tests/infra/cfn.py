"""CloudFormation templates of cloudformation/ as plain data, for the checks in tests/infra.

The short-form tags (!Sub, !Ref, !GetAtt, ...) become their long form ({"Fn::Sub": ...},
{"Ref": ...}), as CloudFormation itself reads them; `!GetAtt A.B` stays the string "A.B".

    python3 tests/infra/cfn.py alarms    every CloudWatch alarm of every template, as JSON
                                         (agent/tests/agent/alarms.rs compares them with what
                                         the agent publishes)
    python3 tests/infra/cfn.py default TEMPLATE PARAM VALUE
                                         the template's text with PARAM's Default set to VALUE
                                         (tests/infra/run lints data.yaml's DbEngine=docdb
                                         variant so: checkov drops the resources whose
                                         Condition is false with the defaults)
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
                local = set() if isinstance(v, str) else set(v[1])  # the variable map's names
                out |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([A-Za-z0-9.:]+)\}", text)} - local
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


def conditions(template, params):
    """{name: bool} of the template's Conditions with ``params`` (the rest at their Default):
    Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition, over Ref of parameters and literals."""
    values = {k: v.get("Default") for k, v in (template.get("Parameters") or {}).items()}
    values.update(params)
    defs = template.get("Conditions") or {}
    done = {}

    def value(v):
        if isinstance(v, dict) and set(v) == {"Ref"}:
            return str(values[v["Ref"]])
        if isinstance(v, (dict, list)):
            raise ValueError(f"cannot evaluate {v!r}")
        return str(v).lower() if isinstance(v, bool) else str(v)

    def evaluate(c):
        if isinstance(c, dict) and set(c) == {"Condition"}:
            return named(c["Condition"])
        (fn, args), = c.items()
        if fn == "Fn::Equals":
            return value(args[0]) == value(args[1])
        if fn == "Fn::Not":
            return not evaluate(args[0])
        if fn == "Fn::And":
            return all(evaluate(a) for a in args)
        if fn == "Fn::Or":
            return any(evaluate(a) for a in args)
        raise ValueError(f"cannot evaluate {fn}")

    def named(name):
        if name not in done:
            done[name] = evaluate(defs[name])
        return done[name]

    return {name: named(name) for name in defs}


def with_default(text, param, value):
    """A template's text with parameter ``param``'s ``Default:`` line set to ``value``, everything
    else (and so every line number) unchanged."""
    import re

    pattern = rf"(\n  {re.escape(param)}:\n(?:    .*\n)*?    Default: ).*\n"
    new, n = re.subn(pattern, lambda m: m.group(1) + json.dumps(value) + "\n", text, count=1)
    if n != 1:
        raise ValueError(f"no Default line of parameter {param}")
    return new


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
    elif len(sys.argv) == 5 and sys.argv[1] == "default":
        sys.stdout.write(with_default(Path(sys.argv[2]).read_text(), sys.argv[3], sys.argv[4]))
    else:
        sys.exit(__doc__)
