//! Log shipping: the app's stdout/stderr and configured files to CloudWatch Logs, at least once.
//!
//! # Wiring it into the agent (for `run`'s boot sequence)
//! ```ignore
//! // agent.toml has a `[logs]` table deserialized as `logs::LogsConfig` (deny_unknown_fields);
//! // `bake-agent check` calls `cfg.logs.validate()?` (errors name the key, e.g.
//! // `logs.files[0].multiline_start: …`).
//! let (app_output, shipper) = logs::Shipper::start(aws.logs.clone(), &cfg.logs, &identity.instance_id)?;
//! // Hand `app_output` (cheap to clone) to the supervisor: it calls
//! // `app_output.attach(child.stdout.take(), child.stderr.take())` for every process it starts.
//! let restarts = Arc::new(AtomicU64::new(0)); // the supervisor increments it on every restart
//! let metrics = metrics::start(aws.cw.clone(), &cfg.metrics, &instance_id, asg_name.as_deref(),
//!                              restarts.clone(), Some(shipper.stats()));
//! // Draining / SIGTERM, after the app stopped: wait for its pipes' ends, then ship the rest.
//! app_output.drained(Duration::from_secs(2)).await;
//! shipper.shutdown(Duration::from_secs(10)).await; // sends what was read, within the deadline
//! metrics.shutdown().await;
//! // Before completing the terminate lifecycle hook while the app keeps running:
//! shipper.flush(Duration::from_secs(5)).await;
//! ```
//! The shipper needs a Tokio runtime (current-thread is fine): senders are tasks; each source
//! also gets one plain thread that reads its files, so file I/O never blocks the runtime.
//!
//! Layout: [`tail`] reads files into batches, [`batch`] keeps every PutLogEvents limit,
//! [`ship`] sends and retries, [`checkpoint`] remembers what was acknowledged, [`spool`] puts
//! stdout/stderr on disk first. See docs/logs.md.

pub mod batch;
pub mod checkpoint;
pub mod ship;
pub mod spool;
pub mod tail;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use self::checkpoint::Checkpoints;
use self::spool::SpoolWriter;
use self::tail::{Control, Tailer};

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
/// Retention values CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

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

/// Default [`FileLogsConfig::rotated`]: logrotate's first rotated name.
pub const DEFAULT_ROTATED: &str = "{path}.1";

