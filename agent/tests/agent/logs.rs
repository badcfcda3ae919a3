//! `bake-agent run` with `[logs]` and `[metrics]` from the userdata (laid over the baked file):
//! the app's output reaches CloudWatch Logs, CPU metrics carry the fleet's dimensions, and
//! SIGTERM ships the app's last lines before the agent exits.

use std::time::Duration;

use bake_e2e::{Imds, ImdsState};

use crate::util::{agent, group, rt, state_of, terminate_into_wait, wait_for, Running, TestDir};

const LOG_GROUP: &str = "/bake/test-app";

/// Every message of a stream, oldest first (GetLogEvents from the head, all pages); empty
/// while the stream does not exist.
async fn messages(aws: &bake_e2e::Aws, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let Ok(resp) = aws
            .logs
            .get_log_events()
            .log_group_name(LOG_GROUP)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
        else {
            return out;
        };
        let events = resp.events();
        out.extend(events.iter().filter_map(|e| e.message().map(str::to_owned)));
        let next = resp.next_forward_token().map(str::to_owned);
        if events.is_empty() || next == token {
            break;
        }
        token = next;
    }
    out
}

/// `InstanceId=…,AutoScalingGroupName=…` (sorted) of every `CPUUtilization` in `Bake/Agent`.
async fn cpu_dimensions(aws: &bake_e2e::Aws) -> Vec<Vec<String>> {
    let Ok(listed) = aws
        .cw
        .list_metrics()
        .namespace("Bake/Agent")
        .metric_name("CPUUtilization")
        .send()
        .await
    else {
        return Vec::new();
    };
    listed
        .metrics()
        .iter()
        .map(|m| {
            let mut d: Vec<String> = m
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect();
            d.sort();
            d
        })
        .collect()
}

/// The numbers of the `line N` messages.
fn line_numbers(msgs: &[String]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| m.strip_prefix("line ")?.parse().ok())
        .collect()
}

/// The app of these tests, in `t`: a numbered line on stdout every 50 ms, every fifth number on
/// stderr too; once the trigger file exists, one last line with its content (`last words …`)
/// and then the `said` file; a goodbye line on SIGTERM. Returns (script, trigger, said).
fn talking_app(t: &TestDir) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (trigger, said) = (t.path("trigger"), t.path("said"));
    let app = t.path("app.sh");
    std::fs::write(
        &app,
        format!(
            "trap 'echo \"goodbye after SIGTERM\"; exit 0' TERM\n\
             i=0\n\
             while :; do\n\
             \x20 echo \"line $i\"\n\
             \x20 if [ $((i % 5)) -eq 0 ]; then echo \"warn $i\" >&2; fi\n\
             \x20 if [ -e '{trigger}' ] && [ ! -e '{said}' ]; then echo \"last words $(cat '{trigger}')\"; : > '{said}'; fi\n\
             \x20 i=$((i+1))\n\
             \x20 sleep 0.05\n\
             done\n",
            trigger = trigger.display(),
            said = said.display(),
        ),
    )
    .unwrap();
    (app, trigger, said)
}

/// `msgs` holds `last_words` (described as `what`) and ends with the app's answer to SIGTERM.
fn assert_last_lines(msgs: &[String], last_words: &str, what: &str) {
    let tail: Vec<_> = msgs.iter().rev().take(5).collect();
    assert!(
        msgs.iter().any(|m| m == last_words),
        "{what} missing; stream ends with {tail:?}"
    );
    assert_eq!(
        msgs.last().map(String::as_str),
        Some("goodbye after SIGTERM"),
        "stream ends with {tail:?}"
    );
}

