//! `bake release`: a launch template version with the new image, made the default, and an
//! instance refresh towards it, watched to the end.
//!
//! Ordering: the refresh is started only after the new version is the default; if starting it
//! fails, the previous default is restored and the new version deleted, so a failed release
//! leaves the launch template as it was. A refresh that does not end `Successful` also restores
//! the previous default (AWS's own rollback restores the group, not the template's default).

use std::time::Duration;

use crate::aws::Aws;
use aws_sdk_autoscaling::types::{
    AlarmSpecification, DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
    RefreshStrategy,
};
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::{RefreshSettings, Settings};
use crate::exit::{coded, Exit};
use crate::output::Progress;
use crate::refresh::{self, Outcome, Snapshot, WatchEnd, WatchOptions};
use crate::targets::Targets;

/// `bake release` options.
#[derive(Clone, Debug, Default)]
pub struct ReleaseOptions {
    /// Release this AMI instead of building.
    pub ami: Option<String>,
    /// Build options.
    pub build: crate::build::BuildOptions,
    /// Start the refresh and return.
    pub no_wait: bool,
    /// Overrides `refresh.timeout`.
    pub timeout: Option<Duration>,
    /// Wait for a refresh already in progress, then release.
    pub wait_for_current: bool,
    /// An interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the refresh instead of detaching.
    pub cancel_on_interrupt: bool,
}

/// The result of a release, as printed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReleaseReport {
    /// Targets.
    pub auto_scaling_group: String,
    /// Launch template id.
    pub launch_template_id: String,
    /// The image released.
    pub image_id: String,
    /// Whether the image came from the bake cache.
    pub reused: Option<bool>,
    /// The default version before.
    pub previous_version: i64,
    /// The new version.
    pub version: i64,
    /// The refresh.
    pub instance_refresh_id: String,
    /// `successful`, `partial` (`refresh.partial`), `failed`, `cancelled`, `rolled_back`,
    /// `rollback_failed`, `timed_out`, `detached` or `started` (`--no-wait`).
    pub result: String,
    /// The refresh's last known state.
    pub refresh: Option<Snapshot>,
    /// Whether the launch template default was set back to `previous_version`.
    pub restored_default: bool,
    /// `DescribeInstanceRefreshes` calls made while watching.
    pub polls: u32,
    /// Seconds watched.
    pub watch_secs: f64,
}

fn aws_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    what: String,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> anyhow::Error {
    move |e| coded(Exit::Aws, format!("{what}: {}", DisplayErrorContext(&e)))
}

/// The default and latest version numbers of a launch template.
pub async fn template_versions(aws: &Aws, lt: &str) -> anyhow::Result<(i64, i64)> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_ids(lt)
        .send()
        .await
        .map_err(aws_err(format!("describing launch template '{lt}'")))?;
    let t = out
        .launch_templates()
        .first()
        .ok_or_else(|| coded(Exit::Aws, format!("launch template '{lt}' does not exist")))?;
    Ok((
        t.default_version_number().unwrap_or(1),
        t.latest_version_number().unwrap_or(1),
    ))
}

/// The image of version `version` of `lt`.
pub async fn version_image(aws: &Aws, lt: &str, version: i64) -> anyhow::Result<Option<String>> {
    let out = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(lt)
        .versions(version.to_string())
        .send()
        .await
        .map_err(aws_err(format!(
            "describing version {version} of launch template '{lt}'"
        )))?;
    Ok(out
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .and_then(|d| d.image_id())
        .map(ToOwned::to_owned))
}

/// Sets the default version of `lt`.
pub async fn set_default(aws: &Aws, lt: &str, version: i64) -> anyhow::Result<()> {
    aws.ec2
        .modify_launch_template()
        .launch_template_id(lt)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(aws_err(format!(
            "setting the default version of launch template '{lt}' to {version}"
        )))?;
    Ok(())
}

/// The newest refresh of `asg` if it is still running.
pub async fn active_refresh(aws: &Aws, asg: &str) -> anyhow::Result<Option<Snapshot>> {
    Ok(latest_refresh(aws, asg)
        .await?
        .filter(|s| refresh::is_active(&s.status)))
}

