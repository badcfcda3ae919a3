//! `bake-boot-bench`: figures of booted instances, a benchmark and not a test (`bench/run
//! booted` and `bench/restart.py` run it; BENCHMARKS.md has the numbers).
//!
//! ```text
//! bake-boot-bench boots [--boots N] [--warmup N] [--probe-interval D] [--agent PATH] [--bake PATH] [--json OUT]
//! bake-boot-bench hold  [--bind-ro HOST:INSIDE]... [--exec CMD]... [--agent PATH] [--bake PATH]
//! ```
//!
//! `boots`: the local image (`bake build`, local target, as the tests bake it, with the agent
//! binary `--agent`) booted N times, one instance at a time, each the new instance of an
//! emulated Auto Scaling group whose launch hook defaults to ABANDON (only the agent's CONTINUE
//! brings it InService). Per boot, every time from the start of `systemd-nspawn`, read from
//! systemd's own monotonic timestamps and the instance's journal (the container shares the
//! host's `CLOCK_MONOTONIC`, so they are exact to the microsecond; the journal's are the times
//! journald received the line): the container's systemd started, `bake-agent.service` started,
//! the agent exec'd, "agent up", "app is ready", READY=1 as systemd saw it, "lifecycle action
//! completed" (CONTINUE), systemd's boot finished, and the instance InService in the emulator
//! (polled every 20 ms from the host once the harness saw the boot finish). Then the medians,
//! minima and maxima, and the raw samples as JSON.
//!
//! `hold`: boots one instance of the image (no userdata), runs each `--exec` command in it
//! (`/bin/sh -c`, failing on a non-zero exit), prints one JSON line (`machine`, `addr`,
//! `host_addr`, `leader`, `pidns`, …) and keeps the instance until its standard input ends or
//! it gets SIGTERM/SIGINT; then powers it off. `bench/restart.py` drives systemd's own
//! `Restart=always` with it.
//!
//! `--agent` and `--bake` default to the binaries next to this one (the dev build for
//! `target/debug/bake-boot-bench`). Everything is removed at the end, also on an error or a
//! signal (the harness's `Drop`s). Needs root, `systemd-nspawn` and the debootstrap cache or
//! Debian's mirror, as the booted-instance tests do.
//!
//! Exit codes: 0 done (every boot's instance InService), 1 a failure, 2 a bad command line,
//! 130 interrupted.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use bake_e2e::boot::{self, image, BootSpec, Instance};
use bake_e2e::{Aws, Emulator, ImdsState};

const USAGE: &str = "usage: bake-boot-bench boots [--boots N] [--warmup N] [--probe-interval D] \
[--agent PATH] [--bake PATH] [--json OUT]\n       bake-boot-bench hold [--bind-ro HOST:INSIDE]... \
[--exec CMD]... [--agent PATH] [--bake PATH]";

const GROUP: &str = "boot-bench";
const LAUNCH_HOOK: &str = "launch";
const APP_PORT: u16 = 3000;
const SECRETS_PATH: &str = "/bake/boot-bench/app";
/// How often the host asks the emulator whether the instance is InService.
const IN_SERVICE_POLL: Duration = Duration::from_millis(20);

/// The rows, in the order of a boot; (key, what it is).
const STEPS: [(&str, &str); 10] = [
    (
        "systemd",
        "the container's systemd started (UserspaceTimestampMonotonic)",
    ),
    (
        "unit start",
        "bake-agent.service started: ExecStartPre (mount, firewall) (InactiveExitTimestampMonotonic)",
    ),
    (
        "agent exec",
        "bake-agent run exec'd (ExecMainStartTimestampMonotonic)",
    ),
    (
        "agent up",
        "the agent's \"agent up\" (identity, secrets, app spawned; journal)",
    ),
    ("app ready", "the agent's \"app is ready\" (journal)"),
    (
        "READY",
        "agent READY=1 as systemd saw it (ActiveEnterTimestampMonotonic)",
    ),
    (
        "CONTINUE",
        "the agent's \"lifecycle action completed\" (CONTINUE; journal)",
    ),
    (
        "boot finished",
        "systemd's boot finished (FinishTimestampMonotonic)",
    ),
    (
        "harness saw it",
        "the harness saw `running`/`degraded` (is-system-running, polled every 50 ms)",
    ),
    (
        "InService",
        "InService in the emulator (polled every 20 ms after the row above)",
    ),
];

