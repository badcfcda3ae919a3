//! The rollout view: what each instance of the group does while a refresh is watched, one line
//! per instance as it changes (launching, waiting on the launch hook, warming up, in service,
//! draining, terminated), with its release: the launch template version it was launched from,
//! that version's AMI and the AMI's `bake:app-version`.
//!
//! Source: the instances' lifecycle states in one `DescribeAutoScalingGroups` per poll of the
//! watch (next to its `DescribeInstanceRefreshes`), fed to a pure state machine ([`View`]).
//! Auto Scaling does not say when an instance's warm-up ends: an instance launched during the
//! watch is "warming up" from the first poll that sees it `InService` until the refresh's
//! `InstanceWarmup` has passed on bake's clock, or until the refresh ends successfully (it then
//! counted every instance). The releases are read once per watch ([`Releases::load`]: one
//! `DescribeLaunchTemplateVersions` and one `DescribeImages`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::aws::Aws;

/// What an instance is doing, from its lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `Pending`: launching.
    Launching,
    /// `Pending:Wait` / `Pending:Proceed`: held by a launch lifecycle hook (the agent completes
    /// it once the app is ready).
    LaunchHook,
    /// `InService`, launched during the watch, within the refresh's instance warm-up.
    WarmingUp,
    /// `InService`.
    InService,
    /// `Terminating:Wait` / `Terminating:Proceed`: held by a terminate lifecycle hook (the agent
    /// stops the app and flushes its logs).
    Draining,
    /// `Terminating`.
    Terminating,
    /// `Terminated`, or gone from the group.
    Terminated,
    /// Any other state (`Standby`, `Detaching`, warm pool states…), as AWS names it.
    Other(String),
}

impl Phase {
    /// The phase of lifecycle state `state` (warm-up aside).
    #[must_use]
    pub fn of(state: &str) -> Self {
        match state {
            "Pending" => Phase::Launching,
            "Pending:Wait" | "Pending:Proceed" => Phase::LaunchHook,
            "InService" => Phase::InService,
            "Terminating:Wait" | "Terminating:Proceed" => Phase::Draining,
            "Terminating" => Phase::Terminating,
            "Terminated" => Phase::Terminated,
            other => Phase::Other(other.to_owned()),
        }
    }

    /// For people: `waiting on the launch hook`, `in service`…
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Phase::Launching => "launching".to_owned(),
            Phase::LaunchHook => "waiting on the launch hook".to_owned(),
            Phase::WarmingUp => "warming up".to_owned(),
            Phase::InService => "in service".to_owned(),
            Phase::Draining => "draining".to_owned(),
            Phase::Terminating => "terminating".to_owned(),
            Phase::Terminated => "terminated".to_owned(),
            Phase::Other(s) => s.clone(),
        }
    }
}

/// One release of the launch template: a version's AMI and the AMI's app version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// The version's AMI.
    pub image_id: String,
    /// The AMI's `bake:app-version` tag.
    pub app_version: Option<String>,
}

/// The launch template's releases, by version number.
#[derive(Clone, Debug, Default)]
pub struct Releases {
    by_version: BTreeMap<i64, Release>,
}

/// How many of the newest launch template versions [`Releases::load`] names (older ones show
/// as their version number alone).
pub const RELEASES_KEPT: usize = 20;

impl Releases {
    /// From version → release.
    #[must_use]
    pub fn new(by_version: BTreeMap<i64, Release>) -> Self {
        Self { by_version }
    }

