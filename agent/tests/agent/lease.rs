//! `bake-agent job`: two agents race for a lease, exactly one runs the command.

use std::process::Stdio;
use std::time::Duration;

use crate::util::{agent, imds, TestDir};

#[test]
fn test_two_agents_race_one_runs() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let ran = t.path("ran");
    let cfg = t.config("[identity]\nasg_name = \"jobs\"\n");
    let (m1, m2) = (imds("i-0job1"), imds("i-0job2"));
    let spawn = |m: &bake_e2e::Imds| {
        let mut c = agent(&cfg, Some(&emu), Some(m));
        c.args([
            "job",
            "user-stats",
            "--period",
            "weekly",
            "--",
            "/bin/sh",
            "-c",
        ])
        // Long enough that the loser finds the try still held, not already succeeded.
        .arg(format!("echo $$ >> {}; sleep 2", ran.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (c1, c2) = (spawn(&m1), spawn(&m2));
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert!(o1.status.success() && o2.status.success(), "{o1:?} {o2:?}");
    let lines = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(lines.lines().count(), 1, "exactly one ran: {lines}");
    let (s1, s2) = (
        String::from_utf8_lossy(&o1.stdout).into_owned(),
        String::from_utf8_lossy(&o2.stdout).into_owned(),
    );
    let loser = if s1.contains("not running here") {
        &s1
    } else {
        &s2
    };
    assert!(loser.contains("holds the lease for 20"), "{s1} / {s2}");
    assert!(
        loser.contains("i-0job1") || loser.contains("i-0job2"),
        "names the winner: {loser}"
    );

    // Same period again on the winner: the period succeeded, nothing runs.
    let again = agent(&cfg, Some(&emu), Some(&m1))
        .args(["job", "user-stats", "--", "/bin/sh", "-c"])
        .arg(format!("echo again >> {}", ran.display()))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already succeeded"),
        "{again:?}"
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap().lines().count(), 1);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn test_job_exit_code_passes_through() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let cfg = t.config("[identity]\nasg_name = \"jobs2\"\n");
    let m = imds("i-0jobexit");
    let out = agent(&cfg, Some(&emu), Some(&m))
        .args([
            "job", "failing", "--period", "hourly", "--", "/bin/sh", "-c", "exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent(&cfg, Some(&emu), Some(&m))
        .args(["job", "bad/name", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
