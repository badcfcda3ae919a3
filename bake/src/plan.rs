//! `bake plan`: what `bake release` would do, without doing it (as `terraform plan
//! -detailed-exitcode`): the image change, the launch template version it would create, the
//! refresh preferences and alarms it would start the refresh with, and how many instances the
//! refresh would replace in which batches. Exit 0 when there is nothing to do (the default
//! version already has the image), [`Exit::Changes`] when there is a change.
//!
//! Reads only: DescribeAutoScalingGroups, DescribeLaunchTemplates(+Versions), DescribeImages,
//! DescribeInstanceRefreshes, `packer version` and `packer console`. No launch template version,
//! no refresh, no SSM parameter, no Packer build: when no AMI has the inputs hash yet, the plan
//! says a build is needed and names the hash.
//!
//! Batches ([`batches`]), as the Auto Scaling docs describe a rolling refresh: it keeps at least
//! `MinHealthyPercentage` of the desired capacity (rounded up) healthy and, above 100,
//! launches before terminating while the group stays within `MaxHealthyPercentage` (at least one
//! more than the desired capacity); "a larger range increases the number of instances that can
//! be replaced at the same time". So a batch is `max − min` instances (at least one), and a
//! checkpoint ends a batch at its share of the instances (rounded up). An estimate: a refresh
//! also waits for each batch's warm-up and replaces fewer while instances are unhealthy.

use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ec2::types::Image;

use crate::ami;
use crate::aws::Aws;
use crate::build::BuildOptions;
use crate::config::{RefreshSettings, Settings};
use crate::exit::Exit;
use crate::refresh::Snapshot;
use crate::release::ReleaseError;
use crate::targets::Targets;

/// AWS's `MaxHealthyPercentage` when neither the refresh nor the group's instance maintenance
/// policy sets one.
pub const DEFAULT_MAX_HEALTHY_PERCENTAGE: i32 = 100;

/// `bake plan` options.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// The AMI a `bake release --ami` would release.
    pub ami: Option<String>,
    /// Build options (`--force`: a release would build anew; `--app-release`).
    pub build: BuildOptions,
}

/// An image as the plan shows it: its id and provenance tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlannedImage {
    /// The AMI (`None`: not built yet).
    pub image_id: Option<String>,
    /// `bake:app-version`.
    pub app_version: Option<String>,
    /// `bake:git-commit`.
    pub git_commit: Option<String>,
    /// `bake:built-at`.
    pub built_at: Option<String>,
    /// `bake:inputs-hash`.
    pub inputs_hash: Option<String>,
}

impl PlannedImage {
    /// `id` with the tags of `image` (if it could be described).
    #[must_use]
    pub fn of(id: &str, image: Option<&Image>) -> Self {
        let tag = |k| image.and_then(|i| ami::tag(i, k)).map(ToOwned::to_owned);
        Self {
            image_id: Some(id.to_owned()),
            app_version: tag(ami::TAG_APP_VERSION),
            git_commit: tag(ami::TAG_GIT_COMMIT),
            built_at: tag(ami::TAG_BUILT_AT),
            inputs_hash: tag(ami::TAG_INPUTS_HASH),
        }
    }

    fn describe(&self) -> String {
        let mut s = self
            .image_id
            .clone()
            .unwrap_or_else(|| "(to be built)".to_owned());
        for (k, v) in [
            ("app", &self.app_version),
            ("commit", &self.git_commit),
            ("built", &self.built_at),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("  {k} {v}"));
            }
        }
        s
    }
}

/// The launch template change.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlannedVersion {
    /// The default version now.
    pub default_version: i64,
    /// The latest version now.
    pub latest_version: i64,
    /// The version a release would create and make the default (`None`: nothing to do).
    pub new_version: Option<i64>,
    /// The version it would be created from (the default).
    pub base_version: Option<i64>,
}

