//! Instance metrics to CloudWatch: CPU peaks (R10), memory, disk, app restarts, log shipping.
//!
//! CPU is sampled from `/proc/stat` every second. Each publish interval (default 60 s) sends one
//! `CPUUtilization` datum per dimension set as a *statistic set* (min, max, sum, sample count of
//! the one-second samples) with `StorageResolution = 1`, so a one-second peak shows as the
//! interval's Maximum and a high-resolution alarm can fire on it. Everything goes in one
//! `PutMetricData` call per interval to the namespace [`DEFAULT_NAMESPACE`].
//!
//! Metric names (what alarms in cloudformation/ use), all with dimensions
//! `InstanceId` + `AutoScalingGroupName`:
//! - `CPUUtilization` (Percent, high resolution, statistic set);
//! - `MemoryUtilization`, `DiskUtilization` (Percent);
//! - `AppRestarts`, `RejectedLogEvents`, `DroppedLogEvents` (Count, per interval);
//! - `LogShippingLag` (Milliseconds: read → acknowledged, last batch).
//!
//! [`FLEET_METRICS`] (`CPUUtilization`, `AppRestarts`) are also published with
//! `AutoScalingGroupName` alone, so one alarm covers the whole fleet: CloudWatch treats every
//! dimension set as a metric of its own and does not aggregate across them, and an alarm on
//! `{AutoScalingGroupName}` would otherwise see no data at all. agent/tests/agent/alarms.rs checks
//! that every alarm in cloudformation/ reads a metric published here.
//!
//! When the instance has no ASG name, `AutoScalingGroupName` is left out (and so are the fleet
//! copies).
//!
//! **By release**: [`FLEET_METRICS`] are published a third time with
//! `{AutoScalingGroupName, ImageId}` (the image the instance was launched from, from the
//! metadata), and so are the app's own metrics from its embedded-metric-format lines
//! ([`crate::emf`], `[metrics] emf`, default on), in the namespaces the app names: during a
//! rollout, the old and the new release of one group are two series of each metric. The agent
//! also publishes, per interval, `InvalidEmfEvents` (app lines that looked like EMF and broke its
//! specification) and `DroppedAppMetricValues` with the instance's dimensions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use std::collections::BTreeMap;

use crate::emf::AppMetrics;
use crate::identity::Identity;
use crate::logs::LogStats;

/// Namespace of every metric.
pub const DEFAULT_NAMESPACE: &str = "Bake/Agent";
/// Name of the CPU metric.
pub const CPU_METRIC: &str = "CPUUtilization";
/// Name of the app restart count.
pub const RESTARTS_METRIC: &str = "AppRestarts";
/// Metrics also published with `AutoScalingGroupName` alone (the fleet's alarms read those).
pub const FLEET_METRICS: [&str; 2] = [CPU_METRIC, RESTARTS_METRIC];
/// Default time between two PutMetricData calls.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest `publish_interval`.
pub const MIN_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `publish_interval`.
pub const MAX_PUBLISH_INTERVAL: Duration = Duration::from_secs(300);
/// CPU sampling period.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Unsent data kept for the next attempt when CloudWatch is away (datums).
const MAX_BACKLOG: usize = 500;

/// `[metrics]` in agent.toml.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Publish at all. Default true.
    pub enabled: Option<bool>,
    /// Namespace. Default `Bake/Agent`.
    pub namespace: Option<String>,
    /// Time between two PutMetricData calls (humantime, 1s..=5m). Default `"60s"`.
    pub publish_interval: Option<String>,
    /// File system whose usage is `DiskUtilization`. Default `/`.
    pub disk_path: Option<PathBuf>,
    /// Extract and publish the app's embedded-metric-format lines. Default true.
    pub emf: Option<bool>,
}

/// A bad `[metrics]` value, named by key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MetricsError {
    /// Key path, e.g. `metrics.publish_interval`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// `[metrics]`, validated: what [`start`] and [`publish_count`] run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Namespace of every metric.
    pub namespace: String,
    /// Time between two PutMetricData calls.
    pub publish_interval: Duration,
    /// File system whose usage is `DiskUtilization`.
    pub disk_path: PathBuf,
    /// Extract and publish the app's embedded-metric-format lines.
    pub emf: bool,
}

