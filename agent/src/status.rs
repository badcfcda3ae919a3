//! What the agent says about itself: one short status line for systemd (`STATUS=` through
//! sd_notify, shown by `systemctl status bake-agent`), e.g.
//! `app running (pid 812), 2 restarts, logs 120 ms behind`.
//!
//! The supervisor and the daemon record state changes in a [`Status`]; [`publish`] sends the
//! line at once after a change of state and otherwise at most once a second (when only the
//! log shipping lag moved), and never the same line twice in a row.
//!
//! The same state, with more detail (lifecycle, last error, log shipping per source: group and
//! stream, backlog, lag, last put, last error), goes to a JSON state file (default `/run/bake/status.json`, mode 0640, group the app's group, replaced
//! atomically by a rename) that `bake-agent status` reads; the daemon removes it when it stops.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::exit::Exit;
use crate::logs::stats::SourceSnapshot;
use crate::logs::LogStats;
use crate::notify;

/// The app as the supervisor last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum App {
    /// Not started yet.
    #[default]
    Starting,
    /// Running as `pid`.
    Running {
        /// The app's main process.
        pid: u32,
    },
    /// Exited; started again after `restart_in`.
    Exited {
        /// How the app ended (`exit code 3`, `signal 9`).
        how: String,
        /// The backoff before the next start.
        restart_in: Duration,
    },
    /// Being stopped (SIGTERM to the agent, termination, or a restart on request).
    Stopping,
    /// Stopped for good.
    Stopped,
}

/// Whether the app answered its readiness probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Readiness {
    /// Probing (or the app is not started yet).
    #[default]
    Waiting,
    /// Ready (also when no probe is configured).
    Ready,
    /// The probe's timeout passed.
    NeverReady,
}

/// The agent's state as the status line shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The app.
    pub app: App,
    /// Restarts since the agent started.
    pub restarts: u64,
    /// Readiness.
    pub readiness: Readiness,
    /// Draining for a termination (instance terminating, spot interruption).
    pub draining: bool,
    /// Where the instance's lifecycle stands, as the agent last saw it (e.g. `launch hook
    /// completed (CONTINUE)`).
    pub lifecycle: Option<String>,
    /// The last error the agent logged about the app or the instance.
    pub last_error: Option<String>,
}

/// Shared status: written by the supervisor (its own thread) and the daemon, read by
/// [`publish`].
#[derive(Debug, Default)]
pub struct Status {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    log_stats: OnceLock<Arc<LogStats>>,
    /// The line sent last.
    sent: Mutex<String>,
    /// The state file and the group that may read it.
    file: OnceLock<(PathBuf, Option<u32>)>,
    /// What the state file holds (without its time stamp).
    written: Mutex<serde_json::Value>,
}

impl Status {
    /// A fresh status (app starting).
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Changes the state; the line goes out at once if it changed.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut s);
        }
        self.changed.notify_one();
    }

    /// A copy of the state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Log shipping's counters, for the lag in the line.
    pub fn set_log_stats(&self, stats: Arc<LogStats>) {
        let _ = self.log_stats.set(stats);
    }

    /// How far log shipping is behind, in milliseconds ([`log_lag_ms`]); `None` without
    /// shipping, or before anything was read or acknowledged.
    #[must_use]
    pub fn log_lag_ms(&self) -> Option<u64> {
        let s = self.log_stats.get()?;
        log_lag_ms(s, &s.sources())
    }

    /// Sends `STATUS=<line>` unless that line was the last one sent; whether it sent.
    pub fn send_if_changed(&self) -> bool {
        let now = self.line();
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *sent == now {
            return false;
        }
        notify::notify(&format!("STATUS={now}"));
        *sent = now;
        true
    }

    /// The status line now.
    #[must_use]
    pub fn line(&self) -> String {
        line(&self.state(), self.log_lag_ms())
    }

    /// Keeps the state file at `path`, readable by group `gid` (the app's group) too.
    pub fn set_file(&self, path: PathBuf, gid: Option<u32>) {
        let _ = self.file.set((path, gid));
    }

    /// The state file's document (without `updated_at`).
    #[must_use]
    pub fn report(&self) -> serde_json::Value {
        report(&self.state(), self.log_stats.get().map(AsRef::as_ref))
    }

    /// Writes the state file if its content changed. A failure is logged once per kind.
    pub fn write_if_changed(&self) {
        let Some((path, gid)) = self.file.get() else {
            return;
        };
        let now = self.report();
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written == now {
            return;
        }
        let mut doc = now.clone();
        doc["updated_at"] = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .into();
        match write_atomically(path, *gid, &doc) {
            Ok(()) => *written = now,
            Err(e) if written.is_null() => {
                // Logged once: the next attempts come with the next change.
                tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
                *written = serde_json::Value::Bool(false);
            }
            Err(_) => {}
        }
    }

    /// Removes the state file (the agent stops): no file means no agent.
    pub fn remove_file(&self) {
        if let Some((path, _)) = self.file.get() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The version of the state file's document; a change that could break a reader bumps it.
pub const SCHEMA_VERSION: u64 = 2;

/// How far log shipping is behind, in milliseconds: the larger of the last acknowledged
/// batch's time from reading to acknowledgement and the age of the oldest event read and not
/// acknowledged yet (which keeps growing while CloudWatch is unreachable). `None` before
/// anything was acknowledged or is waiting.
#[must_use]
pub fn log_lag_ms(stats: &LogStats, sources: &BTreeMap<String, SourceSnapshot>) -> Option<u64> {
    let last =
        (stats.requests.load(Ordering::Relaxed) > 0).then(|| stats.lag_ms.load(Ordering::Relaxed));
    let waiting = sources
        .values()
        .filter(|s| s.backlog_events > 0)
        .map(|s| s.lag_ms)
        .max();
    last.max(waiting)
}

/// A time in the state file: RFC 3339, milliseconds, UTC.
fn time_text(t: Option<std::time::SystemTime>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        humantime::format_rfc3339_millis(t).to_string().into()
    })
}

