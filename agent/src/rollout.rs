//! The instance refresh that rolls a secret rotation out (`[secrets] on_change = "rollout"`), with
//! the safety of a release, and its outcome published once.
//!
//! Every agent of the group sees the rotation; the one that creates the lease
//! `{lease.prefix}/{asg}/secrets-rollout/{versions id}` ([`crate::lease`]) starts the refresh:
//! - Its preferences are those `bake release` recorded for the group in the SSM parameter
//!   [`refresh_preferences::parameter_name`] (`/bake/refresh-preferences/<group>`): strategy
//!   `Rolling` and exactly the recorded min/max healthy, warm-up, checkpoints, auto rollback,
//!   alarms and bake time, with one exception: `SkipMatching` is off, since a rotation changes
//!   nothing in the launch template and a refresh that skips matching instances would replace
//!   none. With auto rollback, the desired configuration is the group's own launch template and
//!   version (AWS rolls back only refreshes that have one). A missing or unreadable parameter starts no
//!   refresh: an error naming the parameter, and the failed outcome.
//! - The refresh id goes into the lease's value ([`Holder::refresh_id`]). A winner that died
//!   before writing it leaves followers to take the group's refresh started since the lease.
//!
//! The outcome: the refresh replaces every instance, the winner's too, so no one instance can be
//! counted on to see the end. Every agent that saw the rotation, and every agent that boots
//! while the rotation's lease has no outcome yet (the instances the refresh launches, which
//! have the new secrets and so the same versions id), follows the refresh recorded in the lease
//! ([`Follower::follow`], polling `DescribeInstanceRefreshes` at most every 30 s for at most
//! [`WATCH_LIMIT`]). The first one to see it end creates `…/{versions id}.outcome`
//! (create-only); only that one logs the outcome and publishes `SecretRolloutSucceeded` or
//! `SecretRolloutFailed` (Count 1, dimension `AutoScalingGroupName`, namespace of `[metrics]`),
//! so the outcome is published once whichever instances come and go. An agent stopped while
//! following (its instance replaced) simply stops; the others carry on.

use std::time::{Duration, Instant};

use aws_sdk_autoscaling::operation::start_instance_refresh::StartInstanceRefreshError;
use aws_sdk_autoscaling::types::{
    DesiredConfiguration, LaunchTemplateSpecification, RefreshStrategy,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use bake_common::refresh_preferences::{self, Recorded};

use crate::lease::{self, Created, Holder};
use crate::metrics::{self, MetricsSettings};

/// How long a follower watches one refresh before it records it as failed.
pub const WATCH_LIMIT: Duration = Duration::from_secs(72 * 3600);
/// Longest time between two looks at the refresh.
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long the winner waits for another refresh in progress before it gives up.
pub const IN_PROGRESS_LIMIT: Duration = Duration::from_secs(6 * 3600);
/// How far the instance's clock may be off AWS's, when a follower looks for the refresh a
/// winner started but could not record.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Refresh statuses after which nothing changes any more.
const FINAL: &[&str] = &[
    "Successful",
    "Failed",
    "Cancelled",
    "RollbackSuccessful",
    "RollbackFailed",
];

/// What a rollout needs: the clients, the group and where its records live.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// SSM (leases, recorded preferences).
    pub ssm: aws_sdk_ssm::Client,
    /// Auto Scaling.
    pub asg: aws_sdk_autoscaling::Client,
    /// CloudWatch (the outcome metric).
    pub cw: aws_sdk_cloudwatch::Client,
    /// `[metrics]`; `None`: the outcome is logged only.
    pub metrics: Option<MetricsSettings>,
    /// The instance's group.
    pub group: String,
    /// This instance.
    pub instance_id: String,
    /// `[lease] prefix`.
    pub lease_prefix: String,
    /// Time between two looks at the refresh (capped at [`MAX_WATCH_INTERVAL`]).
    pub poll: Duration,
}

impl Rollout {
    /// The lease of the rotation to the secret versions `versions_id`.
    #[must_use]
    pub fn lease_path(&self, versions_id: &str) -> String {
        lease::job_path(
            &self.lease_prefix,
            &self.group,
            "secrets-rollout",
            versions_id,
        )
    }

    /// Rolls the rotation to `versions_id` out: the lease winner starts the refresh; everyone
    /// then follows it in the background. `Err` only when the lease could not be read or written
    /// (try again later); every later failure is recorded as the rollout's outcome.
    pub async fn start(&self, versions_id: &str) -> Result<(), lease::LeaseError> {
        let path = self.lease_path(versions_id);
        let me = Holder::now(&self.instance_id);
        match lease::create(&self.ssm, &path, &me.to_json()).await? {
            Created::Exists(holder) => {
                let holder = holder
                    .and_then(|h| serde_json::from_str::<Holder>(&h).ok())
                    .map(|h| h.instance_id);
                tracing::info!(lease = %path, ?holder, "another instance rolls this change out");
            }
            Created::Won => {
                tracing::info!(lease = %path, "won the rollout lease; starting an instance refresh");
                match self.start_refresh().await {
                    Ok(id) => {
                        let me = Holder {
                            refresh_id: Some(id),
                            ..me
                        };
                        if let Err(e) = lease::overwrite(&self.ssm, &path, &me.to_json()).await {
                            // The refresh runs anyway; followers cannot see which one it is and
                            // record a failure when they give up.
                            tracing::error!(error = %e, "cannot record the refresh in the rollout lease");
                        }
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        self.follower(&path)
                            .record(None, "NotStarted", &reason)
                            .await;
                    }
                }
            }
        }
        let follower = self.follower(&path);
        tokio::spawn(follower.follow());
        Ok(())
    }

