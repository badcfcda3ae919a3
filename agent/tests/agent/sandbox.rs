//! What bake-agent.service's sandbox relies on: the EFS mount is made by `bake-agent mount`
//! (the unit's `ExecStartPre=+`), the daemon only checks it; the app and job commands start with
//! an empty capability bounding set and no_new_privs, whatever the agent holds. These need root
//! (CI runs the tests as root): mounting, and a bounding set to empty.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::util::{agent, imds, wait_for, Running, TestDir};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tmpfs at `path` standing in for EFS (this kernel has no NFS client); lazily unmounted when
/// dropped, so a failing assertion leaves no mount behind.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mounting needs root: run the tests as root"
        );
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The `Cap*:` and `NoNewPrivs:` lines of a /proc/PID/status text, as `key value`.
fn privileges(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

const NONE: [&str; 6] = [
    "CapInh: 0000000000000000",
    "CapPrm: 0000000000000000",
    "CapEff: 0000000000000000",
    "CapBnd: 0000000000000000",
    "CapAmb: 0000000000000000",
    "NoNewPrivs: 1",
];

#[test]
fn test_mount_subcommand_reads_the_configuration_and_is_idempotent() {
    let t = TestDir::new();
    let cfg = t.config("[identity]\nstandalone = true\n");
    let md = imds("i-0mountcmd");

    // No [efs]: nothing to do.
    let out = agent(&cfg, None, Some(&md)).arg("mount").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no [efs]: nothing to mount"),
        "{}",
        stderr(&out)
    );

    // [efs] from the userdata, already mounted: nothing mounted again, exit 0.
    let mp = t.path("efs");
    let _efs = Tmpfs::mount(&mp);
    md.update(|s| {
        s.user_data = Some(format!(
            "[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"{}\"\n",
            mp.display()
        ));
    });
    let out = agent(&cfg, None, Some(&md)).arg("mount").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("already=true") && err.contains("fstype=nfs4"),
        "{err}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = format!(" {} ", mp.display());
    assert_eq!(mounts.matches(&here).count(), 1, "{mounts}");

    // An access point without the efs mount helper: a configuration error naming it.
    md.update(|s| {
        s.user_data = Some(format!(
            "[efs]\nfile_system_id = \"fs-0a\"\naccess_point = \"fsap-0b\"\nmount_point = \"{}\"\n",
            mp.display()
        ));
    });
    let out = agent(&cfg, None, Some(&md)).arg("mount").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("efs.access_point fsap-0b needs the efs mount helper"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_the_daemon_does_not_mount_and_fails_clearly_without_the_mount() {
    let t = TestDir::new();
    let started = t.path("started");
    let mp = t.path("efs");
    std::fs::create_dir_all(&mp).unwrap();
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; exec sleep 30\"]\n\
         [efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"{}\"\n",
        started.display(),
        mp.display()
    ));
    let md = imds("i-0nomount");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(6), "{}", a.stderr());
    assert!(
        a.stderr().contains(&format!(
            "efs.mount_point {} is not mounted: `bake-agent mount`",
            mp.display()
        )),
        "{}",
        a.stderr()
    );
    assert!(!started.exists(), "the app started without its mount");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!(" {} ", mp.display())),
        "the daemon mounted: {mounts}"
    );
}

/// The app of a daemon that holds capabilities (here: every one the test holds) gets none of
/// them, and no way back to them through a setuid or file-capability binary.
#[test]
fn test_the_app_and_job_commands_start_without_capabilities() {
    let t = TestDir::new();
    let pidfile = t.path("pid");
    let mp = t.path("efs");
    let _efs = Tmpfs::mount(&mp);
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"echo $$ > {0}.tmp; mv {0}.tmp {0}; exec sleep 30\"]\n\
         [efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"{1}\"\n",
        pidfile.display(),
        mp.display()
    ));
    let own = privileges(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(
        !own.contains(&"CapBnd: 0000000000000000".to_owned()),
        "the test's own bounding set is empty: nothing to show: {own:?}"
    );
    let md = imds("i-0caps");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    // The supervised app's own /proc/PID/status (sleep, exec'd by the app's shell).
    let text = wait_for("the app's /proc status", Duration::from_secs(20), || {
        let pid = std::fs::read_to_string(&pidfile).ok()?;
        let text = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
        text.lines()
            .any(|l| l.starts_with("Name:") && l.ends_with("sleep"))
            .then_some(text)
    });
    assert_eq!(privileges(&text), NONE, "{text}");
    assert_eq!(
        a.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        a.stderr()
    );
    assert!(a.stderr().contains("step=\"mount\""), "{}", a.stderr());

    // `bake-agent job`: the command likewise.
    let emu = bake_e2e::Emulator::start().unwrap();
    let cfg = t.config("[identity]\nasg_name = \"sandbox-caps\"\n[lease]\n");
    let job_status = t.path("job-status");
    let out = agent(&cfg, Some(&emu), Some(&md))
        .args(["job", "caps", "--period", "weekly", "--", "/bin/sh", "-c"])
        .arg(format!("cat /proc/self/status > {}", job_status.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&job_status).unwrap();
    assert_eq!(privileges(&text), NONE, "{text}");
}
