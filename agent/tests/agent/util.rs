//! Shared helpers: a per-test directory, the agent binary, an emulated group.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bake_e2e::{Emulator, Imds, ImdsState};

/// The agent binary of this package.
pub const AGENT: &str = env!("CARGO_BIN_EXE_bake-agent");

/// The sample app.
pub fn sample_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/app/server.js")
}

/// A per-test directory holding `agent.toml` and whatever the test's app writes.
pub struct TestDir {
    /// The directory.
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("bake-agent-test")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `agent.toml` and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.path("agent.toml");
        std::fs::write(&p, text).expect("write agent.toml");
        p
    }
}

/// A `bake-agent` command with the config, the emulator and an IMDS stand-in in its environment.
pub fn agent(config: &Path, emu: Option<&Emulator>, imds: Option<&Imds>) -> Command {
    let mut c = Command::new(AGENT);
    c.arg("--config").arg(config);
    c.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("AWS_ENDPOINT_URL");
    // The state file next to the config, never the host's /run/bake.
    c.env(
        "BAKE_AGENT_STATUS_FILE",
        config
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("status.json"),
    );
    // Without a stand-in, point IMDS at a closed port so nothing leaves loopback.
    c.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/");
    if let Some(e) = emu {
        c.envs(e.env());
    }
    if let Some(i) = imds {
        c.envs(i.env());
    }
    c
}

/// A running agent whose stderr is collected; killed when dropped.
pub struct Running {
    pub child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bake-agent");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let s2 = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                eprint!("{text}");
                s2.lock().unwrap().push_str(&text);
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// A started agent whose stderr the test redirected itself (nothing collected).
    pub fn from_child(child: Child) -> Self {
        Self {
            child,
            stderr: std::sync::Arc::new(std::sync::Mutex::new(String::new())),
            reader: None,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// SIGTERM, then the exit code (within `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.wait(timeout)
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader drain the pipe to its end (bounded: 5 s).
                let until = Instant::now() + Duration::from_secs(5);
                while self.reader.as_ref().is_some_and(|r| !r.is_finished())
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh IMDS stand-in for `instance_id`.
pub fn imds(instance_id: &str) -> Imds {
    Imds::start(ImdsState::new(instance_id)).expect("start the IMDS stand-in")
}

/// The runtime for AWS calls from sync tests.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates group `name` with `desired` instances in the emulator (hooks: `(transition, default
/// result)`), and returns its instance ids once they exist.
pub async fn group(
    aws: &bake_e2e::Aws,
    name: &str,
    desired: i32,
    hooks: &[(&str, &str)],
) -> Vec<String> {
    aws.ec2
        .create_launch_template()
        .launch_template_name(format!("{name}-lt"))
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("create launch template");
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(format!("{name}-lt"))
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(desired + 2)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("create group");
    for (i, (transition, default)) in hooks.iter().enumerate() {
        aws.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(format!("{name}-hook{i}"))
            .lifecycle_transition(*transition)
            .default_result(*default)
            // 3000 s at the emulator's time scale (0.01): 30 s, ample for a test.
            .heartbeat_timeout(3000)
            .send()
            .await
            .expect("put lifecycle hook");
    }
    aws.asg
        .set_desired_capacity()
        .auto_scaling_group_name(name)
        .desired_capacity(desired)
        .send()
        .await
        .expect("set desired");
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids = instances(aws, name)
            .await
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        if ids.len() == usize::try_from(desired).unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ids.len(),
        usize::try_from(desired).unwrap(),
        "instances of {name}"
    );
    ids
}

/// (instance id, lifecycle state, health) of the group's instances.
pub async fn instances(aws: &bake_e2e::Aws, name: &str) -> Vec<(String, String, String)> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe groups");
    out.auto_scaling_groups()
        .first()
        .map(|g| {
            g.instances()
                .iter()
                .map(|i| {
                    (
                        i.instance_id().unwrap_or_default().to_owned(),
                        i.lifecycle_state()
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default(),
                        i.health_status().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lifecycle state of one instance (None once it left the group).
pub async fn state_of(aws: &bake_e2e::Aws, group: &str, id: &str) -> Option<(String, String)> {
    instances(aws, group)
        .await
        .into_iter()
        .find(|(i, _, _)| i == id)
        .map(|(_, s, h)| (s, h))
}

/// Terminates the instance `id` of `group` through Auto Scaling (desired capacity down by one)
/// and waits until its terminate hook holds it in `Terminating:Wait`.
pub fn terminate_into_wait(
    rt: &tokio::runtime::Runtime,
    aws: &bake_e2e::Aws,
    group: &str,
    id: &str,
) {
    rt.block_on(async {
        aws.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .expect("terminate")
    });
    wait_for("Terminating:Wait", Duration::from_secs(10), || {
        (rt.block_on(state_of(aws, group, id))?.0 == "Terminating:Wait").then_some(())
    });
}

/// Processes whose parent is `pid`, with their state letter.
pub fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| stat[i + 1..].to_owned()) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|s| s.parse::<i32>().ok()) == Some(pid) {
            out.push((p, state));
        }
    }
    out
}

/// Is process `pid` alive (and not a zombie)?
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
    })
}

/// A stand-in for systemd's notify socket (`$NOTIFY_SOCKET`): a datagram socket in the test's
/// directory whose messages (`READY=1`, `STATUS=…`) a thread collects.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind(path: PathBuf) -> Self {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m2, s2) = (messages.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m2.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        Self {
            path,
            messages,
            stop,
            reader: Some(reader),
        }
    }

    /// Every message so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.timed().into_iter().map(|(_, m)| m).collect()
    }

    /// Every message so far with the time it came, in order.
    pub fn timed(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// The `STATUS=` lines so far, without the key.
    pub fn statuses(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| m.strip_prefix("STATUS=").map(str::to_owned))
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A TCP relay to `upstream` that can be cut: while shut it takes each connection and drops it
/// at once, and the connections it relayed before are cut, as for an endpoint that became
/// unreachable. Hand-written: no real part switches a route off and on again within a test.
/// Stops, its threads and connections included, when dropped.
pub struct Gate {
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every relayed connection, to cut them.
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    threads: std::sync::Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// An open gate on a loopback port of its own, relaying to `upstream`.
    pub fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>> = Arc::default();
        let (o, s, c, t) = (open.clone(), stop.clone(), conns.clone(), threads.clone());
        let acceptor = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if !o.load(Ordering::Relaxed) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                // Shut meanwhile: under the lock `shut` drains, so nothing slips through.
                if !o.load(Ordering::Relaxed) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                for end in [&client, &server] {
                    if let Ok(e) = end.try_clone() {
                        list.push(e);
                    }
                }
                drop(list);
                let mut threads = t.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    threads.push(std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    }));
                }
            }
        });
        Self {
            addr,
            open,
            stop,
            conns,
            threads,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every relayed connection and drops new ones until [`Gate::open`].
    pub fn shut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.shut();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}
