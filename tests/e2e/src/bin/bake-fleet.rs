//! `bake-fleet demo`: the local fleet end to end, for people (`make demo` runs it).
//!
//! Starts the local AWS emulator, deploys the `demo` environment's network, data and iam stacks
//! and switches IAM enforcement on (booted instances then run as iam.yaml's instance role, `bake
//! release` as its release role, signed in with a web identity token as in CI), bakes (or reuses)
//! the images of app versions 1.0.0, 2.0.0 and `broken` with `bake build`, creates the group
//! `bake-demo` of N instances on 1.0.0 and plays it out as a local
//! fleet (each instance its image booted under systemd in a container of its own, haproxy in
//! front; `--runtime process`: a `bake-agent` host process per instance instead), then, under a
//! bounded load through haproxy: `bake release` of 2.0.0 (succeeds) and of `broken` (never
//! ready: rolled back), with a live view of the rollout, and a closing table. Everything is
//! stopped at the end, also on Ctrl-C or SIGTERM.
//!
//! Exit codes: 0 when both releases ended as expected with zero failed requests (but for at most
//! [`CRASH_FAILURE_BUDGET`] while the crashed app restarts), 1 otherwise,
//! 2 on a bad command line, 130 when interrupted. `-h`/`--help` prints the usage and exits 0.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bake_e2e::fleet::{self, Fleet, FleetOptions, LoadGen, RuntimeKind, BROKEN, V1, V2};
use bake_e2e::Emulator;

const USAGE: &str = "usage: bake-fleet demo [--instances N (1-6, default 3)] [--max-requests N (default 100000)]\n                       [--runtime booted|process (default booted)]";

/// Concurrent clients of the load, each pausing [`LOAD_PAUSE`] between requests: about 70
/// requests/s through haproxy.
const LOAD_WORKERS: usize = 8;
const LOAD_PAUSE: Duration = Duration::from_millis(100);
/// Failed requests the `/crash` of one app may cost: the load balancer does not retry (an ALB
/// does not), so a request the crashed app had accepted is a 502. Booted instances run
/// fleet.yaml's socket activation (the rest wait in the socket's backlog: at most one per
/// client, which the e2e test of the same step asserts); process instances bind their own port,
/// so requests sent while the app restarts are refused too (about a third of the load for some
/// 200 ms).
const CRASH_FAILURE_BUDGET: u64 = 10;

#[derive(Debug)]
struct Args {
    instances: i32,
    max_requests: u64,
    runtime: RuntimeKind,
}

/// What the command line asks for.
#[derive(Debug)]
enum Parsed {
    /// Run the demo.
    Demo(Args),
    /// `-h` / `--help`: the usage on stdout, exit 0.
    Help,
}

/// The usage with the exit codes, for `--help`.
fn help() -> String {
    format!(
        "{USAGE}\n\nThe local fleet end to end: the emulator, a group of N instances played out\n\
         behind haproxy (booted: each instance its image under systemd in a container, needs\n\
         root; process: bake-agent host processes), then under load a release of app 2.0.0\n\
         and of a never-ready app (rolled back). See docs/fleet.md.\n\n\
         exit codes: 0 both releases as expected with 0 failed requests (at most {CRASH_FAILURE_BUDGET}\n\
         during the /crash), 1 otherwise,\n\
         2 bad command line, 130 interrupted\n"
    )
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Parsed::Help);
    }
    let mut it = args.into_iter();
    if it.next().as_deref() != Some("demo") {
        return Err(USAGE.into());
    }
    let mut a = Args {
        instances: 3,
        max_requests: 100_000,
        runtime: RuntimeKind::default(),
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--instances" => {
                a.instances = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=6).contains(n))
                    .ok_or_else(|| format!("--instances: {value:?} is not 1-6"))?;
            }
            "--max-requests" => {
                a.max_requests = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--max-requests: {value:?} is not a positive integer")
                })?;
            }
            "--runtime" => {
                a.runtime = RuntimeKind::parse(&value).map_err(|e| format!("--runtime: {e}"))?;
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(Parsed::Demo(a))
}

