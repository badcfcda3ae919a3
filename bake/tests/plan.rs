//! `bake plan` against the emulator: what a release would do, and that planning changes nothing.

use crate::util::{World, BASE_AMI};

/// Refreshes of the test's group (id, status).
fn refreshes(w: &World) -> Vec<(String, String)> {
    w.rt.block_on(w.aws.instance_refreshes(&w.asg())).unwrap()
}

/// Whether an SSM parameter exists (the refresh preferences a release records).
fn ssm_parameters(w: &World) -> usize {
    w.rt.block_on(async {
        w.aws
            .ssm
            .describe_parameters()
            .send()
            .await
            .unwrap()
            .parameters()
            .len()
    })
}

/// bake.toml with an app version (tagged `bake:app-version`), then `extra` in `[refresh]`.
fn config(w: &World, extra: &str) {
    w.write_config(extra);
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace("[app]\n", "[app]\nversion = \"2.3.4\"\n");
    w.write_raw_config(&text);
}

#[test]
fn test_plan_of_a_new_image_shows_the_change_and_changes_nothing() {
    let w = World::new("plan-change");
    config(
        &w,
        "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"1m\"\nalarms = [\"plan-cpu\"]\n",
    );
    let lt = w.fleet(BASE_AMI, 2);
    let ami = w.build(&[]);
    let tags = w.tags(&ami);
    let r = w.bake(&["plan", "-o", "json"]).expect(11);
    let j = r.json();
    assert_eq!(j["schema_version"], 1, "{j}");
    assert_eq!(j["changes"], true, "{j}");
    assert_eq!(j["build_needed"], false, "{j}");
    assert_eq!(j["auto_scaling_group"], w.asg().as_str());
    assert_eq!(j["launch_template_id"], lt.as_str());
    assert_eq!(j["current_image"]["image_id"], BASE_AMI, "{j}");
    let image = &j["image"];
    assert_eq!(image["image_id"], ami.as_str(), "{j}");
    assert_eq!(image["app_version"], "2.3.4", "{j}");
    assert_eq!(image["git_commit"], tags["bake:git-commit"].as_str(), "{j}");
    assert_eq!(image["built_at"], tags["bake:built-at"].as_str(), "{j}");
    assert_eq!(image["inputs_hash"], tags["bake:inputs-hash"].as_str());
    assert_eq!(j["inputs_hash"], tags["bake:inputs-hash"].as_str());
    assert_eq!(
        j["launch_template"],
        serde_json::json!({"default_version": 1, "latest_version": 1, "new_version": 2, "base_version": 1})
    );
    let prefs = &j["refresh"];
    assert_eq!(prefs["min_healthy_percentage"], 50, "{j}");
    assert_eq!(prefs["max_healthy_percentage"], serde_json::Value::Null);
    assert_eq!(prefs["instance_warmup_secs"], 10);
    assert_eq!(
        prefs["checkpoint_percentages"],
        serde_json::json!([50, 100])
    );
    assert_eq!(prefs["checkpoint_delay_secs"], 60);
    assert_eq!(prefs["skip_matching"], true);
    assert_eq!(prefs["auto_rollback"], true);
    assert_eq!(prefs["alarms"], serde_json::json!(["plan-cpu"]));
    // 2 instances, 50 % kept healthy (1), max 100 %: one at a time, the checkpoint after the first.
    let rep = &j["replacement"];
    assert_eq!(rep["desired_capacity"], 2, "{j}");
    assert_eq!(rep["instances"], 2);
    assert_eq!(rep["min_healthy"], 1);
    assert_eq!(rep["max_instances"], 2);
    assert_eq!(rep["max_healthy_percentage"], 100);
    assert_eq!(rep["batch_size"], 1);
    assert_eq!(
        rep["batches"],
        serde_json::json!([{"instances": 1, "checkpoint": 50}, {"instances": 1, "checkpoint": null}])
    );
    assert_eq!(rep["left_on_previous"], 0);
    assert_eq!(j["refresh_in_progress"], serde_json::Value::Null);

    // For people: both images, the versions and the batches.
    let t = w.bake(&["plan"]).expect(11);
    for want in [
        format!("{BASE_AMI} -> {ami}"),
        "app 2.3.4".to_owned(),
        "new version 2 from version 1".to_owned(),
        "in 2 batches of at most 1".to_owned(),
        "checkpoints 50% 100%".to_owned(),
        "rollback alarms plan-cpu".to_owned(),
        "exit 11".to_owned(),
    ] {
        assert!(t.stdout.contains(&want), "{want:?} in {}", t.stdout);
    }

    // Nothing changed: no new version, same default, no refresh, no recorded preferences.
    assert_eq!(w.lt_versions(&lt), (1, 1));
    assert!(refreshes(&w).is_empty(), "{:?}", refreshes(&w));
    assert_eq!(ssm_parameters(&w), 0);
}

