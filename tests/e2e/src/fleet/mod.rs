//! The local fleet: the emulator's Auto Scaling group played out on this machine.
//!
//! [`Fleet::start`] polls the emulator's Auto Scaling group and EC2 and boots every instance the
//! group launches, through a [`Runtime`] ([`FleetOptions::runtime`]):
//! - [`RuntimeKind::Booted`] (the default, [`BootedRuntime`]): the instance's AMI is a local
//!   image baked by `bake build` ([`RuntimeKind::version_ami`]), booted as a `systemd-nspawn`
//!   container ([`crate::boot`]): systemd as PID 1, `bake-agent` started by the image's own
//!   unit and configured by the launch template's userdata ([`userdata::userdata`]: what
//!   `cloudformation/fleet.yaml` renders, with a test fleet's clocks), the app of the release the
//!   image carries on port [`userdata::APP_PORT`] of the instance's own address in the fleet's
//!   /24, the EFS stand-in a host directory shared by every instance;
//! - [`RuntimeKind::Process`] ([`ProcessRuntime`]): a **simulated instance**, faster, for
//!   unit-level work: a `bake-agent run` process with a configuration of its own, supervising
//!   the sample app (`examples/app/server.js`) of the version its AMI names in its tag
//!   `bake:app-version` on a port of 127.0.0.1.
//!
//! Either way each instance has an instance metadata stand-in ([`Imds`](crate::Imds), the
//! project's one hand-written fake) serving its id, AZ, region, userdata (of the launch
//! template version it was launched from), tags (`aws:autoscaling:groupName`) and
//! `autoscaling/target-lifecycle-state` (`InService`, then `Terminated` once the group has put
//! it in `Terminating:Wait` and the load balancer has stopped sending it traffic). Version
//! [`BROKEN`] never becomes ready.
//!
//! Booted fleets also boot the instances bake launches outside the group (EC2 tag
//! `bake:image-test` of `bake test-image`, `bake:migrate` of a release's migration) from their launch template's userdata and instance profile, with their EC2
//! tags in their metadata when their metadata options allow it, and stop them when EC2 has them
//! terminated ([`Fleet::outside_instances`]); they never get traffic.
//!
//! haproxy (Debian's, `/usr/sbin/haproxy`, master-worker mode) plays the ALB and its target group
//! ([`haproxy`]): the settings of `cloudformation/edge.yaml`'s target group (health checks,
//! thresholds, matcher, deregistration delay), no retries. An instance the group has `InService`
//! is registered (through haproxy's runtime API) and gets requests once it passed a health
//! check; one the group is terminating is deregistered (draining) and, once its requests ended
//! or the deregistration delay passed, removed; only then does its IMDS say `Terminated`.
//! `/crash` and `/generatecert` are answered 403 at the edge, as the ALB's rules do.
//!
//! The modules: [`reconcile`] decides (pure), the watcher observes and acts, [`runtime`] boots,
//! [`haproxy`] is the load balancer, [`aws`] the emulator fixtures, [`http`] and [`load`] the
//! client side. Everything (instances, haproxy, the stand-ins) is stopped when the [`Fleet`] is
//! dropped, also when a test panics. [`LoadGen`] is a bounded load generator (count and time,
//! loopback only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::Emulator;

/// The `agent.toml` of a process-run instance.
mod agent_config;
/// The emulator's clients and fixtures (AMIs, launch template, group with hooks).
pub mod aws;
/// haproxy as the ALB and its target group.
pub mod haproxy;
/// A minimal loopback HTTP client.
pub mod http;
/// A bounded load generator.
pub mod load;
/// The fleet's decision: which instances to boot, stop, put behind the LB, take out (pure).
pub mod reconcile;
/// How an instance runs here: the [`Runtime`] trait and the process runtime.
pub mod runtime;
/// The launch template's userdata: fleet.yaml's agent configuration with a test fleet's clocks.
pub mod userdata;
/// The I/O loop that observes, asks [`reconcile`] and acts.
mod watcher;

pub use aws::{
    create_group, create_topic, put_template_alarm, register_version_ami, sns_notifications,
    GroupSpec,
};
pub use haproxy::HAPROXY;
pub use http::{http_get, http_post_form, http_post_text};
pub use load::{Cause, LoadGen, LoadStats};
pub use runtime::booted::BootedRuntime;
pub use runtime::process::ProcessRuntime;
pub use runtime::{Instance, LaunchSpec, Runtime};

use haproxy::{Lb, TargetGroup};
use watcher::{Shared, Tracked, Watcher};