/// The refresh preferences a release would start the refresh with (`[refresh]`, with the
/// stack's rollback alarms).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlannedPreferences {
    /// `MinHealthyPercentage`.
    pub min_healthy_percentage: i32,
    /// `MaxHealthyPercentage` as sent (`None`: the group's instance maintenance policy's, else
    /// AWS's 100).
    pub max_healthy_percentage: Option<i32>,
    /// `InstanceWarmup`, seconds (`None`: the group's).
    pub instance_warmup_secs: Option<u64>,
    /// `CheckpointPercentages`.
    pub checkpoint_percentages: Vec<i32>,
    /// `CheckpointDelay`, seconds.
    pub checkpoint_delay_secs: Option<u64>,
    /// `SkipMatching`.
    pub skip_matching: bool,
    /// `AutoRollback`.
    pub auto_rollback: bool,
    /// `BakeTime`, seconds.
    pub bake_time_secs: Option<u64>,
    /// `AlarmSpecification.Alarms`.
    pub alarms: Vec<String>,
}

/// One batch of replacements.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Batch {
    /// Instances replaced in this batch.
    pub instances: u32,
    /// The checkpoint (percent) the refresh waits at after this batch.
    pub checkpoint: Option<i32>,
}

/// How the refresh would replace the instances ([`batches`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replacement {
    /// The group's desired capacity.
    pub desired_capacity: u32,
    /// Instances the refresh would replace (every instance of the group: none runs the new
    /// version).
    pub instances: u32,
    /// `MinHealthyPercentage` in effect.
    pub min_healthy_percentage: i32,
    /// `MaxHealthyPercentage` in effect.
    pub max_healthy_percentage: i32,
    /// Instances kept healthy: the minimum of the desired capacity, rounded up.
    pub min_healthy: u32,
    /// Instances the group may have at once (launched before terminating above 100 %).
    pub max_instances: u32,
    /// Instances replaced at once.
    pub batch_size: u32,
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// Instances left on the previous version (a last checkpoint below 100, `refresh.partial`).
    pub left_on_previous: u32,
}

/// What `bake release` would do.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Plan {
    /// The group.
    pub auto_scaling_group: String,
    /// Its launch template.
    pub launch_template_id: String,
    /// Whether a release would change anything (exit [`Exit::Changes`]).
    pub changes: bool,
    /// Whether a release would run a Packer build first (no AMI has `inputs_hash` yet, or
    /// `--force`).
    pub build_needed: bool,
    /// The inputs hash of the image a build would make (`None` with `--ami`).
    pub inputs_hash: Option<String>,
    /// The image of the launch template's default version.
    pub current_image: PlannedImage,
    /// The image a release would use.
    pub image: PlannedImage,
    /// The launch template change.
    pub launch_template: PlannedVersion,
    /// The refresh preferences.
    pub refresh: PlannedPreferences,
    /// The replacements (`None`: nothing to do).
    pub replacement: Option<Replacement>,
    /// A refresh in progress (a release would wait for it with `--wait-for-current`, else exit
    /// 9).
    pub refresh_in_progress: Option<Snapshot>,
}

impl Plan {
    /// The exit code: 0 when there is nothing to do, else [`Exit::Changes`].
    #[must_use]
    pub fn exit(&self) -> Exit {
        if self.changes {
            Exit::Changes
        } else {
            Exit::Ok
        }
    }
}

/// The preferences as the plan shows them.
#[must_use]
pub fn planned_preferences(r: &RefreshSettings, alarms: Vec<String>) -> PlannedPreferences {
    let checkpoints = !r.checkpoint_percentages.is_empty();
    PlannedPreferences {
        min_healthy_percentage: r.min_healthy_percentage,
        max_healthy_percentage: r.max_healthy_percentage,
        instance_warmup_secs: r.instance_warmup.map(|d| d.as_secs()),
        checkpoint_percentages: r.checkpoint_percentages.clone(),
        checkpoint_delay_secs: r
            .checkpoint_delay
            .filter(|_| checkpoints)
            .map(|d| d.as_secs()),
        skip_matching: r.skip_matching,
        auto_rollback: r.auto_rollback,
        bake_time_secs: r.bake_time.map(|d| d.as_secs()),
        alarms,
    }
}