/// The newest refresh of `asg` (AWS lists them newest first).
pub async fn latest_refresh(aws: &Aws, asg: &str) -> anyhow::Result<Option<Snapshot>> {
    let out = aws
        .asg
        .describe_instance_refreshes()
        .auto_scaling_group_name(asg)
        .max_records(5)
        .send()
        .await
        .map_err(|e| {
            coded(
                Exit::Aws,
                format!(
                    "describing instance refreshes of '{asg}': {}",
                    DisplayErrorContext(&e)
                ),
            )
        })?;
    let Some(r) = out
        .instance_refreshes()
        .iter()
        .max_by_key(|r| r.start_time().map(|t| (t.secs(), t.subsec_nanos())))
    else {
        return Ok(None);
    };
    let id = r.instance_refresh_id().unwrap_or_default().to_owned();
    let state = refresh::WatchState { id, last: None };
    Ok(match refresh::next(&state, &out) {
        refresh::Action::Wait { snapshot, .. } | refresh::Action::Done { snapshot, .. } => {
            Some(snapshot)
        }
        refresh::Action::Missing => None,
    })
}

fn in_progress_error(asg: &str, s: &Snapshot) -> anyhow::Error {
    coded(
        Exit::InProgress,
        format!(
            "auto scaling group '{asg}' already has an instance refresh in progress ({}: {}); watch it with `bake status --watch`, or run `bake release --wait-for-current` to release after it",
            s.id,
            s.describe()
        ),
    )
}

/// The refresh preferences of a release to `t`: `[refresh]`, with the stack's
/// `RollbackAlarmNames` joining `refresh.alarms`. Alarms need auto rollback (AWS refuses an
/// alarm specification without it), so stack alarms with `refresh.auto_rollback = false` are a
/// configuration error, found before anything is changed.
pub fn release_preferences(r: &RefreshSettings, t: &Targets) -> anyhow::Result<RefreshPreferences> {
    if !t.rollback_alarms.is_empty() && !r.auto_rollback {
        return Err(coded(
            Exit::Config,
            format!(
                "refresh.auto_rollback: the stack's {} output lists alarms ({}), which need refresh.auto_rollback = true",
                crate::targets::OUTPUT_ROLLBACK_ALARMS,
                t.rollback_alarms.join(", ")
            ),
        ));
    }
    let mut r = r.clone();
    for a in &t.rollback_alarms {
        if !r.alarms.contains(a) {
            r.alarms.push(a.clone());
        }
    }
    Ok(preferences(&r))
}

/// Records `prefs` in SSM ([`bake_common::refresh_preferences`]), where the agent's
/// secret-rotation rollouts read the preferences of the last release.
async fn record_preferences(
    aws: &Aws,
    asg: &str,
    prefs: &RefreshPreferences,
) -> anyhow::Result<()> {
    use bake_common::refresh_preferences::{parameter_name, Recorded};
    let name = parameter_name(asg);
    aws.ssm
        .put_parameter()
        .name(&name)
        .description(format!(
            "instance refresh preferences of the last bake release to '{asg}'"
        ))
        .value(Recorded::rolling(prefs).to_json())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| {
            coded(
                Exit::Aws,
                format!(
                    "recording the refresh preferences in SSM parameter '{name}': {}",
                    DisplayErrorContext(&e)
                ),
            )
        })?;
    tracing::debug!(parameter = %name, "refresh preferences recorded");
    Ok(())
}

/// The refresh preferences from `[refresh]`.
#[must_use]
pub fn preferences(r: &RefreshSettings) -> RefreshPreferences {
    let secs = |d: Duration| i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
    let mut p = RefreshPreferences::builder()
        .min_healthy_percentage(r.min_healthy_percentage)
        .set_max_healthy_percentage(r.max_healthy_percentage)
        .set_instance_warmup(r.instance_warmup.map(secs))
        .skip_matching(r.skip_matching)
        .auto_rollback(r.auto_rollback)
        .set_bake_time(r.bake_time.map(secs));
    if !r.checkpoint_percentages.is_empty() {
        p = p
            .set_checkpoint_percentages(Some(r.checkpoint_percentages.clone()))
            .set_checkpoint_delay(r.checkpoint_delay.map(secs));
    }
    if !r.alarms.is_empty() {
        p = p.alarm_specification(
            AlarmSpecification::builder()
                .set_alarms(Some(r.alarms.clone()))
                .build(),
        );
    }
    p.build()
}

/// Starts a refresh of `asg` towards version `version` of `lt`.
async fn start_refresh(
    aws: &Aws,
    t: &Targets,
    version: i64,
    prefs: RefreshPreferences,
) -> anyhow::Result<String> {
    let asg = &t.auto_scaling_group;
    let out = aws
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(asg)
        .strategy(RefreshStrategy::Rolling)
        .desired_configuration(
            DesiredConfiguration::builder()
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(&t.launch_template_id)
                        .version(version.to_string())
                        .build(),
                )
                .build(),
        )
        .preferences(prefs)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_autoscaling::operation::start_instance_refresh::StartInstanceRefreshError as E;
            match e.as_service_error() {
                Some(E::InstanceRefreshInProgressFault(_)) => coded(
                    Exit::InProgress,
                    format!("auto scaling group '{asg}' already has an instance refresh in progress; watch it with `bake status --watch`, or run `bake release --wait-for-current`"),
                ),
                _ => coded(Exit::Aws, format!("starting an instance refresh of '{asg}': {}", DisplayErrorContext(&e))),
            }
        })?;
    out.instance_refresh_id()
        .map(ToOwned::to_owned)
        .ok_or_else(|| {
            coded(
                Exit::Aws,
                format!("StartInstanceRefresh on '{asg}' returned no refresh id"),
            )
        })
}