/// The AMI tag naming the app version an image carries.
pub const APP_VERSION_TAG: &str = "bake:app-version";
/// The app version whose `/health` never answers 200 (rollback scenarios).
pub const BROKEN: &str = "broken";
/// The app version that becomes ready, then exits 5 s after each start (alarm scenarios).
pub const CRASHY: &str = "crashy";
/// The app version that answers 500 to one GET / in ten (canary scenarios).
pub const ERRING: &str = "erring";
/// The app version that answers GET / three times later than its `LATENCY_MS` (canary
/// scenarios).
pub const SLOW: &str = "slow";
/// The app version that cannot reach its database (it connects to the wrong port), so its
/// `/health` answers 503 "database unreachable" (rollback scenarios).
pub const NODB: &str = "nodb";
/// The first version of the scenarios: examples/app's own (its `VERSION` file).
pub const V1: &str = "1.0.0";
/// The second version of the scenarios: a release cut from examples/app with that `VERSION`.
pub const V2: &str = "2.0.0";
/// The launch hook of groups made by [`create_group`] (fleet.yaml's).
pub const LAUNCH_HOOK: &str = "bake-launch";
/// The terminate hook of groups made by [`create_group`] (fleet.yaml's).
pub const TERMINATE_HOOK: &str = "bake-terminate";

/// Set (to anything): every fleet keeps its files (agent logs, haproxy's request log) when it
/// stops, and says where; a fleet whose thread panics always does.
pub const KEEP_FILES_ENV: &str = "BAKE_FLEET_KEEP_FILES";

/// How the fleet's instances run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Booted from their AMI's local image under systemd ([`BootedRuntime`]).
    #[default]
    Booted,
    /// `bake-agent` as a host process ([`ProcessRuntime`]).
    Process,
}

impl RuntimeKind {
    /// `booted` or `process`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "booted" => Ok(Self::Booted),
            "process" => Ok(Self::Process),
            _ => bail!("runtime {s:?}: expected \"booted\" or \"process\""),
        }
    }

    /// The AMI of app `version` in `emu` for instances of this kind: a local image baked by
    /// `bake build` with that release ([`crate::boot::image::bake_version_image`]: built once per
    /// work directory, then only registered) for booted ones; an AMI record tagged
    /// `bake:app-version` for process ones.
    pub fn version_ami(self, emu: &Emulator, version: &str) -> anyhow::Result<String> {
        match self {
            Self::Booted => crate::boot::image::bake_version_image(emu, version),
            Self::Process => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async { register_version_ami(&emu.aws().await, version).await }),
        }
    }
}

/// How the fleet runs.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The Auto Scaling group to play out.
    pub asg: String,
    /// Its environment (fleet.yaml's `EnvName`: the agents' secrets path, log groups, lease
    /// prefix); [`FleetOptions::new`] makes it the group's name.
    pub env: String,
    /// The `bake-agent` binary.
    pub agent_bin: PathBuf,
    /// How often the emulator is polled.
    pub poll: Duration,
    /// The emulator's clock scale, applied to the target group's health check interval and
    /// timeout and its deregistration delay (the group's own clocks run at it too).
    pub time_scale: f64,
    /// The agent's `readiness.timeout` (never ready by then → ABANDON).
    pub ready_timeout: Duration,
    /// The agent's `supervise.crash_loop_count` within `crash_loop_window`.
    pub crash_loop_count: u32,
    /// The agent's `supervise.crash_loop_window`.
    pub crash_loop_window: Duration,
    /// The haproxy port on 127.0.0.1 (0: a free one).
    pub lb_port: u16,
    /// How instances run.
    pub runtime: RuntimeKind,
    /// Secret rotation in the agents' userdata: `[secrets] poll_interval` and `on_change`
    /// (`"restart"`, `"rollout"` or `"ignore"`); `None` leaves fleet.yaml's (no polling). Booted
    /// instances only: the process runtime's agents have no secrets.
    pub secret_rotation: Option<(Duration, &'static str)>,
    /// More `[app.env]` of every instance (e.g. `LATENCY_MS`), laid over the userdata (booted)
    /// or the agent configuration (process).
    pub app_env: Vec<(&'static str, String)>,
    /// The fleet's database on the host's loopback ([`crate::db::Postgres::addr`]), which
    /// booted instances reach as [`crate::boot::DB_HOST`] ([`crate::boot::BootSpec::database`]);
    /// `None`: none. Process instances get no database (their agents have no secrets).
    pub database: Option<SocketAddr>,
}

impl FleetOptions {
    /// Defaults for group `asg`, with the agent binary `agent_bin`.
    #[must_use]
    pub fn new(asg: &str, agent_bin: PathBuf) -> Self {
        Self {
            asg: asg.to_owned(),
            env: asg.to_owned(),
            agent_bin,
            poll: Duration::from_millis(150),
            time_scale: crate::emulator::DEFAULT_TIME_SCALE,
            ready_timeout: Duration::from_secs(30),
            crash_loop_count: 4,
            crash_loop_window: Duration::from_secs(30),
            lb_port: 0,
            runtime: RuntimeKind::default(),
            secret_rotation: None,
            app_env: Vec::new(),
            database: None,
        }
    }
}

/// One instance of the fleet as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceView {
    /// `i-…`.
    pub id: String,
    /// The app version its AMI carries.
    pub version: String,
    /// The app's port: `addr`'s port.
    pub port: u16,
    /// Where the load balancer reaches its app.
    pub addr: SocketAddr,
    /// The group's lifecycle state (`Pending:Wait`, `InService`, `Terminating:Wait`, …).
    pub lifecycle: String,
    /// Whether haproxy sends it requests (registered, passed its health checks, not draining).
    pub in_lb: bool,
    /// Its runtime ended on its own (the agent exited) while the group still counted it; the
    /// load balancer's health checks take it out, the harness does not boot it again.
    pub exited: bool,
    /// The agent's log file.
    pub log: PathBuf,
    /// A booted instance's PID 1 on the host: [`Fleet::sh`] runs commands inside it.
    pub leader: Option<i32>,
}

