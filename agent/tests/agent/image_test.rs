//! Image-test instances (`bake test-image`: tag `bake:image-test`, launched outside the group
//! with the fleet's userdata) and `bake-agent check --live [--report]`.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;

use crate::util::{
    agent, free_port, group, imds, rt, sample_app, state_of, wait_for, Running, TestDir,
};

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TAG: &str = "bake:image-test";
const SECRET: &str = "s3cr3t-image-test-91c4";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An IMDS stand-in for `id` whose instance carries the image-test tag `parameter` (metadata
/// tags enabled) and the fleet's userdata `userdata`.
fn test_instance(id: &str, parameter: &str, userdata: &str) -> bake_e2e::Imds {
    let md = imds(id);
    md.update(|s| {
        s.tags = Some(BTreeMap::from([(TAG.to_owned(), parameter.to_owned())]));
        s.user_data = Some(userdata.to_owned());
        s.ami_id = Some("ami-0abc1234".to_owned());
    });
    md
}

/// The baked part: the sample app on `port` with an HTTP readiness probe.
fn baked_app(t: &TestDir, port: u16, extra: &str) -> std::path::PathBuf {
    t.config(&format!(
        "[app]\nuser = \"root\"\ncommand = [\"node\", \"{}\"]\nport = {port}\nstop_timeout = \"3s\"\n\
         [readiness]\nprobe = \"http://127.0.0.1:{port}/health\"\ninterval = \"100ms\"\n\
         [lifecycle]\npoll_interval = \"200ms\"\n{extra}",
        sample_app().display()
    ))
}

/// The agent's state file (next to the config), once it exists and says `readiness`.
fn wait_readiness(t: &TestDir, readiness: &str) -> serde_json::Value {
    wait_for(
        &format!("readiness {readiness} in the state file"),
        Duration::from_secs(30),
        || {
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(t.path("status.json")).ok()?).ok()?;
            (doc["readiness"] == readiness).then_some(doc)
        },
    )
}

#[test]
fn test_image_test_instance_joins_no_group_and_runs_no_job_or_reap() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    // The group's instance waits in Pending:Wait for its launch hook (DefaultResult ABANDON):
    // an agent that took the fleet's asg_name from the userdata would complete it (CONTINUE) and
    // the instance would go InService. The test instance gets that instance's id, so any
    // lifecycle call of the agent would reach it.
    let ids = rt.block_on(group(&aws, "bake-t", 1, &[(LAUNCHING, "ABANDON")]));
    let id = ids[0].clone();
    let t = TestDir::new();
    let port = free_port();
    let uploads = t.path("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let old = uploads.join("old.bin");
    std::fs::write(&old, "x").unwrap();
    let long_ago = nix::sys::time::TimeSpec::new(946_684_800, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &old,
        &long_ago,
        &long_ago,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let cfg = baked_app(
        &t,
        port,
        &format!(
            "[uploads]\ndir = \"{}\"\nmax_age = \"1d\"\n[lease]\nprefix = \"/imgt-lease\"\n",
            uploads.display()
        ),
    );
    // The fleet's userdata (cloudformation/fleet.yaml) names the group.
    let md = test_instance(
        &id,
        "/bake/t/image-tests/ami-0abc1234/20261203T071500Z",
        "[identity]\nasg_name = \"bake-t\"\n",
    );
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    let doc = wait_readiness(&t, "ready");
    // The launch hook would be completed right after readiness: give it time to (not) happen.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rt.block_on(state_of(&aws, "bake-t", &id)).unwrap().0,
        "Pending:Wait",
        "{}",
        a.stderr()
    );
    let err = a.stderr();
    assert!(
        err.contains("image-test instance: in no Auto Scaling group")
            && err.contains("/bake/t/image-tests/ami-0abc1234/20261203T071500Z"),
        "{err}"
    );
    assert!(!err.contains("launch hook"), "{err}");
    let doc = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(t.path("status.json")).unwrap(),
    )
    .unwrap_or(doc);
    assert!(doc["lifecycle"].is_null(), "{doc}");

    // `job` runs nothing and takes no lease; `reap` deletes nothing.
    let ran = t.path("ran");
    let o = agent(&cfg, Some(&emu), Some(&md))
        .args(["job", "user-stats", "--", "/bin/sh", "-c"])
        .arg(format!("touch {}", ran.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "job user-stats: image-test instance (tag {TAG} = /bake/t/image-tests/ami-0abc1234/20261203T071500Z): not running here"
        )),
        "{}",
        text(&o)
    );
    assert!(!ran.exists(), "the job's command ran");
    let leases = rt.block_on(
        aws.ssm
            .get_parameters_by_path()
            .path("/imgt-lease")
            .recursive(true)
            .send(),
    );
    assert!(leases.unwrap().parameters().is_empty(), "a lease was taken");
    let o = agent(&cfg, Some(&emu), Some(&md))
        .arg("reap")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("image-test instance: not reaping the fleet's uploads"),
        "{}",
        text(&o)
    );
    assert!(old.exists(), "reap removed an upload");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    // Still untouched once the agent is gone (no terminate-hook call either).
    assert_eq!(
        rt.block_on(state_of(&aws, "bake-t", &id)).unwrap().0,
        "Pending:Wait"
    );
}

