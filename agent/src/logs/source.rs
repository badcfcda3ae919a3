//! One source of log events, resolved for this instance: a glob (or the app's spool) to one
//! stream, and how its lines become events.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One source, resolved: a glob to one stream.
#[derive(Debug)]
pub struct SourceSpec {
    /// Name used in logs and for the checkpoint file.
    pub name: String,
    /// Glob of the files.
    pub pattern: String,
    /// Files are spool segments (ordered by name, deleted once shipped).
    pub spool: bool,
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// Retention for the group.
    pub retention_days: Option<u32>,
    /// Multiline start pattern.
    pub multiline_start: Option<regex_lite::Regex>,
    /// Timestamp format.
    pub timestamp_format: Option<String>,
    /// Poll interval.
    pub poll: Duration,
    /// Rotated-copy name pattern (`{path}`), see [`super::settings::FileLogsConfig::rotated`].
    pub rotated: Option<String>,
}

impl SourceSpec {
    /// The rotated copy's name for the matched file `path`.
    #[must_use]
    pub fn rotated_path(&self, path: &Path) -> Option<PathBuf> {
        let pattern = self.rotated.as_deref()?;
        Some(PathBuf::from(pattern.replace("{path}", path.to_str()?)))
    }
}
