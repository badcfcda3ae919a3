//! Starting the app without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`, the way glibc's
//! `posix_spawn` starts a process, plus what `posix_spawn` cannot do: switch to the app's user
//! (supplementary groups, gid, uid) and ask for SIGKILL when the agent dies.
//!
//! Why not `std::process::Command`: with a `pre_exec` hook, a uid/gid or a PATH lookup, std falls
//! back to `fork`, which copies the agent's page tables (tens of MB of mappings) and makes the
//! agent take copy-on-write faults afterwards; on every restart that cost lies between the app's
//! death and its replacement. Here the child shares the agent's memory and runs on a small stack
//! of its own until it calls `execve`; the agent's thread is suspended meanwhile (CLONE_VFORK), so
//! a restart costs a few system calls plus the app's own `execve`.
//!
//! Everything the child needs is prepared before the clone, in the parent: C strings and pointer
//! arrays for argv/envp, the resolved program path, the ids, the pipes. The child then makes only
//! raw system calls (no allocation, no locks, no glibc wrappers with process-wide side effects such
//! as `setuid`'s broadcast to all threads) and reports a failure through memory it shares with the
//! parent before `_exit`.
//!
//! The exit is observed through a pidfd (Linux ≥ 5.3) registered with tokio's reactor. When the
//! app's main process has exited, the rest of its process group gets SIGKILL before the main
//! process is reaped: until then its pid, which is also the group's id, cannot name another
//! process. Every started app that is not reaped yet is listed in a registry of this process
//! ([`live_apps`]), so the supervisor's orphan reaper can tell the apps from what they left.

// The child resets signal dispositions with the kernel's `struct sigaction` and a 64-bit signal
// set (`KernelSigaction`); that layout is the one of x86_64 and arm64 Linux only.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "supervisor/spawn.rs is written for Linux on x86_64 or aarch64 (kernel sigaction layout)"
);

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sched::CloneFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::socket::{ListenSocket, LISTEN_FD, LISTEN_FDNAME, LISTEN_VARS};

/// Pids of the apps started by [`Plan::spawn`] in this process and not reaped yet.
static LIVE_APPS: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// The registry of started, unreaped apps. [`Plan::spawn`] holds it from the clone until the new
/// pid is in it, so whoever holds it sees every app child of this process that is not reaped.
pub fn live_apps() -> MutexGuard<'static, BTreeSet<libc::pid_t>> {
    LIVE_APPS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a program without a `/` is looked up when the environment has no PATH: execvp's
/// default. (The supervisor always gives the app a PATH of its own.)
const EXECVP_PATH: &str = "/bin:/usr/bin";

/// Size of the child's stack between clone and execve. It runs a handful of raw system calls;
/// glibc's posix_spawn uses 32 KiB plus argv. Only the pages it touches become resident.
const CHILD_STACK: usize = 64 * 1024;

/// Where a start failed, for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
enum Stage {
    None = 0,
    Stdio = 1,
    Session = 2,
    Groups = 3,
    Gid = 4,
    Uid = 5,
    DeathSignal = 6,
    Chdir = 7,
    Exec = 8,
    Capabilities = 9,
    Socket = 10,
    Priority = 11,
}

impl Stage {
    fn from_raw(v: i32) -> Self {
        match v {
            1 => Stage::Stdio,
            2 => Stage::Session,
            3 => Stage::Groups,
            4 => Stage::Gid,
            5 => Stage::Uid,
            6 => Stage::DeathSignal,
            7 => Stage::Chdir,
            8 => Stage::Exec,
            9 => Stage::Capabilities,
            10 => Stage::Socket,
            11 => Stage::Priority,
            _ => Stage::None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Stage::None => "clone",
            Stage::Stdio => "setting up stdin/stdout/stderr",
            Stage::Session => "setsid",
            Stage::Groups => "setgroups (app.user's supplementary groups)",
            Stage::Gid => "setresgid (app.group)",
            Stage::Uid => "setresuid (app.user)",
            Stage::DeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Stage::Chdir => "chdir (app.working_dir)",
            Stage::Priority => {
                "resetting the scheduling priority (setpriority, sched_setscheduler)"
            }
            Stage::Exec => "execve",
            Stage::Socket => "passing app.listen's socket as fd 3",
            Stage::Capabilities => {
                "emptying the capability bounding set (prctl PR_CAPBSET_DROP, needs CAP_SETPCAP) \
                 or setting no_new_privs"
            }
        }
    }
}

/// The user to become in the child: raw ids, resolved by the caller before the clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
    /// Supplementary groups.
    pub groups: Vec<libc::gid_t>,
}

