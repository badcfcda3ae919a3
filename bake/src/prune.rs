//! `bake prune`: deregister bake-made AMIs and delete their snapshots, never the newest K nor any
//! AMI that something could go back to: the image of every version of the target's launch
//! template (`bake rollback` releases the newest version below the default, a stack update or
//! `aws ec2 modify-launch-template` can make any version the default again) or of an instance
//! that is not terminated. To let an old AMI go, delete its launch template versions first.

use std::collections::{BTreeMap, BTreeSet};

use crate::aws::Aws;

use crate::ami::{self, PruneItem};
use crate::targets::Targets;

/// AMIs that `bake rollback`, a release or a stack update could go back to: the image of every
/// version of the target's launch template (image → why), the one `bake rollback` would release
/// first named as such.
async fn used_by_template(aws: &Aws, t: &Targets) -> anyhow::Result<BTreeMap<String, String>> {
    let lt = &t.launch_template_id;
    let group = crate::targets::describe_group(aws, &t.auto_scaling_group).await?;
    let (default, latest) = crate::launch_template::versions(aws, lt).await?;
    let versions = crate::launch_template::images(aws, lt).await?;
    let resolve = |v: &str| match v {
        "$Default" => Some(default),
        "$Latest" => Some(latest),
        n => n.parse().ok(),
    };
    let mut used = BTreeMap::new();
    let mut keep = |version: i64, why: String| {
        if let Some(img) = versions.get(&version) {
            used.entry(img.clone()).or_insert(why);
        }
    };
    // The first reason recorded for an image is the one shown: the most telling first.
    if let Some((v, _)) = rollback_choice(&versions, default) {
        keep(
            v,
            format!("`bake rollback` would release it (version {v} of {lt}, before the default {default})"),
        );
    }
    keep(default, format!("default version {default} of {lt}"));
    if let Some(v) = group
        .launch_template()
        .and_then(|l| l.version())
        .and_then(resolve)
    {
        keep(v, format!("version {v} of {lt}, used by the group"));
    }
    for i in group.instances() {
        if let Some(v) = i
            .launch_template()
            .and_then(|l| l.version())
            .and_then(resolve)
        {
            keep(
                v,
                format!(
                    "version {v} of {lt}, used by instance {}",
                    i.instance_id().unwrap_or("?")
                ),
            );
        }
    }
    for &v in versions.keys().rev() {
        keep(v, format!("version {v} of {lt}"));
    }
    Ok(used)
}

/// The version and image `bake rollback` releases when no refresh is running: the newest version
/// below the default that names an image (see [`crate::rollback`]).
#[must_use]
pub fn rollback_choice(versions: &BTreeMap<i64, String>, default: i64) -> Option<(i64, &String)> {
    versions
        .range(..default)
        .next_back()
        .map(|(v, img)| (*v, img))
}

/// Plans and (unless `dry_run`) carries out the prune.
pub async fn prune(
    aws: &Aws,
    targets: Option<&Targets>,
    keep: usize,
    dry_run: bool,
) -> anyhow::Result<Vec<PruneItem>> {
    let images = ami::list_baked(&aws.ec2).await?;
    let mut in_use = match targets {
        Some(t) => used_by_template(aws, t).await?,
        None => BTreeMap::new(),
    };
    let ids: BTreeSet<String> = images
        .iter()
        .filter_map(|i| i.image_id().map(ToOwned::to_owned))
        .collect();
    for (k, v) in ami::used_by_instances(&aws.ec2, &ids).await? {
        in_use.entry(k).or_insert(v);
    }
    let plan = ami::plan_prune(&images, keep, &in_use);
    if !dry_run {
        for item in plan.iter().filter(|p| p.kept_because.is_none()) {
            ami::delete(&aws.ec2, item).await?;
            tracing::info!(image_id = %item.image_id, snapshots = ?item.snapshots, "deregistered");
        }
    }
    Ok(plan)
}

/// The plan as text for people: one line an AMI, deleted (or, with `dry_run`, to be deleted)
/// with its snapshots, or kept and why.
#[must_use]
pub fn render(plan: &[PruneItem], dry_run: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    plan.iter()
        .map(|p| match &p.kept_because {
            Some(why) => format!("kept\t{}\t{}\t{why}", p.image_id, p.created),
            None => format!(
                "{verb}\t{}\t{}\tsnapshots {}",
                p.image_id,
                p.created,
                p.snapshots.join(",")
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rollback_choice_is_the_newest_version_below_the_default() {
        let v = BTreeMap::from([
            (1, "ami-a".to_owned()),
            (2, "ami-b".to_owned()),
            (3, "ami-a".to_owned()),
        ]);
        assert_eq!(rollback_choice(&v, 3), Some((2, &"ami-b".to_owned())));
        assert_eq!(rollback_choice(&v, 1), None);
        // A version without an image (deleted or image-less) is skipped, as rollback skips it.
        let v = BTreeMap::from([(1, "ami-a".to_owned()), (3, "ami-c".to_owned())]);
        assert_eq!(rollback_choice(&v, 3), Some((1, &"ami-a".to_owned())));
    }
}
