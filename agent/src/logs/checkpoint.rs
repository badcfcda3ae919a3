//! Per-file read positions that CloudWatch has acknowledged, kept across agent restarts.
//!
//! One JSON file per source, `<state_dir>/checkpoints/<source>.json`, holding
//! `{"files":[{"dev":…,"ino":…,"offset":…,"head_len":…,"head_hash":…}]}`. It is only ever written after a PutLogEvents
//! request succeeded, and atomically: write a temporary file, fsync it, rename it over the old
//! one, fsync the directory. A crash at any point leaves either the old or the new checkpoint,
//! so a restarted agent re-sends at most what was in flight (at-least-once, nothing lost).
//!
//! (device, inode, offset) alone cannot tell that the offset still points into the same content:
//! a file truncated in place (copytruncate) and written past the old offset while the agent was
//! down, or a deleted file whose inode was reused, looks exactly like the file the checkpoint was
//! taken of. So every entry also holds a [`Fingerprint`] of the file's head: its first
//! [`HEAD_BYTES`] bytes (fewer while the file is shorter), as vector's and fluent-bit's
//! checksum fingerprints do. We fingerprint the head rather than the bytes just before the offset
//! because the head never changes while a file only grows, so the reader computes it once per
//! file (no hashing per line on the hot path), and the same fingerprint lets the running reader
//! re-validate an idle file by comparing its first bytes. A head that no longer matches means the
//! file was truncated or replaced: it is read again from 0 (a truncation, counted in
//! [`super::stats::LogStats::truncations`]). Entries written before fingerprints existed have none and
//! their offset is trusted as it was. The head of a rewritten file matches the old one only if its
//! first line is byte for byte the same (same timestamp, same text): then, as before, only the
//! size check protects it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::file_id::{FileId, Fingerprint};

/// Errors reading or writing a checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint '{path}': {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a checkpoint.
    #[error("checkpoint '{path}' is corrupt: {source}")]
    Parse {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Where reading a file resumes: the acknowledged offset and the file's head fingerprint
/// (`None` in checkpoints written by agents before fingerprints: the offset is trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Bytes acknowledged.
    pub offset: u64,
    /// The file's head when they were read.
    pub head: Option<Fingerprint>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head_hash: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    files: Vec<Entry>,
}

/// The acknowledged offsets of one source's files, and where they are stored.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    offsets: BTreeMap<FileId, Position>,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `path`; a missing file is an empty checkpoint (first start).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let offsets = match std::fs::read(path) {
            Ok(bytes) => {
                let disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse {
                        path: path.to_owned(),
                        source,
                    })?;
                disk.files
                    .into_iter()
                    .map(|e| {
                        (
                            FileId {
                                dev: e.dev,
                                ino: e.ino,
                            },
                            Position {
                                offset: e.offset,
                                head: e
                                    .head_len
                                    .zip(e.head_hash)
                                    .map(|(len, hash)| Fingerprint { len, hash }),
                            },
                        )
                    })
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Self {
            path: path.to_owned(),
            offsets,
            dirty: false,
        })
    }

    /// All known files.
    #[must_use]
    pub fn files(&self) -> Vec<(FileId, Position)> {
        self.offsets.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Records an acknowledged offset and the head it was read under (the offset never moves
    /// backwards; the fingerprint follows the latest offset).
    pub fn advance(&mut self, id: FileId, offset: u64, head: Option<Fingerprint>) {
        let new = Position { offset, head };
        match self.offsets.get(&id) {
            Some(known) if known.offset > offset || *known == new => {}
            _ => {
                self.offsets.insert(id, new);
                self.dirty = true;
            }
        }
    }

    /// Sets an offset, also backwards, without a fingerprint (a truncated file starts again at
    /// 0, where there is nothing to prove).
    pub fn set(&mut self, id: FileId, offset: u64) {
        let new = Position { offset, head: None };
        if self.offsets.insert(id, new) != Some(new) {
            self.dirty = true;
        }
    }

    /// Forgets a file that is gone.
    pub fn forget(&mut self, id: FileId) {
        if self.offsets.remove(&id).is_some() {
            self.dirty = true;
        }
    }

    /// Changed since the last [`Checkpoints::save`].
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the checkpoint atomically (temp file, fsync, rename, fsync of the directory).
    ///
    /// # Errors
    /// Any I/O error; the previous checkpoint is then still in place.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let disk = OnDisk {
            files: self
                .offsets
                .iter()
                .map(|(k, v)| Entry {
                    dev: k.dev,
                    ino: k.ino,
                    offset: v.offset,
                    head_len: v.head.map(|h| h.len),
                    head_hash: v.head.map(|h| h.hash),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&disk).expect("plain numbers serialize");
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename itself is only durable once the directory is synced.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/src.json");
        let mut c = Checkpoints::load(&path).unwrap();
        assert!(c.files().is_empty());
        let id = FileId { dev: 1, ino: 2 };
        let head = Fingerprint::of(b"first line\n");
        c.advance(id, 10, Some(head));
        c.advance(id, 5, None); // never backwards
        assert!(c.is_dirty());
        c.save().unwrap();
        assert!(!c.is_dirty());
        let c2 = Checkpoints::load(&path).unwrap();
        assert_eq!(
            c2.files(),
            vec![(
                id,
                Position {
                    offset: 10,
                    head: Some(head)
                }
            )]
        );
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn test_checkpoint_without_fingerprint_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.json");
        std::fs::write(&path, r#"{"files":[{"dev":1,"ino":2,"offset":42}]}"#).unwrap();
        let c = Checkpoints::load(&path).unwrap();
        assert_eq!(
            c.files(),
            vec![(
                FileId { dev: 1, ino: 2 },
                Position {
                    offset: 42,
                    head: None
                }
            )]
        );
    }

    #[test]
    fn test_corrupt_checkpoint_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.json");
        std::fs::write(&path, "{nope").unwrap();
        let e = Checkpoints::load(&path).unwrap_err().to_string();
        assert!(e.contains("src.json"), "{e}");
    }
}
