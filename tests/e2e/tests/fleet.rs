//! End-to-end scenarios on the local fleet: the emulator's group played out behind haproxy by
//! booted instances (each its image, baked by `bake build`, under systemd in a container of its
//! own), released with the real `bake`. One scenario also runs on process instances (the
//! faster runtime for unit-level work). Needs root (containers, network namespaces), as CI runs.
//!
//! IAM is enforced in every scenario: each world deploys its environment's network, data and
//! iam stacks (cloudformation/*.yaml) into its emulator and then switches enforcement on, so a
//! booted instance's agent signs with its instance role's credentials (from its metadata, as on
//! EC2) and `bake` with the release role's (a GitHub-style web identity token, as in CI): a
//! scenario passes only if iam.yaml allows what the binaries do. The harness itself arranges and
//! inspects as an administrator.

use std::process::Command;
use std::time::{Duration, Instant};

use bake_e2e::fleet::{
    self, Fleet, FleetOptions, LoadGen, LoadStats, RuntimeKind, BROKEN, CRASHY, ERRING, NODB, SLOW,
    V1, V2,
};
use bake_e2e::Emulator;

struct World {
    emu: Emulator,
    rt: tokio::runtime::Runtime,
    /// The harness's clients (the administrator's, IAM being enforced).
    aws: bake_e2e::Aws,
    dir: tempfile::TempDir,
    /// The environment (`EnvName`).
    env: String,
    /// Its group: `bake-<env>`, as fleet.yaml names it (iam.yaml's policies are scoped to it).
    asg: String,
    /// What iam.yaml made for the environment.
    ids: bake_e2e::iam::Identities,
    /// The CI job's web identity token, for `bake` as the release role.
    token: std::path::PathBuf,
    runtime: RuntimeKind,
    /// The environment's database (RDS's stand-in), which booted instances reach as
    /// `boot::DB_HOST`.
    db: bake_e2e::db::Postgres,
}

/// Launch before terminate: the group may double, never drops below its capacity.
const LAUNCH_BEFORE_TERMINATE: &str =
    "min_healthy_percentage = 100\nmax_healthy_percentage = 200\ninstance_warmup = \"30s\"\n";
/// examples/bake.toml's preferences (checkpoints at 50 and 100 %, 5 minutes apart), without its
/// alarm (no such alarm exists in the test's emulator).
const EXAMPLE_PREFERENCES: &str =
    "min_healthy_percentage = 90\nmax_healthy_percentage = 120\ninstance_warmup = \"60s\"\n\
     checkpoint_percentages = [50, 100]\ncheckpoint_delay = \"5m\"\n\
     skip_matching = true\nauto_rollback = true\n";

impl World {
    fn new(env: &str) -> Self {
        Self::with_refresh(env, LAUNCH_BEFORE_TERMINATE)
    }

    /// Environment `env` (its group `bake-<env>`) in an emulator of its own, IAM enforced;
    /// `bake` releases with the refresh preferences `refresh`; its database has the app's schema.
    fn with_refresh(env: &str, refresh: &str) -> Self {
        Self::build(env, refresh, true)
    }

    /// [`World::with_refresh`]; `migrated` false: the database is new (no schema yet).
    fn build(env: &str, refresh: &str, migrated: bool) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let emu = Emulator::start().expect("emulator starts");
        let t = Instant::now();
        let ids = rt
            .block_on(bake_e2e::iam::deploy_and_enforce(&emu, env))
            .unwrap();
        eprintln!(
            "environment {env}: stacks deployed, IAM enforced in {} ms",
            t.elapsed().as_millis()
        );
        let aws = rt.block_on(emu.aws());
        let asg = format!("bake-{env}");
        // The environment's database with the app's schema, as after a first release's
        // migration.
        let db = bake_e2e::db::Postgres::start().expect("the environment's database starts");
        if migrated {
            db.migrate_app().expect("the app's migrations apply");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("bake-fleet-test-{env}-"))
            .tempdir()
            .unwrap();
        let token = bake_e2e::iam::write_github_token(
            dir.path(),
            bake_e2e::iam::GITHUB_REPOSITORY,
            bake_e2e::iam::GITHUB_REF,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bake.toml"),
            format!(
                // No harness instance boots outside the group yet: releases take untested images.
                "[target]\nauto_scaling_group = \"{asg}\"\n[image_test]\nrequired = false\n[refresh]\n{refresh}\
                 poll_interval = \"200ms\"\nmax_poll_interval = \"1s\"\ntimeout = \"4m\"\n"
            ),
        )
        .unwrap();
        Self {
            emu,
            rt,
            aws,
            dir,
            env: env.to_owned(),
            asg,
            ids,
            token,
            runtime: RuntimeKind::Booted,
            db,
        }
    }

    /// The AMI of app `version` for this world's runtime (a local image for booted instances).
    fn ami(&self, version: &str) -> String {
        let t = Instant::now();
        let ami = self.runtime.version_ami(&self.emu, version).unwrap();
        eprintln!(
            "AMI of app {version} ({:?}): {ami} in {} ms",
            self.runtime,
            t.elapsed().as_millis()
        );
        ami
    }

    /// A group of `n` on `ami` and its local fleet, serving `version`.
    fn fleet(
        &self,
        ami: &str,
        version: &str,
        n: i32,
        tweak: impl FnOnce(&mut FleetOptions),
    ) -> Fleet {
        let mut opts = FleetOptions::new(&self.asg, bake_e2e::paths::workspace_bin("bake-agent"));
        opts.env.clone_from(&self.env);
        opts.runtime = self.runtime;
        opts.database = Some(self.db.addr());
        tweak(&mut opts);
        let userdata = fleet::userdata::userdata(&opts).unwrap();
        // Booted instances get the instance role (the process runtime's agents sign with the
        // harness's credentials).
        let profile =
            (self.runtime == RuntimeKind::Booted).then_some(&self.ids.instance_profile_arn);
        self.rt
            .block_on(fleet::create_group(
                &self.aws,
                &fleet::GroupSpec {
                    env: &self.env,
                    name: &self.asg,
                    ami,
                    capacity: n,
                    userdata: &userdata,
                    instance_profile: profile.map(String::as_str),
                    db_connection_string: &self.db_connection_string(),
                },
            ))
            .unwrap();
        let f = Fleet::start(&self.emu, opts).unwrap();
        f.wait_serving(
            usize::try_from(n).unwrap(),
            version,
            Duration::from_secs(90),
        )
        .unwrap();
        f
    }

    /// The app's connection string to the environment's database, as its instances reach it.
    fn db_connection_string(&self) -> String {
        self.db
            .connection_string(bake_e2e::boot::DB_HOST, bake_e2e::boot::DB_PORT)
    }

    /// `bake release --ami AMI -o json` as the release role.
    fn release_command(&self, ami: &str) -> Command {
        self.bake_command(&["release", "--ami", ami, "-o", "json"])
    }

    /// `bake ARGS` with the world's bake.toml, as the release role.
    fn bake_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bake_e2e::paths::workspace_bin("bake"));
        cmd.args(["--config", "bake.toml"])
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("BAKE_CONFIG")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(
                self.emu
                    .web_identity_env(&self.ids.release_role_arn, &self.token),
            );
        cmd
    }

    /// `bake release --ami AMI -o json` as the release role: (exit code, JSON, stderr).
    fn release(&self, ami: &str) -> (i32, serde_json::Value, String) {
        run_json(self.release_command(ami))
    }

    /// `bake ARGS` (ending `-o json`) as the release role: (exit code, JSON, stderr).
    fn bake_json(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        run_json(self.bake_command(args))
    }

    /// [`World::release`] with bake's stderr on a 120×40 terminal, as an operator runs it:
    /// (exit code, JSON, what the screen showed).
    fn release_on_terminal(&self, ami: &str) -> (i32, serde_json::Value, String) {
        let run = bake_e2e::tty::run_on_terminal(
            self.release_command(ami),
            120,
            40,
            Duration::from_secs(300),
        )
        .unwrap();
        let screen = run.screen();
        (run.code, json_of(&run.stdout, &screen), screen)
    }

    /// (instance id, lifecycle state, health) of the group.
    fn group(&self) -> Vec<(String, String, String)> {
        self.rt.block_on(async {
            let out = self
                .aws
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&self.asg)
                .send()
                .await
                .unwrap();
            out.auto_scaling_groups()[0]
                .instances()
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
    }
}

/// Runs `cmd` (a `bake … -o json`): (exit code, its JSON document, stderr).
fn run_json(mut cmd: Command) -> (i32, serde_json::Value, String) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        json_of(&stdout, &stderr),
        stderr,
    )
}

