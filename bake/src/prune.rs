//! `bake prune`: retire bake-made AMIs in stages — deprecate, then disable, then deregister and
//! delete their snapshots — never the newest K nor any AMI that something could go back to.
//!
//! **What keeps an AMI**: being among the newest K (`--keep`, `prune.keep`); the image of every
//! version of every launch template of the account and region (`bake rollback` releases the
//! newest version below the default of the target's; a stack update or `aws ec2
//! modify-launch-template` can make any version the default again); the image of a launch
//! configuration a group uses; the image the fleet stack's image parameter names
//! (`target.image_parameter`: CloudFormation launches it on the stack's next update); the image
//! of an instance that is not terminated. A kept AMI that an earlier run deprecated or disabled
//! is restored (`enable`, `cancel-deprecation`): something needs it again.
//!
//! **The stages**: an AMI that nothing keeps is deprecated (EC2's deprecation time, tag
//! [`ami::TAG_DEPRECATED_AT`]): it still launches, but DescribeImages leaves it out for other
//! accounts and the console warns. `prune.disable_after` (default 7 days) after that it is
//! disabled (tag [`ami::TAG_DISABLED_AT`]): it can no longer be launched nor shared, and
//! `aws ec2 enable-image` brings it back whole. `prune.deregister_after` (default 7 days) after
//! that it is deregistered, and its snapshots deleted last. Each run moves every AMI as far as
//! its delays allow (with both delays 0, one run retires an AMI whole); an AMI deprecated or
//! disabled by someone else counts from EC2's deprecation time or from this run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{Image, ImageState, Tag};
use aws_sdk_ssm::operation::get_parameter::GetParameterError;

use crate::aws::Aws;

use crate::ami::{self, ec2_err, AmiError};
use crate::targets::Targets;

/// How far ahead of now a deprecation is set: EC2 takes no time in the past and rounds to the
/// minute.
const DEPRECATE_AHEAD: Duration = Duration::from_secs(60);

pub use crate::config::{PruneStages as Stages, DEFAULT_PRUNE_STAGE_DELAY};

/// One change to one AMI, in the order a run makes them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// EnableImageDeprecation, then the tag `bake:deprecated-at`.
    Deprecate,
    /// DisableImage, then the tag `bake:disabled-at`.
    Disable,
    /// The tag `bake:disabled-at` on an AMI disabled by someone else: its delay starts now.
    RecordDisabled,
    /// DeregisterImage.
    Deregister,
    /// DeleteSnapshot of each of its snapshots, after the deregistration.
    DeleteSnapshots,
    /// EnableImage of a kept AMI that was disabled.
    Enable,
    /// DisableImageDeprecation of a kept AMI that `bake prune` deprecated.
    CancelDeprecation,
}

/// What a run decides for one AMI: its steps, its stage after them, what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePlan {
    /// Its stage before the run.
    pub before: &'static str,
    /// The changes, in order.
    pub steps: Vec<Step>,
    /// Its stage after them.
    pub after: &'static str,
    /// The next stage and from when, if it waits.
    pub next: Option<String>,
}

/// What an AMI's description says of its stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Its state is `disabled`.
    pub disabled: bool,
    /// When it was deprecated: the tag `bake:deprecated-at`, else EC2's deprecation time once
    /// passed.
    pub deprecated_at: Option<SystemTime>,
    /// `bake prune` deprecated it (it has the tag).
    pub deprecated_by_bake: bool,
    /// The tag `bake:disabled-at`.
    pub disabled_at: Option<SystemTime>,
}

impl Facts {
    /// Reads them off `image`; `now` tells a deprecation that has taken effect from one to come.
    #[must_use]
    pub fn of(image: &Image, now: SystemTime) -> Self {
        let parse = |v: &str| humantime::parse_rfc3339_weak(v.trim_end_matches('Z')).ok();
        let tagged = ami::tag(image, ami::TAG_DEPRECATED_AT).and_then(parse);
        let ec2 = image
            .deprecation_time()
            .and_then(parse)
            .filter(|t| *t <= now);
        Self {
            disabled: image.state() == Some(&ImageState::Disabled),
            deprecated_at: tagged.or(ec2),
            deprecated_by_bake: tagged.is_some(),
            disabled_at: ami::tag(image, ami::TAG_DISABLED_AT).and_then(parse),
        }
    }

