//! `bake`: bake hardened AMIs with Packer and roll them out with watched, reversible instance
//! refreshes.
//!
//! Configuration: `bake.toml` (`--config`, schema in `docs/bake.md`). Results go to stdout (text
//! or `--output json`), progress and logs to stderr. Exit codes: [`exit::Exit`].

/// AMIs: inputs hash, provenance tags, bake cache, prune helpers.
pub mod ami;
/// `bake build`.
pub mod build;
/// Command line.
pub mod cli;
/// `bake.toml`.
pub mod config;
/// Exit codes and error reporting.
pub mod exit;
/// The local target: a root file system image and its AMI record.
pub mod local_image;
/// Progress on stderr, results on stdout.
pub mod output;
/// Running Packer.
pub mod packer;
/// `bake prune`.
pub mod prune;
/// The instance refresh state machine and poller.
pub mod refresh;
/// `bake release`.
pub mod release;
/// `bake rollback`.
pub mod rollback;
/// SIGINT, SIGTERM and SIGHUP.
pub mod signals;
/// `bake status`.
pub mod status;
/// Resolving `[target]`.
pub mod targets;

use bake_common::aws::Aws;

use crate::cli::{Cli, Command, WatchArgs};
use crate::config::Settings;
use crate::exit::Exit;
use crate::release::{ReleaseOptions, ReleaseReport};

fn release_text(r: &ReleaseReport) -> String {
    let mut s = format!(
        "{}: {} on {} (launch template {} v{} → v{})",
        r.result,
        r.image_id,
        r.auto_scaling_group,
        r.launch_template_id,
        r.previous_version,
        r.version
    );
    if !r.instance_refresh_id.is_empty() {
        s.push_str(&format!(", instance refresh {}", r.instance_refresh_id));
    }
    if let Some(snap) = &r.refresh {
        s.push_str(&format!(": {}", snap.describe()));
    }
    if r.restored_default {
        s.push_str(&format!(
            "; default version set back to v{}",
            r.previous_version
        ));
    }
    s
}

fn watch_opts(w: &WatchArgs) -> ReleaseOptions {
    ReleaseOptions {
        no_wait: w.no_wait,
        timeout: w.timeout,
        cancel_on_interrupt: w.cancel_on_interrupt,
        ..ReleaseOptions::default()
    }
}

/// The AWS CLI's order for region and profile: flag, then environment, then bake.toml's
/// `[aws]` (then, for the region, the SDK's own chain: the profile's region, IMDS). An empty
/// variable counts as unset.
fn aws_precedence(
    file: &bake_common::aws::AwsSettings,
    flags: &cli::Global,
    env: impl Fn(&str) -> Option<String>,
) -> bake_common::aws::AwsSettings {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    bake_common::aws::AwsSettings {
        region: flags
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| file.region.clone()),
        profile: flags
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .or_else(|| file.profile.clone()),
        ..file.clone()
    }
}

