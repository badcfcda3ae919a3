//! Bad configs and bad userdata give clear errors (exit 2) and start nothing.

use std::time::Duration;

use crate::util::{agent, imds, Running, TestDir, AGENT};

#[test]
fn test_check_accepts_the_example() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.toml");
    let out = std::process::Command::new(AGENT)
        .arg("--config")
        .arg(&example)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn test_check_names_file_and_key() {
    let t = TestDir::new();
    let cfg =
        t.config("[app]\nuser = \"root\"\ncommand = [\"/bin/true\"]\n[supervise]\nbackoff_max = \"5 parsecs\"\n");
    let out = std::process::Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml: supervise.backoff_max: \"5 parsecs\" is not a duration"),
        "{err}"
    );

    let cfg = t.config("[app]\nuser = \"root\"\ncommand = [\"/bin/true\"]\n");
    let ud = t.path("userdata.toml");
    std::fs::write(&ud, "[secrets]\npath = \"/x\"\nonchange = \"restart\"\n").unwrap();
    let out = std::process::Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .arg("--userdata")
        .arg(&ud)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("userdata: secrets") && err.contains("onchange"),
        "{err}"
    );
}

fn app_marker_config(t: &TestDir) -> std::path::PathBuf {
    let marker = t.path("started");
    t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 30\"]\n",
        marker.display()
    ))
}

#[test]
fn test_bad_userdata_starts_nothing() {
    let t = TestDir::new();
    let cfg = app_marker_config(&t);
    let md = imds("i-0badud");
    md.update(|s| s.user_data = Some("[supervise]\ncrash_loop_count = \"many\"\n".into()));
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(2), "exit code");
    assert!(
        a.stderr().contains("userdata: supervise.crash_loop_count"),
        "{}",
        a.stderr()
    );
    assert!(!t.path("started").exists(), "the app must not start");
}

#[test]
fn test_script_userdata_is_ignored_and_toml_userdata_applies() {
    let t = TestDir::new();
    let cfg = app_marker_config(&t);
    let md = imds("i-0script");
    md.update(|s| s.user_data = Some("#!/bin/bash\necho hello\n".into()));
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    crate::util::wait_for("the app to start", Duration::from_secs(20), || {
        t.path("started").exists().then_some(())
    });
    assert!(
        a.stderr().contains("userdata is not agent TOML"),
        "{}",
        a.stderr()
    );
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));

    // TOML userdata overrides the baked command.
    let other = t.path("other");
    md.update(|s| {
        s.user_data = Some(format!(
            "[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 30\"]\n",
            other.display()
        ))
    });
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    crate::util::wait_for("the userdata app to start", Duration::from_secs(20), || {
        other.exists().then_some(())
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_no_metadata_service_is_exit_4() {
    let t = TestDir::new();
    let cfg = app_marker_config(&t);
    let mut a = Running::spawn(agent(&cfg, None, None));
    assert_eq!(a.wait(Duration::from_secs(60)), Some(4), "{}", a.stderr());
    assert!(!t.path("started").exists());
}