impl MetricsSettings {
    /// Checks and types every value of `cfg`; `None` when metrics are off (`enabled = false`,
    /// whose other values are checked all the same).
    ///
    /// # Errors
    /// [`MetricsError`] naming the key.
    pub fn with_config(cfg: &MetricsConfig) -> Result<Option<Self>, MetricsError> {
        let bad = |key: &str, message: String| MetricsError {
            key: key.into(),
            message,
        };
        let publish_interval = match &cfg.publish_interval {
            None => DEFAULT_PUBLISH_INTERVAL,
            Some(s) => bake_common::duration::parse("metrics.publish_interval", s)
                .map_err(|e| bad(&e.key, e.message()))?,
        };
        if !(MIN_PUBLISH_INTERVAL..=MAX_PUBLISH_INTERVAL).contains(&publish_interval) {
            return Err(bad(
                "metrics.publish_interval",
                "must be between 1s and 5m".into(),
            ));
        }
        let namespace = cfg
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(bad(
                "metrics.namespace",
                format!("{namespace:?} is not a namespace of our own"),
            ));
        }
        let disk_path = cfg.disk_path.clone().unwrap_or_else(|| PathBuf::from("/"));
        Ok(cfg.enabled.unwrap_or(true).then_some(Self {
            namespace,
            publish_interval,
            disk_path,
            emf: cfg.emf.unwrap_or(true),
        }))
    }
}

/// Cumulative CPU times from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// All time.
    pub total: u64,
    /// Idle and iowait time.
    pub idle: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
#[must_use]
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes { total, idle })
}

/// Busy percentage between two samples.
#[must_use]
#[allow(clippy::cast_precision_loss)] // tick counts are far below 2^52
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let idle = after.idle.checked_sub(before.idle)?;
    if total == 0 {
        return None;
    }
    Some((total.saturating_sub(idle)) as f64 * 100.0 / total as f64)
}

/// Used memory percentage from `/proc/meminfo` (MemTotal − MemAvailable).
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn memory_percent(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    (total > 0).then(|| (total.saturating_sub(avail)) as f64 * 100.0 / total as f64)
}

#[allow(clippy::cast_precision_loss)]
fn disk_percent(path: &std::path::Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let blocks = s.blocks();
    let free = s.blocks_free();
    let avail = s.blocks_available();
    let used = blocks.saturating_sub(free);
    // As df computes it: used / (used + available to unprivileged users).
    (used + avail > 0).then(|| used as f64 * 100.0 / (used + avail) as f64)
}

/// Min/max/sum/count of one interval's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Number of samples.
    pub count: u32,
}

impl Stats {
    fn add(acc: Option<Self>, v: f64) -> Self {
        match acc {
            None => Self {
                min: v,
                max: v,
                sum: v,
                count: 1,
            },
            Some(s) => Self {
                min: s.min.min(v),
                max: s.max.max(v),
                sum: s.sum + v,
                count: s.count + 1,
            },
        }
    }
}

/// Running publisher.
#[derive(Debug)]
pub struct MetricsHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsHandle {
    /// Publishes what was sampled and stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

struct Publisher {
    client: aws_sdk_cloudwatch::Client,
    settings: MetricsSettings,
    dims: Vec<Dimension>,
    fleet_dims: Option<Vec<Dimension>>,
    /// `{AutoScalingGroupName, ImageId}` when both are known.
    release_dims: Option<Vec<Dimension>>,
    restarts: Arc<AtomicU64>,
    app: Option<Arc<AppMetrics>>,
    last_invalid: u64,
    last_dropped_values: u64,
    /// The app's datums not sent yet, by namespace.
    app_backlog: BTreeMap<String, Vec<MetricDatum>>,
    log_stats: Option<Arc<LogStats>>,
    last_restarts: u64,
    last_rejected: u64,
    last_dropped: u64,
    backlog: Vec<MetricDatum>,
}

fn dim(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

fn datum_with(
    dims: &[Dimension],
    name: &str,
    unit: StandardUnit,
    value: f64,
    at: DateTime,
) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .set_dimensions(Some(dims.to_vec()))
        .unit(unit)
        .value(value)
        .timestamp(at)
        .build()
}

impl Publisher {
    /// The instance's dimensions, the group's alone, the release's: what [`FLEET_METRICS`] go
    /// out with.
    fn fleet_dimension_sets(&self) -> impl Iterator<Item = &Vec<Dimension>> {
        std::iter::once(&self.dims)
            .chain(self.fleet_dims.as_ref())
            .chain(self.release_dims.as_ref())
    }

