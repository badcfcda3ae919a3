//! `bake status`: the fleet (instances with AMI, launch template version, health, lifecycle
//! state, AZ, and their health in the group's target groups) and the current or last instance
//! refresh.

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
    /// `GetParameter` of `target.image_parameter` failed (other than: it does not exist).
    #[error("reading the image parameter '{name}': {}", DisplayErrorContext(.source))]
    GetImageParameter {
        /// The parameter.
        name: String,
        /// The SDK's error.
        source: Box<
            aws_sdk_ssm::error::SdkError<aws_sdk_ssm::operation::get_parameter::GetParameterError>,
        >,
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
    /// The release baked into its AMI (the AMI's `bake:app-version` tag).
    pub app_version: Option<String>,
    /// When its AMI was created (RFC 3339, as EC2 says it).
    pub image_created: Option<String>,
    /// When the instance was launched (RFC 3339).
    pub launch_time: Option<String>,
    /// Its health in each of the group's target groups that lists it (`DescribeTargetHealth`),
    /// in the order of [`Fleet::target_groups`]. A target group whose health was read and that
    /// has no entry here does not have the instance registered.
    pub target_health: Vec<TargetHealth>,
}

/// One target group attached to the group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name (from the ARN).
    pub name: String,
    /// Why its targets' health could not be read (`DescribeTargetHealth` failed); `None` when
    /// it was read.
    pub error: Option<String>,
}

/// An instance's health in one target group, as Elastic Load Balancing says it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetHealth {
    /// The target group.
    pub target_group_arn: String,
    /// `healthy`, `unhealthy`, `initial`, `draining`, `unused`, `unavailable`.
    pub state: Option<String>,
    /// Why it is not healthy, e.g. `Target.ResponseCodeMismatch`.
    pub reason: Option<String>,
    /// The same in words.
    pub description: Option<String>,
}

impl TargetHealth {
    /// The table's cell: the state, with the reason code when it says why the target takes no
    /// traffic (`unhealthy (Target.Timeout)`); `initial` and `draining` speak for themselves.
    #[must_use]
    pub fn cell(&self) -> String {
        let state = self.state.as_deref().unwrap_or("?");
        match (state, &self.reason) {
            ("healthy" | "initial" | "draining", _) | (_, None) => state.to_owned(),
            (_, Some(reason)) => format!("{state} ({reason})"),
        }
    }

    /// Whether this registration is worse than `other` (so that an instance registered twice
    /// in one target group, on two ports, shows the one that needs attention).
    fn worse_than(&self, other: &Self) -> bool {
        let rank = |s: &Option<String>| match s.as_deref() {
            Some("healthy") => 0,
            Some("initial") => 1,
            Some("draining") => 2,
            _ => 3,
        };
        rank(&self.state) > rank(&other.state)
    }
}

