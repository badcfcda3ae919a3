//! `bake-agent`: makes an instance of a bake AMI a healthy member of its fleet.
//!
//! `bake-agent run` (under systemd) boots the instance into the fleet: identity from IMDSv2,
//! secrets from SSM into the app's environment, the EFS mount, the supervised app, readiness →
//! launch lifecycle hook, and on termination a drain and the terminate hook. `job` runs a command
//! on one instance of the fleet per period; `reap` deletes expired uploads; `firewall` opens the
//! app's port; `check` validates the configuration as `run` would, `check --live` the running
//! instance (and reports to `bake test-image` on an image-test instance).
//!
//! Configuration: `/etc/bake/agent.toml` (`--config`) with userdata TOML laid over it; see
//! docs/agent.md. Exit codes: [`exit::Exit`].

/// The AWS clients the agent calls.
pub mod aws;
/// Command line.
pub mod cli;
/// `agent.toml` + userdata → validated settings.
pub mod config;
/// The `run` daemon: boot sequence, readiness, drain.
pub mod daemon;
/// The app's own metrics from its embedded-metric-format lines.
pub mod emf;
/// Exit codes and error reporting.
pub mod exit;
/// `firewall`: the app's port in the instance's nftables set.
pub mod firewall;
/// 64-bit FNV-1a for stable names and fingerprints.
pub mod fnv;
/// Identity: instance id, region, AZ, group.
pub mod identity;
/// IMDSv2 client.
pub mod imds;
/// `job`: run once per fleet per period.
pub mod job;
/// Fleet leases in SSM.
pub mod lease;
/// Lifecycle hooks and the termination watch.
pub mod lifecycle;
/// `check --live`: the running instance's checks and the image-test report.
pub mod live;
/// Log shipping to CloudWatch Logs.
pub mod logs;
/// Unmapping the binary's start-up pages once booted.
pub mod memory;
/// Instance metrics (CPU peaks, memory, disk, restarts, log shipping) to CloudWatch.
pub mod metrics;
/// `bake-agent migrate`: a release's migration, once, on its migration instance.
pub mod migrate;
/// EFS mount.
pub mod mount;
/// sd_notify.
pub mod notify;
/// Readiness probe.
pub mod readiness;
/// `reap`: expired uploads.
pub mod reap;
/// The instance refresh of a secret rotation and its outcome.
pub mod rollout;
/// Secret rotation: polling the versions and answering a change.
pub mod rotation;
/// `bake-agent sbom`: the image's software bill of materials.
pub mod sbom;
/// Secrets from SSM Parameter Store.
pub mod secrets;
/// The status line (sd_notify `STATUS=`).
pub mod status;
/// The app's supervisor.
pub mod supervisor;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::exit::{coded, Exit};

