//! The local fleet: the emulator's Auto Scaling group played out on this machine.
//!
//! [`Fleet::start`] polls the emulator's Auto Scaling group and EC2. For every instance the group
//! launches it starts a **simulated instance**:
//! - an instance metadata stand-in ([`Imds`], the project's one hand-written fake) serving the
//!   instance's id, AZ, region, userdata (of the launch template version it was launched from,
//!   base64-decoded), tags (`aws:autoscaling:groupName`) and `autoscaling/target-lifecycle-state`
//!   (`InService`, then `Terminated` once the group has put it in `Terminating:Wait` and the load
//!   balancer has stopped sending it traffic);
//! - a `bake-agent run` process with its own config file and directory, pointed at the emulator and
//!   at that stand-in, supervising the sample app (`examples/app/server.js`) of the version that
//!   the instance's AMI names in its tag `bake:app-version`, on a port of its own on 127.0.0.1.
//!   The harness keeps one directory per version (a copy of the app); version [`BROKEN`] never
//!   becomes ready.
//!
//! haproxy (Debian's, `/usr/sbin/haproxy`, master-worker mode) plays the ALB and its target group
//! ([`haproxy`]): the settings of `cloudformation/edge.yaml`'s target group (health checks,
//! thresholds, matcher, deregistration delay), no retries. An instance the group has `InService`
//! is registered (through haproxy's runtime API) and gets requests once it passed a health
//! check; one the group is terminating is deregistered (draining) and, once its requests ended
//! or the deregistration delay passed, removed; only then does its IMDS say `Terminated`.
//! `/crash` and `/generatecert` are answered 403 at the edge, as the ALB's rules do.
//!
//! Everything (agents, apps, haproxy, the stand-ins) is stopped when the [`Fleet`] is dropped,
//! also when a test panics. [`LoadGen`] is a bounded load generator (count and time, loopback only).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use bake_common::aws::AwsSettings;

use crate::imds::{Imds, ImdsState};
use crate::{Aws, Emulator};

pub mod haproxy;
pub use haproxy::HAPROXY;
use haproxy::{Lb, TargetGroup};

/// The AMI tag naming the app version an image carries.
pub const APP_VERSION_TAG: &str = "bake:app-version";
/// The app version whose `/health` never answers 200 (rollback scenarios).
pub const BROKEN: &str = "broken";
/// The launch hook of groups made by [`create_group`].
pub const LAUNCH_HOOK: &str = "launch";
/// The terminate hook of groups made by [`create_group`].
pub const TERMINATE_HOOK: &str = "drain";

/// How the fleet runs.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The Auto Scaling group to play out.
    pub asg: String,
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
}

impl FleetOptions {
    /// Defaults for group `asg`, with the agent binary `agent_bin`.
    #[must_use]
    pub fn new(asg: &str, agent_bin: PathBuf) -> Self {
        Self {
            asg: asg.to_owned(),
            agent_bin,
            poll: Duration::from_millis(150),
            time_scale: crate::emulator::DEFAULT_TIME_SCALE,
            ready_timeout: Duration::from_secs(30),
            crash_loop_count: 4,
            crash_loop_window: Duration::from_secs(30),
            lb_port: 0,
        }
    }
}

/// One simulated instance as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceView {
    /// `i-…`.
    pub id: String,
    /// The app version its AMI carries.
    pub version: String,
    /// The app's port on 127.0.0.1.
    pub port: u16,
    /// The group's lifecycle state (`Pending:Wait`, `InService`, `Terminating:Wait`, …).
    pub lifecycle: String,
    /// Whether haproxy sends it requests (registered, passed its health checks, not draining).
    pub in_lb: bool,
    /// The agent's log file.
    pub log: PathBuf,
}

/// Counters of a fleet's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Simulated instances started.
    pub launched: u64,
    /// Simulated instances stopped because the group terminated them.
    pub terminated: u64,
    /// Targets registered with haproxy.
    pub registered: u64,
    /// Targets deregistered (drained and removed).
    pub deregistered: u64,
    /// App restarts by the agents (from their logs), stopped instances included.
    pub restarts: u64,
}

