//! `[logs]` in agent.toml: the raw section ([`LogsConfig`], every field optional), checked and
//! typed once by [`LogsSettings::with_config`] when the configuration is loaded, and turned into
//! the sources of one instance by [`LogsSettings::for_instance`], which only fills in
//! `{instance_id}`.

use std::path::PathBuf;
use std::time::Duration;

use super::source::SourceSpec;
use super::spool::SpoolWriter;

/// Default directory for checkpoints and the stdout/stderr spool: below the systemd unit's
/// `StateDirectory=bake` (`/var/lib/bake`, mode 0750, kept across agent restarts).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bake/logs";
/// Default retention of created log groups, in days (R9: 7-day log backups).
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// Default size limit of each of the stdout and stderr spools, in MiB.
pub const DEFAULT_SPOOL_MAX_MIB: u64 = 64;
/// Largest `spool_max_mib` (1 TiB): more than any instance's disk, far from overflowing bytes.
pub const MAX_SPOOL_MAX_MIB: u64 = 1 << 20;
/// Default time between looks for new data and new files.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);
/// Longest `poll_interval`.
pub const MAX_POLL: Duration = Duration::from_secs(60);
/// Retention values CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
/// Default [`FileLogsConfig::rotated`]: logrotate's first rotated name.
pub const DEFAULT_ROTATED: &str = "{path}.1";
/// Longest log group or stream name CloudWatch Logs accepts.
const MAX_NAME_LEN: usize = 512;
/// Longest instance id (`i-` and 17 hex digits): what `{instance_id}` may add to a name.
const MAX_INSTANCE_ID_LEN: usize = 19;
/// The one placeholder of group and stream names.
const INSTANCE_ID: &str = "{instance_id}";

/// `[logs]` in agent.toml. Every field is optional; without `app` and `files` nothing is shipped.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Checkpoints and spool. Default [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    /// Retention of the log groups the agent creates, in days (one of [`RETENTION_DAYS`]).
    /// Default 7. Existing groups get it set too.
    pub retention_days: Option<u32>,
    /// How often files are looked at for new lines and the globs for new files (humantime).
    /// Default `"250ms"`.
    pub poll_interval: Option<String>,
    /// Size limit of each of the stdout and stderr spools, in MiB. Default 64.
    pub spool_max_mib: Option<u64>,
    /// The app's stdout and stderr.
    pub app: Option<AppLogsConfig>,
    /// Log files, each glob to one stream.
    #[serde(default)]
    pub files: Vec<FileLogsConfig>,
}

/// `[logs.app]`: where the supervised app's output goes.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppLogsConfig {
    /// Log group, e.g. `/bake/app`.
    pub log_group: String,
    /// Stream for stdout. `{instance_id}` is replaced. Default `{instance_id}/stdout`.
    pub stdout_stream: Option<String>,
    /// Stream for stderr. Default `{instance_id}/stderr`.
    pub stderr_stream: Option<String>,
    /// Regex that starts a new event; other lines join the previous one (stack traces).
    pub multiline_start: Option<String>,
    /// chrono `strftime` format of a timestamp at the start of each event, e.g.
    /// `%Y-%m-%dT%H:%M:%S%.f%z` (UTC when it has no offset). Default: the time it was read.
    pub timestamp_format: Option<String>,
}

/// `[[logs.files]]`: files matching a glob, shipped to one stream.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogsConfig {
    /// Glob, e.g. `/var/log/app/*.log`; none into /proc or /sys, no `..`. If files are rotated
    /// by rename while the agent may be down, it must also match the rotated names (e.g.
    /// `app*.log` for `app-1.log`), or the rotated name must be [`Self::rotated`].
    pub path: String,
    /// Log group.
    pub log_group: String,
    /// Log stream; `{instance_id}` is replaced.
    pub log_stream: String,
    /// Retention for this group, in days. Default: `logs.retention_days`.
    pub retention_days: Option<u32>,
    /// See [`AppLogsConfig::multiline_start`].
    pub multiline_start: Option<String>,
    /// See [`AppLogsConfig::timestamp_format`].
    pub timestamp_format: Option<String>,
    /// Where a copytruncate rotation leaves the copy of a matched file, `{path}` being the
    /// file's path. When the file is found truncated, the lines not read yet are read from this
    /// copy first, from where reading stopped (the copy is known by the head fingerprint of the
    /// file; see docs/logs.md). Default `"{path}.1"` (logrotate's name); `""` turns it off.
    pub rotated: Option<String>,
}

