//! `bake`: bake hardened AMIs with Packer and roll them out with watched, reversible instance
//! refreshes.
//!
//! Configuration: `bake.toml` (`--config`, schema in `docs/bake.md`). Results go to stdout (text
//! or `--output json`), progress and logs to stderr. Exit codes: [`exit::Exit`].

/// AMIs: inputs hash, provenance tags, bake cache, prune helpers.
pub mod ami;
/// The AWS clients bake calls.
pub mod aws;
/// `bake build`.
pub mod build;
/// The canary verdict of a release (`[canary]`).
pub mod canary;
/// Command line.
pub mod cli;
/// `bake.toml`.
pub mod config;
/// Drift: the image in the stack's parameter, the launch template, the group and the instances.
pub mod drift;
/// Exit codes and error reporting.
pub mod exit;
/// The SSM parameter naming the fleet's image.
pub mod image_parameter;
/// Boot-testing an image on one instance outside the group (`bake test-image`).
pub mod image_test;
/// The target's launch template.
pub mod launch_template;
/// The local target: a root file system image and its AMI record.
pub mod local_image;
/// The release's migration, once, on an instance of the new image (`[migrate]`).
pub mod migrate;
/// Progress on stderr, results on stdout.
pub mod output;
/// The package index state as an image input (`packer.package_indexes`).
pub mod package_index;
/// Running Packer.
pub mod packer;
/// `bake plan`.
pub mod plan;
/// `bake promote`: copies of an image in other regions, shared with other accounts.
pub mod promote;
/// `bake prune`.
pub mod prune;
/// The instance refresh state machine and poller.
pub mod refresh;
/// `bake release`.
pub mod release;
/// `bake rollback`.
pub mod rollback;
/// The rollout view: each instance's changes while a refresh is watched.
pub mod rollout;
/// Images' SBOMs: stored in S3 by `bake build`, compared by `bake release`.
pub mod sbom;
/// SIGINT, SIGTERM and SIGHUP.
pub mod signals;
/// `bake status`.
pub mod status;
/// Resolving `[target]`.
pub mod targets;
/// `bake status --timeline`: the last rollout per instance.
pub mod timeline;

use crate::aws::Aws;

use crate::cli::{Cli, Command, WatchArgs};
use crate::config::Settings;
use crate::exit::Exit;
use crate::release::ReleaseOptions;

fn watch_opts(w: &WatchArgs) -> ReleaseOptions {
    ReleaseOptions {
        no_wait: w.no_wait,
        timeout: w.timeout,
        cancel_on_interrupt: w.cancel_on_interrupt,
        ..ReleaseOptions::default()
    }
}

/// The AWS CLI's order for region and profile: flag, then environment, then bake.toml's
/// `[aws]` (then, for the region, the SDK's own chain: the profile's region, IMDS). Retries:
/// bake.toml's `aws.max_attempts` / `aws.retry_mode`, else `AWS_MAX_ATTEMPTS` /
/// `AWS_RETRY_MODE`, else 3 attempts in standard mode (each value on its own). An empty
/// variable counts as unset.
///
/// # Errors
/// A retry variable that is not a number of attempts (at least 1) or a retry mode, named.
fn aws_precedence(
    file: &bake_common::aws::AwsSettings,
    flags: &cli::Global,
    env: impl Fn(&str) -> Option<String>,
) -> Result<bake_common::aws::AwsSettings, config::ConfigError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let invalid = |key: &str, message: String| config::ConfigError::Invalid {
        file: "environment".to_owned(),
        key: key.to_owned(),
        message,
    };
    let max_attempts = match (file.max_attempts, env("AWS_MAX_ATTEMPTS")) {
        (Some(n), _) => Some(n),
        (None, None) => None,
        (None, Some(v)) => Some(v.trim().parse().map_err(|_| {
            invalid(
                "AWS_MAX_ATTEMPTS",
                format!("'{v}' is not a number of attempts (1 or more)"),
            )
        })?),
    };
    let retry_mode = match (file.retry_mode, env("AWS_RETRY_MODE")) {
        (Some(m), _) => Some(m),
        (None, None) => None,
        (None, Some(v)) => Some(v.parse().map_err(|m| invalid("AWS_RETRY_MODE", m))?),
    };
    Ok(bake_common::aws::AwsSettings {
        max_attempts,
        retry_mode,
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
    })
}

