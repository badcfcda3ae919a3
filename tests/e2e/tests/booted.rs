//! Proofs on booted instances: the image booted under systemd (`bake_e2e::boot`), the shipped
//! units running the real `bake-agent`, against the emulator through the instance's relay.
//!
//! One instance carries every proof that does not disturb the others, in this order: boot →
//! READY → app ready → launch hook CONTINUE; the sandbox as applied; the network boundary and
//! the instance's own firewall; an upload on the shared directory and the app's output in
//! CloudWatch Logs; the timers, the reaper and the weekly job's lease; an app crash; a SIGKILLed
//! agent; a frozen agent and systemd's watchdog; power-off and teardown. The refresh of the
//! instance role's credentials and Lynis get an instance each. Needs root (network namespaces,
//! nspawn), as CI runs; nextest runs these one at a time (.config/nextest.toml).
//!
//! The first two run with IAM enforced: their environment's network, data and iam stacks are
//! deployed first, and the instance has iam.yaml's instance role (its credentials in its
//! metadata), so the secrets, hooks, logs, metrics and the weekly job's lease all answer to it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use bake_e2e::boot::{self, BootSpec, Instance};
use bake_e2e::db::Postgres;
use bake_e2e::Aws;
use bake_e2e::{Emulator, ImdsState};
use nix::sys::signal::Signal;