/// The state file's document for `state` (without `updated_at`).
#[must_use]
pub fn report(state: &State, logs: Option<&LogStats>) -> serde_json::Value {
    let sources = logs.map(LogStats::sources).unwrap_or_default();
    let lag = logs.and_then(|s| log_lag_ms(s, &sources));
    let (app, pid, exit, restart_in_ms) = match &state.app {
        App::Starting => ("starting", None, None, None),
        App::Running { pid } => ("running", Some(*pid), None, None),
        App::Exited { how, restart_in } => (
            "exited",
            None,
            Some(how.clone()),
            Some(u64::try_from(restart_in.as_millis()).unwrap_or(u64::MAX)),
        ),
        App::Stopping => ("stopping", None, None, None),
        App::Stopped => ("stopped", None, None, None),
    };
    let logs = logs.map(|s| {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "lag_ms": lag,
            "events_shipped": n(&s.events_shipped),
            "bytes_shipped": n(&s.bytes_shipped),
            "requests": n(&s.requests),
            "retries": n(&s.retries),
            "rejected_events": n(&s.rejected_events),
            "dropped_events": n(&s.dropped_events),
            "sources": sources.iter().map(|(name, v)| (name.clone(), serde_json::json!({
                "group": v.group,
                "stream": v.stream,
                "pattern": v.pattern,
                "backlog_events": v.backlog_events,
                "backlog_bytes": v.backlog_bytes,
                "unread_bytes": v.unread_bytes,
                "lag_ms": v.lag_ms,
                "last_batch_lag_ms": v.last_batch_lag_ms,
                "events_shipped": v.events_shipped,
                "bytes_shipped": v.bytes_shipped,
                "last_put_at": time_text(v.last_put),
                "last_error": v.last_error.as_ref().map(|(at, message)| serde_json::json!({
                    "at": time_text(Some(*at)),
                    "message": message,
                })),
            }))).collect::<serde_json::Map<_, _>>(),
        })
    });
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "agent_pid": std::process::id(),
        "line": line(state, lag),
        "app": { "state": app, "pid": pid, "exit": exit, "restart_in_ms": restart_in_ms },
        "restarts": state.restarts,
        "readiness": match state.readiness {
            Readiness::Waiting => "waiting",
            Readiness::Ready => "ready",
            Readiness::NeverReady => "never_ready",
        },
        "draining": state.draining,
        "lifecycle": state.lifecycle,
        "last_error": state.last_error,
        "logs": logs,
    })
}