/// Counters of a fleet's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Instances started.
    pub launched: u64,
    /// Instances stopped because the group terminated them.
    pub terminated: u64,
    /// Targets registered with haproxy.
    pub registered: u64,
    /// Targets deregistered (drained and removed).
    pub deregistered: u64,
    /// App restarts by the agents (from their logs), stopped instances included.
    pub restarts: u64,
    /// Instances outside the group (`bake test-image`'s) started.
    pub outside_launched: u64,
    /// Instances outside the group stopped because EC2 no longer had them running.
    pub outside_terminated: u64,
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running local fleet; stops everything it started when dropped.
pub struct Fleet {
    opts: FleetOptions,
    dir: tempfile::TempDir,
    shared: Arc<Mutex<Shared>>,
    haproxy: Arc<Mutex<Option<Lb>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    lb_port: u16,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("asg", &self.opts.asg)
            .field("lb_port", &self.lb_port)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Starts haproxy and the watcher of `opts.asg` in `emu`; instances run as
    /// `opts.runtime` says.
    pub fn start(emu: &Emulator, opts: FleetOptions) -> anyhow::Result<Self> {
        if opts.runtime == RuntimeKind::Process && opts.secret_rotation.is_some() {
            anyhow::bail!(
                "secret rotation needs booted instances: process instances have no secrets"
            );
        }
        let runtime: Box<dyn Runtime> = match opts.runtime {
            RuntimeKind::Booted => Box::new(BootedRuntime::new(emu, opts.database)),
            RuntimeKind::Process => Box::new(ProcessRuntime::new(emu, &opts)),
        };
        Self::start_with(emu, opts, runtime)
    }

    /// [`Fleet::start`] with instances booted by `runtime`.
    pub fn start_with(
        emu: &Emulator,
        opts: FleetOptions,
        runtime: Box<dyn Runtime>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bake-fleet-{}-", opts.asg))
            .tempdir()?;
        let lb_port = if opts.lb_port == 0 {
            free_port()?
        } else {
            opts.lb_port
        };
        let haproxy = Lb::start(
            dir.path(),
            lb_port,
            TargetGroup::from_edge_template()?,
            opts.time_scale,
        )?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let haproxy = Arc::new(Mutex::new(Some(haproxy)));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Watcher::new(&opts.asg, emu.url(), dir.path().to_path_buf(), runtime);
        let thread = watcher::spawn(
            watcher,
            emu.settings(),
            emu.credentials(),
            opts.poll,
            shared.clone(),
            haproxy.clone(),
            stop.clone(),
        )?;
        Ok(Self {
            opts,
            dir,
            shared,
            haproxy,
            stop,
            thread: Some(thread),
            lb_port,
        })
    }

