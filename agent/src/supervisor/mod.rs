//! Supervisor: keeps the app running.
//!
//! Policy ([`on_exit`], pure): the first exit after a stable run restarts at once; the next ones
//! wait `backoff_initial`, doubling up to `backoff_max`; a run of `stable_after` resets it.
//! `crash_loop_count` exits within `crash_loop_window` make a crash loop, reported once (the agent
//! then marks the instance Unhealthy so the ASG replaces it) while restarts go on with backoff.
//!
//! Mechanics: respawn first, record after: on an exit the decision is a few comparisons in
//! memory, the (prebuilt) start plan is started again, and only then are counters, logs and the
//! crash-loop report done. Any exit counts, also status 0: the app is meant to run forever.
//!
//! Nothing of a run outlives it: when the app's main process exits, the rest of its process
//! group gets SIGKILL before the main process is reaped (one system call, before the respawn);
//! processes that left the group (`setsid`, `setpgid`) are re-parented to the agent (a child
//! subreaper) and the orphan reaper sends them SIGKILL after the respawn (see
//! [`process::decide`] for what counts as left behind). The same holds after a stop.
//!
//! The supervisor has a thread of its own (`bake-supervise`, with a current-thread runtime that
//! waits on nothing but the app's pidfd, the control channel and SIGCHLD), so a restart never
//! queues behind log shipping, metrics or AWS calls on the agent's main runtime. The app is
//! spawned, waited for and signalled there, and the orphan reaper runs there too, between those
//! steps: it never runs while an app is being started. The app's output pipes are read, and the
//! crash-loop hook runs, on the main runtime. The app gets SIGKILL when this thread ends
//! (parent-death signal): it ends after stopping the app, or with the agent.
//!
//! With `[app] listen` every start gets the agent's listening socket as fd 3 ([`socket`]); the
//! socket lives in the spec, not in a run, so connections queue in its backlog between runs.

/// No capabilities and no_new_privs for the programs the agent starts.
pub mod privileges;
/// Spawning, signals, subreaper.
pub mod process;
/// Socket activation: the app's listening socket, bound once by the agent.
pub mod socket;
/// Starting a process without copying the agent (clone with CLONE_VM | CLONE_VFORK).
pub mod spawn;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::SuperviseSettings;
use crate::logs::AppOutput;
use crate::status::{self, App, Status};
use crate::supervisor::process::{AppSpec, ProcessError};
use crate::supervisor::spawn::{AppProcess, Plan};

/// Restart state: consecutive quick exits and the recent exit times.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: SuperviseSettings,
    /// Exits since the last stable run.
    consecutive: u32,
    /// When the current run started.
    started: Instant,
    /// Exit times within the crash-loop window.
    exits: VecDeque<Instant>,
    /// A crash loop was reported already (reported once per agent run).
    reported: bool,
}

/// What to do after the app exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart after `delay` (zero: at once).
    Restart {
        /// How long to wait first.
        delay: Duration,
    },
    /// Restart after `delay`, and report a crash loop (first time only).
    RestartAndReportCrashLoop {
        /// How long to wait first.
        delay: Duration,
    },
}

impl Decision {
    /// The delay before the restart.
    #[must_use]
    pub fn delay(self) -> Duration {
        match self {
            Decision::Restart { delay } | Decision::RestartAndReportCrashLoop { delay } => delay,
        }
    }
}

impl Backoff {
    /// Fresh state for an app started at `now`.
    #[must_use]
    pub fn new(policy: SuperviseSettings, now: Instant) -> Self {
        Self {
            policy,
            consecutive: 0,
            started: now,
            exits: VecDeque::new(),
            reported: false,
        }
    }

    /// The app was (re)started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = now;
    }

    /// Exits since the last stable run.
    #[must_use]
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

/// The restart policy: see the module docs.
pub fn on_exit(b: &mut Backoff, now: Instant) -> Decision {
    if now.saturating_duration_since(b.started) >= b.policy.stable_after {
        b.consecutive = 0;
    }
    b.consecutive = b.consecutive.saturating_add(1);
    let delay = if b.consecutive <= 1 {
        Duration::ZERO
    } else {
        let factor = 1u32 << (b.consecutive - 2).min(20);
        b.policy
            .backoff_initial
            .saturating_mul(factor)
            .min(b.policy.backoff_max)
    };
    while b
        .exits
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= b.policy.crash_loop_window)
    {
        b.exits.pop_front();
    }
    b.exits.push_back(now);
    if !b.reported && b.exits.len() >= b.policy.crash_loop_count as usize {
        b.reported = true;
        return Decision::RestartAndReportCrashLoop { delay };
    }
    Decision::Restart { delay }
}