/// A prepared start: built once per app spec, started again on every restart.
///
/// `Debug` shows the program and the number of arguments and variables, never their values
/// (the environment holds the secrets).
pub struct Plan {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    ids: Option<Ids>,
    /// The PATH the program is looked up in when it has no `/`.
    path: Option<Vec<u8>>,
    /// Socket activation: the listening socket every start gets as fd 3 (kept open here, so
    /// it outlives every run of the app).
    listen: Option<Arc<ListenSocket>>,
    stack: Box<[u8]>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("program", &self.program)
            .field("args", &self.argv.len())
            .field("env_vars", &self.envp.len())
            .field("ids", &self.ids)
            .field("listen", &self.listen.as_ref().map(|l| l.addr()))
            .finish_non_exhaustive()
    }
}

fn cstring(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Plan {
    /// Prepares argv (`command[0]` is the program), the environment (exactly `env`, in order),
    /// the working directory and the optional user switch.
    pub fn new<'a>(
        command: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
        ids: Option<Ids>,
    ) -> io::Result<Self> {
        let Some(first) = command.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "app.command is empty",
            ));
        };
        let argv = command
            .iter()
            .map(|a| cstring("an app.command argument", a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        let mut path = None;
        for (k, v) in env {
            if k.is_empty() || k.contains('=') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("environment variable name '{k}' is empty or contains '='"),
                ));
            }
            if k == "PATH" {
                path = Some(v.as_bytes().to_vec());
            }
            let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            // The message names the variable, never its value.
            envp.push(cstring(&format!("the value of {k}"), &kv)?);
        }
        Ok(Self {
            program: cstring("app.command[0]", first.as_bytes())?,
            argv,
            envp,
            cwd: cstring("app.working_dir", cwd.as_os_str().as_bytes())?,
            ids,
            path,
            listen: None,
            stack: vec![0u8; CHILD_STACK].into_boxed_slice(),
        })
    }

    /// Socket activation: every start gets `socket` as fd 3, with `LISTEN_PID` (its own pid,
    /// written in the child before execve), `LISTEN_FDS=1` and `LISTEN_FDNAMES=app` first in
    /// its environment; the plan's own `LISTEN_*` variables, if any, are dropped.
    #[must_use]
    pub fn with_listen_socket(mut self, socket: Arc<ListenSocket>) -> Self {
        self.envp.retain(|kv| {
            !LISTEN_VARS.iter().any(|k| {
                kv.as_bytes()
                    .strip_prefix(k.as_bytes())
                    .is_some_and(|rest| rest.starts_with(b"="))
            })
        });
        let fixed = [
            "LISTEN_FDS=1".to_owned(),
            format!("LISTEN_FDNAMES={LISTEN_FDNAME}"),
        ];
        for (i, kv) in fixed.into_iter().enumerate() {
            // No NUL in either: constants.
            self.envp
                .insert(i, CString::new(kv).expect("LISTEN_* values hold no NUL"));
        }
        self.listen = Some(socket);
        self
    }

    /// The program as given (`command[0]`).
    #[must_use]
    pub fn program(&self) -> &str {
        self.program.to_str().unwrap_or("?")
    }

    /// The program to execute: as given when it holds a `/`, else the first executable file of
    /// that name in the app's PATH.
    fn resolve(&self) -> io::Result<CString> {
        let prog = self.program.as_bytes();
        if prog.contains(&b'/') {
            return Ok(self.program.clone());
        }
        let path = self.path.as_deref().unwrap_or(EXECVP_PATH.as_bytes());
        for dir in path.split(|b| *b == b':').filter(|d| !d.is_empty()) {
            let cand = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(prog));
            if is_executable(&cand) {
                return cstring("app.command[0]", cand.as_os_str().as_bytes());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "'{}' not found in PATH ({})",
                self.program(),
                String::from_utf8_lossy(path)
            ),
        ))
    }

    /// Starts the app: its own session and process group, stdin from /dev/null, stdout and
    /// stderr into fresh pipes, the configured user, SIGKILL when the calling thread ends.
    ///
    /// Call it from a thread that lives as long as the app should (the supervisor's thread):
    /// the kernel sends the parent-death signal when that thread ends.
    pub fn spawn(&mut self) -> io::Result<AppProcess> {
        let program = self.resolve()?;
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        // `LISTEN_PID=` and room for the child's pid (at most 10 digits) and the NUL: the child
        // writes them, as only it knows its pid before execve.
        let mut listen_pid = [0u8; LISTEN_PID_PREFIX.len() + 11];
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let listen_pid_ptr: *mut u8 = listen_pid.as_mut_ptr();
        if self.listen.is_some() {
            envp.insert(0, listen_pid_ptr.cast_const().cast());
        }
        envp.push(std::ptr::null());
        // Child ends of the pipes and /dev/null, all close-on-exec and numbered above 2, so the
        // dup2 calls in the child neither clobber each other nor leave a copy behind.
        let devnull = above_stdio(std::fs::File::open("/dev/null")?.into())?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let child = ChildArgs {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: self.cwd.as_ptr(),
            stdin: devnull.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            ids: self
                .ids
                .as_ref()
                .map(|i| (i.uid, i.gid, i.groups.as_ptr(), i.groups.len())),
            parent: std::process::id(),
            listen: self.listen.as_ref().map_or(-1, |l| l.as_raw_fd()),
            listen_pid: listen_pid_ptr,
        };
        let mut failure = Failure { stage: 0, errno: 0 };
        let failure_ptr: *mut Failure = &mut failure;
        // Held until the new pid is registered: a reaper that holds it never sees the new child
        // unregistered.
        let mut live = live_apps();
        let pid = {
            let _blocked = BlockSignals::new()?;
            // SAFETY: CLONE_VM | CLONE_VFORK: the child shares our memory and runs on `stack`,
            // which nothing else uses while it runs, and this thread is suspended until the
            // child has called execve or _exit, so `child`, the C strings and pointer arrays it
            // points into, and `failure` all outlive the child's use of them. All signals are
            // blocked around the clone, so none of the agent's handlers can run on the child's
            // stack; `child_main` resets them before it unblocks. `child_main` makes only raw
            // system calls (async-signal-safe, no allocation, no locks) and never returns; its
            // contract (pointers valid, run only in such a child) holds for the same reasons.
            unsafe {
                nix::sched::clone(
                    Box::new(|| child_main(&child, failure_ptr)),
                    &mut self.stack,
                    CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                    Some(libc::SIGCHLD),
                )
            }
            .map_err(io::Error::from)?
        };
        drop((devnull, out_w, err_w));
        // SAFETY: the child has exec'd or exited (CLONE_VFORK), so nothing writes `failure` now;
        // volatile because the compiler cannot see the child's write.
        let failure = unsafe { std::ptr::read_volatile(failure_ptr) };
        let pid_raw = pid.as_raw();
        if failure.stage != 0 {
            // The child exited with 127 after the failed step: reap it before reporting.
            let mut status = 0;
            // SAFETY: plain waitpid on our own child.
            unsafe { libc::waitpid(pid_raw, &mut status, 0) };
            let stage = Stage::from_raw(failure.stage);
            let err = io::Error::from_raw_os_error(failure.errno);
            return Err(io::Error::new(
                err.kind(),
                format!("{}: {err}", stage.what()),
            ));
        }
        let pidfd = match pidfd_open(pid_raw) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd nobody could wait for it: end it here.
                // SAFETY: kill and waitpid on our own, unreaped child.
                unsafe {
                    libc::kill(pid_raw, libc::SIGKILL);
                    libc::waitpid(pid_raw, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        live.insert(pid_raw);
        drop(live);
        Ok(AppProcess {
            pid: u32::try_from(pid_raw).unwrap_or(0),
            // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped
            // with the AsyncFd.
            pidfd: unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            status: None,
            stdout: Some(out_r),
            stderr: Some(err_r),
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `fd`, or a close-on-exec copy of it numbered 3 or higher.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // try_clone uses F_DUPFD_CLOEXEC with a minimum of 3.
    fd.try_clone()
}

/// A pipe: (read end, write end), both close-on-exec and above stdio.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `pidfd_open(2)`: a descriptor naming exactly process `pid` (non-blocking).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("pidfd_open (needs Linux 5.3 or later): {e}"),
        ));
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open: bad fd"))?;
    // SAFETY: a fresh fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// All signals blocked in the calling thread while it lives; the previous mask restored on drop.
struct BlockSignals {
    old: libc::sigset_t,
}

impl BlockSignals {
    fn new() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask initialise and read it.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { old })
        }
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// What the child reports when a step fails (written by the child, read after it exited).
#[derive(Clone, Copy)]
#[repr(C)]
struct Failure {
    stage: i32,
    errno: i32,
}

/// Everything the child reads: raw pointers into memory the parent keeps alive.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// uid, gid, groups pointer, groups length.
    ids: Option<(libc::uid_t, libc::gid_t, *const libc::gid_t, usize)>,
    /// The agent's pid, to notice a parent that died before the death signal was set.
    parent: u32,
    /// The listening socket to pass as fd 3 (close-on-exec in the agent), or -1.
    listen: RawFd,
    /// `LISTEN_PID=` followed by room for the pid's digits and the NUL, in the parent's memory.
    listen_pid: *mut u8,
}

