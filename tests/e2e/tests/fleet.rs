//! End-to-end scenarios on the local fleet: the emulator's group played out by real `bake-agent`
//! processes and sample apps behind haproxy, released with the real `bake`.

use std::process::Command;
use std::time::{Duration, Instant};

use bake_e2e::fleet::{self, Fleet, FleetOptions, LoadGen, BROKEN};
use bake_e2e::Emulator;

struct World {
    emu: Emulator,
    rt: tokio::runtime::Runtime,
    aws: bake_common::aws::Aws,
    dir: tempfile::TempDir,
    asg: String,
}

impl World {
    fn new(asg: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let emu = Emulator::start().expect("emulator starts");
        let aws = rt.block_on(emu.aws());
        let dir = tempfile::Builder::new()
            .prefix(&format!("bake-fleet-test-{asg}-"))
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("bake.toml"),
            format!(
                "[target]\nauto_scaling_group = \"{asg}\"\n[refresh]\nmin_healthy_percentage = 100\nmax_healthy_percentage = 200\n\
                 instance_warmup = \"30s\"\npoll_interval = \"200ms\"\nmax_poll_interval = \"1s\"\ntimeout = \"4m\"\n"
            ),
        )
        .unwrap();
        Self {
            emu,
            rt,
            aws,
            dir,
            asg: asg.to_owned(),
        }
    }

    fn ami(&self, version: &str) -> String {
        self.rt
            .block_on(fleet::register_version_ami(&self.aws, version))
            .unwrap()
    }

    /// A group of `n` on `ami` and its local fleet, serving `version`.
    fn fleet(
        &self,
        ami: &str,
        version: &str,
        n: i32,
        tweak: impl FnOnce(&mut FleetOptions),
    ) -> Fleet {
        self.rt
            .block_on(fleet::create_group(&self.aws, &self.asg, ami, n))
            .unwrap();
        let mut opts = FleetOptions::new(&self.asg, bake_e2e::paths::workspace_bin("bake-agent"));
        tweak(&mut opts);
        let f = Fleet::start(&self.emu, opts).unwrap();
        f.wait_serving(
            usize::try_from(n).unwrap(),
            version,
            Duration::from_secs(90),
        )
        .unwrap();
        f
    }

    /// `bake release --ami AMI -o json`: (exit code, JSON, stderr).
    fn release(&self, ami: &str) -> (i32, serde_json::Value, String) {
        let out = Command::new(bake_e2e::paths::workspace_bin("bake"))
            .args([
                "--config",
                "bake.toml",
                "release",
                "--ami",
                ami,
                "-o",
                "json",
            ])
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("BAKE_CONFIG")
            .envs(self.emu.env())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("bake's stdout is not JSON ({e}): {stdout}\n{stderr}"));
        (out.status.code().unwrap_or(-1), json, stderr)
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

