//! `bake release`, `status`, `rollback` against the emulator's instance refresh.

use std::time::Duration;

use crate::util::{other_image, put_image_parameter, with_image_parameter, World, BASE_AMI};

#[test]
fn test_build_release_successful_every_instance_on_new_version() {
    let w = World::new("release-ok");
    let lt = w.fleet(BASE_AMI, 2);
    let before: Vec<_> = w.instances().into_iter().map(|i| i.0).collect();
    assert_eq!(before.len(), 2);
    let r = w.bake(&["release", "-o", "json"]).expect(0);
    let j = r.json();
    assert_eq!(j["result"], "successful", "{j}");
    assert_eq!(j["previous_version"], 1);
    assert_eq!(j["version"], 2);
    assert_eq!(j["reused"], false);
    let ami = j["image_id"].as_str().unwrap().to_owned();
    assert_eq!(w.lt_versions(&lt).0, 2, "the new version is the default");
    let now = w.instances();
    assert_eq!(now.len(), 2, "{now:?}");
    for (id, version, state) in &now {
        assert_eq!(version, "2", "{id} on the new version");
        assert_eq!(state, "InService");
        assert!(!before.contains(id), "{id} was replaced");
    }
    // Status shows the fleet on the new AMI and the finished refresh.
    let s = w.bake(&["status", "-o", "json"]).expect(0).json();
    let instances = s["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i["image_id"] == ami.as_str() && i["launch_template_version"] == "2"),
        "{s}"
    );
    assert_eq!(s["refresh"]["status"], "Successful");
    assert_eq!(s["default_version"], 2);
    // Text status for people.
    let t = w.bake(&["status"]).expect(0);
    assert!(
        t.stdout.contains("InService") && t.stdout.contains(&ami),
        "{}",
        t.stdout
    );

    // Rollback without a refresh in progress releases the previous image again.
    let rb = w.bake(&["rollback", "-o", "json"]).expect(0).json();
    assert_eq!(rb["image_id"], BASE_AMI, "{rb}");
    assert_eq!(rb["result"], "successful");
    assert!(w.instances().iter().all(|i| i.1 == "3"));
}

#[test]
fn test_last_checkpoint_below_100_is_refused_unless_partial_then_exit_10() {
    let w = World::new("release-partial");
    let lt = w.fleet(BASE_AMI, 2);
    let base = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    // AWS ends such a refresh Successful with half the fleet on the old version: refused, before
    // anything is changed.
    w.write_raw_config(&format!(
        "{base}checkpoint_percentages = [50]\ncheckpoint_delay = \"1m\"\n"
    ));
    let r = w.bake(&["validate"]).expect(2);
    assert!(
        r.stderr.contains("refresh.checkpoint_percentages[0]")
            && r.stderr.contains("refresh.partial"),
        "{}",
        r.stderr
    );
    let r = w.bake(&["release", "--ami", BASE_AMI]).expect(2);
    assert!(
        r.stderr.contains("refresh.checkpoint_percentages[0]"),
        "{}",
        r.stderr
    );
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    // Asked for explicitly: a partial release, said so, with its own exit code.
    w.write_raw_config(&format!(
        "{base}checkpoint_percentages = [50]\ncheckpoint_delay = \"1m\"\npartial = true\n"
    ));
    let r = w
        .bake(&["release", "--ami", BASE_AMI, "-o", "json"])
        .expect(10);
    let j = r.json();
    assert_eq!(j["result"], "partial", "{j}");
    assert_eq!(j["restored_default"], false, "{j}");
    assert!(r.stderr.contains("partial release"), "{}", r.stderr);
    let versions: Vec<String> = w.instances().into_iter().map(|i| i.1).collect();
    assert_eq!(
        versions.iter().filter(|v| *v == "1").count(),
        1,
        "half the fleet still on the old version: {versions:?}"
    );
}

