use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// SIGTERM to the child when the thread that started it ends: a harness killed outright (a test
/// runner's timeout) leaves no agents or haproxy behind. Drop stops them in order before that.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
}

/// Stops `child` and its process group: SIGTERM to the group, up to `grace` for it to exit,
/// then SIGKILL. The "--" matters: procps-ng `kill` reads a bare "-PID" after a signal option as
/// another signal and signals nobody.
pub fn stop_group(child: &mut Child, grace: Duration) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
}

/// Calls `f` once, from a thread of its own, when the process gets SIGINT or SIGTERM (a
/// harness program's Ctrl-C: it stops what it started, then exits). Nothing is called if the
/// signals cannot be watched.
pub fn on_interrupt(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let signalled = rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return false;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            true
        });
        if signalled {
            f();
        }
    });
}
