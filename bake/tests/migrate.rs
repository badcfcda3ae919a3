//! `bake release` with `[migrate]` against the emulator. No image boots here: the test plays the
//! migration instance's agent (it finds the instance bake launched by its `bake:migrate` tag and
//! writes the log chunks and the result under the path the tag names, as `bake-agent migrate`
//! does).

use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::ParameterType;

use crate::util::{other_image, Run, World, BASE_AMI};

const PREFIX: &str = "/bake/test/migrations";
const TAG: &str = "bake:migrate";

/// bake.toml with `[migrate]` (`timeout` as given).
fn with_migrate(w: &World, timeout: &str) {
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    w.write_raw_config(&format!(
        "{text}\n[migrate]\nparameter_prefix = \"{PREFIX}\"\ntimeout = \"{timeout}\"\n"
    ));
}

/// (id, image, state, the tag's value) of the instances bake launched for a migration.
fn migration_instances(w: &World) -> Vec<(String, String, String, String)> {
    w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .describe_instances()
            .filters(Filter::builder().name("tag-key").values(TAG).build())
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.image_id().unwrap_or_default().to_owned(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default(),
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(TAG))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    })
}

/// Waits for the running migration instance bake launches: (id, the tag's path).
fn launched(w: &World, image: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = migration_instances(w)
            .into_iter()
            .find(|i| i.2 == "running" || i.2 == "pending")
        {
            assert_eq!(i.1, image, "launched from the new image: {i:?}");
            assert!(i.3.starts_with(&format!("{PREFIX}/{image}/")), "{i:?}");
            assert!(
                !w.instances().iter().any(|g| g.0 == i.0),
                "the migration instance is outside the group"
            );
            return (i.0, i.3);
        }
        assert!(
            Instant::now() < deadline,
            "bake launched no migration instance"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(w: &World, name: &str, value: &str, secure: bool) {
    w.rt.block_on(async {
        w.aws
            .ssm
            .put_parameter()
            .name(name)
            .r#type(if secure {
                ParameterType::SecureString
            } else {
                ParameterType::String
            })
            .value(value)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    });
}

fn parameters_under(w: &World, path: &str) -> Vec<String> {
    w.rt.block_on(async {
        let out = w
            .aws
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .send()
            .await
            .unwrap();
        out.parameters()
            .iter()
            .filter_map(|p| p.name().map(ToOwned::to_owned))
            .collect()
    })
}

fn refreshes(w: &World) -> usize {
    w.rt.block_on(async {
        w.aws
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(w.asg())
            .send()
            .await
            .unwrap()
            .instance_refreshes()
            .len()
    })
}

fn spawn(w: &World, args: &[&str]) -> Child {
    w.command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Run {
    Run::from_output(child.wait_with_output().unwrap())
}

/// Plays `bake-agent migrate`: the lease, `chunks` one after the other, then the result.
fn answer(w: &World, image: &str, chunks: &[&str], exit_code: i32) -> (String, String) {
    let (id, path) = launched(w, image);
    put(
        w,
        &format!("{path}/lease"),
        &format!("{{\"instance_id\":\"{id}\",\"started_at\":\"2026-12-03T07:15:00Z\"}}"),
        false,
    );
    for (n, c) in chunks.iter().enumerate() {
        put(w, &format!("{path}/log/{:06}", n + 1), c, true);
        std::thread::sleep(Duration::from_millis(300));
    }
    let result = serde_json::json!({
        "schema_version": 1,
        "instance_id": id,
        "image_id": image,
        "command": ["/opt/app/bin/migrate"],
        "exit_code": exit_code,
        "error": null,
        "started_at": "2026-12-03T07:15:00Z",
        "finished_at": "2026-12-03T07:15:09Z",
        "log_chunks": chunks.len(),
        "dropped_lines": 0,
    });
    put(w, &format!("{path}/result"), &result.to_string(), false);
    (id, path)
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[test]
fn test_migration_runs_before_the_refresh_and_streams_its_log() {
    let w = World::new("migrate-ok");
    let lt = w.fleet(BASE_AMI, 1);
    with_migrate(&w, "30s");
    let image = other_image(&w);
    let child = spawn(&w, &["release", "--ami", &image, "--no-wait", "-o", "json"]);
    let (id, path) = answer(
        &w,
        &image,
        &[
            "step 1: add column users.nick\nstep 2: back",
            "fill nicks\n",
            "done\n",
        ],
        0,
    );
    let r = finish(child).expect(0);
    let e = &r.stderr;
    let one = position(e, "migrate | step 1: add column users.nick");
    let two = position(e, "migrate | step 2: backfill nicks");
    let done = position(e, "migrate | done");
    let refresh = position(e, "instance refresh of");
    assert!(one < two && two < done && done < refresh, "{e}");
    assert!(position(e, &format!("launched migration instance {id}")) < one);
    let j = r.json();
    let m = &j["migrate"];
    assert_eq!(m["exit_code"], 0, "{j}");
    assert_eq!(m["instance"], id.as_str());
    assert_eq!(m["command"][0], "/opt/app/bin/migrate");
    assert_eq!(
        m["log_lines"],
        serde_json::json!([
            "step 1: add column users.nick",
            "step 2: backfill nicks",
            "done"
        ])
    );
    assert!(m["duration_s"].as_f64().is_some(), "{m}");
    assert_eq!(j["result"], "started");
    assert_eq!(w.lt_versions(&lt).0, 2, "released after the migration");
    assert_eq!(refreshes(&w), 1);
    // Terminated, its parameters gone.
    let after = migration_instances(&w);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].2, "terminated", "{after:?}");
    assert!(parameters_under(&w, &path).is_empty(), "{path}");
}