/// The exit code of a failed command: the one place where an error becomes a code. The chain is
/// read from the outside in, and the first error with a code decides (an `anyhow` context has
/// none); an error no module raised is [`Exit::Internal`]. The matches name every variant, so a
/// new one gets its code here.
#[must_use]
pub fn exit_code(err: &anyhow::Error) -> Exit {
    bake_common::exit::first_code(err.as_ref(), code_of).unwrap_or(Exit::Internal)
}

/// What the operator is told about a failed command: its exit code from [`exit_code`], and one
/// line saying what to do for the common failures — no credentials, an endpoint that does not
/// answer (a wrong region or endpoint URL), a group that does not exist, no Packer — else the
/// error and its causes without the SDK's debug dump (that comes with `-v`).
#[must_use]
pub fn failure(err: &anyhow::Error) -> exit::Failure {
    use bake_common::aws::CallFailure;
    let exit = exit_code(err);
    let (plain, causes) = exit::plain_chain(err.as_ref());
    let (code, message, causes) = match bake_common::aws::call_failure(err.as_ref()) {
        Some(CallFailure::NoCredentials) => (
            "no_credentials",
            exit::NO_CREDENTIALS.to_owned(),
            Vec::new(),
        ),
        Some(CallFailure::Credentials { reason }) => (
            "credentials",
            format!(
                "cannot load AWS credentials ({reason}): check the profile (--profile, \
                 AWS_PROFILE, aws.profile), run 'aws sso login' if it uses SSO, or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
            Vec::new(),
        ),
        Some(CallFailure::NoAnswer {
            service,
            endpoint,
            reason,
            ..
        }) => (
            "no_answer",
            format!(
                "no answer from {service} at {endpoint} ({reason}): check the region \
                 (--region, AWS_REGION, aws.region), the endpoint (AWS_ENDPOINT_URL, \
                 aws.endpoint_url) and the network"
            ),
            Vec::new(),
        ),
        None => {
            let code = bake_common::exit::chain(err.as_ref())
                .find_map(|e| {
                    match e.downcast_ref::<targets::TargetError>() {
                        Some(targets::TargetError::NoGroup { .. }) => return Some("no_group"),
                        Some(targets::TargetError::NoStack { .. }) => return Some("no_stack"),
                        _ => {}
                    }
                    if e.downcast_ref::<bake_common::exit::Coded<Exit>>()
                        .is_some_and(|c| c.message == exit::NO_REGION)
                    {
                        return Some("no_region");
                    }
                    if matches!(
                        e.downcast_ref::<packer::PackerError>(),
                        Some(packer::PackerError::NotFound { .. })
                    ) {
                        Some("no_packer")
                    } else {
                        None
                    }
                })
                .unwrap_or_else(|| exit.name());
            (code, plain, causes)
        }
    };
    exit::Failure {
        exit,
        code,
        message,
        causes,
    }
}

/// The code of one error of a chain, if it has one ([`exit_code`]).
fn code_of(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    use crate::ami::AmiError;
    use crate::build::BuildError;
    use crate::launch_template::LaunchTemplateError;
    use crate::packer::PackerError;
    use crate::refresh::RefreshError;
    use crate::release::ReleaseError;
    use crate::rollback::RollbackError;
    use crate::status::StatusError;
    use crate::targets::TargetError;
    use bake_common::exit::StdoutError;
    if e.is::<config::ConfigError>() {
        return Some(Exit::Config);
    }
    if let Some(e) = e.downcast_ref::<StdoutError>() {
        return Some(match e {
            StdoutError::Closed => Exit::StdoutClosed,
            StdoutError::Write(_) => Exit::Internal,
        });
    }
    if let Some(e) = e.downcast_ref::<TargetError>() {
        return Some(match e {
            TargetError::GroupWithoutLaunchTemplate { .. } | TargetError::NoOutput { .. } => {
                Exit::Config
            }
            TargetError::DescribeGroup { .. }
            | TargetError::NoGroup { .. }
            | TargetError::DescribeLaunchTemplate { .. }
            | TargetError::NoLaunchTemplate { .. }
            | TargetError::DescribeStack { .. }
            | TargetError::NoStack { .. } => Exit::Aws,
        });
    }
    if let Some(e) = e.downcast_ref::<LaunchTemplateError>() {
        return Some(match e {
            LaunchTemplateError::Describe { .. }
            | LaunchTemplateError::Missing { .. }
            | LaunchTemplateError::SetDefault { .. }
            | LaunchTemplateError::DescribeVersions { .. } => Exit::Aws,
        });
    }
    if let Some(e) = e.downcast_ref::<RefreshError>() {
        return Some(match e {
            RefreshError::Describe { .. }
            | RefreshError::Cancel { .. }
            | RefreshError::Missing { .. } => Exit::Aws,
        });
    }
    if let Some(e) = e.downcast_ref::<ReleaseError>() {
        return Some(match e {
            ReleaseError::InProgress { .. } | ReleaseError::StartedMeanwhile { .. } => {
                Exit::InProgress
            }
            ReleaseError::Start { .. }
            | ReleaseError::NoRefreshId { .. }
            | ReleaseError::CreateVersion { .. }
            | ReleaseError::NoVersion { .. }
            | ReleaseError::RecordPreferences { .. }
            | ReleaseError::Ami { .. } => Exit::Aws,
            ReleaseError::CanaryObserve { .. } | ReleaseError::CanaryAct { .. } => Exit::Aws,
            ReleaseError::AlarmsNeedAutoRollback { .. }
            | ReleaseError::UnnumberedVersion { .. }
            | ReleaseError::CanaryNeedsWait => Exit::Config,
            ReleaseError::CurrentTimedOut { .. } => Exit::TimedOut,
            ReleaseError::Untested { .. } => Exit::Untested,
            ReleaseError::NotPromoted { .. } => Exit::NotPromoted,
            ReleaseError::TestFailed { .. } => Exit::ImageTestFailed,
            ReleaseError::MigrationFailed { .. } => Exit::MigrationFailed,
            ReleaseError::InterruptedWaiting | ReleaseError::Interrupted => Exit::Interrupted,
        });
    }
    if let Some(e) = e.downcast_ref::<RollbackError>() {
        return Some(match e {
            RollbackError::Rollback { .. } => Exit::Aws,
            RollbackError::NoPreviousVersion { .. } => Exit::Config,
        });
    }
    if let Some(e) = e.downcast_ref::<image_test::ImageTestError>() {
        return Some(match e {
            image_test::ImageTestError::Call { .. }
            | image_test::ImageTestError::NoInstance { .. } => Exit::Aws,
            image_test::ImageTestError::Interrupted { .. } => Exit::Interrupted,
        });
    }
    if let Some(e) = e.downcast_ref::<migrate::MigrateError>() {
        return Some(match e {
            migrate::MigrateError::Interrupted { .. } => Exit::Interrupted,
        });
    }
    if let Some(e) = e.downcast_ref::<promote::PromoteError>() {
        use promote::PromoteError as P;
        return Some(match e {
            P::NotBakeMade { .. }
            | P::NoStage { .. }
            | P::DefaultKeyNotShareable { .. }
            | P::KmsKey { .. } => Exit::Config,
            P::SourceNotAvailable { .. }
            | P::HashMismatch { .. }
            | P::CopyFailed { .. }
            | P::Call { .. } => Exit::Aws,
            P::TimedOut { .. } => Exit::TimedOut,
            P::Interrupted { .. } => Exit::Interrupted,
        });
    }
    if e.downcast_ref::<timeline::TimelineError>().is_some() {
        return Some(Exit::Aws);
    }
    if let Some(e) = e.downcast_ref::<StatusError>() {
        return Some(match e {
            StatusError::DescribeInstances { .. } | StatusError::GetImageParameter { .. } => {
                Exit::Aws
            }
        });
    }
    if e.downcast_ref::<package_index::IndexError>().is_some() {
        return Some(Exit::Build);
    }
    if let Some(e) = e.downcast_ref::<BuildError>() {
        return Some(match e {
            BuildError::NoRegion
            | BuildError::Console { .. }
            | BuildError::Validate(_)
            | BuildError::ValidateTimedOut => Exit::Config,
            BuildError::SourceAmi { .. } | BuildError::BaseImage { .. } => Exit::Aws,
            BuildError::NoAmi => Exit::Build,
        });
    }
    if let Some(e) = e.downcast_ref::<PackerError>() {
        return Some(match e {
            PackerError::Interrupted => Exit::Interrupted,
            PackerError::Spawn { .. }
            | PackerError::NotFound { .. }
            | PackerError::Version { .. }
            | PackerError::Template { .. } => Exit::Config,
            PackerError::Failed { .. }
            | PackerError::TimedOut(_)
            | PackerError::NoArtifact
            | PackerError::Io { .. } => Exit::Build,
        });
    }
    if let Some(e) = e.downcast_ref::<AmiError>() {
        return Some(match e {
            AmiError::Input { .. } => Exit::Config,
            AmiError::Ec2 { .. } | AmiError::NoImage { .. } => Exit::Aws,
        });
    }
    None
}

/// Runs one command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    signals::install()
        .map_err(|e| anyhow::anyhow!("cannot handle SIGINT, SIGTERM and SIGHUP: {e}"))?;
    if let Command::Completion { shell } = cli.command {
        output::print(crate::cli::completion(shell).trim_end())?;
        return Ok(Exit::Ok);
    }
    if let Command::Manpage { dir } = &cli.command {
        let pages = cli::manpages(dir).map_err(|e| {
            bake_common::exit::Coded::new(
                Exit::Config,
                format!("cannot write man pages into '{}': {e}", dir.display()),
            )
        })?;
        let names: Vec<String> = pages.iter().map(|p| p.display().to_string()).collect();
        let json = serde_json::json!({ "pages": names });
        output::emit(cli.global.output, &json, &names.join("\n"))?;
        return Ok(Exit::Ok);
    }
    let mut settings = Settings::load(&cli.global.config)?;
    settings.aws = aws_precedence(&settings.aws, &cli.global, |k| std::env::var(k).ok())?;
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
    if aws.region.is_none() && !matches!(cli.command, Command::Build(_)) {
        // `build` says it itself (build::BuildError::NoRegion).
        return Err(bake_common::exit::Coded::new(Exit::Aws, exit::NO_REGION).into());
    }
    match cli.command {
        Command::Validate | Command::Completion { .. } | Command::Manpage { .. } => {
            unreachable!("handled above")
        }
        Command::Build(c) => {
            let b = c.build;
            if c.if_changed && settings.packer()?.package_indexes.is_empty() {
                tracing::warn!("--if-changed: packer.package_indexes is not set, so an update of the archives the image installs from (a security update) is no change; set it to their InRelease URLs (docs/bake.md)");
            }
            let r = build::build(
                &aws,
                &settings,
                &build::BuildOptions {
                    force: b.force,
                    app_release: b.app_release,
                },
            )
            .await?;
            if c.if_changed {
                match (&r.reused, &r.changed_since) {
                    (true, _) => tracing::info!(
                        "unchanged: {} was built from the same inputs; nothing baked",
                        r.image_id
                    ),
                    (false, Some(prev)) => tracing::info!(
                        "changed since {prev}: {}; baked {}",
                        r.changes.join(", "),
                        r.image_id
                    ),
                    (false, None) => {
                        tracing::info!("no image of this template before; baked {}", r.image_id);
                    }
                }
            }
            if !c.test {
                output::emit(output, &serde_json::to_value(&r)?, &build::render(&r))?;
                return Ok(Exit::Ok);
            }
            let t = targets::resolve(&aws, settings.target()?).await?;
            let tr = image_test::test_image(&aws, &settings, &t, &r.image_id, None).await?;
            let mut json = serde_json::to_value(&r)?;
            json["image_test"] = serde_json::to_value(&tr)?;
            let text = build::render(&r) + "\n" + &image_test::render(&tr);
            output::emit(output, &json, text.trim_end())?;
            Ok(if tr.passed() {
                Exit::Ok
            } else {
                Exit::ImageTestFailed
            })
        }
        Command::TestImage { ami, timeout } => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let tr = image_test::test_image(&aws, &settings, &t, &ami, timeout).await?;
            output::emit(
                output,
                &serde_json::to_value(&tr)?,
                image_test::render(&tr).trim_end(),
            )?;
            Ok(if tr.passed() {
                Exit::Ok
            } else {
                Exit::ImageTestFailed
            })
        }
        Command::Release(a) => {
            if a.ami.is_none() {
                // Before any AWS call: a release that cannot build changes nothing.
                packer::locate(&settings.packer()?.binary)?;
            }
            let t = targets::resolve(&aws, settings.target()?).await?;
            let opts = ReleaseOptions {
                ami: a.ami,
                build: build::BuildOptions {
                    force: a.build.force,
                    app_release: a.build.app_release,
                },
                wait_for_current: a.wait_for_current,
                test: a.test,
                untested: a.untested,
                skip_migrate: a.skip_migrate,
                ..watch_opts(&a.watch)
            };
            let released = release::release(&aws, &settings, &t, &opts).await;
            let (report, code) = released.inspect_err(|e| {
                let f = failure(e);
                let md = release::failure_markdown("bake release", &t.auto_scaling_group, &f);
                output::step_summary(&md);
            })?;
            output::step_summary(&release::markdown("bake release", &report));
            output::emit(
                output,
                &serde_json::to_value(&report)?,
                &release::render(&report),
            )?;
            Ok(code)
        }
        Command::Plan(a) => {
            if a.ami.is_none() {
                // As for a release: no Packer is said before any AWS call.
                packer::locate(&settings.packer()?.binary)?;
            }
            let t = targets::resolve(&aws, settings.target()?).await?;
            let opts = plan::PlanOptions {
                ami: a.ami,
                build: build::BuildOptions {
                    force: a.build.force,
                    app_release: a.build.app_release,
                },
            };
            let p = plan::plan(&aws, &settings, &t, &opts).await?;
            output::emit(output, &serde_json::to_value(&p)?, &plan::render(&p))?;
            Ok(p.exit())
        }
        Command::Rollback(w) => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let (report, code) = rollback::rollback(&aws, &settings, &t, &watch_opts(&w)).await?;
            output::step_summary(&release::markdown("bake rollback", &report));
            output::emit(
                output,
                &serde_json::to_value(&report)?,
                &rollback::render(&report),
            )?;
            Ok(code)
        }
        Command::Status {
            watch,
            timeout,
            check,
            timeline,
        } => {
            let t = targets::resolve(&aws, settings.target()?).await?;
            let watched = if watch {
                status::watch(&aws, &settings, &t, timeout).await?
            } else {
                None
            };
            let fleet = status::fleet(&aws, &t).await?;
            let drift = drift::read(&aws, &fleet, settings.image_parameter.as_deref()).await?;
            let mut json = status::json(&fleet, watched.as_ref())?;
            json["drift"] = serde_json::to_value(&drift)?;
            let mut text = status::render(&fleet) + &drift::render(&drift);
            if timeline {
                let tl = timeline::read(&aws, &t.auto_scaling_group).await?;
                text.push_str(&timeline::render(&tl));
                json["timeline"] = serde_json::to_value(&tl)?;
            }
            output::emit(output, &json, &text)?;
            Ok(match watched.map_or(Exit::Ok, |w| w.exit) {
                Exit::Ok if check && drift.drifted() => Exit::Drift,
                code => code,
            })
        }
        Command::Promote(a) => {
            let opts = promote::PromoteOptions {
                ami: a.ami,
                to: a.to,
                accounts: a.accounts,
                kms_key: a.kms_key,
                from_stage: a.from_stage,
                timeout: a.timeout,
            };
            let r = promote::promote(&aws, &settings, &opts).await?;
            output::emit(output, &serde_json::to_value(&r)?, &promote::render(&r))?;
            Ok(Exit::Ok)
        }
        Command::Prune { keep, dry_run } => {
            let t = match &settings.target {
                Some(target) => Some(targets::resolve(&aws, target).await?),
                None => None,
            };
            let keep = keep.unwrap_or(settings.prune_keep) as usize;
            let stages = settings.prune_stages;
            let plan = prune::prune(
                &aws,
                prune::Request {
                    targets: t.as_ref(),
                    image_parameter: settings.image_parameter.as_deref(),
                    keep,
                    stages,
                    dry_run,
                },
            )
            .await?;
            let json = serde_json::json!({
                "dry_run": dry_run,
                "keep": keep,
                "disable_after": humantime::format_duration(stages.disable_after).to_string(),
                "deregister_after": humantime::format_duration(stages.deregister_after).to_string(),
                "images": plan,
            });
            output::emit(output, &json, &prune::render(&plan, dry_run))?;
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
    fn test_exit_code_is_decided_by_the_outermost_typed_error() {
        use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsError;
        type GroupsError = aws_sdk_autoscaling::error::SdkError<DescribeAutoScalingGroupsError>;
        let aws = anyhow::Error::new(crate::targets::TargetError::DescribeGroup {
            asg: "web".into(),
            source: Box::new(GroupsError::construction_failure("no region")),
        });
        assert_eq!(exit_code(&aws), Exit::Aws);
        // The SDK's error stays whole, for a caller that asks for the service error.
        match aws.downcast_ref::<crate::targets::TargetError>() {
            Some(crate::targets::TargetError::DescribeGroup { source, .. }) => {
                assert!(source.as_service_error().is_none(), "{source:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(aws.chain().any(|e| e.is::<Box<GroupsError>>()), "{aws:?}");
        assert!(aws
            .to_string()
            .starts_with("describing auto scaling group 'web': "));
        let config = anyhow::Error::new(crate::targets::TargetError::NoOutput {
            stack: "s".into(),
            key: crate::targets::OUTPUT_ASG,
        })
        .context("resolving the targets");
        assert_eq!(exit_code(&config), Exit::Config);
        let input = || crate::ami::AmiError::Input {
            key: "packer.template",
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(exit_code(&input().into()), Exit::Config);
        // Wrapped, the outer error decides.
        let ami = release::ReleaseError::Ami { source: input() };
        assert_eq!(exit_code(&ami.into()), Exit::Aws);
        let in_progress = release::ReleaseError::StartedMeanwhile { asg: "web".into() };
        assert_eq!(
            exit_code(&anyhow::Error::new(in_progress).context("restored")),
            Exit::InProgress
        );
        let closed = bake_common::exit::StdoutError::Closed;
        assert_eq!(exit_code(&closed.into()), Exit::StdoutClosed);
        assert_eq!(
            exit_code(&packer::PackerError::Interrupted.into()),
            Exit::Interrupted
        );
        assert_eq!(exit_code(&anyhow::anyhow!("unforeseen")), Exit::Internal);
        let coded = bake_common::exit::Coded::new(Exit::Build, "x");
        assert_eq!(exit_code(&coded.into()), Exit::Build);
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
        )
        .unwrap();
        assert_eq!(a.region.as_deref(), Some("flag-region"));
        assert_eq!(a.profile.as_deref(), Some("p"));
        assert_eq!(a.endpoint_url, file.endpoint_url);
        let a = aws_precedence(&file, &global(&[]), env).unwrap();
        assert_eq!(a.region.as_deref(), Some("env-region"));
        assert_eq!(a.profile.as_deref(), Some("env-profile"));
        let a = aws_precedence(&file, &global(&[]), |k| {
            (k == "AWS_DEFAULT_REGION").then(|| "default-region".to_owned())
        })
        .unwrap();
        assert_eq!(a.region.as_deref(), Some("default-region"));
        let a = aws_precedence(&file, &global(&[]), |_| Some(String::new())).unwrap();
        assert_eq!(a.region.as_deref(), Some("file-region"));
        assert_eq!(a.profile.as_deref(), Some("file-profile"));
        let a = aws_precedence(&Default::default(), &global(&[]), |_| None).unwrap();
        assert_eq!((a.region, a.profile), (None, None));
    }

    #[test]
    fn test_retry_settings_are_file_then_env_then_default() {
        use bake_common::aws::{retry_config, AwsSettings, RetryMode};
        use std::num::NonZeroU32;
        let env = |k: &str| match k {
            "AWS_MAX_ATTEMPTS" => Some("7".to_owned()),
            "AWS_RETRY_MODE" => Some("adaptive".to_owned()),
            _ => None,
        };
        let none = AwsSettings::default();
        // The environment where the file says nothing.
        let a = aws_precedence(&none, &global(&[]), env).unwrap();
        assert_eq!(a.max_attempts, NonZeroU32::new(7));
        assert_eq!(a.retry_mode, Some(RetryMode::Adaptive));
        let rc = retry_config(&a);
        assert_eq!(rc.max_attempts(), 7);
        assert_eq!(rc.mode(), aws_config::retry::RetryMode::Adaptive);
        // The file wins, each value on its own.
        let file: AwsSettings = toml::from_str("max_attempts = 2").unwrap();
        let a = aws_precedence(&file, &global(&[]), env).unwrap();
        assert_eq!(a.max_attempts, NonZeroU32::new(2));
        assert_eq!(a.retry_mode, Some(RetryMode::Adaptive));
        let file: AwsSettings = toml::from_str("retry_mode = \"standard\"").unwrap();
        let a = aws_precedence(&file, &global(&[]), env).unwrap();
        assert_eq!(a.max_attempts, NonZeroU32::new(7));
        assert_eq!(
            retry_config(&a).mode(),
            aws_config::retry::RetryMode::Standard
        );
        // Neither: 3 attempts, standard; an empty variable counts as unset.
        let a = aws_precedence(&none, &global(&[]), |_| Some(" ".to_owned())).unwrap();
        let rc = retry_config(&a);
        assert_eq!(rc.max_attempts(), bake_common::aws::DEFAULT_MAX_ATTEMPTS);
        assert_eq!(rc.mode(), aws_config::retry::RetryMode::Standard);
        // A bad value is an error naming the variable (the SDK itself would panic on it).
        for (k, v, want) in [
            ("AWS_MAX_ATTEMPTS", "0", "not a number of attempts"),
            ("AWS_MAX_ATTEMPTS", "three", "not a number of attempts"),
            (
                "AWS_RETRY_MODE",
                "legacy",
                "not a retry mode: standard or adaptive",
            ),
        ] {
            let e = aws_precedence(&none, &global(&[]), |key| (key == k).then(|| v.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("environment: {k}: '{v}'")), "{e}");
            assert!(e.contains(want), "{e}");
        }
        // bake.toml's value is checked where it is parsed.
        let e = toml::from_str::<AwsSettings>("retry_mode = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry_mode"), "{e}");
    }
}