#[test]
fn test_report_on_an_ordinary_instance_checks_nothing() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    // Secrets that do not exist and a readiness wait: a check would fail, a wait would take a
    // minute; neither may happen on an instance without the tag (metadata tags off here: 404).
    let cfg = t.config(&format!(
        "{}[secrets]\npath = \"/imgt-none/app\"\n",
        std::fs::read_to_string(baked_app(&t, 1, "")).unwrap()
    ));
    let md = imds("i-0ordinary");
    let start = Instant::now();
    let o = agent(&cfg, Some(&emu), Some(&md))
        .args(["check", "--live", "--wait", "60s", "--report"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "not an image-test instance (no bake:image-test tag): nothing to report\n"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let params = rt.block_on(aws.ssm.describe_parameters().send()).unwrap();
    assert!(params.parameters().is_empty(), "{params:?}");
}

#[test]
fn test_bad_image_test_tag_is_an_error_naming_it() {
    let t = TestDir::new();
    let cfg = t.config("[identity]\nstandalone = true\n");
    let md = test_instance("i-0badtag", "image tests/x", "");
    let o = agent(&cfg, None, Some(&md))
        .args(["check", "--live", "--report"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains(
            "instance tag bake:image-test = \"image tests/x\" is not an SSM parameter name: it must start with '/'"
        ),
        "{}",
        text(&o)
    );
}

#[test]
fn test_report_that_cannot_be_written_names_the_parameter() {
    // No emulator: SSM at a closed port, one attempt. Nothing configured needs AWS but the put.
    let t = TestDir::new();
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[aws]\nendpoint_url = \"http://127.0.0.1:{}\"\nmax_attempts = 1\n",
        free_port()
    ));
    let md = test_instance("i-0noput", "/bake/t/image-tests/ami-0abc1234/1", "");
    let o = agent(&cfg, None, Some(&md))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args([
            "check",
            "--live",
            "--report",
            "--systemctl",
            "/nonexistent/systemctl",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "cannot write the image-test report to SSM parameter '/bake/t/image-tests/ami-0abc1234/1'"
        ),
        "{}",
        text(&o)
    );
    // The checks ran and were printed before the put.
    assert!(
        String::from_utf8_lossy(&o.stdout).ends_with("live check: fail\n"),
        "{}",
        text(&o)
    );
}