/// bake's stdout as its one JSON document (`progress`: what it printed beside, for the message).
fn json_of(stdout: &str, progress: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bake's stdout is not JSON ({e}): {stdout}\n{progress}"))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's log of `log` once it holds every one of `lines`: a booted instance's journal
/// reaches its copy on the host a moment after the agent wrote it (journalctl follows the
/// journal's files), so a line the agent has logged before its instance went in service may
/// not be in the copy yet.
fn logged(log: &std::path::Path, lines: &[&str]) -> String {
    let mut text = String::new();
    let found = (0..300).any(|_| {
        text = std::fs::read_to_string(log).unwrap_or_default();
        let all = lines.iter().all(|l| text.contains(l));
        if !all {
            std::thread::sleep(Duration::from_millis(100));
        }
        all
    });
    assert!(
        found,
        "{} lacks one of {lines:?} after 30 s:\n{text}",
        log.display()
    );
    text
}

/// No agent of the fleet, the instances already gone included, was refused a call: each log of
/// `<fleet dir>/instances/*/agent.log` is free of the denials IAM answers with.
/// Sums of the app's `Requests` and `Errors5xx` in `Bake/App` with the release's dimensions
/// (`AutoScalingGroupName` + `ImageId` = `ami`), as the agents published them from the app's EMF
/// lines, over the last hour.
fn app_requests_by_release(w: &World, ami: &str) -> (f64, f64) {
    let sum = |name: &str| -> f64 {
        let now = std::time::SystemTime::now();
        let out =
            w.rt.block_on(
                w.aws
                    .cw
                    .get_metric_statistics()
                    .namespace("Bake/App")
                    .metric_name(name)
                    .dimensions(
                        aws_sdk_cloudwatch::types::Dimension::builder()
                            .name("AutoScalingGroupName")
                            .value(&w.asg)
                            .build(),
                    )
                    .dimensions(
                        aws_sdk_cloudwatch::types::Dimension::builder()
                            .name("ImageId")
                            .value(ami)
                            .build(),
                    )
                    .start_time((now - Duration::from_secs(3600)).into())
                    .end_time((now + Duration::from_secs(600)).into())
                    .period(3600)
                    .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
                    .send(),
            )
            .expect("GetMetricStatistics");
        out.datapoints().iter().filter_map(|d| d.sum()).sum()
    };
    (sum("Requests"), sum("Errors5xx"))
}

fn no_denials(f: &Fleet) {
    let dir = f.dir().join("instances");
    for e in std::fs::read_dir(&dir).unwrap() {
        let log = e.unwrap().path().join("agent.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for denial in ["AccessDenied", "UnauthorizedOperation", "is not authorized"] {
            assert!(
                !text.contains(denial),
                "{} holds a denial ({denial}):\n{text}",
                log.display()
            );
        }
    }
}

/// The lines the agents shipped to the environment's app log group (`/bake/<env>/app`), once
/// some arrived (within 30 s).
fn shipped_app_lines(w: &World) -> Vec<String> {
    let group = format!("/bake/{}/app", w.env);
    wait_for(
        "the app's lines in CloudWatch Logs",
        Duration::from_secs(30),
        || {
            let out =
                w.rt.block_on(w.aws.logs.filter_log_events().log_group_name(&group).send())
                    .ok()?;
            let lines: Vec<String> = out
                .events()
                .iter()
                .filter_map(|e| e.message().map(str::to_owned))
                .collect();
            (!lines.is_empty()).then_some(lines)
        },
    )
}

/// How bake's rollout view reached the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// stderr is no terminal: plain timestamped lines.
    Lines,
    /// stderr is a terminal: lines above a progress bar.
    Terminal,
}

/// `bake release`'s rollout view in `text` (stderr's plain lines, or what the terminal showed):
/// an `in service` line of each instance of `new` on `new_ami` (app [`V2`]), a line of each of
/// `old` (on `old_ami`, app [`V1`]) leaving; and as plain lines the refresh's closing line, on
/// a terminal a bar with one elapsed time and one percentage that said `InProgress`.
fn rollout_view_shows(
    view: View,
    text: &str,
    old: &[String],
    new: &[fleet::InstanceView],
    old_ami: &str,
    new_ami: &str,
) {
    let marker = match view {
        View::Lines => " refresh: ",
        View::Terminal => "refresh ",
    };
    let lines = bake_e2e::tty::view_lines(text, marker);
    let phases = |id: &str| -> Vec<(String, String)> {
        lines
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no line of {id} ({view:?}):\n{text}"))
    };
    for i in new {
        let seen = phases(&i.id);
        let (phase, release) = seen.last().unwrap();
        assert_eq!(phase, "in service", "{}: {seen:?}:\n{text}", i.id);
        assert!(
            release.contains(new_ami) && release.contains(V2),
            "{}: {seen:?}",
            i.id
        );
    }
    // Leaving: draining (its terminate hook), terminating or terminated, whichever the polls saw
    // before the refresh ended.
    for id in old {
        let seen = phases(id);
        let (_, release) = seen
            .iter()
            .find(|(p, _)| {
                ["draining", "terminating", "terminated"]
                    .iter()
                    .any(|l| p.starts_with(l))
            })
            .unwrap_or_else(|| panic!("no line of {id} leaving: {seen:?}:\n{text}"));
        assert!(
            release.contains(old_ami) && release.contains(V1),
            "{id}: {seen:?}"
        );
    }
    match view {
        // The refresh's last line (the closing summary is human output, not printed with
        // -o json).
        View::Lines => assert!(
            text.contains("refresh: Successful 100%, 0 instances left"),
            "no closing line:\n{text}"
        ),
        View::Terminal => {
            let bars = bake_e2e::tty::bars(text).unwrap();
            assert!(
                bars.iter().any(|b| b.contains("InProgress")),
                "the bar says the refresh's status: {bars:?}"
            );
        }
    }
}

