"""What examples/ci/release.yml must do that actionlint does not check (run by tests/infra/run's
`templates` check; actionlint itself is the `workflow` check).

    tests/emulator/.venv/bin/python -m pytest -q tests/infra/test_workflow.py
"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "ci" / "release.yml"


def _workflow():
    w = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True.
    w["on"] = w.pop(True, w.get("on"))
    return w


def _steps():
    return [s for job in _workflow()["jobs"].values() for s in job["steps"]]


def _runs():
    return [s["run"] for s in _steps() if "run" in s]


def _bake_commands():
    """Every shell command line of the workflow that runs the bake binary."""
    out = []
    for run in _runs():
        text = re.sub(r"\\\n", " ", run)  # continued lines
        for line in text.splitlines():
            if re.search(r"(^|[\s/])bake\s", line) and "target/release/bake" in line:
                out.append(line.strip())
    return out


def test_bake_is_execd_so_cancellation_reaches_it():
    """The runner signals the step's process (bash): bake must be that process (`exec`)."""
    cmds = _bake_commands()
    assert len(cmds) >= 4, cmds  # validate, release, build, release --ami, status
    for c in cmds:
        assert c.startswith("exec target/release/bake "), c


def test_app_release_is_the_built_artifact_not_the_commit():
    text = WORKFLOW.read_text()
    assert "--app-release" in text
    for m in re.finditer(r"--app-release\s+(\S+)", text):
        assert "github.sha" not in m.group(1), m.group(0)
        assert m.group(1).strip('"') == "$APP_RELEASE", m.group(0)
    assert _workflow()["env"]["APP_RELEASE"].endswith(".tar.gz")
    build = [s for s in _steps() if s.get("name") == "Build the app artifact"]
    assert len(build) == 1 and '>"$APP_RELEASE"' in build[0]["run"]
    # npm ci only where the app has a lockfile.
    npm = [s for s in _steps() if "npm ci" in s.get("run", "")]
    assert npm and all("package-lock.json" in s.get("if", "") for s in npm)


def test_agent_is_static_and_packer_can_use_session_manager():
    text = "\n".join(_runs())
    assert "--target x86_64-unknown-linux-musl" in text
    assert "musl-tools" in text
    toolchain = [s for s in _steps() if s.get("uses", "").startswith("dtolnay/rust-toolchain")]
    assert toolchain and "x86_64-unknown-linux-musl" in toolchain[0]["with"]["targets"]
    assert "install -m 0755 target/x86_64-unknown-linux-musl/release/bake-agent target/release/bake-agent" in text
    # bake.toml hands that path to Packer.
    assert 'agent_binary = "../target/release/bake-agent"' in (ROOT / "examples" / "bake.toml").read_text()
    assert "session-manager-plugin" in text and "dpkg -i" in text
    assert 'default     = "session_manager"' in (ROOT / "packer" / "bake.pkr.hcl").read_text()


def test_nightly_rebake_releases_only_a_new_image():
    w = _workflow()
    assert w["on"]["schedule"], "no schedule"
    steps = {s.get("id"): s for s in _steps() if s.get("id")}
    assert "exec target/release/bake --output json build" in steps["build"]["run"]
    # Only when an input changed (the archives' state among them), unless forced.
    assert steps["build"]["env"]["WHEN"] == "${{ inputs.force && '--force' || '--if-changed' }}"
    assert steps["build"]["if"] == "github.event_name != 'push'"
    rel = [s for s in _steps() if "release --test --ami" in s.get("run", "")]
    assert len(rel) == 1 and "steps.changed.outputs.reused == 'false'" in rel[0]["if"]
    push = [s for s in _steps() if s.get("name") == "Release"]
    assert len(push) == 1 and push[0]["if"] == "github.event_name == 'push'"
    # Both releases boot-test the image first (docs/bake.md "Boot-tested images").
    assert "release --test" in push[0]["run"]