struct SimInstance {
    view: InstanceView,
    imds: Imds,
    agent: Child,
    /// Registered with haproxy (an `add server` was done).
    registered: bool,
    /// Deregistered at (haproxy `drain`).
    draining_since: Option<Instant>,
    /// Removed from haproxy (deregistration complete).
    removed: bool,
}

impl SimInstance {
    fn restarts(&self) -> u64 {
        count_restarts(&self.view.log)
    }

    /// SIGTERM to the agent (it stops the app gracefully), SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        if matches!(self.agent.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.agent.id().to_string();
        let _ = Command::new("kill").args(["-TERM", "--", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.agent.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The app dies with the agent (its parent-death signal is SIGKILL).
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Drop for SimInstance {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        let _ = &self.imds;
    }
}

fn count_restarts(log: &Path) -> u64 {
    std::fs::read_to_string(log).map_or(0, |t| {
        t.lines()
            .filter(|l| l.contains("app exited; restart"))
            .count() as u64
    })
}

#[derive(Default)]
struct Shared {
    instances: BTreeMap<String, SimInstance>,
    gone: Vec<std::thread::JoinHandle<u64>>,
    stats: FleetStats,
    last_error: Option<String>,
    lb_servers: Vec<(String, u16)>,
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
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

struct Ctx {
    opts: FleetOptions,
    dir: PathBuf,
    app_src: PathBuf,
    node: PathBuf,
    child_env: Vec<(&'static str, String)>,
    settings: AwsSettings,
    /// AMI → app version.
    ami_versions: BTreeMap<String, String>,
    /// (launch template id, version) → userdata.
    userdata: BTreeMap<(String, String), Option<Vec<u8>>>,
}

impl Fleet {
    /// Starts haproxy and the watcher of `opts.asg` in `emu`.
    pub fn start(emu: &Emulator, opts: FleetOptions) -> anyhow::Result<Self> {
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
        let mut ctx = Ctx {
            opts: opts.clone(),
            dir: dir.path().to_path_buf(),
            app_src: crate::paths::repo_root().join("examples/app/server.js"),
            node: which("node"),
            child_env: emu.env(),
            settings: emu.settings(),
            ami_versions: BTreeMap::new(),
            userdata: BTreeMap::new(),
        };
        let (sh, hp, st) = (shared.clone(), haproxy.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("fleet-watcher".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the fleet watcher");
                rt.block_on(async move {
                    let aws = clients(&ctx.settings).await;
                    while !st.load(Ordering::SeqCst) {
                        if let Err(e) = tick(&mut ctx, &aws, &sh, &hp).await {
                            sh.lock().expect("fleet lock").last_error = Some(format!("{e:#}"));
                        }
                        tokio::time::sleep(ctx.opts.poll).await;
                    }
                });
            })?;
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

    /// The simulated instances now running.
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

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        let g = self.shared.lock().expect("fleet lock");
        let mut s = g.stats.clone();
        s.restarts += g.instances.values().map(SimInstance::restarts).sum::<u64>();
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
                bail!(
                    "the fleet did not serve {n} instances of version {version} within {timeout:?}: {inst:?}; last error: {:?}",
                    self.last_error()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the watcher, every simulated instance and haproxy; returns the final counters.
    pub fn shutdown(mut self) -> FleetStats {
        self.stop_all()
    }

    fn stop_all(&mut self) -> FleetStats {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let (instances, gone, mut stats) = {
            let mut g = self
                .shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                std::mem::take(&mut g.instances),
                std::mem::take(&mut g.gone),
                g.stats.clone(),
            )
        };
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
        for h in handles.into_iter().chain(gone) {
            stats.restarts += h.join().unwrap_or(0);
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
    }
}

async fn clients(settings: &AwsSettings) -> Aws {
    let conf = bake_common::aws::sdk_config(settings).await;
    let creds = aws_credential_types::provider::SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new("testing", "testing", None, None, "bake-fleet"),
    );
    Aws::from_conf(&conf.into_builder().credentials_provider(creds).build())
}

struct Seen {
    id: String,
    lifecycle: String,
    az: String,
    lt: Option<(String, String)>,
}

/// One poll: start what the group launched, follow lifecycle states, stop what it terminated,
/// and bring haproxy in line with the instances in service.
async fn tick(
    ctx: &mut Ctx,
    aws: &Aws,
    shared: &Mutex<Shared>,
    haproxy: &Mutex<Option<Lb>>,
) -> anyhow::Result<()> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&ctx.opts.asg)
        .send()
        .await?;
    let Some(group) = out.auto_scaling_groups().first() else {
        bail!("Auto Scaling group {} not found", ctx.opts.asg);
    };
    let seen: Vec<Seen> = group
        .instances()
        .iter()
        .filter_map(|i| {
            Some(Seen {
                id: i.instance_id()?.to_owned(),
                lifecycle: i
                    .lifecycle_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                az: i.availability_zone().unwrap_or("us-east-1a").to_owned(),
                lt: i.launch_template().and_then(|l| {
                    Some((l.launch_template_id()?.to_owned(), l.version()?.to_owned()))
                }),
            })
        })
        .collect();
    let known: BTreeSet<String> = shared
        .lock()
        .expect("fleet lock")
        .instances
        .keys()
        .cloned()
        .collect();
    // New instances.
    for s in seen
        .iter()
        .filter(|s| !known.contains(&s.id) && !s.lifecycle.starts_with("Terminat"))
    {
        let inst = launch(ctx, aws, s)
            .await
            .with_context(|| format!("starting simulated instance {}", s.id))?;
        let mut g = shared.lock().expect("fleet lock");
        g.stats.launched += 1;
        g.instances.insert(s.id.clone(), inst);
    }
    let mut g = shared.lock().expect("fleet lock");
    let by_id: BTreeMap<&str, &Seen> = seen.iter().map(|s| (s.id.as_str(), s)).collect();
    for (id, inst) in &mut g.instances {
        if let Some(s) = by_id.get(id.as_str()) {
            inst.view.lifecycle.clone_from(&s.lifecycle);
        }
    }
    let hp = haproxy.lock().expect("haproxy lock");
    let lb = hp.as_ref().context("haproxy is stopped")?;
    let states: BTreeMap<String, haproxy::ServerState> = lb
        .servers()?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let delay = lb.deregistration_delay();
    let (mut registered, mut deregistered) = (0, 0);
    for inst in g.instances.values_mut() {
        let id = inst.view.id.clone();
        let in_group = by_id.contains_key(id.as_str());
        let terminating = !in_group || inst.view.lifecycle.starts_with("Terminat");
        if in_group && inst.view.lifecycle == "InService" && !inst.registered {
            // RegisterTargets: the group registers an instance as it goes InService.
            lb.register(&id, inst.view.port)?;
            inst.registered = true;
            registered += 1;
        }
        if terminating && inst.registered && inst.draining_since.is_none() {
            // DeregisterTargets: no new requests; those in flight go on.
            lb.deregister(&id)?;
            inst.draining_since = Some(Instant::now());
        }
        if let (Some(since), false) = (inst.draining_since, inst.removed) {
            // Complete at once when nothing is in flight, else after the delay.
            let idle = states.get(&id).is_none_or(|s| s.sessions == 0);
            if idle || since.elapsed() >= delay || !in_group {
                lb.remove(&id)?;
                inst.removed = true;
                deregistered += 1;
            }
        }
        // AWS deregisters first, then the instance enters Terminating:Wait; its IMDS says
        // Terminated, and the agent drains the app and completes the terminate hook.
        if terminating && (!inst.registered || inst.removed) {
            inst.imds.update(|st| {
                if st.target_lifecycle_state.as_deref() != Some("Terminated") {
                    st.target_lifecycle_state = Some("Terminated".into());
                }
            });
        }
    }
    let waiting: BTreeSet<String> = g
        .instances
        .values()
        .filter(|i| i.draining_since.is_some() || !i.registered)
        .map(|i| i.view.id.clone())
        .collect();
    let states: Vec<haproxy::ServerState> = states.into_values().collect();
    // An initial target gets requests once it passed one health check.
    lb.admit_healthy(&states, &|id| waiting.contains(id))?;
    drop(hp);
    let serving: BTreeSet<&str> = states
        .iter()
        .filter(|s| s.serving() && !waiting.contains(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    let mut servers = Vec::new();
    for i in g.instances.values_mut() {
        i.view.in_lb = serving.contains(i.view.id.as_str());
        if i.view.in_lb {
            servers.push((i.view.id.clone(), i.view.port));
        }
    }
    g.lb_servers = servers;
    g.stats.registered += registered;
    g.stats.deregistered += deregistered;
    // Gone from the group (terminated, abandoned): stop the agent once out of haproxy.
    let gone: Vec<String> = g
        .instances
        .iter()
        .filter(|(id, i)| !by_id.contains_key(id.as_str()) && (!i.registered || i.removed))
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        if let Some(mut inst) = g.instances.remove(&id) {
            g.stats.terminated += 1;
            inst.view.in_lb = false;
            g.gone.push(std::thread::spawn(move || {
                let n = inst.restarts();
                drop(inst);
                n
            }));
        }
    }
    // Fold finished stoppers' restart counts in.
    let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut g.gone)
        .into_iter()
        .partition(std::thread::JoinHandle::is_finished);
    g.gone = pending;
    for h in done {
        g.stats.restarts += h.join().unwrap_or(0);
    }
    Ok(())
}

async fn launch(ctx: &mut Ctx, aws: &Aws, s: &Seen) -> anyhow::Result<SimInstance> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(&s.id)
        .send()
        .await?;
    let ami = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.image_id().map(str::to_owned))
        .with_context(|| format!("EC2 does not know instance {}", s.id))?;
    let version = match ctx.ami_versions.get(&ami) {
        Some(v) => v.clone(),
        None => {
            let imgs = aws.ec2.describe_images().image_ids(&ami).send().await?;
            let v = imgs
                .images()
                .first()
                .and_then(|i| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(APP_VERSION_TAG))
                        .and_then(|t| t.value())
                })
                .with_context(|| {
                    format!(
                        "AMI {ami} of instance {} has no {APP_VERSION_TAG} tag",
                        s.id
                    )
                })?
                .to_owned();
            ctx.ami_versions.insert(ami.clone(), v.clone());
            v
        }
    };
    let user_data = match &s.lt {
        None => None,
        Some(key) => match ctx.userdata.get(key) {
            Some(u) => u.clone(),
            None => {
                let v = aws
                    .ec2
                    .describe_launch_template_versions()
                    .launch_template_id(&key.0)
                    .versions(&key.1)
                    .send()
                    .await?;
                let u = v
                    .launch_template_versions()
                    .first()
                    .and_then(|v| v.launch_template_data())
                    .and_then(|d| d.user_data())
                    .and_then(|b64| aws_smithy_types::base64::decode(b64).ok());
                ctx.userdata.insert(key.clone(), u.clone());
                u
            }
        },
    };
    let app_dir = version_dir(&ctx.dir, &ctx.app_src, &version)?;
    let inst_dir = ctx.dir.join("instances").join(&s.id);
    std::fs::create_dir_all(&inst_dir)?;
    let port = free_port()?;
    let mut state = ImdsState::new(&s.id);
    state.availability_zone.clone_from(&s.az);
    state.region =
        s.az.trim_end_matches(|c: char| c.is_ascii_lowercase())
            .to_owned();
    // As bytes: EC2 serves userdata as it was given (gzip included).
    state.user_data_raw = user_data;
    state.tags = Some(BTreeMap::from([(
        "aws:autoscaling:groupName".to_owned(),
        ctx.opts.asg.clone(),
    )]));
    state.target_lifecycle_state = Some("InService".into());
    let imds = Imds::start(state)?;
    let config = inst_dir.join("agent.toml");
    std::fs::write(
        &config,
        agent_config(&ctx.opts, &ctx.node, &app_dir, &inst_dir, port, &version),
    )?;
    let log_path = inst_dir.join("agent.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(&ctx.opts.agent_bin);
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .current_dir(&inst_dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("AWS_PROFILE")
        .envs(ctx.child_env.iter().map(|(k, v)| (*k, v)))
        .envs(imds.env())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::process::die_with_parent(&mut cmd);
    let agent = cmd
        .spawn()
        .with_context(|| format!("starting {}", ctx.opts.agent_bin.display()))?;
    Ok(SimInstance {
        view: InstanceView {
            id: s.id.clone(),
            version,
            port,
            lifecycle: s.lifecycle.clone(),
            in_lb: false,
            log: log_path,
        },
        imds,
        agent,
        registered: false,
        draining_since: None,
        removed: false,
    })
}

/// The app directory of `version`: a copy of the sample app (made once).
fn version_dir(root: &Path, app_src: &Path, version: &str) -> anyhow::Result<PathBuf> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("app version {version:?} (AMI tag {APP_VERSION_TAG}): only letters, digits, '.', '_' and '-'");
    }
    let dir = root.join("versions").join(version);
    if !dir.join("server.js").exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(app_src, dir.join("server.js"))
            .with_context(|| format!("copying {}", app_src.display()))?;
    }
    Ok(dir)
}

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The `agent.toml` "baked into the AMI" of a simulated instance.
fn agent_config(
    opts: &FleetOptions,
    node: &Path,
    app_dir: &Path,
    inst_dir: &Path,
    port: u16,
    version: &str,
) -> String {
    let never_ready = if version == BROKEN {
        "NEVER_READY = \"1\"\n"
    } else {
        ""
    };
    format!(
        r#"[identity]
imds_tags = true
[app]
command = ["{node}", "{app}/server.js"]
user = "root"
working_dir = "{inst}"
stop_timeout = "5s"
[app.env]
PORT = "{port}"
APP_VERSION = "{version}"
UPLOADS_DIR = "{inst}/uploads"
{never_ready}[supervise]
backoff_initial = "100ms"
backoff_max = "1s"
stable_after = "5s"
crash_loop_count = {count}
crash_loop_window = "{window}"
mark_unhealthy = true
[readiness]
probe = "http://127.0.0.1:{port}/health"
interval = "100ms"
timeout = "{ready}"
heartbeat_interval = "2s"
[lifecycle]
poll_interval = "200ms"
spot = false
"#,
        node = node.display(),
        app = app_dir.display(),
        inst = inst_dir.display(),
        count = opts.crash_loop_count,
        window = humantime(opts.crash_loop_window),
        ready = humantime(opts.ready_timeout),
    )
}