fn agent_logs(f: &Fleet) -> String {
    f.instances()
        .iter()
        .map(|i| std::fs::read_to_string(&i.log).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Clients of the load: each has at most one request in flight.
const CLIENTS: usize = 8;

/// [`CLIENTS`] clients, each pausing 60 ms between requests: about 60–100 requests/s through
/// the edge (a request takes 20–70 ms on a loaded 2-core machine; with 100 ms pauses the rate
/// fell to 46–48/s while image builds ran beside it).
fn load(f: &Fleet, max: u64) -> LoadGen {
    LoadGen::start(
        f.lb_addr(),
        "/",
        CLIENTS,
        max,
        Duration::from_secs(240),
        Duration::from_millis(60),
    )
    .unwrap()
}

/// The edge's rules and the fleet's instances, on `runtime`; returns the fleet's directory.
fn edge_rules_and_instances(runtime: RuntimeKind, env: &str) -> std::path::PathBuf {
    let mut w = World::new(env);
    w.runtime = runtime;
    let v1 = w.ami(V1);
    let f = w.fleet(&v1, V1, 2, |_| {});
    // The edge refuses /crash and /generatecert; the fleet answers the rest.
    assert_eq!(fleet::http_get(f.lb_addr(), "/crash").unwrap().0, 403);
    assert_eq!(
        fleet::http_get(f.lb_addr(), "/generatecert").unwrap().0,
        403
    );
    assert_eq!(
        fleet::http_get(f.lb_addr(), "/health").unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(f.lb_servers().len(), 2);
    // Each instance is a group member in service, its app at its own address.
    let group = w.group();
    for i in f.instances() {
        assert!(
            group.iter().any(|g| g.0 == i.id && g.1 == "InService"),
            "{i:?} in {group:?}"
        );
        assert_eq!(
            fleet::http_get(i.addr, "/").unwrap(),
            (200, format!("app {V1}\n"))
        );
        logged(&i.log, &["app is ready"]);
    }
    if runtime == RuntimeKind::Booted {
        // As the instance role: the app's output reached its log group, and nothing was denied.
        let lines = shipped_app_lines(&w);
        assert!(!lines.is_empty());
        no_denials(&f);
    }
    let dir = f.dir().to_path_buf();
    let stats = f.shutdown();
    assert_eq!(stats.launched, 2);
    dir
}

/// Booted instances: each at its own address in the fleet's /24, its app the image's release.
#[test]
fn test_fleet_edge_rules_and_booted_instances() {
    let dir = edge_rules_and_instances(RuntimeKind::Booted, "edge");
    // The instances' containers are gone with the fleet: no process names the fleet's
    // directory (each nspawn binds its EFS stand-in from there).
    let dir = dir.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Process instances (the faster runtime): the same on 127.0.0.1 ports.
#[test]
fn test_fleet_edge_rules_and_process_instances() {
    let _ = edge_rules_and_instances(RuntimeKind::Process, "edgep");
}

/// A release of version 2 under load with the refresh preferences of `w`, its progress shown
/// as `view`: Successful, every instance on version 2, at least 50 requests/s and zero failed
/// requests (by cause otherwise).
fn release_under_load(w: &World, scenario: &str, view: View) {
    let (v1, v2) = (w.ami(V1), w.ami(V2));
    let f = w.fleet(&v1, V1, 3, |_| {});
    let before: Vec<String> = f.instances().into_iter().map(|i| i.id).collect();
    let gen = load(&f, 50_000);
    let started = Instant::now();
    let (code, json, stderr) = match view {
        View::Lines => w.release(&v2),
        View::Terminal => w.release_on_terminal(&v2),
    };
    let rollout = started.elapsed();
    // Let the last drains finish under load.
    if let Err(e) = f.wait_serving(3, V2, Duration::from_secs(60)) {
        panic!("{e:#}\nbake release exited {code}: {json}\n{stderr}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let stats = gen.stop();
    eprintln!(
        "{scenario}: release {rollout:?}; load {}; answers {:?}; fleet {:?}",
        stats.summary(),
        stats.versions,
        f.stats()
    );
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["result"], "successful", "{json}");
    let now = f.instances();
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(
        now.iter()
            .all(|i| i.version == V2 && !before.contains(&i.id)),
        "{now:?}"
    );
    // Each replacement went in service only once its app answered: the agent completes the
    // launch hook after its readiness probe, and haproxy only has instances in service.
    for i in &now {
        let log = logged(&i.log, &["app is ready", "lifecycle action completed"]);
        let ready = log
            .find("app is ready")
            .unwrap_or_else(|| panic!("{}: {log}", i.id));
        let completed = log
            .find("lifecycle action completed")
            .unwrap_or_else(|| panic!("{}: {log}", i.id));
        assert!(ready < completed, "{}: {log}", i.id);
    }
    // The old instances' agents drained and completed their terminate hooks, the new ones got
    // their secrets and completed their launch hooks, all as the instance role.
    no_denials(&f);
    // bake's rollout view: each replacement in service on its release, each old instance
    // leaving.
    rollout_view_shows(view, &stderr, &before, &now, &v1, &v2);
    assert!(
        stats.rate() >= 50.0,
        "the load is at least 50 requests/s: {}",
        stats.summary()
    );
    assert_eq!(
        stats.failed,
        0,
        "failed requests during the release: {} {:?}",
        stats.summary(),
        stats.failures
    );
    assert!(
        stats.versions.contains_key(&format!("app {V1}"))
            && stats.versions.contains_key(&format!("app {V2}")),
        "{stats:?}"
    );
    // The app's request metrics by release (its EMF lines, published by the agents with
    // `ImageId`): each release's series counts at least every answer the load got from that
    // release, and no 5xx. The replaced instances published their last values while draining;
    // the new ones publish every 10 s (fleet.yaml), so this waits for their next interval.
    for (ami, version) in [(&v1, V1), (&v2, V2)] {
        let answered = stats
            .versions
            .get(&format!("app {version}"))
            .copied()
            .unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let answered = answered as f64;
        let (requests, errors) = wait_for(
            &format!("app {version}'s requests by release in CloudWatch"),
            Duration::from_secs(30),
            || {
                let (r, e) = app_requests_by_release(w, ami);
                (r >= answered).then_some((r, e))
            },
        );
        eprintln!(
            "{scenario}: app {version} ({ami}): Requests {requests}, Errors5xx {errors} by release; the load got {answered} answers from it"
        );
        assert!(errors == 0.0, "app {version}: {errors} 5xx by release");
    }
    let fs = f.shutdown();
    assert_eq!(fs.launched, 6, "{fs:?}");
    assert_eq!(fs.terminated, 3, "{fs:?}");
    assert_eq!(fs.registered, 6, "{fs:?}");
    assert_eq!(fs.deregistered, 3, "{fs:?}");
}

/// Scenario a: launch before terminate (min 100 %, max 200 %).
#[test]
fn test_release_under_load_has_zero_failed_requests() {
    release_under_load(
        &World::new("rel"),
        "launch-before-terminate 100/200",
        View::Lines,
    );
}

/// Scenario a': examples/bake.toml's preferences (min 90 %, max 120 %, warm-up 60 s), run
/// from a terminal (120×40) as an operator would: the rollout view's bar and lines.
#[test]
fn test_release_with_the_example_preferences_has_zero_failed_requests() {
    release_under_load(
        &World::with_refresh("relx", EXAMPLE_PREFERENCES),
        "example preferences 90/120",
        View::Terminal,
    );
}

/// Scenario c: the app crashes under load (its /crash reached directly, behind the edge): the
/// agent restarts it; with socket activation (fleet.yaml's default) a crash costs at most the
/// requests in flight, one per client: the rest wait in the socket's backlog.
#[test]
fn test_crash_under_load_is_restarted_with_bounded_failures() {
    let w = World::new("crash");
    let v1 = w.ami(V1);
    let f = w.fleet(&v1, V1, 2, |_| {});
    let victim = f.instances()[0].clone();
    let gen = load(&f, 20_000);
    std::thread::sleep(Duration::from_millis(500));
    let _ = fleet::http_get(victim.addr, "/crash");
    wait_for("the app to answer again", Duration::from_secs(20), || {
        matches!(fleet::http_get(victim.addr, "/"), Ok((200, _))).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let stats = gen.stop();
    let fs = f.stats();
    eprintln!("crash: load {}, fleet {fs:?}", stats.summary());
    assert!(fs.restarts >= 1, "{fs:?}\n{}", agent_logs(&f));
    assert!(stats.ok > 20, "{stats:?}");
    assert!(
        stats.failed <= CLIENTS as u64,
        "at most the requests in flight: {stats:?}"
    );
    // Same instances, nobody replaced.
    assert_eq!(f.instances().len(), 2);
    assert_eq!(fs.terminated, 0);
}

/// Scenario d: a crash loop marks the instance Unhealthy and the group replaces it.
#[test]
fn test_crash_loop_gets_the_instance_replaced() {
    let w = World::new("loop");
    let v1 = w.ami(V1);
    let f = w.fleet(&v1, V1, 2, |o| o.crash_loop_count = 3);
    let victim = f.instances()[0].clone();
    let addr = victim.addr;
    for _ in 0..3 {
        wait_for("the app to answer", Duration::from_secs(20), || {
            matches!(fleet::http_get(addr, "/"), Ok((200, _))).then_some(())
        });
        let _ = fleet::http_get(addr, "/crash");
    }
    wait_for(
        "the victim to leave the fleet",
        Duration::from_secs(60),
        || (!f.instances().iter().any(|i| i.id == victim.id)).then_some(()),
    );
    f.wait_serving(2, V1, Duration::from_secs(60)).unwrap();
    let log = std::fs::read_to_string(&victim.log).unwrap();
    assert!(log.to_lowercase().contains("unhealthy"), "{log}");
    let fs = f.stats();
    assert_eq!(fs.terminated, 1, "{fs:?}");
    assert_eq!(fs.launched, 3, "{fs:?}");
}

/// Scenario b: version `broken` never becomes ready: the refresh fails and rolls back, the fleet
/// is back on version 2, `bake release` exits non-zero with the reason.
#[test]
fn test_never_ready_release_rolls_back() {
    let w = World::new("broken");
    let (v2, v3) = (w.ami(V2), w.ami(BROKEN));
    let f = w.fleet(&v2, V2, 2, |o| o.ready_timeout = Duration::from_secs(4));
    let gen = load(&f, 50_000);
    let (code, json, stderr) = w.release(&v3);
    f.wait_serving(2, V2, Duration::from_secs(90)).unwrap();
    let stats = gen.stop();
    eprintln!(
        "broken release: {json}, load {}, fleet {:?}",
        stats.summary(),
        f.stats()
    );
    assert_eq!(code, 6, "rolled back: {json}\n{stderr}");
    assert!(json["result"] == "rolled_back", "{json}");
    assert!(
        !json["refresh"]["reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{json}"
    );
    assert!(
        stderr.contains("failed to launch or to become healthy"),
        "the reason is printed: {stderr}"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(
        !stats.versions.contains_key(&format!("app {BROKEN}")),
        "{stats:?}"
    );
    assert!(f.instances().iter().all(|i| i.version == V2));
}

/// A release whose app cannot reach its database is never declared ready: its `/health` answers
/// 503 "database unreachable", the agent abandons its launch hook, the refresh fails and rolls
/// back, and the fleet keeps serving v1 (with its database) with 0 failed requests.
#[test]
fn test_release_that_cannot_reach_its_database_rolls_back() {
    let w = World::new("nodb");
    let (v1, bad) = (w.ami(V1), w.ami(NODB));
    let f = w.fleet(&v1, V1, 2, |o| o.ready_timeout = Duration::from_secs(4));
    let gen = load(&f, 50_000);
    let (code, json, stderr) = w.release(&bad);
    f.wait_serving(2, V1, Duration::from_secs(90)).unwrap();
    let stats = gen.stop();
    eprintln!(
        "release {NODB}: exit {code}: {json}; load {}",
        stats.summary()
    );
    assert_eq!(code, 6, "rolled back: {json}\n{stderr}");
    assert_eq!(json["result"], "rolled_back", "{json}");
    assert!(
        stderr.contains("failed to launch or to become healthy"),
        "{stderr}"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(
        !stats.versions.contains_key(&format!("app {NODB}")),
        "{stats:?}"
    );
    // The new release's instance, gone now, abandoned its launch hook.
    let logs: String = std::fs::read_dir(f.dir().join("instances"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("agent.log")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("ABANDON"),
        "the launch hook was abandoned:\n{logs}"
    );
    let (code, body) = get_through_lb(&f, "/health");
    assert_eq!((code, body.trim()), (200, "ok"), "v1 reaches its database");
}

/// The state of CloudWatch alarm `name`.
fn alarm_state(w: &World, name: &str) -> String {
    w.rt.block_on(w.aws.cw.describe_alarms().alarm_names(name).send())
        .ok()
        .and_then(|o| {
            o.metric_alarms()
                .first()
                .and_then(|a| a.state_value())
                .map(|s| s.as_str().to_owned())
        })
        .unwrap_or_default()
}

/// An SNS topic `bake-<env>-alarms` and fleet.yaml's alarm `logical_id` for this world's
/// group, with its actions on the topic and its template parameters from `params` (name, value)
/// or else their defaults: (topic, alarm name).
fn template_alarm(w: &World, logical_id: &str, params: &[(&str, &str)]) -> (String, String) {
    let topic =
        w.rt.block_on(fleet::create_topic(
            &w.aws,
            &format!("bake-{}-alarms", w.env),
        ))
        .unwrap();
    let alarm =
        w.rt.block_on(fleet::put_template_alarm(
            &w.aws, logical_id, &w.env, &w.asg, &topic, params,
        ))
        .unwrap();
    (topic, alarm)
}

/// The first notification the topic received for the alarm's move to `state`, once there is
/// one: (subject, message as JSON).
fn notification(w: &World, topic: &str, state: &str) -> (String, serde_json::Value) {
    wait_for(
        &format!("the alarm's {state} notification"),
        Duration::from_secs(30),
        || {
            let notes = fleet::sns_notifications(w.emu.url(), topic).ok()?;
            notes.into_iter().find_map(|(subject, message)| {
                let m: serde_json::Value = serde_json::from_str(&message).ok()?;
                (m["NewStateValue"] == state).then_some((subject, m))
            })
        },
    )
}

/// How long an alarm of fleet.yaml on the agents' metrics may take to fire after its cause: the
/// agent publishes every 10 s (fleet.yaml's `[metrics] publish_interval`), the alarm is
/// evaluated at the end of each 60 s period (wall-clock time, as on AWS) on complete periods.
const ALARM_WAIT: Duration = Duration::from_secs(200);

/// R8 on the fleet: an app that crashes is restarted by its agent, the agent's `AppRestarts`
/// reaches CloudWatch, and fleet.yaml's own restart alarm goes to ALARM and notifies its SNS
/// topic.
#[test]
fn test_app_restart_fires_the_fleet_restart_alarm_and_notifies_its_topic() {
    let w = World::new("alarm");
    let v1 = w.ami(V1);
    let f = w.fleet(&v1, V1, 1, |_| {});
    let (topic, alarm) = template_alarm(&w, "AppRestartAlarm", &[]);
    assert_eq!(alarm, "bake-alarm-app-restarts");
    let victim = f.instances()[0].clone();
    let _ = fleet::http_get(victim.addr, "/crash");
    wait_for("the app to answer again", Duration::from_secs(20), || {
        matches!(fleet::http_get(victim.addr, "/"), Ok((200, _))).then_some(())
    });
    let t = Instant::now();
    wait_for("the restart alarm in ALARM", ALARM_WAIT, || {
        (alarm_state(&w, &alarm) == "ALARM").then_some(())
    });
    eprintln!(
        "restart alarm: ALARM {:?} after the app answered again",
        t.elapsed()
    );
    let (subject, m) = notification(&w, &topic, "ALARM");
    assert!(
        subject.starts_with(&format!("ALARM: \"{alarm}\"")),
        "{subject}"
    );
    assert_eq!(m["Trigger"]["MetricName"], "AppRestarts", "{m}");
    assert_eq!(
        m["Trigger"]["Dimensions"][0]["value"],
        w.asg.as_str(),
        "{m}"
    );
    assert!(f.stats().restarts >= 1, "{:?}", f.stats());
}

/// fleet.yaml's `CpuPeakThreshold` default, which the CPU-peak scenario keeps: a burn on every
/// CPU reads 99–100 % in its seconds, also on a loaded host.
const CPU_PEAK_THRESHOLD: f64 = 90.0;

/// The datapoints a state reason lists (`... datapoints [99.5 (01/12/26 22:40:10), 3 (...)] was
/// ...`, as CloudWatch writes it).
fn reason_datapoints(reason: &str) -> Vec<f64> {
    let list = reason
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_default();
    list.split("), ")
        .filter_map(|d| d.split_whitespace().next()?.parse().ok())
        .collect()
}

/// R10 on the fleet: a CPU peak on one instance (`/generatecert` reached at the instance's own
/// address; the edge refuses it) is published by its agent, fleet.yaml's own `CpuPeakAlarm`
/// (template threshold) goes to ALARM and notifies its SNS topic.
#[test]
fn test_cpu_peak_on_one_instance_fires_the_cpu_peak_alarm_and_notifies_its_topic() {
    let started = Instant::now();
    let w = World::new("cpupeak");
    let v1 = w.ami(V1);
    let f = w.fleet(&v1, V1, 1, |_| {});
    let (topic, alarm) = template_alarm(&w, "CpuPeakAlarm", &[]);
    assert_eq!(alarm, "bake-cpupeak-cpu-peak");
    assert_eq!(
        fleet::http_get(f.lb_addr(), "/generatecert").unwrap().0,
        403,
        "the edge refuses /generatecert"
    );
    // The alarm is evaluated on the agent's data (at the end of its first 10 s period) before the
    // burn. Which state that is depends on the host, not on the instance: a booted instance is a
    // container sharing the host's /proc/stat, so the agent's CPU is the host's, and while
    // anything else keeps both cores busy (a build, another test) its peaks already reach the
    // threshold. So the state before the burn is reported, not asserted.
    let before = wait_for(
        "the alarm's first evaluation",
        Duration::from_secs(30),
        || {
            let s = alarm_state(&w, &alarm);
            (s == "OK" || s == "ALARM").then_some(s)
        },
    );
    let instance = f.instances()[0].clone();
    let t = Instant::now();
    let (code, body) = fleet::http_get(instance.addr, "/generatecert").unwrap();
    let burn = t.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("generated after"), "{body}");
    wait_for("the CPU-peak alarm in ALARM", ALARM_WAIT, || {
        (alarm_state(&w, &alarm) == "ALARM").then_some(())
    });
    eprintln!(
        "CPU-peak alarm: {before} before the burn, ALARM {:?} after it began (burn {burn:?}: \
         {}); test at {:?}",
        t.elapsed(),
        body.trim(),
        started.elapsed()
    );
    let (subject, m) = notification(&w, &topic, "ALARM");
    assert!(
        subject.starts_with(&format!("ALARM: \"{alarm}\"")),
        "{subject}"
    );
    assert_eq!(m["AlarmName"], alarm.as_str(), "{m}");
    let trigger = &m["Trigger"];
    assert_eq!(trigger["MetricName"], "CPUUtilization", "{m}");
    assert_eq!(trigger["Namespace"], "Bake/Agent", "{m}");
    // As AWS writes it in the notification: the statistic upper-cased.
    assert_eq!(trigger["Statistic"], "MAXIMUM", "{m}");
    assert_eq!(trigger["Period"], 10, "{m}");
    assert_eq!(trigger["Threshold"], CPU_PEAK_THRESHOLD, "{m}");
    assert_eq!(trigger["Dimensions"][0]["value"], w.asg.as_str(), "{m}");
    let reason = m["NewStateReason"].as_str().unwrap_or_default();
    let points = reason_datapoints(reason);
    assert!(
        points.iter().any(|p| *p >= CPU_PEAK_THRESHOLD),
        "a datapoint at or above {CPU_PEAK_THRESHOLD}: {reason}"
    );
}

/// A release whose app gets ready, then keeps crashing: fleet.yaml's restart alarm, named in the
/// refresh's alarms, goes to ALARM while the refresh bakes, and the refresh rolls back.
#[test]
fn test_release_whose_app_keeps_restarting_is_rolled_back_by_the_restart_alarm() {
    let w = World::with_refresh(
        "crashrel",
        "min_healthy_percentage = 100\nmax_healthy_percentage = 200\ninstance_warmup = \"30s\"\n\
         auto_rollback = true\nalarms = [\"bake-crashrel-app-restarts\"]\n\
         # 6 h at the emulator's 100x: 216 s, longer than the alarm takes to fire\n\
         bake_time = \"6h\"\n",
    );
    let (v1, bad) = (w.ami(V1), w.ami(CRASHY));
    // The agent keeps restarting the crashing app: no crash loop that would mark it Unhealthy
    // (that would fail the refresh on the instance's health, not on the alarm).
    let f = w.fleet(&v1, V1, 2, |o| o.crash_loop_count = 1000);
    let (_topic, alarm) = template_alarm(&w, "AppRestartAlarm", &[]);
    let t = Instant::now();
    let (code, json, stderr) = w.release(&bad);
    eprintln!(
        "crashy release: exit {code} after {:?}: {json}\nfleet {:?}",
        t.elapsed(),
        f.stats()
    );
    assert_eq!(code, 6, "rolled back: {json}\n{stderr}");
    assert_eq!(json["result"], "rolled_back", "{json}");
    let reason = json["refresh"]["rollback_reason"]
        .as_str()
        .or_else(|| json["refresh"]["reason"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains(&alarm) || stderr.contains(&alarm),
        "the refresh failed on the alarm: {json}\n{stderr}"
    );
    f.wait_serving(2, V1, Duration::from_secs(90)).unwrap();
    assert!(f.stats().restarts >= 1, "{:?}", f.stats());
}

/// The group's instance refreshes, newest first: (id, status).
fn refreshes(w: &World) -> Vec<(String, String)> {
    w.rt.block_on(w.aws.instance_refreshes(&w.asg)).unwrap()
}

/// The parameters under `path` (recursive): name → value.
fn parameters_under(w: &World, path: &str) -> std::collections::BTreeMap<String, String> {
    w.rt.block_on(
        w.aws
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .send(),
    )
    .unwrap()
    .parameters()
    .iter()
    .map(|p| {
        (
            p.name().unwrap_or_default().to_owned(),
            p.value().unwrap_or_default().to_owned(),
        )
    })
    .collect()
}

/// A secret rotated under a fleet with `on_change = "rollout"`: one agent wins the rotation's
/// lease and starts an instance refresh with the preferences the last `bake release` recorded;
/// every instance is replaced by one that booted with the new secret; the outcome is recorded
/// and published once. All of it as the instance role (IAM enforced).
#[test]
fn test_secret_rotation_rolls_the_fleet_out_as_the_instance_role() {
    let w = World::new("rot");
    let (v1, v2) = (w.ami(V1), w.ami(V2));
    let f = w.fleet(&v1, V1, 2, |o| {
        o.secret_rotation = Some((Duration::from_secs(1), "rollout"));
    });
    // The release records the group's refresh preferences (and rolls it to version 2).
    let (code, json, stderr) = w.release(&v2);
    assert_eq!(code, 0, "{json}\n{stderr}");
    f.wait_serving(2, V2, Duration::from_secs(60)).unwrap();
    let released = refreshes(&w);
    assert_eq!(released.len(), 1, "{released:?}");
    let before: Vec<String> = f.instances().into_iter().map(|i| i.id).collect();

    // Rotate: a new version of the environment's secret.
    let t = Instant::now();
    w.rt.block_on(
        w.aws
            .ssm
            .put_parameter()
            .name(format!("/bake/{}/app/db/connection-string", w.env))
            // The same database, a new value: the rotation a new password would be.
            .value(format!(
                "{}?application_name=rotated",
                w.db_connection_string()
            ))
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send(),
    )
    .unwrap();
    let (id, status) = wait_for(
        "the rotation's refresh to end",
        Duration::from_secs(180),
        || {
            let all = refreshes(&w);
            let newest = all.first().filter(|(id, _)| *id != released[0].0)?.clone();
            (!["Pending", "InProgress", "Cancelling", "RollbackInProgress"]
                .contains(&newest.1.as_str()))
            .then_some(newest)
        },
    );
    eprintln!(
        "secret rotation: refresh {id} {status} after {:?}",
        t.elapsed()
    );
    assert_eq!(status, "Successful");
    assert_eq!(refreshes(&w).len(), 2, "one refresh per rotation");
    f.wait_serving(2, V2, Duration::from_secs(60)).unwrap();
    let now: Vec<String> = f.instances().into_iter().map(|i| i.id).collect();
    assert!(
        now.iter().all(|i| !before.contains(i)),
        "{before:?} → {now:?}"
    );

    // The lease and its outcome: one of each, naming the refresh. The outcome is recorded by the
    // first agent whose follower sees the refresh's final status (a poll later).
    let leases = wait_for("the rotation's outcome", Duration::from_secs(60), || {
        let l = parameters_under(
            &w,
            &format!("/bake/{}/leases/{}/secrets-rollout", w.env, w.asg),
        );
        l.keys().any(|k| k.ends_with(".outcome")).then_some(l)
    });
    let outcomes: Vec<&String> = leases.keys().filter(|k| k.ends_with(".outcome")).collect();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(outcomes.len(), 1, "{leases:?}");
    let lease = outcomes[0].trim_end_matches(".outcome");
    assert!(
        leases[lease].contains(&id),
        "the lease records the refresh: {leases:?}"
    );
    // Each agent's journal reaches its copy a moment after it is written.
    let logs = wait_for(
        "the outcome's line in an agent's log",
        Duration::from_secs(30),
        || {
            let logs: Vec<(String, String)> = std::fs::read_dir(f.dir().join("instances"))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let log = e.path().join("agent.log");
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(log).unwrap_or_default(),
                    )
                })
                .collect();
            logs.iter()
                .any(|(_, t)| t.contains("secret rollout succeeded"))
                .then_some(logs)
        },
    );
    let with = |line: &str| -> Vec<&str> {
        logs.iter()
            .filter(|(_, t)| t.contains(line))
            .map(|(i, _)| i.as_str())
            .collect()
    };
    assert_eq!(
        with("won the rollout lease").len(),
        1,
        "one winner: {logs:?}"
    );
    assert!(
        with("won the rollout lease")
            .iter()
            .all(|i| before.contains(&(*i).to_owned())),
        "the winner saw the rotation"
    );
    assert_eq!(
        with("secret rollout succeeded").len(),
        1,
        "one outcome: {logs:?}"
    );
    // The replacements booted with the new secret: they follow the rotation's lease (its key is
    // the hash of the names and versions an agent read at boot).
    for i in &now {
        let log = logged(
            &f.dir().join("instances").join(i).join("agent.log"),
            &["following the unfinished secret rollout"],
        );
        assert!(log.contains(lease), "{i} follows {lease}:\n{log}");
    }
    no_denials(&f);
}

/// A loopback target for the load balancer's own tests: `/health` answers 200 (after
/// `healthy_after` checks), every other request is read and its connection closed unanswered,
/// as an app dying under a request does. Stops with the test (a bounded number of accepts).
fn dropping_target(healthy_after: u32) -> u16 {
    target(healthy_after, true)
}

/// As [`dropping_target`], or (`drop_requests` false) one answering every request 200.
fn target(healthy_after: u32, drop_requests: bool) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut checks = 0;
        for s in l.incoming().take(2_000) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            if buf[..n].starts_with(b"GET /health") {
                checks += 1;
                let status = if checks > healthy_after {
                    "200 OK"
                } else {
                    "503 No"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
                );
            } else if !drop_requests {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
                );
            }
        }
    });
    port
}

/// The edge answers 502 for a request its target dropped, as an ALB does: no retry on another
/// target, no second attempt.
#[test]
fn test_lb_does_not_retry_a_request_a_target_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fleet::haproxy::TargetGroup::from_edge_template().unwrap();
    let lb = fleet::haproxy::Lb::start(dir.path(), fleet::free_port().unwrap(), tg, 0.01).unwrap();
    let addr = lb.addr();
    lb.register("bad", dropping_target(0)).unwrap();
    lb.register("good", target(0, false)).unwrap();
    wait_for(
        "both targets to pass a check",
        Duration::from_secs(10),
        || {
            let st = lb.servers().unwrap();
            lb.admit_healthy(&st, &|_| false).unwrap();
            (st.iter().filter(|s| s.serving()).count() == 2).then_some(())
        },
    );
    // Round robin: every other request reaches the dropping target, and is not sent again to
    // the good one (haproxy's retries with redispatch would answer all 10 with 200).
    let answers: Vec<u16> = (0..10)
        .map(|_| fleet::http_get(addr, "/").unwrap().0)
        .collect();
    assert_eq!(
        answers.iter().filter(|c| **c == 502).count(),
        5,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|c| **c == 200).count(),
        5,
        "{answers:?}"
    );
}

/// A newly registered target gets no request before it passed a health check.
#[test]
fn test_lb_sends_nothing_to_a_target_before_its_first_passed_check() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fleet::haproxy::TargetGroup::from_edge_template().unwrap();
    let lb = fleet::haproxy::Lb::start(dir.path(), fleet::free_port().unwrap(), tg, 0.01).unwrap();
    let addr = lb.addr();
    // Fails its first 20 checks (2 s at 100 ms).
    lb.register("new", dropping_target(20)).unwrap();
    for _ in 0..5 {
        let st = lb.servers().unwrap();
        lb.admit_healthy(&st, &|_| false).unwrap();
        assert!(!st.iter().any(|s| s.name == "new" && s.serving()), "{st:?}");
        // No target to send to: the edge's own 503, nothing reached the target.
        assert_eq!(fleet::http_get(addr, "/").unwrap().0, 503);
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// The canary scenarios' refresh: one replacement at a time (min 90 %, max 120 % of 3), so that
/// at the canary's checkpoint one instance runs the new release beside two on the old one.
const CANARY_PREFERENCES: &str =
    "min_healthy_percentage = 90\nmax_healthy_percentage = 120\ninstance_warmup = \"10s\"\n";
/// `[canary]` of the scenarios: 30 s observed, read 12 s later (fleet.yaml's agents publish
/// every 10 s).
const CANARY: &str = "[canary]\nwindow = \"30s\"\nsettle = \"12s\"\nmin_requests = 100\n";

/// A world whose bake.toml has [`CANARY`].
fn canary_world(env: &str) -> World {
    let w = World::with_refresh(env, CANARY_PREFERENCES);
    let path = w.dir.path().join("bake.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{CANARY}")).unwrap();
    w
}

/// A fleet of 3 on `ami` (`version`) whose app answers GET / after 10 ms (`LATENCY_MS`).
fn canary_fleet(w: &World, ami: &str, version: &str) -> Fleet {
    w.fleet(ami, version, 3, |o| {
        o.app_env = vec![("LATENCY_MS", "10".to_owned())];
    })
}

/// `bake release` of `ami` with the world's `[canary]`: the verdict, checked to be `result` with
/// `action`, and the exit code checked to be `code`.
fn canary_release(
    w: &World,
    ami: &str,
    code: i32,
    result: &str,
    action: &str,
) -> serde_json::Value {
    let (got, j, stderr) = w.release(ami);
    eprintln!("canary of {ami}: {}", j["canary"]);
    assert_eq!(got, code, "{j}\n{stderr}");
    let v = &j["canary"];
    assert_eq!(
        (v["result"].as_str(), v["action"].as_str()),
        (Some(result), Some(action)),
        "{v}"
    );
    assert!(
        stderr.contains(&format!("canary verdict: {result} after 30s")),
        "{stderr}"
    );
    v.clone()
}

/// The verdict's counts are the load generator's own: the answers it read in the verdict's
/// window from the old release (`app OLD`), from the new one (`app NEW…`, 200 or its injected
/// 500s), and the new one's 500s. Within 3 % + 5 (a request's answer is read a moment after the
/// app counted it: at the window's edges one may fall on either side).
fn verdict_matches_load(verdict: &serde_json::Value, stats: &LoadStats, old: &str, new: &str) {
    let at = |k: &str| {
        std::time::SystemTime::try_from(
            aws_smithy_types::DateTime::from_str(
                verdict[k].as_str().unwrap(),
                aws_smithy_types::date_time::Format::DateTime,
            )
            .unwrap(),
        )
        .unwrap()
    };
    let answers = stats.answers_between(at("window_start"), at("window_end"));
    let count = |f: &dyn Fn(u16, &str) -> bool| -> u64 {
        answers
            .iter()
            .filter(|((code, body), _)| f(*code, body))
            .map(|(_, n)| n)
            .sum()
    };
    let old_body = format!("app {old}");
    let new_body = format!("app {new}");
    let load = [
        (
            "old requests",
            count(&|_, b| b == old_body),
            &verdict["old"]["requests"],
        ),
        (
            "new requests",
            count(&|_, b| b.starts_with(&new_body)),
            &verdict["new"]["requests"],
        ),
        (
            "new 5xx",
            count(&|c, b| c == 500 && b.starts_with(&new_body)),
            &verdict["new"]["errors"],
        ),
    ];
    for (what, counted, said) in load {
        let said = said.as_u64().unwrap();
        let slack = counted.max(said) * 3 / 100 + 5;
        eprintln!("canary {what}: verdict {said}, load generator {counted}");
        assert!(
            said.abs_diff(counted) <= slack,
            "{what}: the verdict says {said}, the load generator read {counted} in its window"
        );
    }
}

/// Scenario c1: a healthy release passes its canary and goes on to the whole group; then a
/// release three times slower is rolled back at its canary. The verdicts' numbers are the load
/// generator's.
#[test]
fn test_canary_passes_a_healthy_release_and_rolls_back_a_slow_one() {
    let w = canary_world("canary");
    let (v1, v2, slow) = (w.ami(V1), w.ami(V2), w.ami(SLOW));
    let f = canary_fleet(&w, &v1, V1);
    let gen = load(&f, 50_000);
    let v = canary_release(&w, &v2, 0, "pass", "continued");
    verdict_matches_load(&v, &gen.snapshot(), V1, V2);
    f.wait_serving(3, V2, Duration::from_secs(60)).unwrap();

    let v = canary_release(&w, &slow, 6, "fail", "rolled_back");
    let ratio = v["new"]["p50"].as_f64().unwrap() / v["old"]["p50"].as_f64().unwrap();
    assert!(
        (2.0..4.0).contains(&ratio),
        "p50 {ratio:.2} times the old release's: {v}"
    );
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("latency p50 "),
        "{v}"
    );
    f.wait_serving(3, V2, Duration::from_secs(90)).unwrap();
    let stats = gen.stop();
    verdict_matches_load(&v, &stats, V2, SLOW);
    eprintln!("canary scenario: load {}", stats.summary());
    assert_eq!(stats.failed, 0, "{}: {:?}", stats.summary(), stats.failures);
}

