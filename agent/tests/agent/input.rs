//! Input the agent takes from the instance: `check` and `run` refuse the same configurations,
//! userdata arrives as bytes (gzip, scripts, binary), `[app] port` and `[uploads]` reach the app,
//! `reap` and `firewall` read the configuration as `run` does.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::util::{agent, imds, wait_for, Running, TestDir};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `error: …` line of a run.
fn error_line(text: &str) -> String {
    text.lines()
        .find(|l| l.contains("error: "))
        .map(|l| l[l.find("error: ").unwrap_or(0)..].to_owned())
        .unwrap_or_default()
}

fn check(cfg: &Path, userdata: Option<&Path>) -> Output {
    let mut c = agent(cfg, None, None);
    c.arg("check");
    if let Some(u) = userdata {
        c.arg("--userdata").arg(u);
    }
    c.output().unwrap()
}

/// A config whose app leaves a marker: whether anything was started.
fn marker_app(t: &TestDir, extra: &str) -> std::path::PathBuf {
    t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 30\"]\n{extra}",
        t.path("started").display()
    ))
}

#[test]
fn test_check_and_run_refuse_the_same_configurations() {
    let cases = [
        (
            "[readiness]\nprobe = \"http://127.0.0.1:99999/health\"\n",
            "readiness.probe",
        ),
        (
            "[readiness]\nprobe = \"tcp://127.0.0.1:0\"\n",
            "readiness.probe",
        ),
        (
            "[readiness]\nprobe = \"tcp://127.0.0.1:http\"\n",
            "readiness.probe",
        ),
        (
            "[readiness]\nprobe = \"http://:3000/\"\n",
            "readiness.probe",
        ),
        (
            "[aws]\nendpoint_url = \"127.0.0.1:5000\"\n",
            "aws.endpoint_url",
        ),
        ("[aws]\nregion = \"\"\n", "aws.region"),
        (
            "[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"/mnt/../etc\"\n",
            "efs.mount_point",
        ),
        (
            "[secrets]\npath = \"/app\"\npoll_interval = \"1ns\"\n",
            "secrets.poll_interval",
        ),
        (
            "[logs]\nspool_max_mib = 17592186044416\n",
            "logs.spool_max_mib",
        ),
        ("[logs.app]\nlog_group = \"my app\"\n", "logs.app.log_group"),
    ];
    let md = imds("i-0same");
    for (extra, key) in cases {
        let t = TestDir::new();
        let cfg = marker_app(&t, extra);
        let c = check(&cfg, None);
        assert_eq!(c.status.code(), Some(2), "check accepted {extra}");
        let mut r = Running::spawn(agent(&cfg, None, Some(&md)));
        assert_eq!(
            r.wait(Duration::from_secs(20)),
            Some(2),
            "run: {extra}\n{}",
            r.stderr()
        );
        let (ce, re) = (error_line(&stderr(&c)), error_line(&r.stderr()));
        assert!(ce.contains(&format!(": {key}: ")), "{ce}");
        assert_eq!(ce, re, "check and run give the same error");
        assert!(!t.path("started").exists(), "nothing started: {extra}");
    }

    // The app's user must be named, for both.
    let t = TestDir::new();
    let cfg = t.config("[identity]\nstandalone = true\n[app]\ncommand = [\"/bin/true\"]\n");
    let c = check(&cfg, None);
    assert_eq!(c.status.code(), Some(2));
    assert!(stderr(&c).contains("app.user: missing"), "{}", stderr(&c));
    // And `check` refuses what `run` cannot supervise: no app at all.
    let cfg = t.config("[identity]\nstandalone = true\n");
    let c = check(&cfg, None);
    assert_eq!(c.status.code(), Some(2));
    assert!(
        stderr(&c).contains("app.command: missing"),
        "{}",
        stderr(&c)
    );
    let mut r = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(r.wait(Duration::from_secs(20)), Some(2));
    assert_eq!(error_line(&stderr(&c)), error_line(&r.stderr()));
}

