//! Lifecycle hooks and the termination watch.
//!
//! Launch: once ready, `CompleteLifecycleAction CONTINUE` on the launch hook (ABANDON when never
//! ready), so an instance refresh counts the instance only when its app serves. Termination: when
//! IMDS `autoscaling/target-lifecycle-state` says `Terminated` (or a spot interruption notice
//! appears) the agent drains and completes the terminate hook.
//! <https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html>

use std::time::Duration;

use aws_smithy_types::error::display::DisplayErrorContext;

use crate::imds::Imds;

/// Transition of launch hooks.
pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
/// Transition of terminate hooks.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// Errors of lifecycle calls.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// An Auto Scaling call failed.
    #[error("{call} on '{asg}' for {instance_id}: {message}")]
    Call {
        /// The API.
        call: &'static str,
        /// The group.
        asg: String,
        /// The instance.
        instance_id: String,
        /// SDK error with context.
        message: String,
    },
}

/// The instance and its group, for lifecycle calls.
#[derive(Clone, Debug)]
pub struct Target {
    /// Auto Scaling client.
    pub asg: aws_sdk_autoscaling::Client,
    /// Group name.
    pub group: String,
    /// `i-…`.
    pub instance_id: String,
}

impl Target {
    fn err<E>(
        &self,
        call: &'static str,
        e: &aws_sdk_autoscaling::error::SdkError<E>,
    ) -> LifecycleError
    where
        E: std::error::Error + 'static,
    {
        LifecycleError::Call {
            call,
            asg: self.group.clone(),
            instance_id: self.instance_id.clone(),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    /// `configured`, or the group's first hook for `transition` (DescribeLifecycleHooks).
    pub async fn hook(
        &self,
        configured: Option<&str>,
        transition: &str,
    ) -> Result<Option<String>, LifecycleError> {
        if let Some(h) = configured {
            return Ok(Some(h.to_owned()));
        }
        let out = self
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&self.group)
            .send()
            .await
            .map_err(|e| self.err("DescribeLifecycleHooks", &e))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_transition() == Some(transition))
            .and_then(|h| h.lifecycle_hook_name().map(ToOwned::to_owned)))
    }

    /// CompleteLifecycleAction with `result` (`CONTINUE` or `ABANDON`).
    pub async fn complete(&self, hook: &str, result: &str) -> Result<(), LifecycleError> {
        let started = std::time::Instant::now();
        self.asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .lifecycle_action_result(result)
            .send()
            .await
            .map_err(|e| self.err("CompleteLifecycleAction", &e))?;
        tracing::info!(
            hook,
            result,
            group = %self.group,
            step = "lifecycle",
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "lifecycle action completed"
        );
        Ok(())
    }

    /// RecordLifecycleActionHeartbeat; failures are logged only.
    pub async fn heartbeat(&self, hook: &str) {
        let r = self
            .asg
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .send()
            .await;
        match r {
            Ok(_) => tracing::info!(hook, "lifecycle heartbeat sent"),
            Err(e) => {
                tracing::warn!(hook, error = %DisplayErrorContext(&e), "lifecycle heartbeat failed")
            }
        }
    }

    /// SetInstanceHealth Unhealthy, so the group replaces this instance.
    pub async fn mark_unhealthy(&self) -> Result<(), LifecycleError> {
        self.asg
            .set_instance_health()
            .instance_id(&self.instance_id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map_err(|e| self.err("SetInstanceHealth", &e))?;
        tracing::error!(instance_id = %self.instance_id, group = %self.group, "instance marked Unhealthy");
        Ok(())
    }
}

/// Why the instance is going away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The group is terminating it (target lifecycle state `Terminated`).
    Terminated,
    /// A spot interruption notice (its JSON).
    Spot(String),
}

/// Polls IMDS every `interval` until the instance is being terminated.
pub async fn watch_termination(imds: &Imds, interval: Duration, spot: bool) -> Termination {
    loop {
        match imds.target_lifecycle_state().await {
            Ok(Some(s)) if s.trim() == "Terminated" => return Termination::Terminated,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the target lifecycle state"),
        }
        if spot {
            match imds.spot_instance_action().await {
                Ok(Some(notice)) => return Termination::Spot(notice),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the spot instance action"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}
