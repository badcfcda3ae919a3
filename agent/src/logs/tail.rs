//! Reading one source's files into batches, on a thread of its own.
//!
//! Files are known by (device, inode), never by name, so a file renamed by rotation is the same
//! file and one re-created under the old name is a new one. Each discovery round globs the
//! source's pattern; a file no longer matched (renamed away, deleted) is read to its end through
//! the descriptor still open, then closed. A file whose size drops below the read position, or
//! whose first bytes are no longer the ones read (its head [`Fingerprint`], see
//! [`super::checkpoint`]), was truncated in place (copytruncate) and is read again from 0, after
//! the rest of its old content: the source's rotated copy (`{path}.1`), known by the same head,
//! read from where reading stopped. The same head check decides whether a checkpoint's offset can
//! be resumed from (and finds the copy of a file truncated while the agent was away). A file that
//! reports size 0 but has data (procfs, sysfs) is never judged truncated. Files of one source go to one
//! stream in discovery order: the oldest first, each to its end before the next, so a rotated
//! file's last lines come before the new file's first ones.
//!
//! Reading is 256 KiB at a time, lines are found with `memchr` and copied once, straight into the
//! batch's single buffer; a full batch goes to the sender over a channel. Each source owns
//! [`BATCHES_PER_SOURCE`] batches: one being filled while the other is in flight. The sender gives
//! a batch back (emptied, buffers kept) once CloudWatch acknowledged it, and the reader waits for
//! it before filling more, which is the back-pressure: while CloudWatch is slow or away, files
//! simply wait on disk, and memory stays at two batches per source.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::batch::{
    split_message, Batch, Clock, Stamp, MAX_MESSAGE_BYTES, RECYCLED_MIN_BYTES, SPLIT_MARKER,
};
use super::checkpoint::Position;
use super::file_id::{FileId, Fingerprint, HEAD_BYTES};
use super::source::SourceSpec;
use super::stats::{LogStats, SourceState};

/// Batches that exist per source: one filled by the reader while the other is in flight.
pub const BATCHES_PER_SOURCE: usize = 2;
/// Bytes read from a file at a time.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;
/// A line without a newline is cut into an event once it is this long (bounded memory).
pub const MAX_LINE_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// How long a multiline event waits for a continuation line before it is sent.
pub const MULTILINE_FLUSH: Duration = Duration::from_secs(1);
/// Per round, bytes read from one file before the others get a turn.
const ROUND_BYTES: u64 = 16 * 1024 * 1024;

/// A batch on its way to the sender, with what it acknowledges. Dropping it (once sent and
/// checkpointed) hands the batch back to its reader to be filled again.
#[derive(Debug)]
pub struct Work {
    /// The events and the offsets they reach.
    pub batch: Batch,
    /// Files truncated in place: their checkpoint goes back to 0 before `batch.offsets` apply.
    pub truncated: Vec<FileId>,
    /// Where the batch goes back to.
    home: std::sync::mpsc::Sender<Batch>,
}

impl Drop for Work {
    fn drop(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        batch.recycle();
        // The reader may be gone (stopped): then the batch is simply freed.
        let _ = self.home.send(batch);
    }
}

/// Controls shared between the handle and a tailer thread.
#[derive(Debug, Default)]
pub struct Control {
    /// Send what is there and stop.
    pub stop: AtomicBool,
}

struct Pending {
    claimed_ms: i64,
    text: String,
    end: u64,
    since: Instant,
}

struct Tracked {
    id: FileId,
    path: PathBuf,
    /// Shared with the source's state, which looks at its size for the unread bytes.
    file: Arc<File>,
    /// Bytes of the file consumed (up to the end of `carry`'s start).
    offset: u64,
    /// Where reading got to (`offset` + `carry`), for the source's state.
    read_to: Arc<AtomicU64>,
    /// The start of a line whose newline has not been read yet.
    carry: Vec<u8>,
    pending: Option<Pending>,
    /// No longer matched by the pattern (renamed away or deleted).
    gone: bool,
    /// The file's first bytes as read (up to [`HEAD_BYTES`]; fewer while it is shorter).
    head: Vec<u8>,
    /// Fingerprint of `head`, sent with every offset of this file.
    head_fp: Fingerprint,
    /// The rotated copy of this file's earlier content, read to its end before this file is
    /// read again (copytruncate), so the stream keeps the order of the lines.
    blocked_by: Option<FileId>,
}

impl Tracked {
    /// Adds what a chunk read at file position `base` contributes to the head.
    fn grow_head(&mut self, base: u64, chunk: &[u8]) {
        let have = self.head.len() as u64;
        if have >= HEAD_BYTES as u64 || base > have {
            return;
        }
        let from = usize::try_from(have - base).expect("below HEAD_BYTES");
        let to = chunk
            .len()
            .min(HEAD_BYTES - usize::try_from(base).expect("below HEAD_BYTES"));
        if to > from {
            self.head.extend_from_slice(&chunk[from..to]);
            self.head_fp = Fingerprint::of(&self.head);
        }
    }