/// Requests to a running supervisor.
#[derive(Debug)]
pub enum Control {
    /// Stop the app gracefully and end the supervisor.
    Stop(oneshot::Sender<()>),
    /// Stop the app gracefully and start it again, with a new spec if given (rotated secrets).
    Restart(Option<Box<AppSpec>>, oneshot::Sender<()>),
}

/// Talks to a running supervisor. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Control>,
    /// Restarts since the agent started, for the metrics publisher (app restarts metric).
    pub restarts: Arc<AtomicU64>,
}

impl SupervisorHandle {
    /// Stops the app gracefully; returns when it is down.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Control::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Restarts the app gracefully, optionally with a new spec; returns once it was started again.
    pub async fn restart(&self, spec: Option<AppSpec>) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Control::Restart(spec.map(Box::new), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// Called (in a task of its own) when a crash loop is detected.
pub type CrashLoopHook = Arc<dyn Fn() + Send + Sync>;

/// Resolves when the supervisor has ended (after a stop, or if its thread died).
pub type SupervisorDone = oneshot::Receiver<()>;

/// Starts the app and supervises it on a thread of its own. Errors only if the first start
/// fails. Call it from the agent's main runtime: the app's output is read there.
pub async fn start(
    spec: AppSpec,
    policy: SuperviseSettings,
    output: AppOutput,
    on_crash_loop: Option<CrashLoopHook>,
    status: Arc<Status>,
) -> Result<(SupervisorHandle, SupervisorDone), ProcessError> {
    let plan = process::plan(&spec)?;
    let program = spec.command[0].clone();
    let (tx, rx) = mpsc::channel(4);
    let restarts = Arc::new(AtomicU64::new(0));
    let (started_tx, started_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let sup = Supervisor {
        spec,
        plan,
        policy,
        output,
        on_crash_loop,
        restarts: restarts.clone(),
        main: tokio::runtime::Handle::current(),
        reaper: Reaper::new(),
        status,
    };
    let spawn_err = |source| ProcessError::Spawn {
        program: program.clone(),
        source,
    };
    let thread_program = program.clone();
    std::thread::Builder::new()
        .name("bake-supervise".to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(sup.run(rx, started_tx)),
                Err(source) => {
                    let _ = started_tx.send(Err(ProcessError::Spawn {
                        program: thread_program,
                        source,
                    }));
                }
            }
            let _ = done_tx.send(());
        })
        .map_err(spawn_err)?;
    let pid = started_rx
        .await
        .map_err(|_| spawn_err(std::io::Error::other("the supervisor thread ended")))??;
    tracing::info!(pid, %program, "app started");
    Ok((SupervisorHandle { tx, restarts }, done_rx))
}

struct Supervisor {
    spec: AppSpec,
    plan: Plan,
    policy: SuperviseSettings,
    output: AppOutput,
    on_crash_loop: Option<CrashLoopHook>,
    restarts: Arc<AtomicU64>,
    /// The agent's main runtime: the app's output is read there, the crash-loop hook runs there.
    main: tokio::runtime::Handle,
    reaper: Reaper,
    /// App state and restarts for the status line.
    status: Arc<Status>,
}

/// After an immediate restart, how long the supervisor leaves the CPUs to the starting app before
/// it hands the new pipes to log shipping (which wakes the main thread), publishes the state,
/// ends what the old run left outside its process group and logs the restart. The pipes buffer
/// what the app writes meanwhile (64 KiB each).
const RECORD_AFTER: Duration = Duration::from_millis(2);

/// The orphan reaper's period when nothing wakes it.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// After a SIGCHLD, how long the reaper waits so that one pass takes a burst of exits.
const REAP_AFTER_SIGCHLD: Duration = Duration::from_millis(50);
/// The first re-check after a pass that sent SIGKILL to leftovers; doubles, up to 1.28 s.
const LEFTOVER_RECHECK: Duration = Duration::from_millis(10);

/// The orphan reaper, run by the supervisor between its own steps (never while an app is being
/// started; see [`process::tidy`]): on SIGCHLD (debounced), every 30 s, and right after every
/// exit or stop of the app.
#[derive(Debug)]
struct Reaper {
    sigchld: Option<tokio::signal::unix::Signal>,
    next: tokio::time::Instant,
    /// An app exited or was stopped, and no pass since found nothing left of it.
    dirty: bool,
    /// Passes in a row that still sent SIGKILL to leftovers.
    rounds: u32,
}

impl Reaper {
    fn new() -> Self {
        Self {
            sigchld: None,
            next: tokio::time::Instant::now() + REAP_EVERY,
            dirty: false,
            rounds: 0,
        }
    }

