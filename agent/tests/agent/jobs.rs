//! `bake-agent job` across calls: a failed try is retaken, a killed holder's try expires and is
//! retaken, a succeeded period runs nothing again, tries are bounded, outcomes are metrics.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::{agent, imds, rt, wait_for, TestDir};

/// `[identity]` in `group`, metrics on, `[lease]` with `lease`.
fn config(t: &TestDir, group: &str, lease: &str) -> std::path::PathBuf {
    t.config(&format!(
        "[identity]\nasg_name = \"{group}\"\n[lease]\n{lease}\n[metrics]\nnamespace = \"Bake/Agent\"\n"
    ))
}

fn job(
    cfg: &std::path::Path,
    emu: &bake_e2e::Emulator,
    m: &bake_e2e::Imds,
    name: &str,
    script: &str,
) -> Output {
    agent(cfg, Some(emu), Some(m))
        .args([
            "job", name, "--period", "weekly", "--", "/bin/sh", "-c", script,
        ])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The metric names published for `job` in `group`, each with its dimension set.
fn metrics(emu: &bake_e2e::Emulator, group: &str, job: &str) -> BTreeSet<String> {
    let rt = rt();
    rt.block_on(async {
        let aws = emu.aws().await;
        let out = aws
            .cw
            .list_metrics()
            .namespace("Bake/Agent")
            .send()
            .await
            .unwrap();
        out.metrics()
            .iter()
            .filter(|m| {
                m.dimensions()
                    .iter()
                    .any(|d| d.name() == Some("Job") && d.value() == Some(job))
            })
            .map(|m| {
                let mut dims: Vec<String> = m
                    .dimensions()
                    .iter()
                    .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                    .collect();
                dims.sort();
                assert!(
                    dims.contains(&format!("AutoScalingGroupName={group}")),
                    "{dims:?}"
                );
                format!("{} {}", m.metric_name().unwrap_or(""), dims.join(","))
            })
            .collect()
    })
}

#[test]
fn test_failed_try_is_retaken_then_the_period_is_done() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let ran = t.path("ran");
    let cfg = config(&t, "jobs-retake", "");
    let (m1, m2, m3) = (imds("i-0fail1"), imds("i-0fail2"), imds("i-0fail3"));

    // The first winner fails: its exit code passes through, JobFailed is published.
    let o = job(
        &cfg,
        &emu,
        &m1,
        "stats",
        &format!("echo first >> {}; exit 3", ran.display()),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // A second call (another instance, later) retakes the period and succeeds.
    let o = job(
        &cfg,
        &emu,
        &m2,
        "stats",
        &format!("echo second >> {}", ran.display()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ran on i-0fail2"), "{}", text(&o));
    // Succeeded: nothing runs again this period, on any instance.
    for m in [&m1, &m3] {
        let o = job(
            &cfg,
            &emu,
            m,
            "stats",
            &format!("echo again >> {}", ran.display()),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("already succeeded on i-0fail2; not running here"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "first\nsecond\n");

    let want: BTreeSet<String> = ["JobFailed", "JobSucceeded", "JobPeriodSucceeded"]
        .iter()
        .map(|m| format!("{m} AutoScalingGroupName=jobs-retake,Job=stats"))
        .collect();
    let got = wait_for("the outcome metrics", Duration::from_secs(30), || {
        let got = metrics(&emu, "jobs-retake", "stats");
        (got == want).then_some(got)
    });
    assert_eq!(got, want);

    // The records in SSM: two tries, one success.
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let period =
        bake_agent::lease::period_id(bake_agent::lease::Period::Weekly, chrono::Utc::now());
    let base = format!("/bake/leases/jobs-retake/stats/{period}");
    let get = |p: String| {
        rt.block_on(aws.ssm.get_parameter().name(p).send())
            .ok()
            .and_then(|o| o.parameter().and_then(|p| p.value().map(ToOwned::to_owned)))
    };
    let a1 = get(format!("{base}/attempt-1")).unwrap();
    assert!(
        a1.contains("\"state\":\"failed\"") && a1.contains("\"exit_code\":3"),
        "{a1}"
    );
    let a2 = get(format!("{base}/attempt-2")).unwrap();
    assert!(
        a2.contains("\"state\":\"succeeded\"") && a2.contains("i-0fail2"),
        "{a2}"
    );
    assert!(get(format!("{base}/succeeded"))
        .unwrap()
        .contains("i-0fail2"));
    assert!(get(format!("{base}/attempt-3")).is_none());
}

#[test]
fn test_killed_holder_expires_and_is_retaken() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let ran = t.path("ran");
    let cfg = config(&t, "jobs-killed", "ttl = \"3s\"");
    let (m1, m2) = (imds("i-0killed1"), imds("i-0killed2"));

    // The winner starts a long run and is killed with its command (SIGKILL to the group, as
    // when its instance vanishes): its try stays "running" and is no longer renewed.
    let mut c = agent(&cfg, Some(&emu), Some(&m1));
    c.args(["job", "stats", "--", "/bin/sh", "-c"])
        .arg(format!("echo started >> {}; exec sleep 300", ran.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut winner = c.spawn().unwrap();
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(winner.id()).unwrap());
    wait_for("the winner's command", Duration::from_secs(30), || {
        std::fs::read_to_string(&ran)
            .ok()
            .filter(|s| s == "started\n")
    });
    // While it is alive (renewed), another call runs nothing.
    let o = job(
        &cfg,
        &emu,
        &m2,
        "stats",
        &format!("echo early >> {}", ran.display()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("i-0killed1 holds the lease"),
        "{}",
        text(&o)
    );
    // Renewed past its first expiry (every ttl/3): still held after 2 ttl.
    std::thread::sleep(Duration::from_secs(6));
    let o = job(
        &cfg,
        &emu,
        &m2,
        "stats",
        &format!("echo early >> {}", ran.display()),
    );
    assert!(
        text(&o).contains("i-0killed1 holds the lease"),
        "{}",
        text(&o)
    );
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    winner.wait().unwrap();

    // After the ttl, the try is over and the next call retakes the period.
    std::thread::sleep(Duration::from_millis(3500));
    let o = job(
        &cfg,
        &emu,
        &m2,
        "stats",
        &format!("echo retaken >> {}", ran.display()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ran on i-0killed2"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "started\nretaken\n");
}

#[test]
fn test_tries_are_bounded_per_period() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let ran = t.path("ran");
    let cfg = config(&t, "jobs-bounded", "max_attempts = 2");
    let m = imds("i-0bounded");
    for _ in 0..2 {
        let o = job(
            &cfg,
            &emu,
            &m,
            "stats",
            &format!("echo x >> {}; exit 1", ran.display()),
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    }
    let o = job(
        &cfg,
        &emu,
        &m,
        "stats",
        &format!("echo x >> {}", ran.display()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("all 2 tries for 20") && text(&o).contains("none succeeded"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "x\nx\n");
}

#[test]
fn test_stopped_job_records_failure_at_once() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let ran = t.path("ran");
    let cfg = config(&t, "jobs-stopped", "");
    let (m1, m2) = (imds("i-0stop1"), imds("i-0stop2"));
    let mut c = agent(&cfg, Some(&emu), Some(&m1));
    c.args(["job", "stats", "--", "/bin/sh", "-c"])
        .arg(format!("echo started >> {}; exec sleep 300", ran.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let first = c.spawn().unwrap();
    wait_for("the first command", Duration::from_secs(30), || {
        std::fs::read_to_string(&ran)
            .ok()
            .filter(|s| s == "started\n")
    });
    // SIGTERM (systemd stopping the unit at shutdown): the command is stopped, the try failed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No ttl to wait for: the next call retakes at once.
    let o = job(
        &cfg,
        &emu,
        &m2,
        "stats",
        &format!("echo second >> {}", ran.display()),
    );
    assert!(text(&o).contains("ran on i-0stop2"), "{}", text(&o));
}

#[test]
fn test_lease_keys_are_checked() {
    let t = TestDir::new();
    for (lease, key) in [
        ("ttl = \"1s\"", "lease.ttl"),
        ("ttl = \"soon\"", "lease.ttl"),
        ("max_attempts = 0", "lease.max_attempts"),
        ("max_attempts = 21", "lease.max_attempts"),
    ] {
        let cfg = t.config(&format!("[lease]\n{lease}\n"));
        let o = agent(&cfg, None, None).arg("check").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{lease}: {}", text(&o));
        assert!(text(&o).contains(key), "{lease}: {}", text(&o));
    }
}
