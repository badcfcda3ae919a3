//! The app's own metrics, from the CloudWatch embedded metric format (EMF) lines it writes.
//!
//! An app that writes EMF documents on its stdout or stderr (one JSON object a line, as the
//! `aws-embedded-metrics` libraries do) gets its metrics extracted here, as CloudWatch Logs
//! extracts them, and published by the agent with the release's dimensions
//! `{AutoScalingGroupName, ImageId}`: so the canary and the fleet's dashboards compare releases
//! within one group at once, without waiting for (or needing) log-based extraction.
//!
//! What is extracted, per the EMF specification (CloudWatch user guide, "Specification:
//! Embedded metric format"): a line that is a JSON object with an `_aws` member; `_aws` must be
//! an object with a numeric `Timestamp` (ms since the epoch) and `CloudWatchMetrics`, an array
//! of metric directives, each with a string `Namespace`, `Dimensions` (an array of dimension
//! sets, arrays of at most 30 names, each naming a string member of the root of at most 1024
//! characters) and `Metrics` (at most 100 definitions: `Name`, optional `Unit` — one of
//! CloudWatch's units — and optional `StorageResolution` 1 or 60); every metric named must be a
//! member of the root holding a number or an array of at most 100 numbers. A document that
//! breaks a rule yields nothing (it is still shipped as a log line) and is counted
//! (`InvalidEmfEvents`); other lines are not looked at beyond their first byte.
//!
//! Published: one series per namespace and metric name, whatever the document's own dimension
//! sets (a value is counted once even when a metric is in several directives), with the
//! dimensions of the release; the document's own dimension sets are *not* published by the
//! agent, because CloudWatch Logs extracts those itself from the shipped lines (the
//! `x-amzn-logs-format: json/emf` header is optional) and they would be counted twice. Values
//! are kept per second (`StorageResolution` 1) or per minute (60, the default) of their
//! timestamp and sent as `Values`/`Counts`, so CloudWatch keeps the distribution (percentiles).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

/// The dimension that names the release: the image the instance was launched from.
pub const RELEASE_DIMENSION: &str = "ImageId";
/// Longest line looked at (CloudWatch Logs' event limit).
pub const MAX_LINE: usize = 1024 * 1024;
/// Distinct values kept between two publishes; more are dropped and counted
/// (`DroppedAppMetricValues`).
pub const MAX_VALUES_PER_INTERVAL: usize = 20_000;
/// Distinct values in one datum (PutMetricData's limit for `Values`).
pub const MAX_VALUES_PER_DATUM: usize = 150;
const MAX_DIRECTIVE_METRICS: usize = 100;
const MAX_DIMENSION_SET: usize = 30;
const MAX_DIMENSION_VALUE: usize = 1024;
const MAX_ARRAY_VALUES: usize = 100;
/// How far a timestamp may be from now for CloudWatch to take it: two weeks back, two hours on.
const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;

/// Why a document that looks like EMF (a JSON object with `_aws`) yields no metrics.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmfError {
    /// Not JSON.
    #[error("not a JSON object: {0}")]
    Parse(String),
    /// Against the specification; names the member.
    #[error("{0}")]
    Invalid(String),
}

/// One metric's values from one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The directive's namespace.
    pub namespace: String,
    /// The metric's name.
    pub name: String,
    /// Its unit, when given.
    pub unit: Option<String>,
    /// 1 (high resolution) or 60.
    pub storage_resolution: i32,
    /// The document's `Timestamp`, ms since the epoch.
    pub timestamp_ms: i64,
    /// The values.
    pub values: Vec<f64>,
}

fn invalid(message: impl Into<String>) -> EmfError {
    EmfError::Invalid(message.into())
}

/// Is `line` worth parsing: does it start with `{` and mention `"_aws"`.
fn looks_like_emf(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && memchr::memmem::find(line, b"\"_aws\"").is_some()
}

