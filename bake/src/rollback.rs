//! `bake rollback`: roll back the refresh in progress (`RollbackInstanceRefresh`), or, when none
//! is running, release the image of the launch template version before the current default.

use crate::aws::Aws;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Settings;
use crate::exit::{coded, Exit};
use crate::release::{self, ReleaseOptions, ReleaseReport};
use crate::targets::Targets;

/// Rolls back; returns the report and the exit code. A rolled-back refresh is success here.
pub async fn rollback(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    opts: &ReleaseOptions,
) -> anyhow::Result<(ReleaseReport, Exit)> {
    let asg = &t.auto_scaling_group;
    if let Some(current) = release::active_refresh(aws, asg).await? {
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
            .map_err(|e| {
                coded(
                    Exit::Aws,
                    format!(
                        "rolling back the instance refresh of '{asg}': {}",
                        DisplayErrorContext(&e)
                    ),
                )
            })?;
        let mut report = ReleaseReport {
            auto_scaling_group: asg.clone(),
            launch_template_id: t.launch_template_id.clone(),
            instance_refresh_id: current.id.clone(),
            result: "rollback_started".into(),
            ..ReleaseReport::default()
        };
        if opts.no_wait {
            return Ok((report, Exit::Ok));
        }
        let wopts = release::watch_options(settings, opts.timeout, opts.cancel_on_interrupt);
        let code = release::watch_into(aws, asg, &current.id, wopts, &mut report).await?;
        let code = match report.result.as_str() {
            "rolled_back" => Exit::Ok,
            _ => code,
        };
        return Ok((report, code));
    }
    let lt = &t.launch_template_id;
    let (default, _) = release::template_versions(aws, lt).await?;
    // The same choice `bake prune` protects (prune::rollback_choice).
    let versions = crate::prune::template_images(aws, lt).await?;
    let Some((v, image)) =
        crate::prune::rollback_choice(&versions, default).map(|(v, image)| (v, image.clone()))
    else {
        return Err(coded(Exit::Config, format!("launch template '{lt}' has no version before its default (v{default}) to roll back to")));
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
