//! `bake prune`: deregister bake-made AMIs and delete their snapshots, never the newest K nor any
//! AMI referenced by a launch template version in use (the default and latest versions of the
//! target's template, the group's own version, any version an instance of the group runs) or by
//! an instance that is not terminated.

use std::collections::{BTreeMap, BTreeSet};

use bake_common::aws::Aws;

use crate::ami::{self, PruneItem};
use crate::exit::{coded, Exit};
use crate::targets::Targets;

/// AMIs referenced by launch template versions in use: image → why.
async fn used_by_template(aws: &Aws, t: &Targets) -> anyhow::Result<BTreeMap<String, String>> {
    let lt = &t.launch_template_id;
    let group = crate::targets::describe_group(aws, &t.auto_scaling_group).await?;
    let (default, latest) = crate::release::template_versions(aws, lt).await?;
    let mut versions: BTreeMap<i64, String> = BTreeMap::new();
    versions.insert(default, format!("default version {default} of {lt}"));
    versions
        .entry(latest)
        .or_insert_with(|| format!("latest version {latest} of {lt}"));
    let resolve = |v: &str| match v {
        "$Default" => Some(default),
        "$Latest" => Some(latest),
        n => n.parse().ok(),
    };
    if let Some(v) = group
        .launch_template()
        .and_then(|l| l.version())
        .and_then(resolve)
    {
        versions
            .entry(v)
            .or_insert_with(|| format!("version {v} of {lt}, used by the group"));
    }
    for i in group.instances() {
        if let Some(v) = i
            .launch_template()
            .and_then(|l| l.version())
            .and_then(resolve)
        {
            versions.entry(v).or_insert_with(|| {
                format!(
                    "version {v} of {lt}, used by instance {}",
                    i.instance_id().unwrap_or("?")
                )
            });
        }
    }
    let mut used = BTreeMap::new();
    for (v, why) in versions {
        if let Some(img) = crate::release::version_image(aws, lt, v).await? {
            used.entry(img).or_insert(why);
        }
    }
    Ok(used)
}

/// Plans and (unless `dry_run`) carries out the prune.
pub async fn prune(
    aws: &Aws,
    targets: Option<&Targets>,
    keep: usize,
    dry_run: bool,
) -> anyhow::Result<Vec<PruneItem>> {
    let images = ami::list_baked(&aws.ec2)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?;
    let mut in_use = match targets {
        Some(t) => used_by_template(aws, t).await?,
        None => BTreeMap::new(),
    };
    let ids: BTreeSet<String> = images
        .iter()
        .filter_map(|i| i.image_id().map(ToOwned::to_owned))
        .collect();
    for (k, v) in ami::used_by_instances(&aws.ec2, &ids)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?
    {
        in_use.entry(k).or_insert(v);
    }
    let plan = ami::plan_prune(&images, keep, &in_use);
    if !dry_run {
        for item in plan.iter().filter(|p| p.kept_because.is_none()) {
            ami::delete(&aws.ec2, item)
                .await
                .map_err(|e| coded(Exit::Aws, e.to_string()))?;
            tracing::info!(image_id = %item.image_id, snapshots = ?item.snapshots, "deregistered");
        }
    }
    Ok(plan)
}
