//! Booted instances: an AMI's image booted as a `systemd-nspawn` container, systemd as PID 1.
//!
//! [`Instance::boot`] finds the image's root file system through the AMI's
//! [`LOCAL_IMAGE_TAG`] tag ([`image_root`]; never any other way), and boots it with
//!
//! ```text
//! systemd-nspawn -D ROOT --register=no --keep-unit -b --volatile=overlay --link-journal=no \
//!   --network-namespace-path=NS --capability=CAP_NET_ADMIN -M bk-<i> --bind=SHARED:/mnt/efs --bind-ro=DROPIN:… …
//! ```
//!
//! - `--volatile=overlay`: the image directory is the read-only lower layer of an overlay whose
//!   upper layer is a tmpfs, so nothing an instance writes reaches the image or outlives the
//!   instance (immutable instances, as on EC2);
//! - its own network namespace ([`network`]), made before the boot: the fleet's /30, no route
//!   off it; the instance's own firewall (the image's nftables ruleset) applies in there alone;
//! - the instance metadata stand-in ([`crate::imds`], the project's one hand-written fake) serves
//!   169.254.169.254:80 *inside* that namespace: its listening socket is bound by a thread that
//!   made the namespace, and a socket stays in the namespace it was made in. The agent uses
//!   EC2's address, with no override;
//! - the emulator (on the host's 127.0.0.1) is reached through a [`relay::Relay`] on the host end
//!   of the veth;
//! - test-only settings come in two ways only: the IMDS userdata (the fleet's agent
//!   configuration, as `cloudformation/fleet.yaml` gives it) and the systemd drop-ins of
//!   [`dropins`], bound read-only into `/etc/systemd/system/<unit>.d/` (the AWS endpoint = the
//!   relay; and, for an instance launched without an instance profile, static test credentials:
//!   one with a profile gets its role's from the metadata, as on EC2).
//!   The units themselves are the image's, as shipped;
//! - the EFS stand-in is a host directory bound at `/mnt/efs` (this kernel has no NFS client; the
//!   agent finds something mounted there and leaves it, as it does with an EFS mount made before
//!   it started).
//!
//! Dropping an [`Instance`] (also when a test panics) powers the container off (SIGTERM to
//! nspawn, which asks its systemd to shut down), kills whatever is left of it after
//! [`STOP_GRACE`] (SIGKILL to its PID 1 ends its PID namespace), then stops the metadata
//! service and the relay, deletes the veth pair and removes the instance's directory. Every wait
//! is bounded.

pub mod image;
pub mod network;
pub mod relay;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Aws;
use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::imds::{Imds, ImdsState};
use network::{Netns, Slot};
use relay::Relay;

/// The AMI tag naming the root file system directory of a locally baked image.
pub const LOCAL_IMAGE_TAG: &str = "bake:local-image";
/// Where the EFS stand-in is bound in an instance (`[efs] mount_point` of the fleet).
pub const EFS_MOUNT_POINT: &str = "/mnt/efs";
/// How long an instance has to power off before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// The name the fleet's database has in an instance ([`BootSpec::database`]), as an RDS
/// endpoint is a DNS name: an `/etc/hosts` entry for the host end of its veth.
pub const DB_HOST: &str = "db.bake.internal";
/// The port of [`DB_HOST`] (PostgreSQL's, as data.yaml's RDS instance listens on).
pub const DB_PORT: u16 = 5432;
/// The drop-in file name, in every `<unit>.d/` it is bound into.
pub const DROPIN_NAME: &str = "50-bake-test.conf";
/// The units that make AWS calls and get the test drop-in.
pub const AWS_UNITS: [&str; 5] = [
    "bake-agent.service",
    "bake-agent-reap.service",
    "bake-user-stats.service",
    "bake-image-test.service",
    "bake-migrate.service",
];
/// The image's units that cannot work in a container on this kernel, with why: each gets a
/// test-only drop-in `ConditionVirtualization=!container`, so that it is skipped (inactive)
/// rather than failed, and a booted instance's failed units (`bake-agent check --live`'s
/// `units` check) are those of the image's own doing. On EC2 (a VM) they run.
pub const CONTAINER_SKIPPED: [(&str, &str); 5] = [
    (
        "auditd.service",
        "the kernel's audit interface is not available in a container's namespaces",
    ),
    (
        "acct.service",
        "acct(2) needs CAP_SYS_PACCT, which systemd-nspawn does not grant",
    ),
    (
        "usbguard.service",
        "USB device authorization needs the kernel's USB devices, which a container does not see",
    ),
    (
        "usbguard-dbus.service",
        "it needs usbguard.service (skipped in a container)",
    ),
    (
        "run-rpc_pipefs.mount",
        "rpc_pipefs needs the kernel's sunrpc module: this kernel has no NFS client",
    ),
];
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The root file system of image `image_id`: its [`LOCAL_IMAGE_TAG`] tag, an absolute path to a
/// directory.
pub async fn image_root(aws: &Aws, image_id: &str) -> anyhow::Result<PathBuf> {
    let out = aws
        .ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .with_context(|| format!("DescribeImages {image_id}"))?;
    let img = out
        .images()
        .first()
        .with_context(|| format!("image {image_id} does not exist"))?;
    let tags: BTreeMap<String, String> = img
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect();
    root_of(image_id, &tags)
}