/// A `[logs]` value that cannot work, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct LogsConfigError {
    /// Key path, e.g. `logs.files[0].path`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> LogsConfigError {
    LogsConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// A log group or stream name in which `{instance_id}` stands for the instance's id. Checked
/// when the configuration is loaded, for any instance id: [`Self::for_instance`] cannot fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    /// A stream name: only `{instance_id}` is templated; 1 to 512 characters once filled in,
    /// no `:` or `*`.
    fn stream(key: &str, value: &str) -> Result<Self, LogsConfigError> {
        let literal = value.replace(INSTANCE_ID, "");
        if literal.contains(['{', '}']) {
            return Err(bad(
                key,
                format!("{value:?}: only {{instance_id}} can be templated"),
            ));
        }
        let longest = literal.len() + value.matches(INSTANCE_ID).count() * MAX_INSTANCE_ID_LEN;
        if value.is_empty() || longest > MAX_NAME_LEN || literal.contains([':', '*']) {
            return Err(bad(
                key,
                format!("{value:?} is not a valid log stream or group name"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// A group name: [`Self::stream`], then CloudWatch Logs' rule for group names: 1 to 512 of
    /// `A-Za-z0-9._-/#` (instance ids are made of those).
    fn group(key: &str, value: &str) -> Result<Self, LogsConfigError> {
        let name = Self::stream(key, value)?;
        if let Some(c) = value
            .replace(INSTANCE_ID, "")
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/#".contains(*c)))
        {
            return Err(bad(
                key,
                format!("{value:?}: {c:?} is not allowed in a log group name (A-Za-z0-9._-/#)"),
            ));
        }
        Ok(name)
    }

    /// The name, `{instance_id}` replaced by `instance_id`.
    #[must_use]
    pub fn for_instance(&self, instance_id: &str) -> String {
        self.0.replace(INSTANCE_ID, instance_id)
    }

    /// The name as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How events are cut and stamped: shared by every kind of source.
#[derive(Clone, Debug)]
pub struct EventFormat {
    /// Multiline start pattern.
    pub multiline_start: Option<regex_lite::Regex>,
    /// chrono `strftime` format of the leading timestamp.
    pub timestamp_format: Option<String>,
}

/// `[logs.app]`, validated.
#[derive(Clone, Debug)]
pub struct AppLogs {
    /// Log group.
    pub log_group: NameTemplate,
    /// Stream of stdout.
    pub stdout_stream: NameTemplate,
    /// Stream of stderr.
    pub stderr_stream: NameTemplate,
    /// Event cutting and stamping.
    pub format: EventFormat,
}

/// One `[[logs.files]]`, validated.
#[derive(Clone, Debug)]
pub struct FileLogs {
    /// Absolute glob.
    pub path: String,
    /// Log group.
    pub log_group: NameTemplate,
    /// Log stream.
    pub log_stream: NameTemplate,
    /// Retention of the group, in days.
    pub retention_days: u32,
    /// Event cutting and stamping.
    pub format: EventFormat,
    /// Rotated-copy name pattern (`{path}`); `None`: off.
    pub rotated: Option<String>,
}

/// `[logs]`, validated: what [`super::Shipper::start`] runs with.
#[derive(Clone, Debug)]
pub struct LogsSettings {
    /// Checkpoints and spool (absolute).
    pub state_dir: PathBuf,
    /// Retention of the app's log group, and of the files' groups without their own, in days.
    pub retention_days: u32,
    /// Time between looks for new data and new files.
    pub poll_interval: Duration,
    /// Size limit of each of the stdout and stderr spools, in bytes.
    pub spool_max_bytes: u64,
    /// The app's stdout and stderr; `None`: not shipped.
    pub app: Option<AppLogs>,
    /// Log files.
    pub files: Vec<FileLogs>,
}

/// The sources of one instance: names filled in with its id.
#[derive(Debug)]
pub struct Sources {
    /// The app's stdout and stderr sources.
    pub app: Option<(SourceSpec, SourceSpec)>,
    /// One source per `[[logs.files]]`.
    pub files: Vec<SourceSpec>,
}

impl LogsSettings {
    /// Checks and types every value of `cfg`, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`LogsConfigError`] with the key path.
    pub fn with_config(cfg: &LogsConfig) -> Result<Self, LogsConfigError> {
        let state_dir = cfg
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(bad(
                "logs.state_dir",
                format!("{:?} is not an absolute path", state_dir.display()),
            ));
        }
        let retention_days =
            retention("logs.retention_days", cfg.retention_days)?.unwrap_or(DEFAULT_RETENTION_DAYS);
        let poll_interval = match &cfg.poll_interval {
            None => DEFAULT_POLL,
            Some(s) => bake_common::duration::parse("logs.poll_interval", s)
                .map_err(|e| bad(e.key.clone(), e.message()))?,
        };
        if poll_interval.is_zero() || poll_interval > MAX_POLL {
            return Err(bad("logs.poll_interval", "must be between 1ms and 60s"));
        }
        let spool_mib = cfg.spool_max_mib.unwrap_or(DEFAULT_SPOOL_MAX_MIB);
        let spool_max_bytes = spool_mib
            .checked_mul(1024 * 1024)
            .filter(|_| (1..=MAX_SPOOL_MAX_MIB).contains(&spool_mib))
            .ok_or_else(|| {
                bad(
                    "logs.spool_max_mib",
                    format!("{spool_mib} is not in 1..={MAX_SPOOL_MAX_MIB} (MiB)"),
                )
            })?;
        let app = match &cfg.app {
            None => None,
            Some(a) => Some(AppLogs {
                log_group: NameTemplate::group("logs.app.log_group", &a.log_group)?,
                stdout_stream: NameTemplate::stream(
                    "logs.app.stdout_stream",
                    a.stdout_stream.as_deref().unwrap_or("{instance_id}/stdout"),
                )?,
                stderr_stream: NameTemplate::stream(
                    "logs.app.stderr_stream",
                    a.stderr_stream.as_deref().unwrap_or("{instance_id}/stderr"),
                )?,
                format: EventFormat::with_config(
                    "logs.app",
                    &a.multiline_start,
                    &a.timestamp_format,
                )?,
            }),
        };
        let mut files = Vec::new();
        for (i, f) in cfg.files.iter().enumerate() {
            let prefix = format!("logs.files[{i}]");
            let key = |k: &str| format!("{prefix}.{k}");
            if !f.path.starts_with('/') {
                return Err(bad(
                    key("path"),
                    format!("{:?} is not an absolute path", f.path),
                ));
            }
            glob::Pattern::new(&f.path)
                .map_err(|e| bad(key("path"), format!("invalid glob: {e}")))?;
            check_log_glob(&key("path"), &f.path)?;
            let rotated = check_rotated(
                &key("rotated"),
                f.rotated.as_deref().unwrap_or(DEFAULT_ROTATED),
            )?;
            let log_group = NameTemplate::group(&key("log_group"), &f.log_group)?;
            let log_stream = NameTemplate::stream(&key("log_stream"), &f.log_stream)?;
            files.push(FileLogs {
                path: f.path.clone(),
                log_group,
                log_stream,
                retention_days: retention(&key("retention_days"), f.retention_days)?
                    .unwrap_or(retention_days),
                format: EventFormat::with_config(&prefix, &f.multiline_start, &f.timestamp_format)?,
                rotated,
            });
        }
        Ok(Self {
            state_dir,
            retention_days,
            poll_interval,
            spool_max_bytes,
            app,
            files,
        })
    }

    /// The sources of the instance `instance_id`: `{instance_id}` filled in.
    #[must_use]
    pub fn for_instance(&self, instance_id: &str) -> Sources {
        let app = self.app.as_ref().map(|a| {
            let group = a.log_group.for_instance(instance_id);
            let spec = |which: &str, stream: &NameTemplate| {
                let dir = self.state_dir.join("spool").join(which);
                SourceSpec {
                    name: format!("app-{which}"),
                    pattern: SpoolWriter::pattern(&dir),
                    spool: true,
                    group: group.clone(),
                    stream: stream.for_instance(instance_id),
                    retention_days: Some(self.retention_days),
                    multiline_start: a.format.multiline_start.clone(),
                    timestamp_format: a.format.timestamp_format.clone(),
                    poll: self.poll_interval,
                    rotated: None,
                }
            };
            (
                spec("stdout", &a.stdout_stream),
                spec("stderr", &a.stderr_stream),
            )
        });
        let files = self
            .files
            .iter()
            .map(|f| {
                let group = f.log_group.for_instance(instance_id);
                let stream = f.log_stream.for_instance(instance_id);
                // The checkpoint file name: stable for the same glob and destination.
                let name = format!(
                    "file-{:016x}",
                    crate::fnv::fnv1a(format!("{}\n{group}\n{stream}", f.path).as_bytes())
                );
                SourceSpec {
                    name,
                    pattern: f.path.clone(),
                    spool: false,
                    group,
                    stream,
                    retention_days: Some(f.retention_days),
                    multiline_start: f.format.multiline_start.clone(),
                    timestamp_format: f.format.timestamp_format.clone(),
                    poll: self.poll_interval,
                    rotated: f.rotated.clone(),
                }
            })
            .collect();
        Sources { app, files }
    }
}

impl EventFormat {
    /// `{prefix}.multiline_start` (a regex) and `{prefix}.timestamp_format` (strftime).
    fn with_config(
        prefix: &str,
        multiline_start: &Option<String>,
        timestamp_format: &Option<String>,
    ) -> Result<Self, LogsConfigError> {
        let multiline_start = multiline_start
            .as_deref()
            .map(|r| {
                regex_lite::Regex::new(r).map_err(|e| {
                    bad(
                        format!("{prefix}.multiline_start"),
                        format!("invalid regex: {e}"),
                    )
                })
            })
            .transpose()?;
        if let Some(f) = timestamp_format {
            let items: Vec<_> = chrono::format::StrftimeItems::new(f).collect();
            if items.is_empty()
                || items
                    .iter()
                    .any(|i| matches!(i, chrono::format::Item::Error))
            {
                return Err(bad(
                    format!("{prefix}.timestamp_format"),
                    format!("{f:?} is not a strftime format"),
                ));
            }
        }
        Ok(Self {
            multiline_start,
            timestamp_format: timestamp_format.clone(),
        })
    }
}

/// A retention CloudWatch Logs accepts.
fn retention(key: &str, v: Option<u32>) -> Result<Option<u32>, LogsConfigError> {
    match v {
        Some(d) if !RETENTION_DAYS.contains(&d) => Err(bad(
            key,
            format!("{d} is not a retention CloudWatch Logs accepts ({RETENTION_DAYS:?})"),
        )),
        v => Ok(v),
    }
}

/// Checks a `rotated` pattern; `""` is off.
fn check_rotated(key: &str, r: &str) -> Result<Option<String>, LogsConfigError> {
    if r.is_empty() {
        return Ok(None);
    }
    let ok = r.contains("{path}")
        && !r.replace("{path}", "").contains(['{', '}'])
        && r != "{path}"
        && (r.starts_with("{path}") || r.starts_with('/'));
    if !ok {
        return Err(bad(
            key,
            format!("{r:?}: must start with {{path}} (the file's path, e.g. \"{{path}}.1\") or be an absolute path containing it, with no other {{…}}"),
        ));
    }
    Ok(Some(r.to_owned()))
}

/// Refuses globs that reach into /proc or /sys: their files report size 0 and change with every
/// read, so a log shipper can only ship them again and again. `..` is refused too, since it
/// could lead there.
fn check_log_glob(key: &str, pattern: &str) -> Result<(), LogsConfigError> {
    if pattern.split('/').any(|c| c == "..") {
        return Err(bad(
            key,
            format!("{pattern:?}: '..' is not allowed in a log glob"),
        ));
    }
    let first = pattern
        .split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or("");
    let reaches = |dir: &str| glob::Pattern::new(first).is_ok_and(|p| p.matches(dir));
    if let Some(dir) = ["proc", "sys"].into_iter().find(|d| reaches(d)) {
        return Err(bad(
            key,
            format!("{pattern:?} reaches into /{dir}: its files are not logs (they report size 0 and change on every read)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn cfg(text: &str) -> Result<LogsConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn settings(text: &str) -> Result<LogsSettings, LogsConfigError> {
        LogsSettings::with_config(&cfg(text).unwrap())
    }

    #[test]
    fn test_unknown_key_is_named() {
        let e = cfg("state_dri = \"/x\"").unwrap_err();
        assert!(e.contains("state_dri"), "{e}");
    }

    #[test]
    fn test_validate_names_keys() {
        let e = settings(
            "[[files]]\npath = \"/var/log/*.log\"\nlog_group = \"g\"\nlog_stream = \"{host}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("logs.files[0].log_stream:"), "{e}");
        let e = settings("[app]\nlog_group = \"g\"\nmultiline_start = \"(\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("logs.app.multiline_start: invalid regex"),
            "{e}"
        );
        assert!(settings("retention_days = 8")
            .unwrap_err()
            .to_string()
            .starts_with("logs.retention_days:"));
        assert!(settings(
            "[[files]]\npath = \"rel/*.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n"
        )
        .unwrap_err()
        .to_string()
        .starts_with("logs.files[0].path:"));
    }

    #[test]
    fn test_poll_interval_is_a_duration_of_the_one_parser() {
        let e = settings("poll_interval = \"5x\"").unwrap_err().to_string();
        assert!(
            e.starts_with("logs.poll_interval: \"5x\" is not a duration (examples:"),
            "{e}"
        );
        assert_eq!(
            settings("poll_interval = \"50ms\"").unwrap().poll_interval,
            Duration::from_millis(50)
        );
        let e = settings("poll_interval = \"0s\"").unwrap_err().to_string();
        assert!(e.contains("between 1ms and 60s"), "{e}");
    }

    #[test]
    fn test_names_are_checked_for_any_instance_id() {
        // 493 characters and one {instance_id}: 512 with the longest instance id.
        let fits = format!("{}{{instance_id}}", "a".repeat(493));
        let one_more = format!("{}{{instance_id}}", "a".repeat(494));
        let file = |stream: &str| {
            settings(&format!(
                "[[files]]\npath = \"/var/log/a.log\"\nlog_group = \"g\"\nlog_stream = \"{stream}\"\n"
            ))
        };
        let s = file(&fits).unwrap();
        let spec = &s.for_instance("i-0123456789abcdef0").files[0];
        assert_eq!(spec.stream.len(), 512);
        let e = file(&one_more).unwrap_err().to_string();
        assert!(
            e.starts_with("logs.files[0].log_stream:") && e.contains("not a valid log stream"),
            "{e}"
        );
        let e = settings("[app]\nlog_group = \"/bake/{instance_id}:x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("logs.app.log_group:"), "{e}");
        let e = settings("[app]\nlog_group = \"/bake/a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not allowed in a log group name"), "{e}");
    }

    #[test]
    fn test_proc_and_sys_globs_are_refused() {
        let file = |path: &str| {
            settings(&format!(
                "[[files]]\npath = \"{path}\"\nlog_group = \"g\"\nlog_stream = \"s\"\n"
            ))
        };
        for path in [
            "/proc/meminfo",
            "/proc/*/status",
            "//proc/meminfo",
            "/./sys/kernel/*",
            "/sys/fs/cgroup/memory.stat",
            "/*/meminfo",
            "/pro?/meminfo",
            "/var/log/../../proc/meminfo",
        ] {
            let e = file(path).unwrap_err().to_string();
            assert!(e.starts_with("logs.files[0].path:"), "{path}: {e}");
        }
        let e = file("/proc/meminfo").unwrap_err().to_string();
        assert!(e.contains("/proc"), "{e}");
        assert!(file("/var/log/app/*.log").is_ok());
        assert!(file("/var/log/process.log").is_ok());
    }

    #[test]
    fn test_rotated_pattern() {
        let file = |extra: &str| {
            settings(&format!(
                "[[files]]\npath = \"/var/log/a.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n{extra}"
            ))
        };
        let r = file("").unwrap().for_instance("i-1");
        assert_eq!(
            r.files[0].rotated_path(Path::new("/var/log/a.log")),
            Some(PathBuf::from("/var/log/a.log.1"))
        );
        let r = file("rotated = \"\"").unwrap().for_instance("i-1");
        assert_eq!(r.files[0].rotated_path(Path::new("/var/log/a.log")), None);
        assert!(file("rotated = \"/old/{path}.0\"").is_ok());
        for bad in ["x.1", "{path}", "{path}.{n}", "rel/{path}"] {
            let e = file(&format!("rotated = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("logs.files[0].rotated:"), "{bad}: {e}");
        }
    }

    #[test]
    fn test_templates_instance_id() {
        let r = settings("[app]\nlog_group = \"/bake/app\"\n")
            .unwrap()
            .for_instance("i-1");
        let (out, err) = r.app.unwrap();
        assert_eq!(out.stream, "i-1/stdout");
        assert_eq!(err.stream, "i-1/stderr");
        assert_eq!(out.retention_days, Some(DEFAULT_RETENTION_DAYS));
    }
}
