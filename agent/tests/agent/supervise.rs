//! The supervisor: restart at once then with backoff, graceful stop, SIGKILL of the group,
//! orphans reaped, crash loop → Unhealthy in the emulator.

use std::time::Duration;

use crate::util::{agent, children_of, group, imds, rt, state_of, wait_for, Running, TestDir};

fn standalone(t: &TestDir, script: &str, extra: &str) -> std::path::PathBuf {
    t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n{extra}"
    ))
}

#[test]
fn test_crash_restarts_at_once_then_backs_off() {
    let t = TestDir::new();
    let starts = t.path("starts");
    // Each start appends a nanosecond timestamp, runs 50 ms, crashes.
    let script = format!("date +%s%N >> {}; sleep 0.05; exit 3", starts.display());
    // Delays far above process start-up time, so a loaded host cannot blur them.
    let cfg = standalone(
        &t,
        &script,
        "[supervise]\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\ncrash_loop_count = 100\n",
    );
    let md = imds("i-0crash");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    let lines = wait_for("5 starts", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&starts).unwrap_or_default();
        let v: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (v.len() >= 5).then_some(v)
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    let gaps: Vec<u128> = lines
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // 1st restart at once (the 50 ms run + process start), then 1 s, 2 s, 2 s (capped). Lower
    // bounds are exact (delays only add); upper bounds leave ~1 s for process start-up.
    assert!(
        gaps[0] < 1000,
        "first restart should be immediate: {gaps:?}"
    );
    assert!(
        gaps[1] >= 1050 && gaps[1] < 2000,
        "second waits backoff_initial: {gaps:?}"
    );
    assert!(
        gaps[2] >= 2050 && gaps[3] >= 2050 && gaps[2] < 3000 && gaps[3] < 3000,
        "then doubles, capped: {gaps:?}"
    );
    assert!(a.stderr().contains("restarted at once"), "{}", a.stderr());
}

#[test]
fn test_sigterm_stops_app_gracefully_and_exits_0() {
    let t = TestDir::new();
    let got = t.path("got-term");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; while :; do sleep 0.05; done",
        got.display()
    );
    let cfg = standalone(&t, &script, "");
    let md = imds("i-0term");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    wait_for("the app", Duration::from_secs(20), || {
        children_of(a.pid())
            .iter()
            .any(|(_, s)| *s != 'Z')
            .then_some(())
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "term");
}

#[test]
fn test_stop_timeout_kills_the_whole_group() {
    let t = TestDir::new();
    let pidfile = t.path("grandchild");
    // Ignores SIGTERM; its background grandchild too.
    let script = format!(
        "trap '' TERM; sleep 300 & echo $! > {}; wait",
        pidfile.display()
    );
    let cfg = standalone(&t, &script, "");
    let md = imds("i-0kill");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    let gc: i32 = wait_for("the grandchild", Duration::from_secs(20), || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    assert!(crate::util::alive(gc));
    let t0 = std::time::Instant::now();
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited the stop timeout"
    );
    wait_for("the grandchild to die", Duration::from_secs(5), || {
        (!crate::util::alive(gc)).then_some(())
    });
}

#[test]
fn test_orphaned_grandchildren_are_reaped() {
    let t = TestDir::new();
    // The subshell forks a short sleep and exits: the sleep is orphaned to the agent (subreaper).
    let cfg = standalone(&t, "(sleep 1 &); exec sleep 300", "");
    let md = imds("i-0orphan");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    // The orphan shows up as the agent's child, then is reaped (never stays a zombie).
    wait_for(
        "the orphan to be re-parented",
        Duration::from_secs(20),
        || (children_of(a.pid()).len() >= 2).then_some(()),
    );
    // The orphan exits after 1 s; an agent that does not reap it leaves a zombie for good.
    let mut kids = Vec::new();
    let reaped = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < reaped {
        kids = children_of(a.pid());
        if kids.len() == 1 && kids.iter().all(|(_, s)| *s != 'Z') {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        kids.iter().all(|(_, s)| *s != 'Z'),
        "zombies left: {kids:?}"
    );
    assert_eq!(kids.len(), 1, "only the app remains: {kids:?}");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_crash_loop_marks_instance_unhealthy() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let ids = rt.block_on(group(&aws, "crashloop", 1, &[]));
    let id = ids[0].clone();
    let t = TestDir::new();
    let cfg = t.config(
        "[identity]\nasg_name = \"crashloop\"\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 1\"]\n\
         [supervise]\nbackoff_initial = \"50ms\"\nbackoff_max = \"100ms\"\ncrash_loop_count = 3\ncrash_loop_window = \"30s\"\n",
    );
    let md = imds(&id);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    // The emulator terminates an Unhealthy instance and launches a replacement, like AWS.
    let seen = wait_for(
        "the instance to be marked Unhealthy",
        Duration::from_secs(30),
        || match rt.block_on(state_of(&aws, "crashloop", &id)) {
            Some((_, health)) if health.eq_ignore_ascii_case("unhealthy") => {
                Some("Unhealthy".to_owned())
            }
            Some((state, _)) if state.starts_with("Terminat") => Some(state),
            None => Some("replaced".to_owned()),
            _ => None,
        },
    );
    eprintln!("instance {id}: {seen}");
    assert!(a.stderr().contains("crash loop"), "{}", a.stderr());
    assert!(a.stderr().contains("marked Unhealthy"), "{}", a.stderr());
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}