#[test]
fn test_huge_or_zero_timeouts_are_refused_before_anything_changes() {
    let w = World::new("release-timeouts");
    let lt = w.fleet(BASE_AMI, 2);
    let base = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    let r = w
        .bake(&["release", "--ami", BASE_AMI, "--timeout", "500000000000y"])
        .expect(2);
    assert!(r.stderr.contains("--timeout"), "{}", r.stderr);
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    for (key, value) in [
        ("timeout", "500000000000y"),
        ("timeout", "0s"),
        ("poll_interval", "0s"),
        ("max_poll_interval", "500000000000y"),
        ("checkpoint_delay", "3d"),
        ("bake_time", "500000000000y"),
    ] {
        // The later key wins in neither TOML nor bake: replace the line.
        let text = if base.contains(&format!("\n{key} = ")) {
            base.lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} = ")) {
                        format!("{key} = \"{value}\"")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            format!("{base}checkpoint_percentages = [50, 100]\n{key} = \"{value}\"\n")
        };
        w.write_raw_config(&text);
        let r = w.bake(&["release", "--ami", BASE_AMI]).expect(2);
        assert!(
            r.stderr.contains(&format!("refresh.{key}")),
            "{key} = {value}: {}",
            r.stderr
        );
        assert_eq!(
            w.lt_versions(&lt),
            (1, 1),
            "{key} = {value}: nothing changed"
        );
    }
    let text = base.replace("[packer]\n", "[packer]\ntimeout = \"0s\"\n");
    w.write_raw_config(&text);
    let r = w.bake(&["validate"]).expect(2);
    assert!(
        r.stderr.contains("packer.timeout: must be more than 0s"),
        "{}",
        r.stderr
    );
}

#[test]
fn test_release_with_failing_replacements_rolls_back() {
    let w = World::new("release-fail");
    let lt = w.fleet(BASE_AMI, 2);
    let ami = w.build(&[]);
    let name = "/bake/release-fail/image-id";
    with_image_parameter(&w, name);
    put_image_parameter(&w, name, BASE_AMI);
    // From now on launches wait for a lifecycle action nobody completes: ABANDON on timeout.
    w.rt.block_on(async {
        w.aws
            .asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(w.asg())
            .lifecycle_hook_name("never-ready")
            .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
            .heartbeat_timeout(30)
            .default_result("ABANDON")
            .send()
            .await
            .unwrap();
    });
    let summary = w.path("step-summary.md");
    let r = crate::util::Run::from_output(
        w.command(&["release", "--ami", &ami, "-o", "json"])
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 6, "rolled back: {r:#?}");
    let j = r.json();
    assert_eq!(j["rollbacks"], 1, "{j}");
    // The step summary names the rollback and AWS's reason.
    let md = std::fs::read_to_string(&summary).unwrap();
    let row = md.lines().last().unwrap();
    let rollback = row.trim_end_matches(" |").rsplit(" | ").next().unwrap();
    assert!(
        rollback.contains("failed to launch or to become healthy"),
        "{md}"
    );
    assert!(
        md.starts_with(&format!(
            "### bake release: {}\n",
            j["result"].as_str().unwrap()
        )),
        "{md}"
    );
    assert!(
        j["result"] == "rolled_back" || j["result"] == "rollback_failed",
        "{j}"
    );
    let reason = format!(
        "{} {}",
        j["refresh"]["reason"], j["refresh"]["rollback_reason"]
    );
    assert!(
        reason.contains("failed to launch or to become healthy"),
        "AWS's reason: {j}"
    );
    assert!(
        r.stderr.contains("failed to launch or to become healthy"),
        "{}",
        r.stderr
    );
    assert_eq!(j["restored_default"], true);
    assert_eq!(w.lt_versions(&lt).0, 1, "the previous default is back");
    // The image parameter still names the image that runs.
    assert_eq!(
        j["image_parameter"]["reason"],
        format!("the refresh ended {}", j["result"].as_str().unwrap()),
        "{j}"
    );
    assert_eq!(j["image_parameter"]["written"], false);
    assert_eq!(
        image_parameter(&w, name),
        (BASE_AMI.to_owned(), 1, "aws:ec2:image".to_owned())
    );
}