/// The binaries next to this one (target/<profile>/).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("bake-fleet has no directory")?
        .join(name);
    if !p.exists() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` first",
            p.display()
        );
    }
    Ok(p)
}

struct Release {
    name: String,
    result: String,
    code: i32,
    secs: f64,
    reason: String,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Demo(a)) => a,
        Ok(Parsed::Help) => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bake-fleet: {e}");
            return ExitCode::from(2);
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    bake_e2e::process::on_interrupt(move || flag.store(true, Ordering::SeqCst));
    match demo(&args, &interrupted) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if interrupted.load(Ordering::SeqCst) => {
            eprintln!("bake-fleet: interrupted ({e:#}); everything stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("bake-fleet: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) {
        bail!("stopping");
    }
    Ok(())
}

fn demo(args: &Args, interrupted: &AtomicBool) -> anyhow::Result<bool> {
    let agent = sibling("bake-agent")?;
    let bake = sibling("bake")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("== starting the local AWS emulator");
    let emu = Emulator::start()?;
    println!("   {} (emulated time runs 100x faster)", emu.url());
    let env = "demo";
    let asg = "bake-demo";
    println!("== the {env} environment's network, data and iam stacks (cloudformation/); IAM enforced from now on");
    let ids = rt.block_on(bake_e2e::iam::deploy_and_enforce(&emu, env))?;
    println!(
        "   instances run as {}, bake release as {}",
        ids.instance_role_arn, ids.release_role_arn
    );
    let aws = rt.block_on(emu.aws());
    if args.runtime == RuntimeKind::Booted {
        println!("== bake build of the images of app {V1}, {V2} and {BROKEN} (local target: debootstrap, then the image's provisioning scripts; reused when their inputs did not change)");
    }
    let mut amis = Vec::new();
    for v in [V1, V2, BROKEN] {
        check(interrupted)?;
        let t0 = Instant::now();
        let ami = args.runtime.version_ami(&emu, v)?;
        println!("   app {v}: {ami} ({:.1}s)", t0.elapsed().as_secs_f64());
        amis.push(ami);
    }
    let (v1, v2, v3) = (amis[0].clone(), amis[1].clone(), amis[2].clone());
    println!("== the {env} environment's database: PostgreSQL on 127.0.0.1 (RDS's stand-in)");
    let db = bake_e2e::db::Postgres::start()?;
    print!("   {}", db.migrate_app()?);
    println!(
        "   {}; instances reach it as {}:{}",
        db.addr(),
        bake_e2e::boot::DB_HOST,
        bake_e2e::boot::DB_PORT
    );
    let mut opts = FleetOptions::new(asg, agent);
    opts.database = Some(db.addr());
    opts.env = env.to_owned();
    opts.ready_timeout = Duration::from_secs(5);
    opts.runtime = args.runtime;
    // Booted instances get the instance role; process instances' agents sign as the harness.
    let profile =
        (args.runtime == RuntimeKind::Booted).then_some(ids.instance_profile_arn.as_str());
    rt.block_on(fleet::create_group(
        &aws,
        &fleet::GroupSpec {
            env,
            name: asg,
            ami: &v1,
            capacity: args.instances,
            userdata: &fleet::userdata::userdata(&opts)?,
            instance_profile: profile,
            db_connection_string: &db
                .connection_string(bake_e2e::boot::DB_HOST, bake_e2e::boot::DB_PORT),
        },
    ))?;
    println!(
        "== group {asg}: {} instances on app {V1}; starting the local fleet ({:?} instances)",
        args.instances, args.runtime
    );
    let f = Fleet::start(&emu, opts)?;
    let n = usize::try_from(args.instances)?;
    wait_serving(&f, n, V1, interrupted)?;
    println!("   haproxy on http://{} in front of:", f.lb_addr());
    for i in f.instances() {
        println!(
            "   {}  app {}  {}  {}",
            i.id, i.version, i.addr, i.lifecycle
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("bake-fleet-demo-")
        .tempdir()?;
    std::fs::write(
        dir.path().join("bake.toml"),
        format!(
            "[target]\nauto_scaling_group = \"{asg}\"\n[image_test]\nrequired = false\n[refresh]\nmin_healthy_percentage = 100\nmax_healthy_percentage = 134\n\
             instance_warmup = \"3m\"\npoll_interval = \"500ms\"\nmax_poll_interval = \"1s\"\ntimeout = \"10m\"\n"
        ),
    )?;
    // bake signs in as the release role the way a CI job does: a web identity token.
    let token = bake_e2e::iam::write_github_token(
        dir.path(),
        bake_e2e::iam::GITHUB_REPOSITORY,
        bake_e2e::iam::GITHUB_REF,
    )?;
    let bake_env = emu.web_identity_env(&ids.release_role_arn, &token);
    println!(
        "== load: {LOAD_WORKERS} clients through haproxy (about 70 requests/s), at most {} requests",
        args.max_requests
    );
    let gen = LoadGen::start(
        f.lb_addr(),
        "/",
        LOAD_WORKERS,
        args.max_requests,
        Duration::from_secs(600),
        LOAD_PAUSE,
    )?;
    let started = Instant::now();
    let mut releases = Vec::new();
    let mut crash_failed = 0;
    for (name, ami, expect) in [
        (&format!("app {V2}") as &str, &v2, "successful"),
        (&format!("app {BROKEN}") as &str, &v3, "rolled_back"),
    ] {
        check(interrupted)?;
        println!("== bake release --ami {ami}   ({name}; expected: {expect})");
        let r = release(
            &bake,
            &bake_env,
            dir.path(),
            name,
            ami,
            &f,
            &gen,
            started,
            interrupted,
        )?;
        println!(
            "   -> {} (exit {}) after {:.1}s{}",
            r.result,
            r.code,
            r.secs,
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason)
            }
        );
        releases.push((r, expect));
        wait_serving(&f, n, V2, interrupted)?;
        if releases.len() == 1 {
            let before = gen.snapshot().failed;
            crash_one(&f, interrupted)?;
            // Requests sent to the app while it was down may end a little after it is back.
            std::thread::sleep(Duration::from_millis(300));
            crash_failed = gen.snapshot().failed - before;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let load = gen.stop();
    let stats = f.shutdown();
    drop(emu);
    println!();
    println!("| {:<26} | {:>18} |", "the demo", "");
    println!("|{:-<28}|{:-<20}|", "", "");
    println!("| {:<26} | {:>18} |", "requests sent", load.sent);
    println!("| {:<26} | {:>18} |", "requests failed", load.failed);
    for (cause, n) in &load.causes {
        println!("| {:<26} | {:>18} |", format!("  failed: {cause}"), n);
    }
    println!(
        "| {:<26} | {:>18} |",
        "  of them by the /crash",
        format!("{crash_failed} (at most {CRASH_FAILURE_BUDGET})")
    );
    println!(
        "| {:<26} | {:>18} |",
        "requests/s",
        format!("{:.0}", load.rate())
    );
    for (v, c) in &load.versions {
        println!("| {:<26} | {:>18} |", format!("answered by {v}"), c);
    }
    for (r, expect) in &releases {
        println!(
            "| {:<26} | {:>18} |",
            format!("release {}", r.name),
            format!("{} {:.1}s", r.result, r.secs)
        );
        if r.result != *expect {
            println!("|   expected {expect:<15} | {:>18} |", "");
        }
    }
    println!("| {:<26} | {:>18} |", "instances launched", stats.launched);
    println!(
        "| {:<26} | {:>18} |",
        "instances replaced", stats.terminated
    );
    println!("| {:<26} | {:>18} |", "app restarts", stats.restarts);
    println!(
        "| {:<26} | {:>18} |",
        "targets registered", stats.registered
    );
    println!(
        "| {:<26} | {:>18} |",
        "targets deregistered", stats.deregistered
    );
    println!("everything stopped.");
    Ok(load.failed == crash_failed
        && crash_failed <= CRASH_FAILURE_BUDGET
        && releases.iter().all(|(r, e)| r.result == *e))
}

fn wait_serving(
    f: &Fleet,
    n: usize,
    version: &str,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        check(interrupted)?;
        if f.wait_serving(n, version, Duration::from_millis(500))
            .is_ok()
        {
            return Ok(());
        }
    }
    f.wait_serving(n, version, Duration::ZERO)
}

#[allow(clippy::too_many_arguments)]
fn release(
    bake: &PathBuf,
    bake_env: &[(&'static str, String)],
    dir: &std::path::Path,
    name: &str,
    ami: &str,
    f: &Fleet,
    gen: &LoadGen,
    started: Instant,
    interrupted: &AtomicBool,
) -> anyhow::Result<Release> {
    let t0 = Instant::now();
    let stderr = std::fs::File::create(dir.join("bake.log"))?;
    let mut child = Command::new(bake)
        .args([
            "--config",
            "bake.toml",
            "release",
            "--ami",
            ami,
            "-o",
            "json",
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("BAKE_CONFIG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .envs(bake_env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", bake.display()))?;
    let mut last = String::new();
    let mut last_print = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if interrupted.load(Ordering::SeqCst) {
            // Detach bake (the refresh goes on in the emulator, which is stopped next).
            let _ = Command::new("kill")
                .args(["-INT", "--", &child.id().to_string()])
                .status();
            let _ = child.wait();
            bail!("interrupted during the release of {name}");
        }
        let l = gen.snapshot();
        let fleet: Vec<String> = f
            .instances()
            .iter()
            .map(|i| {
                format!(
                    "{} v{} {}{}",
                    &i.id[..i.id.len().min(8)],
                    i.version,
                    short(&i.lifecycle),
                    if i.in_lb { "*" } else { "" }
                )
            })
            .collect();
        // A line when the fleet changes, else one a second.
        let view = fleet.join("  ");
        if view != last || last_print.elapsed() >= Duration::from_secs(1) {
            println!(
                "   [{:>5.1}s] {view} | requests ok {} failed {}",
                started.elapsed().as_secs_f64(),
                l.ok,
                l.failed
            );
            last = view;
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_string(&mut s, &mut out)?;
    }
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let reason = json["refresh"]["rollback_reason"]
        .as_str()
        .or_else(|| json["refresh"]["reason"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(Release {
        name: name.to_owned(),
        result: json["result"].as_str().unwrap_or("unknown").to_owned(),
        code: status.code().unwrap_or(-1),
        secs: t0.elapsed().as_secs_f64(),
        reason: if json["result"] == "successful" {
            String::new()
        } else {
            reason
        },
    })
}

fn short(lifecycle: &str) -> &str {
    match lifecycle {
        "InService" => "in-service",
        "Pending:Wait" => "launching",
        "Terminating:Wait" => "draining",
        s => s,
    }
}

/// `/crash` on one app directly (behind the edge, which refuses it): its agent restarts it.
fn crash_one(f: &Fleet, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let Some(victim) = f.instances().into_iter().next() else {
        return Ok(());
    };
    let addr = victim.addr;
    println!(
        "== GET /crash through haproxy: {}",
        fleet::http_get(f.lb_addr(), "/crash")
            .map_or_else(|e| e.to_string(), |(c, _)| c.to_string())
    );
    println!("== GET /crash on {} directly ({addr})", victim.id);
    let t0 = Instant::now();
    let _ = fleet::http_get(addr, "/crash");
    let deadline = t0 + Duration::from_secs(30);
    loop {
        check(interrupted)?;
        if matches!(fleet::http_get(addr, "/"), Ok((200, _))) {
            println!(
                "   restarted by its agent, answering again after {:.0} ms",
                t0.elapsed().as_secs_f64() * 1000.0
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the app of {} did not come back within 30 s", victim.id);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn test_help_is_asked_for_anywhere_and_names_the_exit_codes() {
        for args in [
            &["demo", "--help"][..],
            &["--help"],
            &["-h"],
            &["demo", "--instances", "2", "-h"],
        ] {
            assert!(matches!(parse(args), Ok(Parsed::Help)), "{args:?}");
        }
        assert!(
            help().starts_with(USAGE) && help().contains("130"),
            "{}",
            help()
        );
    }

    #[test]
    fn test_options_are_checked() {
        let Ok(Parsed::Demo(a)) = parse(&[
            "demo",
            "--instances",
            "2",
            "--max-requests",
            "9",
            "--runtime",
            "process",
        ]) else {
            panic!("a valid command line");
        };
        assert_eq!((a.instances, a.max_requests), (2, 9));
        assert_eq!(a.runtime, RuntimeKind::Process);
        assert!(parse(&["demo", "--runtime", "vm"])
            .unwrap_err()
            .contains("--runtime"));
        assert!(parse(&[]).unwrap_err().starts_with("usage"));
        assert!(parse(&["demo", "--instances", "7"])
            .unwrap_err()
            .contains("--instances"));
        assert!(parse(&["demo", "--max-requests"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["demo", "--x", "1"])
            .unwrap_err()
            .contains("unknown option --x"));
    }
}
