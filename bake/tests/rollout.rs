//! The rollout view of `bake release`: one line per instance as it changes (plain lines off a
//! terminal, lines above the bar on one), the summary that stays, and the Markdown summary for
//! `$GITHUB_STEP_SUMMARY`.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bake_e2e::tty::{bars, run_on_terminal, view_lines};

use crate::util::{World, BASE_AMI};

const LAUNCH_HOOK: &str = "launch";
const TERMINATE_HOOK: &str = "terminate";

/// A lifecycle hook on the test's group (heartbeat 3600 s: 36 s at the emulator's scale).
fn hook(w: &World, name: &str, transition: &str, default_result: &str) {
    w.rt.block_on(async {
        w.aws
            .asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(w.asg())
            .lifecycle_hook_name(name)
            .lifecycle_transition(transition)
            .heartbeat_timeout(3600)
            .default_result(default_result)
            .send()
            .await
            .unwrap();
    });
}

/// Reads a child's pipe to its end on a thread of its own (so neither pipe fills up).
fn drain(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut s = String::new();
        pipe.read_to_string(&mut s).unwrap();
        s
    })
}

/// Kills `child` if it is still running when dropped (a failed assertion included).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Plays the instances' agents while `child` runs (at most 90 s): completes an instance's launch
/// hook (CONTINUE) once it has waited `hold` in `Pending:Wait`, and its terminate hook once it
/// has waited `hold` in `Terminating:Wait`, so that each state lasts several of bake's polls.
/// Returns the exit code.
fn play_agents(w: &World, child: &mut Reap, hold: Duration) -> i32 {
    let mut waiting: BTreeMap<String, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "bake release did not end in 90 s"
        );
        for (id, _, state) in w.instances() {
            let hook = match state.as_str() {
                "Pending:Wait" => LAUNCH_HOOK,
                "Terminating:Wait" => TERMINATE_HOOK,
                _ => continue,
            };
            let key = format!("{id} {state}");
            let since = *waiting.entry(key).or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                w.rt.block_on(async {
                    // Already completed (the poll raced the emulator): nothing to do.
                    let _ = w
                        .aws
                        .asg
                        .complete_lifecycle_action()
                        .auto_scaling_group_name(w.asg())
                        .lifecycle_hook_name(hook)
                        .instance_id(&id)
                        .lifecycle_action_result("CONTINUE")
                        .send()
                        .await;
                });
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn test_release_plain_lines_show_each_instance_change_once_in_order_and_a_summary() {
    let w = World::new("rollout-plain");
    let lt = w.fleet(BASE_AMI, 2);
    hook(
        &w,
        LAUNCH_HOOK,
        "autoscaling:EC2_INSTANCE_LAUNCHING",
        "ABANDON",
    );
    hook(
        &w,
        TERMINATE_HOOK,
        "autoscaling:EC2_INSTANCE_TERMINATING",
        "CONTINUE",
    );
    // Bake time (3 s at the emulator's scale) keeps the refresh running while the last old
    // instance drains and terminates.
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap() + "bake_time = \"5m\"\n";
    w.write_raw_config(&text);
    let old: Vec<String> = w.instances().into_iter().map(|i| i.0).collect();
    let summary = w.path("step-summary.md");
    std::fs::write(&summary, "# an earlier step\n").unwrap();
    let mut child = w
        .command(&["release", "--ami", BASE_AMI])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let mut child = Reap(child);
    let code = play_agents(&w, &mut child, Duration::from_millis(1500));
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let new: Vec<String> = w.instances().into_iter().map(|i| i.0).collect();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|i| !old.contains(i)), "{new:?} {old:?}");

    // Plain lines (stderr is no terminal): each instance's changes, in order, once each, with
    // its release.
    let lines = view_lines(&stderr, " refresh: ");
    let phases = |id: &str| -> Vec<String> {
        lines
            .get(id)
            .unwrap_or_else(|| panic!("no line for {id}:\n{stderr}"))
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    };
    for id in &old {
        // The first poll may come after the refresh took an instance out of service: its first
        // line is what that poll saw. The hooks hold each later state for several polls.
        let all = ["in service", "draining (Terminating:Wait)", "terminated"].map(String::from);
        let seen = phases(id);
        assert!(
            seen.len() >= 2 && all.ends_with(&seen),
            "{id}: {seen:?}:\n{stderr}"
        );
        assert!(
            lines[id]
                .iter()
                .all(|(_, r)| r == &format!("v1 {BASE_AMI}")),
            "{id}: {:?}",
            lines[id]
        );
    }
    for id in &new {
        assert_eq!(
            phases(id),
            [
                "waiting on the launch hook (Pending:Wait)",
                "warming up",
                "in service"
            ],
            "{id}:\n{stderr}"
        );
        assert!(
            lines[id]
                .iter()
                .all(|(_, r)| r == &format!("v2 {BASE_AMI}")),
            "{id}: {:?}",
            lines[id]
        );
    }
    assert_eq!(lines.len(), 4, "only the group's instances: {lines:?}");
    // The refresh's own lines say the percentage once, with no elapsed time (the lines have
    // timestamps).
    let refresh_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" refresh: ") && !l.contains(" refresh: i-"))
        .collect();
    assert!(
        refresh_lines.iter().any(|l| l.contains("Successful 100%")),
        "{stderr}"
    );
    assert!(
        refresh_lines.iter().all(|l| !l.contains("elapsed")),
        "{refresh_lines:?}"
    );

    // The summary that stays, after the result line.
    let out: Vec<&str> = stdout.lines().collect();
    assert_eq!(out.len(), 3, "{stdout}");
    assert!(out[0].starts_with("successful: "), "{stdout}");
    assert_eq!(out[1], format!("release: {BASE_AMI} → {BASE_AMI}"));
    assert!(out[2].starts_with("successful in "), "{stdout}");
    assert!(
        out[2].ends_with("2 instances replaced (2 launched, 2 terminated), no rollback"),
        "{stdout}"
    );

    // The Markdown summary, appended.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("# an earlier step\n### bake release: successful\n"),
        "{md}"
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert_eq!(
        rows[0],
        "| group | image | launch template version | result | duration | instances replaced | rollback |"
    );
    let cells: Vec<&str> = rows[2]
        .trim_matches('|')
        .split(" | ")
        .map(str::trim)
        .collect();
    assert_eq!(cells.len(), 7, "{md}");
    assert_eq!(cells[0], "`rollout-plain-asg`");
    assert_eq!(cells[1], format!("`{BASE_AMI}` → `{BASE_AMI}`"));
    assert_eq!(cells[2], "v1 → v2");
    assert_eq!(cells[3], "successful");
    assert!(cells[4].ends_with('s'), "a duration: {md}");
    assert_eq!(&cells[5..], ["2", "none"]);
    assert_eq!(w.lt_versions(&lt).0, 2);
}