    /// haproxy's address (the fleet's "ALB").
    #[must_use]
    pub fn lb_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.lb_port))
    }

    /// The fleet's working directory (versions, instances, haproxy configuration and log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The instances now running.
    #[must_use]
    pub fn instances(&self) -> Vec<InstanceView> {
        self.shared
            .lock()
            .expect("fleet lock")
            .instances
            .values()
            .map(|i| i.view.clone())
            .collect()
    }

    /// The instances outside the group (`bake test-image`'s, tag `bake:image-test`) now
    /// running: booted by runtimes that can ([`Runtime::boots_outside_the_group`]), never
    /// behind the load balancer.
    #[must_use]
    pub fn outside_instances(&self) -> Vec<InstanceView> {
        self.shared
            .lock()
            .expect("fleet lock")
            .outside
            .values()
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// Runs `script` with `/bin/sh -c` inside instance `id` (a group member or one outside the
    /// group) and returns its output, trimmed ([`crate::boot::sh_in`]); an error when the fleet
    /// runs no such instance or its runtime has no shell into it (process instances). The
    /// command runs outside the fleet's lock: several may run at once, the watcher goes on.
    pub fn sh(&self, id: &str, script: &str) -> anyhow::Result<String> {
        let leader = self
            .instances()
            .into_iter()
            .chain(self.outside_instances())
            .find(|v| v.id == id)
            .with_context(|| format!("the fleet runs no instance {id}"))?
            .leader
            .with_context(|| format!("{id} is no booted instance: no shell into it"))?;
        Ok(crate::boot::sh_in(leader, script))
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        let g = self.shared.lock().expect("fleet lock");
        let mut s = g.stats.clone();
        s.restarts += g.instances.values().map(Tracked::restarts).sum::<u64>();
        s
    }

    /// The last error of the watcher, if any (it keeps polling).
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().expect("fleet lock").last_error.clone()
    }

    /// The servers haproxy sends requests to now: (instance id, port).
    #[must_use]
    pub fn lb_servers(&self) -> Vec<(String, u16)> {
        self.shared.lock().expect("fleet lock").lb_servers.clone()
    }

    /// Waits until haproxy serves exactly `n` instances, all on `version`, and answers through
    /// them; the error says what the fleet looks like.
    pub fn wait_serving(&self, n: usize, version: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let inst = self.instances();
            let lb: Vec<_> = inst.iter().filter(|i| i.in_lb).collect();
            if inst.len() == n && lb.len() == n && lb.iter().all(|i| i.version == version) {
                if let Ok((200, body)) = http_get(self.lb_addr(), "/") {
                    if body.trim() == format!("app {version}") {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: String = inst
                    .iter()
                    .map(|i| {
                        let text = std::fs::read_to_string(&i.log).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        format!(
                            "\n== {} (last lines of {}):\n{}",
                            i.id,
                            i.log.display(),
                            lines[lines.len().saturating_sub(15)..].join("\n")
                        )
                    })
                    .collect();
                bail!(
                    "the fleet did not serve {n} instances of version {version} within {timeout:?}: {inst:?}; last error: {:?}{logs}",
                    self.last_error()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the watcher, every instance and haproxy; returns the final counters.
    pub fn shutdown(mut self) -> FleetStats {
        self.stop_all()
    }

    fn stop_all(&mut self) -> FleetStats {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let (instances, outside, gone, mut stats) = {
            let mut g = self
                .shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                std::mem::take(&mut g.instances),
                std::mem::take(&mut g.outside),
                std::mem::take(&mut g.gone),
                g.stats.clone(),
            )
        };
        let outside: Vec<_> = outside
            .into_values()
            .map(|(_, i)| std::thread::spawn(move || drop(i)))
            .collect();
        // Stop the instances in parallel: each agent drains its app gracefully.
        let handles: Vec<_> = instances
            .into_values()
            .map(|i| {
                std::thread::spawn(move || {
                    let n = i.restarts();
                    drop(i);
                    n
                })
            })
            .collect();
        for h in handles {
            stats.restarts += h.join().unwrap_or(0);
        }
        for h in gone.into_iter().chain(outside) {
            let _ = h.join();
        }
        self.haproxy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        stats
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
        if std::thread::panicking() || std::env::var_os(KEEP_FILES_ENV).is_some() {
            // A failing test keeps the fleet's files (agent logs, haproxy's request log), and
            // so does any fleet when BAKE_FLEET_KEEP_FILES is set.
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("bake-fleet-empty-")
                    .tempdir()
                    .expect("a temporary directory"),
            );
            eprintln!("the fleet's files are kept in {}", dir.keep().display());
        }
    }
}
