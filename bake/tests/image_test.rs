//! `bake test-image`, `bake build --test`, `bake release --test/--untested` against the
//! emulator. No image boots here: the test plays the test instance's agent (it finds the
//! instance bake launched by its `bake:image-test` tag and writes the report to the parameter
//! the tag names, as `bake-agent check --live --report` does). The fleet scenario
//! `fleet::test_image_test_boots_each_image_outside_the_group` boots real ones.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;

use crate::util::{other_image, Run, World, BASE_AMI};

const PREFIX: &str = "/bake/test/image-tests";

/// bake.toml with `image_test.required = true`.
fn require_tested(w: &World) {
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace("required = false", "required = true");
    w.write_raw_config(&text);
}

/// What the harness sees of an instance bake launched for a test.
#[derive(Debug)]
struct TestInstance {
    id: String,
    image: String,
    state: String,
    tags: BTreeMap<String, String>,
    metadata_tags: Option<String>,
}

fn test_instances(w: &World) -> Vec<TestInstance> {
    w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .values("bake:image-test")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| TestInstance {
                id: i.instance_id().unwrap().to_owned(),
                image: i.image_id().unwrap_or_default().to_owned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                tags: i
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                metadata_tags: i
                    .metadata_options()
                    .and_then(|m| m.instance_metadata_tags())
                    .map(|s| s.as_str().to_owned()),
            })
            .collect()
    })
}

