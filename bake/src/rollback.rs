//! `bake rollback`: roll back the refresh in progress (`RollbackInstanceRefresh`), or, when none
//! is running, release the image of the launch template version before the current default.
//! That release sets `target.image_parameter` to the previous image as any release does (once
//! its refresh ended `Successful`); rolling back a refresh in progress leaves the parameter as
//! it is, since only a release watched to `Successful` sets it.

use crate::aws::Aws;
use aws_sdk_autoscaling::operation::rollback_instance_refresh::RollbackInstanceRefreshError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Settings;
use crate::exit::Exit;
use crate::refresh::{self, WatchOptions};
use crate::release::{self, ReleaseOptions, ReleaseReport};
use crate::targets::Targets;

/// What can go wrong in a rollback, besides the errors of a release. The SDK's error is kept
/// whole (boxed: it is large), so a caller can ask for the service error.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// `RollbackInstanceRefresh` failed.
    #[error("rolling back the instance refresh of '{asg}': {}", DisplayErrorContext(.source))]
    Rollback {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<aws_sdk_autoscaling::error::SdkError<RollbackInstanceRefreshError>>,
    },
    /// No refresh is running and no version before the default names an image.
    #[error(
        "launch template '{lt}' has no version before its default (v{default}) to roll back to"
    )]
    NoPreviousVersion {
        /// The launch template id.
        lt: String,
        /// Its default version.
        default: i64,
    },
}

/// Rolls back; returns the report and the exit code. A rolled-back refresh is success here.
pub async fn rollback(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    opts: &ReleaseOptions,
) -> anyhow::Result<(ReleaseReport, Exit)> {
    let began = std::time::Instant::now();
    let asg = &t.auto_scaling_group;
    if let Some(current) = crate::refresh::active(&aws.asg, asg).await? {
        tracing::info!(
            "rolling back instance refresh {} of '{asg}' ({})",
            current.id,
            current.describe()
        );
        aws.asg
            .rollback_instance_refresh()
            .auto_scaling_group_name(asg)
            .send()
            .await
            .map_err(|e| RollbackError::Rollback {
                asg: asg.clone(),
                source: Box::new(e),
            })?;
        let mut report = ReleaseReport {
            auto_scaling_group: asg.clone(),
            launch_template_id: t.launch_template_id.clone(),
            instance_refresh_id: current.id.clone(),
            result: "rollback_started".into(),
            // Only a release watched to `Successful` sets it: the refresh rolled back never did.
            image_parameter: settings.image_parameter.as_deref().map(|name| {
                crate::image_parameter::Recorded::skipped(
                    name,
                    "rollback of the refresh in progress: the parameter still names the image from before it",
                )
            }),
            ..ReleaseReport::default()
        };
        if opts.no_wait {
            return Ok((report, Exit::Ok));
        }
        let wopts = WatchOptions::new(&settings.refresh, opts.timeout, opts.cancel_on_interrupt);
        let view = crate::rollout::View::new(
            crate::rollout::Releases::load(aws, &t.launch_template_id).await,
        );
        let followed = refresh::follow(&aws.asg, asg, &current.id, wopts, view).await?;
        let code = report.watched(followed);
        report.duration_secs = began.elapsed().as_secs_f64();
        let code = match report.result.as_str() {
            "rolled_back" => Exit::Ok,
            _ => code,
        };
        return Ok((report, code));
    }
    let lt = &t.launch_template_id;
    let (default, _) = crate::launch_template::versions(aws, lt).await?;
    // The same choice `bake prune` protects (prune::rollback_choice).
    let versions = crate::launch_template::images(aws, lt).await?;
    let Some((v, image)) =
        crate::prune::rollback_choice(&versions, default).map(|(v, image)| (v, image.clone()))
    else {
        return Err(RollbackError::NoPreviousVersion {
            lt: lt.clone(),
            default,
        }
        .into());
    };
    tracing::info!(
        "no refresh in progress: releasing {image} of launch template version {v} again"
    );
    let opts = ReleaseOptions {
        ami: Some(image),
        wait_for_current: false,
        ..opts.clone()
    };
    release::release(aws, settings, t, &opts).await
}

/// A rollback's result as text for people: a rollback is reported as a release is.
#[must_use]
pub fn render(r: &ReleaseReport) -> String {
    release::render(r)
}
