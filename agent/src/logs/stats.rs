//! The shipping counters the metrics publisher reads.

use std::sync::atomic::AtomicU64;

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
}