    fn datum(&self, name: &str, unit: StandardUnit, value: f64, at: DateTime) -> MetricDatum {
        datum_with(&self.dims, name, unit, value, at)
    }

    #[allow(clippy::cast_precision_loss)]
    async fn publish(&mut self, cpu: Option<Stats>) {
        let at = DateTime::from(SystemTime::now());
        let mut data = Vec::new();
        if let Some(s) = cpu {
            let set = StatisticSet::builder()
                .minimum(s.min)
                .maximum(s.max)
                .sum(s.sum)
                .sample_count(f64::from(s.count))
                .build();
            for dims in self.fleet_dimension_sets() {
                data.push(
                    MetricDatum::builder()
                        .metric_name(CPU_METRIC)
                        .set_dimensions(Some(dims.clone()))
                        .unit(StandardUnit::Percent)
                        .statistic_values(set.clone())
                        .storage_resolution(1)
                        .timestamp(at)
                        .build(),
                );
            }
        }
        if let Some(m) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(memory_percent)
        {
            data.push(self.datum("MemoryUtilization", StandardUnit::Percent, m, at));
        }
        if let Some(d) = disk_percent(&self.settings.disk_path) {
            data.push(self.datum("DiskUtilization", StandardUnit::Percent, d, at));
        }
        let restarts = self.restarts.load(Ordering::Relaxed);
        let restarted = (restarts - self.last_restarts.min(restarts)) as f64;
        for dims in self.fleet_dimension_sets() {
            data.push(datum_with(
                dims,
                RESTARTS_METRIC,
                StandardUnit::Count,
                restarted,
                at,
            ));
        }
        self.last_restarts = restarts;
        if let Some(ls) = &self.log_stats {
            let rejected = ls.rejected_events.load(Ordering::Relaxed);
            let dropped = ls.dropped_events.load(Ordering::Relaxed);
            let lag = ls.lag_ms.load(Ordering::Relaxed) as f64;
            let r = (rejected - self.last_rejected.min(rejected)) as f64;
            let d = (dropped - self.last_dropped.min(dropped)) as f64;
            data.push(self.datum("RejectedLogEvents", StandardUnit::Count, r, at));
            data.push(self.datum("DroppedLogEvents", StandardUnit::Count, d, at));
            data.push(self.datum("LogShippingLag", StandardUnit::Milliseconds, lag, at));
            self.last_rejected = rejected;
            self.last_dropped = dropped;
        }
        if let Some(app) = self.app.clone() {
            let invalid = app.invalid.load(Ordering::Relaxed);
            let dropped = app.dropped_values.load(Ordering::Relaxed);
            let i = (invalid - self.last_invalid.min(invalid)) as f64;
            let d = (dropped - self.last_dropped_values.min(dropped)) as f64;
            data.push(self.datum("InvalidEmfEvents", StandardUnit::Count, i, at));
            data.push(self.datum("DroppedAppMetricValues", StandardUnit::Count, d, at));
            self.last_invalid = invalid;
            self.last_dropped_values = dropped;
            if let Some(reason) = app.take_last_error() {
                tracing::warn!(invalid = i, %reason, "the app wrote embedded-metric-format lines that break its specification; nothing extracted from them");
            }
            let dims = self
                .release_dims
                .clone()
                .unwrap_or_else(|| self.dims.clone());
            for (namespace, datums) in app.drain(&dims) {
                self.app_backlog
                    .entry(namespace)
                    .or_default()
                    .extend(datums);
            }
            self.publish_app().await;
        }
        self.backlog.extend(data);
        // PutMetricData takes up to 1000 datums per call; the backlog is bounded well below.
        let excess = self.backlog.len().saturating_sub(MAX_BACKLOG);
        self.backlog.drain(..excess);
        let res = self
            .client
            .put_metric_data()
            .namespace(&self.settings.namespace)
            .set_metric_data(Some(self.backlog.clone()))
            .send()
            .await;
        match res {
            Ok(_) => self.backlog.clear(),
            Err(e) => {
                tracing::warn!(namespace = %self.settings.namespace, kept = self.backlog.len(), error = %DisplayErrorContext(&e), "PutMetricData failed, keeping the data for the next interval")
            }
        }
    }
}

/// The app's datums of one namespace in a call: with up to [`crate::emf::MAX_VALUES_PER_DATUM`]
/// values each, 100 stay well under PutMetricData's 1 MB.
const APP_DATUMS_PER_CALL: usize = 100;

impl Publisher {
    /// Sends the app's backlog, one namespace and at most [`APP_DATUMS_PER_CALL`] datums a call;
    /// what fails stays for the next interval, bounded to [`MAX_BACKLOG`] datums a namespace.
    async fn publish_app(&mut self) {
        for (namespace, datums) in &mut self.app_backlog {
            let excess = datums.len().saturating_sub(MAX_BACKLOG);
            datums.drain(..excess);
            while !datums.is_empty() {
                let n = datums.len().min(APP_DATUMS_PER_CALL);
                let res = self
                    .client
                    .put_metric_data()
                    .namespace(namespace)
                    .set_metric_data(Some(datums[..n].to_vec()))
                    .send()
                    .await;
                match res {
                    Ok(_) => {
                        datums.drain(..n);
                    }
                    Err(e) => {
                        tracing::warn!(%namespace, kept = datums.len(), error = %DisplayErrorContext(&e), "PutMetricData of the app's metrics failed, keeping the data for the next interval");
                        break;
                    }
                }
            }
        }
        self.app_backlog.retain(|_, d| !d.is_empty());
    }
}

/// Starts sampling and publishing; call within a Tokio runtime. `restarts` is the supervisor's
/// restart counter (cumulative); `log_stats` comes from [`crate::logs::ShipperHandle::stats`];
/// `app` is what the app's output yields ([`crate::logs::AppOutput::with_app_metrics`]).
pub fn start(
    client: aws_sdk_cloudwatch::Client,
    settings: &MetricsSettings,
    identity: &Identity,
    restarts: Arc<AtomicU64>,
    log_stats: Option<Arc<LogStats>>,
    app: Option<Arc<AppMetrics>>,
) -> MetricsHandle {
    let asg_name = identity.asg_name.as_deref();
    let mut dims = vec![dim("InstanceId", &identity.instance_id)];
    let fleet_dims = asg_name.map(|a| vec![dim("AutoScalingGroupName", a)]);
    if let Some(a) = asg_name {
        dims.push(dim("AutoScalingGroupName", a));
    }
    let release_dims = match (asg_name, identity.image_id.as_deref()) {
        (Some(a), Some(image)) => Some(vec![
            dim("AutoScalingGroupName", a),
            dim(crate::emf::RELEASE_DIMENSION, image),
        ]),
        _ => None,
    };
    let last_restarts = restarts.load(Ordering::Relaxed);
    let mut publisher = Publisher {
        client,
        settings: settings.clone(),
        dims,
        fleet_dims,
        release_dims,
        restarts,
        app,
        last_invalid: 0,
        last_dropped_values: 0,
        app_backlog: BTreeMap::new(),
        log_stats,
        last_restarts,
        last_rejected: 0,
        last_dropped: 0,
        backlog: Vec::new(),
    };
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let read = || {
            std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_proc_stat)
        };
        let mut prev = read();
        let mut cpu: Option<Stats> = None;
        let mut sample = tokio::time::interval(SAMPLE_PERIOD);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publish = tokio::time::interval(publisher.settings.publish_interval);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        publish.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = sample.tick() => {
                    let now = read();
                    if let (Some(a), Some(b)) = (prev, now) {
                        if let Some(p) = cpu_percent(a, b) {
                            cpu = Some(Stats::add(cpu, p));
                        }
                    }
                    prev = now;
                }
                _ = publish.tick() => publisher.publish(cpu.take()).await,
                _ = &mut stop_rx => {
                    publisher.publish(cpu.take()).await;
                    return;
                }
            }
        }
    });
    MetricsHandle {
        stop: Some(stop_tx),
        task: Some(task),
    }
}