/// Runs one command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = &cli.global.config;
    match cli.command {
        Command::Run => Ok(daemon::run(config, &cli.global.status_file).await?.into()),
        Command::Status { output } => Ok(status::show(&cli.global.status_file, output).into()),
        Command::Check {
            live: true,
            output,
            wait,
            report,
            nft,
            systemctl,
            ..
        } => {
            let opts = live::LiveOptions {
                output,
                wait,
                report,
                nft,
                systemctl,
            };
            Ok(live::run(config, &cli.global.status_file, &opts)
                .await?
                .into())
        }
        Command::Check { userdata, .. } => {
            let ud = match &userdata {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    coded(Exit::Config, format!("cannot read '{}': {e}", p.display()))
                })?),
                None => None,
            };
            let s = Settings::load(config, ud.as_deref()).map_err(|e| coded(Exit::Config, e))?;
            let app = s.app_for_run().map_err(|e| coded(Exit::Config, e))?;
            let logs = match &s.logs {
                Some(l) => format!(
                    "{}{} file source(s)",
                    if l.app.is_some() { "app output + " } else { "" },
                    l.files.len()
                ),
                None => "none".to_owned(),
            };
            crate::outln!(
                "{}: ok (app {:?} as {}{}; secrets: {}; efs: {}; uploads: {}; readiness: {}; logs: {logs}; metrics: {})",
                s.origin,
                app.command,
                app.user,
                app.port.map(|p| format!(" on port {p}")).unwrap_or_default(),
                s.secrets.as_ref().map_or("none", |x| x.path.as_str()),
                s.efs.as_ref().map_or("none", |x| x.file_system_id.as_str()),
                s.uploads
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |u| u.dir.display().to_string()),
                if s.readiness.is_some() {
                    "probe"
                } else {
                    "none"
                },
                s.metrics.as_ref().map_or("off", |m| m.namespace.as_str()),
            );
            Ok(Exit::Ok.into())
        }
        Command::Job { name, period, cmd } => job::run(config, &name, period, &cmd).await,
        Command::Migrate { cmd } => migrate::run(config, &cmd).await,
        Command::Reap {
            dir,
            older_than,
            dry_run,
        } => {
            let (dir, older_than) = match (dir, older_than) {
                // Both on the command line: the configuration is not needed.
                (Some(d), Some(a)) => (d, a),
                (dir, older_than) => {
                    let imds = imds::Imds::from_env();
                    // A boot test of an image (`bake test-image`) or a migration instance
                    // shares the fleet's EFS and configuration, but is no member of the fleet:
                    // the fleet reaps.
                    if let Some((tag, parameter)) = identity::outside_group_tag(&imds)
                        .await
                        .map_err(|e| coded(Exit::Imds, e))?
                    {
                        let what = if tag == identity::MIGRATE_TAG {
                            "migration"
                        } else {
                            "image-test"
                        };
                        tracing::info!(tag, %parameter,
                            "{what} instance: not reaping the fleet's uploads");
                        return Ok(Exit::Ok.into());
                    }
                    let s = config::load_on_instance(config, &imds).await?;
                    let is_mounted = |p: &std::path::Path| {
                        mount::mounted_at(p)
                            .map(|m| m.is_some())
                            .map_err(|e| e.to_string())
                    };
                    match reap::target(dir, older_than, &s, is_mounted)
                        .map_err(|e| coded(Exit::Config, e))?
                    {
                        reap::Target::Reap { dir, older_than } => (dir, older_than),
                        reap::Target::Skip { dir, reason } => {
                            tracing::warn!(dir = %dir.display(), reason = %reason,
                                "not reaping uploads: {reason}");
                            return Ok(Exit::Ok.into());
                        }
                    }
                }
            };
            let r = reap::reap(&dir, older_than, dry_run, std::time::SystemTime::now())
                .map_err(|e| coded(Exit::Config, e))?;
            let verb = if dry_run { "would remove" } else { "removed" };
            crate::outln!(
                "{verb} {} files ({} bytes) and {} empty directories older than {} under {}; {} errors",
                r.files,
                r.bytes,
                r.dirs,
                humantime::format_duration(older_than),
                dir.display(),
                r.errors
            );
            Ok(if r.errors > 0 {
                Exit::Internal
            } else {
                Exit::Ok
            }
            .into())
        }
        Command::Firewall { nft } => {
            let s = config::load_on_instance(config, &imds::Imds::from_env()).await?;
            let Some(port) = s.app.as_ref().and_then(|a| a.port) else {
                tracing::warn!(config = %s.origin, "no [app] port: no port opened in the firewall");
                return Ok(Exit::Ok.into());
            };
            firewall::open_port(&nft, port).map_err(|e| coded(Exit::Firewall, e))?;
            tracing::info!(port, set = %firewall::SET.join(" "), "app port opened in the firewall");
            Ok(Exit::Ok.into())
        }
        Command::Mount => Ok(mount::run(config).await?.into()),
        Command::Sbom {
            root,
            app_dir,
            output,
            frame,
            rpm,
        } => {
            let opts = sbom::Options { root, app_dir, rpm };
            Ok(sbom::run(&opts, output.as_deref(), frame)?.into())
        }
        Command::Completion { shell } => {
            crate::outln!("{}", crate::cli::completion(shell).trim_end());
            Ok(Exit::Ok.into())
        }
    }
}
