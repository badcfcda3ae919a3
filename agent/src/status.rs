//! What the agent says about itself: one short status line for systemd (`STATUS=` through
//! sd_notify, shown by `systemctl status bake-agent`), e.g.
//! `app running (pid 812), 2 restarts, logs 120 ms behind`.
//!
//! The supervisor and the daemon record state changes in a [`Status`]; [`publish`] sends the
//! line at once after a change of state and otherwise at most once a second (when only the
//! log shipping lag moved), and never the same line twice in a row.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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

    /// The milliseconds the last acknowledged batch took from reading to acknowledgement, once
    /// one was acknowledged.
    #[must_use]
    pub fn log_lag_ms(&self) -> Option<u64> {
        let s = self.log_stats.get()?;
        (s.requests.load(Ordering::Relaxed) > 0).then(|| s.lag_ms.load(Ordering::Relaxed))
    }

    /// Sends `STATUS=<line>` unless that line was the last one sent.
    pub fn send_if_changed(&self) {
        let now = self.line();
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *sent != now {
            notify::notify(&format!("STATUS={now}"));
            *sent = now;
        }
    }

    /// The status line now.
    #[must_use]
    pub fn line(&self) -> String {
        line(&self.state(), self.log_lag_ms())
    }
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

/// The least time between two lines when only the log shipping lag changed.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Sends `STATUS=<line>` through sd_notify at each change of state and, for lag changes, at
/// most every [`MIN_INTERVAL`]; never the same line twice in a row. Runs forever.
pub async fn publish(status: Arc<Status>) {
    let mut tick = tokio::time::interval(MIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = status.changed.notified() => {}
            _ = tick.tick() => {}
        }
        status.send_if_changed();
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
    fn test_lag_only_after_an_acknowledgement() {
        let st = Status::new();
        assert_eq!(st.log_lag_ms(), None);
        let stats = Arc::new(LogStats::default());
        st.set_log_stats(stats.clone());
        assert_eq!(st.log_lag_ms(), None);
        stats.lag_ms.store(120, Ordering::Relaxed);
        stats.requests.store(1, Ordering::Relaxed);
        assert_eq!(st.log_lag_ms(), Some(120));
    }
}