/// A configuration value that cannot work, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A bad value.
    #[error("{key}: {message}")]
    Config {
        /// Key path, e.g. `logs.files[0].path`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The state directory or a checkpoint cannot be used.
    #[error("log state: {0}")]
    State(String),
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> LogsError {
    LogsError::Config {
        key: key.into(),
        message: message.into(),
    }
}

/// Replaces `{instance_id}`; any other `{…}` is an error.
fn template(key: &str, value: &str, instance_id: &str) -> Result<String, LogsError> {
    let out = value.replace("{instance_id}", instance_id);
    if out.contains('{') || out.contains('}') {
        return Err(bad(
            key,
            format!("{value:?}: only {{instance_id}} can be templated"),
        ));
    }
    if out.is_empty() || out.len() > 512 || out.contains(':') || out.contains('*') {
        return Err(bad(
            key,
            format!("{value:?} is not a valid log stream or group name"),
        ));
    }
    Ok(out)
}

/// [`template`], then CloudWatch Logs' rule for group names: 1 to 512 of `A-Za-z0-9._-/#`.
fn group_name(key: &str, value: &str, instance_id: &str) -> Result<String, LogsError> {
    let out = template(key, value, instance_id)?;
    if let Some(c) = out
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/#".contains(*c)))
    {
        return Err(bad(
            key,
            format!("{value:?}: {c:?} is not allowed in a log group name (A-Za-z0-9._-/#)"),
        ));
    }
    Ok(out)
}

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
    /// Rotated-copy name pattern (`{path}`), see [`FileLogsConfig::rotated`].
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

/// Checks a `rotated` pattern; `""` is off.
fn check_rotated(key: &str, r: &str) -> Result<Option<String>, LogsError> {
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
fn check_log_glob(key: &str, pattern: &str) -> Result<(), LogsError> {
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

struct Resolved {
    state_dir: PathBuf,
    spool_max_bytes: u64,
    app: Option<(SourceSpec, SourceSpec)>,
    files: Vec<SourceSpec>,
}

impl LogsConfig {
    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`LogsError::Config`] with the key path.
    pub fn validate(&self) -> Result<(), LogsError> {
        self.resolve("i-0123456789abcdef0").map(|_| ())
    }

    fn resolve(&self, instance_id: &str) -> Result<Resolved, LogsError> {
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(bad(
                "logs.state_dir",
                format!("{:?} is not an absolute path", state_dir.display()),
            ));
        }
        let retention = |key: &str, v: Option<u32>| match v {
            Some(d) if !RETENTION_DAYS.contains(&d) => Err(bad(
                key,
                format!("{d} is not a retention CloudWatch Logs accepts ({RETENTION_DAYS:?})"),
            )),
            v => Ok(v),
        };
        let default_retention =
            retention("logs.retention_days", self.retention_days)?.or(Some(DEFAULT_RETENTION_DAYS));
        let poll = match &self.poll_interval {
            None => DEFAULT_POLL,
            Some(s) => humantime::parse_duration(s).map_err(|e| {
                bad(
                    "logs.poll_interval",
                    format!("{s:?} is not a duration: {e}"),
                )
            })?,
        };
        if poll.is_zero() || poll > Duration::from_secs(60) {
            return Err(bad("logs.poll_interval", "must be between 1ms and 60s"));
        }
        let spool_mib = self.spool_max_mib.unwrap_or(DEFAULT_SPOOL_MAX_MIB);
        let spool_max_bytes = spool_mib
            .checked_mul(1024 * 1024)
            .filter(|_| (1..=MAX_SPOOL_MAX_MIB).contains(&spool_mib))
            .ok_or_else(|| {
                bad(
                    "logs.spool_max_mib",
                    format!("{spool_mib} is not in 1..={MAX_SPOOL_MAX_MIB} (MiB)"),
                )
            })?;
        let regex = |key: String, v: &Option<String>| {
            v.as_deref()
                .map(|r| {
                    regex_lite::Regex::new(r).map_err(|e| bad(key, format!("invalid regex: {e}")))
                })
                .transpose()
        };
        let ts_format = |key: String, v: &Option<String>| {
            if let Some(f) = v {
                let items: Vec<_> = chrono::format::StrftimeItems::new(f).collect();
                if items
                    .iter()
                    .any(|i| matches!(i, chrono::format::Item::Error))
                    || items.is_empty()
                {
                    return Err(bad(key, format!("{f:?} is not a strftime format")));
                }
            }
            Ok(v.clone())
        };
        let app = match &self.app {
            None => None,
            Some(a) => {
                let group = group_name("logs.app.log_group", &a.log_group, instance_id)?;
                let ml = regex("logs.app.multiline_start".into(), &a.multiline_start)?;
                let tf = ts_format("logs.app.timestamp_format".into(), &a.timestamp_format)?;
                let mut pair = Vec::new();
                for (which, stream, default) in [
                    ("stdout", &a.stdout_stream, "{instance_id}/stdout"),
                    ("stderr", &a.stderr_stream, "{instance_id}/stderr"),
                ] {
                    let key = format!("logs.app.{which}_stream");
                    let stream = template(&key, stream.as_deref().unwrap_or(default), instance_id)?;
                    let dir = state_dir.join("spool").join(which);
                    pair.push(SourceSpec {
                        name: format!("app-{which}"),
                        pattern: SpoolWriter::pattern(&dir),
                        spool: true,
                        group: group.clone(),
                        stream,
                        retention_days: default_retention,
                        multiline_start: ml.clone(),
                        timestamp_format: tf.clone(),
                        poll,
                        rotated: None,
                    });
                }
                let err = pair.pop().expect("two");
                let out = pair.pop().expect("two");
                Some((out, err))
            }
        };
        let mut files = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let key = |k: &str| format!("logs.files[{i}].{k}");
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
            let group = group_name(&key("log_group"), &f.log_group, instance_id)?;
            let stream = template(&key("log_stream"), &f.log_stream, instance_id)?;
            // The checkpoint file name: stable for the same glob and destination.
            let name = format!(
                "file-{:016x}",
                fnv1a(format!("{}\n{group}\n{stream}", f.path).as_bytes())
            );
            files.push(SourceSpec {
                name,
                pattern: f.path.clone(),
                spool: false,
                group,
                stream,
                retention_days: retention(&key("retention_days"), f.retention_days)?
                    .or(default_retention),
                multiline_start: regex(key("multiline_start"), &f.multiline_start)?,
                timestamp_format: ts_format(key("timestamp_format"), &f.timestamp_format)?,
                poll,
                rotated,
            });
        }
        Ok(Resolved {
            state_dir,
            spool_max_bytes,
            app,
            files,
        })
    }
}