/// Scenario c2: a release that answers 500 to one request in ten is rolled back at its canary;
/// the verdict counts the 5xx the load generator got, and those are the only failures.
#[test]
fn test_canary_rolls_back_a_release_that_answers_5xx() {
    let w = canary_world("canary-5xx");
    let (v1, erring) = (w.ami(V1), w.ami(ERRING));
    let f = canary_fleet(&w, &v1, V1);
    let gen = load(&f, 50_000);
    let v = canary_release(&w, &erring, 6, "fail", "rolled_back");
    assert!(
        v["reasons"][0].as_str().unwrap().starts_with("5xx rate "),
        "{v}"
    );
    let rate = v["new"]["error_rate"].as_f64().unwrap();
    assert!((0.04..0.2).contains(&rate), "{v}");
    f.wait_serving(3, V1, Duration::from_secs(90)).unwrap();
    let stats = gen.stop();
    verdict_matches_load(&v, &stats, V1, ERRING);
    // The rollout's timeline, as the release role: the canary instance on `erring` launched,
    // went in service once its agent completed the launch hook, then drained and terminated in
    // the rollback; the rollback's replacement is on v1 and in service.
    let out = w
        .bake_command(&["status", "--timeline", "-o", "json"])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("timeline: {}", s["timeline"]);
    let rows = s["timeline"]["instances"].as_array().unwrap();
    let on = |img: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["image_id"] == img).collect()
    };
    let canary = on(&erring);
    assert_eq!(canary.len(), 1, "one canary instance: {rows:?}");
    for k in ["launched", "in_service", "draining", "terminated"] {
        assert!(canary[0][k].is_string(), "{k}: {}", canary[0]);
    }
    assert!(
        on(&v1)
            .iter()
            .any(|r| r["launched"].is_string() && r["in_service"].is_string()),
        "the rollback's replacement: {rows:?}"
    );
    eprintln!("canary scenario: load {}", stats.summary());
    assert_eq!(
        stats.causes.keys().collect::<Vec<_>>(),
        ["500"],
        "only the erring release's injected errors: {}",
        stats.summary()
    );
}