#[test]
fn test_run_ships_app_output_publishes_metrics_and_flushes_on_sigterm() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let ids = rt.block_on(group(&aws, "shipping", 1, &[]));
    let id = ids[0].clone();
    let t = TestDir::new();
    let (app, trigger, said) = talking_app(&t);
    let cfg = t.config(&format!(
        "[identity]\nasg_name = \"shipping\"\n[app]\nuser = \"root\"\ncommand = [\"sh\", \"{}\"]\nstop_timeout = \"5s\"\n\
         [lifecycle]\npoll_interval = \"200ms\"\n",
        app.display()
    ));
    // Logs and metrics come from the userdata, as cloudformation/fleet.yaml sends them.
    let userdata = format!(
        "[logs]\nstate_dir = \"{}\"\npoll_interval = \"100ms\"\n[logs.app]\nlog_group = \"{LOG_GROUP}\"\n\
         [metrics]\npublish_interval = \"1s\"\n",
        t.path("logs-state").display()
    );
    let md = Imds::start(ImdsState {
        user_data: Some(userdata),
        ..ImdsState::new(&id)
    })
    .expect("start the IMDS stand-in");
    let sock = crate::util::NotifySocket::bind(t.path("notify.sock"));
    let mut cmd = agent(&cfg, Some(&emu), Some(&md));
    cmd.env("NOTIFY_SOCKET", &sock.path);
    let mut a = Running::spawn(cmd);
    let (out_stream, err_stream) = (format!("{id}/stdout"), format!("{id}/stderr"));

    // While it runs: stdout and stderr lines in their streams.
    wait_for(
        "stdout lines in CloudWatch Logs",
        Duration::from_secs(60),
        || (line_numbers(&rt.block_on(messages(&aws, &out_stream))).len() >= 10).then_some(()),
    );
    wait_for(
        "stderr lines in CloudWatch Logs",
        Duration::from_secs(60),
        || {
            rt.block_on(messages(&aws, &err_stream))
                .contains(&"warn 0".to_owned())
                .then_some(())
        },
    );
    // The status line and `bake-agent status` carry the shipping lag once a batch is acknowledged.
    wait_for(
        "the lag in the status line",
        Duration::from_secs(10),
        || {
            sock.statuses()
                .iter()
                .any(|l| l.starts_with("app running (pid ") && l.ends_with(" ms behind"))
                .then_some(())
        },
    );
    // Lines that differ in the lag only come at least a second apart (a state change may come
    // sooner; its line ends in a new app state).
    std::thread::sleep(Duration::from_millis(2500));
    let timed: Vec<(std::time::Instant, String)> = sock
        .timed()
        .into_iter()
        .filter(|(_, m)| m.starts_with("STATUS="))
        .collect();
    let state_of = |l: &str| l.split(", logs ").next().unwrap_or_default().to_owned();
    for w in timed.windows(2) {
        if w[0].1.contains(" ms behind") && state_of(&w[0].1) == state_of(&w[1].1) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= Duration::from_millis(900),
                "lag-only lines {gap:?} apart: {:?} then {:?}",
                w[0].1,
                w[1].1
            );
        }
    }
    let out = agent(&cfg, None, None)
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["logs"]["lag_ms"].is_u64(), "{doc}");
    assert!(doc["logs"]["events_shipped"].as_u64() >= Some(10), "{doc}");
    assert!(
        doc["logs"]["sources"]["app-stdout"]["events_shipped"].as_u64() >= Some(10),
        "{doc}"
    );
    assert!(
        doc["logs"]["sources"]["app-stderr"]["lag_ms"].is_u64(),
        "{doc}"
    );
    // CPU with the instance's and the group's dimensions, and with the group's alone.
    let want = vec![
        "AutoScalingGroupName=shipping".to_owned(),
        format!("InstanceId={id}"),
    ];
    wait_for(
        "CPUUtilization in CloudWatch",
        Duration::from_secs(60),
        || {
            let dims = rt.block_on(cpu_dimensions(&aws));
            (dims.contains(&want)
                && dims.contains(&vec!["AutoScalingGroupName=shipping".to_owned()]))
            .then_some(())
        },
    );

    // A line printed just before SIGTERM, and one printed in answer to it, are shipped before
    // the agent exits.
    std::fs::write(&trigger, "7d3f").unwrap();
    wait_for("the app's last words", Duration::from_secs(30), || {
        said.exists().then_some(())
    });
    assert_eq!(
        a.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        a.stderr()
    );
    let msgs = rt.block_on(messages(&aws, &out_stream));
    assert_last_lines(&msgs, "last words 7d3f", "line printed before SIGTERM");
    // Every line, in order (at-least-once: a retried request may repeat a run of lines).
    let mut first_seen = Vec::new();
    for n in line_numbers(&msgs) {
        if !first_seen.contains(&n) {
            first_seen.push(n);
        }
    }
    let expected: Vec<u64> = (0..first_seen.len() as u64).collect();
    assert_eq!(first_seen, expected, "lines missing or out of order");
    let err = a.stderr();
    assert!(err.contains("log shipping stopped"), "{err}");
    assert!(err.contains("complete=true"), "{err}");
    assert!(
        !err.contains("app: line"),
        "with [logs] the app's output goes to CloudWatch, not the agent's stderr: {err}"
    );
}

