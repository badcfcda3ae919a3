//! PutLogEvents batches that never break a limit, and the pure rules that shape events.
//!
//! Limits (<https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html>):
//! at most 1,048,576 bytes per request, counted as the UTF-8 bytes of every message plus 26 bytes
//! per event; at most 10,000 events; events in chronological order; a batch spans at most 24 hours;
//! one event is at most 256 KiB (including the 26 bytes); no event older than 14 days or the
//! group's retention, none more than 2 hours in the future.

use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::file_id::{FileId, Fingerprint};

/// Maximum request size in bytes, overhead included.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// Bytes CloudWatch Logs adds to every event's message when counting a request's size.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Maximum events in one request.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Maximum size of one event, overhead included (256 KiB).
pub const MAX_EVENT_BYTES: usize = 262_144;
/// Maximum UTF-8 bytes of one message.
pub const MAX_MESSAGE_BYTES: usize = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES;
/// Maximum time between the first and the last event of one request, in milliseconds (24 h).
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// How far in the future CloudWatch still accepts an event, in milliseconds (2 h).
pub const MAX_FUTURE_MS: i64 = 2 * 3600 * 1000;
/// How old an event CloudWatch still accepts, in milliseconds (14 days).
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Safety margin under the age and future limits, for clock skew between here and AWS (5 min).
pub const SKEW_MARGIN_MS: i64 = 5 * 60 * 1000;
/// Message bytes a new batch has room for before it grows, and what a recycled batch of a quiet
/// source shrinks back to.
pub const RECYCLED_MIN_BYTES: usize = 64 * 1024;
/// Appended to every piece but the last of a line longer than [`MAX_MESSAGE_BYTES`].
pub const SPLIT_MARKER: &str = " [bake-agent: line continues in next event]";

/// One PutLogEvents request's worth of events, stored compactly: one string holding every
/// message back to back, and (timestamp, end) per event. No per-line allocation while building.
#[derive(Debug, Default)]
pub struct Batch {
    data: String,
    /// (timestamp in ms since the epoch, end of the message in `data`).
    events: Vec<(i64, u32)>,
    bytes: usize,
    /// The end offsets the batch reaches in each file it read from (checkpoint after ack).
    /// With each, the file's head fingerprint, which the checkpoint keeps as proof.
    pub offsets: Vec<(FileId, u64, Option<Fingerprint>)>,
    /// Files fully read whose data ends in this batch: delete (spool) or forget after ack.
    pub finished: Vec<(FileId, std::path::PathBuf)>,
    /// When the oldest data of this batch was read, for the shipping-lag metric.
    pub first_read: Option<std::time::Instant>,
}

/// Why an event did not fit into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The request would pass [`MAX_BATCH_BYTES`] or [`MAX_BATCH_EVENTS`].
    Size,
    /// The event is more than [`MAX_SPAN_MS`] after the batch's first event.
    Span,
}

impl Batch {
    /// An empty batch with room for `capacity` bytes of messages.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            data: String::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Number of events.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No events (a batch may still carry offsets and finished files).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Request size as CloudWatch counts it (messages + 26 bytes per event).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing to send and nothing to acknowledge.
    #[must_use]
    pub fn is_void(&self) -> bool {
        self.events.is_empty() && self.offsets.is_empty() && self.finished.is_empty()
    }

    /// Adds one event. `message` must be 1..=[`MAX_MESSAGE_BYTES`] bytes and `timestamp_ms` not
    /// before the previous event's (callers keep streams monotonic with [`Clock::stamp`]).
    ///
    /// # Errors
    /// [`Full`] when the event would break a request limit; the batch is unchanged.
    pub fn push(&mut self, timestamp_ms: i64, message: &str) -> Result<(), Full> {
        debug_assert!(!message.is_empty() && message.len() <= MAX_MESSAGE_BYTES);
        let size = message.len() + EVENT_OVERHEAD_BYTES;
        if self.events.len() >= MAX_BATCH_EVENTS || self.bytes + size > MAX_BATCH_BYTES {
            return Err(Full::Size);
        }
        if let Some(&(first, _)) = self.events.first() {
            if timestamp_ms - first > MAX_SPAN_MS {
                return Err(Full::Span);
            }
        }
        self.data.push_str(message);
        let end = u32::try_from(self.data.len()).expect("a batch holds at most 1 MiB");
        self.events.push((timestamp_ms, end));
        self.bytes += size;
        Ok(())
    }

