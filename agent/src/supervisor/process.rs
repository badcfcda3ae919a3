//! The app's process: spawned in its own session and process group, as the configured user;
//! signals to the whole group; the agent as child subreaper, and its orphan reaper ([`tidy`]),
//! which reaps orphaned descendants and ends what an exited app left outside its group.
//!
//! All of it runs on the supervisor's thread: the app is spawned there (its parent-death signal
//! is bound to that thread), waited for there, and the reaper runs there between those steps,
//! never while an app is being started.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use super::socket::ListenSocket;
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
    /// Socket activation (`app.listen`): the listening socket every start gets as fd 3. Shared
    /// by the clones of the spec (a restart with rotated secrets keeps the same socket).
    pub listen: Option<Arc<ListenSocket>>,
}

/// Default PATH of the app (the agent's own environment is not inherited).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The app's environment as the supervisor builds it, for [`Plan::new`]: PATH, then HOME, USER
/// and LOGNAME when switching users, then `app.env`, then the secrets; a later key wins.
#[must_use]
pub fn environment<'a>(
    home_user: Option<(&'a Path, &'a str)>,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut vars: Vec<(&str, &str)> = vec![("PATH", DEFAULT_PATH)];
    if let Some((home, user)) = home_user {
        vars.push(("HOME", home.to_str().unwrap_or("/")));
        vars.push(("USER", user));
        vars.push(("LOGNAME", user));
    }
    for (k, v) in env {
        if let Some(slot) = vars.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            vars.push((k, v));
        }
    }
    vars
}

/// Prepares the reusable start plan: starting it again restarts the app without rebuilding
/// anything (see [`super::spawn`]).
///
/// The environment is exactly PATH, HOME/USER/LOGNAME (when dropping privileges), `app.env` and
/// the secrets, later ones winning; secrets go through the environment only, never argv. The app
/// runs in its own session and process group, as `run_as`, with SIGKILL when the agent dies.
/// With `listen`, it also gets that socket as fd 3 and the `LISTEN_*` variables
/// ([`Plan::with_listen_socket`]).
pub fn plan(spec: &AppSpec) -> Result<Plan, ProcessError> {
    let home_user = spec
        .run_as
        .as_ref()
        .map(|r| (r.home.as_path(), r.name.as_str()));
    let env = environment(
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
    let plan = Plan::new(&spec.command, env, &spec.working_dir, ids).map_err(|source| {
        ProcessError::Spawn {
            program: spec.command.first().cloned().unwrap_or_default(),
            source,
        }
    })?;
    Ok(match &spec.listen {
        Some(socket) => plan.with_listen_socket(socket.clone()),
        None => plan,
    })
}

/// Starts the app from `plan`, naming the program in the error.
pub fn spawn(plan: &mut Plan) -> Result<AppProcess, ProcessError> {
    plan.spawn().map_err(|source| ProcessError::Spawn {
        program: plan.program().to_owned(),
        source,
    })
}

/// Stops the app: `stop_signal` to the group, wait up to `timeout`, then SIGKILL to the group.
/// Once the main process has exited, what is left of its group gets SIGKILL too (see
/// [`AppProcess::wait`]); processes that left the group are for [`tidy`].
pub async fn stop(
    child: &mut AppProcess,
    sig: Signal,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let Some(pid) = child.id() else {
        return child.try_wait().ok().flatten();
    };
    child.signal_group(sig);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            tracing::warn!(
                pid,
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "app did not stop in time; SIGKILL to its process group"
            );
            child.signal_group(Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Makes the agent the reaper of orphaned descendants (instead of PID 1): a process the app
/// leaves behind is re-parented to the agent, which can then find it ([`tidy`]).
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become child subreaper; orphans go to PID 1");
    }
}

/// One process, as `/proc/PID/stat` shows it: the fields the orphan reaper decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Parent's pid.
    pub ppid: i32,
    /// Session id.
    pub sid: i32,
    /// State `Z`: exited, waiting to be reaped.
    pub zombie: bool,
    /// Start time (clock ticks since boot): with the pid, it names one process for good.
    pub start: u64,
}