/// Registers an AMI for app `version` (tag `bake:app-version`), as `bake build` would make.
pub async fn register_version_ami(aws: &Aws, version: &str) -> anyhow::Result<String> {
    let out = aws
        .ec2
        .register_image()
        .name(format!("fleet-app-{version}"))
        .description(format!("sample app {version}"))
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .send()
        .await
        .context("RegisterImage")?;
    let ami = out
        .image_id()
        .context("RegisterImage returned no id")?
        .to_owned();
    aws.ec2
        .create_tags()
        .resources(&ami)
        .tags(Tag::builder().key(APP_VERSION_TAG).value(version).build())
        .send()
        .await
        .context("CreateTags")?;
    Ok(ami)
}

/// A launch template on `ami` (version 1, a script userdata the agent ignores) and group `name`
/// of `capacity` instances on it over two AZs, with a launch hook ([`LAUNCH_HOOK`], ABANDON after
/// `3000` emulated seconds) and a terminate hook ([`TERMINATE_HOOK`], CONTINUE after 3000). The
/// group names version 1 (not `$Default`) so that a refresh can roll back. Returns the launch
/// template id.
pub async fn create_group(
    aws: &Aws,
    name: &str,
    ami: &str,
    capacity: i32,
) -> anyhow::Result<String> {
    let userdata = aws_smithy_types::base64::encode(format!("#!/bin/sh\necho fleet {name}\n"));
    let lt = aws
        .ec2
        .create_launch_template()
        .launch_template_name(format!("{name}-lt"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .user_data(userdata)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key("fleet").value(name).build())
                .build(),
        )
        .send()
        .await
        .context("CreateLaunchTemplate")?;
    let lt_id = lt
        .launch_template()
        .and_then(|l| l.launch_template_id())
        .context("no launch template id")?
        .to_owned();
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&lt_id)
                .version("1")
                .build(),
        )
        .min_size(0)
        .max_size(capacity * 2 + 1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .availability_zones("us-east-1b")
        .send()
        .await
        .context("CreateAutoScalingGroup")?;
    for (hook, transition, default) in [
        (LAUNCH_HOOK, "autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON"),
        (
            TERMINATE_HOOK,
            "autoscaling:EC2_INSTANCE_TERMINATING",
            "CONTINUE",
        ),
    ] {
        aws.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(hook)
            .lifecycle_transition(transition)
            .default_result(default)
            .heartbeat_timeout(3000)
            .send()
            .await
            .with_context(|| format!("PutLifecycleHook {hook}"))?;
    }
    aws.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .min_size(capacity)
        .desired_capacity(capacity)
        .send()
        .await
        .context("UpdateAutoScalingGroup")?;
    Ok(lt_id)
}

