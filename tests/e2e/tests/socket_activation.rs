//! Failed requests per crash of the app under load, with the app binding `PORT` itself and with
//! socket activation (`[app] listen`): the real `bake-agent` supervising the sample Node app,
//! 8 concurrent clients on loopback straight at the app's port (no load balancer, so nothing
//! retries for them), and `GET /crash` a few times.
//!
//! Without socket activation a crash costs the requests the dying app had accepted, the
//! connections waiting in its own socket, and every connection refused until the next start has
//! bound its port again. With it, the agent's socket keeps the waiting connections and queues
//! the new ones, and the next start answers them: a crash costs at most the requests in flight
//! at the moment of the crash, and none is refused. The numbers are printed (docs/agent.md).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bake_e2e::fleet::{free_port, http_get, LoadGen, LoadStats};
use bake_e2e::paths::{repo_root, workspace_bin};
use bake_e2e::{Imds, ImdsState};

/// Concurrent clients (the load).
const CLIENTS: usize = 8;
/// Crashes per run.
const CRASHES: usize = 5;
/// Bounds of the load: requests in all, and time.
const MAX_REQUESTS: u64 = 100_000;
const MAX_TIME: Duration = Duration::from_secs(60);
/// Each client's pause between its requests.
const PAUSE: Duration = Duration::from_millis(5);

/// `bake-agent run` with the sample app; SIGTERM then SIGKILL when dropped.
struct Agent {
    child: Child,
    stderr: PathBuf,
    _imds: Imds,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(port: u16, listen: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bake-socket-activation")
            .tempdir()
            .expect("tempdir");
        let app = repo_root().join("examples/app/server.js");
        let bind = if listen {
            format!("listen = \"127.0.0.1:{port}\"\n")
        } else {
            format!("port = {port}\n")
        };
        // stable_after 1s: every crash (2 s apart) restarts at once, as the first crash after a
        // stable run does with the shipped settings.
        let cfg = dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"node\", \"{}\"]\n\
                 {bind}env = {{ APP_VERSION = \"7\" }}\nstop_timeout = \"3s\"\n\
                 [supervise]\nstable_after = \"1s\"\ncrash_loop_count = 100\n\
                 [readiness]\nprobe = \"http://127.0.0.1:{port}/health\"\ninterval = \"100ms\"\n",
                app.display()
            ),
        )
        .expect("write agent.toml");
        let imds = Imds::start(ImdsState::new("i-0sockact")).expect("IMDS stand-in");
        let stderr = dir.path().join("agent.stderr");
        let mut cmd = Command::new(workspace_bin("bake-agent"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("AWS_ENDPOINT_URL")
            .env("BAKE_AGENT_STATUS_FILE", dir.path().join("status.json"))
            .envs(imds.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        bake_e2e::process::die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn bake-agent");
        Self {
            child,
            stderr,
            _imds: imds,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Agent {
    /// SIGTERM (the agent stops the app), SIGKILL after 10 s (the app then gets its
    /// parent-death SIGKILL).
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it holds, or panics naming `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the load against the app (PORT or socket activation), crashes it [`CRASHES`] times,
/// and returns what the clients saw and, per crash, the time from the crash's answer to the
/// next start's first answer to `/health` (polled every 20 ms).
fn measure(listen: bool) -> (LoadStats, Vec<Duration>) {
    let port = free_port().expect("a free port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let agent = Agent::start(port, listen);
    wait_until("the app to answer", Duration::from_secs(30), || {
        matches!(http_get(addr, "/health"), Ok((200, _)))
    });
    let load = LoadGen::start(addr, "/", CLIENTS, MAX_REQUESTS, MAX_TIME, PAUSE).expect("load");
    std::thread::sleep(Duration::from_secs(1));
    let mut windows = Vec::new();
    for n in 1..=CRASHES {
        // The crash request itself is not part of the load: its 500 is the app's last answer.
        let (code, _) = http_get(addr, "/crash").expect("GET /crash");
        assert_eq!(code, 500);
        let crashed = Instant::now();
        wait_until("the restart", Duration::from_secs(10), || {
            agent.log().matches("restarted at once").count() >= n
        });
        wait_until("the app to answer again", Duration::from_secs(10), || {
            matches!(http_get(addr, "/health"), Ok((200, _)))
        });
        windows.push(crashed.elapsed());
        std::thread::sleep(Duration::from_secs(2));
    }
    let stats = load.stop();
    let log = agent.log();
    assert_eq!(
        log.matches("restarted at once").count(),
        CRASHES,
        "every crash restarted at once: {log}"
    );
    drop(agent);
    (stats, windows)
}

fn report(what: &str, s: &LoadStats, windows: &[Duration]) -> f64 {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_crash = s.failed as f64 / CRASHES as f64;
    let ms: Vec<u128> = windows.iter().map(Duration::as_millis).collect();
    eprintln!(
        "{what}: {CRASHES} crashes, {CLIENTS} clients: {per_crash:.1} failed requests per crash; {}; \
         crash to next answer (ms): {ms:?}",
        s.summary()
    );
    if !s.failures.is_empty() {
        eprintln!("{what}: first failures: {:?}", s.failures);
    }
    per_crash
}

#[test]
fn test_socket_activation_loses_only_the_requests_in_flight_at_a_crash() {
    let (before, before_windows) = measure(false);
    let (after, after_windows) = measure(true);
    report("app binds PORT", &before, &before_windows);
    report("socket activation", &after, &after_windows);
    for s in [&before, &after] {
        assert!(s.ok > 1000, "the load ran: {}", s.summary());
    }
    // With the agent's socket, nothing is refused while the app restarts…
    assert_eq!(
        after.causes.get("refused").copied().unwrap_or(0),
        0,
        "{}",
        after.summary()
    );
    // …and a crash costs at most the requests in flight then: each client has at most one.
    assert!(
        after.failed <= (CLIENTS * CRASHES) as u64,
        "more than {CLIENTS} failed requests per crash: {}",
        after.summary()
    );
}