/// The batches in which a rolling refresh replaces `instances` instances of a group of
/// `desired` capacity, keeping `min_pct` % healthy and at most `max_pct` % in the group, waiting
/// at `checkpoints` (see the module's documentation).
#[must_use]
pub fn batches(
    desired: u32,
    instances: u32,
    min_pct: i32,
    max_pct: i32,
    checkpoints: &[i32],
) -> Replacement {
    let pct = |p: i32| u64::from(p.clamp(0, 200).unsigned_abs());
    let min_healthy = u32::try_from((u64::from(desired) * pct(min_pct)).div_ceil(100))
        .unwrap_or(u32::MAX)
        .min(desired);
    let max_instances = if max_pct > 100 {
        u32::try_from(u64::from(desired) * pct(max_pct) / 100)
            .unwrap_or(u32::MAX)
            .max(desired.saturating_add(1))
    } else {
        desired
    };
    let batch_size = max_instances.saturating_sub(min_healthy).max(1);
    let share = |cp: i32| {
        u32::try_from((u64::from(instances) * pct(cp.min(100))).div_ceil(100)).unwrap_or(u32::MAX)
    };
    let mut out: Vec<Batch> = Vec::new();
    let mut replaced = 0u32;
    let mut fill = |upto: u32, out: &mut Vec<Batch>| {
        while replaced < upto {
            let n = batch_size.min(upto - replaced);
            out.push(Batch {
                instances: n,
                checkpoint: None,
            });
            replaced += n;
        }
    };
    for &cp in checkpoints {
        fill(share(cp).min(instances), &mut out);
        if cp < 100 {
            // Checkpoints reached by the same batch are waited for once, at the highest.
            if let Some(last) = out.last_mut() {
                last.checkpoint = Some(cp);
            }
        }
    }
    let partial = checkpoints.last().is_some_and(|&cp| cp < 100);
    if !partial {
        fill(instances, &mut out);
    }
    let done: u32 = out.iter().map(|b| b.instances).sum();
    Replacement {
        desired_capacity: desired,
        instances,
        min_healthy_percentage: min_pct,
        max_healthy_percentage: max_pct,
        min_healthy,
        max_instances,
        batch_size,
        batches: out,
        left_on_previous: instances - done,
    }
}

/// The plan's replacements for `group`.
fn replacement(group: &AutoScalingGroup, r: &RefreshSettings) -> Replacement {
    let desired = u32::try_from(group.desired_capacity().unwrap_or(0)).unwrap_or(0);
    let instances = u32::try_from(group.instances().len()).unwrap_or(u32::MAX);
    let max_pct = r
        .max_healthy_percentage
        .or_else(|| {
            group
                .instance_maintenance_policy()
                .and_then(|p| p.max_healthy_percentage())
                .filter(|p| *p >= 100)
        })
        .unwrap_or(DEFAULT_MAX_HEALTHY_PERCENTAGE);
    batches(
        desired,
        instances,
        r.min_healthy_percentage,
        max_pct,
        &r.checkpoint_percentages,
    )
}

/// Works out what a release to `t` would do. Errors as a release's would be before it changes
/// anything (configuration, a missing `--ami`, the targets).
pub async fn plan(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    opts: &PlanOptions,
) -> anyhow::Result<Plan> {
    let asg = &t.auto_scaling_group;
    let lt = &t.launch_template_id;
    let prefs = crate::release::release_preferences(&settings.refresh, t)?;
    let alarms = prefs
        .alarm_specification()
        .map(|a| a.alarms().to_vec())
        .unwrap_or_default();
    let group = crate::targets::describe_group(aws, asg).await?;
    crate::release::check_numbered_version(&settings.refresh, &group)?;
    let refresh_in_progress = crate::refresh::active(&aws.asg, asg).await?;
    let (default_version, latest_version) = crate::launch_template::versions(aws, lt).await?;
    let images = crate::launch_template::images(aws, lt).await?;
    let current_image = match images.get(&default_version) {
        Some(id) => {
            // A deregistered image still has its id; its tags are gone with it.
            let described = ami::describe(&aws.ec2, id).await.ok();
            PlannedImage::of(id, described.as_ref())
        }
        None => PlannedImage::default(),
    };
    let (image, inputs_hash) = match &opts.ami {
        Some(id) => {
            let described = ami::describe(&aws.ec2, id)
                .await
                .map_err(|source| ReleaseError::Ami { source })?;
            (PlannedImage::of(id, Some(&described)), None)
        }
        None => {
            let (hash, cached) = crate::build::cached(aws, settings, &opts.build).await?;
            let image = match &cached {
                Some(img) => PlannedImage::of(img.image_id().unwrap_or_default(), Some(img)),
                None => PlannedImage {
                    inputs_hash: Some(hash.clone()),
                    app_version: settings.app_version.clone(),
                    ..PlannedImage::default()
                },
            };
            (image, Some(hash))
        }
    };
    let build_needed = image.image_id.is_none();
    let changes = build_needed || image.image_id != current_image.image_id;
    Ok(Plan {
        auto_scaling_group: asg.clone(),
        launch_template_id: lt.clone(),
        changes,
        build_needed,
        inputs_hash,
        current_image,
        image,
        launch_template: PlannedVersion {
            default_version,
            latest_version,
            new_version: changes.then_some(latest_version + 1),
            base_version: changes.then_some(default_version),
        },
        refresh: planned_preferences(&settings.refresh, alarms),
        replacement: changes.then(|| replacement(&group, &settings.refresh)),
        refresh_in_progress,
    })
}