/// One `GET path` with `Connection: close`: (status, body). Loopback only.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address");
    }
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// The payload of a chunked body (enough for the sample app's short answers).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        let tail = &after[n..];
        rest = tail.strip_prefix("\r\n").unwrap_or(tail);
    }
    out
}

/// What a [`LoadGen`] saw.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200.
    pub ok: u64,
    /// Anything else (errors, other statuses).
    pub failed: u64,
    /// 200 answers by body (`app VERSION`).
    pub versions: BTreeMap<String, u64>,
    /// The first few failures, for the test's message.
    pub failures: Vec<String>,
    /// Failures by cause ([`Cause`]'s names: `refused`, `reset`, `502`, `503`, `504`,
    /// `timeout`, another status, `other`).
    pub causes: BTreeMap<String, u64>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The connection was refused.
    Refused,
    /// Reset or closed before a whole answer.
    Reset,
    /// No answer in time.
    Timeout,
    /// An answer other than 200.
    Status(u16),
    /// Anything else.
    Other,
}

impl Cause {
    /// The name counted in [`LoadStats::causes`].
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::Reset => "reset".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(c) => c.to_string(),
            Self::Other => "other".into(),
        }
    }

    /// The cause of a failed [`http_get`].
    #[must_use]
    pub fn of_error(e: &anyhow::Error) -> Self {
        use std::io::ErrorKind as K;
        if let Some(io) = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
            return match io.kind() {
                K::ConnectionRefused => Self::Refused,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    Self::Reset
                }
                K::TimedOut | K::WouldBlock => Self::Timeout,
                _ => Self::Other,
            };
        }
        // Closed with nothing or half an answer read.
        if e.to_string().starts_with("not an HTTP response") {
            return Self::Reset;
        }
        Self::Other
    }
}