/// Waits for the running test instance bake launches.
fn launched(w: &World) -> TestInstance {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = test_instances(w)
            .into_iter()
            .find(|i| i.state == "running" || i.state == "pending")
        {
            return i;
        }
        assert!(Instant::now() < deadline, "bake launched no test instance");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The report `bake-agent check --live --report` writes, with `failed` checks failing.
fn report(instance_id: &str, image_id: &str, failed: &[&str]) -> String {
    let checks: Vec<serde_json::Value> = [
        "units",
        "app",
        "readiness",
        "secrets",
        "efs",
        "firewall",
    ]
    .iter()
    .map(|n| {
        let ok = !failed.contains(n);
        serde_json::json!({"name": n, "ok": ok, "detail": if ok { "fine" } else { "broken here" }})
    })
    .collect();
    serde_json::json!({
        "schema_version": 1,
        "instance_id": instance_id,
        "image_id": image_id,
        "result": if failed.is_empty() { "pass" } else { "fail" },
        "checks": checks,
        "at": "2026-12-03T07:15:00Z",
    })
    .to_string()
}

fn put(w: &World, name: &str, value: &str) {
    w.rt.block_on(async {
        w.aws
            .ssm
            .put_parameter()
            .name(name)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .value(value)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    });
}

fn parameter_exists(w: &World, name: &str) -> bool {
    w.rt.block_on(async { w.aws.ssm.get_parameter().name(name).send().await.is_ok() })
}

fn in_group(w: &World) -> Vec<String> {
    w.instances().into_iter().map(|i| i.0).collect()
}

fn finish(child: Child) -> Run {
    Run::from_output(child.wait_with_output().unwrap())
}

fn spawn(w: &World, args: &[&str]) -> Child {
    w.command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Plays the agent of the test instance bake launches: checks what bake launched, then
/// reports with `failed` checks failing. The instance.
fn answer(w: &World, image: &str, lt: &str, failed: &[&str]) -> TestInstance {
    let i = launched(w);
    assert_eq!(i.image, image, "launched from the image under test: {i:?}");
    assert_eq!(
        i.tags.get("aws:ec2launchtemplate:id").map(String::as_str),
        Some(lt),
        "launched with the group's launch template: {i:?}"
    );
    assert_eq!(i.metadata_tags.as_deref(), Some("enabled"), "{i:?}");
    assert!(!in_group(w).contains(&i.id), "outside the group");
    let parameter = i.tags["bake:image-test"].clone();
    assert!(
        parameter.starts_with(&format!("{PREFIX}/{image}/")),
        "{parameter}"
    );
    put(w, &parameter, &report(&i.id, image, failed));
    i
}

#[test]
fn test_image_test_pass_tags_the_image_and_leaves_nothing_behind() {
    let w = World::new("imgtest-pass");
    let lt = w.fleet(BASE_AMI, 1);
    let group_before = in_group(&w);
    let image = other_image(&w);
    let child = spawn(&w, &["test-image", &image, "-o", "json"]);
    let i = answer(&w, &image, &lt, &[]);
    let r = finish(child).expect(0);
    let j = r.json();
    assert_eq!(j["result"], "pass", "{j}");
    assert_eq!(j["instance_id"], i.id.as_str());
    assert_eq!(j["checks"].as_array().unwrap().len(), 6, "{j}");
    assert_eq!(j["launch_template_id"], lt.as_str());
    assert_eq!(j["launch_template_version"], 1);
    let tags = w.tags(&image);
    assert_eq!(tags.get("bake:tested").map(String::as_str), Some("pass"));
    assert_eq!(tags.get("bake:tested-instance"), Some(&i.id));
    assert!(tags.contains_key("bake:tested-at"), "{tags:?}");
    assert!(!tags.contains_key("bake:tested-failed"), "{tags:?}");
    // Terminated, its report gone, the group untouched.
    let after = test_instances(&w);
    assert!(after.iter().all(|t| t.state == "terminated"), "{after:?}");
    assert!(!parameter_exists(&w, &i.tags["bake:image-test"]));
    assert_eq!(in_group(&w), group_before);
    assert!(
        r.stderr
            .contains(&format!("launched test instance {}", i.id)),
        "{}",
        r.stderr
    );
    // Tested already: not again, no instance launched.
    let again = w.bake(&["test-image", &image, "-o", "json"]).expect(0);
    assert_eq!(again.json()["reused"], true, "{}", again.stdout);
    assert_eq!(test_instances(&w).len(), 1);
}

#[test]
fn test_failed_image_test_is_tagged_and_release_refuses_it_unless_untested() {
    let w = World::new("imgtest-fail");
    let lt = w.fleet(BASE_AMI, 1);
    require_tested(&w);
    let image = other_image(&w);
    let child = spawn(&w, &["test-image", &image]);
    let i = answer(&w, &image, &lt, &["readiness", "firewall"]);
    let r = finish(child).expect(14);
    assert!(r.stdout.contains("FAIL readiness"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{image}: fail on {}", i.id)),
        "{}",
        r.stdout
    );
    let tags = w.tags(&image);
    assert_eq!(tags.get("bake:tested").map(String::as_str), Some("fail"));
    assert_eq!(
        tags.get("bake:tested-failed").map(String::as_str),
        Some("readiness,firewall")
    );
    assert!(test_instances(&w).iter().all(|t| t.state == "terminated"));

    // A release of it is refused before anything changes, and says how to go on.
    let refused = w
        .bake(&["release", "--ami", &image, "-o", "json"])
        .expect(15);
    let e = refused.json();
    assert_eq!(e["code"], "untested", "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("failed its boot test"), "{msg}");
    assert!(msg.contains("(readiness,firewall)"), "{msg}");
    assert!(msg.contains("--untested"), "{msg}");
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");
    // An image never tested: refused too.
    let never = w.bake(&["release", "--ami", BASE_AMI]).expect(15);
    assert!(
        never.stderr.contains("was never boot-tested"),
        "{}",
        never.stderr
    );
    // --untested releases it, and says so.
    let forced = w
        .bake(&[
            "release",
            "--ami",
            &image,
            "--untested",
            "--no-wait",
            "-o",
            "json",
        ])
        .expect(0);
    assert_eq!(forced.json()["tested"], "fail", "{}", forced.stdout);
    assert!(forced.stderr.contains("--untested"), "{}", forced.stderr);
    assert_eq!(w.lt_versions(&lt).0, 2);
}

#[test]
fn test_image_test_without_a_report_fails_after_its_timeout_and_cleans_up() {
    let w = World::new("imgtest-silent");
    w.fleet(BASE_AMI, 1);
    let image = other_image(&w);
    let t = Instant::now();
    let r = w
        .bake(&["test-image", &image, "--timeout", "2s", "-o", "json"])
        .expect(14);
    let j = r.json();
    assert_eq!(j["result"], "fail");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("no report within 2s"),
        "{j}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    let instances = test_instances(&w);
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].state, "terminated");
    assert!(w.tags(&image)["bake:tested-failed"].contains("no report within 2s"));
}

#[test]
fn test_report_from_another_instance_is_a_failure() {
    let w = World::new("imgtest-other");
    w.fleet(BASE_AMI, 1);
    let image = other_image(&w);
    let child = spawn(&w, &["test-image", &image, "-o", "json"]);
    let i = launched(&w);
    put(
        &w,
        &i.tags["bake:image-test"],
        &report("i-0000000000000000f", &image, &[]),
    );
    let r = finish(child).expect(14);
    let reason = r.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("not from the test instance"), "{reason}");
}

#[test]
fn test_release_test_tests_first_then_releases() {
    let w = World::new("imgtest-release");
    let lt = w.fleet(BASE_AMI, 1);
    require_tested(&w);
    let image = other_image(&w);
    let child = spawn(
        &w,
        &[
            "release",
            "--ami",
            &image,
            "--test",
            "--no-wait",
            "-o",
            "json",
        ],
    );
    let i = answer(&w, &image, &lt, &[]);
    let r = finish(child).expect(0);
    let j = r.json();
    assert_eq!(j["tested"], "pass", "{j}");
    assert_eq!(j["image_test"]["instance_id"], i.id.as_str(), "{j}");
    assert_eq!(w.lt_versions(&lt).0, 2, "released after the test");

    // A failing test releases nothing: exit 14.
    let w2 = World::new("imgtest-release-fail");
    let lt2 = w2.fleet(BASE_AMI, 1);
    require_tested(&w2);
    let child = spawn(&w2, &["release", "--ami", &image, "--test", "--no-wait"]);
    answer(&w2, &image, &lt2, &["secrets"]);
    let r = finish(child).expect(14);
    assert!(r.stderr.contains("failed its boot test"), "{}", r.stderr);
    assert!(r.stderr.contains("secrets (broken here)"), "{}", r.stderr);
    assert_eq!(w2.lt_versions(&lt2), (1, 1));
}

#[test]
fn test_image_test_needs_its_parameter_prefix() {
    let w = World::new("imgtest-config");
    w.fleet(BASE_AMI, 1);
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace("parameter_prefix = \"/bake/test/image-tests\"\n", "");
    w.write_raw_config(&text);
    let r = w.bake(&["test-image", BASE_AMI]).expect(2);
    assert!(
        r.stderr.contains("image_test.parameter_prefix"),
        "{}",
        r.stderr
    );
    assert!(test_instances(&w).is_empty());
    // A bad prefix is refused by validate, naming the key.
    w.write_raw_config(&text.replace(
        "[image_test]\n",
        "[image_test]\nparameter_prefix = \"no-slash\"\n",
    ));
    let r = w.bake(&["validate"]).expect(2);
    assert!(
        r.stderr.contains("image_test.parameter_prefix"),
        "{}",
        r.stderr
    );
}
