//! Sending batches with PutLogEvents, one request in flight per stream, and checkpointing
//! after each acknowledgement.
//!
//! Why one in flight: CloudWatch Logs no longer checks sequence tokens, so parallel requests
//! to one stream would be accepted, but their events could then be stored out of order, and a
//! failed request behind a successful later one would leave a checkpoint that cannot say what
//! was acknowledged. With one request at a time a checkpoint is just "everything before this
//! offset", and the stream keeps file order. The tailer fills the next batch while a request is
//! in flight, so the rate is bounded by one request round trip per ~1 MiB batch per stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;
use aws_sdk_cloudwatchlogs::Client;
use tokio::sync::mpsc;

use super::checkpoint::Checkpoints;
use super::source::SourceSpec;
use super::stats::{LogStats, SourceState};
use super::tail::Work;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// Checkpoints are written at most this often while data flows (and always when a file is
/// finished, and at the end).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Exponential backoff with jitter: attempt n waits a random time in [cap / 10, cap], cap =
/// min(20 s, 100 ms * 2^n), i.e. up to 0.1 s, 0.2 s, 0.4 s, … 20 s. Full jitter
/// (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>) but for the
/// floor of a tenth of the cap, so that a retry never follows its failure at once.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let cap = BACKOFF_BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt += 1;
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(ms / 10..=ms))
    }
}

/// Events CloudWatch refused in one request, per `rejectedLogEventsInfo`.
#[must_use]
pub fn rejected_count(info: &RejectedLogEventsInfo, events: usize) -> usize {
    // Too old / expired are a prefix of the batch (indexes 0..=end), too new a suffix.
    let old_end = [
        info.too_old_log_event_end_index(),
        info.expired_log_event_end_index(),
    ]
    .into_iter()
    .flatten()
    .max()
    .map_or(0, |e| usize::try_from(e + 1).unwrap_or(0));
    let new_start = info
        .too_new_log_event_start_index()
        .map_or(events, |s| usize::try_from(s).unwrap_or(events));
    (old_end.min(events) + events.saturating_sub(new_start)).min(events)
}

/// `err` and each of its causes whose text is not in the line yet, joined by `: `, without the
/// SDK's debug dump: one line for `bake-agent status`.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Creates the group (with retention) and the stream if missing. Idempotent.
async fn ensure(client: &Client, spec: &SourceSpec) -> Result<(), String> {
    let exists = |code: Option<&str>| code == Some("ResourceAlreadyExistsException");
    match client
        .create_log_group()
        .log_group_name(&spec.group)
        .send()
        .await
    {
        Ok(_) => tracing::info!(group = %spec.group, "created log group"),
        Err(e) if exists(e.code()) => {}
        Err(e) => {
            return Err(format!(
                "creating log group '{}': {}",
                spec.group,
                causes(&e)
            ))
        }
    }
    if let Some(days) = spec.retention_days {
        client
            .put_retention_policy()
            .log_group_name(&spec.group)
            .retention_in_days(i32::try_from(days).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "setting retention of log group '{}': {}",
                    spec.group,
                    causes(&e)
                )
            })?;
    }
    match client
        .create_log_stream()
        .log_group_name(&spec.group)
        .log_stream_name(&spec.stream)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if exists(e.code()) => Ok(()),
        Err(e) => Err(format!(
            "creating log stream '{}' in '{}': {}",
            spec.stream,
            spec.group,
            causes(&e)
        )),
    }
}