#[derive(Debug, Default)]
struct Args {
    mode: String,
    boots: usize,
    warmup: usize,
    probe_interval: String,
    agent: Option<PathBuf>,
    bake: Option<PathBuf>,
    json: Option<PathBuf>,
    binds: Vec<(PathBuf, String)>,
    execs: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        boots: 10,
        warmup: 1,
        probe_interval: "100ms".into(),
        ..Args::default()
    };
    match it.next().as_deref() {
        Some("-h" | "--help") => return Ok(None),
        Some(m @ ("boots" | "hold")) => m.clone_into(&mut a.mode),
        Some(other) => return Err(format!("unknown mode {other:?}\n{USAGE}")),
        None => return Err(USAGE.to_owned()),
    }
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let count = |v: &str, min: usize| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (min..=60).contains(n))
                .ok_or_else(|| format!("{flag}: {v:?} is not a number from {min} to 60"))
        };
        match (a.mode.as_str(), flag.as_str()) {
            ("boots", "--boots") => a.boots = count(&value, 1)?,
            ("boots", "--warmup") => a.warmup = count(&value, 0)?,
            ("boots", "--probe-interval") => a.probe_interval = value,
            ("boots", "--json") => a.json = Some(value.into()),
            (_, "--agent") => a.agent = Some(value.into()),
            (_, "--bake") => a.bake = Some(value.into()),
            ("hold", "--bind-ro") => {
                let (host, inside) = value
                    .split_once(':')
                    .filter(|(h, i)| !h.is_empty() && i.starts_with('/'))
                    .ok_or_else(|| format!("--bind-ro: {value:?} is not HOST:/PATH"))?;
                a.binds.push((host.into(), inside.to_owned()));
            }
            ("hold", "--exec") => a.execs.push(value),
            _ => return Err(format!("unknown option {flag} for {}\n{USAGE}", a.mode)),
        }
    }
    Ok(Some(a))
}