/// The root file system of image `image_id` from its tags (its [`LOCAL_IMAGE_TAG`]): an absolute
/// path to a directory with systemd in it.
pub fn root_of(image_id: &str, tags: &BTreeMap<String, String>) -> anyhow::Result<PathBuf> {
    let tag = tags.get(LOCAL_IMAGE_TAG).with_context(|| {
        format!("image {image_id} has no {LOCAL_IMAGE_TAG} tag: it was not baked locally")
    })?;
    let root = PathBuf::from(tag);
    if !root.is_absolute() {
        bail!("image {image_id}: {LOCAL_IMAGE_TAG} = {tag:?} is not an absolute path");
    }
    if !root.join("sbin/init").exists() && !root.join("lib/systemd/systemd").exists() {
        bail!(
            "image {image_id}: {LOCAL_IMAGE_TAG} = {} holds no bootable root file system",
            root.display()
        );
    }
    Ok(root)
}

/// The image id of instance `instance_id` (DescribeInstances).
pub async fn instance_image(aws: &Aws, instance_id: &str) -> anyhow::Result<String> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .with_context(|| format!("DescribeInstances {instance_id}"))?;
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.image_id().map(str::to_owned))
        .with_context(|| format!("instance {instance_id} has no image id"))
}

/// The test-only drop-ins: `(unit, content)`, the same for every unit of [`AWS_UNITS`]: the
/// AWS endpoint (the relay at `endpoint`), and, for an instance without a role
/// (`with_role = false`), the emulator's static credentials. An instance with a role gets its
/// credentials as on EC2: the SDK's provider chain finds them in the metadata
/// ([`crate::imds::RoleCredentials`]).
#[must_use]
pub fn dropins(endpoint: &str, with_role: bool) -> Vec<(String, String)> {
    let body = if with_role {
        format!(
            "# Test-only: the local emulator through the relay on the host end of the veth. The\n\
             # credentials are the instance role's, from the instance metadata, as on EC2.\n\
             [Service]\n\
             Environment=AWS_ENDPOINT_URL={endpoint}\n"
        )
    } else {
        format!(
            "# Test-only: the local emulator through the relay on the host end of the veth, and its\n\
             # static credentials (on EC2 they come from the instance role, through IMDS).\n\
             [Service]\n\
             Environment=AWS_ENDPOINT_URL={endpoint}\n\
             Environment=AWS_ACCESS_KEY_ID=testing\n\
             Environment=AWS_SECRET_ACCESS_KEY=testing\n"
        )
    };
    AWS_UNITS
        .iter()
        .map(|u| ((*u).to_owned(), body.clone()))
        .collect()
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// The image's root file system ([`image_root`]).
    pub root: PathBuf,
    /// What the instance's metadata service serves (id, AZ, tags, userdata …).
    pub imds: ImdsState,
    /// The emulator's address on the host's loopback.
    pub emulator: SocketAddr,
    /// The EFS stand-in, bound at [`EFS_MOUNT_POINT`]; `None`: nothing there.
    pub shared_dir: Option<PathBuf>,
    /// The fleet's /24 ([`network::DEFAULT_FLEET_NET`]).
    pub fleet_net: Ipv4Addr,
    /// How long systemd may take to reach `running` (or `degraded`).
    pub timeout: Duration,
    /// More read-only binds: (host path, path in the instance), e.g. an audit tool.
    pub binds_ro: Vec<(PathBuf, String)>,
    /// The fleet's database on the host's loopback ([`crate::db::Postgres::addr`]): the
    /// instance reaches it as [`DB_HOST`]:[`DB_PORT`], a relay on the host end of its veth
    /// (a test-only `/etc/hosts` bound over the image's, with the image's lines and that one).
    /// `None`: no database.
    pub database: Option<SocketAddr>,
    /// Whether [`Instance::boot`] waits for systemd's boot to finish (`running` or `degraded`);
    /// `false`: it returns as soon as the container's systemd runs, as EC2's RunInstances returns
    /// before the instance has booted (an agent that never gets its app ready holds systemd's boot
    /// for its unit's TimeoutStartSec).
    pub wait_booted: bool,
}