/// `bake test-image AMI -o json` as the release role: (exit code, JSON, stderr).
fn test_image(w: &World, ami: &str) -> (i32, serde_json::Value, String) {
    w.bake_json(&["test-image", ami, "-o", "json"])
}

/// `(name, ok, detail)` of each check of a `bake test-image` document.
fn checks_of(json: &serde_json::Value) -> Vec<(String, bool, String)> {
    json["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {json}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["ok"].as_bool().unwrap_or(false),
                c["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The image's tag `key`, read as the administrator.
fn image_tag(w: &World, ami: &str, key: &str) -> Option<String> {
    let out =
        w.rt.block_on(w.aws.ec2.describe_images().image_ids(ami).send())
            .unwrap();
    out.images()[0]
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_owned))
}

/// Boot-tested images on the booted fleet, with `image_test.required = true`: `bake test-image`
/// launches an instance outside the group from the group's launch template, which the fleet
/// boots under systemd from that template's userdata and instance profile; its
/// `bake-image-test.service` checks it (the real systemctl, nft, mount, state file) and writes
/// the report as the instance role. A good image passes its six checks and the group is never
/// touched by the test; an image whose app never becomes ready fails (`readiness`, `units`) in
/// its readiness timeout and its release is refused; the good image is then released.
#[test]
fn test_boot_tested_images_on_the_booted_fleet() {
    let w = World::new("imgtest");
    let config = w.dir.path().join("bake.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let tested = text.replace(
        "[image_test]\nrequired = false\n",
        &format!(
            "[image_test]\nrequired = true\nparameter_prefix = \"/bake/{}/image-tests\"\ntimeout = \"4m\"\n",
            w.env
        ),
    );
    assert_ne!(text, tested, "the world's bake.toml has its [image_test]");
    std::fs::write(&config, tested).unwrap();
    let (v1, v2, broken) = (w.ami(V1), w.ami(V2), w.ami(BROKEN));
    let f = w.fleet(&v1, V1, 1, |o| o.ready_timeout = Duration::from_secs(20));
    let group_before = w.group();

    let t = Instant::now();
    let (code, json, stderr) = test_image(&w, &v2);
    eprintln!(
        "test-image {V2}: exit {code} in {} ms: {json}",
        t.elapsed().as_millis()
    );
    assert_eq!(code, 0, "{json}\n{stderr}\n{}", agent_logs(&f));
    assert_eq!(json["result"], "pass", "{json}");
    let checks = checks_of(&json);
    let names: Vec<&str> = checks.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        ["units", "app", "readiness", "secrets", "efs", "firewall"],
        "{json}"
    );
    assert!(checks.iter().all(|c| c.1), "{checks:?}");
    let instance = json["instance_id"].as_str().unwrap().to_owned();
    assert!(
        !group_before.iter().any(|g| g.0 == instance),
        "the test instance is not a member of the group: {group_before:?}"
    );
    assert_eq!(image_tag(&w, &v2, "bake:tested").as_deref(), Some("pass"));
    // The fleet booted it, kept it out of the load balancer, and stopped it once bake had it
    // terminated; the group never changed.
    wait_for("the test instance stopped", Duration::from_secs(60), || {
        f.outside_instances().is_empty().then_some(())
    });
    let stats = f.stats();
    assert_eq!(
        (stats.outside_launched, stats.outside_terminated),
        (1, 1),
        "{stats:?}"
    );
    assert!(
        f.lb_servers().iter().all(|(id, _)| *id != instance),
        "{:?}",
        f.lb_servers()
    );
    assert_eq!(w.group(), group_before);
    assert_eq!(stats.launched, 1, "{stats:?}");

    // An untested image is refused before anything changes.
    let (code, json, stderr) = w.release(&broken);
    assert_eq!(code, 15, "untested: {json}\n{stderr}");
    assert!(stderr.contains("never boot-tested"), "{stderr}");

    let t = Instant::now();
    let (code, json, stderr) = test_image(&w, &broken);
    let took = t.elapsed();
    eprintln!(
        "test-image {BROKEN}: exit {code} in {} ms: {json}",
        took.as_millis()
    );
    assert_eq!(code, 14, "{json}\n{stderr}");
    assert_eq!(json["result"], "fail", "{json}");
    let failed: Vec<(String, String)> = checks_of(&json)
        .into_iter()
        .filter(|c| !c.1)
        .map(|c| (c.0, c.2))
        .collect();
    let failed_names: Vec<&str> = failed.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(failed_names, ["units", "readiness"], "{json}");
    assert!(failed[1].1.contains("never became ready"), "{failed:?}");
    assert!(
        failed[0].1.contains("bake-agent.service"),
        "the agent's unit is not active: {failed:?}"
    );
    // Its report came from the agent's decision, not from the agent unit's 15-minute start
    // timeout nor bake's 4-minute limit.
    assert!(took < Duration::from_secs(180), "{took:?}");
    assert_eq!(
        image_tag(&w, &broken, "bake:tested").as_deref(),
        Some("fail")
    );
    let (code, json, stderr) = w.release(&broken);
    assert_eq!(code, 15, "failed: {json}\n{stderr}");
    assert!(stderr.contains("failed its boot test"), "{stderr}");
    assert_eq!(w.group(), group_before);

    // The image that passed is released.
    let (code, json, stderr) = w.release(&v2);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["tested"], "pass", "{json}");
    f.wait_serving(1, V2, Duration::from_secs(120)).unwrap();
    wait_for(
        "every test instance stopped",
        Duration::from_secs(60),
        || f.outside_instances().is_empty().then_some(()),
    );
    let stats = f.stats();
    assert_eq!(
        (stats.outside_launched, stats.outside_terminated),
        (2, 2),
        "{stats:?}"
    );
    no_denials(&f);
}