    /// At boot: follows the rotation to `versions_id` if one was started and has no outcome yet
    /// (this instance may be one its refresh launched).
    pub async fn resume(&self, versions_id: &str) {
        let path = self.lease_path(versions_id);
        let follower = self.follower(&path);
        match lease::get(&self.ssm, &follower.outcome).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for an unfinished secret rollout");
                return;
            }
        }
        if let Ok(Some(_)) = lease::get(&self.ssm, &path).await {
            tracing::info!(lease = %path, "following the unfinished secret rollout of these secrets");
            follower.follow().await;
        }
    }

    fn follower(&self, lease_path: &str) -> Follower {
        Follower {
            rollout: self.clone(),
            lease: lease_path.to_owned(),
            outcome: format!("{lease_path}.outcome"),
        }
    }

    /// Reads the recorded preferences and starts the refresh (waiting for one in progress).
    async fn start_refresh(&self) -> anyhow::Result<String> {
        let name = refresh_preferences::parameter_name(&self.group);
        let value = match self.ssm.get_parameter().name(&name).send().await {
            Ok(out) => out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_owned(),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(
                        aws_sdk_ssm::operation::get_parameter::GetParameterError::ParameterNotFound(
                            _
                        )
                    )
                ) =>
            {
                anyhow::bail!(
                    "parameter {name} does not exist (`bake release` records the refresh preferences there): not starting an instance refresh"
                )
            }
            Err(e) => anyhow::bail!(
                "GetParameter {name}: {}: not starting an instance refresh",
                DisplayErrorContext(&e)
            ),
        };
        let recorded = Recorded::from_json(&name, &value)
            .map_err(|e| anyhow::anyhow!("{e}: not starting an instance refresh"))?;
        if recorded.strategy != "Rolling" {
            anyhow::bail!(
                "parameter {name}: Strategy {:?} is not Rolling: not starting an instance refresh",
                recorded.strategy
            );
        }
        let mut prefs = recorded.preferences;
        if prefs.skip_matching == Some(true) {
            tracing::info!(parameter = %name, "SkipMatching is off for a secret rollout: every instance matches the launch template");
            prefs.skip_matching = Some(false);
        }
        // AWS rolls back only a refresh with a desired configuration, and authorizes a desired
        // launch template like a launch (ec2:RunInstances, iam:PassRole on its profile): ask for
        // one only when the recorded preferences want auto rollback.
        let desired = if prefs.auto_rollback == Some(true) {
            self.own_configuration().await?
        } else {
            None
        };
        let deadline = Instant::now() + IN_PROGRESS_LIMIT;
        loop {
            match self
                .asg
                .start_instance_refresh()
                .auto_scaling_group_name(&self.group)
                .strategy(RefreshStrategy::Rolling)
                .set_desired_configuration(desired.clone())
                .preferences(prefs.to_sdk())
                .send()
                .await
            {
                Ok(out) => {
                    let id = out.instance_refresh_id().unwrap_or_default().to_owned();
                    tracing::info!(group = %self.group, refresh = %id, parameter = %name, "instance refresh started with the recorded preferences");
                    return Ok(id);
                }
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(StartInstanceRefreshError::InstanceRefreshInProgressFault(_))
                    ) =>
                {
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "an instance refresh of '{}' has been in progress for {} hours",
                            self.group,
                            IN_PROGRESS_LIMIT.as_secs() / 3600
                        );
                    }
                    tracing::info!(group = %self.group, "an instance refresh is in progress; waiting for it");
                    tokio::time::sleep(self.interval()).await;
                }
                Err(e) => anyhow::bail!(
                    "StartInstanceRefresh on '{}': {}",
                    self.group,
                    DisplayErrorContext(&e)
                ),
            }
        }
    }

    /// The group's own launch template and version, as the refresh's desired configuration.
    async fn own_configuration(&self) -> anyhow::Result<Option<DesiredConfiguration>> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeAutoScalingGroups '{}': {}",
                    self.group,
                    DisplayErrorContext(&e)
                )
            })?;
        let lt = out
            .auto_scaling_groups()
            .first()
            .and_then(|g| g.launch_template());
        Ok(lt.map(|lt| {
            DesiredConfiguration::builder()
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .set_launch_template_id(lt.launch_template_id().map(ToOwned::to_owned))
                        .set_launch_template_name(
                            lt.launch_template_id()
                                .is_none()
                                .then(|| lt.launch_template_name().map(ToOwned::to_owned))
                                .flatten(),
                        )
                        .set_version(lt.version().map(ToOwned::to_owned))
                        .build(),
                )
                .build()
        }))
    }

    fn interval(&self) -> Duration {
        self.poll
            .clamp(Duration::from_millis(100), MAX_WATCH_INTERVAL)
    }
}