/// 64-bit FNV-1a: a stable name for a source's checkpoint and a file's head fingerprint (not
/// security relevant).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

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

/// Starts log shipping.
#[derive(Debug)]
pub struct Shipper;

struct Running {
    control: Arc<Control>,
    thread: std::thread::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
    acked: watch::Receiver<u64>,
}

/// Controls running log shipping: flush, shutdown, stats.
pub struct ShipperHandle {
    sources: Vec<Running>,
    stats: Arc<LogStats>,
    next_gen: AtomicU64,
}

impl std::fmt::Debug for ShipperHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperHandle")
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Validates `cfg`, creates the state directory, and starts one reader thread and one sender
    /// task per source (the app's stdout, its stderr, each `[[logs.files]]`). Must be called
    /// within a Tokio runtime. Returns the seam for the supervisor and the handle.
    ///
    /// # Errors
    /// A bad config value (by key) or an unusable state directory or checkpoint.
    pub fn start(
        client: aws_sdk_cloudwatchlogs::Client,
        cfg: &LogsConfig,
        instance_id: &str,
    ) -> Result<(AppOutput, ShipperHandle), LogsError> {
        let resolved = cfg.resolve(instance_id)?;
        let stats = Arc::new(LogStats::default());
        let state =
            |e: std::io::Error, p: &Path| LogsError::State(format!("'{}': {e}", p.display()));
        let cp_dir = resolved.state_dir.join("checkpoints");
        std::fs::create_dir_all(&cp_dir).map_err(|e| state(e, &cp_dir))?;
        let mut specs = Vec::new();
        let mut app = AppOutput::passthrough();
        if let Some((out, err)) = resolved.app {
            let open = |spec: &SourceSpec| {
                let dir = resolved
                    .state_dir
                    .join("spool")
                    .join(spec.name.trim_start_matches("app-"));
                SpoolWriter::open(&dir, resolved.spool_max_bytes, stats.clone())
                    .map_err(|e| state(e, &dir))
            };
            app = AppOutput {
                spools: Some(Arc::new(Spools {
                    stdout: Mutex::new(open(&out)?),
                    stderr: Mutex::new(open(&err)?),
                })),
                ..AppOutput::default()
            };
            specs.push(out);
            specs.push(err);
        }
        specs.extend(resolved.files);
        let mut sources = Vec::new();
        for spec in specs {
            let spec = Arc::new(spec);
            let cp_path = cp_dir.join(format!("{}.json", spec.name));
            let checkpoints =
                Checkpoints::load(&cp_path).map_err(|e| LogsError::State(e.to_string()))?;
            let start: HashMap<_, _> = checkpoints.files().into_iter().collect();
            // Capacity 1, and the reader owns two batches (tail::BATCHES_PER_SOURCE): one filled
            // while the other is in flight, ~2.5 MiB per source at most.
            let (tx, rx) = mpsc::channel(1);
            let (acked_tx, acked) = watch::channel(0);
            let control = Arc::new(Control::default());
            let tailer = Tailer::new(spec.clone(), start, tx, stats.clone(), control.clone());
            let thread = std::thread::Builder::new()
                .name(format!("logs-{}", spec.name))
                .spawn(move || tailer.run())
                .map_err(|e| LogsError::State(format!("starting a reader thread: {e}")))?;
            let sender = tokio::spawn(ship::run(
                client.clone(),
                spec.clone(),
                rx,
                checkpoints,
                stats.clone(),
                acked_tx,
            ));
            tracing::info!(source = %spec.name, pattern = %spec.pattern, group = %spec.group, stream = %spec.stream, "shipping logs");
            sources.push(Running {
                control,
                thread,
                sender,
                acked,
            });
        }
        Ok((
            app,
            ShipperHandle {
                sources,
                stats,
                next_gen: AtomicU64::new(1),
            },
        ))
    }
}