    /// The releases of launch template `lt`'s newest [`RELEASES_KEPT`] versions: one
    /// `DescribeLaunchTemplateVersions` (paginated) and one `DescribeImages`. Best effort: on a
    /// failure the lines show version numbers alone, and a warning says why.
    pub async fn load(aws: &Aws, lt: &str) -> Self {
        let images = match crate::launch_template::images(aws, lt).await {
            Ok(images) => images,
            Err(e) => {
                tracing::warn!("{e}; the rollout view shows launch template versions only");
                return Self::default();
            }
        };
        let newest: BTreeMap<i64, String> = images.into_iter().rev().take(RELEASES_KEPT).collect();
        let ids: BTreeSet<String> = newest.values().cloned().collect();
        let facts = crate::ami::facts(&aws.ec2, &ids).await.unwrap_or_else(|e| {
            tracing::warn!(
                "cannot describe the AMIs of launch template '{lt}'; the rollout view shows no app versions: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            );
            BTreeMap::new()
        });
        Self::new(
            newest
                .into_iter()
                .map(|(v, image_id)| {
                    let app_version = facts.get(&image_id).and_then(|f| f.app_version.clone());
                    (
                        v,
                        Release {
                            image_id,
                            app_version,
                        },
                    )
                })
                .collect(),
        )
    }

    /// The release of version `version`, if known.
    #[must_use]
    pub fn get(&self, version: i64) -> Option<&Release> {
        self.by_version.get(&version)
    }

    /// The release of an instance's launch template version (`"3"`), if known.
    fn of(&self, version: Option<&str>) -> Option<&Release> {
        version
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|v| self.get(v))
    }
}

/// One line of the rollout view: an instance entered a phase.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceEvent {
    /// The instance.
    pub instance_id: String,
    /// Its new phase.
    pub phase: Phase,
    /// Its lifecycle state as AWS said it (`None` once gone from the group).
    pub lifecycle_state: Option<String>,
    /// The launch template version it was launched from.
    pub launch_template_version: Option<String>,
    /// That version's AMI, if known.
    pub image_id: Option<String>,
    /// The AMI's `bake:app-version`, if known.
    pub app_version: Option<String>,
    /// Milliseconds since the watch began.
    pub elapsed_ms: u64,
}

impl InstanceEvent {
    /// The line for people: `i-0a1b…  waiting on the launch hook (Pending:Wait)  v2 ami-… (1.0.1)`,
    /// instance ids and phases padded so that consecutive lines align.
    #[must_use]
    pub fn line(&self) -> String {
        let mut phase = self.phase.describe();
        if let (Phase::LaunchHook | Phase::Draining, Some(s)) = (&self.phase, &self.lifecycle_state)
        {
            phase.push_str(&format!(" ({s})"));
        }
        let mut release = self
            .launch_template_version
            .as_ref()
            .map(|v| format!("v{v}"))
            .unwrap_or_default();
        if let Some(image) = &self.image_id {
            release.push_str(&format!(" {image}"));
        }
        if let Some(app) = &self.app_version {
            release.push_str(&format!(" ({app})"));
        }
        format!("{:<19}  {phase:<42}  {release}", self.instance_id)
            .trim_end()
            .to_owned()
    }
}

/// What the view knows of one instance.
#[derive(Clone, Debug)]
struct Tracked {
    phase: Phase,
    /// Launched during the watch ([`View::with_baseline`]).
    new: bool,
    /// When a poll first saw it `InService` (since the watch began).
    in_service_at: Option<Duration>,
    state: Option<String>,
    version: Option<String>,
}

/// A rollout as the view saw it, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rollout {
    /// Every line of the view, in order.
    pub events: Vec<InstanceEvent>,
    /// Instances that joined the group during the watch.
    pub instances_launched: u32,
    /// Instances that left the group during the watch.
    pub instances_terminated: u32,
    /// Instances that were in the group when the watch began and left it: the ones replaced.
    pub instances_replaced: u32,
}

/// The rollout view's state machine: fed the group's instances at each poll, it returns the
/// lines to print (each instance's phases, each once, in order).
#[derive(Debug, Default)]
pub struct View {
    releases: Releases,
    baseline: Option<BTreeMap<String, Option<String>>>,
    known: BTreeMap<String, Tracked>,
    polled: bool,
    events: Vec<InstanceEvent>,
}

impl View {
    /// A view naming releases from `releases`.
    #[must_use]
    pub fn new(releases: Releases) -> Self {
        Self {
            releases,
            ..Self::default()
        }
    }