fn secs(s: u64) -> String {
    crate::output::secs(std::time::Duration::from_secs(s))
}

/// The preferences in one line for people.
fn render_preferences(p: &PlannedPreferences) -> String {
    let mut parts = vec![format!("min healthy {}%", p.min_healthy_percentage)];
    parts.push(match p.max_healthy_percentage {
        Some(m) => format!("max healthy {m}%"),
        None => "max healthy: the group's (AWS default 100%)".to_owned(),
    });
    parts.push(match p.instance_warmup_secs {
        Some(w) => format!("warm-up {}", secs(w)),
        None => "warm-up: the group's".to_owned(),
    });
    if !p.checkpoint_percentages.is_empty() {
        let cps: Vec<String> = p
            .checkpoint_percentages
            .iter()
            .map(|c| format!("{c}%"))
            .collect();
        let mut s = format!("checkpoints {}", cps.join(" "));
        if let Some(d) = p.checkpoint_delay_secs {
            s.push_str(&format!(" (wait {})", secs(d)));
        }
        parts.push(s);
    }
    if let Some(b) = p.bake_time_secs {
        parts.push(format!("bake time {}", secs(b)));
    }
    parts.push(format!(
        "skip matching {}",
        if p.skip_matching { "on" } else { "off" }
    ));
    parts.push(format!(
        "auto rollback {}",
        if p.auto_rollback { "on" } else { "off" }
    ));
    parts.push(if p.alarms.is_empty() {
        "no rollback alarms".to_owned()
    } else {
        format!("rollback alarms {}", p.alarms.join(", "))
    });
    parts.join(", ")
}

/// The batches in one line for people: `2 instances (desired 2) in 2 batches of at most 1: 1, 1`.
fn render_replacement(r: &Replacement) -> String {
    let plural = |n: u32, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "es" });
    let sizes: Vec<String> = r
        .batches
        .iter()
        .map(|b| match b.checkpoint {
            Some(cp) => format!("{} (then checkpoint {cp}%)", b.instances),
            None => b.instances.to_string(),
        })
        .collect();
    let mut s = format!(
        "{} instance{} (desired {}) in {} of at most {} (keeps {} healthy, at most {} in the group: min {}%, max {}%)",
        r.instances,
        if r.instances == 1 { "" } else { "s" },
        r.desired_capacity,
        plural(u32::try_from(r.batches.len()).unwrap_or(u32::MAX), "batch"),
        r.batch_size,
        r.min_healthy,
        r.max_instances,
        r.min_healthy_percentage,
        r.max_healthy_percentage,
    );
    if !sizes.is_empty() {
        s.push_str(&format!(": {}", sizes.join(", ")));
    }
    if r.left_on_previous > 0 {
        s.push_str(&format!(
            "; {} left on the previous version (refresh.partial)",
            r.left_on_previous
        ));
    }
    s
}