/// Userdata as the instance serves it: gzip TOML applies, a gzip script and binary junk are
/// ignored (not an IMDS outage), and `check --userdata` says the same as `run`.
#[test]
fn test_userdata_bytes_gzip_script_and_junk() {
    let t = TestDir::new();
    let cfg = marker_app(&t, "");
    let other = t.path("from-userdata");
    let toml = format!(
        "[app]\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 30\"]\n",
        other.display()
    );
    let junk: Vec<u8> = (0..2048u32)
        .map(|i| u8::try_from((i * 7 + 128) % 256).unwrap())
        .collect();
    let md = imds("i-0gzip");
    for (name, bytes, applies) in [
        ("gzip TOML", gzip(toml.as_bytes()), true),
        ("gzip script", gzip(b"#!/bin/bash\necho hello\n"), false),
        ("binary junk", junk.clone(), false),
    ] {
        let _ = std::fs::remove_file(t.path("started"));
        let _ = std::fs::remove_file(&other);
        md.update(|s| s.user_data_raw = Some(bytes.clone()));
        let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
        let marker = if applies {
            other.clone()
        } else {
            t.path("started")
        };
        wait_for(
            &format!("the app to start ({name})"),
            Duration::from_secs(20),
            || marker.exists().then_some(()),
        );
        if applies {
            assert!(!t.path("started").exists(), "{name}: the baked command ran");
            assert!(
                a.stderr().contains("userdata is gzip; decompressed"),
                "{}",
                a.stderr()
            );
        } else {
            assert!(
                a.stderr().contains("userdata is not agent TOML"),
                "{}",
                a.stderr()
            );
        }
        assert_eq!(a.terminate(Duration::from_secs(10)), Some(0), "{name}");

        let file = t.path("userdata.bin");
        std::fs::write(&file, &bytes).unwrap();
        let c = check(&cfg, Some(&file));
        assert_eq!(c.status.code(), Some(0), "check {name}: {}", stderr(&c));
        let out = String::from_utf8_lossy(&c.stdout).into_owned();
        assert_eq!(out.contains(" + userdata: ok"), applies, "{name}: {out}");
        assert_eq!(out.contains("from-userdata"), applies, "{name}: {out}");
    }

    // Gzip that does not decompress: a configuration error for both, nothing started.
    let mut broken = gzip(toml.as_bytes());
    broken.truncate(15);
    let _ = std::fs::remove_file(t.path("started"));
    md.update(|s| s.user_data_raw = Some(broken.clone()));
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(2), "{}", a.stderr());
    let file = t.path("broken.bin");
    std::fs::write(&file, &broken).unwrap();
    let c = check(&cfg, Some(&file));
    assert_eq!(c.status.code(), Some(2));
    assert_eq!(error_line(&stderr(&c)), error_line(&a.stderr()));
    assert!(error_line(&a.stderr()).contains("userdata: .: gzip data that does not decompress"));
    assert!(!t.path("started").exists());
}

#[test]
fn test_port_and_uploads_dir_reach_the_app() {
    let t = TestDir::new();
    let env = t.path("env");
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"env > {}.tmp; mv {0}.tmp {0}; exec sleep 30\"]\n",
        env.display()
    ));
    let md = imds("i-0portenv");
    md.update(|s| {
        s.user_data = Some("[app]\nport = 8123\n[uploads]\ndir = \"/mnt/efs/uploads\"\n".into());
    });
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    let text = wait_for("the app's environment", Duration::from_secs(20), || {
        std::fs::read_to_string(&env).ok()
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"PORT=8123"), "{text}");
    assert!(lines.contains(&"UPLOADS_DIR=/mnt/efs/uploads"), "{text}");

    // A different app.env value is refused, naming both keys.
    md.update(|s| {
        s.user_data = Some("[app]\nport = 8123\nenv = { PORT = \"3000\" }\n".into());
    });
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(2));
    assert!(
        a.stderr()
            .contains("app.env.PORT: \"3000\" differs from app.port (\"8123\")"),
        "{}",
        a.stderr()
    );
}

fn age(path: &Path, days: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    let ts = nix::sys::time::TimeSpec::from(
        t.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap(),
    );
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// `reap` without DIR: `[uploads]` from the userdata (as fleet.yaml sends it), the 13-day
/// default, and a visible skip when the directory or the EFS mount is not there.
#[test]
fn test_reap_reads_uploads_from_the_configuration() {
    let t = TestDir::new();
    let up = t.path("uploads");
    std::fs::create_dir(&up).unwrap();
    for (name, days) in [("fourteen", 14), ("thirteen", 13), ("twelve", 12)] {
        std::fs::write(up.join(name), name).unwrap();
        age(&up.join(name), days);
    }
    let cfg = t.config("[identity]\nstandalone = true\n");
    let md = imds("i-0reap");
    md.update(|s| s.user_data = Some(format!("[uploads]\ndir = \"{}\"\n", up.display())));
    let out = agent(&cfg, None, Some(&md)).arg("reap").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "removed 2 files (16 bytes) and 0 empty directories older than 13days under {}",
            up.display()
        )),
        "{text}"
    );
    assert!(up.join("twelve").exists() && !up.join("fourteen").exists());

    // max_age from the configuration; --older-than still overrides it.
    md.update(|s| {
        s.user_data = Some(format!(
            "[uploads]\ndir = \"{}\"\nmax_age = \"11d\"\n",
            up.display()
        ));
    });
    let out = agent(&cfg, None, Some(&md))
        .args(["reap", "--older-than", "20d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(up.join("twelve").exists());
    let out = agent(&cfg, None, Some(&md)).arg("reap").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!up.join("twelve").exists());

    // Missing directory: a warning naming it, exit 0.
    let gone = t.path("no-such-uploads");
    md.update(|s| s.user_data = Some(format!("[uploads]\ndir = \"{}\"\n", gone.display())));
    let out = agent(&cfg, None, Some(&md)).arg("reap").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains(&gone.display().to_string()),
        "{err}"
    );
    assert!(err.contains("it does not exist"), "{err}");

    // [efs] configured, its mount point not mounted: skipped, files untouched.
    let mp = t.path("efs");
    let on_efs = mp.join("uploads");
    std::fs::create_dir_all(&on_efs).unwrap();
    std::fs::write(on_efs.join("old"), "x").unwrap();
    age(&on_efs.join("old"), 30);
    md.update(|s| {
        s.user_data = Some(format!(
            "[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"{}\"\n[uploads]\ndir = \"{}\"\n",
            mp.display(),
            on_efs.display()
        ));
    });
    let out = agent(&cfg, None, Some(&md)).arg("reap").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN")
            && err.contains(&format!(
                "the EFS mount point {} is not mounted",
                mp.display()
            )),
        "{err}"
    );
    assert!(
        on_efs.join("old").exists(),
        "nothing reaped while the mount is missing"
    );

    // No DIR and no [uploads]: a configuration error.
    md.update(|s| s.user_data = None);
    let out = agent(&cfg, None, Some(&md)).arg("reap").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no [uploads] dir"),
        "{}",
        stderr(&out)
    );
}