#[test]
fn test_release_while_a_refresh_is_running_is_a_clear_error() {
    let w = World::new("release-busy");
    let lt = w.fleet(BASE_AMI, 2);
    let id = w.start_slow_refresh(&lt);
    let summary = w.path("step-summary.md");
    let r = crate::util::Run::from_output(
        w.command(&["release", "--ami", BASE_AMI])
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap(),
    )
    .expect(9);
    // CI's step summary says it too, with the same one line.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("### bake release: failed (exit 9)\n"),
        "{md}"
    );
    let row = md.lines().last().unwrap();
    assert!(
        row.starts_with("| `release-busy-asg` | in_progress | ") && row.contains(&id),
        "{md}"
    );
    assert!(r.stderr.contains(&id), "names the refresh: {}", r.stderr);
    assert!(r.stderr.contains("bake status --watch"), "{}", r.stderr);
    assert!(r.stderr.contains("--wait-for-current"), "{}", r.stderr);
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    // Status shows it as the current refresh.
    let s = w.bake(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(s["refresh"]["id"], id.as_str());
    // Rollback rolls the running refresh back and watches it.
    let rb = w.bake(&["rollback", "-o", "json"]).expect(0).json();
    assert_eq!(rb["instance_refresh_id"], id.as_str());
    assert_eq!(rb["result"], "rolled_back", "{rb}");
}

#[test]
fn test_release_no_wait_then_status_watch_and_timeout() {
    let w = World::new("release-nowait");
    let lt = w.fleet(BASE_AMI, 2);
    // Checkpoints make the refresh take a while (2 x 36 s at the emulator's scale).
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap()
        + "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"1h\"\n";
    w.write_raw_config(&text);
    let r = w
        .bake(&["release", "--ami", BASE_AMI, "--no-wait", "-o", "json"])
        .expect(0);
    let j = r.json();
    assert_eq!(j["result"], "started");
    let id = j["instance_refresh_id"].as_str().unwrap().to_owned();
    assert_eq!(w.lt_versions(&lt).0, 2);
    // Watching with a short timeout: exit 8, the refresh goes on.
    let t = w
        .bake(&["status", "--watch", "--timeout", "1s", "-o", "json"])
        .expect(8);
    assert_eq!(t.json()["watch"]["result"], "timed_out");
    assert!(t.stderr.contains("bake status --watch"), "{}", t.stderr);
    // The rollout view watched too: its first poll names every instance of the group.
    let events = t.json()["watch"]["rollout"]["events"].clone();
    let named: std::collections::BTreeSet<&str> = events
        .as_array()
        .unwrap_or_else(|| panic!("no rollout events: {}", t.stdout))
        .iter()
        .filter_map(|e| e["instance_id"].as_str())
        .collect();
    assert!(named.len() >= 2, "{events}");
    assert!(t.stderr.contains(" refresh: i-"), "{}", t.stderr);
    // Another release now is refused.
    w.bake(&["release", "--ami", BASE_AMI]).expect(9);
    // --wait-for-current waits for it, then releases.
    let started = std::time::Instant::now();
    let r = w
        .bake(&[
            "release",
            "--ami",
            BASE_AMI,
            "--wait-for-current",
            "-o",
            "json",
        ])
        .expect(0);
    let j = r.json();
    assert_ne!(j["instance_refresh_id"], id.as_str());
    assert!(started.elapsed() > Duration::from_secs(1));
    assert_eq!(w.lt_versions(&lt).0, 3);
}

#[test]
fn test_interrupt_while_watching_detaches_and_the_refresh_goes_on() {
    detach_on("release-detach", nix::sys::signal::Signal::SIGINT);
}

