//! The app's process: spawned in its own session and process group, as the configured user;
//! signals to the whole group; the agent as child subreaper, reaping orphaned grandchildren.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use super::spawn::{self, AppProcess, Plan};
use crate::secrets::Secret;

/// Errors preparing or starting the app.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `app.user` does not exist.
    #[error("app.user '{0}' does not exist on this instance")]
    NoUser(String),
    /// `app.group` does not exist.
    #[error("app.group '{0}' does not exist on this instance")]
    NoGroup(String),
    /// Looking up users/groups failed.
    #[error("looking up {what}: {source}")]
    Lookup {
        /// What.
        what: String,
        /// Why.
        source: nix::Error,
    },
    /// Preparing or starting the process failed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// User, group and supplementary groups to run as, resolved before the start: the child may only
/// make async-signal-safe calls, and name lookups (NSS) are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
    /// Supplementary groups.
    pub groups: Vec<Gid>,
    /// The user's home, for `HOME`.
    pub home: PathBuf,
    /// The user name, for `USER`/`LOGNAME`.
    pub name: String,
}

impl RunAs {
    /// Resolves `user` (and optionally `group`) from the system's user database.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, ProcessError> {
        let u = User::from_name(user)
            .map_err(|source| ProcessError::Lookup {
                what: format!("user '{user}'"),
                source,
            })?
            .ok_or_else(|| ProcessError::NoUser(user.to_owned()))?;
        let gid = match group {
            Some(g) => {
                Group::from_name(g)
                    .map_err(|source| ProcessError::Lookup {
                        what: format!("group '{g}'"),
                        source,
                    })?
                    .ok_or_else(|| ProcessError::NoGroup(g.to_owned()))?
                    .gid
            }
            None => u.gid,
        };
        let cname = CString::new(user).map_err(|_| ProcessError::NoUser(user.to_owned()))?;
        let groups =
            nix::unistd::getgrouplist(&cname, gid).map_err(|source| ProcessError::Lookup {
                what: format!("groups of '{user}'"),
                source,
            })?;
        Ok(Self {
            uid: u.uid,
            gid,
            groups,
            home: u.dir,
            name: u.name,
        })
    }
}

/// Everything needed to (re)start the app.
#[derive(Clone, Debug)]
pub struct AppSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Non-secret environment (config `app.env`).
    pub env: BTreeMap<String, String>,
    /// Secret environment.
    pub secrets: BTreeMap<String, Secret>,
    /// Working directory.
    pub working_dir: PathBuf,
    /// Drop privileges to this user; `None`: stay the agent's user.
    pub run_as: Option<RunAs>,
    /// Graceful stop signal.
    pub stop_signal: Signal,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
}

/// Default PATH of the app (the agent's own environment is not inherited).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prepares the reusable start plan: starting it again restarts the app without rebuilding
/// anything (see [`super::spawn`]).
///
/// The environment is exactly PATH, HOME/USER/LOGNAME (when dropping privileges), `app.env` and
/// the secrets, later ones winning; secrets go through the environment only, never argv. The app
/// runs in its own session and process group, as `run_as`, with SIGKILL when the agent dies.
pub fn plan(spec: &AppSpec) -> Result<Plan, ProcessError> {
    let home_user = spec
        .run_as
        .as_ref()
        .map(|r| (r.home.as_path(), r.name.as_str()));
    let env = spawn::environment(
        home_user,
        spec.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(spec.secrets.iter().map(|(k, v)| (k.as_str(), v.expose()))),
    );
    let ids = spec.run_as.as_ref().map(|r| spawn::Ids {
        uid: r.uid.as_raw(),
        gid: r.gid.as_raw(),
        groups: r.groups.iter().map(|g| g.as_raw()).collect(),
    });
    Plan::new(&spec.command, env, &spec.working_dir, ids).map_err(|source| ProcessError::Spawn {
        program: spec.command.first().cloned().unwrap_or_default(),
        source,
    })
}

/// Starts the app from `plan`, naming the program in the error.
pub fn spawn(plan: &mut Plan) -> Result<AppProcess, ProcessError> {
    plan.spawn().map_err(|source| ProcessError::Spawn {
        program: plan.program().to_owned(),
        source,
    })
}

/// Sends `sig` to the process group `pgid`; a group that no longer exists is fine.
pub fn signal_group(pgid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal the app's process group")
        }
    }
}

/// Stops the app: `stop_signal` to the group, wait up to `timeout`, then SIGKILL to the group.
/// Leftovers of the group get SIGKILL too once the main process is gone.
pub async fn stop(
    child: &mut AppProcess,
    sig: Signal,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let Some(pid) = child.id() else {
        return child.try_wait().ok().flatten();
    };
    signal_group(pid, sig);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            tracing::warn!(
                pid,
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "app did not stop in time; SIGKILL to its process group"
            );
            signal_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    signal_group(pid, Signal::SIGKILL);
    status
}

/// Makes the agent the reaper of orphaned descendants (instead of PID 1).
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become child subreaper; orphans go to PID 1");
    }
}

/// Pids of the agent's zombie children from /proc (state `Z`, parent = us).
#[must_use]
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    // "pid (comm) S ppid …": comm may hold spaces and parens, so split after the last ')'.
                    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                        return false;
                    };
                    let mut f = rest.split_whitespace();
                    f.next() == Some("Z")
                        && f.next().and_then(|p| p.parse::<u32>().ok()) == Some(me)
                })
        })
        .collect()
}

/// Reaps orphaned grandchildren that were re-parented to the agent, never `managed` (the app's
/// main process, which tokio waits for itself). Runs on SIGCHLD, debounced, and every 30 s.
pub async fn reap_orphans(managed: Arc<AtomicI32>) {
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        tracing::warn!("cannot listen for SIGCHLD; orphans are reaped every 30s");
        return reap_orphans_periodically(managed).await;
    };
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // Let tokio reap its own child first, and never delay a respawn.
        tokio::time::sleep(Duration::from_millis(50)).await;
        reap_once(&managed);
    }
}

async fn reap_orphans_periodically(managed: Arc<AtomicI32>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        reap_once(&managed);
    }
}

fn reap_once(managed: &AtomicI32) {
    for pid in zombie_children() {
        if pid == managed.load(Ordering::SeqCst) {
            continue;
        }
        if let Ok(status) = nix::sys::wait::waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            tracing::debug!(pid, ?status, "reaped an orphaned descendant");
        }
    }
}