/// The metrics of one line: `Ok(None)` when it is not an EMF document (not a JSON object with
/// an `_aws` member), `Err` when it is one that breaks the specification.
///
/// # Errors
/// [`EmfError`] naming the member at fault.
pub fn parse(line: &[u8]) -> Result<Option<Vec<Extracted>>, EmfError> {
    let line = line.trim_ascii_end();
    if !looks_like_emf(line) {
        return Ok(None);
    }
    let doc: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| EmfError::Parse(e.to_string()))?;
    let Some(root) = doc.as_object() else {
        return Ok(None);
    };
    let Some(aws) = root.get("_aws") else {
        return Ok(None);
    };
    let aws = aws
        .as_object()
        .ok_or_else(|| invalid("_aws: not an object"))?;
    let timestamp_ms = aws
        .get("Timestamp")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| invalid("_aws.Timestamp: missing or not a number"))?;
    #[allow(clippy::cast_possible_truncation)] // ms since the epoch: far below i64::MAX
    let timestamp_ms = timestamp_ms as i64;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| invalid("_aws.CloudWatchMetrics: missing or not an array"))?;
    let mut out: Vec<Extracted> = Vec::new();
    for (i, d) in directives.iter().enumerate() {
        let at = format!("_aws.CloudWatchMetrics[{i}]");
        let d = d
            .as_object()
            .ok_or_else(|| invalid(format!("{at}: not an object")))?;
        let namespace = d
            .get("Namespace")
            .and_then(serde_json::Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= 255 && !n.starts_with("AWS/"))
            .ok_or_else(|| {
                invalid(format!(
                    "{at}.Namespace: missing, empty, longer than 255 or AWS/"
                ))
            })?;
        let sets = d
            .get("Dimensions")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| invalid(format!("{at}.Dimensions: missing or not an array")))?;
        for (j, set) in sets.iter().enumerate() {
            let set = set
                .as_array()
                .filter(|s| s.len() <= MAX_DIMENSION_SET)
                .ok_or_else(|| {
                    invalid(format!(
                        "{at}.Dimensions[{j}]: not an array of at most 30 names"
                    ))
                })?;
            for name in set {
                let name = name.as_str().ok_or_else(|| {
                    invalid(format!("{at}.Dimensions[{j}]: a name is not a string"))
                })?;
                root.get(name)
                    .and_then(serde_json::Value::as_str)
                    .filter(|v| !v.is_empty() && v.len() <= MAX_DIMENSION_VALUE)
                    .ok_or_else(|| {
                        invalid(format!(
                            "dimension {name:?}: no string member of at most 1024 characters"
                        ))
                    })?;
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(serde_json::Value::as_array)
            .filter(|m| m.len() <= MAX_DIRECTIVE_METRICS)
            .ok_or_else(|| {
                invalid(format!(
                    "{at}.Metrics: missing, not an array or more than 100"
                ))
            })?;
        for (k, m) in metrics.iter().enumerate() {
            let mat = format!("{at}.Metrics[{k}]");
            let m = m
                .as_object()
                .ok_or_else(|| invalid(format!("{mat}: not an object")))?;
            let name = m
                .get("Name")
                .and_then(serde_json::Value::as_str)
                .filter(|n| !n.is_empty() && n.len() <= 255)
                .ok_or_else(|| invalid(format!("{mat}.Name: missing, empty or longer than 255")))?;
            let unit = match m.get("Unit") {
                None => None,
                Some(u) => Some(
                    u.as_str()
                        .filter(|u| StandardUnit::values().contains(u))
                        .ok_or_else(|| invalid(format!("{mat}.Unit: not a CloudWatch unit")))?
                        .to_owned(),
                ),
            };
            let storage_resolution = match m.get("StorageResolution") {
                None => 60,
                Some(r) => match r.as_i64() {
                    Some(1) => 1,
                    Some(60) => 60,
                    _ => return Err(invalid(format!("{mat}.StorageResolution: not 1 or 60"))),
                },
            };
            let values = match root.get(name) {
                Some(serde_json::Value::Number(n)) => vec![number(n, name)?],
                Some(serde_json::Value::Array(a)) if a.len() <= MAX_ARRAY_VALUES => a
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::Number(n) => number(n, name),
                        _ => Err(invalid(format!(
                            "metric {name:?}: an element is not a number"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(invalid(format!(
                        "metric {name:?}: no member holding a number or at most 100 numbers"
                    )))
                }
            };
            // Counted once per document, whatever number of directives name it.
            if !out
                .iter()
                .any(|e| e.namespace == namespace && e.name == name)
            {
                out.push(Extracted {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    unit,
                    storage_resolution,
                    timestamp_ms,
                    values,
                });
            }
        }
    }
    Ok(Some(out))
}

/// A value CloudWatch takes: finite, and within ±2^360 (PutMetricData rejects others).
fn number(n: &serde_json::Number, name: &str) -> Result<f64, EmfError> {
    const LIMIT: f64 = 2.348_542_582_773_833_3e108; // 2^360
    n.as_f64()
        .filter(|v| v.is_finite() && v.abs() <= LIMIT)
        .ok_or_else(|| {
            invalid(format!(
                "metric {name:?}: a value out of CloudWatch's range"
            ))
        })
}

/// A value ordered by `total_cmp`, to key the distribution.
#[derive(Debug, Clone, Copy)]
struct Value(f64);

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Value {}
impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    name: String,
    unit: Option<String>,
    storage_resolution: i32,
    /// Start of the second or minute of the values, seconds since the epoch.
    bucket: i64,
}

#[derive(Debug, Default)]
struct Pending {
    series: BTreeMap<SeriesKey, BTreeMap<Value, f64>>,
    distinct: usize,
}

/// What the app's lines yielded since the last publish, and the counters. Shared by every pipe
/// of the app (all its processes) and the metrics publisher.
#[derive(Debug, Default)]
pub struct AppMetrics {
    pending: Mutex<Pending>,
    /// EMF documents that yielded metrics.
    pub documents: AtomicU64,
    /// EMF documents that broke the specification (nothing extracted).
    pub invalid: AtomicU64,
    /// Values dropped: beyond [`MAX_VALUES_PER_INTERVAL`], or timestamps CloudWatch refuses.
    pub dropped_values: AtomicU64,
    /// The reason of the last invalid document, for the publisher's warning.
    last_error: Mutex<Option<String>>,
}

impl AppMetrics {
    /// Looks at one line of the app's output.
    pub fn offer(&self, line: &[u8]) {
        self.offer_at(line, now_ms());
    }

    fn offer_at(&self, line: &[u8], now_ms: i64) {
        match parse(line) {
            Ok(None) => {}
            Ok(Some(metrics)) => {
                self.documents.fetch_add(1, AtomicOrdering::Relaxed);
                let mut p = self
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for m in metrics {
                    if m.timestamp_ms < now_ms - MAX_AGE_MS
                        || m.timestamp_ms > now_ms + MAX_AHEAD_MS
                    {
                        self.dropped_values
                            .fetch_add(m.values.len() as u64, AtomicOrdering::Relaxed);
                        continue;
                    }
                    let step = i64::from(m.storage_resolution) * 1000;
                    let key = SeriesKey {
                        namespace: m.namespace,
                        name: m.name,
                        unit: m.unit,
                        storage_resolution: m.storage_resolution,
                        bucket: m.timestamp_ms.div_euclid(step) * step / 1000,
                    };
                    let Pending { series, distinct } = &mut *p;
                    let values = series.entry(key).or_default();
                    for v in m.values {
                        if let Some(c) = values.get_mut(&Value(v)) {
                            *c += 1.0;
                        } else if *distinct < MAX_VALUES_PER_INTERVAL {
                            values.insert(Value(v), 1.0);
                            *distinct += 1;
                        } else {
                            self.dropped_values.fetch_add(1, AtomicOrdering::Relaxed);
                        }
                    }
                }
            }
            Err(e) => {
                self.invalid.fetch_add(1, AtomicOrdering::Relaxed);
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
        }
    }

    /// The reason of the last invalid document since the last call (names a member, never a
    /// value).
    pub fn take_last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Everything pending as datums with `dims`, by namespace (at most
    /// [`MAX_VALUES_PER_DATUM`] distinct values a datum), and nothing pending after.
    #[must_use]
    pub fn drain(&self, dims: &[Dimension]) -> BTreeMap<String, Vec<MetricDatum>> {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut out: BTreeMap<String, Vec<MetricDatum>> = BTreeMap::new();
        for (key, values) in pending.series {
            let values: Vec<(f64, f64)> = values.into_iter().map(|(v, c)| (v.0, c)).collect();
            for chunk in values.chunks(MAX_VALUES_PER_DATUM) {
                out.entry(key.namespace.clone()).or_default().push(
                    MetricDatum::builder()
                        .metric_name(&key.name)
                        .set_dimensions(Some(dims.to_vec()))
                        .set_unit(key.unit.as_deref().map(StandardUnit::from))
                        .storage_resolution(key.storage_resolution)
                        .timestamp(DateTime::from_secs(key.bucket))
                        .set_values(Some(chunk.iter().map(|(v, _)| *v).collect()))
                        .set_counts(Some(chunk.iter().map(|(_, c)| *c).collect()))
                        .build(),
                );
            }
        }
        out
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// Splits one pipe's chunks into lines for [`AppMetrics::offer`], holding a partial line only
/// when it starts with `{` and is at most [`MAX_LINE`] long.
#[derive(Debug)]
pub struct LineTap {
    metrics: std::sync::Arc<AppMetrics>,
    partial: Vec<u8>,
    /// The current line is not looked at (not `{`, or too long).
    skip: bool,
}

impl LineTap {
    /// A tap for one pipe.
    #[must_use]
    pub fn new(metrics: std::sync::Arc<AppMetrics>) -> Self {
        Self {
            metrics,
            partial: Vec::new(),
            skip: false,
        }
    }

    /// The next bytes of the pipe.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let line = &rest[..i];
            if self.skip {
                self.skip = false;
            } else if self.partial.is_empty() {
                self.metrics.offer(line);
            } else if self.partial.len() + line.len() <= MAX_LINE {
                self.partial.extend_from_slice(line);
                self.metrics.offer(&self.partial);
                self.partial.clear();
            } else {
                self.partial.clear();
            }
            rest = &rest[i + 1..];
        }
        if rest.is_empty() || self.skip {
            return;
        }
        if (self.partial.is_empty() && rest[0] != b'{')
            || self.partial.len() + rest.len() > MAX_LINE
        {
            self.partial.clear();
            self.skip = true;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// The pipe's end: a last line without a newline is looked at too.
    pub fn end(&mut self) {
        if !self.skip && !self.partial.is_empty() {
            self.metrics.offer(&self.partial);
        }
        self.partial.clear();
        self.skip = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const NOW: i64 = 1_764_000_000_000;

    fn doc(extra: &str) -> String {
        format!(
            r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"Bake/App","Dimensions":[["Service"]],"Metrics":[{{"Name":"Latency","Unit":"Milliseconds","StorageResolution":1}},{{"Name":"Requests","Unit":"Count"}}]}}]}},"Service":"web","Latency":12.5,"Requests":1{extra}}}"#
        )
    }

    #[test]
    fn test_a_document_of_the_specification_yields_its_metrics() {
        let got = parse(doc(r#","path":"/x""#).as_bytes()).unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                Extracted {
                    namespace: "Bake/App".into(),
                    name: "Latency".into(),
                    unit: Some("Milliseconds".into()),
                    storage_resolution: 1,
                    timestamp_ms: NOW,
                    values: vec![12.5],
                },
                Extracted {
                    namespace: "Bake/App".into(),
                    name: "Requests".into(),
                    unit: Some("Count".into()),
                    storage_resolution: 60,
                    timestamp_ms: NOW,
                    values: vec![1.0],
                },
            ]
        );
        // An array of values; a dimension set may be empty.
        let arr = format!(
            r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[[]],"Metrics":[{{"Name":"L"}}]}}]}},"L":[1,2,3]}}"#
        );
        let got = parse(arr.as_bytes()).unwrap().unwrap();
        assert_eq!(got[0].values, vec![1.0, 2.0, 3.0]);
        assert_eq!(got[0].unit, None);
    }

    #[test]
    fn test_lines_that_are_not_emf_are_not_looked_at() {
        for line in [
            "GET / 200",
            "",
            r#"{"level":"info","msg":"no metrics"}"#,
            r#"["_aws"]"#,
            r#" {"_aws":{}}"#,
        ] {
            assert_eq!(parse(line.as_bytes()), Ok(None), "{line}");
        }
    }

    #[test]
    fn test_documents_against_the_specification_are_refused_naming_the_member() {
        let cases = [
            (r#"{"_aws": 1}"#, "_aws: not an object"),
            (r#"{"_aws":{"CloudWatchMetrics":[]}}"#, "_aws.Timestamp"),
            (r#"{"_aws":{"Timestamp":1}}"#, "_aws.CloudWatchMetrics"),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Dimensions":[],"Metrics":[]}]}}"#,
                "Namespace",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"AWS/EC2","Dimensions":[],"Metrics":[]}]}}"#,
                "Namespace",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["S"]],"Metrics":[]}]}}"#,
                "dimension \"S\"",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["S"]],"Metrics":[]}]},"S":3}"#,
                "dimension \"S\"",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[],"Metrics":[{"Name":"L"}]}]}}"#,
                "metric \"L\"",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[],"Metrics":[{"Name":"L"}]}]},"L":"12"}"#,
                "metric \"L\"",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[],"Metrics":[{"Name":"L","Unit":"Parsecs"}]}]},"L":1}"#,
                "Metrics[0].Unit",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[],"Metrics":[{"Name":"L","StorageResolution":5}]}]},"L":1}"#,
                "StorageResolution",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[],"Metrics":[{"Name":"L"}]}]},"L":1e300}"#,
                "out of CloudWatch's range",
            ),
        ];
        for (line, want) in cases {
            match parse(line.as_bytes()) {
                Err(EmfError::Invalid(m)) => assert!(m.contains(want), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Too many dimensions in a set, too many values in an array.
        let dims: Vec<String> = (0..31).map(|i| format!("\"d{i}\"")).collect();
        let line = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[[{}]],"Metrics":[]}}]}}}}"#,
            dims.join(",")
        );
        assert!(matches!(parse(line.as_bytes()), Err(EmfError::Invalid(_))));
        let values: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let line = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[],"Metrics":[{{"Name":"L"}}]}}]}},"L":[{}]}}"#,
            values.join(",")
        );
        assert!(matches!(parse(line.as_bytes()), Err(EmfError::Invalid(_))));
        assert!(matches!(
            parse(br#"{"_aws": {"Timestamp": 1, "#),
            Err(EmfError::Parse(_))
        ));
    }

    #[test]
    fn test_a_metric_in_two_directives_is_counted_once() {
        let line = format!(
            r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[["A"]],"Metrics":[{{"Name":"L"}}]}},{{"Namespace":"N","Dimensions":[["A","B"]],"Metrics":[{{"Name":"L"}}]}}]}},"A":"a","B":"b","L":7}}"#
        );
        assert_eq!(parse(line.as_bytes()).unwrap().unwrap().len(), 1);
    }

    fn values_of(d: &MetricDatum) -> Vec<(f64, f64)> {
        d.values()
            .iter()
            .copied()
            .zip(d.counts().iter().copied())
            .collect()
    }

    #[test]
    fn test_values_are_kept_per_second_as_a_distribution_and_drained_once() {
        let m = AppMetrics::default();
        for latency in [3.0, 1.0, 3.0, 2.0] {
            m.offer_at(
                doc("").replace("12.5", &latency.to_string()).as_bytes(),
                NOW,
            );
        }
        // The next second is a datum of its own.
        m.offer_at(
            doc("")
                .replace(&NOW.to_string(), &(NOW + 1000).to_string())
                .as_bytes(),
            NOW,
        );
        m.offer_at(b"plain text", NOW);
        m.offer_at(br#"{"_aws":{}}"#, NOW);
        assert_eq!(m.documents.load(AtomicOrdering::Relaxed), 5);
        assert_eq!(m.invalid.load(AtomicOrdering::Relaxed), 1);
        assert!(m.take_last_error().unwrap().contains("_aws.Timestamp"));
        assert_eq!(m.take_last_error(), None);
        let dims = [Dimension::builder().name("ImageId").value("ami-1").build()];
        let out = m.drain(&dims);
        let data = &out["Bake/App"];
        let latency: Vec<_> = data
            .iter()
            .filter(|d| d.metric_name() == Some("Latency"))
            .collect();
        assert_eq!(latency.len(), 2);
        assert_eq!(
            values_of(latency[0]),
            vec![(1.0, 1.0), (2.0, 1.0), (3.0, 2.0)]
        );
        assert_eq!(latency[0].storage_resolution(), Some(1));
        assert_eq!(latency[0].timestamp().unwrap().secs(), NOW / 1000);
        assert_eq!(latency[1].timestamp().unwrap().secs(), NOW / 1000 + 1);
        assert_eq!(latency[0].dimensions(), &dims[..]);
        assert_eq!(latency[0].unit(), Some(&StandardUnit::Milliseconds));
        // Requests: per minute, one datum of 5.
        let requests: Vec<_> = data
            .iter()
            .filter(|d| d.metric_name() == Some("Requests"))
            .collect();
        assert_eq!(requests.len(), 1);
        assert_eq!(values_of(requests[0]), vec![(1.0, 5.0)]);
        assert_eq!(requests[0].timestamp().unwrap().secs() % 60, 0);
        assert!(m.drain(&dims).is_empty(), "drained once");
    }

    #[test]
    fn test_limits_split_datums_and_drop_what_cloudwatch_would_refuse() {
        let m = AppMetrics::default();
        for round in 0..3 {
            let values: Vec<String> = (0..100).map(|i| (round * 1000 + i).to_string()).collect();
            let line = format!(
                r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[],"Metrics":[{{"Name":"L"}}]}}]}},"L":[{}]}}"#,
                values.join(",")
            );
            m.offer_at(line.as_bytes(), NOW);
        }
        let out = m.drain(&[]);
        let sizes: Vec<usize> = out["N"].iter().map(|d| d.values().len()).collect();
        assert_eq!(sizes, vec![150, 150]);
        assert!(
            sizes.iter().all(|s| *s <= MAX_VALUES_PER_DATUM),
            "{sizes:?}"
        );
        // More distinct values than an interval keeps: the rest is dropped and counted.
        for round in 0..201 {
            let values: Vec<String> = (0..100).map(|i| (round * 1000 + i).to_string()).collect();
            let line = format!(
                r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[],"Metrics":[{{"Name":"L"}}]}}]}},"L":[{}]}}"#,
                values.join(",")
            );
            m.offer_at(line.as_bytes(), NOW);
        }
        assert_eq!(m.dropped_values.load(AtomicOrdering::Relaxed), 100);
        let kept: usize = m.drain(&[])["N"].iter().map(|d| d.values().len()).sum();
        assert_eq!(kept, MAX_VALUES_PER_INTERVAL);
        // Three weeks old: CloudWatch would refuse it.
        m.offer_at(doc("").as_bytes(), NOW + 21 * 24 * 3600 * 1000);
        assert_eq!(m.dropped_values.load(AtomicOrdering::Relaxed), 102);
        assert!(m.drain(&[]).is_empty());
    }

    #[test]
    fn test_the_tap_finds_lines_across_chunks_and_skips_long_or_plain_ones() {
        let m = Arc::new(AppMetrics::default());
        let mut tap = LineTap::new(m.clone());
        let line = doc("");
        let (a, b) = line.split_at(40);
        tap.feed(b"plain ");
        tap.feed(b"text\n");
        tap.feed(a.as_bytes());
        tap.feed(b.as_bytes());
        tap.feed(b"\n");
        tap.feed(format!("{line}\n{line}").as_bytes());
        tap.end();
        assert_eq!(m.documents.load(AtomicOrdering::Relaxed), 3);
        // A document split in a plain line's tail is not one.
        tap.feed(b"x {\"_aws\"");
        tap.feed(line.as_bytes());
        tap.feed(b"\n");
        assert_eq!(m.documents.load(AtomicOrdering::Relaxed), 3);
        // Longer than MAX_LINE: skipped to its end, the next line is read.
        tap.feed(b"{");
        tap.feed(&vec![b' '; MAX_LINE]);
        tap.feed(format!("\n{line}\n").as_bytes());
        assert_eq!(m.documents.load(AtomicOrdering::Relaxed), 4);
        assert_eq!(m.invalid.load(AtomicOrdering::Relaxed), 0);
    }
}
