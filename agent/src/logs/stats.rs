//! The shipping counters the metrics publisher reads.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Shipping counters, read by the metrics publisher. All cumulative except `lag_ms`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Events acknowledged by CloudWatch (rejected ones included).
    pub events_shipped: AtomicU64,
    /// Bytes acknowledged, counted as CloudWatch does (message + 26 per event).
    pub bytes_shipped: AtomicU64,
    /// PutLogEvents requests that succeeded.
    pub requests: AtomicU64,
    /// Failed attempts that were retried.
    pub retries: AtomicU64,
    /// Events CloudWatch refused (`rejectedLogEventsInfo`, or an invalid batch).
    pub rejected_events: AtomicU64,
    /// Lines of app output dropped because the spool was full.
    pub dropped_events: AtomicU64,
    /// Bytes of app output dropped because the spool was full.
    pub dropped_bytes: AtomicU64,
    /// Events sent with the read time because theirs was too old or too far ahead.
    pub retimed_events: AtomicU64,
    /// Lines longer than an event can be, sent as several events.
    pub split_events: AtomicU64,
    /// Milliseconds from reading the last acknowledged batch's first line to its acknowledgement.
    pub lag_ms: AtomicU64,
    /// Files found truncated or rewritten in place (shorter than the read position, or a head
    /// that no longer matches), read again from their start.
    pub truncations: AtomicU64,
    /// Rotated copies (copytruncate) whose unread rest was read before the truncated file.
    pub rotated_copies: AtomicU64,
    /// Per source (`app-stdout`, `app-stderr`, `files`, …), for `bake-agent status`.
    pub sources: Mutex<BTreeMap<String, SourceStats>>,
}

/// One source's shipping, as of its last acknowledged batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Milliseconds from reading the batch's first line to its acknowledgement.
    pub lag_ms: u64,
    /// Events acknowledged.
    pub events_shipped: u64,
    /// When the last batch was acknowledged (milliseconds since the Unix epoch).
    pub acked_at_ms: u64,
}

impl LogStats {
    /// Records an acknowledged batch of `events` of source `name`, `lag_ms` behind.
    pub fn record_source(&self, name: &str, events: u64, lag_ms: Option<u64>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut map = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.entry(name.to_owned()).or_default();
        s.events_shipped = s.events_shipped.saturating_add(events);
        if let Some(l) = lag_ms {
            s.lag_ms = l;
        }
        s.acked_at_ms = now;
    }

    /// A copy of the per-source figures.
    #[must_use]
    pub fn sources(&self) -> BTreeMap<String, SourceStats> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
