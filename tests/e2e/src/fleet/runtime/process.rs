//! The process runtime: an instance is a `bake-agent run` process on the host with its own
//! config file and directory, pointed at the emulator and at its own instance metadata stand-in
//! ([`Imds`], the project's one hand-written fake), supervising the sample app
//! (`examples/app/server.js`) of the version its AMI names in its tag `bake:app-version`, on a
//! port of its own on 127.0.0.1. One directory per version holds a copy of the app; version
//! [`BROKEN`](crate::fleet::BROKEN) never becomes ready.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Instance, LaunchSpec, Runtime, TARGET_TERMINATED};
use crate::fleet::agent_config::agent_config;
use crate::fleet::{free_port, FleetOptions, APP_VERSION_TAG};
use crate::imds::Imds;
use crate::Emulator;

/// Boots instances as host processes.
#[derive(Debug)]
pub struct ProcessRuntime {
    opts: FleetOptions,
    app_src: PathBuf,
    node: PathBuf,
    child_env: Vec<(&'static str, String)>,
}

impl ProcessRuntime {
    /// Agents `opts.agent_bin` with `opts`' settings, pointed at `emu`; the app run by the
    /// `node` found on `PATH`.
    #[must_use]
    pub fn new(emu: &Emulator, opts: &FleetOptions) -> Self {
        Self {
            opts: opts.clone(),
            app_src: crate::paths::repo_root().join("examples/app/server.js"),
            node: which("node"),
            child_env: emu.env(),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn boot(&mut self, spec: &LaunchSpec, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        let version = spec.app_version()?;
        let app_dir = version_dir(dir, &self.app_src, &version)?;
        let inst_dir = dir.join("instances").join(&spec.id);
        std::fs::create_dir_all(&inst_dir)?;
        let port = free_port()?;
        // Its configuration is the file written below, whole: the launch template's userdata
        // (fleet.yaml's, for booted instances) is not served to it.
        let mut state = spec.imds_state();
        state.user_data_raw = None;
        let imds = Imds::start(state)?;
        let config = inst_dir.join("agent.toml");
        std::fs::write(
            &config,
            agent_config(&self.opts, &self.node, &app_dir, &inst_dir, port, &version),
        )?;
        let log_path = inst_dir.join("agent.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&self.opts.agent_bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .current_dir(&inst_dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("AWS_PROFILE")
            .envs(self.child_env.iter().map(|(k, v)| (*k, v)))
            .envs(imds.env())
            // Each simulated instance keeps its own state file (the default is /run/bake/).
            .env("BAKE_AGENT_STATUS_FILE", inst_dir.join("status.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        crate::process::die_with_parent(&mut cmd);
        let agent = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.opts.agent_bin.display()))?;
        Ok(Box::new(ProcessInstance {
            version,
            port,
            log: log_path,
            imds,
            agent,
        }))
    }
}

/// An instance run by [`ProcessRuntime`].
struct ProcessInstance {
    version: String,
    port: u16,
    log: PathBuf,
    imds: Imds,
    agent: Child,
}

impl Instance for ProcessInstance {
    fn version(&self) -> &str {
        &self.version
    }

    fn target(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> &Path {
        &self.log
    }

    fn restarts(&self) -> u64 {
        count_restarts(&self.log)
    }

    fn notify_terminated(&mut self) {
        self.imds.update(|st| {
            if st.target_lifecycle_state.as_deref() != Some(TARGET_TERMINATED) {
                st.target_lifecycle_state = Some(TARGET_TERMINATED.into());
            }
        });
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.agent.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM to the agent (it stops the app gracefully), SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        if self.has_exited() {
            return;
        }
        let pid = self.agent.id().to_string();
        let _ = Command::new("kill").args(["-TERM", "--", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The app dies with the agent (its parent-death signal is SIGKILL).
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        // The agent first, then (dropping the fields) its metadata stand-in.
        self.stop(Duration::from_secs(5));
    }
}

/// App restarts logged by an agent.
pub(super) fn count_restarts(log: &Path) -> u64 {
    std::fs::read_to_string(log).map_or(0, |t| {
        t.lines()
            .filter(|l| l.contains("app exited; restart"))
            .count() as u64
    })
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The app directory of `version`: a copy of the sample app (made once).
fn version_dir(root: &Path, app_src: &Path, version: &str) -> anyhow::Result<PathBuf> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("app version {version:?} (AMI tag {APP_VERSION_TAG}): only letters, digits, '.', '_' and '-'");
    }
    let dir = root.join("versions").join(version);
    if !dir.join("server.js").exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(app_src, dir.join("server.js"))
            .with_context(|| format!("copying {}", app_src.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_version_names_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let src = crate::paths::repo_root().join("examples/app/server.js");
        assert!(version_dir(d.path(), &src, "../x").is_err());
        assert!(version_dir(d.path(), &src, "2")
            .unwrap()
            .join("server.js")
            .exists());
    }

    #[test]
    fn test_boot_names_a_missing_version_tag() {
        let d = tempfile::tempdir().unwrap();
        let mut rt = ProcessRuntime {
            opts: FleetOptions::new("g", "/nonexistent/bake-agent".into()),
            app_src: crate::paths::repo_root().join("examples/app/server.js"),
            node: which("node"),
            child_env: Vec::new(),
        };
        let spec = LaunchSpec {
            id: "i-1".into(),
            asg: Some("g".into()),
            tags: std::collections::BTreeMap::new(),
            availability_zone: "us-east-1a".into(),
            image_id: "ami-7".into(),
            image_tags: std::collections::BTreeMap::new(),
            user_data: None,
            role_credentials: None,
        };
        let e = rt.boot(&spec, d.path()).err().expect("no version tag");
        let e = format!("{e:#}");
        assert!(e.contains("ami-7") && e.contains(APP_VERSION_TAG), "{e}");
        assert!(!d.path().join("instances/i-1").exists(), "{e}");
    }
}