/// A stand-in for nft that records its argv, one argument a line.
fn recording_nft(t: &TestDir, exit: i32) -> std::path::PathBuf {
    let script = t.path("nft");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\nexit {exit}\n",
            t.path("argv").display()
        ),
    )
    .unwrap();
    let mut p = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&script, p).unwrap();
    script
}

#[test]
fn test_firewall_opens_the_configured_port() {
    let t = TestDir::new();
    let nft = recording_nft(&t, 0);
    let cfg = t.config(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/true\"]\n",
    );
    let md = imds("i-0fw");
    // The port comes from the userdata, as fleet.yaml sends it.
    md.update(|s| s.user_data = Some("[app]\nport = 8080\n".into()));
    let out = agent(&cfg, None, Some(&md))
        .arg("firewall")
        .arg("--nft")
        .arg(&nft)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let argv = std::fs::read_to_string(t.path("argv")).unwrap();
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        [
            "add",
            "element",
            "inet",
            "filter",
            "app_ports",
            "{",
            "8080",
            "}"
        ]
    );

    // No port: a warning, exit 0, nft not run.
    std::fs::remove_file(t.path("argv")).unwrap();
    md.update(|s| s.user_data = None);
    let out = agent(&cfg, None, Some(&md))
        .arg("firewall")
        .arg("--nft")
        .arg(&nft)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARN") && stderr(&out).contains("no [app] port"));
    assert!(!t.path("argv").exists());

    // nft fails: exit 8, the command named.
    let failing = recording_nft(&t, 1);
    md.update(|s| s.user_data = Some("[app]\nport = 8080\n".into()));
    let out = agent(&cfg, None, Some(&md))
        .arg("firewall")
        .arg("--nft")
        .arg(&failing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("add element inet filter app_ports { 8080 }' failed"));

    // A bad configuration is exit 2, nft not run; no metadata service is exit 4, as for run.
    std::fs::remove_file(t.path("argv")).unwrap();
    md.update(|s| s.user_data = Some("[app]\nport = 80800\n".into()));
    let out = agent(&cfg, None, Some(&md))
        .arg("firewall")
        .arg("--nft")
        .arg(&nft)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("app.port: 80800 is not in 1..=65535"));
    let out = agent(&cfg, None, None)
        .arg("firewall")
        .arg("--nft")
        .arg(&nft)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!t.path("argv").exists());
}

/// A network namespace of the test's own, deleted when dropped.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Self {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip (iproute2)");
        assert!(st.success(), "ip netns add {name}");
        Self(name)
    }

    fn nft(&self, args: &[&str]) -> Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "/usr/sbin/nft"])
            .args(args)
            .output()
            .expect("run nft (nftables, tools/setup installs it)")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The real nft, in a network namespace made for the test: the port lands in the set and a
/// second run (an agent restart) is no error.
#[test]
fn test_firewall_with_the_real_nft_in_a_namespace() {
    let t = TestDir::new();
    let ns = Netns::add(format!("bake-fw-{}", std::process::id()));
    let ruleset = t.path("ruleset.nft");
    std::fs::write(
        &ruleset,
        "table inet filter {\n  set app_ports { type inet_service; }\n  chain input {\n    \
         type filter hook input priority 0; policy drop;\n    iif lo accept\n    \
         tcp dport @app_ports accept\n  }\n}\n",
    )
    .unwrap();
    let out = ns.nft(&["-f", ruleset.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // nft in the namespace, the agent (and its IMDS stand-in) outside it.
    let wrapper = t.path("nft-in-ns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} /usr/sbin/nft \"$@\"\n",
            ns.0
        ),
    )
    .unwrap();
    let mut p = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&wrapper, p).unwrap();
    let cfg = t.config(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/true\"]\n",
    );
    let md = imds("i-0realnft");
    md.update(|s| s.user_data = Some("[app]\nport = 8443\n".into()));
    for _ in 0..2 {
        let out = agent(&cfg, None, Some(&md))
            .arg("firewall")
            .arg("--nft")
            .arg(&wrapper)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = ns.nft(&["list", "set", "inet", "filter", "app_ports"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("elements = { 8443 }"), "{listed}");
}