impl ShipperHandle {
    /// The shipping counters (for metrics).
    #[must_use]
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// Sends everything read so far (multiline events included) and waits until CloudWatch
    /// acknowledged it, at most `deadline`. Returns whether everything was acknowledged.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let gen = self.next_gen.fetch_add(1, Ordering::AcqRel);
        for s in &self.sources {
            s.control.flush_gen.fetch_max(gen, Ordering::AcqRel);
        }
        let wait = async {
            for s in &self.sources {
                let mut rx = s.acked.clone();
                if rx.wait_for(|g| *g >= gen).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(deadline, wait).await.unwrap_or(false)
    }

    /// Reads what is left, sends it, writes the checkpoints and stops, within `deadline`.
    /// Call it after the app stopped. Whatever is not acknowledged by then is sent again by the
    /// next agent (at-least-once). Returns whether everything was acknowledged in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        for s in &self.sources {
            s.control.stop.store(true, Ordering::Release);
        }
        let all = async {
            for s in self.sources {
                let _ = s.sender.await;
                let _ = tokio::task::spawn_blocking(move || s.thread.join()).await;
            }
        };
        let done = tokio::time::timeout(deadline, all).await.is_ok();
        if !done {
            tracing::warn!(
                deadline_ms = deadline.as_millis(),
                "log shipping did not finish before the deadline; the rest is sent after restart"
            );
        }
        done
    }
}

#[derive(Debug)]
struct Spools {
    stdout: Mutex<SpoolWriter>,
    stderr: Mutex<SpoolWriter>,
}

/// Where the supervisor hands the app's stdout and stderr. Cheap to clone.
///
/// The supervisor calls [`AppOutput::attach`] with the pipes of every process it starts;
/// reading happens in background tasks, so a restart never waits on log shipping.
#[derive(Clone, Debug)]
pub struct AppOutput {
    spools: Option<Arc<Spools>>,
    /// Attached pipes that have not reached their end yet.
    open: Arc<watch::Sender<usize>>,
}

impl Default for AppOutput {
    fn default() -> Self {
        Self {
            spools: None,
            open: Arc::new(watch::channel(0).0),
        }
    }
}

/// Counts an attached pipe as open until dropped (at its end, or if its task dies).
struct OpenPipe(Arc<watch::Sender<usize>>);

impl OpenPipe {
    fn new(open: &Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open.clone())
    }
}

impl Drop for OpenPipe {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl AppOutput {
    /// Copies the app's lines to the agent's own stderr (journald), with no shipping.
    #[must_use]
    pub fn passthrough() -> Self {
        Self::default()
    }

    /// Waits until every attached pipe reached its end and what came through it is in the
    /// spool (or on the agent's stderr), at most `deadline`. Call it after the app stopped and
    /// before [`ShipperHandle::shutdown`], so the app's last lines are shipped too. Returns
    /// false when a pipe is still open at the deadline (a process that inherited the app's
    /// stdout outlives it).
    pub async fn drained(&self, deadline: Duration) -> bool {
        let mut rx = self.open.subscribe();
        let all_closed = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok());
        all_closed
    }