/// On termination (Terminating:Wait), the line the app wrote just before it was stopped and the
/// one it wrote in answer to its stop signal are in CloudWatch Logs before the agent completes
/// the terminate hook: the drain ships them first.
#[test]
fn test_termination_ships_the_last_lines_before_the_terminate_hook() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let ids = rt.block_on(group(
        &aws,
        "drain-logs",
        1,
        &[("autoscaling:EC2_INSTANCE_TERMINATING", "ABANDON")],
    ));
    let id = ids[0].clone();
    let t = TestDir::new();
    let (app, trigger, said) = talking_app(&t);
    let cfg = t.config(&format!(
        "[identity]\nasg_name = \"drain-logs\"\n[app]\nuser = \"root\"\ncommand = [\"sh\", \"{}\"]\nstop_timeout = \"5s\"\n\
         [lifecycle]\npoll_interval = \"200ms\"\n\
         [logs]\nstate_dir = \"{}\"\npoll_interval = \"100ms\"\n[logs.app]\nlog_group = \"{LOG_GROUP}\"\n",
        app.display(),
        t.path("logs-state").display()
    ));
    let md = crate::util::imds(&id);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    let out_stream = format!("{id}/stdout");
    wait_for(
        "stdout lines in CloudWatch Logs",
        Duration::from_secs(60),
        || (!line_numbers(&rt.block_on(messages(&aws, &out_stream))).is_empty()).then_some(()),
    );
    terminate_into_wait(&rt, &aws, "drain-logs", &id);
    std::fs::write(&trigger, "before the drain").unwrap();
    wait_for("the app's last words", Duration::from_secs(30), || {
        said.exists().then_some(())
    });
    // What IMDS shows a terminating instance.
    md.update(|s| s.target_lifecycle_state = Some("Terminated".into()));
    // The moment the hook is completed (the instance leaves Terminating:Wait), the lines are
    // there.
    let msgs = wait_for(
        "the instance to leave Terminating:Wait",
        Duration::from_secs(30),
        || match rt.block_on(state_of(&aws, "drain-logs", &id)) {
            Some((s, _)) if s == "Terminating:Wait" => None,
            _ => Some(rt.block_on(messages(&aws, &out_stream))),
        },
    );
    assert_last_lines(
        &msgs,
        "last words before the drain",
        "line written before the drain, when the hook was completed,",
    );
    assert_eq!(a.wait(Duration::from_secs(20)), Some(0), "{}", a.stderr());
    let err = a.stderr();
    let shipped = err
        .find("log shipping stopped")
        .expect("log shipping stopped");
    let completed = err
        .find("lifecycle action completed")
        .expect("terminate hook completed");
    assert!(shipped < completed, "{err}");
    assert!(err.contains("complete=true"), "{err}");
}

/// `check` (and so `run`) refuses log globs into /proc and /sys, naming the key: their files
/// report size 0 and change on every read.
#[test]
fn test_check_refuses_proc_and_sys_log_globs() {
    let t = TestDir::new();
    for path in ["/proc/meminfo", "/sys/kernel/*"] {
        let cfg = t.config(&format!(
            "[logs]\n[[logs.files]]\npath = \"{path}\"\nlog_group = \"g\"\nlog_stream = \"s\"\n"
        ));
        let o = agent(&cfg, None, None).arg("check").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains("logs.files[0].path"), "{path}: {err}");
    }
}

/// Appends `text` to `path`.
fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Bytes of source `s` (a `bake-agent status -o json` entry) not acknowledged yet: read and
/// waiting, and not read yet.
fn waiting_bytes(s: &serde_json::Value) -> u64 {
    s["backlog_bytes"].as_u64().unwrap_or(0) + s["unread_bytes"].as_u64().unwrap_or(0)
}