/// Writes `doc` to `path` through a temporary file in the same directory (mode 0640, group
/// `gid`) renamed over it, so a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, gid: Option<u32>, doc: &serde_json::Value) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    // A leftover keeps its mode on open: start from a new file.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    if let Some(g) = gid {
        std::os::unix::fs::fchown(&f, None, Some(g))?;
    }
    // Exactly 0640, whatever the umask.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
    f.write_all(doc.to_string().as_bytes())?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The status line for `state` and the log shipping lag (`None`: no shipping, or nothing
/// acknowledged yet). One short line, parts joined with `, `.
#[must_use]
pub fn line(state: &State, log_lag_ms: Option<u64>) -> String {
    let mut parts = vec![match &state.app {
        App::Starting => "app starting".to_owned(),
        App::Running { pid } => format!("app running (pid {pid})"),
        App::Exited { how, restart_in } => format!(
            "app exited ({how}), restart in {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(restart_in.as_millis()).unwrap_or(u64::MAX)
            ))
        ),
        App::Stopping => "app stopping".to_owned(),
        App::Stopped => "app stopped".to_owned(),
    }];
    let live = !matches!(state.app, App::Stopping | App::Stopped);
    if live {
        match state.readiness {
            Readiness::Waiting => parts.push("not ready yet".to_owned()),
            Readiness::Ready => {}
            Readiness::NeverReady => parts.push("never became ready".to_owned()),
        }
    }
    if state.draining {
        parts.push("draining".to_owned());
    }
    match state.restarts {
        0 => {}
        1 => parts.push("1 restart".to_owned()),
        n => parts.push(format!("{n} restarts")),
    }
    if let Some(ms) = log_lag_ms {
        parts.push(format!("logs {ms} ms behind"));
    }
    parts.join(", ")
}

/// How an exit status reads in the line.
#[must_use]
pub fn exit_text(status: Option<&std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "ended".to_owned(),
        },
        None => "not started".to_owned(),
    }
}

/// Where `run` keeps the state file and `status` reads it (`--status-file`).
pub const DEFAULT_FILE: &str = "/run/bake/status.json";

/// `bake-agent status`: prints the state file at `path` (text or its JSON) and returns
/// [`Exit::Ok`], or says on stderr that the agent is not running and returns
/// [`Exit::NotRunning`] (no file, or the pid that wrote it is gone), or [`Exit::Internal`] for a
/// file that cannot be read or parsed.
#[must_use]
pub fn show(path: &Path, output: crate::cli::StatusOutput) -> Exit {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "bake-agent is not running: no status file at '{}' (systemctl status bake-agent)",
                path.display()
            );
            return Exit::NotRunning;
        }
        Err(e) => {
            eprintln!("error: cannot read '{}': {e}", path.display());
            return Exit::Internal;
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: '{}' is not a status document: {e}", path.display());
            return Exit::Internal;
        }
    };
    let pid = doc["agent_pid"].as_u64().unwrap_or(0);
    if !Path::new(&format!("/proc/{pid}")).exists() || pid == 0 {
        eprintln!(
            "bake-agent is not running: '{}' was written by pid {pid}, which is gone",
            path.display()
        );
        return Exit::NotRunning;
    }
    match output {
        crate::cli::StatusOutput::Json => crate::outln!("{}", text.trim_end()),
        crate::cli::StatusOutput::Text => crate::outln!("{}", render(&doc).trim_end()),
    }
    Exit::Ok
}

/// The state file's document as aligned lines.
#[must_use]
pub fn render(doc: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let app = &doc["app"];
    let app_text = match app["state"].as_str().unwrap_or("?") {
        "running" => format!("running (pid {})", s(&app["pid"])),
        "exited" => format!(
            "exited ({}), restart in {} ms",
            s(&app["exit"]),
            s(&app["restart_in_ms"])
        ),
        other => other.to_owned(),
    };
    let mut rows = vec![
        (
            "agent",
            format!(
                "running (pid {}), updated {}",
                s(&doc["agent_pid"]),
                s(&doc["updated_at"])
            ),
        ),
        ("app", app_text),
        ("restarts", s(&doc["restarts"])),
        ("readiness", s(&doc["readiness"]).replace('_', " ")),
        ("lifecycle", s(&doc["lifecycle"])),
    ];
    if doc["draining"].as_bool() == Some(true) {
        rows.push(("draining", "yes".to_owned()));
    }
    let logs = &doc["logs"];
    rows.push((
        "logs",
        if logs.is_null() {
            "not shipped ([logs] not configured)".to_owned()
        } else {
            format!(
                "{}, {} events shipped, {} retries, {} rejected, {} dropped",
                logs["lag_ms"].as_u64().map_or_else(
                    || "nothing acknowledged yet".to_owned(),
                    |ms| format!("{} behind", ms_text(ms))
                ),
                s(&logs["events_shipped"]),
                s(&logs["retries"]),
                s(&logs["rejected_events"]),
                s(&logs["dropped_events"]),
            )
        },
    ));
    if let Some(sources) = logs["sources"].as_object().filter(|m| !m.is_empty()) {
        rows.extend(source_table(sources).into_iter().map(|l| ("", l)));
    }
    rows.push(("last error", s(&doc["last_error"])));
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<11}{v}\n"));
    }
    out
}