impl BootSpec {
    /// `root` with `imds`, reaching the emulator at `emulator` (`http://127.0.0.1:PORT`).
    pub fn new(root: PathBuf, imds: ImdsState, emulator: &str) -> anyhow::Result<Self> {
        let emulator = emulator
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("emulator address {emulator}"))?;
        Ok(Self {
            root,
            imds,
            emulator,
            shared_dir: None,
            fleet_net: network::DEFAULT_FLEET_NET,
            timeout: Duration::from_secs(120),
            binds_ro: Vec::new(),
            database: None,
            wait_booted: true,
        })
    }
}

/// Times of one boot, from the start of `systemd-nspawn`.
#[derive(Clone, Debug, Default)]
pub struct BootTimes {
    /// The container's systemd is running (its PID 1 exists and has exec'd systemd).
    pub container: Duration,
    /// systemd reports `running` or `degraded` (its `FinishTimestampMonotonic`).
    pub systemd: Duration,
}

/// A process of an instance, seen from the host.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Its pid on the host.
    pub host_pid: i32,
    /// Its pid in the instance.
    pub pid: i32,
    /// Its parent's pid on the host.
    pub host_ppid: i32,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
    /// Its cgroup (the name=systemd or unified hierarchy's path).
    pub cgroup: String,
}

/// A booted instance; powered off and removed when dropped.
#[derive(Debug)]
pub struct Instance {
    slot: Slot,
    started: Instant,
    nspawn: Option<Child>,
    leader: i32,
    pidns: PathBuf,
    userspace_mono: Duration,
    state: String,
    times: BootTimes,
    imds: Option<Imds>,
    relay: Option<Relay>,
    /// The relay to the fleet's database ([`BootSpec::database`]).
    db_relay: Option<Relay>,
    netns: Option<Netns>,
    dir: Option<tempfile::TempDir>,
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
}

fn ppid(pid: i32) -> Option<i32> {
    status_field(pid, "PPid:")?.parse().ok()
}

