//! `bake status`: the fleet (instances with AMI, launch template version, health, lifecycle
//! state, AZ) and the current or last instance refresh.

use std::collections::BTreeMap;

use crate::aws::Aws;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Settings;

/// A call of `bake status` of its own that failed (the others are the targets', the launch
/// template's and the refresh's). The SDK's error is kept whole (boxed: it is large).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `DescribeInstances` of the group's instances failed.
    #[error("describing the instances of '{asg}': {}", DisplayErrorContext(.source))]
    DescribeInstances {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<aws_sdk_ec2::error::SdkError<DescribeInstancesError>>,
    },
}
use crate::refresh::{self, Followed, Snapshot, WatchOptions};
use crate::targets::Targets;

/// One instance of the group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceRow {
    /// Instance id.
    pub instance_id: String,
    /// Its AMI.
    pub image_id: Option<String>,
    /// Launch template version it was launched from.
    pub launch_template_version: Option<String>,
    /// `Healthy` / `Unhealthy`.
    pub health_status: Option<String>,
    /// `InService`, `Pending:Wait`, …
    pub lifecycle_state: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
}

/// The fleet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fleet {
    /// Targets.
    #[serde(flatten)]
    pub targets: Targets,
    /// Desired capacity.
    pub desired_capacity: Option<i32>,
    /// The launch template's default version.
    pub default_version: i64,
    /// Its latest version.
    pub latest_version: i64,
    /// The instances.
    pub instances: Vec<InstanceRow>,
    /// The current or last refresh.
    pub refresh: Option<Snapshot>,
}

/// Reads the fleet.
pub async fn fleet(aws: &Aws, t: &Targets) -> anyhow::Result<Fleet> {
    let group = crate::targets::describe_group(aws, &t.auto_scaling_group).await?;
    let ids: Vec<String> = group
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(ToOwned::to_owned))
        .collect();
    let mut images = BTreeMap::new();
    if !ids.is_empty() {
        let mut pages = aws
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.clone()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StatusError::DescribeInstances {
                asg: t.auto_scaling_group.clone(),
                source: Box::new(e),
            })?;
            for r in page.reservations() {
                for i in r.instances() {
                    if let (Some(id), Some(ami)) = (i.instance_id(), i.image_id()) {
                        images.insert(id.to_owned(), ami.to_owned());
                    }
                }
            }
        }
    }
    let instances = group
        .instances()
        .iter()
        .map(|i| InstanceRow {
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            image_id: i.instance_id().and_then(|id| images.get(id).cloned()),
            launch_template_version: i
                .launch_template()
                .and_then(|l| l.version())
                .map(ToOwned::to_owned),
            health_status: i.health_status().map(ToOwned::to_owned),
            lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_owned()),
            availability_zone: i.availability_zone().map(ToOwned::to_owned),
        })
        .collect();
    let (default_version, latest_version) =
        crate::launch_template::versions(aws, &t.launch_template_id).await?;
    let refresh = crate::refresh::latest(&aws.asg, &t.auto_scaling_group).await?;
    Ok(Fleet {
        targets: t.clone(),
        desired_capacity: group.desired_capacity(),
        default_version,
        latest_version,
        instances,
        refresh,
    })
}

/// `bake status --watch`: follows the refresh in progress, if there is one, to its end.
pub async fn watch(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<Option<Followed>> {
    let asg = &t.auto_scaling_group;
    let Some(current) = refresh::active(&aws.asg, asg).await? else {
        return Ok(None);
    };
    let opts = WatchOptions::new(&settings.refresh, timeout, false);
    Ok(Some(
        refresh::follow(&aws.asg, asg, &current.id, opts).await?,
    ))
}

/// The fleet as one JSON document, with how watching ended under `watch`.
///
/// # Errors
/// None in practice: the fleet is plain data.
pub fn json(f: &Fleet, watched: Option<&Followed>) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(f)?;
    if let Some(w) = watched {
        json["watch"] =
            serde_json::json!({ "result": w.result, "polls": w.polls, "watch_secs": w.watch_secs });
    }
    Ok(json)
}

/// The fleet as text.
#[must_use]
pub fn render(f: &Fleet) -> String {
    let mut s = format!(
        "auto scaling group {} (desired {}), launch template {} default v{} latest v{}\n",
        f.targets.auto_scaling_group,
        f.desired_capacity
            .map_or_else(|| "?".to_owned(), |d| d.to_string()),
        f.targets.launch_template_id,
        f.default_version,
        f.latest_version
    );
    s.push_str("INSTANCE\tAMI\tLT\tHEALTH\tSTATE\tAZ\n");
    for i in &f.instances {
        s.push_str(&format!(
            "{}\t{}\tv{}\t{}\t{}\t{}\n",
            i.instance_id,
            i.image_id.as_deref().unwrap_or("-"),
            i.launch_template_version.as_deref().unwrap_or("-"),
            i.health_status.as_deref().unwrap_or("-"),
            i.lifecycle_state.as_deref().unwrap_or("-"),
            i.availability_zone.as_deref().unwrap_or("-"),
        ));
    }
    match &f.refresh {
        Some(r) => s.push_str(&format!("instance refresh {}: {}\n", r.id, r.describe())),
        None => s.push_str("no instance refresh\n"),
    }
    s
}