/// `(code, body)` of `GET path` through the load balancer, the first answer that is not a 5xx
/// within 10 s (a target may be leaving as the request arrives).
fn get_through_lb(f: &Fleet, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fleet::http_get(f.lb_addr(), path);
        if let Ok((code, body)) = &got {
            if *code < 500 || Instant::now() > deadline {
                return (*code, body.clone());
            }
        }
        assert!(Instant::now() < deadline, "GET {path}: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Migrations once per release, on the booted fleet, and what the fleet keeps across releases:
/// an environment whose database is new runs 2 × v1 (GET / and /health need no schema);
/// `bake release` of v2 with `[migrate]` launches a migration instance of v2 outside the group,
/// which the fleet boots; its `bake-migrate.service` runs the image's `bin/migrate` against the
/// environment's database as the instance role, and bake streams its lines (`migrate | …`) and
/// starts the refresh only after it exited 0. Uploads made through the load balancer on v2 are
/// then still downloadable, byte for byte and with their rows, after a release of v1 under load
/// (whose migration finds the schema up to date) with 0 failed requests.
#[test]
fn test_migration_runs_once_per_release_and_uploads_survive_rollouts() {
    let w = World::build("migrate", LAUNCH_BEFORE_TERMINATE, false);
    let config = w.dir.path().join("bake.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[migrate]\nparameter_prefix = \"/bake/{}/migrations\"\ntimeout = \"4m\"\n",
        w.env
    ));
    std::fs::write(&config, text).unwrap();
    assert_eq!(
        w.db.query("SELECT count(*) FROM pg_tables WHERE tablename = 'uploads'")
            .unwrap(),
        "0",
        "a new database"
    );
    let (v1, v2) = (w.ami(V1), w.ami(V2));
    let f = w.fleet(&v1, V1, 2, |_| {});

    let (code, json, stderr) = w.release(&v2);
    eprintln!("release {V2} with its migration: exit {code}: {json}");
    assert_eq!(code, 0, "{json}\n{stderr}\n{}", agent_logs(&f));
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("migrate | ").map(|(_, m)| m))
        .collect();
    let applied: Vec<&&str> = lines.iter().filter(|l| l.contains("applied")).collect();
    assert!(
        applied.iter().any(|l| l.contains("001_users"))
            && applied.iter().any(|l| l.contains("002_uploads")),
        "the migration's lines are in bake's output: {lines:?}\n{stderr}"
    );
    assert_eq!(json["migrate"]["exit_code"], 0, "{json}");
    assert!(!stderr.contains(&w.db_connection_string()), "{stderr}");
    let migration_instance = json["migrate"]["instance"].as_str().unwrap().to_owned();
    assert!(
        w.group().iter().all(|g| g.0 != migration_instance),
        "the migration instance is no member of the group"
    );
    assert_eq!(
        w.db.query("SELECT count(*) FROM schema_migrations")
            .unwrap(),
        "2"
    );
    f.wait_serving(2, V2, Duration::from_secs(120)).unwrap();
    wait_for(
        "the migration instance stopped",
        Duration::from_secs(60),
        || f.outside_instances().is_empty().then_some(()),
    );
    assert_eq!(f.stats().outside_launched, 1, "{:?}", f.stats());

    // Uploads through the edge, on v2.
    let files: Vec<(String, String)> = (0..3)
        .map(|i| {
            let body: String = (0..(256 * 1024))
                .map(|j: u32| char::from(b'a' + u8::try_from((j * 7 + i * 13) % 26).unwrap()))
                .collect();
            (format!("survivor-{i}.txt"), body)
        })
        .collect();
    for (name, body) in &files {
        let (code, answer) =
            fleet::http_post_text(f.lb_addr(), &format!("/upload/{name}"), body).unwrap();
        assert_eq!(code, 201, "{answer}");
    }
    assert_eq!(w.db.query("SELECT count(*) FROM uploads").unwrap(), "3");

    let gen = load(&f, 50_000);
    let (code, json, stderr) = w.release(&v1);
    f.wait_serving(2, V1, Duration::from_secs(120)).unwrap();
    let stats = gen.stop();
    eprintln!("release {V1}: exit {code}, load {}", stats.summary());
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert!(
        stderr.contains("migrate | migrate: up to date"),
        "the second release's migration found nothing to do:\n{stderr}"
    );
    assert_eq!(
        w.db.query("SELECT count(*) FROM schema_migrations")
            .unwrap(),
        "2"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    for (name, body) in &files {
        let (code, got) = get_through_lb(&f, &format!("/download/{name}"));
        assert_eq!(code, 200, "{name}: {got:.200}");
        assert!(
            got == *body,
            "{name} came back changed ({} bytes)",
            got.len()
        );
    }
    assert_eq!(
        w.db.query("SELECT string_agg(name || ':' || bytes, ',' ORDER BY name) FROM uploads")
            .unwrap(),
        "survivor-0.txt:262144,survivor-1.txt:262144,survivor-2.txt:262144"
    );
    assert_eq!(f.stats().outside_launched, 2, "{:?}", f.stats());
    weekly_job_runs_once_for_the_fleet(&w, &f);
    no_denials(&f);
}

/// The weekly job, started at the same moment on every instance of the fleet (as their timers
/// would, `OnCalendar=` being the same on all): exactly one instance takes the week's lease in
/// SSM and runs the app's task, whose report counts the database's uploads; every other one
/// finds the lease taken and runs nothing; all units succeed.
fn weekly_job_runs_once_for_the_fleet(w: &World, f: &Fleet) {
    let ids: Vec<String> = f.instances().into_iter().map(|i| i.id).collect();
    assert!(ids.len() >= 2, "a fleet of several instances: {ids:?}");
    let outs: Vec<(String, String)> = std::thread::scope(|s| {
        let jobs: Vec<_> = ids
            .iter()
            .map(|id| {
                s.spawn(move || {
                    let out = f
                        .sh(id, "systemctl start bake-user-stats.service; echo rc=$?")
                        .unwrap();
                    let journal = f
                        .sh(
                            id,
                            "journalctl -u bake-user-stats.service --no-pager -o cat",
                        )
                        .unwrap();
                    (format!("{id}: {out}"), journal)
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let all = format!("{outs:#?}");
    eprintln!("the weekly job on {} instances at once: {all}", ids.len());
    assert!(outs.iter().all(|(o, _)| o.ends_with("rc=0")), "{all}");
    let ran: Vec<&(String, String)> = outs
        .iter()
        .filter(|(_, j)| j.contains("\"report\":\"user-stats\""))
        .collect();
    assert_eq!(ran.len(), 1, "one instance ran the task: {all}");
    assert!(
        outs.iter()
            .filter(|(_, j)| !j.contains("\"report\":\"user-stats\""))
            .all(|(_, j)| j.contains("not running here")),
        "every other instance found the lease taken: {all}"
    );
    assert_eq!(
        ran[0].1.matches("\"report\":\"user-stats\"").count(),
        1,
        "{all}"
    );
    assert!(
        ran[0].1.contains("\"db\":{\"users\":0,\"uploads\":3,"),
        "the report counts the database's uploads: {all}"
    );
    let lease = format!("/bake/{}/leases/{}/user-stats", w.env, w.asg);
    let names = w.rt.block_on(w.aws.parameter_names(&lease)).unwrap();
    assert!(
        names.iter().any(|n| n.ends_with("/attempt-1")),
        "the week's lease under {lease}: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with("/attempt-2")),
        "taken once: {names:?}"
    );
}

/// What a client of a large upload saw.
#[derive(Debug)]
enum UploadEnd {
    /// The whole body was sent and the app answered: (status, body).
    Answered(u16, String),
    /// The connection failed (reset, closed) after this many bytes of the body were sent.
    Failed(u64, String),
}

/// `PUT /upload/NAME` of `size` bytes through `lb`, generated on the fly (never held whole), at
/// most `rate` bytes/s; `sent` counts the body's bytes as they go. Returns what the client saw
/// and the SHA-256 (hex) of the body it meant to send (`sha256sum` of the same bytes).
fn large_upload(
    lb: std::net::SocketAddr,
    name: &str,
    size: u64,
    rate: u64,
    sent: &std::sync::atomic::AtomicU64,
) -> (UploadEnd, String) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut sha = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut sha_in = sha.stdin.take().unwrap();
    let chunk_len = 1 << 20;
    let mut chunk = vec![0u8; chunk_len];
    let start = Instant::now();
    let end = (|| {
        let mut s = std::net::TcpStream::connect(lb).map_err(|e| (0, e.to_string()))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| (0, e.to_string()))?;
        s.write_all(
            format!(
                "PUT /upload/{name} HTTP/1.1\r\nHost: fleet\r\nContent-Length: {size}\r\n\
                 Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| (0, e.to_string()))?;
        let mut done = 0u64;
        let mut k = 0u64;
        while done < size {
            fill_chunk(&mut chunk, k);
            let n = usize::try_from((size - done).min(chunk_len as u64)).unwrap();
            s.write_all(&chunk[..n])
                .map_err(|e| (done, e.to_string()))?;
            sha_in.write_all(&chunk[..n]).unwrap();
            done += n as u64;
            k += 1;
            sent.store(done, Ordering::SeqCst);
            // Bounded rate: the body must still be going when the rollout takes its target.
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| (done, e.to_string()))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .map_err(|e| (done, e.to_string()))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| (done, format!("no status line: {text:.200}")))?;
        Ok::<_, (u64, String)>(UploadEnd::Answered(code, text))
    })()
    .unwrap_or_else(|(n, e)| UploadEnd::Failed(n, e));
    // The rest of the body the client meant to send, for its digest.
    let mut meant = sent.load(Ordering::SeqCst);
    let mut k = meant / chunk_len as u64;
    while meant < size {
        fill_chunk(&mut chunk, k);
        let n = usize::try_from((size - meant).min(chunk_len as u64)).unwrap();
        sha_in.write_all(&chunk[..n]).unwrap();
        meant += n as u64;
        k += 1;
    }
    drop(sha_in);
    let out = sha.wait_with_output().unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (end, digest)
}

/// Chunk `k` of [`large_upload`]'s body.
fn fill_chunk(chunk: &mut [u8], k: u64) {
    for (j, b) in chunk.iter_mut().enumerate() {
        *b = u8::try_from((j as u64 * 31 + k * 7) % 251).unwrap();
    }
}

/// `sha256sum` of `path`.
fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A 1 GiB upload through the edge while a rollout replaces the one instance that receives it:
/// the client sees one clean failure (the connection ends before its answer) and nothing is
/// stored under the name, neither a file nor a row; the same upload after the rollout is
/// answered 201 and stored whole (size, SHA-256 of the file, the row's bytes and digest all the
/// client's). The body is generated on the fly and sent at a bounded rate.
#[test]
fn test_large_upload_during_a_rollout_is_stored_whole_or_not_at_all() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const SIZE: u64 = 1 << 30;
    let w = World::new("bigupload");
    let (v1, v2) = (w.ami(V1), w.ami(V2));
    let f = w.fleet(&v1, V1, 1, |_| {});
    let lb = f.lb_addr();
    let uploads = f.dir().join("efs/uploads");

    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let upload = {
        let sent = sent.clone();
        std::thread::spawn(move || large_upload(lb, "big.bin", SIZE, 20 << 20, &sent))
    };
    wait_for("the upload under way", Duration::from_secs(30), || {
        (sent.load(Ordering::SeqCst) >= 64 << 20).then_some(())
    });
    let (code, json, stderr) = w.release(&v2);
    assert_eq!(code, 0, "{json}\n{stderr}");
    f.wait_serving(1, V2, Duration::from_secs(120)).unwrap();
    let (end, digest) = upload.join().unwrap();
    eprintln!("the upload during the rollout: {end:?}");
    match &end {
        UploadEnd::Failed(n, why) => assert!(*n < SIZE, "{why}"),
        UploadEnd::Answered(code, _) => assert!(
            *code >= 500,
            "the instance that received it was replaced before the body's end: {end:?}"
        ),
    }
    assert!(
        !uploads.join("big.bin").exists(),
        "no truncated file stored as complete"
    );
    assert_eq!(
        w.db.query("SELECT count(*) FROM uploads WHERE name = 'big.bin'")
            .unwrap(),
        "0"
    );

    // Again, on the new release: stored whole.
    let (end, digest_again) = large_upload(lb, "big.bin", SIZE, 1 << 40, &AtomicU64::new(0));
    assert_eq!(digest, digest_again, "the same body");
    let UploadEnd::Answered(201, answer) = &end else {
        panic!("the upload after the rollout: {end:?}");
    };
    assert!(answer.contains(&digest), "{answer:.500}");
    let stored = uploads.join("big.bin");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), SIZE);
    assert_eq!(sha256_of(&stored), digest);
    assert_eq!(
        w.db.query("SELECT bytes || ':' || sha256 FROM uploads WHERE name = 'big.bin'")
            .unwrap(),
        format!("{SIZE}:{digest}")
    );
    std::fs::remove_file(&stored).unwrap();
}