/// The group's target groups: its `TargetGroupARNs` and its traffic sources of type `elbv2`
/// (attached with `AttachTrafficSources`), in that order, each once.
#[must_use]
pub fn target_group_arns(group: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<String> {
    let sources = group
        .traffic_sources()
        .iter()
        .filter(|t| t.r#type().is_none_or(|k| k == "elbv2"))
        .filter_map(|t| t.identifier())
        .filter(|id| id.contains(":targetgroup/"));
    let mut arns: Vec<String> = Vec::new();
    for arn in group
        .target_group_arns()
        .iter()
        .map(String::as_str)
        .chain(sources)
    {
        if !arns.iter().any(|a| a == arn) {
            arns.push(arn.to_owned());
        }
    }
    arns
}

/// The name in a target group's ARN (`arn:aws:elasticloadbalancing:…:targetgroup/NAME/ID`), or
/// the ARN itself.
#[must_use]
pub fn target_group_name(arn: &str) -> String {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|n| !n.is_empty())
        .unwrap_or(arn)
        .to_owned()
}

/// Why `DescribeTargetHealth` of `arn` failed, in one line: denied (naming the IAM action: an
/// `AccessDenied…` code, or an HTTP 403 answer without a code that the SDK could read), or the
/// service's or the SDK's innermost reason.
fn health_error(
    arn: &str,
    e: &aws_sdk_elasticloadbalancingv2::error::SdkError<
        aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthError,
    >,
) -> String {
    use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
    let name = target_group_name(arn);
    let service = e.as_service_error();
    let code = service.and_then(ProvideErrorMetadata::code);
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = match (service.and_then(ProvideErrorMetadata::message), status) {
        (Some(m), _) => m.to_owned(),
        (None, Some(s)) if service.is_some() => format!("HTTP {s}"),
        _ => bake_common::exit::chain(e)
            .last()
            .map_or_else(String::new, ToString::to_string),
    };
    let denied = match code {
        Some(c) => c.starts_with("AccessDenied") || c == "UnauthorizedOperation",
        None => status == Some(403),
    };
    match code {
        _ if denied => format!(
            "elasticloadbalancing:DescribeTargetHealth denied on target group '{name}' ({arn}): {message}"
        ),
        Some(c) => format!(
            "DescribeTargetHealth of target group '{name}' ({arn}) failed: {c}: {message}"
        ),
        None => {
            format!("DescribeTargetHealth of target group '{name}' ({arn}) failed: {message}")
        }
    }
}

/// The health of every target of each target group (`DescribeTargetHealth`, one call per
/// group): the groups, and per instance its health in those that list it. A call that fails
/// (access denied, a target group since deleted) is a warning and that group's `error`: the
/// fleet is still worth showing without it.
async fn target_health(
    aws: &Aws,
    arns: &[String],
) -> (Vec<TargetGroup>, BTreeMap<String, Vec<TargetHealth>>) {
    let mut groups = Vec::new();
    let mut by_instance: BTreeMap<String, Vec<TargetHealth>> = BTreeMap::new();
    for arn in arns {
        let out = aws
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await;
        let error = match out {
            Ok(out) => {
                for d in out.target_health_descriptions() {
                    let Some(id) = d.target().and_then(|t| t.id()) else {
                        continue;
                    };
                    let h = d.target_health();
                    let health = TargetHealth {
                        target_group_arn: arn.clone(),
                        state: h.and_then(|h| h.state()).map(|s| s.as_str().to_owned()),
                        reason: h.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()),
                        description: h.and_then(|h| h.description()).map(ToOwned::to_owned),
                    };
                    let entries = by_instance.entry(id.to_owned()).or_default();
                    match entries.iter_mut().find(|e| &e.target_group_arn == arn) {
                        Some(e) if health.worse_than(e) => *e = health,
                        Some(_) => {}
                        None => entries.push(health),
                    }
                }
                None
            }
            Err(e) => {
                let why = health_error(arn, &e);
                tracing::warn!("{why}; no target health for it");
                Some(why)
            }
        };
        groups.push(TargetGroup {
            arn: arn.clone(),
            name: target_group_name(arn),
            error,
        });
    }
    (groups, by_instance)
}

/// The AMIs' app versions and creation dates ([`crate::ami::facts`]); on a failure none, and a
/// warning: the fleet is still worth showing without them.
async fn image_facts(
    aws: &Aws,
    ids: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, crate::ami::ImageFacts> {
    crate::ami::facts(&aws.ec2, ids).await.unwrap_or_else(|e| {
        tracing::warn!(
            "cannot describe the fleet's AMIs; no app versions or image ages: {}",
            bake_common::exit::chain(&e)
                .last()
                .map_or_else(String::new, ToString::to_string)
        );
        BTreeMap::new()
    })
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
    /// The version the group launches from as configured (`$Default`, `$Latest`, a number).
    pub group_version: Option<String>,
    /// The group's target groups (empty: none, and no `DescribeTargetHealth`).
    pub target_groups: Vec<TargetGroup>,
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
                    if let Some(id) = i.instance_id() {
                        let launched = i.launch_time().and_then(|t| {
                            t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
                        });
                        images.insert(
                            id.to_owned(),
                            (i.image_id().map(ToOwned::to_owned), launched),
                        );
                    }
                }
            }
        }
    }
    let amis = images.values().filter_map(|(ami, _)| ami.clone()).collect();
    let facts = image_facts(aws, &amis).await;
    let (target_groups, mut health) = target_health(aws, &target_group_arns(&group)).await;
    let instances = group
        .instances()
        .iter()
        .map(|i| {
            let (image_id, launch_time) = i
                .instance_id()
                .and_then(|id| images.get(id).cloned())
                .unwrap_or_default();
            let f = image_id
                .as_ref()
                .and_then(|a| facts.get(a).cloned())
                .unwrap_or_default();
            (i, image_id, launch_time, f)
        })
        .map(|(i, image_id, launch_time, f)| InstanceRow {
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            image_id,
            launch_template_version: i
                .launch_template()
                .and_then(|l| l.version())
                .map(ToOwned::to_owned),
            health_status: i.health_status().map(ToOwned::to_owned),
            lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_owned()),
            availability_zone: i.availability_zone().map(ToOwned::to_owned),
            app_version: f.app_version,
            image_created: f.created,
            launch_time,
            target_health: health
                .remove(i.instance_id().unwrap_or_default())
                .unwrap_or_default(),
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
        group_version: group
            .launch_template()
            .and_then(|l| l.version())
            .map(ToOwned::to_owned),
        target_groups,
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
    let view =
        crate::rollout::View::new(crate::rollout::Releases::load(aws, &t.launch_template_id).await);
    Ok(Some(
        refresh::follow(&aws.asg, asg, &current.id, opts, view).await?,
    ))
}

