//! Every CloudWatch alarm in cloudformation/*.yaml is fed by a metric the agent really
//! publishes: same namespace, metric name and exact set of dimension names. CloudWatch treats
//! each dimension set as a metric of its own, so an alarm on `{AutoScalingGroupName}` never sees
//! data published only with `{AutoScalingGroupName, InstanceId}`, and `TreatMissingData:
//! notBreaching` keeps it OK forever.
//!
//! What is published comes from running the agent, not from a list: `bake-agent run` (the
//! sample app, made to crash once, logs shipped, metrics every second, a secret rotated with
//! `on_change = "rollout"`) and `bake-agent job` (one run that succeeds, one that fails) against
//! the emulator, then ListMetrics. The alarms
//! come from the templates (`tests/infra/cfn.py alarms`, which reads the CloudFormation YAML
//! with its short-form tags). A code path that publishes a metric an alarm needs and is not run
//! here shows as a failure naming the alarm: run that path here too.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bake_e2e::{Imds, ImdsState};

use crate::util::{agent, free_port, group, rt, sample_app, wait_for, Running, TestDir};

/// (namespace, metric name, sorted dimension names).
type MetricKey = (String, String, Vec<String>);

/// One alarm of the templates and the metrics it reads.
#[derive(Debug)]
struct Alarm {
    template: String,
    alarm: String,
    metrics: Vec<MetricKey>,
}

/// Every `AWS::CloudWatch::Alarm` in cloudformation/*.yaml.
fn alarms_in_templates() -> Vec<Alarm> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("tests/emulator/.venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("tests/infra/cfn.py"))
        .arg("alarms")
        .output()
        .unwrap_or_else(|e| panic!("run {} tests/infra/cfn.py: {e}", python.display()));
    assert!(
        out.status.success(),
        "tests/infra/cfn.py alarms: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cfn.py prints JSON");
    let text = |v: &serde_json::Value, what: &str| -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("{what} is not a literal string in the template: {v}"))
            .to_owned()
    };
    v.as_array()
        .expect("a list of alarms")
        .iter()
        .map(|a| Alarm {
            template: text(&a["template"], "template"),
            alarm: text(&a["alarm"], "alarm"),
            metrics: a["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .map(|m| {
                    let mut dims: Vec<String> = m["dimensions"]
                        .as_array()
                        .expect("dimensions")
                        .iter()
                        .map(|d| text(d, "dimension name"))
                        .collect();
                    dims.sort();
                    (
                        text(&m["namespace"], "Namespace"),
                        text(&m["name"], "MetricName"),
                        dims,
                    )
                })
                .collect(),
        })
        .collect()
}

/// Every metric in the emulator's CloudWatch (all namespaces, all pages).
async fn published(aws: &bake_e2e::Aws) -> BTreeSet<MetricKey> {
    let mut out = BTreeSet::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let Ok(page) = aws
            .cw
            .list_metrics()
            .set_next_token(token.clone())
            .send()
            .await
        else {
            return out;
        };
        for m in page.metrics() {
            let mut dims: Vec<String> = m
                .dimensions()
                .iter()
                .filter_map(|d| d.name().map(str::to_owned))
                .collect();
            dims.sort();
            out.insert((
                m.namespace().unwrap_or_default().to_owned(),
                m.metric_name().unwrap_or_default().to_owned(),
                dims,
            ));
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    out
}

/// Alarms (template/logical id: metric) that no published metric feeds.
fn unfed(alarms: &[Alarm], have: &BTreeSet<MetricKey>) -> Vec<String> {
    let mut out = Vec::new();
    for a in alarms {
        if a.metrics.is_empty() {
            out.push(format!(
                "{}.yaml {}: reads no metric (metric math without MetricStat?)",
                a.template, a.alarm
            ));
        }
        for m in &a.metrics {
            if !have.contains(m) {
                out.push(format!(
                    "{}.yaml {}: {} {} {{{}}}",
                    a.template,
                    a.alarm,
                    m.0,
                    m.1,
                    m.2.join(", ")
                ));
            }
        }
    }
    out
}

/// `GET path` straight to the app on `port`; the status line ("" if the app dropped it).
fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn test_every_alarm_in_the_templates_reads_a_metric_the_agent_publishes() {
    let alarms = alarms_in_templates();
    // fleet.yaml's CPU peak, sustained CPU and app restart alarms at least.
    assert!(alarms.len() >= 3, "alarms found: {alarms:?}");

    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let asg = "bake-alarms";
    let ids = rt.block_on(group(&aws, asg, 1, &[]));
    let id = ids[0].clone();
    let put_secret = |value: &str| {
        rt.block_on(
            aws.ssm
                .put_parameter()
                .name("/bake/alarms/app/TOKEN")
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send(),
        )
        .expect("put the app's secret");
    };
    put_secret("first");
    let t = TestDir::new();
    let port = free_port();
    let cfg = t.config(&format!(
        "[identity]\nasg_name = \"{asg}\"\n\
         [app]\ncommand = [\"node\", \"{app}\"]\nuser = \"root\"\nenv = {{ PORT = \"{port}\" }}\nstop_timeout = \"3s\"\n\
         [supervise]\nbackoff_initial = \"100ms\"\ncrash_loop_count = 100\n\
         [readiness]\nprobe = \"http://127.0.0.1:{port}/health\"\ninterval = \"100ms\"\n\
         [lifecycle]\npoll_interval = \"200ms\"\n\
         [secrets]\npath = \"/bake/alarms/app\"\npoll_interval = \"1s\"\non_change = \"rollout\"\n\
         [lease]\nprefix = \"/bake/alarms/leases\"\n\
         [logs]\nstate_dir = \"{state}\"\npoll_interval = \"100ms\"\n\
         [logs.app]\nlog_group = \"/bake/alarms/app\"\n\
         [metrics]\npublish_interval = \"1s\"\n",
        app = sample_app().display(),
        state = t.path("logs-state").display(),
    ));
    let md = Imds::start(ImdsState::new(&id)).expect("start the IMDS stand-in");
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    wait_for("the app", Duration::from_secs(30), || {
        get(port, "/health").contains(" 200 ").then_some(())
    });
    // One crash: the supervisor restarts the app and counts it.
    get(port, "/crash");
    wait_for("the restarted app", Duration::from_secs(30), || {
        get(port, "/health").contains(" 200 ").then_some(())
    });
    // A rotated secret: the agent rolls it out (an instance refresh of its group).
    put_secret("second");
    // The fleet's weekly job, once succeeding and once failing (its outcome metrics).
    for (job, period, cmd) in [
        ("user-stats", "weekly", "true"),
        ("failing", "hourly", "exit 3"),
    ] {
        let out = agent(&cfg, Some(&emu), Some(&md))
            .args(["job", job, "--period", period, "--", "/bin/sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.code().is_some(),
            "bake-agent job {job}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Published every second: wait until every alarm is fed, or report the ones that are not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (have, missing) = loop {
        let have = rt.block_on(published(&aws));
        let missing = unfed(&alarms, &have);
        if missing.is_empty() || Instant::now() > deadline {
            break (have, missing);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        a.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        a.stderr()
    );
    assert!(
        missing.is_empty(),
        "alarms that no metric the agent publishes feeds:\n  {}\npublished: {have:#?}",
        missing.join("\n  ")
    );
    // The metrics are the agent's, with this instance's dimensions (not left over elsewhere).
    assert!(
        have.contains(&(
            "Bake/Agent".to_owned(),
            "AppRestarts".to_owned(),
            vec!["AutoScalingGroupName".to_owned(), "InstanceId".to_owned()]
        )),
        "{have:#?}"
    );
}