/// Runs one command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    signals::install().map_err(|e| {
        exit::coded(
            Exit::Internal,
            format!("cannot handle SIGINT, SIGTERM and SIGHUP: {e}"),
        )
    })?;
    if let Command::Completion { shell } = cli.command {
        output::print(crate::cli::completion(shell).trim_end())?;
        return Ok(Exit::Ok);
    }
    let mut settings = Settings::load(&cli.global.config)?;
    settings.aws = aws_precedence(&settings.aws, &cli.global, |k| std::env::var(k).ok());
    let output = cli.global.output;
    if let Command::Validate = cli.command {
        let mut checks = vec![format!("{}: valid", settings.path.display())];
        if settings.packer.is_some() {
            checks.push(build::validate(&settings).await?);
        }
        let json = serde_json::json!({ "valid": true, "checks": checks });
        output::emit(output, &json, &checks.join("\n"))?;
        return Ok(Exit::Ok);
    }
    let aws = Aws::load(&settings.aws).await;
    match cli.command {
        Command::Validate | Command::Completion { .. } => unreachable!("handled above"),
        Command::Build(b) => {
            let r = build::build(
                &aws,
                &settings,
                &build::BuildOptions {
                    force: b.force,
                    app_release: b.app_release,
                },
            )
            .await?;
            let text = if r.reused {
                format!(
                    "{} (reused: same inputs hash {})",
                    r.image_id, r.inputs_hash
                )
            } else {
                r.image_id.clone()
            };
            output::emit(output, &serde_json::to_value(&r)?, &text)?;
            Ok(Exit::Ok)
        }
        Command::Release(a) => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let opts = ReleaseOptions {
                ami: a.ami,
                build: build::BuildOptions {
                    force: a.build.force,
                    app_release: a.build.app_release,
                },
                wait_for_current: a.wait_for_current,
                ..watch_opts(&a.watch)
            };
            let (report, code) = release::release(&aws, &settings, &t, &opts).await?;
            output::emit(
                output,
                &serde_json::to_value(&report)?,
                &release_text(&report),
            )?;
            Ok(code)
        }
        Command::Rollback(w) => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let (report, code) = rollback::rollback(&aws, &settings, &t, &watch_opts(&w)).await?;
            output::emit(
                output,
                &serde_json::to_value(&report)?,
                &release_text(&report),
            )?;
            Ok(code)
        }
        Command::Status { watch, timeout } => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let mut code = Exit::Ok;
            let mut watched = None;
            if watch {
                if let Some(current) = release::active_refresh(&aws, &t.auto_scaling_group).await? {
                    let mut report = ReleaseReport::default();
                    let wopts = release::watch_options(&settings, timeout, false);
                    code = release::watch_into(
                        &aws,
                        &t.auto_scaling_group,
                        &current.id,
                        wopts,
                        &mut report,
                    )
                    .await?;
                    watched = Some(report);
                }
            }
            let fleet = status::fleet(&aws, &t).await?;
            let mut json = serde_json::to_value(&fleet)?;
            if let Some(w) = watched {
                json["watch"] = serde_json::json!({ "result": w.result, "polls": w.polls, "watch_secs": w.watch_secs });
            }
            output::emit(output, &json, &status::render(&fleet))?;
            Ok(code)
        }
        Command::Prune { keep, dry_run } => {
            let t = match &settings.target {
                Some(target) => Some(targets::resolve(&aws, target).await?),
                None => None,
            };
            let keep = keep.unwrap_or(settings.prune_keep) as usize;
            let plan = prune::prune(&aws, t.as_ref(), keep, dry_run).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            let text: Vec<String> = plan
                .iter()
                .map(|p| match &p.kept_because {
                    Some(why) => format!("kept\t{}\t{}\t{why}", p.image_id, p.created),
                    None => format!(
                        "{verb}\t{}\t{}\tsnapshots {}",
                        p.image_id,
                        p.created,
                        p.snapshots.join(",")
                    ),
                })
                .collect();
            let json = serde_json::json!({ "dry_run": dry_run, "keep": keep, "images": plan });
            output::emit(output, &json, &text.join("\n"))?;
            Ok(Exit::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> cli::Global {
        let mut argv = vec!["bake"];
        argv.extend_from_slice(args);
        argv.push("validate");
        Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn test_aws_precedence_is_flag_env_file() {
        let file = bake_common::aws::AwsSettings {
            region: Some("file-region".into()),
            profile: Some("file-profile".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        let env = |k: &str| match k {
            "AWS_REGION" => Some("env-region".to_owned()),
            "AWS_PROFILE" => Some("env-profile".to_owned()),
            _ => None,
        };
        let a = aws_precedence(
            &file,
            &global(&["--region", "flag-region", "--profile", "p"]),
            env,
        );
        assert_eq!(a.region.as_deref(), Some("flag-region"));
        assert_eq!(a.profile.as_deref(), Some("p"));
        assert_eq!(a.endpoint_url, file.endpoint_url);
        let a = aws_precedence(&file, &global(&[]), env);
        assert_eq!(a.region.as_deref(), Some("env-region"));
        assert_eq!(a.profile.as_deref(), Some("env-profile"));
        let a = aws_precedence(&file, &global(&[]), |k| {
            (k == "AWS_DEFAULT_REGION").then(|| "default-region".to_owned())
        });
        assert_eq!(a.region.as_deref(), Some("default-region"));
        let a = aws_precedence(&file, &global(&[]), |_| Some(String::new()));
        assert_eq!(a.region.as_deref(), Some("file-region"));
        assert_eq!(a.profile.as_deref(), Some("file-profile"));
        let a = aws_precedence(&Default::default(), &global(&[]), |_| None);
        assert_eq!((a.region, a.profile), (None, None));
    }
}
