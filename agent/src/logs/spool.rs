//! The bounded on-disk spool between the app's stdout/stderr pipes and the tailer.
//!
//! The app's output is appended, as it comes, to numbered segment files
//! (`<spool_dir>/00000000000000000001.log`, …; a new one every [`SEGMENT_BYTES`] and at every
//! agent start). The tailer reads them like any log file, in name order, and deletes a segment
//! once CloudWatch acknowledged all of it. So the pipes are always drained (the app never blocks
//! on a full pipe), and output survives an agent restart.
//!
//! When the segments on disk reach the spool's size limit (CloudWatch away for long), new output
//! is **dropped**, whole chunks at a time, and counted (`dropped_events`, `dropped_bytes`, and a
//! warning in the agent's own log) until shipping frees room: the oldest output is kept because it
//! is the most likely to explain what went wrong.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::LogStats;

/// Size at which a segment is closed and the next one started (4 MiB).
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// How often, while dropping, the spool looks again for room.
const RECHECK: Duration = Duration::from_millis(500);

/// Appends app output to spool segments, within a size limit.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    max_bytes: u64,
    seq: u64,
    file: Option<File>,
    written: u64,
    /// Bytes on disk at the last check, plus what was written since.
    used: u64,
    dropping_since: Option<Instant>,
    last_check: Instant,
    ends_with_newline: bool,
    stats: Arc<LogStats>,
}

/// Bytes of every segment in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The number of a segment file name.
fn seq_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

impl SpoolWriter {
    /// A writer for `dir` (created if missing) holding at most `max_bytes`.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64, stats: Arc<LogStats>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let seq = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| seq_of(&e.path()))
            .max()
            .unwrap_or(0);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            seq,
            file: None,
            written: 0,
            used: dir_bytes(dir),
            dropping_since: None,
            last_check: Instant::now(),
            ends_with_newline: true,
            stats,
        })
    }

    /// The glob that matches this spool's segments.
    #[must_use]
    pub fn pattern(dir: &Path) -> String {
        format!("{}/*.log", glob::Pattern::escape(&dir.to_string_lossy()))
    }

    fn roll(&mut self) -> std::io::Result<()> {
        self.seq += 1;
        let path = self.dir.join(format!("{:020}.log", self.seq));
        self.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        self.written = 0;
        Ok(())
    }

    /// Appends one chunk of output (any bytes; lines may span chunks).
    pub fn write(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let len = chunk.len() as u64;
        if self.used + len > self.max_bytes && self.last_check.elapsed() >= RECHECK {
            self.used = dir_bytes(&self.dir);
            self.last_check = Instant::now();
        }
        if self.used + len > self.max_bytes {
            let lines = memchr::memchr_iter(b'\n', chunk).count().max(1) as u64;
            self.stats
                .dropped_events
                .fetch_add(lines, Ordering::Relaxed);
            self.stats.dropped_bytes.fetch_add(len, Ordering::Relaxed);
            if self.dropping_since.is_none() {
                tracing::warn!(spool = %self.dir.display(), max_bytes = self.max_bytes, "log spool full, dropping app output until CloudWatch catches up");
                self.dropping_since = Some(Instant::now());
            }
            return;
        }
        if let Some(since) = self.dropping_since.take() {
            tracing::warn!(spool = %self.dir.display(), dropped_for_ms = since.elapsed().as_millis(), "log spool has room again");
            // Do not glue the next output onto a line cut by the drop.
            if !self.ends_with_newline {
                self.append(b"\n");
            }
        }
        self.append(chunk);
    }

    fn append(&mut self, chunk: &[u8]) {
        if self.file.is_none() || self.written >= SEGMENT_BYTES {
            if let Err(e) = self.roll() {
                tracing::error!(spool = %self.dir.display(), error = %e, "cannot open log spool segment");
                self.stats
                    .dropped_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                return;
            }
        }
        let file = self.file.as_mut().expect("rolled above");
        match file.write_all(chunk) {
            Ok(()) => {
                self.written += chunk.len() as u64;
                self.used += chunk.len() as u64;
                self.ends_with_newline = chunk.last() == Some(&b'\n');
            }
            Err(e) => {
                tracing::error!(spool = %self.dir.display(), error = %e, "writing log spool");
                self.stats
                    .dropped_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Ends the current output with a newline (the process exited mid-line).
    pub fn end_of_stream(&mut self) {
        if !self.ends_with_newline && self.dropping_since.is_none() {
            self.append(b"\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_spool_drops_and_counts_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let mut w = SpoolWriter::open(dir.path(), 100, stats.clone()).unwrap();
        w.write(&[b'a'; 59]);
        w.write(b"\n");
        w.write(b"0123456789\n0123456789\n0123456789\n0123456789\n");
        assert_eq!(stats.dropped_events.load(Ordering::Relaxed), 4);
        assert_eq!(dir_bytes(dir.path()), 60);
        // Later segments continue the numbering.
        let w2 = SpoolWriter::open(dir.path(), 100, stats).unwrap();
        assert_eq!(w2.seq, 1);
    }

    #[test]
    fn test_end_of_stream_terminates_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::open(dir.path(), 1000, Arc::new(LogStats::default())).unwrap();
        w.write(b"partial");
        w.end_of_stream();
        w.end_of_stream();
        let text = std::fs::read_to_string(dir.path().join(format!("{:020}.log", 1))).unwrap();
        assert_eq!(text, "partial\n");
    }
}
