//! `bake status --timeline`: how the last rollout went, per instance, from the group's scaling
//! activities (DescribeScalingActivities) and the instances' images (DescribeInstances).
//!
//! Per instance: **launched** (its launch activity began), **in service** (the launch activity
//! ended: with the fleet's launch hook that is when bake-agent completed it, which it does only
//! once its readiness probe passed, so it is also when the app was ready), **draining** (its
//! termination activity began: `Terminating:Wait`, the agent deregisters and drains), and
//! **terminated** (the termination activity ended), with the release it ran (image, app
//! version). The rollout is the newest instance refresh: activities from its start on (all the
//! group's recent ones when it has none).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_autoscaling::types::{Activity, ScalingActivityStatusCode};
use aws_smithy_types::DateTime;
use serde::Serialize;

use crate::aws::Aws;

/// The most activities read (100 a page).
const MAX_ACTIVITIES: usize = 1000;

/// A failed call while reading the timeline.
#[derive(Debug, thiserror::Error)]
#[error("the timeline of '{asg}': {message}")]
pub struct TimelineError {
    /// The group.
    pub asg: String,
    /// The SDK error with its context.
    pub message: String,
}

/// One instance's rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstanceTimeline {
    /// `i-…`.
    pub instance_id: String,
    /// The image it was launched from (`None`: EC2 no longer describes it).
    pub image_id: Option<String>,
    /// Its `bake:app-version`.
    pub app_version: Option<String>,
    /// RFC 3339 times; `None` when it did not happen in the rollout (an old instance was
    /// launched before it; a new one is still running).
    pub launched: Option<String>,
    /// In service (the launch activity's end).
    pub in_service: Option<String>,
    /// Draining (the termination activity's start).
    pub draining: Option<String>,
    /// Terminated (the termination activity's end).
    pub terminated: Option<String>,
    /// The launch activity's status when it did not succeed (`Cancelled`, `Failed`, or
    /// `InProgress`), with AWS's message.
    pub launch_problem: Option<String>,
    #[serde(skip)]
    first: i64,
}

/// The rollout's timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Where it starts (RFC 3339): the newest refresh's start, or the oldest activity read.
    pub since: Option<String>,
    /// The refresh it shows, if any.
    pub instance_refresh_id: Option<String>,
    /// Per instance, in order of their first event.
    pub instances: Vec<InstanceTimeline>,
}

/// Which instance an activity is about, and whether it launches it: AWS's descriptions are
/// "Launching a new EC2 instance: i-…" and "Terminating EC2 instance: i-…" (followed, for a
/// failed one, by ".  Status Reason: …").
#[must_use]
pub fn subject(description: &str) -> Option<(bool, String)> {
    let (launch, rest) = if let Some(r) = description.strip_prefix("Launching a new EC2 instance: ")
    {
        (true, r)
    } else if let Some(r) = description.strip_prefix("Terminating EC2 instance: ") {
        (false, r)
    } else {
        return None;
    };
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    id.starts_with("i-").then_some((launch, id))
}