/// The fleet as one JSON document, with how watching ended under `watch`.
///
/// # Errors
/// None in practice: the fleet is plain data.
pub fn json(f: &Fleet, watched: Option<&Followed>) -> serde_json::Result<serde_json::Value> {
    let mut json = serde_json::to_value(f)?;
    if let Some(w) = watched {
        json["watch"] = serde_json::json!({ "result": w.result, "polls": w.polls, "watch_secs": w.watch_secs, "rollout": w.rollout });
    }
    Ok(json)
}

/// How long ago `rfc3339` was, compactly (`45s`, `12m`, `3h 5m`, `4d 2h`); `-` when unknown.
#[must_use]
pub fn age(rfc3339: Option<&str>, now: std::time::SystemTime) -> String {
    let Some(then) = rfc3339.and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok()) else {
        return "-".to_owned();
    };
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Rows as columns padded to their widest cell, two spaces apart (the last one unpadded).
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// The `TARGET HEALTH` cell of `i`: its health in each target group, in the header's order,
/// ` / ` between them; `-` where it is not registered, `?` where the health could not be read.
fn target_cell(groups: &[TargetGroup], i: &InstanceRow) -> String {
    groups
        .iter()
        .map(|g| {
            if g.error.is_some() {
                return "?".to_owned();
            }
            i.target_health
                .iter()
                .find(|h| h.target_group_arn == g.arn)
                .map_or_else(|| "-".to_owned(), TargetHealth::cell)
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The fleet as text: a header line (and one naming the target groups, if any), one aligned row per instance (app version and image age
/// from its AMI, time since launch, health in the target groups), the refresh.
#[must_use]
pub fn render(f: &Fleet) -> String {
    render_at(f, std::time::SystemTime::now())
}

/// [`render`] as of `now`.
#[must_use]
pub fn render_at(f: &Fleet, now: std::time::SystemTime) -> String {
    let mut s = format!(
        "auto scaling group {} (desired {}), launch template {} default v{} latest v{}\n",
        f.targets.auto_scaling_group,
        f.desired_capacity
            .map_or_else(|| "?".to_owned(), |d| d.to_string()),
        f.targets.launch_template_id,
        f.default_version,
        f.latest_version
    );
    if !f.target_groups.is_empty() {
        let names: Vec<&str> = f.target_groups.iter().map(|g| g.name.as_str()).collect();
        let noun = if names.len() == 1 {
            "target group"
        } else {
            "target groups"
        };
        s.push_str(&format!("{noun} {}\n", names.join(", ")));
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let with_targets = !f.target_groups.is_empty();
    let mut header = vec!["INSTANCE", "STATE", "HEALTH"];
    if with_targets {
        header.push("TARGET HEALTH");
    }
    header.extend(["LT", "APP", "AMI", "IMAGE AGE", "UP", "AZ"]);
    let mut rows = vec![header
        .into_iter()
        .map(ToOwned::to_owned)
        .collect::<Vec<_>>()];
    for i in &f.instances {
        let mut row = vec![
            i.instance_id.clone(),
            dash(&i.lifecycle_state),
            dash(&i.health_status),
        ];
        if with_targets {
            row.push(target_cell(&f.target_groups, i));
        }
        row.extend([
            i.launch_template_version
                .as_ref()
                .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            dash(&i.app_version),
            dash(&i.image_id),
            age(i.image_created.as_deref(), now),
            age(i.launch_time.as_deref(), now),
            dash(&i.availability_zone),
        ]);
        rows.push(row);
    }
    if f.instances.is_empty() {
        s.push_str("no instances\n");
    } else {
        s.push_str(&columns(&rows));
    }
    match &f.refresh {
        Some(r) => s.push_str(&format!("instance refresh {}: {}\n", r.id, r.describe())),
        None => s.push_str("no instance refresh\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(id: &str, state: &str, app: Option<&str>, launched: Option<&str>) -> InstanceRow {
        InstanceRow {
            instance_id: id.into(),
            image_id: Some("ami-0123".into()),
            launch_template_version: Some("3".into()),
            health_status: Some("Healthy".into()),
            lifecycle_state: Some(state.into()),
            availability_zone: Some("eu-west-1a".into()),
            app_version: app.map(Into::into),
            image_created: Some("2026-11-28T10:00:00.000Z".into()),
            launch_time: launched.map(Into::into),
            target_health: Vec::new(),
        }
    }

    fn health(tg: &str, state: &str, reason: Option<&str>) -> TargetHealth {
        TargetHealth {
            target_group_arn: tg.into(),
            state: Some(state.into()),
            reason: reason.map(Into::into),
            description: None,
        }
    }

    fn tg(arn: &str, error: Option<&str>) -> TargetGroup {
        TargetGroup {
            arn: arn.into(),
            name: target_group_name(arn),
            error: error.map(Into::into),
        }
    }

    const TG_WEB: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
    const TG_API: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/fedcba9876543210";

    #[test]
    fn test_age_is_compact() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        assert_eq!(age(Some("2026-12-01T11:59:15Z"), now), "45s");
        assert_eq!(age(Some("2026-12-01T11:48:00.000Z"), now), "12m");
        assert_eq!(age(Some("2026-12-01T08:55:00Z"), now), "3h 5m");
        assert_eq!(age(Some("2026-11-27T10:00:00.000Z"), now), "4d 2h");
        assert_eq!(age(Some("not a time"), now), "-");
        assert_eq!(age(None, now), "-");
        // A clock behind the launch: no negative age.
        assert_eq!(age(Some("2026-12-01T12:00:05Z"), now), "0s");
    }

    #[test]
    fn test_render_aligns_columns_with_app_version_and_ages() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        let f = Fleet {
            targets: Targets {
                auto_scaling_group: "web".into(),
                launch_template_id: "lt-1".into(),
                rollback_alarms: Vec::new(),
            },
            desired_capacity: Some(2),
            default_version: 3,
            latest_version: 3,
            group_version: None,
            target_groups: Vec::new(),
            instances: vec![
                row(
                    "i-0a",
                    "InService",
                    Some("2.3.4"),
                    Some("2026-12-01T10:30:00Z"),
                ),
                row("i-0123456789abcdef0", "Pending:Wait", None, None),
            ],
            refresh: None,
        };
        let text = render_at(&f, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let header = lines[1];
        assert!(header.starts_with("INSTANCE             STATE"), "{text}");
        // Every column starts where its header does.
        for name in [
            "STATE",
            "HEALTH",
            "LT",
            "APP",
            "AMI",
            "IMAGE AGE",
            "UP",
            "AZ",
        ] {
            let col = header.find(&format!("  {name}")).unwrap() + 2;
            for l in &lines[2..4] {
                let before = &l[..col];
                assert!(
                    before.ends_with("  ") && !l[col..].starts_with(' '),
                    "{name} misaligned:\n{text}"
                );
            }
        }
        assert!(
            lines[2].contains("2.3.4") && lines[2].contains("3d 2h"),
            "{text}"
        );
        assert!(lines[2].contains("1h 30m"), "{text}");
        assert!(lines[3].contains("Pending:Wait"), "{text}");
        assert_eq!(lines[4], "no instance refresh");
        let later = now + Duration::from_secs(3600);
        assert!(render_at(&f, later).contains("2h 30m"));
    }

    #[test]
    fn test_target_group_name_is_read_from_its_arn() {
        assert_eq!(target_group_name(TG_WEB), "web");
        assert_eq!(target_group_name("not-an-arn"), "not-an-arn");
        assert_eq!(
            target_group_name("arn:aws:elasticloadbalancing:x:1:targetgroup//id"),
            "arn:aws:elasticloadbalancing:x:1:targetgroup//id"
        );
    }

    #[test]
    fn test_target_groups_come_from_the_arns_and_the_elbv2_traffic_sources_once_each() {
        use aws_sdk_autoscaling::types::{AutoScalingGroup, TrafficSourceIdentifier};
        let source = |id: &str, kind: &str| {
            TrafficSourceIdentifier::builder()
                .identifier(id)
                .r#type(kind)
                .build()
        };
        let group = AutoScalingGroup::builder()
            .target_group_arns(TG_WEB)
            .traffic_sources(source(TG_WEB, "elbv2"))
            .traffic_sources(source(TG_API, "elbv2"))
            .traffic_sources(source("classic-lb", "elb"))
            .build();
        assert_eq!(target_group_arns(&group), vec![TG_WEB, TG_API]);
        assert!(target_group_arns(&AutoScalingGroup::builder().build()).is_empty());
    }

    #[test]
    fn test_render_shows_target_health_per_group_with_reasons() {
        let now = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
        let mut a = row("i-0a", "InService", Some("2.3.4"), None);
        a.target_health = vec![health(
            TG_WEB,
            "unhealthy",
            Some("Target.ResponseCodeMismatch"),
        )];
        let mut b = row("i-0b", "InService", Some("2.3.4"), None);
        b.target_health = vec![
            health(TG_WEB, "healthy", None),
            health(TG_API, "draining", Some("Target.DeregistrationInProgress")),
        ];
        let c = row("i-0c", "Pending", None, None);
        let mut f = Fleet {
            targets: Targets {
                auto_scaling_group: "web".into(),
                launch_template_id: "lt-1".into(),
                rollback_alarms: Vec::new(),
            },
            desired_capacity: Some(3),
            default_version: 3,
            latest_version: 3,
            group_version: None,
            target_groups: vec![tg(TG_WEB, None), tg(TG_API, None)],
            instances: vec![a, b, c],
            refresh: None,
        };
        let text = render_at(&f, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "target groups web, api", "{text}");
        let col = lines[2].find("  TARGET HEALTH").unwrap() + 2;
        let cell = |l: &str| l[col..].split("  ").next().unwrap().to_owned();
        assert_eq!(
            cell(lines[3]),
            "unhealthy (Target.ResponseCodeMismatch) / -"
        );
        assert_eq!(cell(lines[4]), "healthy / draining");
        assert_eq!(cell(lines[5]), "- / -");
        // The columns after it still line up.
        let lt = lines[2].find("  LT").unwrap() + 2;
        for l in &lines[3..6] {
            assert!(l[lt..].starts_with("v3 "), "{text}");
        }

        // One group, unreadable: named once, `?` in every row.
        f.target_groups = vec![tg(TG_WEB, Some("denied"))];
        let text = render_at(&f, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "target group web", "{text}");
        let col = lines[2].find("  TARGET HEALTH").unwrap() + 2;
        for l in &lines[3..6] {
            assert!(l[col..].starts_with("? "), "{text}");
        }

        // None: neither the line nor the column.
        f.target_groups = Vec::new();
        let text = render_at(&f, now);
        assert!(
            !text.contains("TARGET") && !text.contains("target group"),
            "{text}"
        );
    }

    #[test]
    fn test_target_health_cell_and_worst_registration() {
        assert_eq!(health(TG_WEB, "healthy", None).cell(), "healthy");
        assert_eq!(
            health(TG_WEB, "initial", Some("Elb.RegistrationInProgress")).cell(),
            "initial"
        );
        assert_eq!(
            health(TG_WEB, "unused", Some("Target.NotInUse")).cell(),
            "unused (Target.NotInUse)"
        );
        assert_eq!(health(TG_WEB, "unhealthy", None).cell(), "unhealthy");
        let bad = health(TG_WEB, "unhealthy", Some("Target.Timeout"));
        let good = health(TG_WEB, "healthy", None);
        assert!(bad.worse_than(&good) && !good.worse_than(&bad));
    }
}