    /// The events as (timestamp, message), in order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &str)> + '_ {
        let mut start = 0usize;
        self.events.iter().map(move |&(ts, end)| {
            let end = end as usize;
            let msg = &self.data[start..end];
            start = end;
            (ts, msg)
        })
    }

    /// The SDK's events for one attempt of the request.
    #[must_use]
    pub fn to_input(&self) -> Vec<InputLogEvent> {
        self.iter()
            .map(|(ts, msg)| {
                InputLogEvent::builder()
                    .timestamp(ts)
                    .message(msg)
                    .build()
                    .expect("timestamp and message are set")
            })
            .collect()
    }

    /// Empties the batch for the next request, keeping its buffers: a source under load fills
    /// the same two allocations again and again. A batch that was mostly empty (a quiet source)
    /// gives back what it does not need beyond [`RECYCLED_MIN_BYTES`].
    pub fn recycle(&mut self) {
        let used = self.data.len();
        self.data.clear();
        if used < self.data.capacity() / 4 {
            self.data.shrink_to((2 * used).max(RECYCLED_MIN_BYTES));
        }
        let events = self.events.len();
        self.events.clear();
        if events < self.events.capacity() / 4 {
            self.events
                .shrink_to((2 * events).max(RECYCLED_MIN_BYTES / 128));
        }
        self.bytes = 0;
        self.offsets.clear();
        self.finished.clear();
        self.first_read = None;
    }

    /// Records that this batch reaches `offset` in file `id`, whose head is `head`.
    pub fn reach(&mut self, id: FileId, offset: u64, head: Option<Fingerprint>) {
        match self.offsets.iter_mut().find(|(f, _, _)| *f == id) {
            Some(slot) => {
                if offset >= slot.1 {
                    slot.1 = offset;
                    slot.2 = head;
                }
            }
            None => self.offsets.push((id, offset, head)),
        }
    }
}

/// Splits a message longer than [`MAX_MESSAGE_BYTES`] into pieces that fit, at UTF-8 character
/// boundaries; every piece but the last ends with [`SPLIT_MARKER`]. Short messages come back whole.
#[must_use]
pub fn split_message(message: &str) -> Vec<&str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return vec![message];
    }
    let room = MAX_MESSAGE_BYTES - SPLIT_MARKER.len();
    let mut pieces = Vec::new();
    let mut rest = message;
    while rest.len() > MAX_MESSAGE_BYTES {
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces.push(rest);
    pieces
}

/// What [`Clock::stamp`] did to an event's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Kept (possibly raised to the previous event's time to keep the stream in order).
    Kept,
    /// Replaced by the ingestion time: it was too old or too far in the future for CloudWatch.
    Retimed,
}

/// Keeps one stream's timestamps acceptable and in order.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    last_ms: i64,
    /// Oldest age accepted, in ms: the smaller of 14 days and the group's retention.
    max_age_ms: Option<i64>,
}

impl Clock {
    /// A clock for a group with `retention_days` (if any).
    #[must_use]
    pub fn new(retention_days: Option<u32>) -> Self {
        let retention = retention_days.map(|d| i64::from(d) * 24 * 3600 * 1000);
        Self {
            last_ms: 0,
            max_age_ms: Some(retention.map_or(MAX_AGE_MS, |r| r.min(MAX_AGE_MS))),
        }
    }

    /// The timestamp to send for an event that claims `claimed_ms` (parsed from the line, or
    /// the read time) when the time is `now_ms`. Events CloudWatch would reject (older than the
    /// retention or 14 days, more than 2 hours ahead) get `now_ms` instead, since their line
    /// still carries the original time; then the result is raised to the previous one so that
    /// the stream stays in chronological order.
    pub fn stamp(&mut self, claimed_ms: i64, now_ms: i64) -> (i64, Stamp) {
        let max_age = self.max_age_ms.unwrap_or(MAX_AGE_MS);
        let mut how = Stamp::Kept;
        let mut ts = claimed_ms;
        if ts > now_ms + MAX_FUTURE_MS - SKEW_MARGIN_MS || ts < now_ms - max_age + SKEW_MARGIN_MS {
            ts = now_ms;
            how = Stamp::Retimed;
        }
        ts = ts.max(self.last_ms);
        self.last_ms = ts;
        (ts, how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_limits(b: &Batch) {
        assert!(b.len() <= MAX_BATCH_EVENTS);
        let bytes: usize = b.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD_BYTES).sum();
        assert_eq!(bytes, b.bytes());
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        let ts: Vec<i64> = b.iter().map(|(t, _)| t).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "not in order");
        if let (Some(f), Some(l)) = (ts.first(), ts.last()) {
            assert!(l - f <= MAX_SPAN_MS);
        }
        for (_, m) in b.iter() {
            assert!(!m.is_empty() && m.len() <= MAX_MESSAGE_BYTES);
        }
    }

    /// Feeds lines through the same path the tailer uses; returns the batches.
    fn batches(lines: &[(i64, String)], now: i64) -> Vec<Batch> {
        let mut clock = Clock::new(Some(7));
        let mut out = vec![Batch::default()];
        for (claimed, line) in lines {
            for piece in split_message(line) {
                let (ts, _) = clock.stamp(*claimed, now);
                let cur = out.last_mut().expect("non-empty");
                if cur.push(ts, piece).is_err() {
                    let mut b = Batch::default();
                    b.push(ts, piece)
                        .expect("an empty batch takes any valid event");
                    out.push(b);
                }
            }
        }
        out
    }

