//! `bake status` and the group's target groups: each instance's health in them
//! (`DescribeTargetHealth`), as text and JSON, and a denied call that only costs the column.

use std::io::{Read, Write};

use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetDescription, TargetTypeEnum};

use crate::util::{put_image_parameter, with_image_parameter, Run, World, BASE_AMI};

/// A target group of instances on port 80 in the emulator's default VPC, attached to the
/// group (which registers its instances); its ARN.
fn attach_target_group(w: &World, name: &str) -> String {
    w.rt.block_on(async {
        let vpcs = w
            .aws
            .ec2
            .describe_vpcs()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("is-default")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_owned();
        let tg = w
            .aws
            .elb
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(vpc)
            .target_type(TargetTypeEnum::Instance)
            .send()
            .await
            .unwrap();
        let arn = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
        w.aws
            .asg
            .attach_load_balancer_target_groups()
            .auto_scaling_group_name(w.asg())
            .target_group_arns(&arn)
            .send()
            .await
            .unwrap();
        arn
    })
}

/// The `TARGET HEALTH` cell of each instance row of `bake status`'s text, by instance id.
fn target_cells(stdout: &str) -> std::collections::BTreeMap<String, String> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("INSTANCE "))
        .unwrap_or_else(|| panic!("no header: {stdout}"));
    let col = header
        .find("  TARGET HEALTH")
        .unwrap_or_else(|| panic!("no TARGET HEALTH column: {stdout}"))
        + 2;
    stdout
        .lines()
        .filter(|l| l.starts_with("i-"))
        .map(|l| {
            let id = l.split_whitespace().next().unwrap().to_owned();
            let cell = l[col..].split("  ").next().unwrap().to_owned();
            (id, cell)
        })
        .collect()
}