/// The start of the `LISTEN_PID` entry the child completes.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// Socket activation in the child: `a.listen` becomes fd 3, inherited across execve and
/// blocking (a previous run may have made the shared file description non-blocking, as Node
/// does; a new one starts as systemd hands sockets), and `LISTEN_PID` gets the child's pid.
/// Returns the errno of a failed step.
///
/// # Safety
/// As [`child_main`]: only in the cloned child, `a.listen_pid` pointing to the parent's
/// buffer of `LISTEN_PID_PREFIX.len() + 11` bytes.
unsafe fn pass_listen_socket(a: &ChildArgs) -> Result<(), i32> {
    // SAFETY: raw system calls on descriptors of this process, and writes into the buffer
    // the function's contract describes.
    unsafe {
        let errno = || *libc::__errno_location();
        // The agent's socket is never fd 3 itself (ListenSocket keeps it above), so this makes
        // a copy, and the copy is not close-on-exec.
        if libc::dup2(a.listen, LISTEN_FD) < 0 {
            return Err(errno());
        }
        let fl = libc::fcntl(LISTEN_FD, libc::F_GETFL);
        if fl < 0 || libc::fcntl(LISTEN_FD, libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
            return Err(errno());
        }
        // getpid(2) itself: the child's own pid (the C library may cache the parent's).
        let mut pid = u64::try_from(libc::syscall(libc::SYS_getpid)).unwrap_or(0);
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + u8::try_from(pid % 10).unwrap_or(0);
            pid /= 10;
            n += 1;
            if pid == 0 || n == 10 {
                break;
            }
        }
        let out = a.listen_pid.add(LISTEN_PID_PREFIX.len());
        for i in 0..n {
            std::ptr::write_volatile(out.add(i), digits[n - 1 - i]);
        }
        std::ptr::write_volatile(out.add(n), 0);
        Ok(())
    }
}

