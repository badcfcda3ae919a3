//! `bake-agent reap [DIR] [--older-than AGE]`: deletes expired uploads.
//!
//! Without DIR it reaps `[uploads] dir` of the configuration, and without `--older-than` it uses
//! `[uploads] max_age` (default 13 days). A directory from the configuration that is missing, or an
//! `[efs]` mount point that is not mounted, skips the run with a warning naming the path and the
//! reason, and exit 0: the timer fires on every instance, also while the mount is not there.
//!
//! Rules (also in docs/agent.md):
//! - a file (or anything that is not a directory) is removed when its mtime is older than the
//!   limit;
//! - symlinks are never followed: a symlink is an entry like a file, judged by its own (lstat)
//!   mtime and removed itself, never its target; a symlinked directory is not descended into;
//! - other file systems mounted below DIR are not entered;
//! - then directories left empty are removed, if their mtime from before this run is older than
//!   the limit too (a directory just created by an uploader stays); DIR itself is never removed;
//! - `--dry-run` reports what would go and removes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Errors that stop the reaper before it starts.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// DIR cannot be read or is not a directory.
    #[error("'{path}' is not a readable directory: {message}")]
    BadRoot {
        /// DIR.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What to reap, from the command line and the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Reap `dir` with this age limit.
    Reap {
        /// The directory.
        dir: PathBuf,
        /// The age limit.
        older_than: Duration,
    },
    /// Nothing to do this time: the directory from the configuration is not there.
    Skip {
        /// The directory.
        dir: PathBuf,
        /// Why it is skipped.
        reason: String,
    },
}

/// Errors choosing what to reap.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No DIR argument and no `[uploads] dir`.
    #[error("no DIR given and the configuration has no [uploads] dir")]
    NoDir,
    /// The mount table could not be read.
    #[error("cannot tell whether {path} is mounted: {message}")]
    Mountinfo {
        /// The mount point.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Picks the directory and age: the arguments first, then `[uploads]` (age default
/// [`DEFAULT_UPLOADS_MAX_AGE`](crate::config::DEFAULT_UPLOADS_MAX_AGE)). A directory from the
/// configuration is skipped when `[efs]` is configured and its mount point is not mounted
/// (`is_mounted`), or when it does not exist; a DIR argument is never skipped.
pub fn target(
    dir: Option<PathBuf>,
    older_than: Option<Duration>,
    settings: &crate::config::Settings,
    is_mounted: impl Fn(&Path) -> Result<bool, String>,
) -> Result<Target, TargetError> {
    let uploads = settings.uploads.as_ref();
    let older_than = older_than
        .or_else(|| uploads.map(|u| u.max_age))
        .unwrap_or(crate::config::DEFAULT_UPLOADS_MAX_AGE);
    if let Some(dir) = dir {
        return Ok(Target::Reap { dir, older_than });
    }
    let dir = uploads.ok_or(TargetError::NoDir)?.dir.clone();
    if let Some(efs) = &settings.efs {
        let mounted = is_mounted(&efs.mount_point).map_err(|message| TargetError::Mountinfo {
            path: efs.mount_point.clone(),
            message,
        })?;
        if !mounted {
            return Ok(Target::Skip {
                reason: format!(
                    "the EFS mount point {} is not mounted",
                    efs.mount_point.display()
                ),
                dir,
            });
        }
    }
    match std::fs::symlink_metadata(&dir) {
        Ok(_) => Ok(Target::Reap { dir, older_than }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Target::Skip {
            dir,
            reason: "it does not exist".into(),
        }),
        // Anything else (not a directory, no permission) is reported by reap() itself.
        Err(_) => Ok(Target::Reap { dir, older_than }),
    }
}

/// What a run did (or would do, dry).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Files (and symlinks, and other non-directories) removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Empty directories removed.
    pub dirs: u64,
    /// Entries that could not be read or removed (each logged).
    pub errors: u64,
}

/// Reaps `root`: see the module docs. `now` is passed in for tests.
pub fn reap(
    root: &Path,
    older_than: Duration,
    dry_run: bool,
    now: SystemTime,
) -> Result<Report, ReapError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| ReapError::BadRoot {
        path: root.to_owned(),
        message: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(ReapError::BadRoot {
            path: root.to_owned(),
            message: "not a directory (symlinks are not followed)".into(),
        });
    }
    let cutoff = now
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = Report::default();
    walk(root, meta.dev(), cutoff, dry_run, &mut report);
    Ok(report)
}

fn expired(meta: &std::fs::Metadata, cutoff: SystemTime) -> bool {
    meta.modified().is_ok_and(|m| m < cutoff)
}

/// Walks `dir`; returns whether it is empty afterwards (counting what a dry run would remove).
fn walk(dir: &Path, dev: u64, cutoff: SystemTime, dry_run: bool, report: &mut Report) -> bool {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot read directory");
            report.errors += 1;
            return false;
        }
    };
    let mut left = 0u64;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot read directory entry");
                report.errors += 1;
                left += 1;
                continue;
            }
        };
        let path = entry.path();
        // lstat: never follow a symlink.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot stat");
                report.errors += 1;
                left += 1;
                continue;
            }
        };
        if meta.is_dir() {
            if meta.dev() != dev {
                tracing::info!(path = %path.display(), "another file system; not entered");
                left += 1;
                continue;
            }
            let was_expired = expired(&meta, cutoff);
            let empty = walk(&path, dev, cutoff, dry_run, report);
            if empty && was_expired {
                if dry_run {
                    tracing::info!(path = %path.display(), "would remove empty directory");
                    report.dirs += 1;
                } else {
                    match std::fs::remove_dir(&path) {
                        Ok(()) => report.dirs += 1,
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove directory");
                            report.errors += 1;
                            left += 1;
                        }
                    }
                }
            } else {
                left += 1;
            }
        } else if expired(&meta, cutoff) {
            if dry_run {
                tracing::info!(path = %path.display(), bytes = meta.len(), "would remove");
                report.files += 1;
                report.bytes += meta.len();
            } else {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), bytes = meta.len(), "removed");
                        report.files += 1;
                        report.bytes += meta.len();
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
                        report.errors += 1;
                        left += 1;
                    }
                }
            }
        } else {
            left += 1;
        }
    }
    left == 0
}