/// Follows one rollout's refresh to its end and records the outcome once.
#[derive(Debug)]
pub struct Follower {
    rollout: Rollout,
    lease: String,
    outcome: String,
}

impl Follower {
    /// Watches the refresh recorded in the lease until it ends, another instance recorded the
    /// outcome, or [`WATCH_LIMIT`] passed.
    pub async fn follow(self) {
        let r = &self.rollout;
        let deadline = Instant::now() + WATCH_LIMIT;
        let mut refresh_id: Option<String> = None;
        loop {
            match lease::get(&r.ssm, &self.outcome).await {
                Ok(Some(_)) => {
                    tracing::debug!(outcome = %self.outcome, "the rollout's outcome is recorded");
                    return;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the rollout's outcome"),
            }
            if refresh_id.is_none() {
                let holder = lease::get(&r.ssm, &self.lease)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_str::<Holder>(&v).ok());
                if let Some(h) = holder {
                    refresh_id = match h.refresh_id {
                        Some(id) => Some(id),
                        // The winner may have died between starting the refresh and recording
                        // it: the group's refresh started since the lease was taken is ours.
                        None => self.started_since(&h.started_at).await,
                    };
                }
            }
            if let Some(id) = &refresh_id {
                match r
                    .asg
                    .describe_instance_refreshes()
                    .auto_scaling_group_name(&r.group)
                    .instance_refresh_ids(id)
                    .send()
                    .await
                {
                    Ok(out) => {
                        if let Some(refresh) = out.instance_refreshes().first() {
                            let status = refresh.status().map(|s| s.as_str()).unwrap_or_default();
                            if FINAL.contains(&status) {
                                let reason = refresh.status_reason().unwrap_or_default();
                                self.record(Some(id), status, reason).await;
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %r.group, refresh = %id, error = %DisplayErrorContext(&e), "DescribeInstanceRefreshes failed");
                    }
                }
            }
            if Instant::now() > deadline {
                let why = format!(
                    "not ended after {} hours of watching",
                    WATCH_LIMIT.as_secs() / 3600
                );
                self.record(refresh_id.as_deref(), "Unknown", &why).await;
                return;
            }
            tokio::time::sleep(r.interval()).await;
        }
    }

    /// The group's latest refresh that started at or after `since` (RFC 3339, less
    /// [`CLOCK_SKEW`]), if any.
    async fn started_since(&self, since: &str) -> Option<String> {
        let since = lease::parse_time(since)? - chrono::Duration::from_std(CLOCK_SKEW).ok()?;
        let out = self
            .rollout
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(&self.rollout.group)
            .send()
            .await
            .ok()?;
        // Newest first (AWS's order); the emulator keeps it too.
        out.instance_refreshes()
            .iter()
            .filter(|r| {
                r.start_time()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
                    .is_some_and(|t| t >= since)
            })
            .max_by_key(|r| r.start_time().map(aws_smithy_types::DateTime::secs))
            .and_then(|r| r.instance_refresh_id().map(ToOwned::to_owned))
    }

    /// Records the outcome (create-only); only the instance that created the record logs it and
    /// publishes the metric.
    async fn record(&self, refresh_id: Option<&str>, status: &str, reason: &str) {
        let r = &self.rollout;
        let ok = status == "Successful";
        let value = serde_json::json!({
            "instance_id": r.instance_id,
            "refresh_id": refresh_id,
            "status": status,
            "reason": reason,
            "at": lease::rfc3339(chrono::Utc::now()),
        })
        .to_string();
        match lease::create(&r.ssm, &self.outcome, &value).await {
            Ok(Created::Won) => {}
            Ok(Created::Exists(_)) => {
                tracing::debug!(outcome = %self.outcome, "another instance recorded the rollout's outcome");
                return;
            }
            Err(e) => {
                // Someone else may record it; if no one can, the missing success metric shows.
                tracing::warn!(error = %e, "cannot record the rollout's outcome");
                return;
            }
        }
        let metric = if ok {
            tracing::info!(group = %r.group, refresh = ?refresh_id, status, "secret rollout succeeded");
            "SecretRolloutSucceeded"
        } else {
            tracing::error!(group = %r.group, refresh = ?refresh_id, status, reason, "secret rollout failed");
            "SecretRolloutFailed"
        };
        let Some(cfg) = &r.metrics else {
            return;
        };
        let dims = [("AutoScalingGroupName", r.group.as_str())];
        if let Err(e) = metrics::publish_count(&r.cw, cfg, metric, 1.0, &dims).await {
            tracing::warn!(metric, error = %e, "cannot publish the rollout's outcome");
        }
    }
}