impl LoadStats {
    /// Requests per second over the run.
    #[must_use]
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.sent as f64 / s
        } else {
            0.0
        }
    }

    /// `sent N, failed N (cause: n, …), N req/s`, for reports.
    #[must_use]
    pub fn summary(&self) -> String {
        let causes: Vec<String> = self
            .causes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "sent {}, ok {}, failed {} ({}), {:.0} req/s over {:.1}s",
            self.sent,
            self.ok,
            self.failed,
            if causes.is_empty() {
                "none".into()
            } else {
                causes.join(", ")
            },
            self.rate(),
            self.elapsed.as_secs_f64()
        )
    }

    fn fail(&mut self, cause: &Cause, what: String) {
        self.failed += 1;
        *self.causes.entry(cause.name()).or_default() += 1;
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }

    fn merge(&mut self, o: Self) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        for (k, v) in o.versions {
            *self.versions.entry(k).or_default() += v;
        }
        for (k, v) in o.causes {
            *self.causes.entry(k).or_default() += v;
        }
        self.failures.extend(
            o.failures
                .into_iter()
                .take(10usize.saturating_sub(self.failures.len())),
        );
        self.elapsed = self.elapsed.max(o.elapsed);
    }
}

/// A bounded load generator: `workers` threads each sending `GET path` to a loopback address,
/// one new connection per request with `pause` between, until `max_requests` in all or `max_time`
/// or [`LoadGen::stop`].
#[derive(Debug)]
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadStats>>,
    live: Arc<Mutex<LoadStats>>,
}

