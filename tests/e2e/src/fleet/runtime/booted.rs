//! The booted runtime: an instance is its AMI's image booted as a `systemd-nspawn` container
//! ([`crate::boot`]): systemd as PID 1, `bake-agent` started by the image's own
//! `bake-agent.service`, configured by the launch template's userdata (served by the instance's
//! metadata stand-in), the app from the image's `/opt/app` on [`APP_PORT`] of the instance's own
//! address, the fleet's EFS stand-in (`<fleet dir>/efs`, one host directory for every instance:
//! this kernel has no NFS client) bound at `/mnt/efs`.
//!
//! The image is found from the AMI's tag `bake:local-image` alone ([`boot::root_of`]); the app
//! version is its `bake:app-version` tag, which `bake build` set from the release it baked in.
//! The agent's journal (`journalctl -u bake-agent.service -u bake-image-test.service -u
//! bake-migrate.service`: the boot test's and the migration's too, which say something only on
//! the instances bake launches for them) is copied to
//! `<fleet dir>/instances/<id>/agent.log` while the instance runs, so the log outlives the
//! instance's volatile journal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::{Instance, LaunchSpec, Runtime, TARGET_TERMINATED};
use crate::boot::{self, BootSpec};
use crate::fleet::userdata::APP_PORT;
use crate::Emulator;

/// Boots instances as containers from their AMI's image.
#[derive(Debug)]
pub struct BootedRuntime {
    emulator: String,
    database: Option<SocketAddr>,
    boot_timeout: Duration,
}

impl BootedRuntime {
    /// Instances reaching `emu` through their relay, and `database` (the fleet's, on the host's
    /// loopback) as [`boot::DB_HOST`].
    #[must_use]
    pub fn new(emu: &Emulator, database: Option<SocketAddr>) -> Self {
        Self {
            emulator: emu.url().to_owned(),
            database,
            boot_timeout: Duration::from_secs(120),
        }
    }
}

impl Runtime for BootedRuntime {
    fn boots_outside_the_group(&self) -> bool {
        true
    }

    fn boot(&mut self, spec: &LaunchSpec, dir: &Path) -> anyhow::Result<Box<dyn super::Instance>> {
        let version = spec.app_version()?;
        let root = boot::root_of(&spec.image_id, &spec.image_tags)?;
        let inst_dir = dir.join("instances").join(&spec.id);
        std::fs::create_dir_all(&inst_dir)?;
        let shared = dir.join("efs");
        std::fs::create_dir_all(&shared)?;
        let mut bs = BootSpec::new(root, spec.imds_state(), &self.emulator)?;
        bs.shared_dir = Some(shared);
        bs.database = self.database;
        bs.timeout = self.boot_timeout;
        // Booting, not booted: the agent's readiness and CONTINUE are the group's business.
        bs.wait_booted = false;
        let inst = boot::Instance::boot(bs).with_context(|| format!("booting {}", spec.id))?;
        let log = inst_dir.join("agent.log");
        let follower = follow_journal(&inst, &log)?;
        Ok(Box::new(BootedInstance {
            version,
            target: SocketAddr::from((inst.addr(), APP_PORT)),
            log,
            follower: Some(follower),
            inst,
        }))
    }
}

/// `journalctl -f` of the agent's unit inside `inst`, from its first line, into `log`: once
/// the instance's journal is on its disk (`systemd-journal-flush.service` done: the image keeps
/// its journal in /var/log/journal, and a follower started on the early one in /run would not
/// see the move), at most a minute after its systemd started.
///
/// The follower is the host's `journalctl --root=/proc/<pid 1>/root`: a process in the instance's
/// PID namespace whose parent is outside would be a zombie nobody in the instance can reap when
/// its systemd kills everything at power-off (systemd-shutdown then waits 90 s for it), and one in
/// the instance's mount namespace but not its PID namespace finds no `/proc/self` there, which
/// journalctl needs to follow.
fn follow_journal(inst: &boot::Instance, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log)?;
    let leader = inst.leader().to_string();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "i=0; until nsenter -t \"$1\" --mount -- systemctl is-active --quiet \
         systemd-journal-flush.service 2>/dev/null; do \
         i=$((i + 1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done; \
         exec journalctl --root=\"/proc/$1/root\" --follow --no-tail --no-pager -o cat \
         -u bake-agent.service -u bake-image-test.service -u bake-migrate.service",
        "follow-journal",
        &leader,
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
    .stdin(Stdio::null())
    .stdout(file.try_clone()?)
    .stderr(file);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::process::die_with_parent(&mut cmd);
    cmd.spawn().context("following the agent's journal")
}

/// An instance run by [`BootedRuntime`].
struct BootedInstance {
    version: String,
    target: SocketAddr,
    log: PathBuf,
    follower: Option<Child>,
    inst: boot::Instance,
}

impl Instance for BootedInstance {
    fn version(&self) -> &str {
        &self.version
    }

    fn target(&self) -> SocketAddr {
        self.target
    }

    fn log(&self) -> &Path {
        &self.log
    }

    fn restarts(&self) -> u64 {
        super::process::count_restarts(&self.log)
    }

    fn notify_terminated(&mut self) {
        self.inst.imds().update(|st| {
            if st.target_lifecycle_state.as_deref() != Some(TARGET_TERMINATED) {
                st.target_lifecycle_state = Some(TARGET_TERMINATED.into());
            }
        });
    }

    fn has_exited(&mut self) -> bool {
        self.inst.has_exited()
    }

    fn leader(&self) -> Option<i32> {
        Some(self.inst.leader())
    }

    /// Powers the container off (its systemd stops the agent, which stops the app gracefully),
    /// killing what is left after `grace`.
    fn stop(&mut self, grace: Duration) {
        self.inst.power_off(grace);
        if let Some(mut f) = self.follower.take() {
            crate::process::stop_group(&mut f, Duration::from_secs(2));
        }
    }
}

impl Drop for BootedInstance {
    fn drop(&mut self) {
        // The container first (then `inst` itself drops: metadata, relay, veth, directory).
        self.stop(boot::STOP_GRACE);
    }
}