/// A binary next to this one (target/<profile>/), or `given`.
fn binary(given: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let p = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("bake-boot-bench has no directory")?
            .join(name),
    };
    if !p.is_file() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` (or the release build) first",
            p.display()
        );
    }
    Ok(std::fs::canonicalize(&p)?)
}

/// Which build a binary is, from its directory: `target/release` or `target/debug`.
fn profile_of(bin: &Path) -> &'static str {
    match bin
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
    {
        Some("release") => "release",
        Some("debug") => "dev",
        _ => "unknown",
    }
}

/// Now on `CLOCK_MONOTONIC`, the clock of systemd's `…TimestampMonotonic` and the journal's
/// monotonic stamps.
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!(
                "{USAGE}\n\nboots: per-step start times of booted instances of the local image, \
                 median/min/max.\nhold: one booted instance kept until stdin ends or SIGTERM.\n\
                 See tests/e2e/src/bin/bake-boot-bench.rs and BENCHMARKS.md.\n\n\
                 exit codes: 0 done, 1 failure, 2 bad command line, 130 interrupted"
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bake-boot-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let (tx, rx) = mpsc::channel::<&'static str>();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let sig_tx = tx.clone();
    bake_e2e::process::on_interrupt(move || {
        flag.store(true, Ordering::SeqCst);
        let _ = sig_tx.send("signal");
    });
    let run = if args.mode == "hold" {
        hold(&args, tx, &rx)
    } else {
        boots(&args, &interrupted)
    };
    match run {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if interrupted.load(Ordering::SeqCst) => {
            eprintln!("bake-boot-bench: interrupted ({e:#}); everything stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("bake-boot-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The image for `agent`: (AMI id, root file system, seconds the build took).
fn bake_image(
    rt: &tokio::runtime::Runtime,
    emu: &Emulator,
    aws: &Aws,
    bake: &Path,
    agent: &Path,
) -> anyhow::Result<(String, PathBuf, f64)> {
    let t = Instant::now();
    let ami = image::bake_local_image_with(emu, bake, agent)?;
    let secs = t.elapsed().as_secs_f64();
    let root = rt.block_on(boot::image_root(aws, &ami))?;
    Ok((ami, root, secs))
}

fn hold(
    args: &Args,
    tx: mpsc::Sender<&'static str>,
    rx: &mpsc::Receiver<&'static str>,
) -> anyhow::Result<bool> {
    let agent = binary(args.agent.as_deref(), "bake-agent")?;
    let bake = binary(args.bake.as_deref(), "bake")?;
    for (host, _) in &args.binds {
        if !host.exists() {
            bail!("--bind-ro: {} does not exist", host.display());
        }
    }
    let rt = rt()?;
    let emu = Emulator::start_with_scale(None)?;
    let aws = rt.block_on(emu.aws());
    let (ami, root, _) = bake_image(&rt, &emu, &aws, &bake, &agent)?;
    if let Ok(why) = rx.try_recv() {
        bail!("{why} before the boot");
    }
    let mut spec = BootSpec::new(root.clone(), ImdsState::new("i-0bench0hold"), emu.url())?;
    spec.binds_ro.clone_from(&args.binds);
    let inst = Instance::boot(spec)?;
    for cmd in &args.execs {
        let out = inst.exec(&["/bin/sh", "-c", cmd])?;
        if !out.status.success() {
            bail!(
                "in {}: {cmd:?} failed ({}): {}{}",
                inst.machine(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let pidns = std::fs::read_link(format!("/proc/{}/ns/pid", inst.leader()))?;
    let line = serde_json::json!({
        "machine": inst.machine(),
        "addr": inst.addr().to_string(),
        "host_addr": inst.host_addr().to_string(),
        "veth": inst.veth(),
        "leader": inst.leader(),
        "pidns": pidns.display().to_string(),
        "state": inst.state(),
        "systemd_ms": inst.times().systemd.as_secs_f64() * 1000.0,
        "ami": ami,
        "image_root": root.display().to_string(),
        "agent": agent.display().to_string(),
        "agent_build": profile_of(&agent),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    std::thread::spawn(move || {
        let mut sink = String::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        while lock.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = tx.send("stdin closed");
    });
    let why = rx.recv().unwrap_or("stdin closed");
    let mut inst = inst;
    let t = Instant::now();
    let clean = inst.power_off(boot::STOP_GRACE);
    eprintln!(
        "bake-boot-bench hold: {why}; {} powered off in {} ms{}",
        inst.machine(),
        t.elapsed().as_millis(),
        if clean { "" } else { " (killed)" }
    );
    drop(inst);
    drop(emu);
    Ok(true)
}

/// The fleet's userdata, shaped as `cloudformation/fleet.yaml` renders it, with the readiness
/// probe every `interval`.
fn userdata(interval: &str) -> String {
    format!(
        r#"[identity]
asg_name = "{GROUP}"

[app]
command = ["/usr/bin/node", "/opt/app/server.js"]
user = "app"
working_dir = "/opt/app"
port = {APP_PORT}

[app.env]
HOST = "0.0.0.0"
APP_VERSION = "boot-bench"

[secrets]
path = "{SECRETS_PATH}"
env_file = "/run/bake/app.env"

[efs]
file_system_id = "fs-0123456789abcdef0"
mount_point = "/mnt/efs"

[uploads]
dir = "/mnt/efs/uploads"

[readiness]
probe = "http://127.0.0.1:{APP_PORT}/health"
interval = "{interval}"
launch_hook = "{LAUNCH_HOOK}"

[metrics]
publish_interval = "10s"

[logs]
retention_days = 7

[logs.app]
log_group = "/bake/boot-bench/app"
"#
    )
}

/// A group of at most `max` instances on `ami`, none yet, with a launch hook whose default is
/// ABANDON, and one secret under the fleet's path.
async fn make_group(
    aws: &Aws,
    ami: &str,
    max: usize,
    connection_string: &str,
) -> anyhow::Result<()> {
    aws.ssm
        .put_parameter()
        .name(format!("{SECRETS_PATH}/db/connection-string"))
        .value(connection_string)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .context("PutParameter")?;
    aws.ec2
        .create_launch_template()
        .launch_template_name(format!("{GROUP}-lt"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .context("CreateLaunchTemplate")?;
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(format!("{GROUP}-lt"))
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(i32::try_from(max)?)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .context("CreateAutoScalingGroup")?;
    aws.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name(LAUNCH_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .default_result("ABANDON")
        .heartbeat_timeout(3600)
        .send()
        .await
        .context("PutLifecycleHook")?;
    Ok(())
}

/// (instance, lifecycle state) of the group's instances.
async fn lifecycle(aws: &Aws) -> anyhow::Result<BTreeMap<String, String>> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .context("DescribeAutoScalingGroups")?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_owned(),
                i.lifecycle_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// Grows the group to `capacity`: the new instance once it is Pending:Wait.
async fn new_instance(aws: &Aws, known: &[String], capacity: usize) -> anyhow::Result<String> {
    aws.asg
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(i32::try_from(capacity)?)
        .send()
        .await
        .context("SetDesiredCapacity")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some((id, _)) = lifecycle(aws)
            .await?
            .into_iter()
            .find(|(id, st)| !known.contains(id) && st == "Pending:Wait")
        {
            return Ok(id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("group {GROUP}: no new instance in Pending:Wait at capacity {capacity}")
}

/// The first journal entry of `unit` whose message contains `needle`: its `CLOCK_MONOTONIC`
/// stamp (when journald received it).
fn journal_mono(journal: &[(Duration, String)], needle: &str) -> Option<Duration> {
    journal
        .iter()
        .find(|(_, m)| m.contains(needle))
        .map(|(t, _)| *t)
}

/// The unit's journal as (monotonic stamp, message).
fn journal(inst: &Instance, unit: &str) -> anyhow::Result<Vec<(Duration, String)>> {
    let out = inst.exec(&[
        "journalctl",
        "-u",
        unit,
        "--no-pager",
        "-o",
        "json",
        "--output-fields=MESSAGE,__MONOTONIC_TIMESTAMP",
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let us: u64 = v["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok()?;
            let msg = v["MESSAGE"].as_str()?.to_owned();
            Some((Duration::from_micros(us), msg))
        })
        .collect())
}

/// One boot of instance `id`: its row values, ms from the start of nspawn.
#[allow(clippy::too_many_lines)]
fn one_boot(
    rt: &tokio::runtime::Runtime,
    emu: &Emulator,
    aws: &Aws,
    root: &Path,
    id: &str,
    probe_interval: &str,
    db: std::net::SocketAddr,
) -> anyhow::Result<serde_json::Value> {
    let shared = tempfile::Builder::new().prefix("bake-efs-").tempdir()?;
    let mut state = ImdsState::new(id);
    state.user_data = Some(userdata(probe_interval));
    state.tags = Some(BTreeMap::from([(
        "aws:autoscaling:groupName".to_owned(),
        GROUP.to_owned(),
    )]));
    let mut spec = BootSpec::new(root.to_path_buf(), state, emu.url())?;
    spec.shared_dir = Some(shared.path().to_path_buf());
    spec.database = Some(db);
    let inst = Instance::boot(spec)?;
    let returned = inst.started().elapsed();
    // nspawn's start on CLOCK_MONOTONIC: now minus the time since it (two clock reads apart).
    let start = monotonic_now().saturating_sub(inst.started().elapsed());
    let in_service = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if rt.block_on(lifecycle(aws))?.get(id).map(String::as_str) == Some("InService") {
                break inst.started().elapsed();
            }
            if Instant::now() > deadline {
                bail!(
                    "{id} not InService 60 s after its boot; the agent's journal:\n{}",
                    inst.sh("journalctl -u bake-agent.service --no-pager -n 40 -o cat")
                );
            }
            std::thread::sleep(IN_SERVICE_POLL);
        }
    };
    let ms = |mono: Duration| (mono.as_secs_f64() - start.as_secs_f64()) * 1000.0;
    let unit = inst.show(
        "bake-agent.service",
        &[
            "InactiveExitTimestampMonotonic",
            "ExecMainStartTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
            "NRestarts",
        ],
    )?;
    let prop = |k: &str| -> anyhow::Result<Duration> {
        unit.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .map(Duration::from_micros)
            .with_context(|| format!("bake-agent.service has no {k}: {unit:?}"))
    };
    let finish = inst
        .show_manager("FinishTimestampMonotonic")?
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Duration::from_micros)
        .context("the instance's systemd has no FinishTimestampMonotonic")?;
    let lines = journal(&inst, "bake-agent.service")?;
    let from_journal = |needle: &str| {
        journal_mono(&lines, needle).with_context(|| {
            format!(
                "no {needle:?} in the agent's journal:\n{}",
                inst.sh("journalctl -u bake-agent.service --no-pager -n 40 -o cat")
            )
        })
    };
    let mut steps = serde_json::Map::new();
    for (key, value) in [
        ("systemd", ms(inst.userspace_monotonic())),
        ("unit start", ms(prop("InactiveExitTimestampMonotonic")?)),
        ("agent exec", ms(prop("ExecMainStartTimestampMonotonic")?)),
        ("agent up", ms(from_journal("agent up")?)),
        ("app ready", ms(from_journal("app is ready")?)),
        ("READY", ms(prop("ActiveEnterTimestampMonotonic")?)),
        ("CONTINUE", ms(from_journal("lifecycle action completed")?)),
        ("boot finished", ms(finish)),
        ("harness saw it", returned.as_secs_f64() * 1000.0),
        ("InService", in_service.as_secs_f64() * 1000.0),
    ] {
        steps.insert(key.to_owned(), value.into());
    }
    let chain = inst.sh("systemd-analyze critical-chain --no-pager bake-agent.service");
    let failed = inst.failed_units();
    let state = inst.state().to_owned();
    let nrestarts = unit.get("NRestarts").cloned().unwrap_or_default();
    let mut inst = inst;
    let t = Instant::now();
    let clean = inst.power_off(boot::STOP_GRACE);
    let off = t.elapsed().as_secs_f64() * 1000.0;
    drop(inst);
    Ok(serde_json::json!({
        "instance": id,
        "steps": steps,
        "power_off_ms": off,
        "power_off_clean": clean,
        "agent_restarts": nrestarts,
        "state": state,
        "failed_units": failed,
        "critical_chain": chain,
    }))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn boots(args: &Args, interrupted: &AtomicBool) -> anyhow::Result<bool> {
    let agent = binary(args.agent.as_deref(), "bake-agent")?;
    let bake = binary(args.bake.as_deref(), "bake")?;
    let build = profile_of(&agent);
    let size = std::fs::metadata(&agent)?.len();
    let rt = rt()?;
    let emu = Emulator::start_with_scale(None)?;
    let aws = rt.block_on(emu.aws());
    println!(
        "agent in the image: {} ({build} build, {:.1} MB)",
        agent.display(),
        size as f64 / 1e6
    );
    let (ami, root, build_secs) = bake_image(&rt, &emu, &aws, &bake, &agent)?;
    println!(
        "image: {ami} -> {} (bake build: {build_secs:.1} s)",
        root.display()
    );
    let total = args.warmup + args.boots;
    // The app's database (RDS's stand-in): the app's readiness includes it.
    let db = bake_e2e::db::Postgres::start()?;
    db.migrate_app()?;
    let connection_string = db.connection_string(bake_e2e::boot::DB_HOST, bake_e2e::boot::DB_PORT);
    rt.block_on(make_group(&aws, &ami, total, &connection_string))?;
    let mut known: Vec<String> = Vec::new();
    let mut runs = Vec::new();
    let mut warm = Vec::new();
    for i in 0..total {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted after {i} boots");
        }
        let id = rt.block_on(new_instance(&aws, &known, known.len() + 1))?;
        known.push(id.clone());
        let r = one_boot(&rt, &emu, &aws, &root, &id, &args.probe_interval, db.addr())
            .with_context(|| format!("boot {} ({id})", i + 1))?;
        let s = &r["steps"];
        eprintln!(
            "boot {}/{total}{}: systemd {:.0} READY {:.0} CONTINUE {:.0} InService {:.0} ms",
            i + 1,
            if i < args.warmup { " (warm-up)" } else { "" },
            s["systemd"].as_f64().unwrap_or(-1.0),
            s["READY"].as_f64().unwrap_or(-1.0),
            s["CONTINUE"].as_f64().unwrap_or(-1.0),
            s["InService"].as_f64().unwrap_or(-1.0),
        );
        if i < args.warmup {
            warm.push(r);
        } else {
            runs.push(r);
        }
    }
    print_table(&runs, args, build);
    if let Some(last) = runs.last() {
        println!(
            "\nsystemd-analyze critical-chain bake-agent.service (last boot):\n{}",
            last["critical_chain"].as_str().unwrap_or("")
        );
        println!(
            "failed units (a container cannot run them; docs/booted-instances.md): {}",
            last["failed_units"]
                .as_str()
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(out) = &args.json {
        let doc = serde_json::json!({
            "agent": agent.display().to_string(),
            "agent_build": build,
            "agent_bytes": size,
            "ami": ami,
            "image_root": root.display().to_string(),
            "image_build_s": build_secs,
            "probe_interval": args.probe_interval,
            "warmup": warm,
            "boots": runs,
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(true)
}

fn print_table(runs: &[serde_json::Value], args: &Args, build: &str) {
    let col = |key: &str| -> Vec<f64> {
        runs.iter()
            .filter_map(|r| r["steps"][key].as_f64())
            .collect()
    };
    println!(
        "\nBooted instance start, ms from the start of systemd-nspawn: median (min-max) of {} \
         boots after {} warm-up; agent: {build} build; readiness probe every {}",
        runs.len(),
        args.warmup,
        args.probe_interval
    );
    println!(
        "| {:<14} | {:>8} | {:>8} | {:>8} | {:>13} | what",
        "step", "median", "min", "max", "from previous"
    );
    println!(
        "|{}|{}|{}|{}|{}|------",
        "-".repeat(16),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(15)
    );
    let mut prev: Option<Vec<f64>> = None;
    for (key, what) in STEPS {
        let xs = col(key);
        if xs.is_empty() {
            continue;
        }
        // The median of the per-boot differences to the row above.
        let delta = prev.as_ref().map_or_else(
            || format!("{:>13.1}", median(&mut xs.clone())),
            |p| {
                let mut d: Vec<f64> = xs.iter().zip(p).map(|(a, b)| a - b).collect();
                format!("{:>+13.1}", median(&mut d))
            },
        );
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {key:<14} | {:>8.1} | {lo:>8.1} | {hi:>8.1} | {delta} | {what}",
            median(&mut xs.clone())
        );
        prev = Some(xs);
    }
    let mut off: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["power_off_ms"].as_f64())
        .collect();
    if !off.is_empty() {
        println!(
            "power off (SIGTERM to nspawn -> it exited): median {:.0} ms, max {:.0} ms",
            median(&mut off),
            off.iter().copied().fold(0.0, f64::max)
        );
    }
    let restarts: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["agent_restarts"].as_str())
        .collect();
    println!(
        "all {} instances InService after the agent's CONTINUE; bake-agent.service restarts per \
         boot: {}",
        runs.len(),
        restarts.join(",")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn test_parse_args_modes_and_bad_values() {
        let a = parse(&["boots", "--boots", "3", "--json", "/tmp/x.json"])
            .unwrap()
            .unwrap();
        assert_eq!((a.boots, a.warmup), (3, 1));
        assert_eq!(a.json, Some(PathBuf::from("/tmp/x.json")));
        let h = parse(&["hold", "--bind-ro", "/a:/b", "--exec", "true"])
            .unwrap()
            .unwrap();
        assert_eq!(h.binds, vec![(PathBuf::from("/a"), "/b".to_owned())]);
        assert!(parse(&["boots", "--boots", "0"])
            .unwrap_err()
            .contains("--boots"));
        assert!(parse(&["hold", "--boots", "2"])
            .unwrap_err()
            .contains("unknown option --boots"));
        assert!(parse(&["hold", "--bind-ro", "/a:b"])
            .unwrap_err()
            .contains("HOST:/PATH"));
        assert!(parse(&["nope"]).unwrap_err().contains("unknown mode"));
        assert!(parse(&["boots", "--help"]).unwrap().is_none());
    }

    #[test]
    fn test_median_and_first_journal_match() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&mut [4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
        let j = vec![
            (
                Duration::from_micros(10),
                "agent up elapsed_ms=5".to_owned(),
            ),
            (Duration::from_micros(20), "app is ready".to_owned()),
            (Duration::from_micros(30), "app is ready".to_owned()),
        ];
        assert_eq!(
            journal_mono(&j, "app is ready"),
            Some(Duration::from_micros(20))
        );
        assert_eq!(journal_mono(&j, "lifecycle action completed"), None);
    }
}