/// Sends one batch until CloudWatch takes it (true) or refuses it as invalid (false). Never
/// gives up on throttling, 5xx, timeouts or connection errors: the caller bounds it with a
/// deadline. Failures go to `source`'s last error too.
async fn put(
    client: &Client,
    spec: &SourceSpec,
    work: &Work,
    stats: &LogStats,
    source: &SourceState,
    ready: &mut bool,
) -> bool {
    let mut backoff = Backoff::default();
    loop {
        if !*ready {
            match ensure(client, spec).await {
                Ok(()) => *ready = true,
                Err(e) => {
                    source.failed(&e);
                    let delay = backoff.next_delay();
                    tracing::warn!(group = %spec.group, stream = %spec.stream, error = %e, retry_in_ms = delay.as_millis(), "log destination not ready");
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        let n = work.batch.len();
        let res = client
            .put_log_events()
            .log_group_name(&spec.group)
            .log_stream_name(&spec.stream)
            .set_log_events(Some(work.batch.to_input()))
            .send()
            .await;
        match res {
            Ok(out) => {
                if let Some(info) = out.rejected_log_events_info() {
                    let rejected = rejected_count(info, n);
                    source.failed(&format!(
                        "CloudWatch rejected {rejected} of {n} events (too old or too new)"
                    ));
                    stats
                        .rejected_events
                        .fetch_add(rejected as u64, Ordering::Relaxed);
                    tracing::warn!(group = %spec.group, stream = %spec.stream, rejected, info = ?info, "CloudWatch rejected log events");
                }
                return true;
            }
            Err(e) => match e.code() {
                Some("ResourceNotFoundException") => {
                    source.failed(&format!("PutLogEvents: {}", causes(&e)));
                    tracing::warn!(group = %spec.group, stream = %spec.stream, "log group or stream gone, creating it again");
                    *ready = false;
                }
                Some("DataAlreadyAcceptedException") => return true,
                Some("InvalidParameterException") => {
                    // Cannot happen with batches built within the limits; never loop on it.
                    stats.rejected_events.fetch_add(n as u64, Ordering::Relaxed);
                    source.failed(&format!(
                        "PutLogEvents refused a batch of {n} events as invalid, dropped it: {}",
                        causes(&e)
                    ));
                    tracing::error!(group = %spec.group, stream = %spec.stream, events = n, error = %DisplayErrorContext(&e), "CloudWatch refused a batch as invalid, dropped it");
                    return false;
                }
                _ => {
                    // Throttling, 5xx, timeouts, connection resets, expired credentials: wait.
                    let delay = backoff.next_delay();
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    source.failed(&format!("PutLogEvents: {}", causes(&e)));
                    tracing::warn!(group = %spec.group, stream = %spec.stream, error = %DisplayErrorContext(&e), retry_in_ms = delay.as_millis(), "PutLogEvents failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            },
        }
    }
}

/// Sends the tailer's batches in order until the tailer hangs up.
pub async fn run(
    client: Client,
    spec: Arc<SourceSpec>,
    mut rx: mpsc::Receiver<Work>,
    mut checkpoints: Checkpoints,
    stats: Arc<LogStats>,
) {
    let source = stats.source(&spec);
    let mut ready = false;
    let mut last_save = Instant::now();
    loop {
        let work = match tokio::time::timeout(CHECKPOINT_EVERY, rx.recv()).await {
            Ok(Some(work)) => work,
            Ok(None) => break,
            Err(_idle) => {
                if checkpoints.is_dirty() {
                    if let Err(e) = checkpoints.save() {
                        tracing::error!(error = %e, "writing log checkpoint");
                    }
                    last_save = Instant::now();
                }
                continue;
            }
        };
        if !work.batch.is_empty() {
            let taken = put(&client, &spec, &work, &stats, &source, &mut ready).await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats
                .events_shipped
                .fetch_add(work.batch.len() as u64, Ordering::Relaxed);
            stats
                .bytes_shipped
                .fetch_add(work.batch.bytes() as u64, Ordering::Relaxed);
            let lag = work
                .batch
                .first_read
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
            if let Some(l) = lag {
                stats.lag_ms.store(l, Ordering::Relaxed);
            }
            source.acknowledged(lag, taken);
        }
        for id in &work.truncated {
            checkpoints.set(*id, 0);
        }
        for (id, offset, head) in &work.batch.offsets {
            checkpoints.advance(*id, *offset, *head);
        }
        let finished = !work.batch.finished.is_empty();
        if spec.spool {
            for (_, path) in &work.batch.finished {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "removing shipped spool segment");
                }
            }
        }
        for (id, _) in &work.batch.finished {
            checkpoints.forget(*id);
        }
        if checkpoints.is_dirty() && (finished || last_save.elapsed() >= CHECKPOINT_EVERY) {
            if let Err(e) = checkpoints.save() {
                tracing::error!(error = %e, "writing log checkpoint");
            }
            last_save = Instant::now();
        }
    }
    if checkpoints.is_dirty() {
        if let Err(e) = checkpoints.save() {
            tracing::error!(error = %e, "writing log checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rejected_count() {
        let info = RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(2)
            .too_new_log_event_start_index(8)
            .build();
        assert_eq!(rejected_count(&info, 10), 3 + 2);
        let info = RejectedLogEventsInfo::builder()
            .expired_log_event_end_index(9)
            .build();
        assert_eq!(rejected_count(&info, 10), 10);
        assert_eq!(
            rejected_count(&RejectedLogEventsInfo::builder().build(), 10),
            0
        );
    }

    #[test]
    fn test_backoff_grows_and_caps() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= BACKOFF_BASE);
        for _ in 0..40 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        // Every delay is between a tenth of its cap and the cap.
        for n in 0..12u32 {
            let cap = BACKOFF_BASE.saturating_mul(1 << n).min(BACKOFF_MAX);
            for _ in 0..50 {
                let mut b = Backoff { attempt: n };
                let d = b.next_delay();
                assert!(d >= cap / 10 && d <= cap, "attempt {n}: {d:?} of {cap:?}");
            }
        }
    }
}