    #[test]
    fn test_recycle_empties_and_keeps_a_busy_batch_s_buffers() {
        let mut b = Batch::with_capacity(RECYCLED_MIN_BYTES);
        let line = "x".repeat(99);
        while b.push(1, &line).is_ok() {}
        b.reach(FileId { dev: 1, ino: 2 }, 10, None);
        b.first_read = Some(std::time::Instant::now());
        let cap = b.data.capacity();
        assert!(cap >= 800 * 1024, "{cap}");
        b.recycle();
        assert!(b.is_void() && b.bytes() == 0 && b.first_read.is_none());
        assert_eq!(b.data.capacity(), cap, "a full batch keeps its buffer");
        b.push(5, "one").unwrap();
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![(5, "one")]);
        b.recycle();
        assert!(b.data.capacity() < cap / 4, "a quiet batch shrinks");
        assert!(b.events.capacity() <= RECYCLED_MIN_BYTES / 128);
    }

    #[test]
    fn test_event_count_limit() {
        let mut b = Batch::default();
        for _ in 0..MAX_BATCH_EVENTS {
            b.push(1, "x").unwrap();
        }
        assert_eq!(b.push(1, "x"), Err(Full::Size));
    }

    #[test]
    fn test_byte_limit_counts_overhead() {
        let mut b = Batch::default();
        let msg = "a".repeat(MAX_MESSAGE_BYTES);
        for _ in 0..4 {
            b.push(1, &msg).unwrap();
        }
        // 4 * 262,144 = 1,048,576 exactly: full, and one more byte does not fit.
        assert_eq!(b.bytes(), MAX_BATCH_BYTES);
        assert_eq!(b.push(1, "a"), Err(Full::Size));
    }

    #[test]
    fn test_span_limit() {
        let mut b = Batch::default();
        b.push(0, "a").unwrap();
        b.push(MAX_SPAN_MS, "b").unwrap();
        assert_eq!(b.push(MAX_SPAN_MS + 1, "c"), Err(Full::Span));
    }

    #[test]
    fn test_split_long_line_with_marker() {
        let line = "é".repeat(MAX_MESSAGE_BYTES); // 2 bytes per char
        let pieces = split_message(&line);
        assert!(pieces.len() >= 2);
        assert_eq!(pieces.concat().len(), line.len());
        for p in &pieces {
            assert!(p.len() + SPLIT_MARKER.len() <= MAX_MESSAGE_BYTES);
        }
    }

    #[test]
    fn test_clock_retimes_too_old_and_too_new_and_keeps_order() {
        let now = 100 * 24 * 3600 * 1000;
        let mut c = Clock::new(Some(7));
        assert_eq!(
            c.stamp(now - 8 * 24 * 3600 * 1000, now),
            (now, Stamp::Retimed)
        );
        let mut c = Clock::new(None);
        assert_eq!(c.stamp(now - 8 * 24 * 3600 * 1000, now).1, Stamp::Kept);
        assert_eq!(c.stamp(now + 3 * 3600 * 1000, now), (now, Stamp::Retimed));
        // Going backwards is raised to the previous timestamp.
        assert_eq!(c.stamp(now - 1000, now), (now, Stamp::Kept));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn prop_batches_never_break_a_limit(
            lines in prop::collection::vec(
                (0i64..40 * 24 * 3600 * 1000, prop_oneof![
                    8 => "[a-z]{1,200}",
                    1 => "[é€a]{60000,140000}",
                ]),
                1..300),
        ) {
            let now = 30 * 24 * 3600 * 1000;
            let mut lines = lines;
            // Sorted claimed times (a real log), with a sprinkling of out-of-order ones.
            lines.sort_by_key(|(t, _)| *t);
            let bs = batches(&lines, now);
            let total: usize = lines.iter().map(|(_, l)| l.len()).sum();
            let mut shipped = 0usize;
            for b in &bs {
                check_limits(b);
                shipped += b.iter().map(|(_, m)| m.len()).sum::<usize>();
            }
            prop_assert_eq!(shipped, total);
        }

        #[test]
        fn prop_many_small_events_fill_by_count(n in 10_000usize..25_000) {
            let lines: Vec<(i64, String)> = (0..n).map(|i| (i64::try_from(i).unwrap(), "x".into())).collect();
            let bs = batches(&lines, 1_000_000);
            for b in &bs { check_limits(b); }
            prop_assert_eq!(bs.iter().map(Batch::len).sum::<usize>(), n);
            prop_assert_eq!(bs[0].len(), MAX_BATCH_EVENTS);
        }
    }
}