    /// The group's instances before the refresh started ([`baseline`]: id → launch template
    /// version): any other is one it launched, and one the first poll no longer sees was
    /// terminated in between. Without it, an instance is launched by the refresh when the first
    /// poll does not see it, or sees it launching.
    #[must_use]
    pub fn with_baseline(mut self, ids: Option<BTreeMap<String, Option<String>>>) -> Self {
        self.baseline = ids;
        self
    }

    fn event(&mut self, id: &str, now: Duration) -> InstanceEvent {
        let t = &self.known[id];
        let release = self.releases.of(t.version.as_deref());
        let e = InstanceEvent {
            instance_id: id.to_owned(),
            phase: t.phase.clone(),
            lifecycle_state: t.state.clone(),
            launch_template_version: t.version.clone(),
            image_id: release.map(|r| r.image_id.clone()),
            app_version: release.and_then(|r| r.app_version.clone()),
            elapsed_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        };
        self.events.push(e.clone());
        e
    }

    /// One poll: the group's `instances` (id, lifecycle state, launch template version) at
    /// `now` (since the watch began), with the refresh's instance warm-up. The first poll
    /// reports every instance (the fleet before); later ones report changes only, and an
    /// instance gone from the group as terminated.
    pub fn observe(
        &mut self,
        instances: &[(String, String, Option<String>)],
        now: Duration,
        warmup: Duration,
    ) -> Vec<InstanceEvent> {
        let first = !self.polled;
        self.polled = true;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut sorted: Vec<_> = instances.iter().collect();
        sorted.sort();
        for (id, state, version) in sorted {
            seen.insert(id.clone());
            let phase = Phase::of(state);
            let new = match &self.baseline {
                Some(before) => !before.contains_key(id),
                None => !first || matches!(phase, Phase::Launching | Phase::LaunchHook),
            };
            let t = self.known.entry(id.clone()).or_insert_with(|| Tracked {
                phase: Phase::Other(String::new()),
                new,
                in_service_at: None,
                state: None,
                version: version.clone(),
            });
            let phase = match phase {
                Phase::InService if t.new && t.phase != Phase::InService => {
                    let since = *t.in_service_at.get_or_insert(now);
                    if warmup.is_zero() || now.saturating_sub(since) >= warmup {
                        Phase::InService
                    } else {
                        Phase::WarmingUp
                    }
                }
                p => p,
            };
            t.state = Some(state.clone());
            if version.is_some() {
                t.version.clone_from(version);
            }
            if t.phase != phase && t.phase != Phase::Terminated {
                t.phase = phase;
                out.push(self.event(id, now));
            }
        }
        if first {
            let before = self.baseline.clone().unwrap_or_default();
            for (id, version) in before.into_iter().filter(|(id, _)| !seen.contains(id)) {
                self.known.insert(
                    id.clone(),
                    Tracked {
                        phase: Phase::Terminated,
                        new: false,
                        in_service_at: None,
                        state: None,
                        version,
                    },
                );
                out.push(self.event(&id, now));
            }
        }
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(id, t)| !seen.contains(*id) && t.phase != Phase::Terminated)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(t) = self.known.get_mut(&id) {
                t.phase = Phase::Terminated;
                t.state = None;
            }
            out.push(self.event(&id, now));
        }
        out
    }

    /// The refresh ended successfully: it counted every instance warming up, which is now in
    /// service.
    pub fn finish_warm_up(&mut self, now: Duration) -> Vec<InstanceEvent> {
        let warming: Vec<String> = self
            .known
            .iter()
            .filter(|(_, t)| t.phase == Phase::WarmingUp)
            .map(|(id, _)| id.clone())
            .collect();
        warming
            .into_iter()
            .map(|id| {
                if let Some(t) = self.known.get_mut(&id) {
                    t.phase = Phase::InService;
                }
                self.event(&id, now)
            })
            .collect()
    }

    /// What the view saw.
    #[must_use]
    pub fn rollout(&self) -> Rollout {
        let count = |f: &dyn Fn(&Tracked) -> bool| {
            u32::try_from(self.known.values().filter(|t| f(t)).count()).unwrap_or(u32::MAX)
        };
        Rollout {
            events: self.events.clone(),
            instances_launched: count(&|t| t.new),
            instances_terminated: count(&|t| t.phase == Phase::Terminated),
            instances_replaced: count(&|t| !t.new && t.phase == Phase::Terminated),
        }
    }
}