    /// Listens for SIGCHLD; call it on the runtime that runs the supervisor.
    fn listen(&mut self) {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(s) => self.sigchld = Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGCHLD; orphans are reaped every 30s and after each exit of the app");
            }
        }
    }

    /// One pass now; leftovers are ended while an exit or stop is not cleaned up yet.
    fn pass(&mut self) -> process::Tidied {
        let done = process::tidy(self.dirty);
        let now = tokio::time::Instant::now();
        if self.dirty && done.ended > 0 {
            // They die in a moment (SIGKILL); their own orphans come to the agent then.
            self.next = now + LEFTOVER_RECHECK.saturating_mul(1 << self.rounds.min(7));
            self.rounds += 1;
            if self.rounds == 8 {
                tracing::warn!(
                    ended = done.ended,
                    "processes the app left behind are still there after SIGKILL"
                );
            }
        } else {
            self.dirty = false;
            self.rounds = 0;
            self.next = now + REAP_EVERY;
        }
        done
    }
}

/// What woke the supervisor.
enum Event {
    /// The app's main process exited (its group got SIGKILL, it is reaped).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// A request, or `None` when every handle is gone.
    Control(Option<Control>),
    /// The deadline passed.
    Elapsed,
}

impl Supervisor {
    /// Starts the app from the plan; its pipes stay in the process until [`Self::record_start`].
    fn start_app(&mut self) -> Result<AppProcess, ProcessError> {
        process::spawn(&mut self.plan)
    }

