//! What the agent says about itself: the `STATUS=` lines systemd shows (`systemctl status`),
//! received on a stand-in for the notify socket.

use std::time::Duration;

use crate::util::{agent, imds, wait_for, NotifySocket, Running, TestDir};

/// Position of the first status line equal to `want` at or after `from`, or a panic naming all.
fn find(lines: &[String], from: usize, want: &str) -> usize {
    lines[from..]
        .iter()
        .position(|l| l == want)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no STATUS={want:?} after #{from} in {lines:#?}"))
}

#[test]
fn test_status_lines_follow_crash_and_restart() {
    let t = TestDir::new();
    let pids = t.path("pids");
    // Runs 1 and 2 crash (exit 3) after 0.2 s; run 3 stays. The first exit restarts at once,
    // the second after backoff_initial.
    let script = format!(
        "echo $$ >> {p}; [ $(wc -l < {p}) -ge 3 ] && exec sleep 300; sleep 0.2; exit 3",
        p = pids.display()
    );
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n\
         [supervise]\nbackoff_initial = \"1s\"\ncrash_loop_count = 100\n"
    ));
    let sock = NotifySocket::bind(t.path("notify.sock"));
    let md = imds("i-0status");
    let mut cmd = agent(&cfg, None, Some(&md));
    cmd.env("NOTIFY_SOCKET", &sock.path);
    let mut a = Running::spawn(cmd);
    let p: Vec<String> = wait_for("3 starts", Duration::from_secs(30), || {
        let v: Vec<String> = std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        (v.len() >= 3).then_some(v)
    });
    let last = format!("app running (pid {}), 2 restarts", p[2]);
    wait_for("the third run's status", Duration::from_secs(10), || {
        sock.statuses().contains(&last).then_some(())
    });
    // Idle for 2.5 s: nothing changes, so nothing is sent (the line is sent on changes only).
    let before = sock.messages().len();
    std::thread::sleep(Duration::from_millis(2500));
    let idle: Vec<String> = sock.messages()[before..]
        .iter()
        .filter(|m| m.starts_with("STATUS="))
        .cloned()
        .collect();
    assert!(idle.is_empty(), "sent while idle: {idle:?}");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    wait_for("the last status", Duration::from_secs(5), || {
        sock.statuses()
            .contains(&"app stopped, 2 restarts".to_owned())
            .then_some(())
    });

    let lines = sock.statuses();
    let i = find(&lines, 0, &format!("app running (pid {})", p[0]));
    let i = find(&lines, i, &format!("app running (pid {}), 1 restart", p[1]));
    let i = find(
        &lines,
        i,
        "app exited (exit code 3), restart in 1s, 1 restart",
    );
    let i = find(&lines, i, &last);
    // "app stopping" lasts as long as the app takes to end after SIGTERM (`sleep` at once): the
    // publisher sends the state it finds when it wakes, so a busy machine may see only
    // "stopped". Whether or not it was sent, "stopped" comes after the last running line.
    find(&lines, i, "app stopped, 2 restarts");
    for w in lines.windows(2) {
        assert_ne!(w[0], w[1], "the same line twice in a row: {lines:#?}");
    }
    let all = sock.messages();
    assert!(all.iter().any(|m| m == "READY=1"), "{all:?}");
    assert!(all.iter().any(|m| m == "STOPPING=1"), "{all:?}");
}