/// Each instance's health in each of the group's target groups: none attached, no column and
/// no ELBv2 call; then two attached (the group registers its instances), one instance
/// deregistered from one of them, the other stopped — moto derives a target's health from the
/// instance (running: healthy; stopped: unused, Target.InvalidState); it never reports
/// unhealthy or initial (it runs no health checks), nor draining for a whole group's listing.
#[test]
fn test_status_shows_each_instances_health_in_the_groups_target_groups() {
    let w = World::new("status-tg");
    w.fleet(BASE_AMI, 2);

    // No target group: no column, and no call (an ELBv2 endpoint that refuses every
    // connection would make it a warning).
    let r = Run::from_output(
        w.command(&["status"])
            .env(
                "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2",
                "http://127.0.0.1:1",
            )
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(
        !r.stdout.contains("TARGET") && !r.stdout.contains("target group"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("DescribeTargetHealth"), "{r:?}");
    let j = w.bake(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(j["target_groups"], serde_json::json!([]), "{j}");
    for i in j["instances"].as_array().unwrap() {
        assert_eq!(i["target_health"], serde_json::json!([]), "{i}");
    }

    let web = attach_target_group(&w, "status-tg-web");
    let api = attach_target_group(&w, "status-tg-api");
    let ids: Vec<String> = w.instances().into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids.len(), 2);
    let (stopped, serving) = (&ids[0], &ids[1]);
    w.rt.block_on(async {
        w.aws
            .elb
            .deregister_targets()
            .target_group_arn(&api)
            .targets(TargetDescription::builder().id(serving).build())
            .send()
            .await
            .unwrap();
        w.aws
            .ec2
            .stop_instances()
            .instance_ids(stopped)
            .send()
            .await
            .unwrap();
    });

    let r = w.bake(&["status"]).expect(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[1], "target groups status-tg-web, status-tg-api",
        "{}",
        r.stdout
    );
    let cells = target_cells(&r.stdout);
    assert_eq!(
        cells[stopped], "unused (Target.InvalidState) / unused (Target.InvalidState)",
        "{}",
        r.stdout
    );
    assert_eq!(cells[serving], "healthy / -", "{}", r.stdout);
    assert!(r.stderr.trim().is_empty(), "{}", r.stderr);

    let j = w.bake(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(j["schema_version"], 1, "{j}");
    assert_eq!(
        j["target_groups"],
        serde_json::json!([
            {"arn": web, "name": "status-tg-web", "error": null},
            {"arn": api, "name": "status-tg-api", "error": null},
        ]),
        "{j}"
    );
    let health = |id: &str| {
        j["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {j}"))["target_health"]
            .clone()
    };
    let stopped_health = |tg: &str| {
        serde_json::json!({
            "target_group_arn": tg,
            "state": "unused",
            "reason": "Target.InvalidState",
            "description": "Target is in the stopped state",
        })
    };
    assert_eq!(
        health(stopped),
        serde_json::json!([stopped_health(&web), stopped_health(&api)])
    );
    assert_eq!(
        health(serving),
        serde_json::json!([{"target_group_arn": web, "state": "healthy", "reason": null, "description": null}])
    );
}

/// Credentials that may do everything but `elasticloadbalancing:DescribeTargetHealth`: an IAM
/// user made by a stack in the emulator, which then checks every call against IAM (moto's
/// `/moto-api/reset-auth`): `bake status` still shows the fleet, exit 0, with one warning line
/// naming the action and the target group, `?` in the column and the reason in the JSON.
#[test]
fn test_status_with_target_health_denied_warns_and_still_shows_the_fleet() {
    let w = World::new("status-deny");
    w.fleet(BASE_AMI, 1);
    let tg = attach_target_group(&w, "status-deny-web");
    let (key, secret) = denied_user(&w, "status-deny");
    enforce_iam(&w);

    let run = |args: &[&str]| {
        Run::from_output(
            w.command(args)
                .env("AWS_ACCESS_KEY_ID", &key)
                .env("AWS_SECRET_ACCESS_KEY", &secret)
                .output()
                .unwrap(),
        )
    };
    let r = run(&["status"]).expect(0);
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(warnings.len(), 1, "{r:?}");
    assert!(
        warnings[0].contains(
            "elasticloadbalancing:DescribeTargetHealth denied on target group 'status-deny-web'"
        ) && warnings[0].contains(&tg),
        "{r:?}"
    );
    assert_eq!(
        r.stdout.lines().nth(1),
        Some("target group status-deny-web"),
        "{r:?}"
    );
    let cells = target_cells(&r.stdout);
    assert_eq!(cells.len(), 1, "{r:?}");
    assert!(cells.values().all(|c| c == "?"), "{r:?}");

    let r = run(&["status", "-o", "json"]).expect(0);
    let j = r.json();
    let error = j["target_groups"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("elasticloadbalancing:DescribeTargetHealth denied"),
        "{j}"
    );
    assert_eq!(
        j["instances"][0]["target_health"],
        serde_json::json!([]),
        "{j}"
    );
}

/// An IAM user allowed everything but `elasticloadbalancing:DescribeTargetHealth`, made by a
/// CloudFormation stack; its access key id and secret.
fn denied_user(w: &World, name: &str) -> (String, String) {
    let template = serde_json::json!({
        "Resources": {
            "User": {"Type": "AWS::IAM::User", "Properties": {"UserName": name}},
            "Policy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "PolicyName": "no-target-health",
                    "Users": [{"Ref": "User"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "*", "Resource": "*"},
                            {"Effect": "Deny", "Action": "elasticloadbalancing:DescribeTargetHealth", "Resource": "*"}
                        ]
                    }
                }
            },
            "Key": {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": {"Ref": "User"}}}
        },
        "Outputs": {
            "KeyId": {"Value": {"Ref": "Key"}},
            "Secret": {"Value": {"Fn::GetAtt": ["Key", "SecretAccessKey"]}}
        }
    });
    w.rt.block_on(async {
        w.aws
            .cfn
            .create_stack()
            .stack_name(name)
            .template_body(template.to_string())
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
            .send()
            .await
            .unwrap();
        let out = w
            .aws
            .cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .unwrap();
        let stack = &out.stacks()[0];
        let output = |key: &str| {
            stack
                .outputs()
                .iter()
                .find(|o| o.output_key() == Some(key))
                .and_then(|o| o.output_value())
                .unwrap_or_else(|| panic!("stack output {key}: {stack:?}"))
                .to_owned()
        };
        (output("KeyId"), output("Secret"))
    })
}

