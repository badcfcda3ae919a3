//! `bake release`: a launch template version with the new image, made the default, and an
//! instance refresh towards it, watched to the end.
//!
//! Ordering: the refresh is started only after the new version is the default; if starting it
//! fails, the previous default is restored and the new version deleted, so a failed release
//! leaves the launch template as it was. A refresh that does not end `Successful` also restores
//! the previous default (AWS's own rollback restores the group, not the template's default).
//!
//! Before any of that, with `[migrate]`, the release's migration runs once on an instance of
//! the new image outside the group ([`crate::migrate`]); unless it exits 0 the release stops
//! there (exit [`Exit::MigrationFailed`]) with the launch template untouched.
//!
//! Only a refresh watched to `Successful` (or `partial`) sets `target.image_parameter` to the
//! new image ([`crate::image_parameter`]); if that fails, the release is reported as it ended,
//! with exit [`Exit::ImageParameter`].

use std::time::Duration;

use crate::aws::Aws;
use aws_sdk_autoscaling::operation::start_instance_refresh::StartInstanceRefreshError;
use aws_sdk_autoscaling::types::{
    AlarmSpecification, DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
    RefreshStrategy,
};
use aws_sdk_ec2::operation::create_launch_template_version::CreateLaunchTemplateVersionError;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::{RefreshSettings, Settings};
use crate::exit::Exit;
use crate::image_parameter::Recorded;
use crate::refresh::{self, Snapshot, WatchOptions};
use crate::rollout::{Releases, Rollout, View};
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
    /// Boot-test the image first ([`crate::image_test`]) unless it passed already.
    pub test: bool,
    /// Release an image that is not tagged `bake:tested=pass`.
    pub untested: bool,
    /// Do not run `[migrate]`'s migration.
    pub skip_migrate: bool,
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
    /// Its `bake:app-version`, if known.
    pub app_version: Option<String>,
    /// The image of `previous_version`, if known.
    pub previous_image_id: Option<String>,
    /// Its `bake:app-version`, if known.
    pub previous_app_version: Option<String>,
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
    /// Seconds the whole command took (build included).
    pub duration_secs: f64,
    /// What the instances did while watched (the rollout view's lines and counts); `None`
    /// when not watched (`--no-wait`).
    pub rollout: Option<Rollout>,
    /// Rollbacks of the refresh seen (AWS's own on a failure or an alarm, or `bake
    /// rollback`'s): 0 or 1.
    pub rollbacks: u32,
    /// `target.image_parameter` after the release (`None` when bake.toml names none).
    pub image_parameter: Option<crate::image_parameter::Recorded>,
    /// The canary's verdict (`[canary]`; `None` without one, or when the refresh ended before
    /// its checkpoint).
    pub canary: Option<crate::canary::Verdict>,
    /// The refresh that held at the canary's checkpoint (with a passed verdict,
    /// `instance_refresh_id` is the one that went on from there).
    pub canary_refresh_id: Option<String>,
    /// What the image's tags said of its boot test when it was released: `pass`, `fail` or
    /// `untested` (the last two only with `--untested`, or `image_test.required = false`).
    pub tested: Option<String>,
    /// The boot test this release ran (`--test`); `None` without one.
    pub image_test: Option<crate::image_test::ImageTestReport>,
    /// The migration this release ran before its refresh (`[migrate]`); `None` without one
    /// (or with `--skip-migrate`).
    pub migrate: Option<crate::migrate::MigrationReport>,
    /// What differs between the running image's SBOM and the new one's, printed before the
    /// refresh starts ([`crate::sbom`]); `None` when the image does not change.
    pub sbom_diff: Option<crate::sbom::SbomDiff>,
}

/// How many differences of the SBOMs `bake release` prints (all of them are in its JSON).
const SBOM_LINES: usize = 60;