/// Watch options from config and flags.
#[must_use]
pub fn watch_options(
    settings: &Settings,
    timeout: Option<Duration>,
    cancel_on_interrupt: bool,
) -> WatchOptions {
    WatchOptions {
        timeout: timeout.unwrap_or(settings.refresh.timeout),
        poll_interval: settings.refresh.poll_interval,
        max_poll_interval: settings.refresh.max_poll_interval,
        cancel_on_interrupt,
    }
}

/// Watches refresh `id` and fills `report`; returns the exit code.
pub async fn watch_into(
    aws: &Aws,
    asg: &str,
    id: &str,
    opts: WatchOptions,
    report: &mut ReleaseReport,
) -> anyhow::Result<Exit> {
    let progress = Progress::percent("refresh");
    let watched = refresh::watch(&aws.asg, asg, id, opts, &progress)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?;
    progress.finish();
    report.polls = watched.polls;
    report.watch_secs = watched.elapsed.as_secs_f64();
    let resume = format!("resume watching with `bake status --watch` (refresh {id} of '{asg}')");
    Ok(match watched.end {
        WatchEnd::Finished(outcome, snap) => {
            report.result = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(ToOwned::to_owned))
                .unwrap_or_default();
            match outcome {
                Outcome::Successful => {}
                Outcome::Partial => tracing::warn!(
                    "partial release: instance refresh {id} of '{asg}' ended {} at its last checkpoint (refresh.partial); the instances not replaced still run the previous version",
                    snap.describe()
                ),
                _ => tracing::error!("instance refresh {id} of '{asg}' ended {}", snap.describe()),
            }
            report.refresh = Some(snap);
            outcome.exit()
        }
        WatchEnd::TimedOut(snap) => {
            tracing::error!(
                "stopped watching after {}; the refresh goes on; {resume}",
                crate::output::secs(opts.timeout)
            );
            report.result = "timed_out".into();
            report.refresh = snap;
            Exit::TimedOut
        }
        WatchEnd::Detached(snap) => {
            tracing::warn!("detached; the refresh goes on; {resume}; cancel it with `aws autoscaling cancel-instance-refresh --auto-scaling-group-name {asg}` or `bake rollback`");
            report.result = "detached".into();
            report.refresh = snap;
            Exit::Interrupted
        }
    })
}

