//! `bake release` with `[canary]`: the refresh holds at the canary's checkpoint, bake reads the
//! app's request metrics of both releases (what bake-agent publishes by release; here put by the
//! test into the emulator inside the canary's window, at known numbers), judges, prints the verdict
//! and goes on or rolls back by itself.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::util::{other_image, World, BASE_AMI};

const CANARY: &str = "[canary]\nwindow = \"6s\"\nsettle = \"0s\"\nmin_requests = 50\n";

/// What one release did while the refresh held: requests, 5xx, and its latencies.
struct Traffic {
    requests: u64,
    errors: u64,
    latencies: Vec<f64>,
}

/// `requests` requests, `errors` of them 5xx, latencies spread evenly over [lo, hi) ms.
fn traffic(requests: u64, errors: u64, lo: f64, hi: f64) -> Traffic {
    Traffic {
        requests,
        errors,
        latencies: spread(usize::try_from(requests).unwrap(), lo, hi),
    }
}

/// `n` latencies spread evenly over [lo, hi), in ms, rounded to 0.1.
fn spread(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    #[allow(clippy::cast_precision_loss)]
    (0..n)
        .map(|i| ((lo + (hi - lo) * i as f64 / n as f64) * 10.0).round() / 10.0)
        .collect()
}

/// Publishes `t` as the agent does: `Bake/App` with `{AutoScalingGroupName, ImageId}`, values
/// as Values/Counts (at most 150 a datum).
fn publish(w: &World, image: &str, t: &Traffic) {
    let dims = vec![
        Dimension::builder()
            .name("AutoScalingGroupName")
            .value(w.asg())
            .build(),
        Dimension::builder().name("ImageId").value(image).build(),
    ];
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let count = |name: &str, ones: u64, total: u64| {
        #[allow(clippy::cast_precision_loss)]
        let (values, counts): (Vec<f64>, Vec<f64>) =
            [(1.0, ones as f64), (0.0, (total - ones) as f64)]
                .into_iter()
                .filter(|(_, c)| *c > 0.0)
                .unzip();
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dims.clone()))
            .unit(StandardUnit::Count)
            .timestamp(now)
            .set_values(Some(values))
            .set_counts(Some(counts))
            .build()
    };
    let mut data = vec![
        count("Requests", t.requests, t.requests),
        count("Errors5xx", t.errors, t.requests),
    ];
    for chunk in t.latencies.chunks(150) {
        data.push(
            MetricDatum::builder()
                .metric_name("Latency")
                .set_dimensions(Some(dims.clone()))
                .unit(StandardUnit::Milliseconds)
                .storage_resolution(1)
                .timestamp(now)
                .set_values(Some(chunk.to_vec()))
                .build(),
        );
    }
    w.rt.block_on(async {
        for batch in data.chunks(20) {
            w.aws
                .cw
                .put_metric_data()
                .namespace("Bake/App")
                .set_metric_data(Some(batch.to_vec()))
                .send()
                .await
                .expect("PutMetricData");
        }
    });
}