/// The group's instances now (id → launch template version), taken just before a refresh starts
/// ([`View::with_baseline`]): one `DescribeAutoScalingGroups`, best effort (`None` on a failure,
/// logged at debug level: the view then guesses from its first poll).
pub async fn baseline(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
) -> Option<BTreeMap<String, Option<String>>> {
    match asg_client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
    {
        Ok(out) => out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(asg))
            .map(|g| instances(g).into_iter().map(|(id, _, v)| (id, v)).collect()),
        Err(e) => {
            tracing::debug!(
                "describing auto scaling group '{asg}': {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            );
            None
        }
    }
}

/// The group's instances as [`View::observe`] takes them.
#[must_use]
pub fn instances(
    group: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> Vec<(String, String, Option<String>)> {
    group
        .instances()
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_owned(),
                i.lifecycle_state()
                    .map_or_else(String::new, |s| s.as_str().to_owned()),
                i.launch_template()
                    .and_then(|l| l.version())
                    .map(ToOwned::to_owned),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(id: &str, state: &str, v: &str) -> (String, String, Option<String>) {
        (id.into(), state.into(), Some(v.into()))
    }

    fn phases(events: &[InstanceEvent]) -> Vec<(String, Phase)> {
        events
            .iter()
            .map(|e| (e.instance_id.clone(), e.phase.clone()))
            .collect()
    }

    #[test]
    fn test_view_reports_each_phase_once_in_order() {
        let releases = Releases::new(BTreeMap::from([
            (
                1,
                Release {
                    image_id: "ami-old".into(),
                    app_version: Some("1.0.0".into()),
                },
            ),
            (
                2,
                Release {
                    image_id: "ami-new".into(),
                    app_version: None,
                },
            ),
        ]));
        let mut v = View::new(releases);
        let s = Duration::from_secs;
        let warm = s(10);
        // The fleet before.
        let e = v.observe(&[i("i-old", "InService", "1")], s(0), warm);
        assert_eq!(phases(&e), vec![("i-old".into(), Phase::InService)]);
        assert_eq!(
            e[0].line(),
            format!(
                "i-old{}  in service{}  v1 ami-old (1.0.0)",
                " ".repeat(14),
                " ".repeat(32)
            )
        );
        // Nothing changed: nothing said.
        assert!(v
            .observe(&[i("i-old", "InService", "1")], s(1), warm)
            .is_empty());
        let e = v.observe(
            &[i("i-old", "InService", "1"), i("i-new", "Pending", "2")],
            s(2),
            warm,
        );
        assert_eq!(phases(&e), vec![("i-new".into(), Phase::Launching)]);
        let e = v.observe(
            &[
                i("i-old", "InService", "1"),
                i("i-new", "Pending:Wait", "2"),
            ],
            s(3),
            warm,
        );
        assert_eq!(phases(&e), vec![("i-new".into(), Phase::LaunchHook)]);
        assert!(e[0]
            .line()
            .contains("waiting on the launch hook (Pending:Wait)"));
        assert!(e[0].line().ends_with("v2 ami-new"), "{}", e[0].line());
        // Pending:Proceed is the same phase.
        assert!(v
            .observe(
                &[
                    i("i-old", "InService", "1"),
                    i("i-new", "Pending:Proceed", "2")
                ],
                s(4),
                warm
            )
            .is_empty());
        let e = v.observe(
            &[i("i-old", "InService", "1"), i("i-new", "InService", "2")],
            s(5),
            warm,
        );
        assert_eq!(phases(&e), vec![("i-new".into(), Phase::WarmingUp)]);
        assert!(v
            .observe(
                &[i("i-old", "InService", "1"), i("i-new", "InService", "2")],
                s(14),
                warm
            )
            .is_empty());
        let e = v.observe(
            &[
                i("i-old", "Terminating:Wait", "1"),
                i("i-new", "InService", "2"),
            ],
            s(15),
            warm,
        );
        assert_eq!(
            phases(&e),
            vec![
                ("i-new".into(), Phase::InService),
                ("i-old".into(), Phase::Draining)
            ]
        );
        let e = v.observe(&[i("i-new", "InService", "2")], s(16), warm);
        assert_eq!(phases(&e), vec![("i-old".into(), Phase::Terminated)]);
        // Gone stays gone, said once.
        assert!(v
            .observe(&[i("i-new", "InService", "2")], s(17), warm)
            .is_empty());
        let r = v.rollout();
        assert_eq!(
            (
                r.instances_launched,
                r.instances_terminated,
                r.instances_replaced
            ),
            (1, 1, 1)
        );
        assert_eq!(r.events.len(), 7);
        assert_eq!(r.events[6].elapsed_ms, 16_000);
    }

    #[test]
    fn test_warm_up_ends_with_a_successful_refresh_and_never_goes_back() {
        let mut v = View::default();
        let s = Duration::from_secs;
        v.observe(&[i("i-a", "InService", "1")], s(0), s(60));
        let e = v.observe(
            &[i("i-a", "InService", "1"), i("i-b", "InService", "2")],
            s(1),
            s(60),
        );
        assert_eq!(phases(&e), vec![("i-b".into(), Phase::WarmingUp)]);
        // Without a known release the line names the version alone.
        assert!(
            e[0].line()
                .ends_with(&format!("warming up{}  v2", " ".repeat(32))),
            "{}",
            e[0].line()
        );
        let e = v.finish_warm_up(s(2));
        assert_eq!(phases(&e), vec![("i-b".into(), Phase::InService)]);
        assert!(v.finish_warm_up(s(3)).is_empty());
        // No warm-up: straight in service.
        let mut v = View::default();
        v.observe(&[i("i-a", "Pending:Wait", "1")], s(0), Duration::ZERO);
        let e = v.observe(
            &[i("i-a", "InService", "1"), i("i-c", "InService", "2")],
            s(1),
            Duration::ZERO,
        );
        assert_eq!(
            phases(&e),
            vec![
                ("i-a".into(), Phase::InService),
                ("i-c".into(), Phase::InService)
            ]
        );
        // Launching at the first poll: launched during the watch, so warming up.
        let mut v = View::default();
        v.observe(
            &[i("i-a", "InService", "1"), i("i-b", "Pending:Wait", "2")],
            s(0),
            s(30),
        );
        let e = v.observe(
            &[i("i-a", "InService", "1"), i("i-b", "InService", "2")],
            s(1),
            s(30),
        );
        assert_eq!(phases(&e), vec![("i-b".into(), Phase::WarmingUp)]);
        assert_eq!(v.rollout().instances_launched, 1);
        // With a baseline, an instance already in service at the first poll may be new.
        // and one gone by then was terminated in between.
        let mut v = View::default().with_baseline(Some(BTreeMap::from([
            ("i-a".to_owned(), Some("1".to_owned())),
            ("i-z".to_owned(), Some("1".to_owned())),
        ])));
        let e = v.observe(
            &[i("i-a", "InService", "1"), i("i-b", "InService", "2")],
            s(0),
            s(30),
        );
        assert_eq!(
            phases(&e),
            vec![
                ("i-a".into(), Phase::InService),
                ("i-b".into(), Phase::WarmingUp),
                ("i-z".into(), Phase::Terminated)
            ]
        );
        assert_eq!(e[2].launch_template_version.as_deref(), Some("1"));
        let e = v.finish_warm_up(s(1));
        assert_eq!(phases(&e), vec![("i-b".into(), Phase::InService)]);
        let r = v.rollout();
        assert_eq!((r.instances_launched, r.instances_replaced), (1, 1));
        assert_eq!(Phase::of("Standby"), Phase::Other("Standby".into()));
        assert_eq!(Phase::of("Terminating:Proceed"), Phase::Draining);
    }
}