    fn stage(&self) -> &'static str {
        if self.disabled {
            "disabled"
        } else if self.deprecated_at.is_some() {
            "deprecated"
        } else {
            "available"
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Decides, purely, what a run does to an AMI with `facts` at `now`: a `kept` one is restored if
/// bake had retired it, any other moves through the stages as far as `stages` allow.
#[must_use]
pub fn plan_stages(facts: &Facts, kept: bool, now: SystemTime, stages: Stages) -> StagePlan {
    let before = facts.stage();
    let mut steps = Vec::new();
    if kept {
        if facts.disabled {
            steps.push(Step::Enable);
        }
        if facts.deprecated_by_bake {
            steps.push(Step::CancelDeprecation);
        }
        let after = if facts.deprecated_at.is_some() && !facts.deprecated_by_bake {
            "deprecated"
        } else {
            "available"
        };
        return StagePlan {
            before,
            steps,
            after,
            next: None,
        };
    }
    if !facts.disabled {
        let deprecated = match facts.deprecated_at {
            Some(t) => t,
            None => {
                steps.push(Step::Deprecate);
                now
            }
        };
        let due = deprecated + stages.disable_after;
        if now < due {
            return StagePlan {
                before,
                steps,
                after: "deprecated",
                next: Some(format!("disable from {}", rfc3339(due))),
            };
        }
        steps.push(Step::Disable);
    }
    let disabled = match (facts.disabled, facts.disabled_at) {
        (true, Some(t)) => t,
        (true, None) => {
            steps.push(Step::RecordDisabled);
            now
        }
        (false, _) => now,
    };
    let due = disabled + stages.deregister_after;
    if now < due {
        return StagePlan {
            before,
            steps,
            after: "disabled",
            next: Some(format!("deregister from {}", rfc3339(due))),
        };
    }
    steps.push(Step::Deregister);
    steps.push(Step::DeleteSnapshots);
    StagePlan {
        before,
        steps,
        after: "deregistered",
        next: None,
    }
}

/// What `bake prune` decided for one AMI.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PruneItem {
    /// The AMI.
    pub image_id: String,
    /// Its name.
    pub name: String,
    /// Its creation date.
    pub created: String,
    /// Its snapshots.
    pub snapshots: Vec<String>,
    /// `None`: retired (or would be, with `--dry-run`), in stages; else why it is kept.
    pub kept_because: Option<String>,
    /// Its stage before the run: `available`, `deprecated` or `disabled` ([this module](self)).
    pub stage_before: String,
    /// What the run did (or, with `--dry-run`, would do) to it, in order.
    pub steps: Vec<Step>,
    /// Its stage after the run: `available`, `deprecated`, `disabled` or `deregistered`.
    pub stage: String,
    /// What comes next and when (RFC 3339), for an AMI waiting between two stages.
    pub next: Option<String>,
}

/// Decides, purely, which of `images` (bake-made) to delete: everything except the newest
/// `keep` and the ones in `in_use` (image id → why).
#[must_use]
pub fn plan_prune(
    images: &[Image],
    keep: usize,
    in_use: &BTreeMap<String, String>,
) -> Vec<PruneItem> {
    let mut sorted: Vec<&Image> = images.iter().collect();
    // Newest first; ISO 8601 strings sort by time.
    sorted.sort_by(|a, b| {
        b.creation_date()
            .cmp(&a.creation_date())
            .then(a.image_id().cmp(&b.image_id()))
    });
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, img)| {
            let id = img.image_id().unwrap_or_default().to_owned();
            let kept_because = if i < keep {
                Some(format!("among the newest {keep}"))
            } else {
                in_use.get(&id).cloned()
            };
            PruneItem {
                image_id: id,
                name: img.name().unwrap_or_default().to_owned(),
                created: img.creation_date().unwrap_or_default().to_owned(),
                snapshots: ami::snapshots(img),
                kept_because,
                stage_before: String::new(),
                steps: Vec::new(),
                stage: String::new(),
                next: None,
            }
        })
        .collect()
}

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

