//! The canary verdict of a release: `[canary]` in bake.toml.
//!
//! `bake release` starts the refresh with one checkpoint, [`CanarySettings::checkpoint`], held
//! for [`CanarySettings::hold`]. Once the refresh waits there, the new release's instances serve
//! beside the old ones in the same group; bake observes both for [`CanarySettings::window`],
//! reading the app's request metrics that bake-agent publishes by release
//! (`{AutoScalingGroupName, ImageId}`, docs/logs.md), and judges:
//!
//! - **5xx rate**: the new release fails when its rate is above `max_error_rate` *and*
//!   significantly above the old release's: a one-sided two-proportion z-test (pooled), p-value
//!   below `significance`. Both conditions, so that a fleet whose old release already errs at
//!   the same rate is not blamed on the new one, and a tiny significant difference below the
//!   threshold does not roll back.
//! - **Latency**: the new release fails when it is significantly slower *and* its median or
//!   90th percentile is more than `max_latency_increase` above the old one's. The test is the
//!   one-sided two-sample Kolmogorov–Smirnov (Smirnov) test, D⁺ = maxₖ (F_old(qₖ) − F_new(qₖ)),
//!   p ≈ exp(−2·D⁺²·n·m/(n+m)). Why this one: it is non-parametric (latency is skewed and
//!   multi-modal, so no t-test), and it needs only the two empirical distribution functions at a
//!   few points, which CloudWatch gives (the percentile rank statistic `PR(:q)`), whereas a
//!   Mann–Whitney U test needs the rank of every sample, which CloudWatch does not return. The
//!   points qₖ are the old release's deciles (p10…p90), so D⁺ is evaluated where the old
//!   distribution has its mass; evaluating at nine points only can miss the largest gap, which
//!   makes the test conservative (it under-states D⁺, never over-states it).
//! - **Too little traffic** (either release under `min_requests` requests in the window):
//!   `inconclusive`, which rolls back unless `on_inconclusive = "continue"`.
//!
//! A pass cancels the held refresh and starts a new one with `[refresh]`'s preferences and
//! `SkipMatching` (the canary instances stay); a fail or a rolled-back inconclusive verdict
//! calls RollbackInstanceRefresh on the held one.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use serde::Serialize;

/// Default judging checkpoint: the first replacement (a refresh pauses once its percentage
/// complete reaches the checkpoint).
pub const DEFAULT_CHECKPOINT: i32 = 1;
/// Default observation window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Shortest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest window: a day.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Default settle: how long after the window bake waits before reading it, so that every
/// agent has published the window's last values (bake-agent's default `publish_interval` is
/// 60 s).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(70);
/// Default hold: the refresh's checkpoint delay, how long it waits for the verdict before it
/// goes on unjudged (bake gone).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(2 * 3600);
/// Default namespace of the app's request metrics (the sample app's).
pub const DEFAULT_NAMESPACE: &str = "Bake/App";
/// Default minimum requests per release in the window.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
/// Default highest 5xx rate of the new release.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// Default largest increase of p50/p90 latency (0.5 = 50 %).
pub const DEFAULT_MAX_LATENCY_INCREASE: f64 = 0.5;
/// Default significance level of both tests.
pub const DEFAULT_SIGNIFICANCE: f64 = 0.01;
/// The percentiles whose values are the points of the latency comparison.
const GRID: [u32; 9] = [10, 20, 30, 40, 50, 60, 70, 80, 90];

/// What an inconclusive verdict does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Roll back (the default: a release is not let through unjudged).
    Rollback,
    /// Let the release go on.
    Continue,
}

/// `[canary]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct CanarySettings {
    /// Percentage of the group replaced when the refresh holds (1–99).
    pub checkpoint: i32,
    /// How long both releases are observed once the refresh holds.
    pub window: Duration,
    /// How long after the window the metrics are read (the agents publish per interval).
    pub settle: Duration,
    /// The held refresh's checkpoint delay (at least the window plus a minute).
    pub hold: Duration,
    /// Namespace of the app's request metrics.
    pub namespace: String,
    /// Request count metric (Count, one per request).
    pub requests_metric: String,
    /// 5xx count metric (1 per 5xx answer, else 0).
    pub errors_metric: String,
    /// Latency metric (one value per request).
    pub latency_metric: String,
    /// Fewer requests of either release in the window: inconclusive.
    pub min_requests: u64,
    /// Highest 5xx rate of the new release.
    pub max_error_rate: f64,
    /// Largest increase of the new release's p50 or p90 over the old one's.
    pub max_latency_increase: f64,
    /// Significance level of both tests.
    pub significance: f64,
    /// What an inconclusive verdict does.
    pub on_inconclusive: OnInconclusive,
}