#[test]
fn test_release_on_a_terminal_shows_one_elapsed_time_and_one_percentage_and_lines_that_stay() {
    let w = World::new("rollout-tty");
    w.fleet(BASE_AMI, 2);
    // Checkpoints (1.2 s each at the emulator's scale) keep the bar up for a while.
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap()
        + "checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"2m\"\n";
    w.write_raw_config(&text);
    let old: Vec<String> = w.instances().into_iter().map(|i| i.0).collect();
    let run = run_on_terminal(
        w.command(&["release", "--ami", BASE_AMI, "-o", "json"]),
        120,
        40,
        Duration::from_secs(90),
    )
    .unwrap();
    let stdout = &run.stdout;
    assert_eq!(run.code, 0, "{stdout}\n{}", run.raw);
    let screen = run.screen();
    // The bar: `refresh [3s] [=====>    ]  50% InProgress, 1 instance left`, redrawn in place,
    // with one elapsed time and one percentage.
    let bars = bars(&screen).unwrap();
    assert!(
        bars.iter().any(|b| b.contains("InProgress")),
        "the bar says the refresh's status: {bars:?}"
    );
    // The instance lines were printed above the bar and stay: every old instance in service,
    // then terminated; every new one warming up, then in service.
    let lines = view_lines(&screen, "refresh ");
    let phases = |id: &str| -> Vec<&str> {
        lines
            .get(id)
            .unwrap_or_else(|| panic!("no line for {id}:\n{screen}"))
            .iter()
            .map(|(p, _)| p.as_str())
            .collect()
    };
    let new: Vec<String> = w.instances().into_iter().map(|i| i.0).collect();
    for id in &old {
        // Without hooks the refresh may terminate an instance before the first poll: then the
        // one line says so.
        let seen = phases(id);
        assert!(
            ["in service", "terminated"].ends_with(&seen) && !seen.is_empty(),
            "{id}: {seen:?}:\n{screen}"
        );
    }
    for id in &new {
        assert_eq!(phases(id), ["warming up", "in service"], "{id}:\n{screen}");
    }
    // stdout: the JSON document alone, with the view's events and counts.
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["result"], "successful");
    assert_eq!(j["rollbacks"], 0);
    let r = &j["rollout"];
    assert_eq!(
        (
            &r["instances_launched"],
            &r["instances_terminated"],
            &r["instances_replaced"]
        ),
        (&2.into(), &2.into(), &2.into()),
        "{j}"
    );
    let events = r["events"].as_array().unwrap();
    let on_screen: usize = lines.values().map(Vec::len).sum();
    assert_eq!(events.len(), on_screen, "a line per event: {j}");
    let event = |id: &str, phase: &str| {
        events
            .iter()
            .find(|e| e["instance_id"] == id && e["phase"] == phase)
            .unwrap_or_else(|| panic!("no {phase} event of {id}: {j}"))
    };
    let gone = event(&old[0], "terminated");
    assert_eq!(gone["lifecycle_state"], serde_json::Value::Null, "{gone}");
    assert_eq!(gone["launch_template_version"], "1", "{gone}");
    assert_eq!(gone["image_id"], BASE_AMI, "{gone}");
    let warming = event(&new[0], "warming_up");
    assert_eq!(warming["lifecycle_state"], "InService", "{warming}");
    assert_eq!(warming["launch_template_version"], "2", "{warming}");
    assert!(warming["elapsed_ms"].as_u64().is_some(), "{warming}");
}

#[test]
fn test_a_step_summary_that_cannot_be_written_is_a_warning() {
    let w = World::new("rollout-summary-fail");
    let lt = w.fleet(BASE_AMI, 1);
    let r = w
        .command(&["release", "--ami", BASE_AMI, "--no-wait", "-o", "json"])
        .env("GITHUB_STEP_SUMMARY", w.path("no/such/dir/summary.md"))
        .output()
        .unwrap();
    let r = crate::util::Run::from_output(r).expect(0);
    assert_eq!(r.json()["result"], "started");
    assert!(
        r.stderr
            .contains("cannot append the summary to GITHUB_STEP_SUMMARY"),
        "{}",
        r.stderr
    );
    assert_eq!(w.lt_versions(&lt).0, 2, "the release went on");
}