    /// Hands a started process's pipes to log shipping on the main runtime and publishes its pid.
    fn record_start(&self, child: &mut AppProcess) {
        {
            let _main = self.main.enter();
            let pipe = |fd: Option<std::os::fd::OwnedFd>| {
                fd.and_then(
                    |fd| match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the app's output");
                            None
                        }
                    },
                )
            };
            let (out, err) = (pipe(child.stdout.take()), pipe(child.stderr.take()));
            self.output.attach(out, err);
        }
    }

    /// Publishes the running app's pid (and the restart count, in the same change).
    fn publish_running(&self, child: Option<&AppProcess>, restarts: Option<u64>) {
        let pid = child.and_then(AppProcess::id);
        self.status.update(|s| {
            if let Some(pid) = pid {
                s.app = App::Running { pid };
            }
            if let Some(n) = restarts {
                s.restarts = n;
            }
        });
    }

    /// Starts the app again and records it at once (not on the crash path).
    fn respawn_and_record(&mut self) -> Option<AppProcess> {
        let mut child = self.respawn()?;
        self.record_start(&mut child);
        Some(child)
    }

    fn respawn(&mut self) -> Option<AppProcess> {
        match self.start_app() {
            Ok(child) => Some(child),
            Err(e) => {
                tracing::error!(error = %e, "cannot restart the app");
                self.status
                    .update(|s| s.last_error = Some(format!("cannot restart the app: {e}")));
                None
            }
        }
    }

    /// Waits for the app's exit, a request or `until`; runs the orphan reaper meanwhile.
    async fn next_event(
        &mut self,
        child: &mut Option<AppProcess>,
        rx: &mut mpsc::Receiver<Control>,
        until: Option<tokio::time::Instant>,
    ) -> Event {
        enum Woke {
            Event(Event),
            Sigchld(bool),
            Reap,
        }
        loop {
            let reap_at = self.reaper.next;
            let woke = {
                let exit = async {
                    match child.as_mut() {
                        Some(c) => c.wait().await,
                        None => std::future::pending().await,
                    }
                };
                let sigchld = async {
                    match self.reaper.sigchld.as_mut() {
                        Some(s) => s.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                let elapsed = async {
                    match until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                // A request first: an app that crash-loops without backoff has always exited
                // again by the time this is polled, and with its exit first a stop would
                // never be seen.
                tokio::select! {
                    biased;
                    ctl = rx.recv() => Woke::Event(Event::Control(ctl)),
                    status = exit => Woke::Event(Event::Exited(status)),
                    () = elapsed => Woke::Event(Event::Elapsed),
                    open = sigchld => Woke::Sigchld(open),
                    () = tokio::time::sleep_until(reap_at) => Woke::Reap,
                }
            };
            match woke {
                Woke::Event(e) => return e,
                Woke::Sigchld(true) => {
                    let soon = tokio::time::Instant::now() + REAP_AFTER_SIGCHLD;
                    self.reaper.next = self.reaper.next.min(soon);
                }
                Woke::Sigchld(false) => self.reaper.sigchld = None,
                Woke::Reap => {
                    self.reaper.pass();
                }
            }
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Control>,
        started: oneshot::Sender<Result<u32, ProcessError>>,
    ) {
        self.reaper.listen();
        let first = match self.start_app() {
            Ok(mut c) => {
                self.record_start(&mut c);
                self.publish_running(Some(&c), None);
                c
            }
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(first.id().unwrap_or(0)));
        let mut backoff = Backoff::new(self.policy, Instant::now());
        let mut child = Some(first);
        loop {
            // Wait for an exit (or a failed spawn, which counts as one) or a request.
            let status = if child.is_some() {
                match self.next_event(&mut child, &mut rx, None).await {
                    Event::Exited(status) => status,
                    Event::Control(ctl) => {
                        if self.control(ctl, &mut child, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                    Event::Elapsed => continue,
                }
            } else {
                Err(std::io::Error::other("spawn failed"))
            };
            let now = Instant::now();
            // The old group got SIGKILL before its main process was reaped; what left the
            // group is ended by the reaper's next passes.
            self.reaper.dirty = true;
            let decision = on_exit(&mut backoff, now);
            let delay = decision.delay();
            let mut ended = 0;
            if delay.is_zero() {
                // Respawn first; the rest after the new process had the CPUs for its start.
                child = self.respawn();
            } else {
                child = None;
                ended = self.reaper.pass().ended;
                let how = status::exit_text(status.as_ref().ok());
                self.status.update(|s| {
                    s.app = App::Exited {
                        how,
                        restart_in: delay,
                    };
                });
                tracing::warn!(status = ?status.as_ref().ok(), delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), consecutive = backoff.consecutive(), ended, "app exited; restarting after backoff");
                let until = tokio::time::Instant::now() + delay;
                // Until the delay passed (no app runs meanwhile, so no exit comes).
                while let Event::Control(ctl) =
                    self.next_event(&mut child, &mut rx, Some(until)).await
                {
                    if self.control(ctl, &mut child, &mut backoff).await {
                        return;
                    }
                    if child.is_some() {
                        break;
                    }
                }
                if child.is_none() {
                    child = self.respawn_and_record();
                }
            }
            backoff.started(Instant::now());
            // Record after the respawn, once the app had the CPUs for its start.
            let respawn_us = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
            if delay.is_zero() {
                tokio::time::sleep(RECORD_AFTER).await;
                if let Some(c) = child.as_mut() {
                    self.record_start(c);
                }
                ended = self.reaper.pass().ended;
            }
            let n = self.restarts.fetch_add(1, Ordering::SeqCst) + 1;
            self.publish_running(child.as_ref(), Some(n));
            if delay.is_zero() {
                tracing::warn!(status = ?status.as_ref().ok(), restarts = n, respawn_us, ended, "app exited; restarted at once");
            }
            if matches!(decision, Decision::RestartAndReportCrashLoop { .. }) {
                tracing::error!(
                    restarts = n,
                    count = self.policy.crash_loop_count,
                    window_s = self.policy.crash_loop_window.as_secs(),
                    "app is in a crash loop"
                );
                let text = format!(
                    "app is in a crash loop: {} exits within {}s",
                    self.policy.crash_loop_count,
                    self.policy.crash_loop_window.as_secs()
                );
                self.status.update(|s| s.last_error = Some(text));
                if let Some(hook) = &self.on_crash_loop {
                    let _main = self.main.enter();
                    hook();
                }
            }
        }
    }

    /// Stops the app (if any) and ends what it left outside its group, within about 1 s.
    async fn stop_app(
        &mut self,
        child: &mut Option<AppProcess>,
    ) -> Option<std::process::ExitStatus> {
        self.status.update(|s| s.app = App::Stopping);
        let status = match child.as_mut() {
            Some(c) => process::stop(c, self.spec.stop_signal, self.spec.stop_timeout).await,
            None => None,
        };
        self.reaper.dirty = true;
        for _ in 0..100 {
            if self.reaper.pass().ended == 0 {
                break;
            }
            tokio::time::sleep(LEFTOVER_RECHECK).await;
        }
        status
    }

    /// Handles a request; `true` when the supervisor must end.
    async fn control(
        &mut self,
        ctl: Option<Control>,
        child: &mut Option<AppProcess>,
        backoff: &mut Backoff,
    ) -> bool {
        match ctl {
            None => {
                // Every handle dropped: stop the app and end.
                self.stop_app(child).await;
                true
            }
            Some(Control::Stop(done)) => {
                let status = self.stop_app(child).await;
                self.status.update(|s| s.app = App::Stopped);
                if status.is_some() {
                    tracing::info!(?status, "app stopped");
                }
                let _ = done.send(());
                true
            }
            Some(Control::Restart(spec, done)) => {
                self.stop_app(child).await;
                if let Some(spec) = spec {
                    match process::plan(&spec) {
                        Ok(plan) => {
                            self.spec = *spec;
                            self.plan = plan;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot use the new app settings; restarting with the previous ones")
                        }
                    }
                }
                *child = self.respawn_and_record();
                self.publish_running(child.as_ref(), None);
                backoff.started(Instant::now());
                tracing::info!("app restarted on request");
                let _ = done.send(());
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SuperviseSettings {
        SuperviseSettings {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            stable_after: Duration::from_secs(10),
            crash_loop_count: 4,
            crash_loop_window: Duration::from_secs(5),
            mark_unhealthy: true,
        }
    }

    #[test]
    fn test_state_machine_happy_path() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy(), t0);
        // A crash after a long run: restart at once.
        let t = t0 + Duration::from_secs(100);
        assert_eq!(
            on_exit(&mut b, t),
            Decision::Restart {
                delay: Duration::ZERO
            }
        );
        b.started(t);
        // Quick crashes: 100ms, 200ms, then the 4th in the window is a crash loop (reported once).
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(10)),
            Decision::Restart {
                delay: Duration::from_millis(100)
            }
        );
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(200)),
            Decision::Restart {
                delay: Duration::from_millis(200)
            }
        );
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(500)),
            Decision::RestartAndReportCrashLoop {
                delay: Duration::from_millis(400)
            }
        );
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(1000)),
            Decision::Restart {
                delay: Duration::from_millis(800)
            }
        );
        // Capped at backoff_max.
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(2000)),
            Decision::Restart {
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(
            on_exit(&mut b, t + Duration::from_millis(3000)).delay(),
            Duration::from_secs(1)
        );
        // A stable run resets the backoff.
        let later = t + Duration::from_secs(60);
        b.started(later);
        assert_eq!(
            on_exit(&mut b, later + Duration::from_secs(10)),
            Decision::Restart {
                delay: Duration::ZERO
            }
        );
    }

    /// A restart must not need a turn of the agent's main runtime: here the main (test) runtime
    /// is held by a synchronous loop while the app is killed, and the loop itself watches the
    /// replacement start.
    #[tokio::test]
    async fn test_restart_does_not_wait_for_the_main_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let spec = AppSpec {
            command: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("echo $$ >> {}; exec sleep 60", pids.display()),
            ],
            env: std::collections::BTreeMap::new(),
            secrets: std::collections::BTreeMap::new(),
            working_dir: dir.path().to_owned(),
            run_as: None,
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(2),
            listen: None,
        };
        let (handle, done) = start(
            spec,
            policy(),
            AppOutput::passthrough(),
            None,
            Status::new(),
        )
        .await
        .unwrap();
        let lines = || {
            std::fs::read_to_string(&pids)
                .unwrap_or_default()
                .lines()
                .map(|l| l.parse::<i32>().unwrap())
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = lines()[0];

        // From here on the main runtime gets no turn until the replacement is seen.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        while lines().len() < 2 && killed.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let seen = killed.elapsed();
        let all = lines();
        assert_eq!(all.len(), 2, "no restart while the main runtime was held");
        assert_ne!(all[1], first);
        assert!(seen < Duration::from_secs(2), "restart took {seen:?}");
        // Recorded after the respawn, also without the main runtime.
        while handle.restarts.load(Ordering::SeqCst) == 0
            && killed.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(handle.restarts.load(Ordering::SeqCst), 1);

        handle.stop().await;
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the supervisor thread ends after a stop")
            .unwrap();
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(all[1]), None).is_err(),
            "the app is gone after a stop"
        );
    }

    /// A restart on request with a new spec (rotated secrets) passes the same listening socket:
    /// the spec's clones share it.
    #[tokio::test]
    async fn test_a_restart_with_a_new_spec_keeps_the_listen_socket() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let socket = std::sync::Arc::new(
            socket::ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        );
        let spec = AppSpec {
            command: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "echo \"$LISTEN_PID $(readlink /proc/$$/fd/3) ${{TOKEN:-none}}\" >> {}; exec sleep 60",
                    seen.display()
                ),
            ],
            env: std::collections::BTreeMap::new(),
            secrets: std::collections::BTreeMap::new(),
            working_dir: dir.path().to_owned(),
            run_as: None,
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(2),
            listen: Some(socket.clone()),
        };
        let mut rotated = spec.clone();
        rotated.secrets.insert(
            "TOKEN".to_owned(),
            crate::secrets::Secret::new("v2".to_owned()),
        );
        let (handle, done) = start(
            spec,
            policy(),
            AppOutput::passthrough(),
            None,
            Status::new(),
        )
        .await
        .unwrap();
        let lines = || {
            std::fs::read_to_string(&seen)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.restart(Some(rotated)).await;
        while lines().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.stop().await;
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the supervisor thread ends after a stop")
            .unwrap();
        let all = lines();
        assert_eq!(all.len(), 2, "{all:?}");
        let inode = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&*socket)
        ))
        .unwrap()
        .display()
        .to_string();
        let fields: Vec<Vec<&str>> = all.iter().map(|l| l.split(' ').collect()).collect();
        assert_eq!(fields[0][1], inode, "{all:?}");
        assert_eq!(fields[1][1], inode, "{all:?}");
        assert_eq!(
            (fields[0][2], fields[1][2]),
            ("none", "v2"),
            "the new spec: {all:?}"
        );
        assert_ne!(fields[0][0], fields[1][0], "a new LISTEN_PID: {all:?}");
        // The agent still holds it after the app stopped.
        std::net::TcpStream::connect(socket.addr()).expect("still listening");
    }

    /// Orphans are reaped on the supervisor's thread, where the app is spawned: here the main
    /// (test) runtime is held by a synchronous loop from before the orphan exists until it is
    /// gone, and nothing else would reap it.
    #[tokio::test]
    async fn test_orphans_are_reaped_without_the_main_runtime() {
        process::become_subreaper();
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("helper");
        // The subshell starts a short-lived helper and exits: the helper is re-parented to this
        // process (a subreaper) and exits 0.3 s later, a zombie until someone reaps it.
        let spec = AppSpec {
            command: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "(sleep 0.3 & echo $! > {}); exec sleep 60",
                    helper.display()
                ),
            ],
            env: std::collections::BTreeMap::new(),
            secrets: std::collections::BTreeMap::new(),
            working_dir: dir.path().to_owned(),
            run_as: None,
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(2),
            listen: None,
        };
        let (handle, done) = start(
            spec,
            policy(),
            AppOutput::passthrough(),
            None,
            Status::new(),
        )
        .await
        .unwrap();
        // From here on the main runtime gets no turn until the helper is reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(p) = std::fs::read_to_string(&helper)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "the helper never started");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut seen_zombie_or_child = false;
        while let Some(p) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| process::parse_stat(&s))
        {
            seen_zombie_or_child |= p.ppid == i32::try_from(std::process::id()).unwrap();
            assert!(
                Instant::now() < deadline,
                "the orphan was not reaped while the main runtime was held"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            seen_zombie_or_child,
            "the helper was never re-parented to the agent"
        );
        handle.stop().await;
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the supervisor thread ends after a stop")
            .unwrap();
    }

    #[test]
    fn test_crash_loop_needs_count_within_window() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy(), t0);
        // Exits 2s apart: never 4 within 5s.
        for i in 1..10u64 {
            let t = t0 + Duration::from_secs(2 * i);
            assert!(
                matches!(on_exit(&mut b, t), Decision::Restart { .. }),
                "exit {i}"
            );
            b.started(t);
        }
    }
}