/// What one release did in the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// The release's image.
    pub image_id: String,
    /// Requests (sum).
    pub requests: u64,
    /// 5xx answers (sum).
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Latency values received.
    pub latency_count: u64,
    /// Latency p50, p90, p99 (`None` without values).
    pub p50: Option<f64>,
    /// Latency p90.
    pub p90: Option<f64>,
    /// Latency p99.
    pub p99: Option<f64>,
    /// The empirical distribution function at the old release's deciles, in 0..=1.
    #[serde(skip)]
    pub cdf: Vec<f64>,
}

/// One test's numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Test {
    /// The test.
    pub test: &'static str,
    /// Its statistic (z, or D⁺).
    pub statistic: f64,
    /// Its p-value.
    pub p_value: f64,
    /// Whether the difference is significant (p below `significance`).
    pub significant: bool,
    /// Whether the practical threshold is exceeded too (rate, or latency increase).
    pub over_threshold: bool,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub result: &'static str,
    /// What bake did: `continued` or `rolled_back`.
    pub action: &'static str,
    /// The window observed, seconds.
    pub window_secs: f64,
    /// When it began and ended (RFC 3339).
    pub window_start: String,
    /// When it ended.
    pub window_end: String,
    /// The old release.
    pub old: Sample,
    /// The new release.
    pub new: Sample,
    /// 5xx rate comparison.
    pub errors: Test,
    /// Latency comparison (`None`: too few values to compare).
    pub latency: Option<Test>,
    /// Why, in sentences with the numbers.
    pub reasons: Vec<String>,
}

/// Φ̄(z) = P(Z > z) of the standard normal.
fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The one-sided two-proportion z-test that `new`'s rate is above `old`'s: (z, p).
#[must_use]
pub fn error_rate_test(old: &Sample, new: &Sample) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let (n1, x1, n2, x2) = (
        new.requests as f64,
        new.errors as f64,
        old.requests as f64,
        old.errors as f64,
    );
    if n1 == 0.0 || n2 == 0.0 {
        return (0.0, 1.0);
    }
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return (0.0, 1.0);
    }
    let z = (x1 / n1 - x2 / n2) / se;
    (z, normal_sf(z))
}

/// The one-sided two-sample Kolmogorov–Smirnov test that `new` is slower than `old`, on their
/// distribution functions at the same points: (D⁺, p).
#[must_use]
pub fn latency_test(old: &Sample, new: &Sample) -> (f64, f64) {
    let d = old
        .cdf
        .iter()
        .zip(&new.cdf)
        .map(|(o, n)| o - n)
        .fold(0.0_f64, f64::max);
    #[allow(clippy::cast_precision_loss)]
    let (n, m) = (old.latency_count as f64, new.latency_count as f64);
    if n == 0.0 || m == 0.0 {
        return (d, 1.0);
    }
    let p = (-2.0 * d * d * n * m / (n + m)).exp().min(1.0);
    (d, p)
}

fn ratio(new: Option<f64>, old: Option<f64>) -> Option<f64> {
    match (new, old) {
        (Some(n), Some(o)) if o > 0.0 => Some(n / o),
        _ => None,
    }
}