impl LoadGen {
    /// Starts it; refuses any address that is not loopback.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        workers: usize,
        max_requests: u64,
        max_time: Duration,
        pause: Duration,
    ) -> anyhow::Result<Self> {
        if !addr.ip().is_loopback() {
            bail!("the load generator only sends to loopback, not {addr}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(LoadStats::default()));
        let budget = Arc::new(std::sync::atomic::AtomicU64::new(max_requests));
        let started = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..workers.max(1) {
            let (stop, budget, live, path) =
                (stop.clone(), budget.clone(), live.clone(), path.to_owned());
            threads.push(std::thread::spawn(move || {
                let mut st = LoadStats::default();
                while !stop.load(Ordering::SeqCst)
                    && started.elapsed() < max_time
                    && budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                        .is_ok()
                {
                    st.sent += 1;
                    let mut one = LoadStats {
                        sent: 1,
                        ..LoadStats::default()
                    };
                    match http_get(addr, &path) {
                        Ok((200, body)) => {
                            st.ok += 1;
                            one.ok = 1;
                            let v = body.trim().to_owned();
                            *st.versions.entry(v.clone()).or_default() += 1;
                            one.versions.insert(v, 1);
                        }
                        Ok((code, body)) => {
                            let what = format!("{code} {}", body.trim());
                            st.fail(&Cause::Status(code), what.clone());
                            one.fail(&Cause::Status(code), what);
                        }
                        Err(e) => {
                            let cause = Cause::of_error(&e);
                            st.fail(&cause, format!("{e:#}"));
                            one.fail(&cause, format!("{e:#}"));
                        }
                    }
                    one.elapsed = started.elapsed();
                    live.lock().expect("load lock").merge(one);
                    std::thread::sleep(pause);
                }
                st.elapsed = started.elapsed();
                st
            }));
        }
        Ok(Self {
            stop,
            threads,
            live,
        })
    }

    /// What has been counted so far (while running).
    #[must_use]
    pub fn snapshot(&self) -> LoadStats {
        self.live.lock().expect("load lock").clone()
    }

    /// Stops it and returns the totals.
    #[must_use]
    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadStats::default();
        for t in self.threads.drain(..) {
            if let Ok(s) = t.join() {
                total.merge(s);
            }
        }
        total
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_haproxy_config_has_the_edge_rules_and_no_static_server() {
        let tg = TargetGroup::from_edge_template().unwrap();
        let c = haproxy::config(8080, Path::new("/tmp/s"), &tg, 0.01);
        assert!(c.contains("bind 127.0.0.1:8080"), "{c}");
        assert!(c.contains("/crash") && c.contains("/generatecert"), "{c}");
        assert!(
            !c.lines().any(|l| l.trim_start().starts_with("server ")),
            "{c}"
        );
        assert!(!c.contains('@'), "placeholders left: {c}");
    }

    #[test]
    fn test_load_generator_refuses_non_loopback() {
        let e = LoadGen::start(
            SocketAddr::from(([10, 0, 0, 1], 80)),
            "/",
            1,
            1,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }

    #[test]
    fn test_dechunk() {
        assert_eq!(dechunk("8\r\napp dev\n\r\n0\r\n\r\n"), "app dev\n");
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn test_version_names_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let src = crate::paths::repo_root().join("examples/app/server.js");
        assert!(version_dir(d.path(), &src, "../x").is_err());
        assert!(version_dir(d.path(), &src, "2")
            .unwrap()
            .join("server.js")
            .exists());
    }
}
