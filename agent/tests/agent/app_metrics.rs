//! `bake-agent run` extracts the app's embedded-metric-format lines and publishes them with the
//! release's dimensions `{AutoScalingGroupName, ImageId}` (the image from the metadata), beside
//! the instance's CPU by release; lines that break the specification are counted, never logged.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use bake_e2e::{Imds, ImdsState};

use crate::util::{agent, group, rt, wait_for, Running, TestDir};

const GROUP: &str = "emf";
const IMAGE: &str = "ami-0release2";
const LOG_GROUP: &str = "/bake/emf-app";

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
        .collect()
}

/// (SampleCount, Sum, Minimum, Maximum) of `namespace`/`name` with `dims` over the last hour,
/// all datapoints together; `None` while there is none.
async fn stats(
    aws: &bake_e2e::Aws,
    namespace: &str,
    name: &str,
    dims: &[Dimension],
) -> Option<(f64, f64, f64, f64)> {
    let now = std::time::SystemTime::now();
    let out = aws
        .cw
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(name)
        .set_dimensions(Some(dims.to_vec()))
        .start_time((now - Duration::from_secs(3600)).into())
        .end_time((now + Duration::from_secs(600)).into())
        .period(3600)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Sum)
        .statistics(Statistic::Minimum)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .ok()?;
    let points = out.datapoints();
    if points.is_empty() {
        return None;
    }
    Some((
        points.iter().filter_map(|p| p.sample_count()).sum(),
        points.iter().filter_map(|p| p.sum()).sum(),
        points
            .iter()
            .filter_map(|p| p.minimum())
            .fold(f64::INFINITY, f64::min),
        points
            .iter()
            .filter_map(|p| p.maximum())
            .fold(f64::NEG_INFINITY, f64::max),
    ))
}

/// The app: 100 EMF documents (Latency 1..=100 ms, one request each, every tenth a 5xx), a plain
/// line, three documents that break the specification (a string Timestamp, holding a
/// token that must not reach the agent's log), then idles.
fn emf_app(t: &TestDir) -> std::path::PathBuf {
    let app = t.path("app.sh");
    std::fs::write(
        &app,
        r#"trap 'exit 0' TERM
now=$(date +%s%3N)
i=1
while [ $i -le 100 ]; do
  e=0; [ $((i % 10)) -eq 0 ] && e=1
  printf '{"_aws":{"Timestamp":%s,"CloudWatchMetrics":[{"Namespace":"Bake/App","Dimensions":[["Service"]],"Metrics":[{"Name":"Requests","Unit":"Count"},{"Name":"Errors5xx","Unit":"Count"},{"Name":"Latency","Unit":"Milliseconds","StorageResolution":1}]}]},"Service":"web","Requests":1,"Errors5xx":%s,"Latency":%s}\n' "$now" "$e" "$i"
  i=$((i+1))
done
echo "plain line"
for n in 1 2 3; do echo '{"_aws":{"Timestamp":"soon","CloudWatchMetrics":[]},"token":"tok-9f2c77"}' >&2; done
while :; do sleep 0.2; done
"#,
    )
    .unwrap();
    app
}

#[test]
fn test_the_apps_emf_lines_are_published_by_release() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let id = rt.block_on(group(&aws, GROUP, 1, &[]))[0].clone();
    let t = TestDir::new();
    let cfg = t.config(&format!(
        "[identity]\nasg_name = \"{GROUP}\"\n[app]\nuser = \"root\"\ncommand = [\"sh\", \"{}\"]\nstop_timeout = \"5s\"\n\
         [lifecycle]\npoll_interval = \"200ms\"\n\
         [logs]\nstate_dir = \"{}\"\npoll_interval = \"100ms\"\n[logs.app]\nlog_group = \"{LOG_GROUP}\"\n\
         [metrics]\npublish_interval = \"1s\"\n",
        emf_app(&t).display(),
        t.path("logs-state").display()
    ));
    let md = Imds::start(ImdsState {
        ami_id: Some(IMAGE.into()),
        ..ImdsState::new(&id)
    })
    .expect("start the IMDS stand-in");
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    let release = dims(&[("AutoScalingGroupName", GROUP), ("ImageId", IMAGE)]);

    // Every value, once, with the release's dimensions.
    let latency = wait_for(
        "the app's 100 latencies by release",
        Duration::from_secs(60),
        || {
            rt.block_on(stats(&aws, "Bake/App", "Latency", &release))
                .filter(|s| s.0 >= 100.0)
        },
    );
    assert_eq!(latency, (100.0, 5050.0, 1.0, 100.0));
    let requests = rt.block_on(stats(&aws, "Bake/App", "Requests", &release));
    assert_eq!(requests.map(|s| (s.0, s.1)), Some((100.0, 100.0)));
    let errors = rt.block_on(stats(&aws, "Bake/App", "Errors5xx", &release));
    assert_eq!(errors.map(|s| s.1), Some(10.0));
    // The document's own dimension sets are CloudWatch Logs' to extract, not the agent's.
    let listed = rt
        .block_on(aws.cw.list_metrics().namespace("Bake/App").send())
        .unwrap();
    for m in listed.metrics() {
        let names: Vec<_> = m.dimensions().iter().filter_map(|d| d.name()).collect();
        assert_eq!(
            names,
            ["AutoScalingGroupName", "ImageId"],
            "{:?}",
            m.metric_name()
        );
    }
    // The instance's CPU by release too.
    wait_for("CPUUtilization by release", Duration::from_secs(30), || {
        rt.block_on(stats(&aws, "Bake/Agent", "CPUUtilization", &release))
    });
    // The three bad documents: counted, their reason logged, their content not.
    let instance = dims(&[("InstanceId", &id), ("AutoScalingGroupName", GROUP)]);
    wait_for("InvalidEmfEvents = 3", Duration::from_secs(30), || {
        rt.block_on(stats(&aws, "Bake/Agent", "InvalidEmfEvents", &instance))
            .filter(|s| s.1 >= 3.0)
    });
    let err = a.stderr();
    assert!(err.contains("_aws.Timestamp"), "{err}");
    assert!(!err.contains("tok-9f2c77"), "{err}");
    // The lines themselves are shipped as they were written.
    let shipped = wait_for(
        "the EMF lines in CloudWatch Logs",
        Duration::from_secs(30),
        || {
            let out = rt
                .block_on(
                    aws.logs
                        .get_log_events()
                        .log_group_name(LOG_GROUP)
                        .log_stream_name(format!("{id}/stdout"))
                        .start_from_head(true)
                        .send(),
                )
                .ok()?;
            let n = out
                .events()
                .iter()
                .filter(|e| e.message().is_some_and(|m| m.starts_with("{\"_aws\"")))
                .count();
            (n == 100).then_some(n)
        },
    );
    assert_eq!(shipped, 100);
    assert_eq!(
        a.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        a.stderr()
    );
}
