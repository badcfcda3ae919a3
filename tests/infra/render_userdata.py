"""Prints fleet.yaml's launch template UserData with sample values, as an instance would get it.

Usage: python3 render_userdata.py [cloudformation/fleet.yaml]  (no third-party modules)
tests/infra/run feeds the result to `bake-agent check --userdata`, so a key the agent does not
know (its config rejects unknown keys) fails `make test` instead of a boot.
"""

import re
import sys
from pathlib import Path

SAMPLE = {
    "EnvName": "prod",
    "AppCommand": '["/opt/app/bin/start"]',
    "AppPort": "8080",
    "HealthCheckPath": "/health",
    "FileSystemId": "fs-0123456789abcdef0",
    "AccessPointLine": 'access_point = "fsap-0123456789abcdef0"',
}


def render(path, **values):
    """The UserData TOML of the template at `path`, with the sample values (or `values`)."""
    sample = {**SAMPLE, **values}
    # The stack's default SocketActivation "true", on the app port.
    sample.setdefault("ListenLine", f'listen = "0.0.0.0:{sample["AppPort"]}"')
    path = Path(path)
    text = path.read_text()
    # The literal block after "Fn::Base64: !Sub" / "- |", up to the substitution map ("- Key:").
    m = re.search(r"Fn::Base64: !Sub\n(\s*)- \|\n(.*?)\n\1- ", text, re.S)
    if not m:
        sys.exit(f"{path}: no UserData Fn::Base64 !Sub block found")
    lines = m.group(2).split("\n")
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    body = "\n".join(line[indent:] for line in lines) + "\n"

    def sub(match):
        name = match.group(1)
        if name not in sample:
            sys.exit(f"{path}: UserData uses ${{{name}}}, which has no sample value here")
        return sample[name]

    return re.sub(r"\$\{([A-Za-z0-9:]+)\}", sub, body)


def main():
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "cloudformation/fleet.yaml")
    sys.stdout.write(render(path))


if __name__ == "__main__":
    main()