/// Publishes one `Count` datum `name` = `value` with the dimensions `dims` into the namespace of
/// `settings`, at once: the outcome metrics of `bake-agent job` (`JobSucceeded`, `JobFailed`,
/// `JobPeriodSucceeded`) and of secret-rotation rollouts (`SecretRolloutSucceeded`,
/// `SecretRolloutFailed`). Retries are the SDK's.
///
/// # Errors
/// The PutMetricData error, with the namespace and metric named.
pub async fn publish_count(
    client: &aws_sdk_cloudwatch::Client,
    settings: &MetricsSettings,
    name: &str,
    value: f64,
    dims: &[(&str, &str)],
) -> Result<(), String> {
    let datum = MetricDatum::builder()
        .metric_name(name)
        .set_dimensions(Some(dims.iter().map(|(k, v)| dim(k, v)).collect()))
        .unit(StandardUnit::Count)
        .value(value)
        .timestamp(DateTime::from(SystemTime::now()))
        .build();
    client
        .put_metric_data()
        .namespace(&settings.namespace)
        .metric_data(datum)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "PutMetricData {}/{name}: {}",
                settings.namespace,
                DisplayErrorContext(&e)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cpu_percent_from_proc_stat() {
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_proc_stat("cpu  250 0 150 900 100 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        // +200 busy, +200 idle/iowait of +400.
        assert_eq!(cpu_percent(a, b), Some(50.0));
        assert_eq!(cpu_percent(b, a), None);
        assert!(parse_proc_stat("intr 1 2").is_none());
    }

    #[test]
    fn test_memory_percent() {
        let m = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_percent(m), Some(75.0));
    }

    #[test]
    fn test_stats_keep_the_peak() {
        let s = [3.0, 97.0, 5.0]
            .into_iter()
            .fold(None, |acc, v| Some(Stats::add(acc, v)))
            .unwrap();
        assert_eq!(
            s,
            Stats {
                min: 3.0,
                max: 97.0,
                sum: 105.0,
                count: 3
            }
        );
    }

    fn settings(text: &str) -> Result<Option<MetricsSettings>, MetricsError> {
        MetricsSettings::with_config(&toml::from_str(text).unwrap())
    }

    #[test]
    fn test_config_names_keys() {
        assert!(settings("publish_interval = \"0s\"")
            .unwrap_err()
            .to_string()
            .starts_with("metrics.publish_interval:"));
        let e = settings("publish_interval = \"5x\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("metrics.publish_interval: \"5x\" is not a duration (examples:"),
            "{e}"
        );
        assert_eq!(
            settings("publish_interval = \"30s\"\ndisk_path = \"/var\"").unwrap(),
            Some(MetricsSettings {
                namespace: DEFAULT_NAMESPACE.into(),
                publish_interval: Duration::from_secs(30),
                disk_path: PathBuf::from("/var"),
                emf: true,
            })
        );
        assert!(!settings("emf = false").unwrap().unwrap().emf);
        assert_eq!(settings("enabled = false").unwrap(), None);
        assert!(settings("enabled = false\nnamespace = \"AWS/EC2\"").is_err());
        assert!(toml::from_str::<MetricsConfig>("intervall = 1")
            .unwrap_err()
            .to_string()
            .contains("intervall"));
    }

    #[test]
    fn test_real_proc_is_readable() {
        let text = std::fs::read_to_string("/proc/stat").unwrap();
        assert!(parse_proc_stat(&text).is_some());
        assert!(disk_percent(std::path::Path::new("/")).is_some());
    }
}