#[test]
fn test_live_report_of_a_running_agent_on_a_host_without_systemd() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(async {
        for (name, value) in [
            ("/imgt/app/db/password", SECRET),
            ("/imgt/app/api_key", SECRET),
        ] {
            aws.ssm
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::SecureString)
                .send()
                .await
                .expect("put parameter");
        }
    });
    let t = TestDir::new();
    let port = free_port();
    // `[efs]` at a tmpfs mount point this host has (the agent checks, never mounts, it), the
    // uploads below it: the probe file is really created, fsynced and removed there.
    let shm = std::path::Path::new("/dev/shm");
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/dev/shm")),
        "this test needs /dev/shm to be a mount point"
    );
    let uploads = tempfile::Builder::new()
        .prefix("bake-imgt-uploads")
        .tempdir_in(shm)
        .unwrap();
    let cfg = baked_app(
        &t,
        port,
        &format!(
            "[secrets]\npath = \"/imgt/app\"\n[efs]\nfile_system_id = \"fs-0abc\"\nmount_point = \"/dev/shm\"\n[uploads]\ndir = \"{}\"\n",
            uploads.path().display()
        ),
    );
    let parameter = "/bake/t/image-tests/ami-0abc1234/20261203T071500Z";
    let md = test_instance(
        "i-0livecheck",
        parameter,
        "[identity]\nasg_name = \"bake-t\"\n",
    );
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));

    // At once, as bake-image-test.service would: --wait sees no state file, then a waiting
    // agent, then a ready one. The host's PID 1 is not systemd and it has no `inet filter
    // app_ports`: systemctl and nft are the real ones (or missing), and both checks fail
    // saying why.
    let start = Instant::now();
    let o = agent(&cfg, Some(&emu), Some(&md))
        .args(["check", "--live", "--wait", "30s", "--report", "-o", "json"])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(!text(&o).contains(SECRET), "{}", text(&o));
    assert!(
        text(&o).contains("the agent's readiness is decided"),
        "{}",
        text(&o)
    );
    let app_pid = wait_readiness(&t, "ready")["app"]["pid"].as_u64().unwrap();
    let printed = String::from_utf8_lossy(&o.stdout).trim_end().to_owned();
    let doc: serde_json::Value = serde_json::from_str(&printed).expect("one JSON document");
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["instance_id"], "i-0livecheck");
    assert_eq!(doc["image_id"], "ami-0abc1234");
    assert_eq!(doc["result"], "fail");
    let checks: BTreeMap<String, (bool, String)> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                (
                    c["ok"].as_bool().unwrap(),
                    c["detail"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["units", "app", "readiness", "secrets", "efs", "firewall"]
    );
    let (ok, d) = &checks["units"];
    assert!(!ok && d.starts_with("systemctl is-active: "), "{d}");
    assert_eq!(
        checks["app"],
        (true, format!("running (pid {app_pid}), 0 restarts"))
    );
    assert_eq!(checks["readiness"], (true, "ready".to_owned()));
    assert_eq!(checks["secrets"], (true, "2 parameters".to_owned()));
    assert_eq!(
        checks["efs"],
        (
            true,
            format!(
                "tmpfs mounted at /dev/shm; {} writable",
                uploads.path().display()
            )
        )
    );
    let (ok, d) = &checks["firewall"];
    assert!(!ok && d.contains("nft"), "{d}");
    assert!(
        std::fs::read_dir(uploads.path()).unwrap().next().is_none(),
        "the probe file was left behind"
    );
    // --wait ended when readiness was decided, not at its limit.
    assert!(took < Duration::from_secs(20), "{took:?}");

    // What `bake test-image` reads: the same document, a String parameter.
    let stored = rt
        .block_on(aws.ssm.get_parameter().name(parameter).send())
        .unwrap();
    let p = stored.parameter().unwrap();
    assert_eq!(p.r#type(), Some(&ParameterType::String));
    assert_eq!(p.value(), Some(printed.as_str()));
    assert!(!printed.contains(SECRET));

    // Again, as text: the parameter is overwritten, the lines are aligned.
    let o = agent(&cfg, Some(&emu), Some(&md))
        .args(["check", "--live", "--report"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert!(
        lines[0].starts_with("FAIL  units      systemctl is-active: "),
        "{out}"
    );
    assert_eq!(lines[2], "ok    readiness  ready");
    assert_eq!(lines[3], "ok    secrets    2 parameters");
    assert_eq!(lines[6], "live check: fail");
    assert!(!text(&o).contains(SECRET));
    let stored = rt
        .block_on(aws.ssm.get_parameter().name(parameter).send())
        .unwrap();
    let p = stored.parameter().unwrap();
    assert_eq!(p.version(), 2);
    assert!(p.value().unwrap().contains(r#""result":"fail""#));
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_wait_ends_at_its_limit_and_readiness_fails() {
    let t = TestDir::new();
    // Nothing listens on the probe's port: the agent stays `waiting` (its timeout is far off).
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sleep\", \"300\"]\nstop_timeout = \"1s\"\n\
         [readiness]\nprobe = \"tcp://127.0.0.1:{}\"\ninterval = \"100ms\"\ntimeout = \"10m\"\n",
        free_port()
    ));
    let md = imds("i-0waitlimit");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    wait_readiness(&t, "waiting");
    let start = Instant::now();
    let o = agent(&cfg, None, Some(&md))
        .args([
            "check",
            "--live",
            "--wait",
            "2s",
            "--systemctl",
            "/nonexistent/systemctl",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l == "FAIL  readiness  not ready yet after waiting 2s"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok    app        running (pid ")),
        "{out}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}