/// A plan as text for people.
#[must_use]
pub fn render(p: &Plan) -> String {
    let mut lines = Vec::new();
    if !p.changes {
        lines.push(format!(
            "nothing to do: the default version {} of launch template {} of auto scaling group {} already has image {}",
            p.launch_template.default_version,
            p.launch_template_id,
            p.auto_scaling_group,
            p.image.image_id.as_deref().unwrap_or_default()
        ));
    } else {
        lines.push(format!(
            "plan for auto scaling group {} (launch template {}):",
            p.auto_scaling_group, p.launch_template_id
        ));
        lines.push(format!(
            "  image:     {} -> {}",
            p.current_image.image_id.as_deref().unwrap_or("(none)"),
            p.image.image_id.as_deref().unwrap_or("(to be built)")
        ));
        lines.push(format!("    current  {}", p.current_image.describe()));
        lines.push(format!("    new      {}", p.image.describe()));
        if p.build_needed {
            lines.push(format!(
                "  build:     needed: no AMI has inputs hash {} yet (a release runs packer build first)",
                p.inputs_hash.as_deref().unwrap_or_default()
            ));
        }
        if let (Some(new), Some(base)) = (
            p.launch_template.new_version,
            p.launch_template.base_version,
        ) {
            lines.push(format!(
                "  launch template: new version {new} from version {base} (the default now), made the default"
            ));
        }
        lines.push(format!("  refresh:   {}", render_preferences(&p.refresh)));
        if let Some(r) = &p.replacement {
            lines.push(format!("  replaces:  {}", render_replacement(r)));
        }
    }
    if let Some(r) = &p.refresh_in_progress {
        lines.push(format!(
            "  note: instance refresh {} is in progress ({}): `bake release` waits for it only with --wait-for-current",
            r.id,
            r.describe()
        ));
    }
    if p.changes {
        lines.push(format!(
            "changes: `bake release{}` would apply them (exit {})",
            p.image
                .image_id
                .as_deref()
                .filter(|_| p.inputs_hash.is_none())
                .map(|a| format!(" --ami {a}"))
                .unwrap_or_default(),
            Exit::Changes as u8
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(r: &Replacement) -> Vec<(u32, Option<i32>)> {
        r.batches
            .iter()
            .map(|b| (b.instances, b.checkpoint))
            .collect()
    }

    #[test]
    fn test_default_preferences_replace_one_at_a_time() {
        // 90 % of 2, rounded up, is 2: no room, yet one at a time.
        let r = batches(2, 2, 90, 100, &[]);
        assert_eq!((r.min_healthy, r.max_instances, r.batch_size), (2, 2, 1));
        assert_eq!(sizes(&r), vec![(1, None), (1, None)]);
    }

    #[test]
    fn test_min_healthy_sets_the_batch_size() {
        let r = batches(4, 4, 50, 100, &[]);
        assert_eq!(r.batch_size, 2);
        assert_eq!(sizes(&r), vec![(2, None), (2, None)]);
        let r = batches(10, 10, 75, 100, &[]);
        // ceil(7.5) = 8 healthy: 2 at a time.
        assert_eq!((r.min_healthy, r.batch_size, r.batches.len()), (8, 2, 5));
    }

    #[test]
    fn test_max_healthy_above_100_launches_before_terminating() {
        let r = batches(4, 4, 100, 150, &[]);
        assert_eq!((r.min_healthy, r.max_instances, r.batch_size), (4, 6, 2));
        assert_eq!(r.batches.len(), 2);
        // At least one more than desired.
        let r = batches(2, 2, 100, 110, &[]);
        assert_eq!((r.max_instances, r.batch_size), (3, 1));
        let r = batches(4, 4, 0, 200, &[]);
        assert_eq!(sizes(&r), vec![(4, None)]);
    }

    #[test]
    fn test_checkpoints_end_batches() {
        let r = batches(4, 4, 0, 100, &[25, 100]);
        assert_eq!(sizes(&r), vec![(1, Some(25)), (3, None)]);
        // Two checkpoints reached by one batch: waited for once, at the highest.
        let r = batches(2, 2, 50, 100, &[10, 40, 100]);
        assert_eq!(sizes(&r), vec![(1, Some(40)), (1, None)]);
        // A partial release stops at its last checkpoint.
        let r = batches(4, 4, 50, 100, &[50]);
        assert_eq!(sizes(&r), vec![(2, Some(50))]);
        assert_eq!(r.left_on_previous, 2);
    }

    #[test]
    fn test_an_empty_group_has_no_batches() {
        let r = batches(0, 0, 90, 100, &[]);
        assert!(r.batches.is_empty());
        assert_eq!(r.left_on_previous, 0);
    }
}