/// The kernel's `struct sigaction` (x86_64 and arm64 alike), not the C library's.
#[derive(Default)]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Records the failed step for the parent and ends the child.
///
/// # Safety
/// `failure` points into the suspended parent's memory (see [`Plan::spawn`]).
unsafe fn fail(failure: *mut Failure, stage: Stage, errno: i32) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        std::ptr::write_volatile(
            failure,
            Failure {
                stage: stage as i32,
                errno,
            },
        );
        libc::_exit(127)
    }
}

/// The child, between clone and execve: system calls only (the C library's thin,
/// async-signal-safe wrappers, or raw calls where a wrapper has process-wide effects); never
/// returns.
///
/// # Safety
/// Call it only as the entry of a child cloned with `CLONE_VM | CLONE_VFORK` (the parent's
/// thread suspended until the child calls execve or _exit), with every pointer in `a` (program,
/// argv, envp and their strings, cwd, groups) and `failure` pointing to live memory of that
/// parent, as [`Plan::spawn`] prepares them, and all signals blocked.
unsafe fn child_main(a: &ChildArgs, failure: *mut Failure) -> isize {
    // SAFETY: system calls on memory the suspended parent keeps alive (the function's contract);
    // errno lives in the parent thread's TLS, which is harmless while it waits.
    unsafe {
        let errno = || *libc::__errno_location();
        // stdin, stdout, stderr: the sources are close-on-exec and numbered above 2, so dup2
        // never sees equal numbers and the copies it makes survive execve.
        for (from, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(failure, Stage::Stdio, errno());
            }
        }
        // After stdio: one of the sources above may be fd 3, which this replaces.
        if a.listen >= 0 {
            if let Err(e) = pass_listen_socket(a) {
                fail(failure, Stage::Socket, e);
            }
        }
        // Own session and process group (pgid = pid): signals reach the app's whole tree.
        if libc::setsid() < 0 {
            fail(failure, Stage::Session, errno());
        }
        // The app runs at the default priority, whatever the agent's own: a supervisor given a
        // higher one (bake-agent.service's Nice=, or a real-time policy) restarts the app sooner
        // under CPU load, and that must not make the app itself outrank the machine's other
        // work. Lowering a priority needs no privilege. (Raw calls: getpriority(2)'s raw value
        // is 20 - nice, so never -1.)
        if libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0) > 20
            && libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, 0, 0) < 0
        {
            fail(failure, Stage::Priority, errno());
        }
        let policy = libc::syscall(libc::SYS_sched_getscheduler, 0);
        if policy == libc::c_long::from(libc::SCHED_FIFO)
            || policy == libc::c_long::from(libc::SCHED_RR)
        {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::syscall(
                libc::SYS_sched_setscheduler,
                0,
                libc::SCHED_OTHER,
                &param as *const libc::sched_param,
            ) < 0
            {
                fail(failure, Stage::Priority, errno());
            }
        }
        // The app starts with an empty capability bounding set and no_new_privs, whatever the
        // agent keeps: before the uid change, which takes CAP_SETPCAP from the effective set.
        if let Err(e) = super::privileges::restrict_exec() {
            fail(
                failure,
                Stage::Capabilities,
                e.raw_os_error().unwrap_or(libc::EPERM),
            );
        }
        if let Some((uid, gid, groups, n)) = a.ids {
            // Raw calls: glibc's setuid/setgid/setgroups would signal every thread of the
            // agent (whose memory this child shares) to change its ids too.
            if libc::syscall(libc::SYS_setgroups, n, groups) < 0 {
                fail(failure, Stage::Groups, errno());
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
                fail(failure, Stage::Gid, errno());
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                fail(failure, Stage::Uid, errno());
            }
        }
        // After the id change, which clears it: the app gets SIGKILL when the agent's thread
        // that started it ends, so a SIGKILLed agent does not leave it holding the port.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            fail(failure, Stage::DeathSignal, errno());
        }
        if u32::try_from(libc::getppid()).ok() != Some(a.parent) {
            fail(failure, Stage::DeathSignal, libc::ESRCH);
        }
        if libc::chdir(a.cwd) < 0 {
            fail(failure, Stage::Chdir, errno());
        }
        // Default dispositions (the agent's handlers are not the app's, and the Rust runtime
        // ignores SIGPIPE) and an empty signal mask, as a freshly started program expects.
        // Raw rt_sigaction: the C library refuses its own reserved signals, which the agent
        // may have inherited as ignored. All zero = SIG_DFL, no flags, empty mask.
        let dfl = KernelSigaction::default();
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(failure, Stage::Exec, errno())
    }
}