    /// Whether the file still starts with the bytes read from it (false after a truncation
    /// and rewrite, even one that made it longer than before).
    fn head_unchanged(&self) -> bool {
        if self.head.is_empty() {
            return true;
        }
        let mut now = vec![0u8; self.head.len()];
        self.file.read_exact_at(&mut now, 0).is_ok() && now == self.head
    }
}

/// The first bytes of `file` (up to [`HEAD_BYTES`]; fewer if it is shorter).
fn read_head(file: &File) -> Vec<u8> {
    let mut head = vec![0u8; HEAD_BYTES];
    let mut got = 0;
    while got < HEAD_BYTES {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    head.truncate(got);
    head
}

/// Whether `file` reports size 0 but has data to read: a pseudo file (procfs, sysfs, debugfs)
/// whose size says nothing about its content. Its size and head are never taken as signs of a
/// truncation: such a file is read once, to its end.
fn is_pseudo(file: &File, size: u64) -> bool {
    size == 0 && file.read_at(&mut [0u8; 1], 0).is_ok_and(|n| n > 0)
}

/// Whether `file` has a byte at position `at` (a file truncated below `at + 1` has none).
fn has_byte_at(file: &File, at: u64) -> bool {
    file.read_at(&mut [0u8; 1], at).is_ok_and(|n| n > 0)
}

/// Builds batches from lines: timestamps, multiline joining, splitting, back-pressure.
struct Emitter {
    spec: Arc<SourceSpec>,
    clock: Clock,
    batch: Batch,
    truncated: Vec<FileId>,
    tx: mpsc::Sender<Work>,
    /// Batches given back by the sender, and the way back for them.
    free: std::sync::mpsc::Receiver<Batch>,
    home: std::sync::mpsc::Sender<Batch>,
    /// Batches made so far (at most [`BATCHES_PER_SOURCE`]).
    made: usize,
    stats: Arc<LogStats>,
    /// This source's state: batches handed over, files open.
    source: Arc<SourceState>,
    now_ms: i64,
    read_at: Instant,
    closed: bool,
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Emitter {
    /// Hands the current batch to the sender and takes an empty one, waiting (bounded by the
    /// sender's life) until the sender gave one back when all of them are out.
    fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let counted = !batch.is_empty();
        if counted {
            // Before the sender can see it, so its acknowledgement always finds it.
            self.source
                .handed_over(batch.first_read, batch.len() as u64, batch.bytes() as u64);
        }
        let work = Work {
            batch,
            truncated: std::mem::take(&mut self.truncated),
            home: self.home.clone(),
        };
        if self.tx.blocking_send(work).is_err() {
            self.closed = true;
            if counted {
                self.source.take_back();
            }
        }
        self.batch = self.next_batch();
    }

    fn next_batch(&mut self) -> Batch {
        if let Ok(b) = self.free.try_recv() {
            return b;
        }
        if self.made < BATCHES_PER_SOURCE {
            self.made += 1;
            return Batch::with_capacity(RECYCLED_MIN_BYTES);
        }
        loop {
            if self.closed || self.tx.is_closed() {
                // No sender any more: nothing will be sent, the reader is about to stop.
                self.closed = true;
                return Batch::default();
            }
            match self.free.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => return b,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Cannot happen (the emitter holds a sender of its own free list).
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// The claimed time of a line: parsed with the source's format, else the read time.
    fn claimed(&self, line: &str) -> i64 {
        if let Some(fmt) = &self.spec.timestamp_format {
            if let Ok((dt, _)) = chrono::DateTime::parse_and_remainder(line, fmt) {
                return dt.timestamp_millis();
            }
            if let Ok((dt, _)) = chrono::NaiveDateTime::parse_and_remainder(line, fmt) {
                return dt.and_utc().timestamp_millis();
            }
        }
        self.now_ms
    }

    fn emit(&mut self, claimed_ms: i64, text: &str, id: FileId, end: u64, head: Fingerprint) {
        let pieces = split_message(text);
        if pieces.len() > 1 {
            self.stats.split_events.fetch_add(1, Ordering::Relaxed);
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            if piece.is_empty() {
                // CloudWatch rejects empty messages; the offset still moves past the line.
                continue;
            }
            let (ts, how) = self.clock.stamp(claimed_ms, self.now_ms);
            if how == Stamp::Retimed {
                self.stats.retimed_events.fetch_add(1, Ordering::Relaxed);
            }
            let marked;
            let msg = if i < last {
                marked = format!("{piece}{SPLIT_MARKER}");
                marked.as_str()
            } else {
                piece
            };
            if self.batch.is_empty() {
                self.batch.first_read = Some(self.read_at);
            }
            if self.batch.push(ts, msg).is_err() {
                self.send();
                self.batch.first_read = Some(self.read_at);
                self.batch
                    .push(ts, msg)
                    .expect("an empty batch takes any valid event");
            }
        }
        self.batch.reach(id, end, Some(head));
    }

    /// One complete line of file `t` ending at file offset `end`.
    fn line(&mut self, t: &mut Tracked, raw: &[u8], end: u64) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = String::from_utf8_lossy(raw);
        let Some(start) = self.spec.multiline_start.as_ref() else {
            let claimed = self.claimed(&text);
            self.emit(claimed, &text, t.id, end, t.head_fp);
            return;
        };
        if start.is_match(&text) || t.pending.is_none() {
            if let Some(p) = t.pending.take() {
                self.emit(p.claimed_ms, &p.text, t.id, p.end, t.head_fp);
            }
            t.pending = Some(Pending {
                claimed_ms: self.claimed(&text),
                text: text.into_owned(),
                end,
                since: Instant::now(),
            });
        } else if let Some(p) = t.pending.as_mut() {
            if p.text.len() < MAX_LINE_BYTES {
                p.text.push('\n');
                p.text.push_str(&text);
            }
            p.end = end;
        }
    }

    fn flush_pending(&mut self, t: &mut Tracked, older_than: Option<Duration>) {
        let due = match (&t.pending, older_than) {
            (Some(p), Some(age)) => p.since.elapsed() >= age,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if due {
            let p = t.pending.take().expect("checked");
            self.emit(p.claimed_ms, &p.text, t.id, p.end, t.head_fp);
        }
    }
}

/// One source's reader. Runs on its own thread until told to stop.
pub struct Tailer {
    files: Vec<Tracked>,
    /// Acknowledged positions at start (checkpoint), by file.
    start_offsets: HashMap<FileId, Position>,
    /// Files read to the end and handed over; ignored if the pattern still matches them.
    done: HashSet<FileId>,
    emitter: Emitter,
    control: Arc<Control>,
    buf: Vec<u8>,
    poll: Duration,
    /// Files were opened or closed since the source's state last heard of them.
    files_changed: bool,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("source", &self.emitter.spec.name)
            .finish_non_exhaustive()
    }
}

impl Tailer {
    /// A tailer for `spec`, resuming from `start_offsets`, sending to `tx`.
    #[must_use]
    pub fn new(
        spec: Arc<SourceSpec>,
        start_offsets: HashMap<FileId, Position>,
        tx: mpsc::Sender<Work>,
        stats: Arc<LogStats>,
        control: Arc<Control>,
    ) -> Self {
        let poll = spec.poll;
        let source = stats.source(&spec);
        let (home, free) = std::sync::mpsc::channel();
        Self {
            files: Vec::new(),
            start_offsets,
            done: HashSet::new(),
            emitter: Emitter {
                clock: Clock::new(spec.retention_days),
                spec,
                batch: Batch::with_capacity(RECYCLED_MIN_BYTES),
                truncated: Vec::new(),
                tx,
                free,
                home,
                made: 1,
                stats,
                source,
                now_ms: epoch_ms(SystemTime::now()),
                read_at: Instant::now(),
                closed: false,
            },
            control,
            buf: vec![0; READ_CHUNK_BYTES],
            poll,
            files_changed: false,
        }
    }

    /// Globs the pattern: opens new files, marks vanished ones.
    fn discover(&mut self) {
        let spec = self.emitter.spec.clone();
        let Ok(paths) = glob::glob(&spec.pattern) else {
            return;
        };
        let mut seen = HashSet::new();
        let mut new = Vec::new();
        for path in paths.flatten() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            seen.insert(id);
            if let Some(t) = self.files.iter_mut().find(|t| t.id == id) {
                t.path = path;
            } else if !self.done.contains(&id) {
                new.push((meta.modified().ok(), path));
            }
        }
        for t in &mut self.files {
            t.gone = !seen.contains(&t.id);
        }
        self.done.retain(|id| seen.contains(id));
        // Spool segments are named in write order; other files go oldest first.
        if spec.spool {
            new.sort_by(|a, b| a.1.cmp(&b.1));
        } else {
            new.sort();
        }
        for (_, path) in new {
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if self.files.iter().any(|t| t.id == id) || self.done.contains(&id) {
                continue;
            }
            let head = read_head(&file);
            let mut offset = 0;
            // Earlier content of this file to finish first: its rotated copy, from where the
            // checkpoint says reading stopped.
            let mut copy: Option<Position> = None;
            if let Some(pos) = self.start_offsets.remove(&id) {
                // The checkpoint must still point into the same content: a file truncated
                // while the agent was away is shorter, or, if already written past the old
                // offset again, starts with other bytes. (No fingerprint: an old checkpoint,
                // the offset is trusted.) A pseudo file's size and head say nothing.
                let same_head = pos.head.is_none_or(|fp| fp.matches(&head));
                let shorter = pos.offset > meta.len() && !has_byte_at(&file, pos.offset - 1);
                if pos.offset > 0 && (shorter || !same_head) && !is_pseudo(&file, meta.len()) {
                    tracing::info!(source = %spec.name, path = %path.display(), size = meta.len(),
                        checkpoint = pos.offset, same_head,
                        "log file truncated while the agent was away, reading from its start");
                    self.emitter
                        .stats
                        .truncations
                        .fetch_add(1, Ordering::Relaxed);
                    self.emitter.truncated.push(id);
                    copy = pos.head.is_some().then_some(pos);
                } else {
                    offset = pos.offset;
                }
            }
            let blocked_by = self.track_rotated(&path, id, &seen, copy);
            if file.seek(SeekFrom::Start(offset)).is_err() {
                continue;
            }
            tracing::debug!(source = %spec.name, path = %path.display(), offset, "tailing");
            self.files_changed = true;
            self.files.push(Tracked {
                id,
                path,
                file: Arc::new(file),
                offset,
                read_to: Arc::new(AtomicU64::new(offset)),
                carry: Vec::new(),
                pending: None,
                gone: false,
                head_fp: Fingerprint::of(&head),
                head,
                blocked_by,
            });
        }
    }

    /// The rotated copy of `path` (the source's `rotated` pattern), if it is a file of its own
    /// that the pattern does not match.
    fn rotated_copy(
        &self,
        path: &std::path::Path,
        seen: &HashSet<FileId>,
    ) -> Option<(PathBuf, File, FileId)> {
        let rotated = self.emitter.spec.rotated_path(path)?;
        let file = File::open(&rotated).ok()?;
        let meta = file.metadata().ok().filter(std::fs::Metadata::is_file)?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let known =
            seen.contains(&id) || self.done.contains(&id) || self.files.iter().any(|t| t.id == id);
        (!known).then_some((rotated, file, id))
    }

    /// Starts reading the rotated copy of `path` (file `id`) when it holds content not read yet:
    /// `copy` is where reading of `path`'s earlier content stopped (copytruncate while away), or
    /// else the checkpoint has a position for the copy itself (the agent stopped while reading it,
    /// or the file was renamed to it while the agent was away). The copy is known by its head
    /// fingerprint. Returns the copy's id, which `path` then waits for.
    fn track_rotated(
        &mut self,
        path: &std::path::Path,
        id: FileId,
        seen: &HashSet<FileId>,
        copy: Option<Position>,
    ) -> Option<FileId> {
        let (rotated, file, copy_id) = self.rotated_copy(path, seen)?;
        if copy_id == id {
            return None;
        }
        let own = self.start_offsets.get(&copy_id).copied();
        let pos = own.or(copy)?;
        let head = read_head(&file);
        let size = file.metadata().map_or(0, |m| m.len());
        if !pos.head.is_none_or(|fp| fp.matches(&head)) || pos.offset >= size {
            return None;
        }
        if own.is_some() {
            self.start_offsets.remove(&copy_id);
        }
        let mut file = file;
        file.seek(SeekFrom::Start(pos.offset)).ok()?;
        tracing::info!(source = %self.emitter.spec.name, path = %rotated.display(), offset = pos.offset, size,
            "finishing the rotated copy of a log file from where reading stopped");
        self.emitter
            .stats
            .rotated_copies
            .fetch_add(1, Ordering::Relaxed);
        self.files_changed = true;
        self.files.push(Tracked {
            id: copy_id,
            path: rotated,
            file: Arc::new(file),
            offset: pos.offset,
            read_to: Arc::new(AtomicU64::new(pos.offset)),
            carry: Vec::new(),
            pending: None,
            gone: true,
            head_fp: Fingerprint::of(&head),
            head,
            blocked_by: None,
        });
        Some(copy_id)
    }

    /// Reads file `i` up to its end or [`ROUND_BYTES`]; returns the bytes read.
    fn read_file(&mut self, i: usize) -> u64 {
        let mut total = 0u64;
        let t = &mut self.files[i];
        let em = &mut self.emitter;
        while total < ROUND_BYTES && !em.closed {
            let n = match (&*t.file).read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "reading log file");
                    break;
                }
            };
            total += n as u64;
            em.now_ms = epoch_ms(SystemTime::now());
            em.read_at = Instant::now();
            let chunk = &self.buf[..n];
            // Position in the file of chunk[0].
            let base = t.offset + t.carry.len() as u64;
            t.grow_head(base, chunk);
            let mut start = 0usize;
            for nl in memchr::memchr_iter(b'\n', chunk) {
                let end = base + nl as u64 + 1;
                if t.carry.is_empty() {
                    em.line(t, &chunk[start..nl], end);
                } else {
                    let mut line = std::mem::take(&mut t.carry);
                    line.extend_from_slice(&chunk[start..nl]);
                    em.line(t, &line, end);
                    line.clear();
                    t.carry = line;
                }
                start = nl + 1;
            }
            if start > 0 {
                // The carry (if any) went into the first line.
                t.offset = base + start as u64;
            }
            t.carry.extend_from_slice(&chunk[start..]);
            if t.carry.len() >= MAX_LINE_BYTES {
                // A "line" this long without a newline: ship it as it is (split).
                let line = std::mem::take(&mut t.carry);
                let end = t.offset + line.len() as u64;
                em.line(t, &line, end);
                t.offset = end;
            }
            t.read_to
                .store(t.offset + t.carry.len() as u64, Ordering::Relaxed);
        }
        total
    }

    /// Truncated in place (copytruncate): shorter than the read position, or rewritten past it
    /// with other first bytes; start again at 0, after the rest of the old content from its
    /// rotated copy, if there is one. Returns whether such a copy was put before file `i` (it is
    /// then file `i`, and the truncated file `i + 1`).
    fn check_truncated(&mut self, i: usize) -> bool {
        let t = &mut self.files[i];
        let size = t.file.metadata().map_or(u64::MAX, |m| m.len());
        if is_pseudo(&t.file, size) {
            // Size 0 with data (procfs, sysfs): not a truncation, and its head changes with
            // every read; it was read to its end once.
            return false;
        }
        let read_to = t.offset + t.carry.len() as u64;
        let shorter = size < read_to && !has_byte_at(&t.file, read_to - 1);
        if !((shorter || !t.head_unchanged()) && (&*t.file).seek(SeekFrom::Start(0)).is_ok()) {
            return false;
        }
        tracing::info!(path = %t.path.display(), size, read_to, shorter, "log file truncated, reading from its start");
        self.emitter.flush_pending(t, None);
        if self.emitter.batch.offsets.iter().any(|o| o.0 == t.id) {
            // Offsets into the old content go first, so the reset to 0 comes after them and
            // the new content's offsets are not held back by the old, larger ones.
            self.emitter.send();
        }
        let t = &self.files[i];
        let (id, path) = (t.id, t.path.clone());
        let old = Position {
            offset: t.offset,
            head: Some(t.head_fp),
        };
        let copy = if t.head.is_empty() {
            None
        } else {
            self.track_rotated(&path, id, &HashSet::new(), Some(old))
        };
        let t = &mut self.files[i];
        t.offset = 0;
        t.read_to.store(0, Ordering::Relaxed);
        t.carry.clear();
        t.head.clear();
        t.head_fp = Fingerprint::of(&[]);
        t.blocked_by = copy;
        self.emitter
            .stats
            .truncations
            .fetch_add(1, Ordering::Relaxed);
        self.emitter.truncated.push(id);
        if copy.is_some() {
            // track_rotated pushed it last: move it before the file it came from.
            let c = self.files.pop().expect("just pushed");
            self.files.insert(i, c);
            self.publish_files();
        }
        copy.is_some()
    }

    /// Whether file `i` (at its end) will never grow again.
    fn finished(&self, i: usize) -> bool {
        let t = &self.files[i];
        if self.emitter.spec.spool {
            // The writer never touches a segment again once a newer one exists.
            return self.files[i + 1..].iter().any(|o| o.path > t.path) || t.gone;
        }
        t.gone || t.file.metadata().map_or(true, |m| m.nlink() == 0)
    }

    fn close(&mut self, i: usize) {
        let mut t = self.files.remove(i);
        self.files_changed = true;
        self.emitter.flush_pending(&mut t, None);
        if !t.carry.is_empty() {
            // A last line without a newline in a file that will not grow: ship it.
            let line = std::mem::take(&mut t.carry);
            let end = t.offset + line.len() as u64;
            self.emitter.line(&mut t, &line, end);
            self.emitter.flush_pending(&mut t, None);
            t.offset = end;
        }
        self.emitter.batch.reach(t.id, t.offset, Some(t.head_fp));
        self.emitter.batch.finished.push((t.id, t.path.clone()));
        self.done.insert(t.id);
        tracing::debug!(path = %t.path.display(), "finished log file");
    }

    /// Tells the source's state which files are open, if that changed.
    fn publish_files(&mut self) {
        if std::mem::take(&mut self.files_changed) {
            self.emitter.source.set_files(
                self.files
                    .iter()
                    .map(|t| (t.file.clone(), t.read_to.clone())),
            );
        }
    }

    /// Runs until [`Control::stop`]; sends everything read before returning.
    pub fn run(mut self) {
        let discover_every = self.poll.max(Duration::from_millis(100));
        let mut last_discover: Option<Instant> = None;
        loop {
            let stopping = self.control.stop.load(Ordering::Acquire);
            // Stopping covers files created before it was asked for: look for them first.
            if stopping || last_discover.is_none_or(|t| t.elapsed() >= discover_every) {
                self.discover();
                self.publish_files();
                last_discover = Some(Instant::now());
            }
            let mut progressed = 0u64;
            let mut i = 0;
            while i < self.files.len() {
                if let Some(copy) = self.files[i].blocked_by {
                    if self.files.iter().any(|t| t.id == copy) {
                        // Its rotated copy (before it in the list) is not finished yet.
                        i += 1;
                        continue;
                    }
                    self.files[i].blocked_by = None;
                }
                let n = self.read_file(i);
                progressed += n;
                if n == 0 {
                    if self.check_truncated(i) {
                        // File i is now the truncated file's rotated copy: read it first.
                        continue;
                    }
                    if self.finished(i) && self.read_file(i) == 0 {
                        self.close(i);
                        continue;
                    }
                }
                i += 1;
            }
            self.publish_files();
            if self.emitter.closed {
                return;
            }
            let age = if stopping {
                None
            } else {
                Some(MULTILINE_FLUSH)
            };
            for t in &mut self.files {
                self.emitter.flush_pending(t, age);
            }
            if progressed == 0 || stopping {
                if !self.emitter.batch.is_void() || !self.emitter.truncated.is_empty() {
                    self.emitter.send();
                }
                if stopping {
                    return;
                }
                if progressed == 0 {
                    std::thread::sleep(self.poll.min(Duration::from_millis(100)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: String, multiline: Option<&str>) -> Arc<SourceSpec> {
        Arc::new(SourceSpec {
            name: "t".into(),
            pattern,
            spool: false,
            group: "g".into(),
            stream: "s".into(),
            retention_days: Some(7),
            multiline_start: multiline.map(|r| regex_lite::Regex::new(r).unwrap()),
            timestamp_format: None,
            poll: Duration::from_millis(20),
            rotated: Some(super::super::settings::DEFAULT_ROTATED.into()),
        })
    }

    /// Receives batches until `want` messages arrived (or 10 s), acknowledging nothing.
    async fn collect(rx: &mut mpsc::Receiver<Work>, got: &mut Vec<String>, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < want && Instant::now() < deadline {
            if let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                got.extend(w.batch.iter().map(|(_, m)| m.to_owned()));
            }
        }
    }

    fn append(path: &std::path::Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn test_multiline_rename_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "1 a\n  at x\n  at y\n2 b\r\n");
        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let pattern = format!("{}/app*.log", dir.path().display());
        let tailer = Tailer::new(
            spec(pattern, Some(r"^\d")),
            HashMap::new(),
            tx,
            Arc::new(LogStats::default()),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        let mut got = Vec::new();
        // "2 b" waits for a continuation until MULTILINE_FLUSH.
        collect(&mut rx, &mut got, 2).await;
        assert_eq!(got, vec!["1 a\n  at x\n  at y", "2 b"]);
        // Rename rotation: the old file's last line comes before the new file's first.
        append(&log, "3 c\n");
        std::fs::rename(&log, dir.path().join("app-1.log")).unwrap();
        append(&log, "4 d\n");
        collect(&mut rx, &mut got, 4).await;
        assert_eq!(got[2..], ["3 c", "4 d"]);
        // copytruncate: the file shrinks, it is read from the start again.
        std::fs::write(&log, "5\n").unwrap();
        collect(&mut rx, &mut got, 5).await;
        assert_eq!(got[4..], ["5"]);
        control.stop.store(true, Ordering::Release);
        while rx.recv().await.is_some() {}
        thread.join().unwrap();
    }

    #[tokio::test]
    async fn test_resumes_from_checkpoint_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old\nnew\n");
        let meta = std::fs::metadata(&log).unwrap();
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let start = HashMap::from([(
            id,
            Position {
                offset: 4,
                head: Some(Fingerprint::of(b"old\nnew\n")),
            },
        )]);
        let tailer = Tailer::new(
            spec(log.display().to_string(), None),
            start,
            tx,
            Arc::new(LogStats::default()),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        let mut got = Vec::new();
        collect(&mut rx, &mut got, 1).await;
        assert_eq!(got, vec!["new"]);
        control.stop.store(true, Ordering::Release);
        while rx.recv().await.is_some() {}
        thread.join().unwrap();
    }

    /// Lines "%09d" + padding, 100 bytes each, numbered `from..to`.
    #[tokio::test]
    async fn test_at_most_two_batches_out_and_each_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        // 100-byte lines: ~8,400 per full batch, so this is five full batches.
        append(&log, &numbered(0, 40_000));
        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let pattern = format!("{}/app*.log", dir.path().display());
        let tailer = Tailer::new(
            spec(pattern, None),
            HashMap::new(),
            tx,
            Arc::new(LogStats::default()),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        // Hold the first batch (as if in flight): one more fills up and waits in the channel,
        // then the reader waits for a batch to come back instead of making a third.
        let first = rx.recv().await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "a third batch was filled");
        let mut seqs: Vec<u64> = Vec::new();
        for w in [first, second] {
            seqs.extend(w.batch.iter().map(|(_, m)| m[..9].parse::<u64>().unwrap()));
        }
        // Both acknowledged (dropped): the reader fills them again, to the end of the file.
        while seqs.len() < 40_000 {
            let w = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            seqs.extend(w.batch.iter().map(|(_, m)| m[..9].parse::<u64>().unwrap()));
        }
        assert_eq!(seqs, (0..40_000).collect::<Vec<_>>());
        control.stop.store(true, Ordering::Release);
        while rx.recv().await.is_some() {}
        thread.join().unwrap();
    }

    fn numbered(from: u64, to: u64) -> String {
        (from..to)
            .map(|i| format!("{i:09} {}\n", "x".repeat(89)))
            .collect()
    }

    fn id_of(path: &std::path::Path) -> FileId {
        let meta = std::fs::metadata(path).unwrap();
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The bug this guards against: the checkpoint holds offset X of the old content, the file
    /// was truncated in place and written past X again while the agent was down. Resuming at X
    /// would skip the new file's first X bytes; the head fingerprint sends reading back to 0.
    #[tokio::test]
    async fn test_rewritten_past_checkpoint_while_down_is_read_from_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = numbered(0, 50);
        append(&log, &old);
        let id = id_of(&log);
        let x = old.len() as u64;
        // What the last run acknowledged: all of the old content.
        let start = HashMap::from([(
            id,
            Position {
                offset: x,
                head: Some(Fingerprint::of(old.as_bytes())),
            },
        )]);
        // copytruncate, then more lines than before (the file is longer than X again).
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, &numbered(50, 130));
        assert_eq!(id_of(&log), id, "same inode");
        assert!(std::fs::metadata(&log).unwrap().len() > x);

        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let stats = Arc::new(LogStats::default());
        let tailer = Tailer::new(
            spec(log.display().to_string(), None),
            start,
            tx,
            stats.clone(),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        let mut got = Vec::new();
        let mut truncated = Vec::new();
        let mut reached = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 80 && Instant::now() < deadline {
            if let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                got.extend(w.batch.iter().map(|(_, m)| m[..9].parse::<u64>().unwrap()));
                truncated.extend(w.truncated.iter().copied());
                reached = w.batch.offsets.last().copied().or(reached);
            }
        }
        control.stop.store(true, Ordering::Release);
        while rx.recv().await.is_some() {}
        thread.join().unwrap();
        assert_eq!(
            got,
            (50..130).collect::<Vec<_>>(),
            "every new line, none skipped"
        );
        assert_eq!(truncated, vec![id], "the checkpoint goes back to 0 first");
        assert_eq!(stats.truncations.load(Ordering::Relaxed), 1);
        // The new offsets carry the new head, so the next restart trusts them.
        let new = std::fs::read(&log).unwrap();
        assert_eq!(
            reached,
            Some((id, new.len() as u64, Some(Fingerprint::of(&new))))
        );
    }

    /// Same file, same head, grown: the checkpoint is trusted (nothing is sent twice).
    #[tokio::test]
    async fn test_grown_file_resumes_at_fingerprinted_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = numbered(0, 5);
        append(&log, &old);
        let id = id_of(&log);
        let start = HashMap::from([(
            id,
            Position {
                offset: old.len() as u64,
                head: Some(Fingerprint::of(old.as_bytes())),
            },
        )]);
        append(&log, &numbered(5, 8));
        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let stats = Arc::new(LogStats::default());
        let tailer = Tailer::new(
            spec(log.display().to_string(), None),
            start,
            tx,
            stats.clone(),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        let mut got = Vec::new();
        collect(&mut rx, &mut got, 3).await;
        control.stop.store(true, Ordering::Release);
        while let Some(w) = rx.recv().await {
            got.extend(w.batch.iter().map(|(_, m)| m.to_owned()));
        }
        thread.join().unwrap();
        let seqs: Vec<&str> = got.iter().map(|m| &m[..9]).collect();
        assert_eq!(seqs, ["000000005", "000000006", "000000007"]);
        assert_eq!(stats.truncations.load(Ordering::Relaxed), 0);
    }

    /// /proc files report size 0 but have data, and change with every read: read once, never
    /// judged truncated (which would ship them again on every poll).
    #[test]
    fn test_size_zero_pseudo_file_is_read_once_never_truncated() {
        let (tx, _rx) = mpsc::channel(16);
        let stats = Arc::new(LogStats::default());
        let mut tailer = Tailer::new(
            spec("/proc/meminfo".into(), None),
            HashMap::new(),
            tx,
            stats.clone(),
            Arc::new(Control::default()),
        );
        tailer.discover();
        assert_eq!(tailer.files.len(), 1);
        assert!(tailer.read_file(0) > 0);
        for _ in 0..5 {
            tailer.check_truncated(0);
            assert_eq!(tailer.read_file(0), 0, "read again");
        }
        assert_eq!(stats.truncations.load(Ordering::Relaxed), 0);
        // A checkpoint past its reported size is not a truncation either.
        let (tx, _rx) = mpsc::channel(16);
        let meta = std::fs::metadata("/proc/meminfo").unwrap();
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let start = HashMap::from([(
            id,
            Position {
                offset: 100_000,
                head: Some(Fingerprint::of(b"something else")),
            },
        )]);
        let mut tailer = Tailer::new(
            spec("/proc/meminfo".into(), None),
            start,
            tx,
            stats.clone(),
            Arc::new(Control::default()),
        );
        tailer.discover();
        assert_eq!(tailer.files[0].offset, 100_000);
        assert_eq!(stats.truncations.load(Ordering::Relaxed), 0);
    }

    /// logrotate's copytruncate while lines are not read yet: they exist only in the copy
    /// (`app.log.1`, not matched by the glob). The reader finishes the copy from where it stopped
    /// reading, then reads the truncated file from 0: every line once, in order.
    #[test]
    fn test_copytruncate_finishes_the_copy_from_the_read_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let copy = dir.path().join("app.log.1");
        append(&log, &numbered(0, 10));
        let (tx, mut rx) = mpsc::channel(4);
        let stats = Arc::new(LogStats::default());
        let mut tailer = Tailer::new(
            spec(format!("{}/app*.log", dir.path().display()), None),
            HashMap::new(),
            tx,
            stats.clone(),
            Arc::new(Control::default()),
        );
        tailer.discover();
        assert_eq!(tailer.read_file(0), 1000);
        // Written after the last read, then copied and truncated, then new lines.
        append(&log, &numbered(10, 15));
        std::fs::copy(&log, &copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, &numbered(15, 18));
        assert_eq!(tailer.read_file(0), 0);
        assert!(tailer.check_truncated(0), "the copy goes first");
        let first = rx.try_recv().expect("the old content's batch went first");
        assert_eq!(first.batch.len(), 10);
        drop(first);
        assert_eq!(tailer.files[0].path, copy);
        assert_eq!(tailer.read_file(0), 500, "the copy from offset 1000");
        assert!(!tailer.check_truncated(0));
        assert!(tailer.finished(0));
        assert_eq!(tailer.read_file(0), 0);
        tailer.close(0);
        assert_eq!(tailer.files[0].path, log);
        assert_eq!(tailer.read_file(0), 300);
        tailer.emitter.send();
        let second = rx.try_recv().unwrap();
        let seqs: Vec<u64> = second
            .batch
            .iter()
            .map(|(_, m)| m[..9].parse().unwrap())
            .collect();
        assert_eq!(seqs, (10..18).collect::<Vec<_>>());
        assert_eq!(second.truncated, vec![id_of(&log)]);
        assert_eq!(second.batch.finished, vec![(id_of(&copy), copy.clone())]);
        assert_eq!(stats.rotated_copies.load(Ordering::Relaxed), 1);
    }

    /// The same rotation while the agent was down: the checkpoint's offset and head find the
    /// copy, which is finished before the truncated file is read from 0.
    #[tokio::test]
    async fn test_copytruncate_while_down_finishes_the_copy_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = numbered(0, 10);
        append(&log, &old);
        let start = HashMap::from([(
            id_of(&log),
            Position {
                offset: old.len() as u64,
                head: Some(Fingerprint::of(old.as_bytes())),
            },
        )]);
        append(&log, &numbered(10, 15));
        std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, &numbered(15, 40));
        let (tx, mut rx) = mpsc::channel(1);
        let control = Arc::new(Control::default());
        let tailer = Tailer::new(
            spec(format!("{}/app*.log", dir.path().display()), None),
            start,
            tx,
            Arc::new(LogStats::default()),
            control.clone(),
        );
        let thread = std::thread::spawn(move || tailer.run());
        let mut got = Vec::new();
        collect(&mut rx, &mut got, 30).await;
        control.stop.store(true, Ordering::Release);
        while let Some(w) = rx.recv().await {
            got.extend(w.batch.iter().map(|(_, m)| m.to_owned()));
        }
        thread.join().unwrap();
        let seqs: Vec<u64> = got.iter().map(|m| m[..9].parse().unwrap()).collect();
        assert_eq!(seqs, (10..40).collect::<Vec<_>>());
    }

    /// While running: the file is truncated and written past the read position between two
    /// looks (its size never seen smaller). The head check catches it, and the batch holding
    /// the old offsets is sent before the reset to 0.
    #[test]
    fn test_rewritten_past_read_position_while_running_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, &numbered(0, 10));
        let (tx, mut rx) = mpsc::channel(4);
        let stats = Arc::new(LogStats::default());
        let mut tailer = Tailer::new(
            spec(log.display().to_string(), None),
            HashMap::new(),
            tx,
            stats.clone(),
            Arc::new(Control::default()),
        );
        tailer.discover();
        assert_eq!(tailer.read_file(0), 1000);
        assert_eq!(tailer.read_file(0), 0);
        tailer.check_truncated(0);
        assert_eq!(
            stats.truncations.load(Ordering::Relaxed),
            0,
            "unchanged file"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, &numbered(10, 25));
        tailer.check_truncated(0);
        assert_eq!(stats.truncations.load(Ordering::Relaxed), 1);
        let first = rx.try_recv().expect("the old content's batch went first");
        assert_eq!(first.batch.len(), 10);
        assert!(first.truncated.is_empty());
        drop(first); // acknowledged: the batch goes back to the reader
        assert_eq!(tailer.read_file(0), 1500);
        tailer.emitter.send();
        let second = rx.try_recv().unwrap();
        let id = id_of(&log);
        assert_eq!(second.truncated, vec![id]);
        let seqs: Vec<u64> = second
            .batch
            .iter()
            .map(|(_, m)| m[..9].parse().unwrap())
            .collect();
        assert_eq!(seqs, (10..25).collect::<Vec<_>>());
        assert_eq!(second.batch.offsets[0].1, 1500);
    }
}