/// Parses `/proc/PID/stat` ("pid (comm) S ppid pgrp session … starttime …"; comm may hold
/// spaces and parentheses, so the fields are counted after the last `)`).
#[must_use]
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find(" (")?;
    let pid = text[..open].trim().parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) pgrp(2) session(3) … starttime(19).
    Some(ProcStat {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        zombie: *f.first()? == "Z",
        start: f.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process of the system (thread group leaders: what `/proc` lists).
#[must_use]
pub fn proc_table() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(read_stat)
        .collect()
}

/// What one pass of the orphan reaper does, decided from a snapshot of `/proc`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tidy {
    /// Zombie children to reap: exited orphans the agent inherited.
    pub reap: Vec<i32>,
    /// Live processes a former run of the app left behind, to end.
    pub end: Vec<ProcStat>,
}

/// Decides a pass (pure). `me` and `my_sid`: the agent's pid and session; `live`: the apps
/// started and not reaped ([`spawn::live_apps`]), which their own supervisor waits for.
///
/// - Reaped: zombie children of the agent that are not a live app and not of the agent's own
///   session (the agent's own short-lived children, such as `mount`, are waited for by whoever
///   started them; every app runs in a session of its own).
/// - Ended: live descendants of the agent that are neither a live app, nor below one, nor in the
///   session of one, nor in the agent's session. Those are what the apps that exited left: an
///   app's whole process group is killed when it exits, so these are processes that left its
///   group (`setsid`, `setpgid`) and were re-parented to the agent, and their descendants.
#[must_use]
pub fn decide(table: &[ProcStat], me: i32, my_sid: i32, live: &BTreeSet<i32>) -> Tidy {
    let parent: BTreeMap<i32, i32> = table.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut out = Tidy::default();
    for p in table {
        if p.pid == me || live.contains(&p.pid) || p.sid == my_sid {
            continue;
        }
        if p.zombie {
            if p.ppid == me {
                out.reap.push(p.pid);
            }
            continue;
        }
        if live.contains(&p.sid) {
            continue;
        }
        // Up the parent chain: below a live app (keep), or the agent's (end), or neither.
        let mut at = p.ppid;
        let mut mine = false;
        for _ in 0..256 {
            if at == me {
                mine = true;
                break;
            }
            if live.contains(&at) || at <= 1 {
                break;
            }
            match parent.get(&at) {
                Some(&pp) => at = pp,
                None => break,
            }
        }
        if mine {
            out.end.push(*p);
        }
    }
    out
}

/// What a [`tidy`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Orphans reaped.
    pub reaped: usize,
    /// Leftover processes sent SIGKILL.
    pub ended: usize,
}