#[test]
fn test_failed_migration_releases_nothing() {
    let w = World::new("migrate-fail");
    let lt = w.fleet(BASE_AMI, 1);
    with_migrate(&w, "30s");
    let image = other_image(&w);
    let child = spawn(&w, &["release", "--ami", &image, "--no-wait"]);
    let (id, path) = answer(
        &w,
        &image,
        &["ERROR: relation \"users\" does not exist\n"],
        3,
    );
    let r = finish(child).expect(16);
    assert!(
        r.stderr
            .contains("migrate | ERROR: relation \"users\" does not exist"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "the migration of {image} failed on {id} (exit code 3); nothing was released"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(w.lt_versions(&lt), (1, 1), "no launch template version");
    assert_eq!(refreshes(&w), 0, "no refresh");
    let after = migration_instances(&w);
    assert!(after.iter().all(|i| i.2 == "terminated"), "{after:?}");
    assert!(parameters_under(&w, &path).is_empty());

    // --skip-migrate releases it without a migration, and says so.
    let r = w
        .bake(&["release", "--ami", &image, "--no-wait", "--skip-migrate"])
        .expect(0);
    assert!(r.stderr.contains("--skip-migrate"), "{}", r.stderr);
    assert_eq!(migration_instances(&w).len(), 1, "no second migration");
    assert_eq!(w.lt_versions(&lt).0, 2);
}

#[test]
fn test_migration_without_a_result_fails_after_its_timeout() {
    let w = World::new("migrate-silent");
    let lt = w.fleet(BASE_AMI, 1);
    with_migrate(&w, "2s");
    let image = other_image(&w);
    let t = Instant::now();
    let r = w
        .bake(&["release", "--ami", &image, "--no-wait", "-o", "json"])
        .expect(16);
    let e = r.json();
    assert_eq!(e["code"], "migration_failed", "{e}");
    assert_eq!(e["exit_code"], 16);
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("no result within 2s (migrate.timeout)"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(w.lt_versions(&lt), (1, 1));
    assert_eq!(refreshes(&w), 0);
    let after = migration_instances(&w);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].2, "terminated");
}

#[test]
fn test_without_migrate_no_instance_is_launched_and_bad_config_names_the_field() {
    let w = World::new("migrate-none");
    let lt = w.fleet(BASE_AMI, 1);
    let r = w
        .bake(&["release", "--ami", BASE_AMI, "--no-wait", "-o", "json"])
        .expect(0);
    assert!(r.json()["migrate"].is_null(), "{}", r.stdout);
    assert!(migration_instances(&w).is_empty());
    assert_eq!(w.lt_versions(&lt).0, 2);

    let base = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    w.write_raw_config(&format!("{base}\n[migrate]\ntimeout = \"5m\"\n"));
    let r = w.bake(&["validate"]).expect(2);
    assert!(
        r.stderr.contains("migrate.parameter_prefix"),
        "{}",
        r.stderr
    );
    w.write_raw_config(&format!(
        "{base}\n[migrate]\nparameter_prefix = \"{PREFIX}\"\ntimeout = \"soon\"\n"
    ));
    let r = w.bake(&["validate"]).expect(2);
    assert!(r.stderr.contains("migrate.timeout"), "{}", r.stderr);
    w.write_raw_config(&format!(
        "{base}\n[migrate]\nparameter_prefix = \"no-slash\"\n"
    ));
    let r = w.bake(&["validate"]).expect(2);
    assert!(
        r.stderr.contains("migrate.parameter_prefix"),
        "{}",
        r.stderr
    );
    w.write_raw_config(&format!(
        "{base}\n[migrate]\nparameter_prefix = \"{PREFIX}\"\ncommand = [\"x\"]\n"
    ));
    let r = w.bake(&["validate"]).expect(2);
    assert!(r.stderr.contains("command"), "{}", r.stderr);
}