/// AMIs of every launch template of the account and region but the target's (whose reasons
/// [`used_by_template`] gives): image → why.
async fn used_by_launch_templates(
    aws: &Aws,
    except: Option<&str>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut used = BTreeMap::new();
    let mut pages = aws.ec2.describe_launch_templates().into_paginator().send();
    let mut templates = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(ec2_err("DescribeLaunchTemplates", "every launch template"))?;
        for lt in page.launch_templates() {
            if let Some(id) = lt.launch_template_id() {
                if Some(id) != except {
                    templates.push((
                        id.to_owned(),
                        lt.launch_template_name().unwrap_or("").to_owned(),
                    ));
                }
            }
        }
    }
    for (id, name) in templates {
        for (v, img) in crate::launch_template::images(aws, &id).await? {
            used.entry(img)
                .or_insert_with(|| format!("version {v} of launch template {id} ({name})"));
        }
    }
    Ok(used)
}

/// AMIs of the launch configurations that groups of the account and region use: image → why.
async fn used_by_launch_configurations(aws: &Aws) -> anyhow::Result<BTreeMap<String, String>> {
    let mut by_config: BTreeMap<String, String> = BTreeMap::new();
    let mut pages = aws
        .asg
        .describe_auto_scaling_groups()
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "DescribeAutoScalingGroups (every group): {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        })?;
        for g in page.auto_scaling_groups() {
            if let Some(lc) = g.launch_configuration_name() {
                by_config
                    .entry(lc.to_owned())
                    .or_insert_with(|| g.auto_scaling_group_name().unwrap_or("?").to_owned());
            }
        }
    }
    let mut used = BTreeMap::new();
    if by_config.is_empty() {
        return Ok(used);
    }
    let names: Vec<String> = by_config.keys().cloned().collect();
    for chunk in names.chunks(50) {
        let out = aws
            .asg
            .describe_launch_configurations()
            .set_launch_configuration_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeLaunchConfigurations ({}): {}",
                    chunk.join(","),
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                )
            })?;
        for lc in out.launch_configurations() {
            if let (Some(name), Some(img)) = (lc.launch_configuration_name(), lc.image_id()) {
                let group = by_config.get(name).map_or("?", String::as_str);
                used.entry(img.to_owned())
                    .or_insert_with(|| format!("launch configuration {name} of group {group}"));
            }
        }
    }
    Ok(used)
}

