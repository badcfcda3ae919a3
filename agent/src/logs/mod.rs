//! Log shipping: the app's stdout/stderr and configured files to CloudWatch Logs, at least once.
//!
//! # How the agent wires it in (`daemon.rs`)
//! ```ignore
//! // agent.toml's `[logs]` table is deserialized as `logs::LogsConfig` (deny_unknown_fields) and
//! // checked once, when the configuration is loaded (`run` and `check` alike), by
//! // `LogsSettings::with_config` (errors name the key, e.g. `logs.files[0].multiline_start: …`).
//! let (app_output, shipper) = logs::Shipper::start(aws.logs.clone(), &logs_settings, &identity.instance_id)?;
//! // Hand `app_output` (cheap to clone) to the supervisor: it calls
//! // `app_output.attach(child.stdout.take(), child.stderr.take())` for every process it starts.
//! let app_output = app_output.with_app_metrics(app_metrics.clone()); // [metrics] emf
//! let metrics = metrics::start(aws.cw.clone(), &metrics_settings, &identity,
//!                              supervisor.restarts.clone(), Some(shipper.stats()), Some(app_metrics));
//! // On SIGTERM and on termination, once the app stopped and before the terminate lifecycle
//! // hook is completed: wait for its pipes' ends, then ship the rest.
//! app_output.drained(daemon::PIPES_DEADLINE).await;
//! shipper.shutdown(daemon::LOG_FLUSH_DEADLINE).await; // sends what was read, within the deadline
//! metrics.shutdown().await;
//! // Only then: CompleteLifecycleAction CONTINUE on the terminate hook.
//! ```
//! The shipper needs a Tokio runtime (current-thread is fine): senders are tasks; each source
//! also gets one plain thread that reads its files, so file I/O never blocks the runtime.
//!
//! Layout: [`settings`] checks `[logs]` and resolves it into one [`source`] per stream, [`tail`]
//! reads files into batches, [`batch`] keeps every PutLogEvents limit, [`ship`] sends and
//! retries, [`checkpoint`] remembers what was acknowledged (by [`file_id`]), [`spool`] puts
//! stdout/stderr on disk first, [`stats`] counts for the metrics and keeps each source's state
//! for `bake-agent status`. See docs/logs.md.

pub mod batch;
pub mod checkpoint;
pub mod file_id;
pub mod settings;
pub mod ship;
pub mod source;
pub mod spool;
pub mod stats;
pub mod tail;

pub use self::settings::{
    AppLogsConfig, FileLogsConfig, LogsConfig, LogsConfigError, LogsSettings, DEFAULT_ROTATED,
    DEFAULT_STATE_DIR,
};
pub use self::source::SourceSpec;
pub use self::stats::LogStats;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use self::checkpoint::Checkpoints;
use self::spool::SpoolWriter;
use self::tail::{Control, Tailer};

/// A state directory or checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The state directory or a checkpoint cannot be used.
    #[error("log state: {0}")]
    State(String),
}

/// Starts log shipping.
#[derive(Debug)]
pub struct Shipper;

struct Running {
    control: Arc<Control>,
    thread: std::thread::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
}

/// Controls running log shipping: shutdown, stats.
pub struct ShipperHandle {
    sources: Vec<Running>,
    stats: Arc<LogStats>,
}

impl std::fmt::Debug for ShipperHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperHandle")
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Creates the state directory and starts one reader thread and one sender task per source
    /// of the instance `instance_id` (the app's stdout, its stderr, each `[[logs.files]]`). Must
    /// be called within a Tokio runtime. Returns the seam for the supervisor and the handle.
    ///
    /// # Errors
    /// An unusable state directory or checkpoint.
    pub fn start(
        client: aws_sdk_cloudwatchlogs::Client,
        settings: &LogsSettings,
        instance_id: &str,
    ) -> Result<(AppOutput, ShipperHandle), LogsError> {
        let sources = settings.for_instance(instance_id);
        let stats = Arc::new(LogStats::default());
        let state =
            |e: std::io::Error, p: &Path| LogsError::State(format!("'{}': {e}", p.display()));
        let cp_dir = settings.state_dir.join("checkpoints");
        std::fs::create_dir_all(&cp_dir).map_err(|e| state(e, &cp_dir))?;
        let mut specs = Vec::new();
        let mut app = AppOutput::passthrough();
        if let Some((out, err)) = sources.app {
            let open = |spec: &SourceSpec| {
                let dir = settings
                    .state_dir
                    .join("spool")
                    .join(spec.name.trim_start_matches("app-"));
                SpoolWriter::open(&dir, settings.spool_max_bytes, stats.clone())
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
        specs.extend(sources.files);
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
            ));
            tracing::info!(source = %spec.name, pattern = %spec.pattern, group = %spec.group, stream = %spec.stream, "shipping logs");
            sources.push(Running {
                control,
                thread,
                sender,
            });
        }
        Ok((app, ShipperHandle { sources, stats }))
    }
}

impl ShipperHandle {
    /// The shipping counters (for metrics).
    #[must_use]
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
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
    /// Where the app's EMF lines go (`[metrics] emf`), from both pipes.
    app_metrics: Option<Arc<crate::emf::AppMetrics>>,
    /// Attached pipes that have not reached their end yet.
    open: Arc<watch::Sender<usize>>,
}

impl Default for AppOutput {
    fn default() -> Self {
        Self {
            spools: None,
            app_metrics: None,
            open: Arc::new(watch::channel(0).0),
        }
    }
}

/// An attached pipe: counted as open until dropped, and its EMF tap.
struct OpenPipe {
    _open: Open,
    tap: Option<crate::emf::LineTap>,
}

/// Counts an attached pipe as open until dropped (at its end, or if its task dies).
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(open: &Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open.clone())
    }
}

impl Drop for Open {
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

    /// The same output, whose lines are also looked at for the app's EMF metrics.
    #[must_use]
    pub fn with_app_metrics(mut self, metrics: Arc<crate::emf::AppMetrics>) -> Self {
        self.app_metrics = Some(metrics);
        self
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
        let stdout = stdout.map(|p| (p, self.open_pipe()));
        let stderr = stderr.map(|p| (p, self.open_pipe()));
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

impl AppOutput {
    fn open_pipe(&self) -> OpenPipe {
        OpenPipe {
            _open: Open::new(&self.open),
            tap: self.app_metrics.clone().map(crate::emf::LineTap::new),
        }
    }
}

/// Writes the app's lines to the agent's stderr as `PREFIX: line`; into the journal with the
/// syslog priority info (`<6>`), as the agent's own lines carry theirs (bake_common::logging).
fn passthrough_write(prefix: &str, chunk: Option<&[u8]>) {
    static JOURNAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let tag = if *JOURNAL.get_or_init(bake_common::logging::stderr_is_journal) {
        "<6>"
    } else {
        ""
    };
    if let Some(c) = chunk {
        for line in String::from_utf8_lossy(c).lines() {
            eprintln!("{tag}{prefix}: {line}");
        }
    }
}

/// Reads a pipe in chunks until EOF, each into the EMF tap and `sink`, then calls `sink(None)`
/// and drops `open`.
async fn drain<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    mut open: OpenPipe,
    mut sink: impl FnMut(Option<&[u8]>),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(tap) = &mut open.tap {
                    tap.feed(&buf[..n]);
                }
                sink(Some(&buf[..n]));
            }
        }
    }
    if let Some(tap) = &mut open.tap {
        tap.end();
    }
    sink(None);
    drop(open);
}