/// Runs a release to its end.
pub async fn release(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    opts: &ReleaseOptions,
) -> anyhow::Result<(ReleaseReport, Exit)> {
    let asg = &t.auto_scaling_group;
    let lt = &t.launch_template_id;
    let wopts = watch_options(settings, opts.timeout, opts.cancel_on_interrupt);
    let prefs = release_preferences(&settings.refresh, t)?;
    if let Some(current) = active_refresh(aws, asg).await? {
        if !opts.wait_for_current {
            return Err(in_progress_error(asg, &current));
        }
        tracing::info!(
            "waiting for instance refresh {} of '{asg}' to end first",
            current.id
        );
        let mut scratch = ReleaseReport::default();
        match watch_into(aws, asg, &current.id, wopts, &mut scratch).await? {
            Exit::TimedOut => {
                return Err(coded(
                    Exit::TimedOut,
                    format!(
                        "instance refresh {} of '{asg}' did not end in time",
                        current.id
                    ),
                ))
            }
            Exit::Interrupted => {
                return Err(coded(
                    Exit::Interrupted,
                    "interrupted while waiting for the current refresh; nothing was released",
                ))
            }
            _ => tracing::info!("instance refresh {} ended {}", current.id, scratch.result),
        }
    }
    if settings.refresh.auto_rollback {
        // AWS rejects AutoRollback for groups on $Default/$Latest; say so before changing anything.
        let group = crate::targets::describe_group(aws, asg).await?;
        if let Some(v) = group
            .launch_template()
            .and_then(|l| l.version())
            .filter(|v| v.starts_with('$'))
        {
            return Err(coded(
                Exit::Config,
                format!("refresh.auto_rollback: auto scaling group '{asg}' launches from launch template version {v}, and AWS rolls back only groups on a numbered version: give the group a version number (CloudFormation: !GetAtt LaunchTemplate.LatestVersionNumber) or set refresh.auto_rollback = false"),
            ));
        }
    }
    let (image_id, reused) = match &opts.ami {
        Some(ami) => {
            crate::ami::describe(&aws.ec2, ami)
                .await
                .map_err(|e| coded(Exit::Aws, format!("--ami: {e}")))?;
            (ami.clone(), None)
        }
        None => {
            let b = crate::build::build(aws, settings, &opts.build).await?;
            (b.image_id, Some(b.reused))
        }
    };
    if crate::signals::received() > 0 {
        return Err(coded(
            Exit::Interrupted,
            "interrupted before anything was released; the launch template is unchanged",
        ));
    }
    let (previous, _) = template_versions(aws, lt).await?;
    let created = aws
        .ec2
        .create_launch_template_version()
        .launch_template_id(lt)
        .source_version(previous.to_string())
        .version_description(format!("bake release of {image_id}"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image_id)
                .build(),
        )
        .send()
        .await
        .map_err(aws_err(format!(
            "creating a version of launch template '{lt}'"
        )))?;
    let version = created
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            coded(
                Exit::Aws,
                format!("CreateLaunchTemplateVersion on '{lt}' returned no version"),
            )
        })?;
    set_default(aws, lt, version).await?;
    tracing::info!(launch_template = %lt, version, previous, image_id = %image_id, "new launch template version is the default");
    let mut report = ReleaseReport {
        auto_scaling_group: asg.clone(),
        launch_template_id: lt.clone(),
        image_id: image_id.clone(),
        reused,
        previous_version: previous,
        version,
        ..ReleaseReport::default()
    };
    let started = match record_preferences(aws, asg, &prefs).await {
        Ok(()) => start_refresh(aws, t, version, prefs).await,
        Err(e) => Err(e),
    };
    let id = match started {
        Ok(id) => id,
        Err(e) => {
            // No half-done change: the template goes back to what it was.
            undo(aws, lt, previous, Some(version)).await;
            return Err(e.context(format!(
                "launch template '{lt}' restored to default version {previous}"
            )));
        }
    };
    tracing::info!(refresh = %id, "instance refresh of '{asg}' started");
    report.instance_refresh_id = id.clone();
    if opts.no_wait {
        report.result = "started".into();
        return Ok((report, Exit::Ok));
    }
    let code = watch_into(aws, asg, &id, wopts, &mut report).await?;
    if matches!(
        code,
        Exit::RefreshFailed | Exit::RolledBack | Exit::Cancelled
    ) {
        undo(aws, lt, previous, None).await;
        report.restored_default = true;
    }
    Ok((report, code))
}

/// Sets the default back to `previous` and deletes `delete` (best effort, logged).
async fn undo(aws: &Aws, lt: &str, previous: i64, delete: Option<i64>) {
    match set_default(aws, lt, previous).await {
        Ok(()) => tracing::warn!("launch template '{lt}' default version set back to {previous}"),
        Err(e) => {
            tracing::error!("could not restore the default version of '{lt}' to {previous}: {e:#}")
        }
    }
    if let Some(v) = delete {
        if let Err(e) = aws
            .ec2
            .delete_launch_template_versions()
            .launch_template_id(lt)
            .versions(v.to_string())
            .send()
            .await
        {
            tracing::warn!(
                "could not delete version {v} of '{lt}': {}",
                DisplayErrorContext(&e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_preferences_from_config() {
        let text = "[refresh]\nmin_healthy_percentage = 50\nmax_healthy_percentage = 150\ninstance_warmup = \"1m\"\ncheckpoint_percentages = [50, 100]\ncheckpoint_delay = \"2m\"\nalarms = [\"a\"]\nbake_time = \"5m\"\nskip_matching = false\n";
        let s = Settings::parse(
            text,
            std::path::Path::new("bake.toml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let p = preferences(&s.refresh);
        assert_eq!(p.min_healthy_percentage(), Some(50));
        assert_eq!(p.max_healthy_percentage(), Some(150));
        assert_eq!(p.instance_warmup(), Some(60));
        assert_eq!(p.checkpoint_percentages(), &[50, 100]);
        assert_eq!(p.checkpoint_delay(), Some(120));
        assert_eq!(p.bake_time(), Some(300));
        assert_eq!(p.skip_matching(), Some(false));
        assert_eq!(p.auto_rollback(), Some(true));
        assert_eq!(
            p.alarm_specification().map(|a| a.alarms().to_vec()),
            Some(vec!["a".to_owned()])
        );
    }
}