/// `bake-agent status` per log source: while CloudWatch Logs is unreachable each source's
/// backlog (read and not acknowledged, and not read yet) and its lag grow, and its last error
/// says why, in the JSON, in the text and in the status line's lag; once it is reachable again
/// every source drains to 0.
#[test]
fn test_status_shows_each_source_s_backlog_grow_while_unreachable_and_drain() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let upstream: std::net::SocketAddr = emu.url().trim_start_matches("http://").parse().unwrap();
    let gate = crate::util::Gate::start(upstream);
    let t = TestDir::new();
    let quiet = t.path("quiet");
    let app = t.path("app.sh");
    std::fs::write(
        &app,
        format!(
            "i=0\nwhile :; do\n\
             \x20 if [ ! -e '{q}' ]; then\n\
             \x20   echo \"line $i\"\n\
             \x20   if [ $((i % 5)) -eq 0 ]; then echo \"warn $i\" >&2; fi\n\
             \x20   i=$((i+1))\n\
             \x20 fi\n\
             \x20 sleep 0.05\n\
             done\n",
            q = quiet.display()
        ),
    )
    .unwrap();
    let files = t.path("files");
    std::fs::create_dir_all(&files).unwrap();
    let file = files.join("app.log");
    let pattern = format!("{}/*.log", files.display());
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"sh\", \"{}\"]\nstop_timeout = \"5s\"\n\
         [logs]\nstate_dir = \"{}\"\npoll_interval = \"100ms\"\n[logs.app]\nlog_group = \"{LOG_GROUP}\"\n\
         [[logs.files]]\npath = \"{pattern}\"\nlog_group = \"{LOG_GROUP}\"\nlog_stream = \"{{instance_id}}/files\"\n",
        app.display(),
        t.path("logs-state").display()
    ));
    let id = "i-0backlog";
    let md = crate::util::imds(id);
    let sock = crate::util::NotifySocket::bind(t.path("notify.sock"));
    let mut cmd = agent(&cfg, Some(&emu), Some(&md));
    // CloudWatch Logs behind the gate; nothing else of the agent's goes there.
    cmd.env("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", gate.url())
        .env("NOTIFY_SOCKET", &sock.path);
    let mut a = Running::spawn(cmd);
    let status_json = || -> Option<serde_json::Value> {
        let out = agent(&cfg, None, None)
            .args(["status", "-o", "json"])
            .output()
            .unwrap();
        (out.status.code() == Some(0)).then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    // The file source's entry (named after its glob and destination).
    let file_source = |d: &serde_json::Value| -> serde_json::Value {
        d["logs"]["sources"]
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.starts_with("file-")))
            .map_or(serde_json::Value::Null, |(_, v)| v.clone())
    };
    let sources = |d: &serde_json::Value| {
        [
            d["logs"]["sources"]["app-stdout"].clone(),
            d["logs"]["sources"]["app-stderr"].clone(),
            file_source(d),
        ]
    };

    // Reachable: every source ships, and says where to.
    append(&file, "file line 0\n");
    let before = wait_for("every source shipped", Duration::from_secs(60), || {
        let d = status_json()?;
        sources(&d)
            .iter()
            .all(|s| s["events_shipped"].as_u64() > Some(0) && s["last_put_at"].is_string())
            .then_some(d)
    });
    assert_eq!(before["schema_version"], 2);
    let [out, err, f] = sources(&before);
    assert_eq!(out["group"], LOG_GROUP, "{before}");
    assert_eq!(out["stream"], format!("{id}/stdout"), "{before}");
    assert_eq!(err["stream"], format!("{id}/stderr"), "{before}");
    assert_eq!(f["stream"], format!("{id}/files"), "{before}");
    assert_eq!(f["pattern"], pattern, "{before}");
    assert!(out["last_error"].is_null(), "{before}");

    // Unreachable: the backlog of every source grows, and so does its lag.
    gate.shut();
    let mut n = 1;
    let mut more_file_lines = || {
        append(&file, &format!("file line {n}\n"));
        n += 1;
    };
    let first = wait_for("a backlog on every source", Duration::from_secs(30), || {
        more_file_lines();
        let d = status_json()?;
        sources(&d)
            .iter()
            .all(|s| s["backlog_events"].as_u64() > Some(0) && s["lag_ms"].as_u64() >= Some(1000))
            .then_some(d)
    });
    for _ in 0..40 {
        more_file_lines();
        std::thread::sleep(Duration::from_millis(50));
    }
    let later = wait_for("a newer state file", Duration::from_secs(10), || {
        let d = status_json()?;
        (d["updated_at"] != first["updated_at"]).then_some(d)
    });
    for (name, (s1, s2)) in ["app-stdout", "app-stderr", "file"]
        .iter()
        .zip(sources(&first).iter().zip(sources(&later).iter()))
    {
        assert!(
            waiting_bytes(s2) > waiting_bytes(s1),
            "{name}: the backlog did not grow: {s1} then {s2}"
        );
        assert!(
            s2["lag_ms"].as_u64() > s1["lag_ms"].as_u64(),
            "{name}: {s1} then {s2}"
        );
        assert!(
            s2["last_error"]["message"].as_str().is_some_and(
                |m| m.starts_with("PutLogEvents: ") && !m.contains("DispatchFailure {")
            ),
            "{name}: {s2}"
        );
        assert!(s2["last_error"]["at"].is_string(), "{name}: {s2}");
    }
    // The text shows each source, with its backlog, and why.
    let text = String::from_utf8(
        agent(&cfg, None, None)
            .arg("status")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let row = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no row for {label} in\n{text}"))
            .to_owned()
    };
    assert!(text.contains("SOURCE "), "{text}");
    for (label, stream) in [
        ("app-stdout", "stdout"),
        ("app-stderr", "stderr"),
        (pattern.as_str(), "files"),
    ] {
        let r = row(label);
        assert!(
            r.contains(" events, "),
            "{label}: no backlog in {r:?}\n{text}"
        );
        assert!(
            r.ends_with(&format!("{LOG_GROUP}  {id}/{stream}")),
            "{r:?}\n{text}"
        );
        assert!(
            text.contains(&format!("{label}: last error ")),
            "{label}\n{text}"
        );
    }
    // The status line's lag is the oldest waiting line's, not the last acknowledged batch's.
    let behind = |l: &String| -> Option<u64> {
        l.rsplit_once(", logs ")?
            .1
            .strip_suffix(" ms behind")?
            .parse()
            .ok()
    };
    wait_for(
        "the lag in the status line",
        Duration::from_secs(10),
        || {
            sock.statuses()
                .iter()
                .any(|l| behind(l) >= Some(2000))
                .then_some(())
        },
    );

    // Reachable again, and the app and the file quiet: every source drains to 0.
    gate.open();
    std::fs::write(&quiet, "").unwrap();
    let last_file_line = format!("file line {}", n - 1);
    let drained = wait_for("every backlog drained", Duration::from_secs(60), || {
        let d = status_json()?;
        sources(&d)
            .iter()
            .all(|s| {
                s["backlog_events"] == 0
                    && s["backlog_bytes"] == 0
                    && s["unread_bytes"] == 0
                    && s["lag_ms"] == 0
            })
            .then_some(d)
    });
    for (s1, s2) in sources(&later).iter().zip(sources(&drained).iter()) {
        assert!(
            s2["events_shipped"].as_u64() > s1["events_shipped"].as_u64(),
            "{s1} then {s2}"
        );
        assert!(
            s2["last_put_at"].as_str() > s1["last_put_at"].as_str(),
            "{s2}"
        );
        // The outage's error stays, older than the last put.
        assert!(
            s2["last_error"]["at"].as_str() < s2["last_put_at"].as_str(),
            "{s2}"
        );
    }
    // What the status says was acknowledged is in CloudWatch Logs.
    let msgs = rt.block_on(messages(&aws, &format!("{id}/files")));
    assert!(
        msgs.contains(&last_file_line),
        "{last_file_line:?} not in {msgs:?}"
    );
    assert_eq!(
        a.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        a.stderr()
    );
}