/// What can go wrong in a release, besides the errors of the steps it takes (targets, build,
/// launch template, refresh). The SDK's errors are kept whole (boxed: they are large), so a
/// caller can ask for the service error.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A refresh is running and `--wait-for-current` was not given.
    #[error("auto scaling group '{asg}' already has an instance refresh in progress ({}: {}); watch it with `bake status --watch`, or run `bake release --wait-for-current` to release after it", .current.id, .current.describe())]
    InProgress {
        /// The group.
        asg: String,
        /// The refresh in progress (boxed: it is large).
        current: Box<Snapshot>,
    },
    /// `StartInstanceRefresh` answered `InstanceRefreshInProgress` (a refresh started since the
    /// check).
    #[error("auto scaling group '{asg}' already has an instance refresh in progress; watch it with `bake status --watch`, or run `bake release --wait-for-current`")]
    StartedMeanwhile {
        /// The group.
        asg: String,
    },
    /// `StartInstanceRefresh` failed.
    #[error("starting an instance refresh of '{asg}': {}", DisplayErrorContext(.source))]
    Start {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<aws_sdk_autoscaling::error::SdkError<StartInstanceRefreshError>>,
    },
    /// `StartInstanceRefresh` named no refresh.
    #[error("StartInstanceRefresh on '{asg}' returned no refresh id")]
    NoRefreshId {
        /// The group.
        asg: String,
    },
    /// `CreateLaunchTemplateVersion` failed.
    #[error("creating a version of launch template '{lt}': {}", DisplayErrorContext(.source))]
    CreateVersion {
        /// The launch template id.
        lt: String,
        /// The SDK's error.
        source: Box<aws_sdk_ec2::error::SdkError<CreateLaunchTemplateVersionError>>,
    },
    /// `CreateLaunchTemplateVersion` named no version.
    #[error("CreateLaunchTemplateVersion on '{lt}' returned no version")]
    NoVersion {
        /// The launch template id.
        lt: String,
    },
    /// `PutParameter` of the refresh preferences failed.
    #[error("recording the refresh preferences in SSM parameter '{name}': {}", DisplayErrorContext(.source))]
    RecordPreferences {
        /// The SSM parameter.
        name: String,
        /// The SDK's error.
        source: Box<aws_sdk_ssm::error::SdkError<PutParameterError>>,
    },
    /// The image is not tagged `bake:tested=pass` and `image_test.required` holds.
    #[error("{ami} {state}: boot-test it with `bake test-image {ami}` (or `bake release --test`), or release it anyway with --untested (image_test.required = true)")]
    Untested {
        /// The image.
        ami: String,
        /// What its tags say ([`crate::image_test::Tested::describe`]).
        state: String,
    },
    /// `release.require_promoted_from`: the image was not promoted from that stage.
    #[error("{ami} {why}: release.require_promoted_from = \"{required}\" releases only images `bake promote` copied here from {required}; nothing was released")]
    NotPromoted {
        /// The image.
        ami: String,
        /// The stage required.
        required: String,
        /// What its tags say ([`crate::promote::not_promoted_from`]).
        why: String,
    },
    /// `--test`: the image failed its boot test; nothing was released.
    #[error("{ami} failed its boot test on {instance}: {why}; nothing was released")]
    TestFailed {
        /// The image.
        ami: String,
        /// The test instance.
        instance: String,
        /// The failed checks with their details, or the reason.
        why: String,
    },
    /// `[migrate]`: the migration failed or gave no result; nothing was released.
    #[error("the migration of {ami} failed on {instance} ({why}); nothing was released: no launch template version, no refresh")]
    MigrationFailed {
        /// The image.
        ami: String,
        /// The migration instance.
        instance: String,
        /// The exit code or the reason ([`crate::migrate::MigrationReport::why`]).
        why: String,
    },
    /// `--ami` names no image that can be described.
    #[error("--ami: {source}")]
    Ami {
        /// Why.
        source: crate::ami::AmiError,
    },
    /// The stack's alarms need `refresh.auto_rollback`.
    #[error("refresh.auto_rollback: the stack's {} output lists alarms ({}), which need refresh.auto_rollback = true", crate::targets::OUTPUT_ROLLBACK_ALARMS, .alarms.join(", "))]
    AlarmsNeedAutoRollback {
        /// The stack's alarms.
        alarms: Vec<String>,
    },
    /// Auto rollback asked for a group that launches from `$Default` or `$Latest`.
    #[error("refresh.auto_rollback: auto scaling group '{asg}' launches from launch template version {version}, and AWS rolls back only groups on a numbered version: give the group a version number (CloudFormation: !GetAtt LaunchTemplate.LatestVersionNumber) or set refresh.auto_rollback = false")]
    UnnumberedVersion {
        /// The group.
        asg: String,
        /// `$Default` or `$Latest`.
        version: String,
    },
    /// `--wait-for-current`: the refresh in progress did not end within the timeout.
    #[error("instance refresh {id} of '{asg}' did not end in time")]
    CurrentTimedOut {
        /// The group.
        asg: String,
        /// The refresh waited for.
        id: String,
    },
    /// `--wait-for-current`: interrupted while waiting.
    #[error("interrupted while waiting for the current refresh; nothing was released")]
    InterruptedWaiting,
    /// Interrupted during the build or before the launch template changed.
    #[error("interrupted before anything was released; the launch template is unchanged")]
    Interrupted,
    /// `--no-wait` with `[canary]`: nobody would judge.
    #[error("--no-wait: bake.toml has a [canary], whose verdict bake release waits for; release without --no-wait, or without [canary]")]
    CanaryNeedsWait,
    /// The canary's metrics could not be read; the held refresh was rolled back.
    #[error("{source}; instance refresh {id} of '{asg}' was rolled back")]
    CanaryObserve {
        /// The group.
        asg: String,
        /// The held refresh.
        id: String,
        /// Why.
        source: crate::canary::ObserveError,
    },
    /// The held refresh could not be cancelled (to go on) or rolled back.
    #[error("canary: {action} instance refresh {id} of '{asg}': {message}")]
    CanaryAct {
        /// The group.
        asg: String,
        /// The held refresh.
        id: String,
        /// `cancelling` or `rolling back`.
        action: &'static str,
        /// The SDK's error.
        message: String,
    },
}