/// `JOURNAL_STREAM` naming `file` (device:inode), as systemd sets it for a unit's stderr.
fn journal_stream_of(file: &std::fs::File) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn test_journal_lines_carry_their_priority() {
    let t = TestDir::new();
    let starts = t.path("starts");
    // The first run prints a line (no [logs]: it goes to the agent's stderr) and crashes (a
    // warning: restarted at once); the second stays.
    let script = format!(
        "echo $$ >> {p}; [ $(wc -l < {p}) -ge 2 ] && exec sleep 300; echo hello-out; exit 3",
        p = starts.display()
    );
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n"
    ));
    let md = imds("i-0journal");
    let log = t.path("stderr");
    let err = std::fs::File::create(&log).unwrap();
    let mut cmd = agent(&cfg, None, Some(&md));
    cmd.env("JOURNAL_STREAM", journal_stream_of(&err))
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err);
    let child = cmd.spawn().unwrap();
    let mut a = Running::from_child(child);
    let text = wait_for("the restart warning", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("restarted at once").then_some(text)
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| l.starts_with(p)),
            "a line without a priority: {l:?} in {text}"
        );
    }
    let with = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text}"))
            .to_owned()
    };
    assert!(with("agent up").starts_with("<6>"), "{text}");
    assert!(with("restarted at once").starts_with("<4>"), "{text}");
    assert_eq!(with("hello-out"), "<6>app: hello-out", "{text}");

    // An error (a cause on a line of its own gets the prefix too: logging.rs's unit test).
    let err = std::fs::File::create(t.path("check-stderr")).unwrap();
    let stream = journal_stream_of(&err);
    let out = agent(&t.path("missing.toml"), None, None)
        .env("JOURNAL_STREAM", &stream)
        .arg("check")
        .stderr(err)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(t.path("check-stderr")).unwrap();
    assert!(text.contains("missing.toml"), "{text}");
    assert!(text.lines().all(|l| l.starts_with("<3>")), "{text}");

    // JOURNAL_STREAM inherited by a process whose stderr went elsewhere: no prefixes.
    let err = std::fs::File::create(t.path("other-stderr")).unwrap();
    let out = agent(&t.path("missing.toml"), None, None)
        .env("JOURNAL_STREAM", &stream)
        .arg("check")
        .stderr(err)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(t.path("other-stderr")).unwrap();
    assert!(text.contains("error:"), "{text}");
    assert!(!text.contains("<3>"), "{text}");
}

#[test]
fn test_status_command_reads_the_running_agent() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let pids = t.path("pids");
    // Runs 1 and 2 crash, run 3 stays: with crash_loop_count = 2 that is a crash loop.
    let script = format!(
        "echo $$ >> {p}; [ $(wc -l < {p}) -ge 3 ] && exec sleep 300; exit 3",
        p = pids.display()
    );
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nstop_timeout = \"1s\"\n\
         [supervise]\nbackoff_initial = \"100ms\"\ncrash_loop_count = 2\ncrash_loop_window = \"30s\"\n"
    ));
    let file = t.path("status.json");
    let status = |args: &[&str]| {
        agent(&cfg, None, None)
            .arg("status")
            .args(args)
            .output()
            .unwrap()
    };
    // No agent yet: no state file, exit 9.
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(9));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bake-agent is not running"),
        "{out:?}"
    );

    let md = imds("i-0statuscmd");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    let third = wait_for("3 starts", Duration::from_secs(30), || {
        let v: Vec<u64> = std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        v.get(2).copied()
    });
    let doc: serde_json::Value = wait_for(
        "the third run in the state file",
        Duration::from_secs(10),
        || {
            let out = status(&["-o", "json"]);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (out.status.code() == Some(0)
                && doc["app"]["pid"] == third
                && doc["readiness"] == "ready")
                .then_some(doc)
        },
    );
    assert_eq!(doc["schema_version"], 2);
    assert_eq!(doc["agent_pid"], a.pid());
    assert_eq!(doc["app"]["state"], "running");
    assert_eq!(doc["restarts"], 2);
    assert_eq!(
        doc["last_error"], "app is in a crash loop: 2 exits within 30s",
        "{doc}"
    );
    assert!(doc["logs"].is_null(), "no [logs]: {doc}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("app        running (pid {third})")),
        "{text}"
    );
    assert!(text.contains("restarts   2\n"), "{text}");
    assert!(text.contains("readiness  ready\n"), "{text}");

    // Stopped: the file is gone, and status says so.
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    assert!(!file.exists());
    assert_eq!(status(&[]).status.code(), Some(9));

    // A file left by an agent that died (its pid gone): not running either.
    let mut stale = doc.clone();
    stale["agent_pid"] = a.pid().into();
    std::fs::write(&file, stale.to_string()).unwrap();
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(9));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("which is gone"),
        "{out:?}"
    );
}