/// The AMI the fleet stack's image parameter names, if the parameter exists.
async fn used_by_image_parameter(
    aws: &Aws,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    match aws.ssm.get_parameter().name(name).send().await {
        Ok(out) => Ok(out
            .parameter()
            .and_then(|p| p.value())
            .map(|img| {
                BTreeMap::from([(
                    img.to_owned(),
                    format!("named by the image parameter {name} (the fleet stack's next update launches it)"),
                )])
            })
            .unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(GetParameterError::is_parameter_not_found) =>
        {
            Ok(BTreeMap::new())
        }
        Err(e) => Err(anyhow::anyhow!(
            "GetParameter ({name}, the image parameter): {}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )),
    }
}

/// What `bake prune` is asked.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The target, if bake.toml names one: its launch template's reasons are the most telling.
    pub targets: Option<&'a Targets>,
    /// `target.image_parameter`.
    pub image_parameter: Option<&'a str>,
    /// Newest AMIs kept whatever else.
    pub keep: usize,
    /// The delays between the stages.
    pub stages: Stages,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
}

/// Plans and (unless `dry_run`) carries out the prune. An AWS error stops the run where it
/// happened: every step already made is one of the stages (a later run goes on from there).
pub async fn prune(aws: &Aws, req: Request<'_>) -> anyhow::Result<Vec<PruneItem>> {
    let images = ami::list_baked(&aws.ec2).await?;
    let mut in_use = match req.targets {
        Some(t) => used_by_template(aws, t).await?,
        None => BTreeMap::new(),
    };
    let mut more =
        used_by_launch_templates(aws, req.targets.map(|t| t.launch_template_id.as_str())).await?;
    more.extend(used_by_launch_configurations(aws).await?);
    if let Some(name) = req.image_parameter {
        more.extend(used_by_image_parameter(aws, name).await?);
    }
    let ids: BTreeSet<String> = images
        .iter()
        .filter_map(|i| i.image_id().map(ToOwned::to_owned))
        .collect();
    more.extend(ami::used_by_instances(&aws.ec2, &ids).await?);
    for (k, v) in more {
        in_use.entry(k).or_insert(v);
    }
    let mut plan = plan_prune(&images, req.keep, &in_use);
    let now = SystemTime::now();
    let by_id: BTreeMap<&str, &Image> = images
        .iter()
        .filter_map(|i| i.image_id().map(|id| (id, i)))
        .collect();
    for item in &mut plan {
        let facts = by_id
            .get(item.image_id.as_str())
            .map(|i| Facts::of(i, now))
            .unwrap_or_default();
        let p = plan_stages(&facts, item.kept_because.is_some(), now, req.stages);
        item.stage_before = p.before.to_owned();
        item.steps = p.steps;
        item.stage = p.after.to_owned();
        item.next = p.next;
    }
    if !req.dry_run {
        for item in &plan {
            for step in &item.steps {
                apply(&aws.ec2, item, step, now).await?;
            }
            if !item.steps.is_empty() {
                tracing::info!(image_id = %item.image_id, steps = ?item.steps, stage = %item.stage, "pruned");
            }
        }
    }
    Ok(plan)
}

async fn tag_now(
    ec2: &aws_sdk_ec2::Client,
    image: &str,
    key: &str,
    now: SystemTime,
) -> Result<(), AmiError> {
    ec2.create_tags()
        .resources(image)
        .tags(Tag::builder().key(key).value(rfc3339(now)).build())
        .send()
        .await
        .map_err(ec2_err("CreateTags", format!("{image} {key}")))?;
    Ok(())
}

async fn untag(ec2: &aws_sdk_ec2::Client, image: &str) -> Result<(), AmiError> {
    ec2.delete_tags()
        .resources(image)
        .tags(Tag::builder().key(ami::TAG_DEPRECATED_AT).build())
        .tags(Tag::builder().key(ami::TAG_DISABLED_AT).build())
        .send()
        .await
        .map_err(ec2_err("DeleteTags", image.to_owned()))?;
    Ok(())
}

/// Makes one step of `item`'s plan.
async fn apply(
    ec2: &aws_sdk_ec2::Client,
    item: &PruneItem,
    step: &Step,
    now: SystemTime,
) -> Result<(), AmiError> {
    let id = item.image_id.as_str();
    match step {
        Step::Deprecate => {
            let at = now + DEPRECATE_AHEAD;
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            ec2.enable_image_deprecation()
                .image_id(id)
                .deprecate_at(aws_smithy_types::DateTime::from_secs(secs))
                .send()
                .await
                .map_err(ec2_err("EnableImageDeprecation", id.to_owned()))?;
            tag_now(ec2, id, ami::TAG_DEPRECATED_AT, now).await?;
        }
        Step::Disable => {
            ec2.disable_image()
                .image_id(id)
                .send()
                .await
                .map_err(ec2_err("DisableImage", id.to_owned()))?;
            tag_now(ec2, id, ami::TAG_DISABLED_AT, now).await?;
        }
        Step::RecordDisabled => tag_now(ec2, id, ami::TAG_DISABLED_AT, now).await?,
        Step::Deregister => {
            ec2.deregister_image()
                .image_id(id)
                .send()
                .await
                .map_err(ec2_err("DeregisterImage", id.to_owned()))?;
        }
        Step::DeleteSnapshots => {
            for s in &item.snapshots {
                ec2.delete_snapshot()
                    .snapshot_id(s)
                    .send()
                    .await
                    .map_err(ec2_err("DeleteSnapshot", format!("{s} of {id}")))?;
            }
        }
        Step::Enable => {
            ec2.enable_image()
                .image_id(id)
                .send()
                .await
                .map_err(ec2_err("EnableImage", id.to_owned()))?;
            untag(ec2, id).await?;
        }
        Step::CancelDeprecation => {
            ec2.disable_image_deprecation()
                .image_id(id)
                .send()
                .await
                .map_err(ec2_err("DisableImageDeprecation", id.to_owned()))?;
            untag(ec2, id).await?;
        }
    }
    Ok(())
}

/// The plan as text for people: one line an AMI — what was done (or, with `dry_run`, would be),
/// or why it is kept — and what it waits for.
#[must_use]
pub fn render(plan: &[PruneItem], dry_run: bool) -> String {
    plan.iter()
        .map(|p| {
            let did = if p.steps.is_empty() {
                match &p.kept_because {
                    Some(_) => "kept".to_owned(),
                    None => format!("waits ({})", p.stage),
                }
            } else {
                let words: Vec<&str> = p
                    .steps
                    .iter()
                    .map(|s| if dry_run { s.words().0 } else { s.words().1 })
                    .collect();
                if dry_run {
                    format!("would {}", words.join(", "))
                } else {
                    words.join(", ")
                }
            };
            let why = p
                .kept_because
                .clone()
                .or_else(|| p.next.clone())
                .unwrap_or_else(|| format!("snapshots {}", p.snapshots.join(",")));
            format!("{did}\t{}\t{}\t{why}", p.image_id, p.created)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Step {
    /// Its name (as in the JSON) and how the text output says it was done.
    fn words(&self) -> (&'static str, &'static str) {
        match self {
            Self::Deprecate => ("deprecate", "deprecated"),
            Self::Disable => ("disable", "disabled"),
            Self::RecordDisabled => ("record-disabled", "recorded-disabled"),
            Self::Deregister => ("deregister", "deregistered"),
            Self::DeleteSnapshots => ("delete-snapshots", "deleted-snapshots"),
            Self::Enable => ("enable", "enabled"),
            Self::CancelDeprecation => ("cancel-deprecation", "cancelled-deprecation"),
        }
    }
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

    fn img(id: &str, date: &str) -> Image {
        Image::builder()
            .image_id(id)
            .creation_date(date)
            .name(id)
            .build()
    }

    #[test]
    fn test_plan_prune_keeps_newest_and_in_use() {
        let images = vec![
            img("ami-1", "2026-01-01T00:00:00.000Z"),
            img("ami-3", "2026-03-01T00:00:00.000Z"),
            img("ami-2", "2026-02-01T00:00:00.000Z"),
            img("ami-0", "2025-12-01T00:00:00.000Z"),
        ];
        let in_use = BTreeMap::from([("ami-0".to_owned(), "launch template default".to_owned())]);
        let plan = plan_prune(&images, 1, &in_use);
        let deleted: Vec<_> = plan
            .iter()
            .filter(|p| p.kept_because.is_none())
            .map(|p| p.image_id.as_str())
            .collect();
        assert_eq!(deleted, vec!["ami-2", "ami-1"]);
        assert_eq!(plan[0].image_id, "ami-3");
        assert!(plan
            .iter()
            .any(|p| p.image_id == "ami-0" && p.kept_because.is_some()));
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_800_000_000)
            + DAY * u32::try_from(days).unwrap()
    }

    fn week() -> Stages {
        Stages {
            disable_after: DAY * 7,
            deregister_after: DAY * 7,
        }
    }

    #[test]
    fn test_an_unused_ami_is_deprecated_then_disabled_then_deregistered() {
        let fresh = Facts::default();
        let p = plan_stages(&fresh, false, at(0), week());
        assert_eq!(p.before, "available");
        assert_eq!(p.steps, vec![Step::Deprecate]);
        assert_eq!(p.after, "deprecated");
        assert_eq!(
            p.next.as_deref(),
            Some("disable from 2027-01-22T08:00:00Z"),
            "{p:?}"
        );

        let deprecated = Facts {
            deprecated_at: Some(at(0)),
            deprecated_by_bake: true,
            ..Facts::default()
        };
        let waits = plan_stages(&deprecated, false, at(6), week());
        assert!(waits.steps.is_empty(), "{waits:?}");
        assert_eq!(waits.after, "deprecated");
        let due = plan_stages(&deprecated, false, at(7), week());
        assert_eq!(due.steps, vec![Step::Disable]);
        assert_eq!(due.after, "disabled");
        assert!(due.next.unwrap().starts_with("deregister from"));

        let disabled = Facts {
            disabled: true,
            disabled_at: Some(at(7)),
            ..deprecated
        };
        assert!(plan_stages(&disabled, false, at(13), week())
            .steps
            .is_empty());
        let gone = plan_stages(&disabled, false, at(14), week());
        assert_eq!(gone.before, "disabled");
        assert_eq!(gone.steps, vec![Step::Deregister, Step::DeleteSnapshots]);
        assert_eq!(gone.after, "deregistered");
        assert_eq!(gone.next, None);
    }

    #[test]
    fn test_zero_delays_retire_an_ami_whole_in_one_run() {
        let zero = Stages {
            disable_after: Duration::ZERO,
            deregister_after: Duration::ZERO,
        };
        let p = plan_stages(&Facts::default(), false, at(0), zero);
        assert_eq!(
            p.steps,
            vec![
                Step::Deprecate,
                Step::Disable,
                Step::Deregister,
                Step::DeleteSnapshots
            ]
        );
        assert_eq!(p.after, "deregistered");
    }

    #[test]
    fn test_an_ami_disabled_by_someone_else_waits_its_full_delay_from_now() {
        let f = Facts {
            disabled: true,
            ..Facts::default()
        };
        let p = plan_stages(&f, false, at(3), week());
        assert_eq!(p.steps, vec![Step::RecordDisabled]);
        assert_eq!(p.after, "disabled");
        // Deprecated by someone else (EC2's time, passed): the disable delay counts from it.
        let f = Facts {
            deprecated_at: Some(at(0)),
            ..Facts::default()
        };
        assert_eq!(
            plan_stages(&f, false, at(8), week()).steps,
            vec![Step::Disable]
        );
    }

    #[test]
    fn test_a_kept_ami_that_bake_retired_is_restored() {
        let f = Facts {
            disabled: true,
            deprecated_at: Some(at(0)),
            deprecated_by_bake: true,
            disabled_at: Some(at(7)),
        };
        let p = plan_stages(&f, true, at(8), week());
        assert_eq!(p.steps, vec![Step::Enable, Step::CancelDeprecation]);
        assert_eq!(p.after, "available");
        // Someone else's deprecation of a kept AMI is theirs: left as it is.
        let f = Facts {
            deprecated_at: Some(at(0)),
            ..Facts::default()
        };
        let p = plan_stages(&f, true, at(1), week());
        assert!(p.steps.is_empty());
        assert_eq!(p.after, "deprecated");
        // A kept AMI nobody retired: nothing to do.
        assert!(plan_stages(&Facts::default(), true, at(0), week())
            .steps
            .is_empty());
    }

    #[test]
    fn test_facts_read_the_tags_and_a_passed_deprecation_time() {
        let img = Image::builder()
            .image_id("ami-1")
            .state(ImageState::Disabled)
            .deprecation_time("2027-01-01T00:01:00.000Z")
            .tags(
                Tag::builder()
                    .key(ami::TAG_DISABLED_AT)
                    .value("2027-01-02T00:00:00Z")
                    .build(),
            )
            .build();
        let now = humantime::parse_rfc3339("2027-01-03T00:00:00Z").unwrap();
        let f = Facts::of(&img, now);
        assert!(f.disabled && !f.deprecated_by_bake);
        assert_eq!(
            f.deprecated_at,
            Some(humantime::parse_rfc3339("2027-01-01T00:01:00Z").unwrap())
        );
        assert_eq!(
            f.disabled_at,
            Some(humantime::parse_rfc3339("2027-01-02T00:00:00Z").unwrap())
        );
        // A deprecation still to come is no deprecation yet.
        let early = humantime::parse_rfc3339("2026-12-31T00:00:00Z").unwrap();
        assert_eq!(Facts::of(&img, early).deprecated_at, None);
    }

    #[test]
    fn test_step_names_are_the_json_ones() {
        for step in [
            Step::Deprecate,
            Step::Disable,
            Step::RecordDisabled,
            Step::Deregister,
            Step::DeleteSnapshots,
            Step::Enable,
            Step::CancelDeprecation,
        ] {
            assert_eq!(serde_json::to_value(&step).unwrap(), step.words().0);
        }
    }
}