/// The refresh preferences of a release to `t`: `[refresh]`, with the stack's
/// `RollbackAlarmNames` joining `refresh.alarms`. Alarms need auto rollback (AWS refuses an
/// alarm specification without it), so stack alarms with `refresh.auto_rollback = false` are a
/// configuration error, found before anything is changed.
pub fn release_preferences(
    r: &RefreshSettings,
    t: &Targets,
) -> Result<RefreshPreferences, ReleaseError> {
    if !t.rollback_alarms.is_empty() && !r.auto_rollback {
        return Err(ReleaseError::AlarmsNeedAutoRollback {
            alarms: t.rollback_alarms.clone(),
        });
    }
    let mut r = r.clone();
    for a in &t.rollback_alarms {
        if !r.alarms.contains(a) {
            r.alarms.push(a.clone());
        }
    }
    Ok(preferences(&r))
}

/// AWS rejects `AutoRollback` for a group that launches from `$Default` or `$Latest`: said
/// before anything is changed.
pub fn check_numbered_version(
    r: &RefreshSettings,
    group: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> Result<(), ReleaseError> {
    match group
        .launch_template()
        .and_then(|l| l.version())
        .filter(|v| r.auto_rollback && v.starts_with('$'))
    {
        Some(v) => Err(ReleaseError::UnnumberedVersion {
            asg: group
                .auto_scaling_group_name()
                .unwrap_or_default()
                .to_owned(),
            version: v.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Records `prefs` in SSM ([`bake_common::refresh_preferences`]), where the agent's
/// secret-rotation rollouts read the preferences of the last release.
async fn record_preferences(
    aws: &Aws,
    asg: &str,
    prefs: &RefreshPreferences,
) -> Result<(), ReleaseError> {
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
        .map_err(|e| ReleaseError::RecordPreferences {
            name: name.clone(),
            source: Box::new(e),
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
) -> Result<String, ReleaseError> {
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
        .map_err(|e| match e.as_service_error() {
            Some(StartInstanceRefreshError::InstanceRefreshInProgressFault(_)) => {
                ReleaseError::StartedMeanwhile { asg: asg.clone() }
            }
            _ => ReleaseError::Start {
                asg: asg.clone(),
                source: Box::new(e),
            },
        })?;
    out.instance_refresh_id()
        .map(ToOwned::to_owned)
        .ok_or_else(|| ReleaseError::NoRefreshId { asg: asg.clone() })
}

impl ReleaseReport {
    /// Takes what watching the refresh found; returns its exit code.
    pub fn watched(&mut self, f: refresh::Followed) -> Exit {
        self.rollbacks = u32::from(
            matches!(f.result.as_str(), "rolled_back" | "rollback_failed")
                || f.refresh.as_ref().is_some_and(|r| {
                    r.status.starts_with("Rollback") || r.rollback_reason.is_some()
                }),
        );
        self.result = f.result;
        self.refresh = f.refresh;
        self.polls = f.polls;
        self.watch_secs = f.watch_secs;
        self.rollout = Some(f.rollout);
        f.exit
    }

    /// Takes the images of the previous and the new version (and their app versions) from
    /// `releases`.
    pub fn name_images(&mut self, releases: &Releases) {
        if let Some(r) = releases.get(self.previous_version) {
            self.previous_image_id = Some(r.image_id.clone());
            self.previous_app_version.clone_from(&r.app_version);
        }
        if let Some(r) = releases.get(self.version) {
            self.app_version.clone_from(&r.app_version);
        }
    }

    /// Why the refresh rolled back, as AWS said it.
    fn rollback_reason(&self) -> Option<&str> {
        if self.rollbacks == 0 {
            return None;
        }
        self.refresh
            .as_ref()
            .and_then(|r| r.rollback_reason.as_deref().or(r.reason.as_deref()))
    }
}

/// `ami-…` with its app version: `ami-0abc (1.0.1)`.
fn image_label(image: &str, app: Option<&str>) -> String {
    match app {
        Some(a) => format!("{image} ({a})"),
        None => image.to_owned(),
    }
}

/// The summary that stays once a watched release ended: the image change, then result,
/// duration, instances replaced and rollbacks. Empty when the refresh was not watched.
#[must_use]
pub fn summary(r: &ReleaseReport) -> String {
    let Some(rollout) = &r.rollout else {
        return String::new();
    };
    let mut s = String::new();
    if let Some(before) = &r.previous_image_id {
        s.push_str(&format!(
            "release: {} → {}\n",
            image_label(before, r.previous_app_version.as_deref()),
            image_label(&r.image_id, r.app_version.as_deref())
        ));
    }
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    s.push_str(&format!(
        "{} in {} (watched {}): {} instance{} replaced ({} launched, {} terminated), ",
        r.result,
        crate::output::secs(Duration::from_secs_f64(r.duration_secs)),
        crate::output::secs(Duration::from_secs_f64(r.watch_secs)),
        rollout.instances_replaced,
        plural(rollout.instances_replaced),
        rollout.instances_launched,
        rollout.instances_terminated,
    ));
    match (r.rollbacks, r.rollback_reason()) {
        (0, _) => s.push_str("no rollback"),
        (_, Some(reason)) => s.push_str(&format!("1 rollback: {reason}")),
        (_, None) => s.push_str("1 rollback"),
    }
    s
}

/// Text for one cell of a Markdown table: pipes escaped, one line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// The Markdown summary for `$GITHUB_STEP_SUMMARY` ([`crate::output::step_summary`]): a heading
/// with `command` and the result, and a table of the group, the image change (version before →
/// after), the result, the duration, the instances replaced and the rollback (`none`, or AWS's
/// reason).
#[must_use]
pub fn markdown(command: &str, r: &ReleaseReport) -> String {
    let before = r.previous_image_id.as_deref().map_or_else(
        || format!("v{}", r.previous_version),
        |i| format!("`{i}` {}", r.previous_app_version.as_deref().unwrap_or("")),
    );
    let after = format!(
        "`{}` {}",
        r.image_id,
        r.app_version.as_deref().unwrap_or("")
    );
    let replaced = r
        .rollout
        .as_ref()
        .map_or_else(|| "-".to_owned(), |o| o.instances_replaced.to_string());
    let rollback = match (r.rollbacks, r.rollback_reason()) {
        (0, _) => "none".to_owned(),
        (_, Some(reason)) => reason.to_owned(),
        (_, None) => "yes".to_owned(),
    };
    let row = [
        format!("`{}`", r.auto_scaling_group),
        format!("{} → {}", before.trim_end(), after.trim_end()),
        format!("v{} → v{}", r.previous_version, r.version),
        r.result.clone(),
        crate::output::secs(Duration::from_secs_f64(r.duration_secs)),
        replaced,
        rollback,
    ]
    .map(|c| cell(&c));
    // The parameter's line goes above the table, whose row stays the document's last line.
    let parameter = r
        .image_parameter
        .as_ref()
        .map(|p| format!("{}\n\n", p.describe().replace('\n', " ")))
        .unwrap_or_default();
    format!(
        "### {command}: {}\n\n{parameter}| group | image | launch template version | result | duration | instances replaced | rollback |\n|---|---|---|---|---|---|---|\n| {} |\n",
        cell(&r.result),
        row.join(" | ")
    )
}

/// A release's result as text for people: what changed and how the refresh ended, then the
/// [`summary`] of a watched one.
#[must_use]
pub fn render(r: &ReleaseReport) -> String {
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
    let summary = summary(r);
    if !summary.is_empty() {
        s.push('\n');
        s.push_str(&summary);
    }
    if let Some(p) = &r.image_parameter {
        s.push('\n');
        s.push_str(&p.describe());
    }
    s
}

/// The Markdown summary of a command that failed before it had a result (a refresh already in
/// progress, a failed build, an AWS error): a heading with `command` and the exit code, and a
/// table of the group, the error's code ([`crate::exit::Failure::code`]) and its one line (the
/// same line as on stderr, which never holds a secret).
#[must_use]
pub fn failure_markdown(command: &str, group: &str, f: &crate::exit::Failure) -> String {
    format!(
        "### {command}: failed (exit {})\n\n| group | error | message |\n|---|---|---|\n| `{}` | {} | {} |\n",
        f.exit as u8,
        cell(group),
        cell(f.code),
        cell(&f.message)
    )
}

/// Runs a release to its end.
/// The boot test of a release's image, before anything changes: `--test` runs it (a failure
/// ends the release), then the image's tags must say `pass` unless `--untested` or
/// `image_test.required = false`. (What the tags say: `pass`, `fail`, `untested`; the test run.)
async fn boot_tested(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    image_id: &str,
    opts: &ReleaseOptions,
) -> anyhow::Result<(String, Option<crate::image_test::ImageTestReport>)> {
    use crate::image_test::Tested;
    let mut ran = None;
    if opts.test {
        let r = crate::image_test::test_image(aws, settings, t, image_id, None).await?;
        if !r.passed() {
            let failed: Vec<String> = r
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{} ({})", c.name, c.detail))
                .collect();
            return Err(ReleaseError::TestFailed {
                ami: image_id.to_owned(),
                instance: r.instance_id.clone().unwrap_or_default(),
                why: if failed.is_empty() {
                    r.reason.clone().unwrap_or_else(|| "no report".to_owned())
                } else {
                    failed.join(", ")
                },
            }
            .into());
        }
        ran = Some(r);
    }
    let image = crate::ami::describe(&aws.ec2, image_id)
        .await
        .map_err(|source| ReleaseError::Ami { source })?;
    let tested = Tested::of(&image);
    let word = match tested {
        Tested::Pass { .. } => "pass",
        Tested::Fail { .. } => "fail",
        Tested::Untested => "untested",
    };
    if word != "pass" {
        if settings.image_test.required && !opts.untested {
            return Err(ReleaseError::Untested {
                ami: image_id.to_owned(),
                state: tested.describe(),
            }
            .into());
        }
        tracing::warn!(
            "releasing {image_id}, which {} ({})",
            tested.describe(),
            if opts.untested {
                "--untested"
            } else {
                "image_test.required = false"
            }
        );
    }
    Ok((word.to_owned(), ran))
}

pub async fn release(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    opts: &ReleaseOptions,
) -> anyhow::Result<(ReleaseReport, Exit)> {
    let began = std::time::Instant::now();
    let asg = &t.auto_scaling_group;
    let lt = &t.launch_template_id;
    let wopts = WatchOptions::new(&settings.refresh, opts.timeout, opts.cancel_on_interrupt);
    if settings.canary.is_some() && opts.no_wait {
        return Err(ReleaseError::CanaryNeedsWait.into());
    }
    let prefs = release_preferences(&settings.refresh, t)?;
    if let Some(current) = refresh::active(&aws.asg, asg).await? {
        if !opts.wait_for_current {
            return Err(ReleaseError::InProgress {
                asg: asg.clone(),
                current: Box::new(current),
            }
            .into());
        }
        tracing::info!(
            "waiting for instance refresh {} of '{asg}' to end first",
            current.id
        );
        let view = View::new(Releases::load(aws, lt).await);
        let waited = refresh::follow(&aws.asg, asg, &current.id, wopts, view).await?;
        match waited.exit {
            Exit::TimedOut => {
                return Err(ReleaseError::CurrentTimedOut {
                    asg: asg.clone(),
                    id: current.id,
                }
                .into())
            }
            Exit::Interrupted => return Err(ReleaseError::InterruptedWaiting.into()),
            _ => tracing::info!("instance refresh {} ended {}", current.id, waited.result),
        }
    }
    if settings.refresh.auto_rollback {
        let group = crate::targets::describe_group(aws, asg).await?;
        check_numbered_version(&settings.refresh, &group)?;
    }
    let (image_id, reused) = match &opts.ami {
        Some(ami) => {
            crate::ami::describe(&aws.ec2, ami)
                .await
                .map_err(|source| ReleaseError::Ami { source })?;
            (ami.clone(), None)
        }
        None => {
            let b = crate::build::build(aws, settings, &opts.build).await?;
            (b.image_id, Some(b.reused))
        }
    };
    if crate::signals::received() > 0 {
        return Err(ReleaseError::Interrupted.into());
    }
    if let Some(required) = &settings.release.require_promoted_from {
        // Before the boot test, which launches an instance: a refused image costs nothing.
        let image = crate::ami::describe(&aws.ec2, &image_id)
            .await
            .map_err(|source| ReleaseError::Ami { source })?;
        if let Some(why) = crate::promote::not_promoted_from(&image, required) {
            return Err(ReleaseError::NotPromoted {
                ami: image_id,
                required: required.clone(),
                why,
            }
            .into());
        }
    }
    let (tested, image_test) = boot_tested(aws, settings, t, &image_id, opts).await?;
    if crate::signals::received() > 0 {
        return Err(ReleaseError::Interrupted.into());
    }
    // The migration, from the new image, before anything changes: a failure releases nothing.
    let migrate = match (&settings.migrate, opts.skip_migrate) {
        (Some(m), false) => {
            let r = crate::migrate::migrate(aws, settings, m, t, &image_id).await?;
            if !r.succeeded() {
                return Err(ReleaseError::MigrationFailed {
                    ami: image_id.clone(),
                    instance: r.instance.clone(),
                    why: r.why(),
                }
                .into());
            }
            Some(r)
        }
        (Some(_), true) => {
            tracing::warn!("--skip-migrate: the migration of [migrate] is not run for {image_id}");
            None
        }
        (None, _) => None,
    };
    if crate::signals::received() > 0 {
        return Err(ReleaseError::Interrupted.into());
    }
    let (previous, _) = crate::launch_template::versions(aws, lt).await?;
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
        .map_err(|e| ReleaseError::CreateVersion {
            lt: lt.clone(),
            source: Box::new(e),
        })?;
    let version = created
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| ReleaseError::NoVersion { lt: lt.clone() })?;
    crate::launch_template::set_default(aws, lt, version).await?;
    tracing::info!(launch_template = %lt, version, previous, image_id = %image_id, "new launch template version is the default");
    let mut report = ReleaseReport {
        auto_scaling_group: asg.clone(),
        launch_template_id: lt.clone(),
        image_id: image_id.clone(),
        reused,
        previous_version: previous,
        version,
        tested: Some(tested),
        image_test,
        migrate,
        ..ReleaseReport::default()
    };
    // Once per release, not per poll, and before the refresh starts: the images of the
    // template's versions (for the summary and the rollout view's lines) and the instances the
    // refresh is to replace.
    let releases = Releases::load(aws, lt).await;
    report.name_images(&releases);
    // What changes in the image, before the refresh starts; it never holds the release up.
    if let Some(from) = report.previous_image_id.clone().filter(|p| *p != image_id) {
        let d = crate::sbom::compare(aws, &from, &image_id).await;
        for l in d.lines(SBOM_LINES) {
            eprintln!("{l}");
        }
        report.sbom_diff = Some(d);
    }
    let baseline = match opts.no_wait {
        true => None,
        false => crate::rollout::baseline(&aws.asg, asg).await,
    };
    // With a canary, the first refresh holds at the canary's checkpoint; the preferences
    // recorded (for the agents' rollouts) are the release's own.
    let first = match &settings.canary {
        Some(c) => canary_preferences(&prefs, c),
        None => prefs.clone(),
    };
    let started = match record_preferences(aws, asg, &prefs).await {
        Ok(()) => start_refresh(aws, t, version, first).await,
        Err(e) => Err(e),
    };
    let id = match started {
        Ok(id) => id,
        Err(e) => {
            // No half-done change: the template goes back to what it was.
            undo(aws, lt, previous, Some(version)).await;
            return Err(anyhow::Error::new(e).context(format!(
                "launch template '{lt}' restored to default version {previous}"
            )));
        }
    };
    tracing::info!(refresh = %id, "instance refresh of '{asg}' started");
    report.instance_refresh_id = id.clone();
    if opts.no_wait {
        report.result = "started".into();
        if let Some(name) = &settings.image_parameter {
            tracing::warn!("SSM parameter '{name}' not set to {image_id}: with --no-wait the end of the refresh is not watched; the next watched release sets it");
            report.image_parameter = Some(Recorded::skipped(
                name,
                "--no-wait: the end of the refresh was not watched",
            ));
        }
        report.duration_secs = began.elapsed().as_secs_f64();
        return Ok((report, Exit::Ok));
    }
    let mut code = match &settings.canary {
        None => {
            let view = View::new(releases).with_baseline(baseline);
            report.watched(refresh::follow(&aws.asg, asg, &id, wopts, view).await?)
        }
        Some(c) => {
            canary_release(
                aws,
                t,
                c,
                version,
                prefs,
                wopts,
                (releases, baseline),
                &mut report,
            )
            .await?
        }
    };
    if matches!(
        code,
        Exit::RefreshFailed | Exit::RolledBack | Exit::Cancelled
    ) {
        undo(aws, lt, previous, None).await;
        report.restored_default = true;
    }
    if let Some(name) = &settings.image_parameter {
        let (recorded, failed) = record_image(aws, name, &image_id, asg, &report.result).await;
        report.image_parameter = Some(recorded);
        if failed {
            code = Exit::ImageParameter;
        }
    }
    report.duration_secs = began.elapsed().as_secs_f64();
    Ok((report, code))
}

/// The canary's refresh preferences: the release's, with one checkpoint at the canary's
/// percentage (and 100), held for `hold`.
#[must_use]
pub fn canary_preferences(
    prefs: &RefreshPreferences,
    c: &crate::canary::CanarySettings,
) -> RefreshPreferences {
    let mut p = prefs.clone();
    p.checkpoint_percentages = Some(vec![c.checkpoint, 100]);
    p.checkpoint_delay = Some(i32::try_from(c.hold.as_secs()).unwrap_or(i32::MAX));
    p
}

/// Polls refresh `id` until it is no longer active; its last status.
async fn wait_inactive(aws: &Aws, asg: &str, id: &str) -> Result<String, refresh::RefreshError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let out = aws
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .instance_refresh_ids(id)
            .send()
            .await
            .map_err(|e| refresh::RefreshError::Describe {
                asg: asg.to_owned(),
                source: Box::new(e),
            })?;
        let status = out
            .instance_refreshes()
            .first()
            .and_then(|r| r.status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        if !refresh::is_active(&status) {
            return Ok(status);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The release with a canary: watch refresh `report.instance_refresh_id` to the canary's
/// checkpoint, observe both releases for the window, judge, print the verdict; then either
/// cancel the held refresh and start one with the release's preferences (`SkipMatching`: the
/// canary instances stay) and watch it to its end, or roll the held one back and watch that.
#[allow(clippy::too_many_arguments)]
async fn canary_release(
    aws: &Aws,
    t: &Targets,
    c: &crate::canary::CanarySettings,
    version: i64,
    prefs: RefreshPreferences,
    wopts: WatchOptions,
    (releases, baseline): (
        Releases,
        Option<std::collections::BTreeMap<String, Option<String>>>,
    ),
    report: &mut ReleaseReport,
) -> anyhow::Result<Exit> {
    let asg = &t.auto_scaling_group;
    let id = report.instance_refresh_id.clone();
    // Each watch after the hold starts from the group as it is then: the lines say what that
    // refresh does.
    let view_from_now = || async {
        View::new(releases.clone()).with_baseline(crate::rollout::baseline(&aws.asg, asg).await)
    };
    let view = View::new(releases.clone()).with_baseline(baseline);
    let held = refresh::follow(
        &aws.asg,
        asg,
        &id,
        WatchOptions {
            until_checkpoint: true,
            ..wopts
        },
        view,
    )
    .await?;
    if held.result != "held" {
        // Ended (or detached, or timed out) before the checkpoint: as without a canary.
        return Ok(report.watched(held));
    }
    report.canary_refresh_id = Some(id.clone());
    // The window in whole seconds, as the app's high-resolution metrics are kept.
    let now = std::time::SystemTime::now();
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let start = std::time::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 1);
    let end = start + Duration::from_secs(c.window.as_secs().max(1));
    tracing::info!(
        refresh = %id,
        "canary: instance refresh of '{asg}' holds at {}%; observing both releases for {}",
        c.checkpoint,
        crate::output::secs(c.window)
    );
    let mut interrupts = crate::signals::Interrupts::new();
    tokio::select! {
        () = tokio::time::sleep(end.duration_since(now).unwrap_or_default()) => {}
        name = interrupts.recv() => {
            tracing::warn!("interrupted ({name}) during the canary window; instance refresh {id} of '{asg}' stays held at its checkpoint for {} from when it began, then goes on unjudged: roll it back with `bake rollback`", crate::output::secs(c.hold));
            report.result = "detached".into();
            return Ok(Exit::Interrupted);
        }
    }
    // The agents publish per interval: what the window's last seconds did is in CloudWatch
    // one interval later.
    tracing::info!(
        "canary: reading the window in {}",
        crate::output::secs(c.settle)
    );
    tokio::time::sleep(c.settle).await;
    let old_image = report.previous_image_id.clone().unwrap_or_default();
    let observed =
        crate::canary::observe(&aws.cw, c, asg, &old_image, &report.image_id, start, end).await;
    let (old, new) = match observed {
        Ok(v) => v,
        Err(source) => {
            rollback_held(aws, asg, &id).await?;
            let f = refresh::follow(&aws.asg, asg, &id, wopts, view_from_now().await).await?;
            report.watched(f);
            return Err(ReleaseError::CanaryObserve {
                asg: asg.clone(),
                id,
                source,
            }
            .into());
        }
    };
    let verdict = crate::canary::judge(c, old, new, (start, end));
    for line in crate::canary::render(&verdict) {
        tracing::info!("{line}");
    }
    let go_on = verdict.action == "continued";
    report.canary = Some(verdict);
    if !go_on {
        rollback_held(aws, asg, &id).await?;
        let view = view_from_now().await;
        return Ok(report.watched(refresh::follow(&aws.asg, asg, &id, wopts, view).await?));
    }
    aws.asg
        .cancel_instance_refresh()
        .auto_scaling_group_name(asg)
        .send()
        .await
        .map_err(|e| ReleaseError::CanaryAct {
            asg: asg.clone(),
            id: id.clone(),
            action: "cancelling",
            message: DisplayErrorContext(&e).to_string(),
        })?;
    let status = wait_inactive(aws, asg, &id).await?;
    tracing::info!(refresh = %id, status, "canary passed: the held refresh ended; the release goes on");
    let next = start_refresh(aws, t, version, prefs).await?;
    tracing::info!(refresh = %next, "instance refresh of '{asg}' started for the rest of the group");
    report.instance_refresh_id.clone_from(&next);
    let view = view_from_now().await;
    Ok(report.watched(refresh::follow(&aws.asg, asg, &next, wopts, view).await?))
}

/// RollbackInstanceRefresh of the held refresh `id`.
async fn rollback_held(aws: &Aws, asg: &str, id: &str) -> Result<(), ReleaseError> {
    aws.asg
        .rollback_instance_refresh()
        .auto_scaling_group_name(asg)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| ReleaseError::CanaryAct {
            asg: asg.to_owned(),
            id: id.to_owned(),
            action: "rolling back",
            message: DisplayErrorContext(&e).to_string(),
        })
}

/// Sets `name` to `image` if the refresh ended `result` = `successful` or `partial`; returns
/// what the parameter names now and whether writing it failed (said on stderr with the command
/// that sets it by hand).
async fn record_image(
    aws: &Aws,
    name: &str,
    image: &str,
    asg: &str,
    result: &str,
) -> (Recorded, bool) {
    if !matches!(result, "successful" | "partial") {
        tracing::info!("SSM parameter '{name}' left as it was: the refresh ended {result}");
        return (
            Recorded::skipped(name, format!("the refresh ended {result}")),
            false,
        );
    }
    match crate::image_parameter::write(aws, name, image, asg).await {
        Ok(version) => {
            tracing::info!(parameter = %name, version, "SSM parameter '{name}' names {image}");
            (
                Recorded {
                    name: name.to_owned(),
                    written: true,
                    image_id: Some(image.to_owned()),
                    version: Some(version),
                    reason: None,
                },
                false,
            )
        }
        Err(e) => {
            let e = crate::exit::plain_chain(&e).0;
            tracing::error!(
                "released {image} to '{asg}', but {e}: the parameter still names the previous image, which an update of the fleet stack would launch again; set it with: {}",
                crate::image_parameter::fix_command(name, image)
            );
            (Recorded::skipped(name, e), true)
        }
    }
}

/// Sets the default back to `previous` and deletes `delete` (best effort, logged).
async fn undo(aws: &Aws, lt: &str, previous: i64, delete: Option<i64>) {
    match crate::launch_template::set_default(aws, lt, previous).await {
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
    use std::collections::BTreeMap;

    #[test]
    fn test_auto_rollback_needs_a_numbered_version() {
        use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplateSpecification};
        let group = |v: &str| {
            AutoScalingGroup::builder()
                .auto_scaling_group_name("web")
                .launch_template(LaunchTemplateSpecification::builder().version(v).build())
                .build()
        };
        let mut r = Settings::parse(
            "",
            std::path::Path::new("bake.toml"),
            std::path::Path::new("/"),
        )
        .unwrap()
        .refresh;
        assert!(r.auto_rollback);
        let e = check_numbered_version(&r, &group("$Default")).unwrap_err();
        assert!(
            e.to_string().starts_with("refresh.auto_rollback: auto scaling group 'web' launches from launch template version $Default"),
            "{e}"
        );
        assert!(check_numbered_version(&r, &group("3")).is_ok());
        r.auto_rollback = false;
        assert!(check_numbered_version(&r, &group("$Latest")).is_ok());
    }

    #[test]
    fn test_summary_and_markdown_of_a_rolled_back_release() {
        let mut r = ReleaseReport {
            auto_scaling_group: "web".into(),
            launch_template_id: "lt-1".into(),
            image_id: "ami-new".into(),
            app_version: Some("1.0.1".into()),
            previous_version: 3,
            version: 4,
            result: "rolled_back".into(),
            duration_secs: 65.4,
            watch_secs: 61.0,
            rollout: Some(Rollout {
                instances_launched: 1,
                instances_terminated: 1,
                instances_replaced: 1,
                ..Rollout::default()
            }),
            refresh: Some(Snapshot {
                status: "RollbackSuccessful".into(),
                rollback_reason: Some("alarm | 5xx\nfired".into()),
                ..Snapshot::default()
            }),
            rollbacks: 1,
            ..ReleaseReport::default()
        };
        r.name_images(&Releases::new(BTreeMap::from([(
            3,
            crate::rollout::Release {
                image_id: "ami-old".into(),
                app_version: Some("1.0.0".into()),
            },
        )])));
        assert_eq!(
            summary(&r),
            "release: ami-old (1.0.0) → ami-new (1.0.1)\nrolled_back in 1m 5s (watched 1m 1s): 1 instance replaced (1 launched, 1 terminated), 1 rollback: alarm | 5xx\nfired"
        );
        let md = markdown("bake release", &r);
        let rows: Vec<&str> = md.lines().collect();
        assert_eq!(rows[0], "### bake release: rolled_back");
        assert_eq!(rows[1], "");
        assert_eq!(
            rows[4],
            "| `web` | `ami-old` 1.0.0 → `ami-new` 1.0.1 | v3 → v4 | rolled_back | 1m 5s | 1 | alarm \\| 5xx fired |"
        );
        assert_eq!(rows.len(), 5, "{md}");
        // The image parameter's line comes above the table: its row stays the last line.
        r.image_parameter = Some(Recorded::skipped("/p", "the refresh ended rolled_back"));
        let md = markdown("bake release", &r);
        let with: Vec<&str> = md.lines().collect();
        assert_eq!(
            with[2],
            "image parameter /p not written: the refresh ended rolled_back"
        );
        assert_eq!(with.last(), rows.last(), "{md}");
        assert!(
            render(&r).ends_with("\nimage parameter /p not written: the refresh ended rolled_back")
        );
        r.image_parameter = None;
        // Not watched: no summary; the table says what is known.
        r.rollout = None;
        r.rollbacks = 0;
        assert_eq!(summary(&r), "");
        assert!(!render(&r).contains("replaced"), "{}", render(&r));
        assert!(markdown("bake release", &r).ends_with("| - | none |\n"));
    }

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