fn agent_logs(f: &Fleet) -> String {
    f.instances()
        .iter()
        .map(|i| std::fs::read_to_string(&i.log).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(f: &Fleet, max: u64) -> LoadGen {
    LoadGen::start(
        f.lb_addr(),
        "/",
        2,
        max,
        Duration::from_secs(240),
        Duration::from_millis(10),
    )
    .unwrap()
}

#[test]
fn test_fleet_edge_rules_and_simulated_instances() {
    let w = World::new("edge");
    let v1 = w.ami("1");
    let f = w.fleet(&v1, "1", 2, |_| {});
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
    // Each simulated instance is a group member in service, its app on its own port.
    let group = w.group();
    for i in f.instances() {
        assert!(
            group.iter().any(|g| g.0 == i.id && g.1 == "InService"),
            "{i:?} in {group:?}"
        );
        assert_eq!(
            fleet::http_get(([127, 0, 0, 1], i.port).into(), "/").unwrap(),
            (200, "app 1\n".into())
        );
        let log = std::fs::read_to_string(&i.log).unwrap();
        assert!(log.contains("app is ready"), "{log}");
    }
    let stats = f.shutdown();
    assert_eq!(stats.launched, 2);
}

/// Scenario a: `bake release` of version 2 under load: Successful, every instance on version 2,
/// zero failed requests.
#[test]
fn test_release_under_load_has_zero_failed_requests() {
    let w = World::new("rel");
    let (v1, v2) = (w.ami("1"), w.ami("2"));
    let f = w.fleet(&v1, "1", 3, |_| {});
    let before: Vec<String> = f.instances().into_iter().map(|i| i.id).collect();
    let gen = load(&f, 50_000);
    let started = Instant::now();
    let (code, json, stderr) = w.release(&v2);
    let rollout = started.elapsed();
    // Let the last drains finish under load.
    f.wait_serving(3, "2", Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = gen.stop();
    eprintln!(
        "release: {rollout:?}, load {stats:?}, fleet {:?}",
        f.stats()
    );
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["result"], "successful", "{json}");
    let now = f.instances();
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(
        now.iter()
            .all(|i| i.version == "2" && !before.contains(&i.id)),
        "{now:?}"
    );
    // Each replacement went in service only once its app answered: the agent completes the
    // launch hook after its readiness probe, and haproxy only has instances in service.
    for i in &now {
        let log = std::fs::read_to_string(&i.log).unwrap();
        let ready = log
            .find("app is ready")
            .unwrap_or_else(|| panic!("{}: {log}", i.id));
        let completed = log
            .find("lifecycle action completed")
            .unwrap_or_else(|| panic!("{}: {log}", i.id));
        assert!(ready < completed, "{}: {log}", i.id);
    }
    assert!(stats.ok > 50, "{stats:?}");
    assert_eq!(
        stats.failed, 0,
        "failed requests during the release: {stats:?}"
    );
    assert!(
        stats.versions.contains_key("app 1") && stats.versions.contains_key("app 2"),
        "{stats:?}"
    );
    let fs = f.shutdown();
    assert_eq!(fs.launched, 6, "{fs:?}");
    assert_eq!(fs.terminated, 3, "{fs:?}");
}

/// Scenario c: the app crashes under load (its /crash reached directly, behind the edge): the
/// agent restarts it, failed requests are counted and bounded.
#[test]
fn test_crash_under_load_is_restarted_with_bounded_failures() {
    let w = World::new("crash");
    let v1 = w.ami("1");
    let f = w.fleet(&v1, "1", 2, |_| {});
    let victim = f.instances()[0].clone();
    let gen = load(&f, 20_000);
    std::thread::sleep(Duration::from_millis(500));
    let _ = fleet::http_get(([127, 0, 0, 1], victim.port).into(), "/crash");
    wait_for("the app to answer again", Duration::from_secs(20), || {
        matches!(
            fleet::http_get(([127, 0, 0, 1], victim.port).into(), "/"),
            Ok((200, _))
        )
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let stats = gen.stop();
    let fs = f.stats();
    eprintln!("crash: load {stats:?}, fleet {fs:?}");
    assert!(fs.restarts >= 1, "{fs:?}\n{}", agent_logs(&f));
    assert!(stats.ok > 20, "{stats:?}");
    assert!(stats.failed <= 5, "failures are bounded: {stats:?}");
    // Same instances, nobody replaced.
    assert_eq!(f.instances().len(), 2);
    assert_eq!(fs.terminated, 0);
}

/// Scenario d: a crash loop marks the instance Unhealthy and the group replaces it.
#[test]
fn test_crash_loop_gets_the_instance_replaced() {
    let w = World::new("loop");
    let v1 = w.ami("1");
    let f = w.fleet(&v1, "1", 2, |o| o.crash_loop_count = 3);
    let victim = f.instances()[0].clone();
    let addr = ([127, 0, 0, 1], victim.port).into();
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
    f.wait_serving(2, "1", Duration::from_secs(60)).unwrap();
    let log = std::fs::read_to_string(&victim.log).unwrap();
    assert!(log.to_lowercase().contains("unhealthy"), "{log}");
    let fs = f.stats();
    assert_eq!(fs.terminated, 1, "{fs:?}");
    assert_eq!(fs.launched, 3, "{fs:?}");
}

/// Scenario b: version 3 never becomes ready: the refresh fails and rolls back, the fleet is back
/// on version 2, `bake release` exits non-zero with the reason.
#[test]
fn test_never_ready_release_rolls_back() {
    let w = World::new("broken");
    let (v2, v3) = (w.ami("2"), w.ami(BROKEN));
    let f = w.fleet(&v2, "2", 2, |o| o.ready_timeout = Duration::from_secs(4));
    let gen = load(&f, 50_000);
    let (code, json, stderr) = w.release(&v3);
    f.wait_serving(2, "2", Duration::from_secs(90)).unwrap();
    let stats = gen.stop();
    eprintln!(
        "broken release: {json}, load {stats:?}, fleet {:?}",
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
    assert!(f.instances().iter().all(|i| i.version == "2"));
}
