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
    /// The release baked into its AMI (the AMI's `bake:app-version` tag).
    pub app_version: Option<String>,
    /// When its AMI was created (RFC 3339, as EC2 says it).
    pub image_created: Option<String>,
    /// When the instance was launched (RFC 3339).
    pub launch_time: Option<String>,
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

/// The fleet as text: a header line, one aligned row per instance (app version and image age
/// from its AMI, time since launch), the refresh.
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
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut rows = vec![[
        "INSTANCE",
        "STATE",
        "HEALTH",
        "LT",
        "APP",
        "AMI",
        "IMAGE AGE",
        "UP",
        "AZ",
    ]
    .map(ToOwned::to_owned)
    .to_vec()];
    for i in &f.instances {
        rows.push(vec![
            i.instance_id.clone(),
            dash(&i.lifecycle_state),
            dash(&i.health_status),
            i.launch_template_version
                .as_ref()
                .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            dash(&i.app_version),
            dash(&i.image_id),
            age(i.image_created.as_deref(), now),
            age(i.launch_time.as_deref(), now),
            dash(&i.availability_zone),
        ]);
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
        }
    }

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
}