fn rfc3339(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// Judges `new` against `old` (what [`observe`] read over `start..end`).
#[must_use]
pub fn judge(
    c: &CanarySettings,
    old: Sample,
    new: Sample,
    (start, end): (SystemTime, SystemTime),
) -> Verdict {
    let window = end.duration_since(start).unwrap_or_default();
    let mut reasons = Vec::new();
    let (z, p) = error_rate_test(&old, &new);
    let errors = Test {
        test: "one-sided two-proportion z-test",
        statistic: z,
        p_value: p,
        significant: p < c.significance,
        over_threshold: new.error_rate > c.max_error_rate,
    };
    let latency = (old.latency_count >= c.min_requests
        && new.latency_count >= c.min_requests
        && old.cdf.len() == GRID.len()
        && new.cdf.len() == GRID.len())
    .then(|| {
        let (d, p) = latency_test(&old, &new);
        let limit = 1.0 + c.max_latency_increase;
        let over = ratio(new.p50, old.p50).is_some_and(|r| r > limit)
            || ratio(new.p90, old.p90).is_some_and(|r| r > limit);
        Test {
            test: "one-sided two-sample Kolmogorov-Smirnov at the old release's deciles",
            statistic: d,
            p_value: p,
            significant: p < c.significance,
            over_threshold: over,
        }
    });
    let too_few = old.requests < c.min_requests || new.requests < c.min_requests;
    let fail_errors = errors.significant && errors.over_threshold;
    let fail_latency = latency
        .as_ref()
        .is_some_and(|t| t.significant && t.over_threshold);
    let pct = |r: f64| format!("{:.2}%", r * 100.0);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    if fail_errors {
        reasons.push(format!(
            "5xx rate {} ({} of {}) is above {} and above the old release's {} ({} of {}): z = {z:.2}, p = {p:.2e} < {}",
            pct(new.error_rate), new.errors, new.requests, pct(c.max_error_rate),
            pct(old.error_rate), old.errors, old.requests, c.significance
        ));
    }
    if let (true, Some(t)) = (fail_latency, &latency) {
        reasons.push(format!(
            "latency p50 {} / p90 {} against the old release's {} / {} (more than +{:.0}%): D+ = {:.3}, p = {:.2e} < {}",
            ms(new.p50), ms(new.p90), ms(old.p50), ms(old.p90),
            c.max_latency_increase * 100.0, t.statistic, t.p_value, c.significance
        ));
    }
    let result = if fail_errors || fail_latency {
        "fail"
    } else if too_few {
        reasons.push(format!(
            "too little traffic to judge: {} requests on the new release and {} on the old one in {}, fewer than canary.min_requests = {}",
            new.requests, old.requests, crate::output::secs(window), c.min_requests
        ));
        "inconclusive"
    } else {
        reasons.push(format!(
            "5xx rate {} against {}, latency p50 {} / p90 {} against {} / {}",
            pct(new.error_rate),
            pct(old.error_rate),
            ms(new.p50),
            ms(new.p90),
            ms(old.p50),
            ms(old.p90)
        ));
        "pass"
    };
    let action = match (result, c.on_inconclusive) {
        ("pass", _) | ("inconclusive", OnInconclusive::Continue) => "continued",
        _ => "rolled_back",
    };
    Verdict {
        result,
        action,
        window_secs: window.as_secs_f64(),
        window_start: rfc3339(start),
        window_end: rfc3339(end),
        old,
        new,
        errors,
        latency,
        reasons,
    }
}

/// A bad answer from CloudWatch while reading the window.
#[derive(Debug, thiserror::Error)]
#[error("GetMetricData of {namespace} for the canary: {message}")]
pub struct ObserveError {
    /// The namespace read.
    pub namespace: String,
    /// The SDK error with its context.
    pub message: String,
}

fn query(
    id: &str,
    c: &CanarySettings,
    metric: &str,
    dims: &[Dimension],
    stat: &str,
    period: i32,
) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(&c.namespace)
                        .metric_name(metric)
                        .set_dimensions(Some(dims.to_vec()))
                        .build(),
                )
                .period(period)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