/// The environment (iam.yaml's `EnvName`) and its group, as fleet.yaml names it: the names the
/// instance role's policies are scoped to.
const ENV: &str = "booted";
const GROUP: &str = "bake-booted";
const LAUNCH_HOOK: &str = "launch";
const TERMINATE_HOOK: &str = "drain";
const APP_PORT: u16 = 3000;
const SECRETS_PATH: &str = "/bake/booted/app";
const LOG_GROUP: &str = "/bake/booted/app";
/// `WatchdogSec=` of systemd/bake-agent.service.
const WATCHDOG: Duration = Duration::from_secs(30);
/// How late after WatchdogSec the kill may be seen: systemd's reaction and this test's 100 ms
/// polling on a loaded 2-core machine (measured: 0.0–0.15 s).
const WATCHDOG_SLACK: Duration = Duration::from_secs(2);
/// `RestartSec=` of systemd/bake-agent.service.
const RESTART_SEC: Duration = Duration::from_secs(2);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` every 100 ms until it gives a value; after `timeout`, fails with what the instance
/// says about itself (failed units, the agent's journal).
fn wait_for<T>(
    inst: &Instance,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({timeout:?}) waiting for {what}\n{}",
            diagnostics(inst)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn diagnostics(inst: &Instance) -> String {
    format!(
        "failed units and their last lines:\n{}\nbake-agent.service:\n{}\njournal of bake-agent.service (last 60 lines):\n{}",
        inst.sh(
            "for u in $(systemctl --failed --plain --no-legend | cut -d' ' -f1); do \
             echo \"== $u\"; journalctl -u \"$u\" -n 10 -o cat --no-pager; done"
        ),
        inst.sh("systemctl status --no-pager -n 0 bake-agent.service"),
        inst.sh("journalctl -u bake-agent.service --no-pager -n 60 -o cat"),
    )
}

/// The image the tests boot: baked by `bake build` with the local target (once per run; a
/// fresh emulator only gets a new AMI record for it).
fn image(emu: &Emulator) -> String {
    let t = Instant::now();
    let ami = boot::image::bake_local_image(emu).expect("bake build of the local image");
    eprintln!("bake build (local image): {} ms", t.elapsed().as_millis());
    ami
}

/// A group of one instance on `ami`, launched with `instance_profile`, with a launch hook whose
/// default is ABANDON (only the agent's CONTINUE brings the instance InService) and a terminate
/// hook. Returns its instance.
async fn group(aws: &Aws, ami: &str, instance_profile: &str) -> String {
    aws.ec2
        .create_launch_template()
        .launch_template_name(format!("{GROUP}-lt"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .iam_instance_profile(
                    aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .arn(instance_profile)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
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
        .max_size(2)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("CreateAutoScalingGroup");
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
            .auto_scaling_group_name(GROUP)
            .lifecycle_hook_name(hook)
            .lifecycle_transition(transition)
            .default_result(default)
            .heartbeat_timeout(3600)
            .send()
            .await
            .expect("PutLifecycleHook");
    }
    aws.asg
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(1)
        .send()
        .await
        .expect("SetDesiredCapacity");
    for _ in 0..100 {
        if let Some((id, _)) = lifecycle(aws).await.into_iter().next() {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the group launched no instance");
}

/// (instance, lifecycle state) of the group's instances.
async fn lifecycle(aws: &Aws) -> BTreeMap<String, String> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    out.auto_scaling_groups()
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
        .collect()
}

/// The fleet's userdata, shaped as `cloudformation/fleet.yaml` renders it.
fn userdata() -> String {
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
APP_VERSION = "booted"

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
interval = "200ms"
launch_hook = "{LAUNCH_HOOK}"

[lifecycle]
terminate_hook = "{TERMINATE_HOOK}"
poll_interval = "1s"
spot = false

[lease]
prefix = "/bake/{ENV}/leases"

[metrics]
publish_interval = "10s"

[logs]
retention_days = 7
poll_interval = "250ms"

[logs.app]
log_group = "{LOG_GROUP}"
"#
    )
}

/// `METHOD path` to the instance's app port over the fleet network: (status, body).
fn http(inst: &Instance, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((inst.addr(), APP_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
}

/// Processes of the instance running the sample app.
fn apps(inst: &Instance) -> Vec<boot::Proc> {
    inst.processes()
        .into_iter()
        .filter(|p| p.cmdline.contains("/opt/app/server.js"))
        .collect()
}

/// The app runs exactly once in the whole instance, as a child of the agent's main process, in
/// the agent's cgroup. Returns (agent, app).
fn supervised_once(inst: &Instance) -> (boot::Proc, boot::Proc) {
    let agent = inst
        .main_pid("bake-agent.service")
        .expect("bake-agent.service has a main process");
    let apps = apps(inst);
    assert_eq!(
        apps.len(),
        1,
        "exactly one app process in the instance: {apps:#?}"
    );
    let app = apps.into_iter().next().unwrap();
    assert_eq!(
        app.host_ppid, agent.host_pid,
        "the app's parent is the agent: {app:?} {agent:?}"
    );
    assert!(
        app.cgroup.contains("bake-agent.service"),
        "the app is in the agent's cgroup: {app:?}"
    );
    (agent, app)
}

fn active(inst: &Instance, unit: &str) -> bool {
    inst.show(unit, &["ActiveState", "SubState"])
        .is_ok_and(|m| m["ActiveState"] == "active" && m["SubState"] == "running")
}

/// From inside the instance: can a TCP connection to `addr` be made within 3 s?
fn connects(inst: &Instance, addr: &str, port: u16) -> bool {
    inst.exec(&[
        "timeout",
        "3",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/{port}"),
    ])
    .is_ok_and(|o| o.status.success())
}

/// The host's first global IPv4 address outside the fleet's /24 (its real interface).
fn host_global_addr() -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let a = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
        let a = a.split('/').next()?;
        (!a.starts_with("10.231.")).then(|| a.to_owned())
    })
}

async fn log_events(aws: &Aws, stream: &str) -> Vec<String> {
    match aws
        .logs
        .get_log_events()
        .log_group_name(LOG_GROUP)
        .log_stream_name(stream)
        .start_from_head(true)
        .send()
        .await
    {
        Ok(out) => out
            .events()
            .iter()
            .filter_map(|e| e.message().map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The emulator with IAM enforced after the environment's network, data and iam stacks, the
/// environment's database (RDS's stand-in), and the app's connection string to it in SSM.
fn enforced_emulator(
    rt: &tokio::runtime::Runtime,
) -> (Emulator, bake_e2e::iam::Identities, Aws, Postgres) {
    let emu = Emulator::start_with_scale(None).expect("emulator starts");
    // IAM enforced: the instance runs as iam.yaml's instance role, whose credentials its
    // metadata serves as EC2's does.
    let ids = rt
        .block_on(bake_e2e::iam::deploy_and_enforce(&emu, ENV))
        .unwrap();
    let aws = rt.block_on(emu.aws());
    let db = Postgres::start().expect("the database starts");
    db.migrate_app().expect("the app's migrations apply");
    rt.block_on(
        aws.ssm
            .put_parameter()
            .name(format!("{SECRETS_PATH}/db/connection-string"))
            .value(db.connection_string(boot::DB_HOST, boot::DB_PORT))
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send(),
    )
    .expect("PutParameter");
    (emu, ids, aws, db)
}

/// The group's one instance, launched from the local image with the instance role, booted with
/// `shared` as its EFS, reaching `db` as `boot::DB_HOST`. `credentials_for`: say that the first role credentials expire that long
/// after boot (EC2 says so of credentials it is about to rotate). Returns the instance id and
/// the instance.
fn launch(
    emu: &Emulator,
    rt: &tokio::runtime::Runtime,
    aws: &Aws,
    ids: &bake_e2e::iam::Identities,
    credentials_for: Option<Duration>,
    shared: &std::path::Path,
    db: &Postgres,
) -> (String, Instance) {
    let ami = image(emu);
    let id = rt.block_on(group(aws, &ami, &ids.instance_profile_arn));
    assert_eq!(rt.block_on(lifecycle(aws))[&id], "Pending:Wait");

    // The image is found from the instance's AMI alone.
    let image_id = rt.block_on(boot::instance_image(aws, &id)).unwrap();
    assert_eq!(image_id, ami);
    let root = rt.block_on(boot::image_root(aws, &image_id)).unwrap();
    let mut state = ImdsState::new(&id);
    state.ami_id = Some(image_id);
    state.user_data = Some(userdata());
    state.tags = Some(BTreeMap::from([(
        "aws:autoscaling:groupName".to_owned(),
        GROUP.to_owned(),
    )]));
    let credentials = emu
        .role_credentials(&ids.instance_profile_arn, &id)
        .expect("EC2's credentials for the instance role");
    state.role_credentials = Some(match credentials_for {
        Some(d) => credentials.expiring_in(d),
        None => credentials,
    });
    let mut spec = BootSpec::new(root, state, emu.url()).unwrap();
    spec.shared_dir = Some(shared.to_path_buf());
    spec.database = Some(db.addr());
    (id, Instance::boot(spec).expect("the instance boots"))
}

/// Waits for the agent's READY (active/running), then for the launch hook's CONTINUE
/// (InService); returns when each was seen, since the container started.
fn ready_and_in_service(
    inst: &Instance,
    rt: &tokio::runtime::Runtime,
    aws: &Aws,
    id: &str,
) -> (Duration, Duration) {
    wait_for(
        inst,
        "bake-agent.service active/running (READY=1)",
        Duration::from_secs(90),
        || active(inst, "bake-agent.service").then_some(()),
    );
    let ready_at = inst
        .show("bake-agent.service", &["ActiveEnterTimestampMonotonic"])
        .ok()
        .and_then(|m| m["ActiveEnterTimestampMonotonic"].parse::<u64>().ok())
        .map(|us| inst.since_start(Duration::from_micros(us)))
        .unwrap();
    let continued = wait_for(
        inst,
        "the launch hook's CONTINUE (InService)",
        Duration::from_secs(60),
        || {
            (rt.block_on(lifecycle(aws)).get(id).map(String::as_str) == Some("InService"))
                .then(|| inst.started().elapsed())
        },
    );
    (ready_at, continued)
}

/// Powers the instance off within [`boot::STOP_GRACE`] and checks that nothing of it is left on
/// the host (its veth, its PID 1) and that the host's forwarding is `forward_before`.
fn power_off_and_gone(inst: Instance, forward_before: &str) {
    let veth = inst.veth();
    let leader = inst.leader();
    let mut inst = inst;
    let t = Instant::now();
    assert!(
        inst.power_off(boot::STOP_GRACE),
        "the instance powers off within {:?}",
        boot::STOP_GRACE
    );
    eprintln!("power off: {} ms", t.elapsed().as_millis());
    drop(inst);
    assert!(
        !std::path::Path::new("/sys/class/net").join(&veth).exists(),
        "{veth} is gone with the instance"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{leader}")).exists(),
        "the instance's PID 1 is gone"
    );
    assert_eq!(
        ip_forward(),
        forward_before,
        "the host's forwarding is untouched"
    );
}

fn shared_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bake-efs-")
        .tempdir()
        .unwrap()
}

#[test]
fn test_booted_instance_serves_supervises_and_is_watched() {
    let rt = rt();
    let (emu, ids, aws, db) = enforced_emulator(&rt);
    let forward_before = ip_forward();
    let ruleset_before = host_ruleset();
    let shared = shared_dir();
    let (id, inst) = launch(&emu, &rt, &aws, &ids, None, shared.path(), &db);

    // a. boot → systemd running → agent READY (Type=notify) → app ready → CONTINUE.
    let t = inst.times().clone();
    eprintln!(
        "{}: systemd {} ({}), failed units: [{}]",
        inst.machine(),
        inst.state(),
        t.systemd.as_millis(),
        inst.failed_units()
    );
    let unit = inst
        .show(
            "bake-agent.service",
            &[
                "Type",
                "NotifyAccess",
                "WatchdogUSec",
                "FragmentPath",
                "DropInPaths",
            ],
        )
        .unwrap();
    assert_eq!(unit["Type"], "notify", "{unit:?}");
    assert_eq!(
        unit["FragmentPath"],
        "/etc/systemd/system/bake-agent.service"
    );
    assert_eq!(
        unit["DropInPaths"],
        format!(
            "/etc/systemd/system/bake-agent.service.d/{}",
            boot::DROPIN_NAME
        ),
        "only the test drop-in is added to the shipped unit"
    );
    let (ready_at, continued) = ready_and_in_service(&inst, &rt, &aws, &id);
    let journal = inst.journal("bake-agent.service");
    let app_ready = inst
        .journal_time("bake-agent.service", "app is ready")
        .unwrap_or_else(|| panic!("no 'app is ready' in the agent's journal:\n{journal}"));
    eprintln!(
        "boot times (ms): container {} systemd {} agent-ready {} app-ready {} continue-seen {}",
        t.container.as_millis(),
        t.systemd.as_millis(),
        ready_at.as_millis(),
        app_ready.as_millis(),
        continued.as_millis()
    );
    assert_eq!(http(&inst, "GET", "/health", b"").unwrap().0, 200);
    let (agent, app) = supervised_once(&inst);
    assert!(
        journal.contains("step=\"mount\"") && journal.contains("already=true"),
        "the agent found the EFS stand-in mounted and left it:\n{journal}"
    );

    sandbox_as_shipped(&inst, &app);
    network_is_fenced(&inst, &emu, &forward_before);
    firewall_is_the_instances_own(&inst, &ruleset_before);
    uploads_and_logs(&inst, &rt, &aws, &id, shared.path(), &db);
    timers_do_their_work(&inst, &rt, &aws, shared.path(), &db);
    let (agent, app) = app_crash_is_restarted(&inst, agent, app);
    let (agent, _) = killed_agent_is_restarted(&inst, agent, app);
    frozen_agent_is_restarted_by_the_watchdog(&inst, agent);

    // Powered off cleanly, then nothing of it is left on the host.
    power_off_and_gone(inst, &forward_before);
}

/// e'. On an instance of its own (the long proof above is not held up by the wait for an
/// expiry): the instance role's credentials are refreshed through the metadata.
#[test]
fn test_booted_instance_refreshes_its_role_credentials_from_the_metadata() {
    let rt = rt();
    let (emu, ids, aws, db) = enforced_emulator(&rt);
    let forward_before = ip_forward();
    let shared = shared_dir();
    // Said to expire soon (the emulator accepts them for an hour): the agent's SDK must fetch
    // the next ones from the metadata by itself.
    let (id, inst) = launch(
        &emu,
        &rt,
        &aws,
        &ids,
        Some(FIRST_CREDENTIALS_FOR),
        shared.path(),
        &db,
    );
    ready_and_in_service(&inst, &rt, &aws, &id);
    let (agent, _) = supervised_once(&inst);
    credentials_are_refreshed(
        &inst,
        &emu,
        &ids.instance_profile_arn,
        &id,
        &rt,
        &aws,
        &agent,
    );
    power_off_and_gone(inst, &forward_before);
}

/// How long the instance's first role credentials are said to be valid, from their issue just
/// before the boot: long enough for a slow boot to fetch them before then (a fetch after it
/// would make the SDK extend them instead; measured boots to READY: 5-25 s).
const FIRST_CREDENTIALS_FOR: Duration = Duration::from_secs(40);

/// e'. The instance role's credentials are refreshed through the metadata, as on EC2: the first
/// ones were said to expire [`FIRST_CREDENTIALS_FOR`] after the instance was set up; the metadata
/// now serves a new session (EC2 serves the next credentials before the current ones expire),
/// and the agent's own SDK fetches it when the first are about to expire (its identity cache
/// reloads at the first call within 5–10 s of the expiry or after it, before signing that
/// call), without restarting, without using stale ones ("credential expiration extension"), and
/// its next PutMetricData, signed with the new session, reaches CloudWatch. (The emulator does not expire sessions: that the old one would be refused
/// after its expiry is not shown.)
fn credentials_are_refreshed(
    inst: &Instance,
    emu: &Emulator,
    instance_profile: &str,
    id: &str,
    rt: &tokio::runtime::Runtime,
    aws: &Aws,
    agent: &boot::Proc,
) {
    let first = inst.imds().credentials_served();
    assert!(
        !first.is_empty(),
        "the agent got its credentials from the metadata"
    );
    let next = emu
        .role_credentials(instance_profile, id)
        .expect("EC2's next credentials for the instance role");
    assert!(
        first.iter().all(|(k, _)| *k != next.access_key_id),
        "a new session"
    );
    let key = next.access_key_id.clone();
    let said = inst.imds().state().role_credentials.unwrap().expiration;
    let expires = std::time::SystemTime::try_from(
        aws_smithy_types::DateTime::from_str(&said, aws_smithy_types::date_time::Format::DateTime)
            .unwrap(),
    )
    .unwrap();
    assert!(
        first[0].1 < expires,
        "the agent fetched its first credentials before they expired (else the SDK extends them)"
    );
    inst.imds().update(|s| s.role_credentials = Some(next));
    let t = Instant::now();
    let fetched = wait_for(
        inst,
        "the agent to fetch the next credentials from the metadata",
        FIRST_CREDENTIALS_FOR + Duration::from_secs(45),
        || {
            inst.imds()
                .credentials_served()
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, at)| *at)
        },
    );
    // Driven by the expiry: the SDK's identity cache reloads at the first call within 5–10 s of
    // it (its buffer, jittered), or after it, always before signing that call.
    let early = expires
        .duration_since(fetched)
        .map(|d| d.as_secs_f64())
        .unwrap_or_else(|e| -e.duration().as_secs_f64());
    assert!(
        early <= 11.0,
        "fetched {early:.1} s before the first expired: not the expiry's refresh"
    );
    eprintln!(
        "credentials refreshed from the metadata {} ms after the swap, {early:.1} s before the first expired",
        t.elapsed().as_millis()
    );
    assert_eq!(
        inst.main_pid("bake-agent.service").map(|p| p.host_pid),
        Some(agent.host_pid),
        "the agent refreshed them itself, without a restart"
    );
    // A datapoint sampled after the refresh was published after it: with the new session.
    let since = aws_smithy_types::DateTime::from(fetched);
    wait_for(
        inst,
        "a CPUUtilization datapoint sampled after the refresh",
        Duration::from_secs(40),
        || {
            let out = rt
                .block_on(
                    aws.cw
                        .get_metric_statistics()
                        .namespace("Bake/Agent")
                        .metric_name("CPUUtilization")
                        .dimensions(
                            aws_sdk_cloudwatch::types::Dimension::builder()
                                .name("AutoScalingGroupName")
                                .value(GROUP)
                                .build(),
                        )
                        .dimensions(
                            aws_sdk_cloudwatch::types::Dimension::builder()
                                .name("InstanceId")
                                .value(id)
                                .build(),
                        )
                        .start_time(since)
                        .end_time(aws_smithy_types::DateTime::from(
                            std::time::SystemTime::now() + Duration::from_secs(60),
                        ))
                        .period(1)
                        .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
                        .send(),
                )
                .ok()?;
            (!out.datapoints().is_empty()).then_some(())
        },
    );
    eprintln!(
        "a datapoint sampled after the refresh reached CloudWatch {} ms after the swap",
        t.elapsed().as_millis()
    );
    let journal = inst.journal("bake-agent.service");
    assert!(
        !journal.contains("credential expiration extension"),
        "the agent never used stale credentials:\n{journal}"
    );
}

/// f (the part that needs a booted instance): the unit's sandbox as systemd applies it. The app
/// starts with no capabilities at all and no_new_privs; `systemd-analyze security` in the
/// instance rates the agent's unit at most 3.5.
fn sandbox_as_shipped(inst: &Instance, app: &boot::Proc) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.host_pid)).unwrap();
    for (field, want) in [
        ("CapBnd:", "0000000000000000"),
        ("CapEff:", "0000000000000000"),
        ("CapInh:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
    ] {
        let got = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(str::trim);
        assert_eq!(got, Some(want), "the app's {field}\n{status}");
    }
    let out = inst.sh("systemd-analyze security --no-pager bake-agent.service | tail -n 1");
    let exposure: f64 = out
        .split("exposure level for bake-agent.service:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {out:?}"));
    eprintln!("systemd-analyze security bake-agent.service in the instance: {exposure}");
    assert!(exposure <= 3.5, "exposure {exposure} > 3.5: {out}");
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

/// The host's own nftables ruleset.
fn host_ruleset() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft (tools/setup installs nftables)");
    assert!(out.status.success(), "nft list ruleset on the host");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// From inside the instance, only its own /30 (the relay at the host end) and its own loopback
/// (the metadata service) answer: no default route, the host's real address, a public address
/// and the host's loopback (where the emulator listens) are out of reach.
fn network_is_fenced(inst: &Instance, emu: &Emulator, forward_before: &str) {
    let relay = inst.relay().addr();
    assert!(
        connects(inst, &relay.ip().to_string(), relay.port()),
        "the relay at {relay} is reachable"
    );
    assert!(
        connects(inst, "169.254.169.254", 80),
        "IMDS on the instance's loopback"
    );
    let hosts = inst.sh(&format!("getent hosts {}", boot::DB_HOST));
    assert_eq!(
        hosts.split_whitespace().next(),
        Some(relay.ip().to_string().as_str()),
        "{} is the host end of the veth: {hosts}",
        boot::DB_HOST
    );
    assert!(
        connects(inst, boot::DB_HOST, boot::DB_PORT),
        "the database's relay at {}:{} is reachable",
        boot::DB_HOST,
        boot::DB_PORT
    );
    let routes = inst.sh("cat /proc/net/route");
    assert!(
        routes
            .lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(1) != Some("00000000")),
        "no default route in the instance:\n{routes}"
    );
    let emu_port: u16 = emu.url().rsplit(':').next().unwrap().parse().unwrap();
    let host = host_global_addr().expect("the host has an address on a real interface");
    for (addr, port) in [
        (host.as_str(), emu_port),
        (host.as_str(), 22),
        ("1.1.1.1", 443),
        ("127.0.0.1", emu_port),
        ("127.0.0.53", 53),
        ("10.231.1.1", 80),
    ] {
        assert!(
            !connects(inst, addr, port),
            "{addr}:{port} must be out of reach of the instance"
        );
    }
    let v6 = inst.sh("cat /proc/net/if_inet6");
    assert!(
        !v6.lines().any(|l| l.trim_end().ends_with("host0")),
        "no IPv6 address on host0 (no link-local way to the host):\n{v6}"
    );
    assert_eq!(
        ip_forward(),
        forward_before,
        "the host's forwarding is untouched"
    );
}

/// The image's nftables ruleset is loaded in the instance's namespace and governs it alone: from
/// the host, the app's port (opened by `bake-agent firewall`) answers, another port's SYN is
/// dropped (no RST: a timeout), and the host's own ruleset is unchanged.
fn firewall_is_the_instances_own(inst: &Instance, ruleset_before: &str) {
    let inside = inst.sh("nft list set inet filter app_ports");
    assert!(
        inside.contains(&format!("elements = {{ {APP_PORT} }}")),
        "the app's port is in the instance's set app_ports:\n{inside}"
    );
    let closed = SocketAddr::from((inst.addr(), 22));
    let e = TcpStream::connect_timeout(&closed, Duration::from_secs(1))
        .expect_err("port 22 of the instance is closed");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::TimedOut,
        "dropped by the instance's policy, not refused: {e}"
    );
    assert_eq!(
        host_ruleset(),
        ruleset_before,
        "the host's nftables ruleset is untouched"
    );
}

/// e. An upload to the app lands in the shared directory on the host and its row in the
/// database (the app reached it with the connection string the agent delivered from SSM); the
/// app's output reaches CloudWatch Logs in the emulator.
fn uploads_and_logs(
    inst: &Instance,
    rt: &tokio::runtime::Runtime,
    aws: &Aws,
    id: &str,
    shared: &std::path::Path,
    db: &Postgres,
) {
    let (code, body) = http(inst, "PUT", "/upload/booted.txt", b"from a booted instance").unwrap();
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        db.query("SELECT name, bytes FROM uploads").unwrap(),
        "booted.txt|22",
        "the upload's row is in the database"
    );
    let stored = shared.join("uploads/booted.txt");
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        "from a booted instance"
    );
    let meta = std::fs::metadata(shared.join("uploads")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        10_000,
        "the uploads directory belongs to the app user (ExecStartPost)"
    );
    let stream = format!("{id}/stdout");
    let events = wait_for(
        inst,
        "the app's start line in CloudWatch Logs",
        Duration::from_secs(30),
        || {
            let ev = rt.block_on(log_events(aws, &stream));
            ev.iter()
                .any(|m| m.contains("listening on 0.0.0.0:3000"))
                .then_some(ev)
        },
    );
    assert!(
        events.iter().any(|m| m.contains("db configured: yes")),
        "the SSM secret reached the app: {events:?}"
    );
}

/// d. Both timers are installed and active; starting the reaper removes expired uploads from
/// the shared directory (and keeps fresh ones), and the app then answers 410 for a reaped
/// upload it had recorded and drops its row; starting the weekly job takes this week's
/// fleet-wide lease in SSM and runs the app's task (examples/app/bin/user-stats), once: a second
/// start finds the week done.
fn timers_do_their_work(
    inst: &Instance,
    rt: &tokio::runtime::Runtime,
    aws: &Aws,
    shared: &std::path::Path,
    db: &Postgres,
) {
    let timers = inst.sh("systemctl list-timers --all --no-pager");
    for t in ["bake-user-stats.timer", "bake-agent-reap.timer"] {
        assert!(timers.contains(t), "{t} in list-timers:\n{timers}");
        assert_eq!(
            inst.show(t, &["ActiveState"]).unwrap()["ActiveState"],
            "active",
            "{t} is active"
        );
    }
    let old = shared.join("uploads/expired.bin");
    std::fs::write(&old, b"old").unwrap();
    std::os::unix::fs::chown(&old, Some(10_000), Some(10_000)).unwrap();
    // One the app recorded: uploaded through it, then aged past the retention.
    let (code, body) = http(inst, "PUT", "/upload/recorded.bin", b"aged").unwrap();
    assert_eq!(code, 201, "{body}");
    let recorded = shared.join("uploads/recorded.bin");
    let fortnight = std::time::SystemTime::now() - Duration::from_secs(14 * 86_400);
    for f in [&old, &recorded] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(fortnight)
            .unwrap();
    }
    let out = inst.sh("systemctl start bake-agent-reap.service; echo rc=$?");
    let reap = inst.journal("bake-agent-reap.service");
    assert!(out.ends_with("rc=0"), "{out}\n{reap}");
    assert!(!old.exists(), "the expired upload is reaped:\n{reap}");
    assert!(!recorded.exists(), "the expired upload is reaped:\n{reap}");
    assert_eq!(
        db.query("SELECT count(*) FROM uploads WHERE name = 'recorded.bin'")
            .unwrap(),
        "1",
        "recorded until the app finds it gone"
    );
    let (code, body) = http(inst, "GET", "/download/recorded.bin", b"").unwrap();
    assert_eq!(code, 410, "a reaped upload is gone: {body}");
    assert_eq!(
        db.query("SELECT count(*) FROM uploads WHERE name = 'recorded.bin'")
            .unwrap(),
        "0",
        "and its row with it"
    );
    assert!(
        shared.join("uploads/booted.txt").exists(),
        "a fresh upload stays:\n{reap}"
    );

    let out = inst.sh("systemctl start bake-user-stats.service; echo rc=$?");
    let job = inst.journal("bake-user-stats.service");
    eprintln!("bake-user-stats.service: {out}\n{job}");
    let lease = format!("/bake/{ENV}/leases/{GROUP}/user-stats");
    let names = rt.block_on(aws.parameter_names(&lease)).unwrap();
    assert!(
        names.iter().any(|n| n.ends_with("/attempt-1")),
        "the job took the week's lease under {lease}: {names:?}\n{job}"
    );
    // The app's task ran, as the app user, and reported on the shared directory.
    assert!(out.ends_with("rc=0"), "{out}\n{job}");
    assert!(
        job.contains("\"report\":\"user-stats\"") && job.contains("\"files\":1"),
        "the task's report (one fresh upload left):\n{job}"
    );
    assert!(
        job.contains("\"db\":{\"users\":0,\"uploads\":1,\"bytes\":22,"),
        "the task's report from the database (the one recorded upload left):\n{job}"
    );
    // Once per fleet and week: a second start finds the week done and does not run it again.
    let again = inst.sh("systemctl start bake-user-stats.service; echo rc=$?");
    let job2 = inst.journal("bake-user-stats.service");
    assert!(again.ends_with("rc=0"), "{again}\n{job2}");
    assert!(job2.contains("already succeeded"), "{job2}");
    assert_eq!(
        job2.matches("\"report\":\"user-stats\"").count(),
        1,
        "the task ran once:\n{job2}"
    );
}

/// b1. The app crashes → the agent restarts it, the agent itself keeps running.
fn app_crash_is_restarted(
    inst: &Instance,
    agent: boot::Proc,
    app: boot::Proc,
) -> (boot::Proc, boot::Proc) {
    let _ = http(inst, "GET", "/crash", b"");
    let (agent2, app2) = wait_for(inst, "a new app process", Duration::from_secs(20), || {
        let apps = apps(inst);
        (apps.len() == 1 && apps[0].host_pid != app.host_pid).then(|| supervised_once(inst))
    });
    assert_eq!(
        agent2.host_pid, agent.host_pid,
        "the agent itself was not restarted"
    );
    wait_for(
        inst,
        "the restarted app to serve",
        Duration::from_secs(20),
        || (http(inst, "GET", "/health", b"").ok()?.0 == 200).then_some(()),
    );
    let journal = inst.journal("bake-agent.service");
    assert!(journal.contains("app exited; restart"), "{journal}");
    (agent2, app2)
}

fn n_restarts(inst: &Instance) -> u32 {
    inst.show("bake-agent.service", &["NRestarts"]).unwrap()["NRestarts"]
        .parse()
        .unwrap()
}

/// b2. The agent is SIGKILLed → systemd restarts it (Restart=always, RestartSec=2s); its app
/// goes with it and the new agent's app is the only one (no orphan, no double).
fn killed_agent_is_restarted(
    inst: &Instance,
    agent: boot::Proc,
    app: boot::Proc,
) -> (boot::Proc, boot::Proc) {
    let before = n_restarts(inst);
    let t = Instant::now();
    inst.signal(&agent, Signal::SIGKILL).unwrap();
    // systemd restarts the unit once every process of its cgroup is gone: seen on a loaded
    // CI machine, the app's process took more than 30 s to be reaped after systemd's SIGKILL
    // (the unit's TimeoutStopSec allows 3 minutes), hence the bound.
    let new_agent = wait_for(
        inst,
        "systemd to restart the agent",
        Duration::from_secs(90),
        || {
            let a = inst.main_pid("bake-agent.service")?;
            (a.host_pid != agent.host_pid && active(inst, "bake-agent.service")).then_some(a)
        },
    );
    let restarted = t.elapsed();
    eprintln!("SIGKILL → agent READY again: {} ms", restarted.as_millis());
    assert!(
        restarted >= RESTART_SEC,
        "RestartSec= is honoured: {restarted:?}"
    );
    assert_eq!(n_restarts(inst), before + 1);
    let (agent2, app2) = wait_for(inst, "the new agent's app", Duration::from_secs(20), || {
        let apps = apps(inst);
        (apps.len() == 1 && apps[0].host_ppid == new_agent.host_pid).then(|| supervised_once(inst))
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{}", app.host_pid)).exists(),
        "the old app is gone"
    );
    wait_for(
        inst,
        "the app to serve again",
        Duration::from_secs(20),
        || (http(inst, "GET", "/health", b"").ok()?.0 == 200).then_some(()),
    );
    (agent2, app2)
}

/// c. The agent is frozen (SIGSTOP) → it stops sending WATCHDOG=1 and systemd kills it within
/// WatchdogSec of its last ping, then restarts it.
fn frozen_agent_is_restarted_by_the_watchdog(inst: &Instance, agent: boot::Proc) {
    let t = Instant::now();
    inst.signal(&agent, Signal::SIGSTOP).unwrap();
    wait_for(
        inst,
        "the watchdog to end the frozen agent",
        WATCHDOG + Duration::from_secs(10),
        || {
            (!std::path::Path::new(&format!("/proc/{}", agent.host_pid)).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", agent.host_pid))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        },
    );
    let killed = t.elapsed();
    let new_agent = wait_for(
        inst,
        "the agent back after the watchdog",
        Duration::from_secs(30),
        || {
            let a = inst.main_pid("bake-agent.service")?;
            (a.host_pid != agent.host_pid && active(inst, "bake-agent.service")).then_some(a)
        },
    );
    let back = t.elapsed();
    eprintln!(
        "SIGSTOP → killed by the watchdog: {} ms, → READY again: {} ms",
        killed.as_millis(),
        back.as_millis()
    );
    assert!(
        killed <= WATCHDOG + WATCHDOG_SLACK,
        "the watchdog fires within WatchdogSec={WATCHDOG:?} of the freeze: {killed:?}"
    );
    let journal = inst.journal("bake-agent.service");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    let (a, _) = wait_for(
        inst,
        "one app under the new agent",
        Duration::from_secs(20),
        || {
            let apps = apps(inst);
            (apps.len() == 1 && apps[0].host_ppid == new_agent.host_pid)
                .then(|| supervised_once(inst))
        },
    );
    assert_eq!(a.host_pid, new_agent.host_pid);
}

/// The minimum hardening index tests/infra/harden-audit requires of the image in a chroot.
const LYNIS_MIN: u32 = 80;

/// g. Lynis (the host's, bound read-only into the instance) audits a booted instance: the checks
/// a chroot cannot run (services, boot, kernel, accounting) run here. Its hardening index is
/// recorded and is at least the chroot audit's minimum.
#[test]
fn test_lynis_in_a_booted_instance() {
    let emu = Emulator::start_with_scale(None).expect("emulator starts");
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let ami = image(&emu);
    let root = rt.block_on(boot::image_root(&aws, &ami)).unwrap();
    let lynis = tempfile::Builder::new()
        .prefix("bake-lynis-")
        .tempdir()
        .unwrap();
    for (from, to) in [
        ("/usr/share/lynis/.", "."),
        ("/etc/lynis/.", "."),
        ("/usr/sbin/lynis", "lynis"),
    ] {
        let st = std::process::Command::new("cp")
            .args(["-a", from])
            .arg(lynis.path().join(to))
            .status()
            .unwrap();
        assert!(
            st.success(),
            "copying {from} (Lynis is installed by tools/setup)"
        );
    }
    // No userdata: the agent fails closed (no app to run), which Lynis does not look at.
    let mut spec = BootSpec::new(root, ImdsState::new("i-0lynis"), emu.url()).unwrap();
    spec.binds_ro
        .push((lynis.path().to_path_buf(), "/run/lynis-audit".into()));
    let inst = Instance::boot(spec).expect("the instance boots");
    let t = Instant::now();
    // Lynis takes 20-40 s here, more on a loaded machine: five minutes before it counts as hung.
    let out = inst.sh_for(
        "cd /run/lynis-audit && sh ./lynis audit system --quick --quiet --no-colors \
         --logfile /var/tmp/lynis.log --report-file /var/tmp/lynis-report.dat >/dev/null 2>&1; \
         cat /var/tmp/lynis-report.dat",
        Duration::from_secs(300),
    );
    let index: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("hardening_index="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hardening index in Lynis's report:\n{out}"));
    let field = |k: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(k))
            .flat_map(|v| v.split('|'))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let executed = field("tests_executed=");
    let skipped = field("tests_skipped=");
    eprintln!(
        "lynis in a booted instance: hardening index {index} ({} ms; {} tests run, {} skipped); \
         warnings: {:?}; skipped: {skipped:?}",
        t.elapsed().as_millis(),
        executed.len(),
        skipped.len(),
        field("warning[]="),
    );
    // What a chroot cannot answer: the service manager, the running kernel, accounting.
    for prefix in ["BOOT-", "KRNL-", "ACCT-"] {
        assert!(
            executed.iter().any(|t| t.starts_with(prefix)),
            "Lynis ran no {prefix}* test: {executed:?}"
        );
    }
    assert!(
        index >= LYNIS_MIN,
        "hardening index {index} < {LYNIS_MIN} in a booted instance"
    );
}

/// An instance's image is found only through its AMI's `bake:local-image` tag, and a tag that
/// does not name a bootable root file system is an error naming the image and the tag.
#[test]
fn test_image_root_needs_the_local_image_tag() {
    let emu = Emulator::start().expect("emulator starts");
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let register = |tag: Option<&str>| -> String {
        rt.block_on(async {
            let ami = aws
                .ec2
                .register_image()
                .name(format!("img-{}", tag.unwrap_or("none").replace('/', "_")))
                .root_device_name("/dev/xvda")
                .send()
                .await
                .unwrap()
                .image_id()
                .unwrap()
                .to_owned();
            if let Some(v) = tag {
                aws.ec2
                    .create_tags()
                    .resources(&ami)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(boot::LOCAL_IMAGE_TAG)
                            .value(v)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            ami
        })
    };
    let empty = tempfile::tempdir().unwrap();
    let empty_path = empty.path().display().to_string();
    for (tag, want) in [
        (None, "has no bake:local-image tag"),
        (Some("relative/rootfs"), "is not an absolute path"),
        (
            Some(empty_path.as_str()),
            "holds no bootable root file system",
        ),
    ] {
        let ami = register(tag);
        let e = rt
            .block_on(boot::image_root(&aws, &ami))
            .expect_err("not a bootable image");
        let msg = format!("{e:#}");
        assert!(msg.contains(&ami) && msg.contains(want), "{msg}");
    }
    let e = rt
        .block_on(boot::image_root(&aws, "ami-00000000000000000"))
        .expect_err("no such image");
    assert!(format!("{e:#}").contains("ami-00000000000000000"), "{e:#}");
}
