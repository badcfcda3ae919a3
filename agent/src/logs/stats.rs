//! The shipping counters the metrics publisher reads, and each source's state for
//! `bake-agent status`.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::source::SourceSpec;

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
    /// Per source (`app-stdout`, `app-stderr`, `file-…`), for `bake-agent status`.
    pub sources: Mutex<BTreeMap<String, Arc<SourceState>>>,
}

/// Longest error text a source keeps (the SDK's chain of causes can be long).
pub const MAX_ERROR_CHARS: usize = 500;

/// One source's shipping as `bake-agent status` shows it, shared by its reader thread (which
/// hands batches over and says which files it has open and how far it read them), its sender
/// task (acknowledgements, errors) and the status file's writer (snapshots). Every update is
/// one short lock per batch or per file opened or closed, never per line.
#[derive(Debug)]
pub struct SourceState {
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// The files' glob (the spool's segments for app output).
    pub pattern: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Batches handed to the sender and not acknowledged yet, oldest first.
    waiting: VecDeque<Waiting>,
    /// The files the reader has open, each with the position it read to (updated by the
    /// reader after every chunk).
    files: Vec<(Arc<File>, Arc<AtomicU64>)>,
    events_shipped: u64,
    bytes_shipped: u64,
    last_batch_lag_ms: Option<u64>,
    last_put: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
}

#[derive(Debug)]
struct Waiting {
    first_read: Option<Instant>,
    events: u64,
    bytes: u64,
}

/// What a source's shipping looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// The files' glob.
    pub pattern: String,
    /// Events read and handed to the sender, not acknowledged by CloudWatch yet.
    pub backlog_events: u64,
    /// Their bytes, counted as CloudWatch does (message + 26 per event).
    pub backlog_bytes: u64,
    /// Bytes in the files the reader has open, beyond what it read (waiting on disk, e.g.
    /// while CloudWatch is away and both of the source's batches are out).
    pub unread_bytes: u64,
    /// Milliseconds since the oldest event of the backlog was read; 0 without a backlog.
    pub lag_ms: u64,
    /// Milliseconds from reading to acknowledgement of the last acknowledged batch.
    pub last_batch_lag_ms: Option<u64>,
    /// Events acknowledged (rejected ones included).
    pub events_shipped: u64,
    /// Bytes acknowledged (rejected ones included), counted as CloudWatch does.
    pub bytes_shipped: u64,
    /// When the last PutLogEvents succeeded.
    pub last_put: Option<SystemTime>,
    /// The last failure of a PutLogEvents, CreateLogGroup or CreateLogStream, and when; kept
    /// after later successes (compare with `last_put`).
    pub last_error: Option<(SystemTime, String)>,
}

impl SourceState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A batch of `events` (`bytes` as CloudWatch counts them), its oldest line read at
    /// `first_read`, goes to the sender. Batches are acknowledged in the order handed over.
    pub fn handed_over(&self, first_read: Option<Instant>, events: u64, bytes: u64) {
        self.lock().waiting.push_back(Waiting {
            first_read,
            events,
            bytes,
        });
    }

    /// The last batch handed over never reached the sender (it is gone).
    pub fn take_back(&self) {
        self.lock().waiting.pop_back();
    }

    /// The oldest batch handed over is done with: `taken` by CloudWatch, `lag_ms` after its
    /// first line was read, or refused as invalid (not `taken`: gone, counted as shipped as
    /// [`LogStats::events_shipped`] counts it, but no successful put).
    pub fn acknowledged(&self, lag_ms: Option<u64>, taken: bool) {
        let mut s = self.lock();
        if let Some(w) = s.waiting.pop_front() {
            s.events_shipped = s.events_shipped.saturating_add(w.events);
            s.bytes_shipped = s.bytes_shipped.saturating_add(w.bytes);
        }
        if !taken {
            return;
        }
        if lag_ms.is_some() {
            s.last_batch_lag_ms = lag_ms;
        }
        s.last_put = Some(SystemTime::now());
    }

    /// A call to CloudWatch failed with `error` (one line, at most [`MAX_ERROR_CHARS`] kept).
    pub fn failed(&self, error: &str) {
        let mut text: String = error
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_ERROR_CHARS)
            .collect();
        if error.chars().count() > MAX_ERROR_CHARS {
            text.push('…');
        }
        self.lock().last_error = Some((SystemTime::now(), text));
    }

    /// The files the reader has open now, each with the position it read to.
    pub fn set_files(&self, files: impl Iterator<Item = (Arc<File>, Arc<AtomicU64>)>) {
        let mut s = self.lock();
        s.files.clear();
        s.files.extend(files);
    }

    /// The source now. Looks at the size of each open file (one `fstat` each).
    #[must_use]
    pub fn snapshot(&self) -> SourceSnapshot {
        let s = self.lock();
        let unread_bytes = s
            .files
            .iter()
            .map(|(f, read)| {
                f.metadata().map_or(0, |m| {
                    m.len()
                        .saturating_sub(read.load(std::sync::atomic::Ordering::Relaxed))
                })
            })
            .sum();
        SourceSnapshot {
            group: self.group.clone(),
            stream: self.stream.clone(),
            pattern: self.pattern.clone(),
            backlog_events: s.waiting.iter().map(|w| w.events).sum(),
            backlog_bytes: s.waiting.iter().map(|w| w.bytes).sum(),
            unread_bytes,
            lag_ms: s.waiting.iter().find_map(|w| w.first_read).map_or(0, |t| {
                u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
            }),
            last_batch_lag_ms: s.last_batch_lag_ms,
            events_shipped: s.events_shipped,
            bytes_shipped: s.bytes_shipped,
            last_put: s.last_put,
            last_error: s.last_error.clone(),
        }
    }
}

impl LogStats {
    /// The state of source `spec` (created on first use).
    pub fn source(&self, spec: &SourceSpec) -> Arc<SourceState> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(SourceState {
                    group: spec.group.clone(),
                    stream: spec.stream.clone(),
                    pattern: spec.pattern.clone(),
                    inner: Mutex::default(),
                })
            })
            .clone()
    }

    /// Every source now, by name.
    #[must_use]
    pub fn sources(&self) -> BTreeMap<String, SourceSnapshot> {
        let sources: Vec<(String, Arc<SourceState>)> = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sources
            .into_iter()
            .map(|(k, v)| (k, v.snapshot()))
            .collect()
    }
}