/// One value per query id: the sum of its datapoints (one period covers the window).
async fn values(
    cw: &aws_sdk_cloudwatch::Client,
    c: &CanarySettings,
    queries: Vec<MetricDataQuery>,
    start: SystemTime,
    end: SystemTime,
) -> Result<std::collections::BTreeMap<String, f64>, ObserveError> {
    let mut out = std::collections::BTreeMap::new();
    let mut token = None;
    loop {
        let resp = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(start.into())
            .end_time(end.into())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| ObserveError {
                namespace: c.namespace.clone(),
                message: aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string(),
            })?;
        for r in resp.metric_data_results() {
            if let (Some(id), Some(v)) = (r.id(), r.values().first()) {
                out.insert(id.to_owned(), *v);
            }
        }
        token = resp.next_token().map(ToOwned::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

fn release_dims(asg: &str, image: &str) -> Vec<Dimension> {
    vec![
        Dimension::builder()
            .name("AutoScalingGroupName")
            .value(asg)
            .build(),
        Dimension::builder().name("ImageId").value(image).build(),
    ]
}

/// Reads what the old and the new release of `asg` did between `start` and `end`: requests,
/// 5xx and latency percentiles of each, and both distribution functions at the old release's
/// deciles.
///
/// # Errors
/// [`ObserveError`] when GetMetricData fails.
pub async fn observe(
    cw: &aws_sdk_cloudwatch::Client,
    c: &CanarySettings,
    asg: &str,
    old_image: &str,
    new_image: &str,
    start: SystemTime,
    end: SystemTime,
) -> Result<(Sample, Sample), ObserveError> {
    let span = end.duration_since(start).unwrap_or_default().as_secs();
    // One period for the window: a multiple of 60 s (any period works for high-resolution data,
    // and 60 multiples for all).
    let period = i32::try_from(span.div_ceil(60).max(1) * 60).unwrap_or(i32::MAX);
    let mut queries = Vec::new();
    for (tag, image) in [("old", old_image), ("new", new_image)] {
        let dims = release_dims(asg, image);
        queries.push(query(
            &format!("{tag}_requests"),
            c,
            &c.requests_metric,
            &dims,
            "Sum",
            period,
        ));
        queries.push(query(
            &format!("{tag}_errors"),
            c,
            &c.errors_metric,
            &dims,
            "Sum",
            period,
        ));
        queries.push(query(
            &format!("{tag}_count"),
            c,
            &c.latency_metric,
            &dims,
            "SampleCount",
            period,
        ));
        for p in ["p50", "p90", "p99"] {
            queries.push(query(
                &format!("{tag}_{p}"),
                c,
                &c.latency_metric,
                &dims,
                p,
                period,
            ));
        }
        if tag == "old" {
            for g in GRID {
                queries.push(query(
                    &format!("old_q{g}"),
                    c,
                    &c.latency_metric,
                    &dims,
                    &format!("p{g}"),
                    period,
                ));
            }
        }
    }
    let v = values(cw, c, queries, start, end).await?;
    let grid: Vec<f64> = GRID
        .iter()
        .filter_map(|g| v.get(&format!("old_q{g}")).copied())
        .collect();
    // Both distribution functions at the old release's deciles: PR(:q) is the percentage of
    // values at most q.
    let mut cdf_queries = Vec::new();
    if grid.len() == GRID.len() {
        for (tag, image) in [("old", old_image), ("new", new_image)] {
            let dims = release_dims(asg, image);
            for (k, q) in grid.iter().enumerate() {
                cdf_queries.push(query(
                    &format!("{tag}_f{k}"),
                    c,
                    &c.latency_metric,
                    &dims,
                    &format!("PR(:{q})"),
                    period,
                ));
            }
        }
    }
    let f = if cdf_queries.is_empty() {
        std::collections::BTreeMap::new()
    } else {
        values(cw, c, cdf_queries, start, end).await?
    };
    let sample = |tag: &str, image: &str| -> Sample {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = |k: &str| {
            v.get(&format!("{tag}_{k}"))
                .map_or(0, |x| x.max(0.0).round() as u64)
        };
        let (requests, errors) = (count("requests"), count("errors"));
        #[allow(clippy::cast_precision_loss)]
        let error_rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        let cdf: Vec<f64> = (0..grid.len())
            .filter_map(|k| f.get(&format!("{tag}_f{k}")).map(|p| p / 100.0))
            .collect();
        Sample {
            image_id: image.to_owned(),
            requests,
            errors,
            error_rate,
            latency_count: count("count"),
            p50: v.get(&format!("{tag}_p50")).copied(),
            p90: v.get(&format!("{tag}_p90")).copied(),
            p99: v.get(&format!("{tag}_p99")).copied(),
            cdf: if cdf.len() == GRID.len() {
                cdf
            } else {
                Vec::new()
            },
        }
    };
    Ok((sample("old", old_image), sample("new", new_image)))
}

/// The verdict as lines for people: the result and action, each release's numbers, each
/// test's, the reasons.
#[must_use]
pub fn render(v: &Verdict) -> Vec<String> {
    let ms = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1} ms"));
    let mut lines = vec![format!(
        "canary verdict: {} after {} (release {})",
        v.result,
        crate::output::secs(Duration::from_secs_f64(v.window_secs)),
        v.action.replace('_', " ")
    )];
    for (name, s) in [("old", &v.old), ("new", &v.new)] {
        lines.push(format!(
            "  {name} {}: {} requests, {} 5xx ({:.2}%), latency p50 {} p90 {} p99 {} ({} values)",
            s.image_id,
            s.requests,
            s.errors,
            s.error_rate * 100.0,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            s.latency_count
        ));
    }
    lines.push(format!(
        "  5xx: {} z = {:.2}, p = {:.2e}",
        v.errors.test, v.errors.statistic, v.errors.p_value
    ));
    match &v.latency {
        Some(t) => lines.push(format!(
            "  latency: {} D+ = {:.3}, p = {:.2e}",
            t.test, t.statistic, t.p_value
        )),
        None => lines.push("  latency: too few values to compare".to_owned()),
    }
    lines.extend(v.reasons.iter().map(|r| format!("  {r}")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CanarySettings {
        CanarySettings {
            checkpoint: DEFAULT_CHECKPOINT,
            window: Duration::from_secs(60),
            settle: DEFAULT_SETTLE,
            hold: DEFAULT_HOLD,
            namespace: DEFAULT_NAMESPACE.into(),
            requests_metric: "Requests".into(),
            errors_metric: "Errors5xx".into(),
            latency_metric: "Latency".into(),
            min_requests: DEFAULT_MIN_REQUESTS,
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            max_latency_increase: DEFAULT_MAX_LATENCY_INCREASE,
            significance: DEFAULT_SIGNIFICANCE,
            on_inconclusive: OnInconclusive::Rollback,
        }
    }

    /// A release's sample from its latencies (sorted copy), its CDF at `grid`.
    fn sample(requests: u64, errors: u64, latencies: &[f64], grid: &[f64]) -> Sample {
        let mut l = latencies.to_vec();
        l.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let q = |p: f64| l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
        #[allow(clippy::cast_precision_loss)]
        let cdf = grid
            .iter()
            .map(|g| l.iter().filter(|v| *v <= g).count() as f64 / l.len() as f64)
            .collect();
        #[allow(clippy::cast_precision_loss)]
        Sample {
            image_id: "ami".into(),
            requests,
            errors,
            error_rate: errors as f64 / requests as f64,
            latency_count: l.len() as u64,
            p50: Some(q(0.5)),
            p90: Some(q(0.9)),
            p99: Some(q(0.99)),
            cdf,
        }
    }

    /// 1000 latencies spread over [lo, hi).
    fn spread(lo: f64, hi: f64) -> Vec<f64> {
        (0..1000)
            .map(|i| lo + (hi - lo) * f64::from(i) / 1000.0)
            .collect()
    }

    /// The old release's deciles: the points of the comparison.
    fn deciles(l: &[f64]) -> Vec<f64> {
        let mut v = l.to_vec();
        v.sort_by(f64::total_cmp);
        GRID.iter()
            .map(|g| v[(*g as usize) * v.len() / 100 - 1])
            .collect()
    }

    #[test]
    fn test_the_z_test_of_two_rates_matches_the_textbook() {
        // 60/1000 against 30/1000: pooled 0.045, se = sqrt(0.045*0.955*0.002) = 0.009271,
        // z = 0.03 / 0.009271 = 3.236, one-sided p = 6.06e-4.
        let (z, p) = error_rate_test(
            &sample(1000, 30, &[1.0], &[]),
            &sample(1000, 60, &[1.0], &[]),
        );
        assert!((z - 3.236).abs() < 1e-3, "{z}");
        assert!((p - 6.06e-4).abs() < 1e-5, "{p}");
        // No errors on either side: nothing to test.
        assert_eq!(
            error_rate_test(&sample(10, 0, &[1.0], &[]), &sample(10, 0, &[1.0], &[])),
            (0.0, 1.0)
        );
    }

    #[test]
    fn test_the_smirnov_test_sees_a_slower_release_not_a_faster_one() {
        let old = spread(10.0, 30.0);
        let grid = deciles(&old);
        let same = latency_test(&sample(1000, 0, &old, &grid), &sample(1000, 0, &old, &grid));
        assert!(
            same.0.abs() < 1e-9 && (same.1 - 1.0).abs() < 1e-9,
            "{same:?}"
        );
        // Tripled: every decile of the old release is below the new one's minimum, D+ = 0.9.
        let slow: Vec<f64> = old.iter().map(|v| v * 3.0).collect();
        let (d, p) = latency_test(
            &sample(1000, 0, &old, &grid),
            &sample(1000, 0, &slow, &grid),
        );
        assert!((d - 0.9).abs() < 1e-9, "{d}");
        // exp(-2 * 0.81 * 500) underflows to 0.
        assert!(p < 1e-100, "{p}");
        // Faster: one-sided, no evidence of slower.
        let fast: Vec<f64> = old.iter().map(|v| v / 2.0).collect();
        let (d, p) = latency_test(
            &sample(1000, 0, &old, &grid),
            &sample(1000, 0, &fast, &grid),
        );
        assert!(d.abs() < 1e-9 && (p - 1.0).abs() < 1e-9, "{d} {p}");
    }

    fn win(d: Duration) -> (SystemTime, SystemTime) {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        (start, start + d)
    }

    #[test]
    fn test_verdicts_pass_fail_and_inconclusive() {
        let c = settings();
        let old = spread(10.0, 30.0);
        let grid = deciles(&old);
        let healthy = judge(
            &c,
            sample(1000, 2, &old, &grid),
            sample(1000, 3, &spread(10.5, 31.0), &grid),
            win(c.window),
        );
        assert_eq!(
            (healthy.result, healthy.action),
            ("pass", "continued"),
            "{healthy:?}"
        );
        // 8 % 5xx against 0.2 %.
        let errs = judge(
            &c,
            sample(1000, 2, &old, &grid),
            sample(1000, 80, &old, &grid),
            win(c.window),
        );
        assert_eq!(
            (errs.result, errs.action),
            ("fail", "rolled_back"),
            "{errs:?}"
        );
        assert!(
            errs.reasons[0].starts_with("5xx rate 8.00% (80 of 1000) is above 1.00%"),
            "{:?}",
            errs.reasons
        );
        // An old release that errs as much: not the new release's fault.
        let both = judge(
            &c,
            sample(1000, 75, &old, &grid),
            sample(1000, 80, &old, &grid),
            win(c.window),
        );
        assert_eq!(both.result, "pass", "{both:?}");
        // Tripled latency.
        let slow: Vec<f64> = old.iter().map(|v| v * 3.0).collect();
        let lat = judge(
            &c,
            sample(1000, 0, &old, &grid),
            sample(1000, 0, &slow, &grid),
            win(c.window),
        );
        assert_eq!(lat.result, "fail", "{lat:?}");
        assert!(
            lat.reasons[0].starts_with("latency p50 "),
            "{:?}",
            lat.reasons
        );
        // 10 % slower: significant with 1000 values, but within max_latency_increase.
        let bit: Vec<f64> = old.iter().map(|v| v * 1.1).collect();
        let small = judge(
            &c,
            sample(1000, 0, &old, &grid),
            sample(1000, 0, &bit, &grid),
            win(c.window),
        );
        assert!(small.latency.as_ref().unwrap().significant, "{small:?}");
        assert_eq!(small.result, "pass", "{small:?}");
        // Too little traffic.
        let few = judge(
            &c,
            sample(1000, 0, &old, &grid),
            sample(20, 0, &old[..20], &grid),
            win(c.window),
        );
        assert_eq!(
            (few.result, few.action),
            ("inconclusive", "rolled_back"),
            "{few:?}"
        );
        assert!(few.latency.is_none());
        let c2 = CanarySettings {
            on_inconclusive: OnInconclusive::Continue,
            ..settings()
        };
        let few = judge(
            &c2,
            sample(1000, 0, &old, &grid),
            sample(20, 0, &old[..20], &grid),
            win(c.window),
        );
        assert_eq!(few.action, "continued");
        let lines = render(&errs);
        assert!(
            lines[0].starts_with("canary verdict: fail after 1m (release rolled back)"),
            "{lines:?}"
        );
    }
}