#[test]
fn test_plan_after_the_release_has_nothing_to_do() {
    let w = World::new("plan-same");
    config(&w, "");
    let lt = w.fleet(BASE_AMI, 2);
    // The group's own image: nothing to do.
    let r = w.bake(&["plan", "--ami", BASE_AMI]).expect(0);
    assert!(r.stdout.starts_with("nothing to do"), "{}", r.stdout);
    let ami = w.build(&[]);
    w.bake(&["release", "--ami", &ami]).expect(0);
    assert_eq!(w.lt_versions(&lt), (2, 2));
    let before = refreshes(&w);
    // The image `build` would reuse is the default version's.
    let r = w.bake(&["plan"]).expect(0);
    assert!(
        r.stdout.contains("nothing to do") && r.stdout.contains(&ami),
        "{}",
        r.stdout
    );
    let j = w.bake(&["plan", "-o", "json"]).expect(0).json();
    assert_eq!(j["changes"], false, "{j}");
    assert_eq!(j["current_image"]["image_id"], ami.as_str());
    assert_eq!(j["image"]["image_id"], ami.as_str());
    assert_eq!(j["launch_template"]["new_version"], serde_json::Value::Null);
    assert_eq!(j["replacement"], serde_json::Value::Null);
    assert_eq!(w.lt_versions(&lt), (2, 2));
    assert_eq!(refreshes(&w), before);
}

#[test]
fn test_plan_without_a_cached_image_says_a_build_is_needed_and_builds_nothing() {
    let w = World::new("plan-build");
    config(
        &w,
        "max_healthy_percentage = 150\nmin_healthy_percentage = 100\n",
    );
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace("min_healthy_percentage = 50\n", "");
    w.write_raw_config(&text);
    let lt = w.fleet(BASE_AMI, 4);
    let r = w.bake(&["plan", "-o", "json"]).expect(11);
    let j = r.json();
    assert_eq!(j["build_needed"], true, "{j}");
    assert_eq!(j["image"]["image_id"], serde_json::Value::Null, "{j}");
    let hash = j["inputs_hash"].as_str().expect("inputs_hash").to_owned();
    assert_eq!(j["image"]["inputs_hash"], hash.as_str());
    // 100 % kept, 150 % at most: 2 launched before 2 terminated, twice.
    let rep = &j["replacement"];
    assert_eq!(
        (rep["min_healthy"].as_u64(), rep["max_instances"].as_u64()),
        (Some(4), Some(6)),
        "{j}"
    );
    assert_eq!(rep["batches"].as_array().map(Vec::len), Some(2), "{j}");
    let t = w.bake(&["plan"]).expect(11);
    assert!(
        t.stdout
            .contains(&format!("no AMI has inputs hash {hash} yet")),
        "{}",
        t.stdout
    );
    // No AMI was made, nothing changed; the build then makes the image of that hash.
    assert!(
        w.rt.block_on(async {
            w.aws
                .ec2
                .describe_images()
                .owners("self")
                .send()
                .await
                .unwrap()
                .images()
                .is_empty()
        }),
        "plan built nothing"
    );
    assert_eq!(w.lt_versions(&lt), (1, 1));
    assert!(refreshes(&w).is_empty());
    let built = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert_eq!(built["inputs_hash"], hash.as_str(), "{built}");
    // With --force a release would build anew even so.
    let j = w.bake(&["plan", "--force", "-o", "json"]).expect(11).json();
    assert_eq!(j["build_needed"], true, "{j}");
}

#[test]
fn test_plan_names_a_refresh_in_progress_and_a_missing_ami() {
    let w = World::new("plan-busy");
    config(&w, "");
    let lt = w.fleet(BASE_AMI, 2);
    let r = w
        .bake(&["plan", "--ami", "ami-00000000000000000"])
        .expect(3);
    assert!(
        r.stderr.contains("--ami") && r.stderr.contains("ami-00000000000000000"),
        "{}",
        r.stderr
    );
    let id = w.start_slow_refresh(&lt);
    let ami = w.build(&[]);
    let j = w
        .bake(&["plan", "--ami", &ami, "-o", "json"])
        .expect(11)
        .json();
    assert_eq!(j["refresh_in_progress"]["id"], id.as_str(), "{j}");
    let t = w.bake(&["plan", "--ami", &ami]).expect(11);
    assert!(
        t.stdout
            .contains(&format!("instance refresh {id} is in progress"))
            && t.stdout.contains("--wait-for-current")
            && t.stdout.contains(&format!("bake release --ami {ami}")),
        "{}",
        t.stdout
    );
    assert_eq!(w.lt_versions(&lt), (1, 1));
}