/// A started app: its pid, a pidfd to await its exit and to check it before its group is
/// signalled, its stdout/stderr pipes.
#[derive(Debug)]
pub struct AppProcess {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    /// Read end of the app's stdout (close-on-exec), until taken; register it with the runtime
    /// that reads it (`tokio::net::unix::pipe::Receiver::from_owned_fd`).
    pub stdout: Option<OwnedFd>,
    /// Read end of the app's stderr, likewise.
    pub stderr: Option<OwnedFd>,
}

impl AppProcess {
    /// The pid while the process has not been reaped.
    #[must_use]
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    /// Sends `sig` to the app's process group (its main process's pid is the group's id).
    ///
    /// Only while the main process is not reaped: then its pid cannot name another process or
    /// group. Its pidfd proves that (a signal-0 probe through it fails with ESRCH once anything
    /// reaped it), so a recycled pid is never signalled; one `killpg` then reaches every member
    /// once (a second SIGTERM means "quit now" to many programs). Returns `false` when there was
    /// nothing to signal.
    pub fn signal_group(&self, sig: nix::sys::signal::Signal) -> bool {
        if self.status.is_some() {
            return false;
        }
        if let Err(e) = pidfd_send_signal(self.pidfd.get_ref(), 0) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid = self.pid, error = %e, "cannot check the app through its pidfd");
            }
            return false;
        }
        let Ok(pgid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig) {
            Ok(()) => true,
            Err(nix::Error::ESRCH) => false,
            Err(e) => {
                tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal the app's process group");
                false
            }
        }
    }

    /// The exit status if the main process has exited, without waiting. Then the rest of its
    /// process group gets SIGKILL, and only after that is the main process reaped.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        reap_exited(self.pid, &mut self.status)
    }

    /// Waits for the exit (cancel-safe: nothing is lost when the future is dropped); see
    /// [`Self::try_wait`].
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = reap_exited(self.pid, &mut self.status)? {
                return Ok(s);
            }
            let mut ready = self.pidfd.readable().await?;
            if let Some(s) = reap_exited(self.pid, &mut self.status)? {
                return Ok(s);
            }
            ready.clear_ready();
        }
    }
}

/// [`AppProcess::try_wait`]: the status is remembered, so a reaped pid is never used again.
fn reap_exited(pid: u32, status: &mut Option<ExitStatus>) -> io::Result<Option<ExitStatus>> {
    if let Some(s) = *status {
        return Ok(Some(s));
    }
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("bad pid"))?;
    if !exited(pid)? {
        return Ok(None);
    }
    // What is left of its process group goes now, while the zombie main process still holds
    // the group's id: a leftover would keep the app's pipes, its port or its files.
    // SAFETY: killpg on the group whose leader is our exited, unreaped child.
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    let mut raw = 0;
    // SAFETY: waitpid on our own child, which has exited.
    match unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => {
            let s = ExitStatus::from_raw(raw);
            *status = Some(s);
            live_apps().remove(&pid);
            Ok(Some(s))
        }
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        // Nobody waits for it any more: it is an orphan to the supervisor's reaper now.
        if self.status.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                live_apps().remove(&pid);
            }
        }
    }
}

