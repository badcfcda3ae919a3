//! Migration instances (`bake release` with `[migrate]`: tag `bake:migrate`, launched outside the
//! group with the fleet's userdata) and `bake-agent migrate -- CMD`.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use crate::util::{agent, free_port, imds, rt, sample_app, wait_for, Running, TestDir};

const TAG: &str = "bake:migrate";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An IMDS stand-in for `id`, with the migration tag `path` when given, and the fleet's
/// userdata (which names the group).
fn instance(id: &str, path: Option<&str>) -> bake_e2e::Imds {
    let md = imds(id);
    md.update(|s| {
        if let Some(p) = path {
            s.tags = Some(BTreeMap::from([(TAG.to_owned(), p.to_owned())]));
        }
        s.user_data = Some("[identity]\nasg_name = \"bake-t\"\n".to_owned());
        s.ami_id = Some("ami-0new".to_owned());
    });
    md
}

/// Every parameter under `path` (decrypted): name → value.
fn parameters(emu: &bake_e2e::Emulator, path: &str) -> BTreeMap<String, String> {
    let rt = rt();
    rt.block_on(async {
        let aws = emu.aws().await;
        let mut out = BTreeMap::new();
        let mut pages = aws
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            for p in p.unwrap().parameters() {
                out.insert(
                    p.name().unwrap().to_owned(),
                    p.value().unwrap_or_default().to_owned(),
                );
            }
        }
        out
    })
}

fn migrate(
    cfg: &std::path::Path,
    emu: &bake_e2e::Emulator,
    md: &bake_e2e::Imds,
    script: &str,
) -> Output {
    agent(cfg, Some(emu), Some(md))
        .args(["migrate", "--", "/bin/sh", "-c", script])
        .output()
        .unwrap()
}

#[test]
fn test_migrate_runs_once_and_writes_its_log_and_result() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let cfg = t.config("");
    let path = "/bake/t/migrations/ami-0new/20261203T071500Z";
    let md = instance("i-0migrate00000001", Some(path));
    let ran = t.path("ran");
    // Two streams, a line longer than a chunk, and the app's environment untouched.
    let script = format!(
        "echo run >> {}; echo 'step 1: add column'; echo 'warning: slow' >&2; \
         head -c 9000 /dev/zero | tr '\\0' x; echo; echo 'step 2: done'",
        ran.display()
    );
    let o = migrate(&cfg, &emu, &md, &script);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("step 1: add column"),
        "the journal gets the lines too: {}",
        text(&o)
    );
    let p = parameters(&emu, path);
    let chunks: Vec<&String> = p
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{path}/log/")))
        .map(|(_, v)| v)
        .collect();
    assert!(chunks.len() >= 3, "a 9000-byte line takes 3 chunks: {p:?}");
    assert!(chunks.iter().all(|c| c.len() <= 4096), "{p:?}");
    let log: String = chunks.iter().map(|c| c.as_str()).collect();
    let s1 = log.find("step 1: add column").expect("step 1 in the log");
    let s2 = log.find("step 2: done").expect("step 2 in the log");
    assert!(s1 < s2, "{log}");
    assert!(log.contains("warning: slow\n"), "stderr too: {log}");
    assert!(log.contains(&"x".repeat(9000)), "the long line whole");
    let result: serde_json::Value = serde_json::from_str(&p[&format!("{path}/result")]).unwrap();
    assert_eq!(result["schema_version"], 1);
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(result["instance_id"], "i-0migrate00000001");
    assert_eq!(result["image_id"], "ami-0new");
    assert_eq!(result["log_chunks"], chunks.len());
    assert_eq!(result["command"][0], "/bin/sh");
    assert!(p.contains_key(&format!("{path}/lease")), "{p:?}");

    // The same tag again (the unit after a reboot): the lease is there, nothing runs.
    let again = migrate(&cfg, &emu, &md, &script);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already started by i-0migrate00000001"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\n", "ran once");
    assert_eq!(parameters(&emu, path), p, "nothing written the second time");
}

#[test]
fn test_migrate_reports_a_failing_command_and_runs_nothing_without_the_tag() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let cfg = t.config("");
    let path = "/bake/t/migrations/ami-0new/20261203T080000Z";
    let md = instance("i-0migrate00000002", Some(path));
    let o = migrate(
        &cfg,
        &emu,
        &md,
        "echo 'relation users does not exist' >&2; exit 3",
    );
    assert_eq!(o.status.code(), Some(3), "its own exit code: {}", text(&o));
    let p = parameters(&emu, path);
    let result: serde_json::Value = serde_json::from_str(&p[&format!("{path}/result")]).unwrap();
    assert_eq!(result["exit_code"], 3, "{result}");
    assert_eq!(
        p[&format!("{path}/log/000001")],
        "relation users does not exist\n"
    );

    // A command that cannot start: 127, said in the log and the result.
    let path2 = "/bake/t/migrations/ami-0new/20261203T090000Z";
    let md2 = instance("i-0migrate00000003", Some(path2));
    let o = agent(&cfg, Some(&emu), Some(&md2))
        .args(["migrate", "--", "/nonexistent/migrate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));
    let p = parameters(&emu, path2);
    let result: serde_json::Value = serde_json::from_str(&p[&format!("{path2}/result")]).unwrap();
    assert_eq!(result["exit_code"], 127);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("cannot run /nonexistent/migrate"),
        "{result}"
    );

    // Without the tag: nothing runs, nothing is written.
    let plain = instance("i-0ordinary0000001", None);
    let ran = t.path("ran");
    let o = migrate(&cfg, &emu, &plain, &format!("touch {}", ran.display()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not a migration instance"),
        "{}",
        text(&o)
    );
    assert!(!ran.exists(), "the command ran");
    assert_eq!(
        parameters(&emu, "/bake/t/migrations").len(),
        6,
        "only the two tagged runs' lease, log chunk and result"
    );
}

#[test]
fn test_migration_instance_starts_no_app_and_joins_no_group() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let port = free_port();
    let cfg = t.config(&format!(
        "[app]\nuser = \"root\"\ncommand = [\"node\", \"{}\"]\nport = {port}\n",
        sample_app().display()
    ));
    let md = instance(
        "i-0migrate00000004",
        Some("/bake/t/migrations/ami-0new/20261203T100000Z"),
    );
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    let err = wait_for(
        "the migration instance's line",
        Duration::from_secs(20),
        || {
            let e = a.stderr();
            e.contains("migration instance: in no Auto Scaling group, app not started")
                .then_some(e)
        },
    );
    assert!(err.contains("asg=None"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the app is not started: {}",
        a.stderr()
    );
    assert_eq!(
        a.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        a.stderr()
    );
}