/// The log sources as an aligned table (one line each, with a header), and under it one line
/// per source that had an error: what `bake-agent status` shows under `logs`.
fn source_table(sources: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut table: Vec<[String; 7]> = vec![[
        "SOURCE", "BACKLOG", "UNREAD", "LAG", "LAST PUT", "GROUP", "STREAM",
    ]
    .map(str::to_owned)];
    let mut errors = Vec::new();
    for (name, v) in sources {
        // The app's output by its name, a file source by its glob.
        let label = if name.starts_with("app-") {
            name.clone()
        } else {
            text(&v["pattern"])
        };
        let backlog = match n(&v["backlog_events"]) {
            0 => "0".to_owned(),
            1 => format!("1 event, {}", bytes_text(n(&v["backlog_bytes"]))),
            e => format!("{e} events, {}", bytes_text(n(&v["backlog_bytes"]))),
        };
        let last_put = v["last_put_at"]
            .as_str()
            .map_or_else(|| "-".to_owned(), seconds_only);
        if let Some(message) = v["last_error"]["message"].as_str() {
            let at = v["last_error"]["at"]
                .as_str()
                .map_or_else(String::new, seconds_only);
            // The JSON has all of it.
            let mut short: String = message.chars().take(ERROR_TEXT_CHARS).collect();
            if short.len() < message.len() {
                short.push('…');
            }
            errors.push(format!("{label}: last error {at}: {short}"));
        }
        table.push([
            label,
            backlog,
            bytes_text(n(&v["unread_bytes"])),
            ms_text(n(&v["lag_ms"])),
            last_put,
            text(&v["group"]),
            text(&v["stream"]),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out: Vec<String> = table
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&format!("{cell:<w$}"));
            }
            line.trim_end().to_owned()
        })
        .collect();
    out.extend(errors);
    out
}

/// The most of a source's last error the text shows.
const ERROR_TEXT_CHARS: usize = 200;

/// `2026-12-01T18:00:00.123Z` as `2026-12-01T18:00:00Z`.
fn seconds_only(t: &str) -> String {
    match (t.get(..19), t.ends_with('Z')) {
        (Some(s), true) => format!("{s}Z"),
        _ => t.to_owned(),
    }
}