/// Has our child `pid` exited? (`WNOWAIT`: it stays a zombie, unreaped.)
fn exited(pid: libc::pid_t) -> io::Result<bool> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::other("bad pid"))?;
    // SAFETY: siginfo_t is plain data; all zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid siginfo_t to fill in.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` in, or left it zeroed (si_pid 0) when the child runs.
    Ok(unsafe { info.si_pid() } != 0)
}

/// `pidfd_send_signal(2)`: a signal to exactly the process the pidfd names (0: only checks).
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;
    use tokio::net::unix::pipe;

    /// A plan with exactly `env`, and a PATH when `env` has none.
    fn plan(cmd: &[&str], env: &[(&str, &str)], cwd: &Path, ids: Option<Ids>) -> Plan {
        let cmd: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
        let path = [("PATH", "/usr/bin:/bin")]
            .into_iter()
            .filter(|_| !env.iter().any(|(k, _)| *k == "PATH"));
        Plan::new(&cmd, path.chain(env.iter().copied()), cwd, ids).unwrap()
    }

    async fn output(p: &mut AppProcess) -> (String, String, ExitStatus) {
        let (mut out, mut err) = (String::new(), String::new());
        let mut o = pipe::Receiver::from_owned_fd(p.stdout.take().unwrap()).unwrap();
        let mut e = pipe::Receiver::from_owned_fd(p.stderr.take().unwrap()).unwrap();
        let (a, b) = tokio::join!(o.read_to_string(&mut out), e.read_to_string(&mut err));
        a.unwrap();
        b.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap()
            .unwrap();
        (out, err, status)
    }

    /// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
    fn stat_field(pid: u32, n: usize) -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the command's closing parenthesis come fields 3 onwards.
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
    }

    /// A supervisor with a raised priority (bake-agent.service's Nice=, a real-time policy)
    /// starts the app at the default one. Needs root (CI runs as root), like lowering a nice
    /// value or taking a real-time policy does.
    #[tokio::test(flavor = "current_thread")]
    async fn test_the_app_does_not_inherit_a_raised_priority() {
        let dir = tempfile::tempdir().unwrap();
        // This thread alone (nice and policy are per thread on Linux): nice -5, then SCHED_RR.
        // SAFETY: setpriority/sched_setscheduler on the calling thread (who = 0).
        unsafe {
            assert_eq!(
                libc::setpriority(libc::PRIO_PROCESS, 0, -5),
                0,
                "needs root"
            );
        }
        let mut p = plan(&["sleep", "5"], &[], dir.path(), None);
        let child = p.spawn().unwrap();
        let pid = child.id().unwrap();
        assert_eq!(stat_field(pid, 19), 0, "nice of the app");
        assert_eq!(
            stat_field(pid, 41),
            i64::from(libc::SCHED_OTHER),
            "policy of the app"
        );
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                libc::sched_setscheduler(0, libc::SCHED_RR, &param),
                0,
                "needs root"
            );
        }
        let mut p = plan(&["sleep", "5"], &[], dir.path(), None);
        let rt = p.spawn().unwrap();
        let rt_pid = rt.id().unwrap();
        assert_eq!(stat_field(rt_pid, 41), i64::from(libc::SCHED_OTHER));
        assert_eq!(stat_field(rt_pid, 40), 0, "real-time priority of the app");
        // SAFETY: back to the default for this thread.
        unsafe {
            let zero = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &zero);
            libc::setpriority(libc::PRIO_PROCESS, 0, 0);
        }
        for pid in [pid, rt_pid] {
            // SAFETY: our own children.
            unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn test_exact_environment_working_dir_pipes_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(
            &["sh", "-c", "env | sort; pwd; echo oops >&2; exit 3"],
            &[("FOO", "bar baz"), ("PATH", "/usr/bin:/bin")],
            dir.path(),
            None,
        );
        let mut child = p.spawn().unwrap();
        assert!(child.id().is_some());
        let (out, err, status) = output(&mut child).await;
        let lines: Vec<&str> = out.lines().collect();
        // Only what the plan gives (sh adds PWD and may add SHLVL/_), never the test's own env.
        assert!(lines.contains(&"FOO=bar baz"), "{out}");
        assert!(lines.contains(&"PATH=/usr/bin:/bin"), "{out}");
        assert!(
            !out.contains("CARGO"),
            "the agent's environment leaked: {out}"
        );
        assert_eq!(
            lines.last().copied(),
            Some(dir.path().canonicalize().unwrap().to_str().unwrap())
        );
        assert_eq!(err, "oops\n");
        assert_eq!(status.code(), Some(3));
        assert_eq!(child.id(), None, "reaped");
        // The plan starts again (a restart reuses it).
        let mut again = p.spawn().unwrap();
        assert_eq!(output(&mut again).await.2.code(), Some(3));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn test_own_session_devnull_stdin_default_signals() {
        let mut p = plan(
            &["cat", "/proc/self/stat", "/proc/self/status"],
            &[],
            Path::new("/"),
            None,
        );
        let mut child = p.spawn().unwrap();
        let pid = child.id().unwrap();
        let (out, _, status) = output(&mut child).await;
        assert!(status.success());
        let stat = out.lines().next().unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // state ppid pgrp session: its own process group and session.
        assert_eq!(fields[2], pid.to_string(), "pgrp: {stat}");
        assert_eq!(fields[3], pid.to_string(), "session: {stat}");
        assert_eq!(fields[1], std::process::id().to_string(), "ppid");
        // The test harness ignores SIGPIPE; the app must not inherit that, nor a blocked mask.
        for key in ["SigBlk:", "SigIgn:"] {
            let line = out.lines().find(|l| l.starts_with(key)).unwrap();
            assert!(
                line.trim_start_matches(key)
                    .trim()
                    .chars()
                    .all(|c| c == '0'),
                "{line}"
            );
        }
        let mut p = plan(&["readlink", "/proc/self/fd/0"], &[], Path::new("/"), None);
        let (out, _, _) = output(&mut p.spawn().unwrap()).await;
        assert_eq!(out.trim(), "/dev/null");
    }

    /// Needs root (CI and the development machines run the tests as root): without it the
    /// switch fails and so does the test.
    #[tokio::test(flavor = "current_thread")]
    async fn test_runs_as_the_given_user_and_groups() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "switching users needs root: run the tests as root"
        );
        let ids = Ids {
            uid: 65534,
            gid: 65533,
            groups: vec![65533, 4242],
        };
        let mut p = plan(
            &["sh", "-c", "id -u; id -g; id -G"],
            &[],
            Path::new("/"),
            Some(ids),
        );
        let (out, err, status) = output(&mut p.spawn().unwrap()).await;
        assert!(status.success(), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "65534");
        assert_eq!(lines[1], "65533");
        let mut groups: Vec<&str> = lines[2].split(' ').collect();
        groups.sort_unstable();
        assert_eq!(groups, ["4242", "65533"]);
        // The agent itself is unchanged (raw calls in the child only).
        assert_eq!(nix::unistd::geteuid().as_raw(), 0);
        assert_eq!(nix::unistd::getegid().as_raw(), 0);
    }

    /// The app holds no capability the agent holds, now or after an execve (CI runs the tests
    /// as root, with every capability in the bounding set: a drop that did not happen shows).
    #[tokio::test(flavor = "current_thread")]
    async fn test_the_app_starts_with_an_empty_bounding_set_and_no_new_privs() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "emptying the bounding set needs CAP_SETPCAP: run the tests as root"
        );
        let ids = Ids {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let privileges = || {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let before = privileges();
        assert!(
            !before.contains("CapBnd:\t0000000000000000"),
            "the tests' own bounding set is empty: nothing to show\n{before}"
        );
        for ids in [None, Some(ids)] {
            let as_root = ids.is_none();
            let mut p = plan(&["cat", "/proc/self/status"], &[], Path::new("/"), ids);
            let (out, err, status) = output(&mut p.spawn().unwrap()).await;
            assert!(status.success(), "{err}");
            let field = |key: &str| {
                out.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no {key} in {out}"))
                    .to_owned()
            };
            assert_eq!(field("CapBnd:"), "0000000000000000", "root: {as_root}");
            assert_eq!(field("CapEff:"), "0000000000000000", "root: {as_root}");
            assert_eq!(field("CapAmb:"), "0000000000000000", "root: {as_root}");
            assert_eq!(field("NoNewPrivs:"), "1", "root: {as_root}");
        }
        // The agent keeps its own (raw calls in the child only).
        assert_eq!(privileges(), before);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn test_failures_name_the_step_and_leave_no_child() {
        let mut p = plan(&["no-such-program-here"], &[], Path::new("/"), None);
        let e = p.spawn().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("not found in PATH"), "{e}");

        let mut p = plan(&["/nonexistent/app"], &[], Path::new("/"), None);
        let e = p.spawn().unwrap_err();
        assert!(e.to_string().starts_with("execve:"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);

        let mut p = plan(&["true"], &[], Path::new("/nonexistent/dir"), None);
        let e = p.spawn().unwrap_err();
        assert!(e.to_string().starts_with("chdir"), "{e}");
        // Every failed child was reaped by spawn itself. __WNOTHREAD: only children of this
        // test's thread (the one that called spawn), never those of tests on other threads.
        // SAFETY: waitpid for a child of this thread, without blocking.
        let rc =
            unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WNOTHREAD) };
        assert!(rc <= 0, "a failed child was left behind: {rc}");

        let e = Plan::new(
            &["true".to_owned()],
            [("SECRET", "a\0b")],
            Path::new("/"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("SECRET"), "{e}");
        assert!(!e.to_string().contains("a\0b"));
    }

    /// The fds in `ls -l /proc/self/fd` output that name `target`.
    fn fds_naming(ls: &[&str], target: &str) -> Vec<i32> {
        ls.iter()
            .filter_map(|l| {
                let (name, t) = l.split_once(" -> ")?;
                let fd = name.rsplit(' ').next()?.parse().ok()?;
                (t == target).then_some(fd)
            })
            .collect()
    }

    /// The `socket:[inode]` an fd of this process names.
    fn socket_inode(fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .display()
            .to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn test_the_listen_socket_is_fd_3_with_listen_pid_of_the_child() {
        let socket = Arc::new(ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        // Made non-blocking as a previous run (Node) leaves the shared file description.
        socket2::SockRef::from(&*socket)
            .set_nonblocking(true)
            .unwrap();
        let script = "echo \"$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES\"; env | grep -c '^LISTEN_PID='; \
                      readlink /proc/$$/fd/3; grep '^flags:' /proc/$$/fdinfo/3; exec ls -l /proc/self/fd";
        let mut p = plan(
            &["sh", "-c", script],
            &[("LISTEN_PID", "1"), ("LISTEN_FDS", "7"), ("A", "b")],
            Path::new("/"),
            None,
        )
        .with_listen_socket(socket.clone());
        for _ in 0..2 {
            let mut child = p.spawn().unwrap();
            let pid = child.id().unwrap();
            let (out, err, status) = output(&mut child).await;
            assert!(status.success(), "{err}");
            let lines: Vec<&str> = out.lines().collect();
            // LISTEN_PID is the started process's own pid, on every start; the plan's own
            // LISTEN_* values are gone.
            assert_eq!(lines[0], format!("{pid} {pid} 1 app"), "{out}");
            assert_eq!(lines[1], "1", "one LISTEN_PID: {out}");
            // fd 3 is the agent's socket, inherited (no O_CLOEXEC, 02000000) and blocking
            // (no O_NONBLOCK, 04000).
            assert_eq!(lines[2], socket_inode(socket.as_raw_fd()), "{out}");
            let flags =
                u32::from_str_radix(lines[3].trim_start_matches("flags:").trim(), 8).unwrap();
            assert_eq!(flags & 0o2_000_000, 0, "close-on-exec: {out}");
            assert_eq!(flags & 0o4000, 0, "non-blocking: {out}");
            // The socket is there as fd 3 only: the agent's copy (close-on-exec) did not leak.
            assert_eq!(fds_naming(&lines[4..], lines[2]), [3], "{out}");
        }
        // The agent's own copy stays close-on-exec.
        // SAFETY: F_GETFD on a descriptor the socket owns.
        let fl = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
        // Without a socket: no fd 3 and no LISTEN_* variables.
        let mut p = plan(
            &[
                "sh",
                "-c",
                "env | grep -c '^LISTEN_'; exec ls -l /proc/self/fd",
            ],
            &[],
            Path::new("/"),
            None,
        );
        let (out, _, _) = output(&mut p.spawn().unwrap()).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "0", "{out}");
        let inode = socket_inode(socket.as_raw_fd());
        assert_eq!(fds_naming(&lines[1..], &inode), Vec::<i32>::new(), "{out}");
    }

    #[test]
    fn test_debug_never_shows_the_environment() {
        let p = plan(
            &["true"],
            &[("DB_PASSWORD", "hunter2")],
            Path::new("/"),
            None,
        );
        let d = format!("{p:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("true"), "{d}");
    }

    #[test]
    fn test_the_app_dies_with_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut p = plan(&["sleep", "30"], &[], Path::new("/"), None);
                let child = p.spawn().unwrap();
                let pid = child.id().unwrap();
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let pid = libc::pid_t::try_from(pid).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let mut raw = 0;
        loop {
            // SAFETY: waitpid on our own child, without blocking.
            let rc = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
            if rc == pid {
                break;
            }
            assert!(Instant::now() < end, "the app outlived its starting thread");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ExitStatus::from_raw(raw).signal(), Some(libc::SIGKILL));
    }
}