/// Releases `new` with `[canary]` onto a group of 3 on [`BASE_AMI`]; once bake says it observes
/// the held refresh, publishes `old` and `new` traffic inside its window (which begins at the
/// next whole second). Exit code, JSON report, stderr.
fn release_with_canary(
    w: &World,
    old: &Traffic,
    new: &Traffic,
) -> (i32, serde_json::Value, String) {
    use std::io::BufRead;
    let image = other_image(w);
    w.fleet(BASE_AMI, 3);
    w.write_config(CANARY);
    let mut child = w
        .command(&["release", "--ami", &image, "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("observing both releases for") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("bake holds the refresh at the canary's checkpoint and observes");
    std::thread::sleep(Duration::from_millis(1200));
    publish(w, BASE_AMI, old);
    publish(w, &image, new);
    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    for line in stderr.lines().filter(|l| l.contains("canary")) {
        eprintln!("{line}");
    }
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn refresh_status(w: &World, id: &str) -> String {
    let all = w.rt.block_on(w.aws.instance_refreshes(&w.asg())).unwrap();
    all.into_iter().find(|(i, _)| i == id).unwrap().1
}

/// The report's verdict, checked to be `result` with `action`.
fn verdict<'a>(j: &'a serde_json::Value, result: &str, action: &str) -> &'a serde_json::Value {
    let v = &j["canary"];
    assert_eq!(
        (v["result"].as_str(), v["action"].as_str()),
        (Some(result), Some(action)),
        "{v}"
    );
    v
}

#[test]
fn test_a_healthy_canary_goes_on_to_the_whole_group() {
    let w = World::new("canary-ok");
    let old = traffic(500, 1, 10.0, 30.0);
    let new = traffic(300, 1, 10.0, 31.0);
    let (code, j, stderr) = release_with_canary(&w, &old, &new);
    assert_eq!(code, 0, "{j}\n{stderr}");
    assert_eq!(j["result"], "successful", "{j}");
    let v = verdict(&j, "pass", "continued");
    // The numbers are the traffic's.
    assert_eq!(
        (v["old"]["requests"].as_u64(), v["old"]["errors"].as_u64()),
        (Some(500), Some(1)),
        "{v}"
    );
    assert_eq!(
        (v["new"]["requests"].as_u64(), v["new"]["errors"].as_u64()),
        (Some(300), Some(1)),
        "{v}"
    );
    assert_eq!(v["new"]["latency_count"], 300, "{v}");
    assert_eq!(v["old"]["image_id"], BASE_AMI, "{v}");
    // The held refresh was cancelled; another replaced the rest of the group.
    let held = j["canary_refresh_id"].as_str().unwrap();
    assert_ne!(held, j["instance_refresh_id"].as_str().unwrap(), "{j}");
    assert_eq!(refresh_status(&w, held), "Cancelled");
    let now = w.instances();
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.iter().all(|(_, v, _)| v == "2"), "{now:?}");
    assert!(stderr.contains("canary verdict: pass after"), "{stderr}");
}

#[test]
fn test_a_canary_that_answers_5xx_is_rolled_back() {
    let w = World::new("canary-5xx");
    let old = traffic(500, 1, 10.0, 30.0);
    let new = traffic(300, 24, 10.0, 30.0);
    let (code, j, stderr) = release_with_canary(&w, &old, &new);
    assert_eq!(code, 6, "rolled back: {j}\n{stderr}");
    assert_eq!(j["result"], "rolled_back", "{j}");
    let v = verdict(&j, "fail", "rolled_back");
    assert_eq!(v["new"]["errors"], 24, "{v}");
    assert!(
        (v["new"]["error_rate"].as_f64().unwrap() - 0.08).abs() < 1e-9,
        "{v}"
    );
    assert!(v["errors"]["p_value"].as_f64().unwrap() < 0.01, "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("5xx rate 8.00% (24 of 300)"),
        "{v}"
    );
    assert_eq!(j["restored_default"], true, "{j}");
    let now = w.instances();
    assert!(
        now.iter().all(|(_, v, _)| v == "1"),
        "back on the old version: {now:?}"
    );
    assert!(stderr.contains("canary verdict: fail after"), "{stderr}");
}

#[test]
fn test_a_canary_three_times_slower_is_rolled_back_and_too_little_traffic_too() {
    let w = World::new("canary-slow");
    let old = traffic(500, 0, 10.0, 30.0);
    let new = traffic(300, 0, 30.0, 90.0);
    let (code, j, stderr) = release_with_canary(&w, &old, &new);
    assert_eq!(code, 6, "{j}\n{stderr}");
    let v = &j["canary"];
    assert_eq!(v["result"], "fail", "{v}");
    let (old_p50, new_p50) = (
        v["old"]["p50"].as_f64().unwrap(),
        v["new"]["p50"].as_f64().unwrap(),
    );
    assert!(
        (2.5..3.5).contains(&(new_p50 / old_p50)),
        "{old_p50} {new_p50}"
    );
    assert!(v["latency"]["statistic"].as_f64().unwrap() > 0.8, "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("latency p50 "),
        "{v}"
    );

    // Too little traffic on the new release: inconclusive, rolled back.
    let w = World::new("canary-few");
    let few = traffic(10, 0, 10.0, 30.0);
    let (code, j, stderr) = release_with_canary(&w, &old, &few);
    assert_eq!(code, 6, "{j}\n{stderr}");
    assert_eq!(j["canary"]["result"], "inconclusive", "{j}");
    assert_eq!(j["canary"]["latency"], serde_json::Value::Null, "{j}");
}