/// One pass of the orphan reaper: reaps exited orphans and, with `end_leftovers`, sends SIGKILL
/// to every process a former run of the app left behind (see [`decide`]). It holds the
/// registry of live apps throughout, so no app starts during the pass, and it signals each
/// process through a pidfd opened and checked against the snapshot (same start time), so a
/// recycled pid is never signalled.
pub fn tidy(end_leftovers: bool) -> Tidied {
    let live = spawn::live_apps();
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let my_sid = nix::unistd::getsid(None).map_or(0, Pid::as_raw);
    let plan = decide(&proc_table(), me, my_sid, &live);
    let mut done = Tidied::default();
    for pid in plan.reap {
        // Our own zombie child (not a live app): reaping it frees nothing anyone waits for.
        if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            done.reaped += 1;
            tracing::debug!(pid, ?status, "reaped an orphaned descendant");
        }
    }
    if end_leftovers {
        for p in plan.end {
            let Ok(fd) = spawn::pidfd_open(p.pid) else {
                continue; // gone meanwhile
            };
            if read_stat(p.pid).is_some_and(|now| now.start == p.start)
                && spawn::pidfd_send_signal(&fd, libc::SIGKILL).is_ok()
            {
                done.ended += 1;
                tracing::debug!(
                    pid = p.pid,
                    sid = p.sid,
                    "SIGKILL to a process the app left behind"
                );
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, sid: i32, zombie: bool) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            sid,
            zombie,
            start: 1,
        }
    }

    #[test]
    fn test_environment_is_path_account_env_then_secrets() {
        let vars = environment(
            Some((Path::new("/home/app"), "app")),
            [
                ("FOO", "1"),
                ("PATH", "/opt/bin"),
                ("HOME", "/srv"),
                ("SECRET", "s"),
            ],
        );
        assert_eq!(
            vars,
            vec![
                ("PATH", "/opt/bin"),
                ("HOME", "/srv"),
                ("USER", "app"),
                ("LOGNAME", "app"),
                ("FOO", "1"),
                ("SECRET", "s"),
            ]
        );
        assert_eq!(environment(None, []), vec![("PATH", DEFAULT_PATH)]);
    }

    #[test]
    fn test_parse_stat_with_odd_comm() {
        let s = parse_stat(
            "4242 (my (odd) app) S 100 4242 4242 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1 2",
        )
        .unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                ppid: 100,
                sid: 4242,
                zombie: false,
                start: 987_654
            }
        );
        assert!(
            parse_stat("9 (z) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5")
                .unwrap()
                .zombie
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn test_decide_ends_what_old_runs_left_and_keeps_the_live_app() {
        let (me, my_sid) = (100, 50);
        let live: BTreeSet<i32> = [200].into();
        let table = [
            p(me, 1, my_sid, false),
            // The live app, its child, a double-forked helper in its session, an escapee that
            // still has its parent: all kept.
            p(200, me, 200, false),
            p(201, 200, 200, false),
            p(202, me, 200, false),
            p(203, 201, 203, false),
            // The live app exited and is a zombie nobody reaped yet: never reaped here.
            // (Its entry stands for the window between its exit and its supervisor's wait.)
            // Left by an old run: an escapee re-parented to the agent, its child, a grandchild
            // that left its session too.
            p(300, me, 300, false),
            p(301, 300, 300, false),
            p(302, 301, 302, false),
            // An exited orphan, and an old app's zombie member.
            p(400, me, 400, true),
            p(401, me, 150, true),
            // The agent's own children in its session (a `mount`, a test's command), a zombie
            // one too: neither ended nor reaped (whoever started them waits for them).
            p(500, me, my_sid, false),
            p(501, me, my_sid, true),
            // Unrelated processes of the system.
            p(600, 1, 600, false),
            p(601, 600, 600, true),
        ];
        let t = decide(&table, me, my_sid, &live);
        assert_eq!(t.reap, vec![400, 401]);
        assert_eq!(
            t.end.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![300, 301, 302]
        );
        // A live app that is a zombie (exited, its supervisor about to wait for it).
        let table = [p(me, 1, my_sid, false), p(200, me, 200, true)];
        assert_eq!(decide(&table, me, my_sid, &live), Tidy::default());
    }

    /// Sends SIGKILL to `pid` when dropped (a test's leftover, also when it fails).
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A reaper pass forced into the window where an app has exited but its supervisor has not
    /// waited for it yet (right after the spawn returned, for an app that exits at once): the
    /// app stays its supervisor's to reap, and what it left outside its group is ended.
    #[tokio::test(flavor = "current_thread")]
    async fn test_a_pass_between_exit_and_wait_keeps_the_app_and_ends_its_leftover() {
        become_subreaper();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("escapee");
        let mut plan = spawn::Plan::new(
            &[
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("setsid sleep 300 & echo $! > {}; exit 7", file.display()),
            ],
            [("PATH", DEFAULT_PATH)],
            std::path::Path::new("/"),
            None,
        )
        .unwrap();
        let mut app = plan.spawn().unwrap();
        let pid = i32::try_from(app.id().unwrap()).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        wait_until("the escapee's pid", || {
            std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
        });
        let escapee: i32 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _kill = KillOnDrop(escapee);
        // Its own session too: until `setsid` ran, it is in the app's session, which the reaper
        // leaves to the app's supervisor.
        wait_until("the app's exit and the escapee's re-parenting", || {
            read_stat(pid).is_some_and(|p| p.zombie)
                && read_stat(escapee).is_some_and(|p| p.ppid == me && p.sid == escapee)
        });
        let done = tidy(true);
        assert!(
            read_stat(pid).is_some_and(|p| p.zombie),
            "the pass reaped the app, whose supervisor waits for it"
        );
        assert_eq!(app.try_wait().unwrap().and_then(|s| s.code()), Some(7));
        assert!(done.ended >= 1, "{done:?}");
        // The escapee dies of the SIGKILL; a later pass reaps it.
        wait_until("the escapee to be gone", || {
            tidy(false);
            read_stat(escapee).is_none()
        });
    }
}
