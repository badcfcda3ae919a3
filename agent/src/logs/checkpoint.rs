//! Per-file read positions that CloudWatch has acknowledged, kept across agent restarts.
//!
//! One JSON file per source, `<state_dir>/checkpoints/<source>.json`, holding
//! `{"files":[{"dev":…,"ino":…,"offset":…}]}`. It is only ever written after a PutLogEvents
//! request succeeded, and atomically: write a temporary file, fsync it, rename it over the old
//! one, fsync the directory. A crash at any point leaves either the old or the new checkpoint,
//! so a restarted agent re-sends at most what was in flight (at-least-once, nothing lost).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::batch::FileId;

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

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    offset: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    files: Vec<Entry>,
}

/// The acknowledged offsets of one source's files, and where they are stored.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    offsets: BTreeMap<FileId, u64>,
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
                            e.offset,
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

    /// The acknowledged offset of `id`, if known.
    #[must_use]
    pub fn get(&self, id: FileId) -> Option<u64> {
        self.offsets.get(&id).copied()
    }

    /// All known files.
    #[must_use]
    pub fn files(&self) -> Vec<(FileId, u64)> {
        self.offsets.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Records an acknowledged offset (never moves backwards).
    pub fn advance(&mut self, id: FileId, offset: u64) {
        match self.offsets.get(&id) {
            Some(&known) if known >= offset => {}
            _ => {
                self.offsets.insert(id, offset);
                self.dirty = true;
            }
        }
    }

    /// Sets an offset, also backwards (a truncated file starts again at 0).
    pub fn set(&mut self, id: FileId, offset: u64) {
        if self.offsets.insert(id, offset) != Some(offset) {
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
                    offset: *v,
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
        c.advance(id, 10);
        c.advance(id, 5); // never backwards
        assert!(c.is_dirty());
        c.save().unwrap();
        assert!(!c.is_dirty());
        let c2 = Checkpoints::load(&path).unwrap();
        assert_eq!(c2.get(id), Some(10));
        assert!(!path.with_extension("json.tmp").exists());
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