fn host_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Instance {
    /// Boots `spec`: the network, the metadata service, the relay, the drop-ins, then nspawn;
    /// returns once systemd is `running` or `degraded` (the failed units are in [`Self::state`]
    /// and [`Self::failed_units`]), or fails after `spec.timeout` with the console's last lines.
    /// With `spec.wait_booted` false it returns once the container's systemd runs ([`Self::state`]
    /// `starting`, [`BootTimes::systemd`] zero and [`Self::since_start`] counting from then).
    pub fn boot(spec: BootSpec) -> anyhow::Result<Self> {
        let slot = Slot::take(spec.fleet_net)?;
        let (netns, imds_listener) = Netns::create(&slot)?;
        let imds = Imds::start_on(imds_listener, spec.imds.clone())?;
        let relay = Relay::start(slot.host_addr(), spec.emulator)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bake-{}-", slot.machine()))
            .tempdir()?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(&spec.root)
            .args([
                "--register=no",
                "--keep-unit",
                "-b",
                "--volatile=overlay",
                "--link-journal=no",
                "--console=read-only",
            ])
            .arg(format!("--network-namespace-path={}", netns.path()))
            // What --private-network would give: the instance administers its own namespace
            // (its nftables ruleset, `bake-agent firewall`), as root on EC2 does.
            .arg("--capability=CAP_NET_ADMIN")
            .arg(format!("--machine={}", slot.machine()));
        if let Some(shared) = &spec.shared_dir {
            cmd.arg(format!("--bind={}:{EFS_MOUNT_POINT}", shared.display()));
        }
        for (host, inside) in &spec.binds_ro {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let db_relay = match spec.database {
            None => None,
            Some(target) => {
                let relay = Relay::start_on(SocketAddr::from((slot.host_addr(), DB_PORT)), target)?;
                let image_hosts =
                    std::fs::read_to_string(spec.root.join("etc/hosts")).unwrap_or_default();
                let hosts = dir.path().join("hosts");
                std::fs::write(
                    &hosts,
                    format!(
                        "{image_hosts}{}# Test-only: the fleet's database, through a relay on the host end of the veth.\n{} {DB_HOST}\n",
                        if image_hosts.is_empty() || image_hosts.ends_with('\n') { "" } else { "\n" },
                        slot.host_addr()
                    ),
                )?;
                cmd.arg(format!("--bind-ro={}:/etc/hosts", hosts.display()));
                Some(relay)
            }
        };
        let skipped = CONTAINER_SKIPPED.iter().map(|(unit, why)| {
            (
                (*unit).to_owned(),
                format!(
                    "# Test-only: {why}; on EC2 this unit runs.\n\
                     [Unit]\nConditionVirtualization=!container\n"
                ),
            )
        });
        for (unit, body) in dropins(&relay.url(), spec.imds.role_credentials.is_some())
            .into_iter()
            .chain(skipped)
        {
            let file = dir.path().join(format!("{unit}.conf"));
            std::fs::write(&file, body)?;
            cmd.arg(format!(
                "--bind-ro={}:/etc/systemd/system/{unit}.d/{DROPIN_NAME}",
                file.display()
            ));
        }
        let console = std::fs::File::create(dir.path().join("console.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .env_clear()
            .env("PATH", PATH);
        crate::process::die_with_parent(&mut cmd);
        let started = Instant::now();
        let nspawn = cmd.spawn().context("starting systemd-nspawn")?;
        let mut me = Self {
            slot,
            started,
            nspawn: Some(nspawn),
            leader: 0,
            pidns: PathBuf::new(),
            userspace_mono: Duration::ZERO,
            state: String::new(),
            times: BootTimes::default(),
            imds: Some(imds),
            relay: Some(relay),
            db_relay,
            netns: Some(netns),
            dir: Some(dir),
        };
        let deadline = started + spec.timeout;
        me.leader = me.find_leader(deadline)?;
        me.times.container = started.elapsed();
        me.pidns = std::fs::read_link(format!("/proc/{}/ns/pid", me.leader))?;
        if !spec.wait_booted {
            "starting".clone_into(&mut me.state);
            return Ok(me);
        }
        me.wait_running(deadline)?;
        me.userspace_mono = me
            .show_manager("UserspaceTimestampMonotonic")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_micros)
            .context("the container's systemd has no UserspaceTimestampMonotonic")?;
        let finish = me
            .show_manager("FinishTimestampMonotonic")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .map(Duration::from_micros);
        me.times.systemd = finish.map_or_else(|| started.elapsed(), |f| me.since_start(f));
        Ok(me)
    }

    /// Whether the container ended on its own (powered off, or nspawn failed).
    pub fn has_exited(&mut self) -> bool {
        self.nspawn_exited().is_some()
    }

    fn nspawn_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.nspawn
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The container's PID 1 on the host: a child of nspawn, pid 1 of its own PID namespace,
    /// running systemd.
    fn find_leader(&mut self, deadline: Instant) -> anyhow::Result<i32> {
        let nspawn = i32::try_from(self.nspawn.as_ref().map_or(0, Child::id))?;
        loop {
            if let Some(st) = self.nspawn_exited() {
                bail!(
                    "systemd-nspawn exited ({st}) before the container started: {}",
                    self.console_tail(30)
                );
            }
            for pid in host_pids() {
                let Some(ns) = status_field(pid, "NSpid:") else {
                    continue;
                };
                if ns.split_whitespace().last() != Some("1") || pid == 1 {
                    continue;
                }
                let mut up = ppid(pid);
                let mut ours = false;
                for _ in 0..3 {
                    match up {
                        Some(p) if p == nspawn => {
                            ours = true;
                            break;
                        }
                        Some(p) if p > 1 => up = ppid(p),
                        _ => break,
                    }
                }
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if ours && comm.trim() == "systemd" {
                    return Ok(pid);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the container's systemd did not start: {}",
                    self.console_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if let Some(st) = self.nspawn_exited() {
                bail!(
                    "the container stopped ({st}) while booting: {}",
                    self.console_tail(30)
                );
            }
            let out = self.exec(&["systemctl", "is-system-running"]);
            let state = out
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if state == "running" || state == "degraded" {
                self.state = state;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd in {} did not finish booting (state {state:?}); jobs: {}; console: {}",
                    self.slot.machine(),
                    self.sh("systemctl list-jobs --no-pager 2>&1 | head -20"),
                    self.console_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The container's machine name (`bk-<i>`), also its host name.
    #[must_use]
    pub fn machine(&self) -> String {
        self.slot.machine()
    }

    /// The instance's address (`N.(4i+2)`).
    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.slot.instance_addr()
    }

    /// The host end of its veth (`N.(4i+1)`).
    #[must_use]
    pub fn host_addr(&self) -> Ipv4Addr {
        self.slot.host_addr()
    }

    /// The host end's interface (`ve-<machine>`).
    #[must_use]
    pub fn veth(&self) -> String {
        self.slot.veth()
    }

    /// The relay to the emulator.
    #[must_use]
    pub fn relay(&self) -> &Relay {
        self.relay
            .as_ref()
            .expect("the relay runs while the instance does")
    }

    /// The instance's metadata service.
    #[must_use]
    pub fn imds(&self) -> &Imds {
        self.imds
            .as_ref()
            .expect("IMDS runs while the instance does")
    }

    /// The instance's network namespace.
    #[must_use]
    pub fn netns(&self) -> &Netns {
        self.netns
            .as_ref()
            .expect("the namespace lives while the instance does")
    }

    /// The state systemd reached at boot: `running` or `degraded`.
    #[must_use]
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Boot times.
    #[must_use]
    pub fn times(&self) -> &BootTimes {
        &self.times
    }

    /// When `systemd-nspawn` was started.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The container's PID 1 on the host.
    #[must_use]
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// The container's systemd's `UserspaceTimestampMonotonic`: when its PID 1 started, on
    /// `CLOCK_MONOTONIC` (the container shares the host's clock), to the microsecond.
    #[must_use]
    pub fn userspace_monotonic(&self) -> Duration {
        self.userspace_mono
    }

    /// A `CLOCK_MONOTONIC` value of the instance (a systemd `…TimestampMonotonic` or a journal
    /// timestamp; the container shares the host's clock) as time since nspawn was started:
    /// [`BootTimes::container`] (measured on the host, to 20 ms) plus the time since the
    /// container's systemd started (its `UserspaceTimestampMonotonic`).
    #[must_use]
    pub fn since_start(&self, mono: Duration) -> Duration {
        self.times.container + mono.saturating_sub(self.userspace_mono)
    }

    /// Runs `args` inside the instance (all its namespaces: `nsenter -t LEADER -a`), at most 60 s.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        exec_in(self.leader, args).with_context(|| format!("in {}", self.slot.machine()))
    }

    /// Runs `script` with `/bin/sh -c` inside the instance: its stdout and stderr, trimmed.
    #[must_use]
    pub fn sh(&self, script: &str) -> String {
        sh_in(self.leader, script)
    }

    /// [`Instance::sh`] for a script that may take longer than [`EXEC_TIMEOUT`] (an audit): at
    /// most `timeout`; a script killed at its timeout says so.
    #[must_use]
    pub fn sh_for(&self, script: &str, timeout: Duration) -> String {
        output_text(exec_for(self.leader, &["/bin/sh", "-c", script], timeout))
    }

    /// `systemctl show -P PROP` of the manager itself.
    pub fn show_manager(&self, prop: &str) -> anyhow::Result<String> {
        let o = self.exec(&["systemctl", "show", "-P", prop])?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    /// `systemctl show -p P1,P2… UNIT` as a map.
    pub fn show(&self, unit: &str, props: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
        let o = self.exec(&["systemctl", "show", "-p", &props.join(","), unit])?;
        Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// The failed units (`systemctl --failed`), one per line.
    #[must_use]
    pub fn failed_units(&self) -> String {
        self.sh("systemctl --failed --plain --no-legend --no-pager")
    }

    /// The unit's journal (`journalctl -u UNIT -o cat`).
    #[must_use]
    pub fn journal(&self, unit: &str) -> String {
        self.sh(&format!("journalctl -u {unit} --no-pager -o cat"))
    }

    /// When the first journal line of `unit` containing `needle` was logged, since the start.
    #[must_use]
    pub fn journal_time(&self, unit: &str, needle: &str) -> Option<Duration> {
        let text = self.sh(&format!(
            "journalctl -u {unit} --no-pager -o short-monotonic"
        ));
        text.lines().find(|l| l.contains(needle)).and_then(|l| {
            let stamp = l.trim_start().strip_prefix('[')?.split(']').next()?.trim();
            let secs: f64 = stamp.parse().ok()?;
            Some(self.since_start(Duration::from_secs_f64(secs)))
        })
    }

    /// Every process of the instance (its PID namespace), read from the host's /proc.
    #[must_use]
    pub fn processes(&self) -> Vec<Proc> {
        host_pids()
            .into_iter()
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|ns| ns == self.pidns)
            })
            .filter_map(|host_pid| {
                let pid = status_field(host_pid, "NSpid:")?
                    .split_whitespace()
                    .last()?
                    .parse()
                    .ok()?;
                let cmdline = std::fs::read(format!("/proc/{host_pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let cg = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).ok()?;
                let cgroup = cg
                    .lines()
                    .find(|l| l.starts_with("1:name=systemd:") || l.starts_with("0::"))
                    .and_then(|l| l.splitn(3, ':').nth(2))
                    .unwrap_or_default()
                    .to_owned();
                Some(Proc {
                    host_pid,
                    pid,
                    host_ppid: ppid(host_pid)?,
                    cmdline,
                    cgroup,
                })
            })
            .collect()
    }

    /// The host pid of a unit's main process (`MainPID`), if it has one.
    #[must_use]
    pub fn main_pid(&self, unit: &str) -> Option<Proc> {
        let pid: i32 = self
            .show(unit, &["MainPID"])
            .ok()?
            .get("MainPID")?
            .parse()
            .ok()?;
        if pid == 0 {
            return None;
        }
        self.processes().into_iter().find(|p| p.pid == pid)
    }

    /// Sends `sig` to the instance's process `p` (from the host).
    pub fn signal(&self, p: &Proc, sig: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(p.host_pid), sig)
            .with_context(|| format!("{sig} to {} ({})", p.host_pid, p.cmdline))
    }

    /// The last `n` lines of the container's console (systemd's boot messages).
    #[must_use]
    pub fn console_tail(&self, n: usize) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let text = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for l in &lines[lines.len().saturating_sub(n)..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// The instance's own directory on the host (console log, drop-ins).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives while the instance does")
            .path()
    }

    /// Powers the instance off: SIGTERM to nspawn (the container's systemd shuts down), up to
    /// `grace`; then SIGKILL to the container's PID 1 (its whole PID namespace) and to nspawn.
    /// Returns whether it shut down within `grace`.
    pub fn power_off(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.nspawn.take() else {
            return true;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.leader > 1 {
            let _ = kill(Pid::from_raw(self.leader), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.power_off(STOP_GRACE);
        // In this order: nothing of the instance is left to call them, then the veth pair.
        drop(self.imds.take());
        drop(self.relay.take());
        drop(self.db_relay.take());
        drop(self.netns.take());
        drop(self.dir.take());
    }
}

/// How long a command run inside an instance may take ([`exec_in`]).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `args` inside the container whose PID 1 on the host is `leader` (all its namespaces:
/// `nsenter -t LEADER -a`), at most [`EXEC_TIMEOUT`]. For callers that hold only the leader's
/// PID (the fleet hands it out so that a command never runs under its lock).
pub fn exec_in(leader: i32, args: &[&str]) -> anyhow::Result<Output> {
    exec_for(leader, args, EXEC_TIMEOUT)
}

/// [`exec_in`] with a timeout of its own.
fn exec_for(leader: i32, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    Command::new("timeout")
        .args([
            "--kill-after=5",
            &timeout.as_secs().max(1).to_string(),
            "nsenter",
            "-t",
        ])
        .arg(leader.to_string())
        .args(["-a", "--"])
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {args:?} in the container of PID {leader}"))
}

/// Runs `script` with `/bin/sh -c` in the container of `leader` ([`exec_in`]): its stdout and
/// stderr, trimmed, or the error in parentheses.
#[must_use]
pub fn sh_in(leader: i32, script: &str) -> String {
    output_text(exec_in(leader, &["/bin/sh", "-c", script]))
}

/// stdout and stderr, trimmed; `(killed at its timeout)` after them when `timeout` ended it
/// (exit 124, or 137 after `--kill-after`), the error in parentheses when it did not run.
fn output_text(out: anyhow::Result<Output>) -> String {
    out.map_or_else(
        |e| format!("({e:#})"),
        |o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            let mut s = s.trim().to_owned();
            if matches!(o.status.code(), Some(124 | 137)) {
                s.push_str("\n(killed at its timeout)");
            }
            s
        },
    )
}