#[test]
fn test_sigterm_while_watching_detaches_and_the_refresh_goes_on() {
    detach_on("release-sigterm", nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn test_sighup_while_watching_detaches_and_the_refresh_goes_on() {
    detach_on("release-sighup", nix::sys::signal::Signal::SIGHUP);
}

fn detach_on(name: &str, sig: nix::sys::signal::Signal) {
    let w = World::new(name);
    w.fleet(BASE_AMI, 2);
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap()
        + "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"1h\"\n";
    w.write_raw_config(&text);
    let child = w
        .command(&["release", "--ami", BASE_AMI, "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the refresh runs, then interrupt.
    signal_when_refresh_runs(&w, &child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("bake status --watch"), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON result");
    assert_eq!(j["result"], "detached");
    // The refresh goes on.
    let s = w.bake(&["status", "-o", "json"]).expect(0).json();
    let status = s["refresh"]["status"].as_str().unwrap().to_owned();
    assert!(
        ["Pending", "InProgress", "Successful"].contains(&status.as_str()),
        "{s}"
    );
    assert_ne!(status, "Cancelled");
}

/// Creates CloudWatch alarm `name` (state INSUFFICIENT_DATA: it never fails a refresh).
fn alarm(w: &World, name: &str) {
    w.rt.block_on(async {
        w.aws
            .cw
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("Bake/Test")
            .metric_name("Errors")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn test_release_targets_from_stack_outputs() {
    let w = World::new("release-stack");
    let lt = w.fleet(BASE_AMI, 2);
    for a in [
        "release-stack-cpu",
        "release-stack-restarts",
        "release-stack-5xx",
    ] {
        alarm(&w, a);
    }
    // A stack whose outputs name the group, the template and the rollback alarms, as
    // cloudformation/fleet.yaml's do.
    let template = serde_json::json!({
        "Resources": {"Marker": {"Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/release-stack/marker", "Type": "String", "Value": "x"}}},
        "Outputs": {
            "AutoScalingGroupName": {"Value": w.asg()},
            "LaunchTemplateId": {"Value": lt.clone()},
            "RollbackAlarmNames": {"Value": "release-stack-cpu,release-stack-restarts"}
        }
    });
    w.rt.block_on(async {
        w.aws
            .cfn
            .create_stack()
            .stack_name("release-stack-fleet")
            .template_body(template.to_string())
            .send()
            .await
            .unwrap();
    });
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace(
            &format!("auto_scaling_group = \"{}\"", w.asg()),
            "stack = \"release-stack-fleet\"",
        );
    assert!(text.contains("stack = \"release-stack-fleet\""));
    // Stack alarms need auto rollback, like the file's own: refused before anything changes.
    w.write_raw_config(&format!("{text}auto_rollback = false\n"));
    let r = w.bake(&["release", "--ami", BASE_AMI]).expect(2);
    assert!(
        r.stderr.contains("RollbackAlarmNames") && r.stderr.contains("release-stack-cpu"),
        "{}",
        r.stderr
    );
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    w.write_raw_config(&format!("{text}alarms = [\"release-stack-5xx\"]\n"));
    let j = w
        .bake(&["release", "--ami", BASE_AMI, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(j["result"], "successful", "{j}");
    assert_eq!(j["version"], 2, "{j}");
    assert_eq!(
        w.lt_versions(&lt).0,
        2,
        "the stack's template got the new default"
    );
    assert!(w.instances().iter().all(|(_, version, _)| version == "2"));
    // The refresh watched the file's alarm and the stack's.
    let expected = vec![
        "release-stack-5xx".to_owned(),
        "release-stack-cpu".to_owned(),
        "release-stack-restarts".to_owned(),
    ];
    let alarms = w.rt.block_on(async {
        let out = w
            .aws
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(w.asg())
            .send()
            .await
            .unwrap();
        out.instance_refreshes()[0]
            .preferences()
            .and_then(|p| p.alarm_specification())
            .map(|a| a.alarms().to_vec())
            .unwrap_or_default()
    });
    assert_eq!(alarms, expected);
    // And the preferences are recorded where the agent's rotation rollouts read them.
    let recorded = recorded_preferences(&w);
    assert_eq!(
        recorded.preferences.alarm_specification.map(|a| a.alarms),
        Some(expected)
    );
}

/// The preferences `bake release` recorded for the group (contract with the agent).
fn recorded_preferences(w: &World) -> bake_common::refresh_preferences::Recorded {
    let name = bake_common::refresh_preferences::parameter_name(&w.asg());
    let value = w.rt.block_on(async {
        w.aws
            .ssm
            .get_parameter()
            .name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .parameter()
            .and_then(|p| p.value())
            .unwrap()
            .to_owned()
    });
    bake_common::refresh_preferences::Recorded::from_json(&name, &value).unwrap()
}

#[test]
fn test_release_records_its_refresh_preferences_before_starting_the_refresh() {
    let w = World::new("release-record");
    let lt = w.fleet(BASE_AMI, 2);
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap()
        + "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"1m\"\nmax_healthy_percentage = 120\n";
    w.write_raw_config(&text);
    let name = "/bake/release-record/image-id";
    with_image_parameter(&w, name);
    put_image_parameter(&w, name, BASE_AMI);
    let new = other_image(&w);
    let r = w
        .bake(&["release", "--ami", &new, "--no-wait", "-o", "json"])
        .expect(0);
    let j = r.json();
    assert_eq!(j["result"], "started", "{j}");
    // Not watched to its end: the image parameter is left as it was, and stderr says so.
    assert_eq!(
        j["image_parameter"]["reason"],
        "--no-wait: the end of the refresh was not watched"
    );
    assert!(
        r.stderr
            .contains(&format!("SSM parameter '{name}' not set to {new}")),
        "{}",
        r.stderr
    );
    assert_eq!(
        image_parameter(&w, name),
        (BASE_AMI.to_owned(), 1, "aws:ec2:image".to_owned())
    );
    let r = recorded_preferences(&w);
    assert_eq!(r.strategy, "Rolling");
    let p = &r.preferences;
    assert_eq!(p.min_healthy_percentage, Some(50));
    assert_eq!(p.max_healthy_percentage, Some(120));
    assert_eq!(p.instance_warmup, Some(10));
    assert_eq!(p.checkpoint_percentages, vec![50, 100]);
    assert_eq!(p.checkpoint_delay, Some(60));
    assert_eq!(p.auto_rollback, Some(true));
    assert_eq!(p.skip_matching, Some(true));
    // The same preferences as the refresh it started.
    let started = w.rt.block_on(async {
        let out = w
            .aws
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(w.asg())
            .send()
            .await
            .unwrap();
        out.instance_refreshes()[0].preferences().cloned().unwrap()
    });
    assert_eq!(started.checkpoint_percentages(), &[50, 100]);
    assert_eq!(started.min_healthy_percentage(), p.min_healthy_percentage);
    assert_eq!(w.lt_versions(&lt).0, 2);
}

#[test]
fn test_cancel_on_interrupt_cancels_the_refresh() {
    let w = World::new("release-cancel");
    w.fleet(BASE_AMI, 2);
    // A long checkpoint holds the refresh in progress while the test interrupts it.
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap()
        + "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"1h\"\n";
    w.write_raw_config(&text);
    let child = w
        .command(&[
            "release",
            "--ami",
            BASE_AMI,
            "--cancel-on-interrupt",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    signal_when_refresh_runs(&w, &child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // bake cancels, watches the refresh to its end and reports it cancelled.
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("cancelling instance refresh"), "{stderr}");
    let s = w.bake(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(s["refresh"]["status"], "Cancelled", "{s}");
}

/// Waits until the group has an instance refresh, then sends `sig` to `child`.
fn signal_when_refresh_runs(w: &World, child: &std::process::Child, sig: nix::sys::signal::Signal) {
    let running = || {
        w.rt.block_on(async {
            let out = w
                .aws
                .asg
                .describe_instance_refreshes()
                .auto_scaling_group_name(w.asg())
                .send()
                .await
                .unwrap();
            !out.instance_refreshes().is_empty()
        })
    };
    assert!(
        w.wait_for(Duration::from_secs(30), running),
        "no refresh started"
    );
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        sig,
    )
    .unwrap();
}

/// The value, version and data type of SSM parameter `name`.
fn image_parameter(w: &World, name: &str) -> (String, i64, String) {
    w.rt.block_on(async {
        let out = w.aws.ssm.get_parameter().name(name).send().await.unwrap();
        let p = out.parameter().unwrap();
        (
            p.value().unwrap().to_owned(),
            p.version(),
            p.data_type().unwrap_or_default().to_owned(),
        )
    })
}

#[test]
fn test_release_and_rollback_set_the_image_parameter_after_a_successful_refresh() {
    let w = World::new("release-imageparam");
    let lt = w.fleet(BASE_AMI, 2);
    let name = "/bake/imageparam/image-id";
    // A name SSM would refuse is refused before anything changes, naming the key.
    with_image_parameter(&w, "/bake/imageparam/image id");
    let r = w.bake(&["release", "--ami", BASE_AMI]).expect(2);
    assert!(
        r.stderr
            .contains("target.image_parameter: \"/bake/imageparam/image id\": ' ' is not allowed"),
        "{}",
        r.stderr
    );
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    w.write_config("");
    with_image_parameter(&w, name);
    // The first deploy's parameter: the image the fleet was created with.
    put_image_parameter(&w, name, BASE_AMI);
    let new = other_image(&w);
    let j = w
        .bake(&["release", "--ami", &new, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(j["result"], "successful", "{j}");
    assert_eq!(
        j["image_parameter"],
        serde_json::json!({"name": name, "written": true, "image_id": new, "version": 2, "reason": null})
    );
    assert_eq!(
        image_parameter(&w, name),
        (new.clone(), 2, "aws:ec2:image".to_owned())
    );
    // The text result says it too.
    let rb = w.bake(&["rollback"]).expect(0);
    assert!(
        rb.stdout
            .contains(&format!("image parameter {name} = {BASE_AMI} (version 3)")),
        "{}",
        rb.stdout
    );
    // Rollback released the previous image and set the parameter back to it.
    assert_eq!(image_parameter(&w, name).0, BASE_AMI);
    assert!(w.instances().iter().all(|i| i.1 == "3"));
}

#[test]
fn test_release_whose_image_parameter_cannot_be_written_exits_12() {
    let w = World::new("release-imageparam-fail");
    w.fleet(BASE_AMI, 2);
    let name = "/bake/imageparam-fail/image-id";
    with_image_parameter(&w, name);
    // SSM keeps 100 versions of a parameter and drops the oldest on a put, unless a label holds
    // it: then PutParameter fails (ParameterMaxVersionLimitExceeded), as in AWS.
    for _ in 0..100 {
        put_image_parameter(&w, name, BASE_AMI);
    }
    w.rt.block_on(async {
        w.aws
            .ssm
            .label_parameter_version()
            .name(name)
            .parameter_version(1)
            .labels("first")
            .send()
            .await
            .unwrap();
    });
    let new = other_image(&w);
    let summary = w.path("step-summary.md");
    let r = crate::util::Run::from_output(
        w.command(&["release", "--ami", &new, "-o", "json"])
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap(),
    )
    .expect(12);
    // The release itself is reported as it ended: the fleet runs the new image.
    let j = r.json();
    assert_eq!(j["result"], "successful", "{j}");
    assert!(w.instances().iter().all(|i| i.1 == "2"));
    let p = &j["image_parameter"];
    assert_eq!(p["written"], false, "{j}");
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("writing SSM parameter '{name}': "))
            && reason.contains("oldest version, can't be deleted"),
        "{reason}"
    );
    // stderr says what is at stake and how to set it by hand.
    assert!(
        r.stderr.contains("an update of the fleet stack would launch again")
            && r.stderr.contains(&format!(
                "aws ssm put-parameter --name {name} --type String --data-type aws:ec2:image --overwrite --value {new}"
            )),
        "{}",
        r.stderr
    );
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains(&format!(
                "image parameter {name} not written: writing SSM parameter"
            )),
        "the CI step summary says it"
    );
    assert_eq!(
        image_parameter(&w, name),
        (BASE_AMI.to_owned(), 100, "aws:ec2:image".to_owned())
    );
}