/// A byte count for people: `0 B`, `512 B`, `1.5 KiB`, `3.0 MiB`.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is shown
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Milliseconds for people: `120 ms`, `5.2 s`, `3m 20s`.
fn ms_text(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// The least time between two lines when only the log shipping lag changed.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Sends `STATUS=<line>` through sd_notify at each change of state and, for lag changes, at
/// most every [`MIN_INTERVAL`]; never the same line twice in a row. Runs forever. It sends the
/// state it finds when it wakes: a state that lasted less than that (e.g. "stopping" of an app
/// that ends at once) may be replaced by the next one before it is sent.
pub async fn publish(status: Arc<Status>) {
    let mut tick = tokio::time::interval(MIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_send = tokio::time::Instant::now();
    loop {
        let changed = tokio::select! {
            () = status.changed.notified() => true,
            _ = tick.tick() => false,
        };
        // At most the counters moved: nothing within MIN_INTERVAL of the last line sent.
        if !changed && last_send.elapsed() < MIN_INTERVAL {
            continue;
        }
        if status.send_if_changed() {
            last_send = tokio::time::Instant::now();
        }
        status.write_if_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_status_line() {
        let mut s = State::default();
        assert_eq!(line(&s, None), "app starting, not ready yet");
        s.app = App::Running { pid: 812 };
        s.readiness = Readiness::Ready;
        assert_eq!(line(&s, None), "app running (pid 812)");
        s.restarts = 2;
        assert_eq!(
            line(&s, Some(120)),
            "app running (pid 812), 2 restarts, logs 120 ms behind"
        );
        s.restarts = 1;
        s.app = App::Exited {
            how: "exit code 3".to_owned(),
            restart_in: Duration::from_millis(1500),
        };
        assert_eq!(
            line(&s, None),
            "app exited (exit code 3), restart in 1s 500ms, 1 restart"
        );
        s.app = App::Stopping;
        s.draining = true;
        assert_eq!(line(&s, None), "app stopping, draining, 1 restart");
        s.app = App::Running { pid: 9 };
        s.draining = false;
        s.readiness = Readiness::NeverReady;
        assert_eq!(
            line(&s, None),
            "app running (pid 9), never became ready, 1 restart"
        );
    }

    /// A source `name` of glob `pattern` to `/bake/prod/app` / `stream`.
    fn spec(name: &str, pattern: &str, stream: &str) -> crate::logs::SourceSpec {
        crate::logs::SourceSpec {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            spool: false,
            group: "/bake/prod/app".to_owned(),
            stream: stream.to_owned(),
            retention_days: None,
            multiline_start: None,
            timestamp_format: None,
            poll: Duration::from_millis(100),
            rotated: None,
        }
    }

    #[test]
    fn test_report_and_render() {
        use std::time::Instant;
        let state = State {
            app: App::Running { pid: 812 },
            restarts: 2,
            readiness: Readiness::Ready,
            lifecycle: Some("launch hook completed (CONTINUE)".to_owned()),
            ..State::default()
        };
        let stats = LogStats::default();
        stats.requests.store(3, Ordering::Relaxed);
        stats.lag_ms.store(120, Ordering::Relaxed);
        stats.events_shipped.store(40, Ordering::Relaxed);
        // Shipped and caught up.
        let out = stats.source(&spec(
            "app-stdout",
            "/var/lib/bake/logs/spool/stdout/*.log",
            "i-0abc/stdout",
        ));
        out.handed_over(Some(Instant::now()), 40, 2000);
        out.acknowledged(Some(120), true);
        // Waiting: 3 events read 5 s ago, 60 bytes of its file not read yet, an error.
        let files = stats.source(&spec("file-00ab", "/var/log/app/*.log", "i-0abc/files"));
        let five_s_ago = Instant::now().checked_sub(Duration::from_secs(5)).unwrap();
        files.handed_over(Some(five_s_ago), 3, 1500);
        let mut log = tempfile::tempfile().unwrap();
        log.write_all(&[b'x'; 100]).unwrap();
        files.set_files(std::iter::once((
            Arc::new(log),
            Arc::new(std::sync::atomic::AtomicU64::new(40)),
        )));
        files.failed("PutLogEvents: dispatch failure:\nconnection refused");

        let mut doc = report(&state, Some(&stats));
        assert_eq!(doc["schema_version"], 2);
        assert_eq!(doc["app"]["pid"], 812);
        // The oldest waiting event sets the lag, in the line too.
        let lag = doc["logs"]["lag_ms"].as_u64().unwrap();
        assert!((5000..60_000).contains(&lag), "{doc}");
        assert_eq!(
            doc["line"],
            format!("app running (pid 812), 2 restarts, logs {lag} ms behind")
        );
        let src = &doc["logs"]["sources"];
        assert_eq!(src["app-stdout"]["backlog_events"], 0, "{doc}");
        assert_eq!(src["app-stdout"]["lag_ms"], 0, "{doc}");
        assert_eq!(src["app-stdout"]["last_batch_lag_ms"], 120, "{doc}");
        assert_eq!(src["app-stdout"]["events_shipped"], 40, "{doc}");
        assert_eq!(src["app-stdout"]["stream"], "i-0abc/stdout", "{doc}");
        assert!(src["app-stdout"]["last_put_at"].is_string(), "{doc}");
        assert!(src["app-stdout"]["last_error"].is_null(), "{doc}");
        let f = &src["file-00ab"];
        assert_eq!(f["pattern"], "/var/log/app/*.log", "{doc}");
        assert_eq!(f["group"], "/bake/prod/app", "{doc}");
        assert_eq!(f["backlog_events"], 3, "{doc}");
        assert_eq!(f["backlog_bytes"], 1500, "{doc}");
        assert_eq!(f["unread_bytes"], 60, "{doc}");
        assert_eq!(f["lag_ms"], lag, "{doc}");
        assert!(f["last_put_at"].is_null(), "{doc}");
        assert!(f["last_batch_lag_ms"].is_null(), "{doc}");
        assert_eq!(
            f["last_error"]["message"], "PutLogEvents: dispatch failure: connection refused",
            "{doc}"
        );

        // Fixed times for the text.
        doc["updated_at"] = "2026-12-01T18:00:00.000Z".into();
        doc["logs"]["lag_ms"] = 5200.into();
        doc["logs"]["sources"]["file-00ab"]["lag_ms"] = 5200.into();
        doc["logs"]["sources"]["app-stdout"]["last_put_at"] = "2026-12-01T17:59:59.950Z".into();
        doc["logs"]["sources"]["file-00ab"]["last_error"]["at"] = "2026-12-01T17:59:58.000Z".into();
        let text = render(&doc);
        let want = format!(
            "agent      running (pid {}), updated 2026-12-01T18:00:00.000Z\n\
             app        running (pid 812)\n\
             restarts   2\n\
             readiness  ready\n\
             lifecycle  launch hook completed (CONTINUE)\n\
             logs       5.2 s behind, 40 events shipped, 0 retries, 0 rejected, 0 dropped\n\
             {i}SOURCE              BACKLOG            UNREAD  LAG    LAST PUT              GROUP           STREAM\n\
             {i}app-stdout          0                  0 B     0 ms   2026-12-01T17:59:59Z  /bake/prod/app  i-0abc/stdout\n\
             {i}/var/log/app/*.log  3 events, 1.5 KiB  60 B    5.2 s  -                     /bake/prod/app  i-0abc/files\n\
             {i}/var/log/app/*.log: last error 2026-12-01T17:59:58Z: PutLogEvents: dispatch failure: connection refused\n\
             last error -\n",
            std::process::id(),
            i = " ".repeat(11),
        );
        assert_eq!(text, want, "\n{text}");
        // A long error: its start in the text, all of it (up to 500 characters) in the JSON.
        files.failed(&"e".repeat(700));
        let doc = report(&state, Some(&stats));
        let message = doc["logs"]["sources"]["file-00ab"]["last_error"]["message"]
            .as_str()
            .unwrap();
        assert_eq!(message, format!("{}…", "e".repeat(500)));
        let text = render(&doc);
        assert!(
            text.contains(&format!(": {}…\n", "e".repeat(200))),
            "{text}"
        );
        let doc = report(&State::default(), None);
        assert!(render(&doc).contains("logs       not shipped ([logs] not configured)"));
    }

    #[test]
    fn test_human_units() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(ms_text(999), "999 ms");
        assert_eq!(ms_text(5250), "5.2 s");
        assert_eq!(ms_text(200_000), "3m 20s");
    }

    #[test]
    fn test_state_file_is_written_atomically_0640() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/status.json");
        let st = Status::new();
        st.set_file(path.clone(), None);
        st.write_if_changed();
        let first = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(doc["app"]["state"], "starting");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Unchanged: not written again (the time stamp stays).
        std::thread::sleep(Duration::from_millis(5));
        st.write_if_changed();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        st.update(|s| s.app = App::Running { pid: 7 });
        st.write_if_changed();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["app"]["pid"], 7);
        assert!(!path.with_extension("json.tmp").exists());
        st.remove_file();
        assert!(!path.exists());
    }

    #[test]
    fn test_exit_text() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            exit_text(Some(&std::process::ExitStatus::from_raw(3 << 8))),
            "exit code 3"
        );
        assert_eq!(
            exit_text(Some(&std::process::ExitStatus::from_raw(9))),
            "signal 9"
        );
        assert_eq!(exit_text(None), "not started");
    }

    #[test]
    fn test_lag_after_an_acknowledgement_or_while_events_wait() {
        let st = Status::new();
        assert_eq!(st.log_lag_ms(), None);
        let stats = Arc::new(LogStats::default());
        st.set_log_stats(stats.clone());
        assert_eq!(st.log_lag_ms(), None);
        stats.lag_ms.store(120, Ordering::Relaxed);
        stats.requests.store(1, Ordering::Relaxed);
        assert_eq!(st.log_lag_ms(), Some(120));
        // A batch read 2 s ago and not acknowledged: 2 s behind, and more as it waits.
        let src = stats.source(&spec("app-stdout", "/s/*.log", "i-0abc/stdout"));
        let read = std::time::Instant::now()
            .checked_sub(Duration::from_secs(2))
            .unwrap();
        src.handed_over(Some(read), 1, 30);
        let lag = st.log_lag_ms().unwrap();
        assert!((2000..30_000).contains(&lag), "{lag}");
        src.acknowledged(Some(2000), true);
        assert_eq!(st.log_lag_ms(), Some(120), "the last batch's again");
    }
}