/// From now on the emulator authenticates every call and checks it against IAM.
fn enforce_iam(w: &World) {
    let addr = w.emu.url().trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Drift, side by side: the image parameter, the launch template's default version, the
/// group's version and the instances' images; `--check` exits 13 while any disagrees.
#[test]
fn test_status_check_shows_drift_and_exits_13_until_every_place_names_the_image() {
    let w = World::new("status-drift");
    let lt = w.fleet(BASE_AMI, 2);
    let name = "/bake/status-drift/image-id";
    with_image_parameter(&w, name);

    // The parameter does not exist yet: drift.
    let r = w.bake(&["status", "--check", "-o", "json"]).expect(13);
    let j = r.json();
    let d = &j["drift"];
    assert_eq!(d["image_parameter"], name, "{j}");
    assert_eq!(d["parameter_image"], serde_json::Value::Null, "{j}");
    assert_eq!(d["default_version"], 1, "{j}");
    assert_eq!(d["default_image"], BASE_AMI, "{j}");
    assert_eq!(d["group_version"], "1", "{j}");
    assert_eq!(d["group_image"], BASE_AMI, "{j}");
    assert_eq!(d["instance_images"][BASE_AMI], 2, "{j}");
    let lines = d["disagreements"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{j}");
    assert!(lines[0].as_str().unwrap().contains("does not exist"), "{j}");

    // Every place names the image: no drift, exit 0; the text says where it looked.
    put_image_parameter(&w, name, BASE_AMI);
    let r = w.bake(&["status", "--check"]).expect(0);
    assert!(
        r.stdout
            .contains(&format!("  image parameter {name}: {BASE_AMI}\n")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("  launch template default v1: {BASE_AMI}\n")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("  group launches 1: {BASE_AMI}\n")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("  instances: {BASE_AMI} ×2\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("no drift\n"), "{}", r.stdout);

    // Someone makes another image the launch template's default by hand: the parameter, the
    // group and the instances now disagree with it. Without --check it is shown, exit 0.
    let other = w.register_base_image("status-drift-other");
    w.make_default_image(&lt, &other);
    let r = w.bake(&["status"]).expect(0);
    let drift: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("drift: "))
        .collect();
    assert_eq!(drift.len(), 3, "{}", r.stdout);
    assert!(
        drift[0].contains(&format!("{name} names {BASE_AMI}")),
        "{drift:?}"
    );
    assert!(
        drift[0].contains(&format!("a stack update would launch {BASE_AMI}")),
        "{drift:?}"
    );
    assert!(
        drift[1].starts_with(&format!("drift: the group launches version 1 ({BASE_AMI})")),
        "{drift:?}"
    );
    assert_eq!(
        drift[2],
        format!("drift: 2 instances run {BASE_AMI}, not the launch template's default version 2 ({other})")
    );
    w.bake(&["status", "--check"]).expect(13);
}

/// `bake status --timeline`: after a release of 2 instances, one line per instance of the
/// rollout, the new ones launched and in service on the new image, the old ones draining and
/// terminated on the old one, times in order; the JSON carries the same.
#[test]
fn test_status_timeline_shows_each_instance_of_the_last_rollout() {
    let w = World::new("status-timeline");
    w.fleet(BASE_AMI, 2);
    let before: Vec<String> = w.instances().into_iter().map(|i| i.0).collect();
    // A refresh's StartTime has whole seconds: the group's first instances must be launched in
    // an earlier second than the rollout begins to count as launched before it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let j = w.bake(&["release", "-o", "json"]).expect(0).json();
    let image = j["image_id"].as_str().unwrap().to_owned();
    let s = w
        .bake(&["status", "--timeline", "-o", "json"])
        .expect(0)
        .json();
    let tl = &s["timeline"];
    assert_eq!(tl["instance_refresh_id"], j["instance_refresh_id"], "{tl}");
    let rows = tl["instances"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 replaced, 2 new: {tl}");
    // RFC 3339 times of different precisions (AWS gives milliseconds for a start, microseconds
    // for an end): compared as times, not as strings ("…08.021Z" sorts after "…08.021051Z").
    let at = |r: &serde_json::Value, k: &str| {
        r[k].as_str()
            .map(|t| humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{k} {t:?}: {e}")))
    };
    for r in rows {
        let id = r["instance_id"].as_str().unwrap();
        if before.iter().any(|b| b == id) {
            assert_eq!(r["image_id"], BASE_AMI, "{r}");
            assert_eq!(at(r, "launched"), None, "launched before the rollout: {r}");
            let (d, t) = (at(r, "draining").unwrap(), at(r, "terminated").unwrap());
            assert!(d <= t, "{r}");
        } else {
            assert_eq!(r["image_id"], image.as_str(), "{r}");
            let (l, s) = (at(r, "launched").unwrap(), at(r, "in_service").unwrap());
            assert!(l <= s, "{r}");
            assert_eq!(at(r, "terminated"), None, "{r}");
        }
    }
    let text = w.bake(&["status", "--timeline"]).expect(0).stdout;
    assert!(
        text.contains(&format!(
            "timeline of instance refresh {} since ",
            j["instance_refresh_id"].as_str().unwrap()
        )),
        "{text}"
    );
    for id in &before {
        let line = text.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(line.contains(BASE_AMI), "{line}");
    }
    // Without --timeline: no timeline.
    let s = w.bake(&["status", "-o", "json"]).expect(0).json();
    assert!(s.get("timeline").is_none(), "{s}");
}
