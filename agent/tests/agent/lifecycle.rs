//! Readiness → launch hook CONTINUE; never ready → ABANDON; termination → drain + terminate hook.

use std::time::Duration;

use crate::util::{
    agent, free_port, group, imds, rt, sample_app, state_of, terminate_into_wait, wait_for,
    Running, TestDir,
};

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

fn app_config(
    t: &TestDir,
    asg: &str,
    port: u16,
    extra_env: &str,
    readiness: &str,
) -> std::path::PathBuf {
    t.config(&format!(
        "[identity]\nasg_name = \"{asg}\"\n[app]\nuser = \"root\"\ncommand = [\"node\", \"{}\"]\nenv = {{ PORT = \"{port}\", APP_VERSION = \"7\"{extra_env} }}\nstop_timeout = \"3s\"\n\
         [readiness]\nprobe = \"http://127.0.0.1:{port}/health\"\ninterval = \"100ms\"\n{readiness}\n[lifecycle]\npoll_interval = \"200ms\"\n",
        sample_app().display()
    ))
}

#[test]
fn test_ready_app_completes_launch_hook() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    // DefaultResult ABANDON: only the agent's CONTINUE can bring the instance InService.
    let ids = rt.block_on(group(&aws, "ready", 1, &[(LAUNCHING, "ABANDON")]));
    let id = ids[0].clone();
    assert_eq!(
        rt.block_on(state_of(&aws, "ready", &id)).unwrap().0,
        "Pending:Wait"
    );
    let t = TestDir::new();
    let port = free_port();
    let cfg = app_config(&t, "ready", port, ", READY_DELAY_MS = \"700\"", "");
    let md = imds(&id);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    wait_for("InService", Duration::from_secs(30), || {
        (rt.block_on(state_of(&aws, "ready", &id))?.0 == "InService").then_some(())
    });
    assert!(a.stderr().contains("app is ready"), "{}", a.stderr());
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_never_ready_app_abandons_launch() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    // DefaultResult CONTINUE: only the agent's ABANDON can take the instance out.
    let ids = rt.block_on(group(&aws, "never", 1, &[(LAUNCHING, "CONTINUE")]));
    let id = ids[0].clone();
    let t = TestDir::new();
    let port = free_port();
    let cfg = app_config(
        &t,
        "never",
        port,
        ", NEVER_READY = \"1\"",
        "timeout = \"1500ms\"\nheartbeat_interval = \"500ms\"",
    );
    let md = imds(&id);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    wait_for(
        "the instance to be abandoned",
        Duration::from_secs(30),
        || match rt.block_on(state_of(&aws, "never", &id)) {
            None => Some(()),
            Some((s, _)) if s.starts_with("Terminat") => Some(()),
            _ => None,
        },
    );
    // The agent logs the completion once CompleteLifecycleAction returned, which may be after
    // the emulator already shows the instance leaving.
    let err = wait_for("the ABANDON in the log", Duration::from_secs(5), || {
        let err = a.stderr();
        err.contains("ABANDON").then_some(err)
    });
    assert!(err.contains("never became ready"), "{err}");
    assert!(
        err.contains("lifecycle heartbeat sent"),
        "heartbeats while waiting: {err}"
    );
    let _ = a.terminate(Duration::from_secs(10));
}

#[test]
fn test_termination_drains_and_completes_hook() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let ids = rt.block_on(group(&aws, "term", 1, &[(TERMINATING, "ABANDON")]));
    let id = ids[0].clone();
    let t = TestDir::new();
    let port = free_port();
    let cfg = app_config(&t, "term", port, "", "");
    let md = imds(&id);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    wait_for("app ready", Duration::from_secs(30), || {
        a.stderr().contains("app is ready").then_some(())
    });
    terminate_into_wait(&rt, &aws, "term", &id);
    // What IMDS shows a terminating instance (the local fleet harness does the same).
    md.update(|s| s.target_lifecycle_state = Some("Terminated".into()));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(0), "{}", a.stderr());
    let err = a.stderr();
    assert!(err.contains("instance is terminating; draining"), "{err}");
    assert!(
        err.contains("SIGTERM: closing"),
        "the app was stopped gracefully: {err}"
    );
    assert!(err.contains("lifecycle action completed"), "{err}");
    // Hook completed: the instance leaves Terminating:Wait.
    wait_for(
        "the instance to leave Terminating:Wait",
        Duration::from_secs(20),
        || match rt.block_on(state_of(&aws, "term", &id)) {
            Some((s, _)) if s == "Terminating:Wait" => None,
            _ => Some(()),
        },
    );
}