    /// Takes a started process's pipes and consumes them in the background: into the spool
    /// when shipping, else to the agent's stderr.
    pub fn attach<O, E>(&self, stdout: Option<O>, stderr: Option<E>)
    where
        O: tokio::io::AsyncRead + Unpin + Send + 'static,
        E: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let stdout = stdout.map(|p| (p, OpenPipe::new(&self.open)));
        let stderr = stderr.map(|p| (p, OpenPipe::new(&self.open)));
        match &self.spools {
            Some(spools) => {
                if let Some((out, open)) = stdout {
                    let spools = spools.clone();
                    tokio::spawn(drain(out, open, move |chunk| {
                        let mut w = spools
                            .stdout
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        match chunk {
                            Some(c) => w.write(c),
                            None => w.end_of_stream(),
                        }
                    }));
                }
                if let Some((err, open)) = stderr {
                    let spools = spools.clone();
                    tokio::spawn(drain(err, open, move |chunk| {
                        let mut w = spools
                            .stderr
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        match chunk {
                            Some(c) => w.write(c),
                            None => w.end_of_stream(),
                        }
                    }));
                }
            }
            None => {
                if let Some((out, open)) = stdout {
                    tokio::spawn(drain(out, open, |chunk| passthrough_write("app", chunk)));
                }
                if let Some((err, open)) = stderr {
                    tokio::spawn(drain(err, open, |chunk| {
                        passthrough_write("app[stderr]", chunk);
                    }));
                }
            }
        }
    }
}

fn passthrough_write(prefix: &str, chunk: Option<&[u8]>) {
    if let Some(c) = chunk {
        for line in String::from_utf8_lossy(c).lines() {
            eprintln!("{prefix}: {line}");
        }
    }
}

/// Reads a pipe in chunks until EOF, then calls `sink(None)` and drops `open`.
async fn drain<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    open: OpenPipe,
    mut sink: impl FnMut(Option<&[u8]>),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink(Some(&buf[..n])),
        }
    }
    sink(None);
    drop(open);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<LogsConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn test_unknown_key_is_named() {
        let e = cfg("state_dri = \"/x\"").unwrap_err();
        assert!(e.contains("state_dri"), "{e}");
    }

    #[test]
    fn test_validate_names_keys() {
        let c = cfg(
            "[[files]]\npath = \"/var/log/*.log\"\nlog_group = \"g\"\nlog_stream = \"{host}\"\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("logs.files[0].log_stream:"), "{e}");
        let c = cfg("[app]\nlog_group = \"g\"\nmultiline_start = \"(\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("logs.app.multiline_start: invalid regex"),
            "{e}"
        );
        let c = cfg("retention_days = 8").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("logs.retention_days:"));
        let c = cfg("[[files]]\npath = \"rel/*.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n")
            .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("logs.files[0].path:"));
    }

    #[test]
    fn test_proc_and_sys_globs_are_refused() {
        let file = |path: &str| {
            cfg(&format!(
                "[[files]]\npath = \"{path}\"\nlog_group = \"g\"\nlog_stream = \"s\"\n"
            ))
            .unwrap()
            .validate()
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
            cfg(&format!(
                "[[files]]\npath = \"/var/log/a.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n{extra}"
            ))
            .unwrap()
        };
        let r = file("").resolve("i-1").unwrap();
        assert_eq!(
            r.files[0].rotated_path(Path::new("/var/log/a.log")),
            Some(PathBuf::from("/var/log/a.log.1"))
        );
        let r = file("rotated = \"\"").resolve("i-1").unwrap();
        assert_eq!(r.files[0].rotated_path(Path::new("/var/log/a.log")), None);
        assert!(file("rotated = \"/old/{path}.0\"").validate().is_ok());
        for bad in ["x.1", "{path}", "{path}.{n}", "rel/{path}"] {
            let e = file(&format!("rotated = \"{bad}\""))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("logs.files[0].rotated:"), "{bad}: {e}");
        }
    }

    #[test]
    fn test_templates_instance_id() {
        let c = cfg("[app]\nlog_group = \"/bake/app\"\n").unwrap();
        let r = c.resolve("i-1").unwrap();
        let (out, err) = r.app.unwrap();
        assert_eq!(out.stream, "i-1/stdout");
        assert_eq!(err.stream, "i-1/stderr");
        assert_eq!(out.retention_days, Some(DEFAULT_RETENTION_DAYS));
    }
}