fn rfc3339(t: &DateTime) -> String {
    t.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// Folds `activities` (any order) since `since` into per-instance timelines, ordered by each
/// instance's first event. Pure: [`read`] adds the images.
#[must_use]
pub fn fold(activities: &[Activity], since: Option<&DateTime>) -> Vec<InstanceTimeline> {
    let mut by: BTreeMap<String, InstanceTimeline> = BTreeMap::new();
    for a in activities {
        let Some(start) = a.start_time() else {
            continue;
        };
        if since.is_some_and(|s| start.secs() < s.secs()) {
            continue;
        }
        let Some((launch, id)) = a.description().and_then(subject) else {
            continue;
        };
        let t = by.entry(id.clone()).or_insert_with(|| InstanceTimeline {
            instance_id: id,
            first: i64::MAX,
            ..InstanceTimeline::default()
        });
        t.first = t.first.min(start.secs());
        let end = a.end_time().map(rfc3339);
        let ok = a.status_code() == Some(&ScalingActivityStatusCode::Successful);
        if launch {
            t.launched = Some(rfc3339(start));
            if ok {
                t.in_service = end;
            } else {
                t.launch_problem = Some(format!(
                    "{}{}",
                    a.status_code().map_or("", |s| s.as_str()),
                    a.status_message()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        } else {
            t.draining = Some(rfc3339(start));
            if ok {
                t.terminated = end;
            }
        }
    }
    let mut out: Vec<InstanceTimeline> = by.into_values().collect();
    out.sort_by(|a, b| (a.first, &a.instance_id).cmp(&(b.first, &b.instance_id)));
    out
}

/// Reads the timeline of `asg`'s newest instance refresh (from its start), or of its recent
/// activities when it has none.
///
/// # Errors
/// [`TimelineError`] when DescribeInstanceRefreshes or DescribeScalingActivities fails; a
/// failing DescribeInstances or DescribeImages only leaves the images out (a warning says why).
pub async fn read(aws: &Aws, asg: &str) -> Result<Timeline, TimelineError> {
    let err = |e: String| TimelineError {
        asg: asg.to_owned(),
        message: e,
    };
    let refreshes = aws
        .asg
        .describe_instance_refreshes()
        .auto_scaling_group_name(asg)
        .max_records(5)
        .send()
        .await
        .map_err(|e| err(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()))?;
    let refresh = refreshes
        .instance_refreshes()
        .iter()
        .filter_map(|r| Some((r.instance_refresh_id()?.to_owned(), *r.start_time()?)))
        .max_by_key(|(_, t)| (t.secs(), t.subsec_nanos()));
    let mut activities = Vec::new();
    let mut pages = aws
        .asg
        .describe_scaling_activities()
        .auto_scaling_group_name(asg)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            err(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
        })?;
        activities.extend(page.activities().iter().cloned());
        // Newest first: once past the refresh's start, older pages are not the rollout's.
        let past = refresh.as_ref().is_some_and(|(_, since)| {
            page.activities()
                .last()
                .and_then(Activity::start_time)
                .is_some_and(|t| t.secs() < since.secs())
        });
        if past || activities.len() >= MAX_ACTIVITIES {
            break;
        }
    }
    let since = refresh.as_ref().map(|(_, t)| *t).or_else(|| {
        activities
            .iter()
            .filter_map(Activity::start_time)
            .min_by_key(|t| t.secs())
            .copied()
    });
    let mut instances = fold(&activities, refresh.as_ref().map(|(_, t)| t));
    let ids: Vec<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
    let images = instance_images(aws, &ids).await;
    let facts = crate::ami::facts(&aws.ec2, &images.values().cloned().collect::<BTreeSet<_>>())
        .await
        .unwrap_or_default();
    for i in &mut instances {
        i.image_id = images.get(&i.instance_id).cloned();
        i.app_version = i
            .image_id
            .as_ref()
            .and_then(|img| facts.get(img))
            .and_then(|f| f.app_version.clone());
    }
    Ok(Timeline {
        since: since.as_ref().map(rfc3339),
        instance_refresh_id: refresh.map(|(id, _)| id),
        instances,
    })
}

/// Instance → image, for those EC2 still describes (terminated ones for about an hour).
async fn instance_images(aws: &Aws, ids: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(100) {
        match aws
            .ec2
            .describe_instances()
            .set_instance_ids(Some(chunk.to_vec()))
            .send()
            .await
        {
            Ok(resp) => {
                for i in resp.reservations().iter().flat_map(|r| r.instances()) {
                    if let (Some(id), Some(img)) = (i.instance_id(), i.image_id()) {
                        out.insert(id.to_owned(), img.to_owned());
                    }
                }
            }
            Err(e) => tracing::warn!(
                "the timeline shows no images: DescribeInstances: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
        }
    }
    out
}

/// Seconds from `since` to `at` (both RFC 3339), as `+m:ss.s`.
fn offset(since: Option<&str>, at: Option<&str>) -> String {
    let parse = |s: &str| {
        DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime)
            .ok()
            .map(|d| d.as_secs_f64())
    };
    match (since.and_then(parse), at.and_then(parse)) {
        (Some(s), Some(a)) => {
            let d = a - s;
            #[allow(clippy::cast_possible_truncation)]
            let m = (d / 60.0).floor() as i64;
            format!("+{m}:{:04.1}", d - 60.0 * m as f64)
        }
        _ => "-".to_owned(),
    }
}

/// The timeline for people: one line per instance, times from `since`.
#[must_use]
pub fn render(t: &Timeline) -> String {
    let mut out = format!(
        "timeline{} since {}:\n",
        t.instance_refresh_id
            .as_ref()
            .map(|id| format!(" of instance refresh {id}"))
            .unwrap_or_default(),
        t.since.as_deref().unwrap_or("-")
    );
    if t.instances.is_empty() {
        out.push_str("  no instance launched or terminated\n");
        return out;
    }
    out.push_str(&format!(
        "  {:<20} {:<30} {:>9} {:>11} {:>9} {:>11}\n",
        "instance", "release", "launched", "in service", "draining", "terminated"
    ));
    let since = t.since.as_deref();
    for i in &t.instances {
        let release = match (&i.image_id, &i.app_version) {
            (Some(img), Some(v)) => format!("{img} ({v})"),
            (Some(img), None) => img.clone(),
            _ => "?".to_owned(),
        };
        out.push_str(&format!(
            "  {:<20} {:<30} {:>9} {:>11} {:>9} {:>11}{}\n",
            i.instance_id,
            release,
            offset(since, i.launched.as_deref()),
            offset(since, i.in_service.as_deref()),
            offset(since, i.draining.as_deref()),
            offset(since, i.terminated.as_deref()),
            i.launch_problem
                .as_ref()
                .map(|p| format!("  launch {p}"))
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(desc: &str, status: &str, start: i64, end: Option<i64>) -> Activity {
        Activity::builder()
            .activity_id(format!("a-{start}-{desc}"))
            .auto_scaling_group_name("g")
            .cause("c")
            .description(desc)
            .start_time(DateTime::from_secs(start))
            .set_end_time(end.map(DateTime::from_secs))
            .status_code(ScalingActivityStatusCode::from(status))
            .build()
    }

    #[test]
    fn test_descriptions_name_the_instance() {
        assert_eq!(
            subject("Launching a new EC2 instance: i-0abc"),
            Some((true, "i-0abc".into()))
        );
        assert_eq!(
            subject("Terminating EC2 instance: i-0def.  Status Reason: x"),
            Some((false, "i-0def".into()))
        );
        assert_eq!(
            subject("Launching a new EC2 instance: i-0ab1.  Status Reason: Instance failed"),
            Some((true, "i-0ab1".into()))
        );
        assert_eq!(subject("Changing desired capacity"), None);
    }

    #[test]
    fn test_a_rollout_folds_into_one_line_per_instance() {
        let acts = [
            activity(
                "Terminating EC2 instance: i-old1",
                "Successful",
                110,
                Some(118),
            ),
            activity(
                "Launching a new EC2 instance: i-new1",
                "Successful",
                100,
                Some(104),
            ),
            activity(
                "Launching a new EC2 instance: i-bad",
                "Cancelled",
                105,
                Some(107),
            ),
            activity(
                "Launching a new EC2 instance: i-old1",
                "Successful",
                10,
                Some(12),
            ),
            activity("Terminating EC2 instance: i-old2", "InProgress", 120, None),
        ];
        let t = fold(&acts, Some(&DateTime::from_secs(100)));
        let ids: Vec<_> = t.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(ids, ["i-new1", "i-bad", "i-old1", "i-old2"]);
        assert_eq!(t[0].launched.as_deref(), Some("1970-01-01T00:01:40Z"));
        assert_eq!(t[0].in_service.as_deref(), Some("1970-01-01T00:01:44Z"));
        assert_eq!(t[1].in_service, None);
        assert_eq!(t[1].launch_problem.as_deref(), Some("Cancelled"));
        // Launched before the rollout: only its end is shown.
        assert_eq!(
            (t[2].launched.as_ref(), t[2].draining.as_deref()),
            (None, Some("1970-01-01T00:01:50Z"))
        );
        assert_eq!(t[2].terminated.as_deref(), Some("1970-01-01T00:01:58Z"));
        assert_eq!(
            (t[3].draining.is_some(), t[3].terminated.as_ref()),
            (true, None)
        );
        let text = render(&Timeline {
            since: Some("1970-01-01T00:01:40Z".into()),
            instance_refresh_id: Some("r-1".into()),
            instances: t,
        });
        assert!(
            text.starts_with("timeline of instance refresh r-1 since 1970-01-01T00:01:40Z:\n"),
            "{text}"
        );
        let old1 = text.lines().find(|l| l.contains("i-old1")).unwrap();
        assert!(
            old1.contains("+0:10.0") && old1.contains("+0:18.0"),
            "{old1}"
        );
        assert!(text.contains("launch Cancelled"), "{text}");
    }
}
