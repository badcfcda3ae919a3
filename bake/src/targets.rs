//! Resolving `[target]`: the Auto Scaling Group and its launch template, named in `bake.toml`
//! or read from a CloudFormation stack's outputs `AutoScalingGroupName` and `LaunchTemplateId`,
//! and the optional output `RollbackAlarmNames` (comma-separated alarms that join
//! `refresh.alarms` in the refresh's alarm specification).

use crate::aws::Aws;
use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsError;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Target;

/// What can go wrong resolving `[target]`. The SDK's errors are kept whole (boxed: they are
/// large), so a caller can ask for the service error.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `DescribeAutoScalingGroups` failed.
    #[error("describing auto scaling group '{asg}': {}", DisplayErrorContext(.source))]
    DescribeGroup {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<aws_sdk_autoscaling::error::SdkError<DescribeAutoScalingGroupsError>>,
    },
    /// The group does not exist.
    #[error("auto scaling group '{asg}' does not exist in region {}{}", .region.as_deref().unwrap_or("(none set)"), .account.as_ref().map(|a| format!(" of account {a}")).unwrap_or_default())]
    NoGroup {
        /// The group.
        asg: String,
        /// The region asked.
        region: Option<String>,
        /// The account of the credentials, when STS answered.
        account: Option<String>,
    },
    /// `target.launch_template` is unset and the group has no launch template of its own.
    #[error("target.launch_template: auto scaling group '{asg}' has no launch template of its own (mixed instances policy or launch configuration); set target.launch_template")]
    GroupWithoutLaunchTemplate {
        /// The group.
        asg: String,
    },
    /// `DescribeLaunchTemplates` by name failed.
    #[error("target.launch_template: launch template '{name}': {}", DisplayErrorContext(.source))]
    DescribeLaunchTemplate {
        /// `target.launch_template`.
        name: String,
        /// The SDK's error.
        source: Box<aws_sdk_ec2::error::SdkError<DescribeLaunchTemplatesError>>,
    },
    /// No launch template has that name.
    #[error("target.launch_template: launch template '{name}' does not exist")]
    NoLaunchTemplate {
        /// `target.launch_template`.
        name: String,
    },
    /// `DescribeStacks` failed.
    #[error("target.stack: describing CloudFormation stack '{stack}': {}", DisplayErrorContext(.source))]
    DescribeStack {
        /// `target.stack`.
        stack: String,
        /// The SDK's error.
        source: Box<aws_sdk_cloudformation::error::SdkError<DescribeStacksError>>,
    },
    /// The stack does not exist (CloudFormation answers `ValidationError`: "Stack with id X
    /// does not exist").
    #[error("target.stack: CloudFormation stack '{stack}' does not exist")]
    NoStack {
        /// `target.stack`.
        stack: String,
    },
    /// The stack lacks an output bake needs.
    #[error("target.stack: CloudFormation stack '{stack}' has no output '{key}'")]
    NoOutput {
        /// `target.stack`.
        stack: String,
        /// The output.
        key: &'static str,
    },
}

/// Stack output naming the Auto Scaling Group.
pub const OUTPUT_ASG: &str = "AutoScalingGroupName";
/// Stack output naming the launch template id.
pub const OUTPUT_LAUNCH_TEMPLATE: &str = "LaunchTemplateId";
/// Optional stack output: comma-separated CloudWatch alarms for the refresh's auto rollback.
pub const OUTPUT_ROLLBACK_ALARMS: &str = "RollbackAlarmNames";

/// The resolved targets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Targets {
    /// Auto Scaling Group name.
    pub auto_scaling_group: String,
    /// Launch template id (`lt-…`).
    pub launch_template_id: String,
    /// Alarms from the stack's `RollbackAlarmNames` output (empty without a stack or output).
    pub rollback_alarms: Vec<String>,
}

/// Resolves `target` to names that exist.
pub async fn resolve(aws: &Aws, target: &Target) -> Result<Targets, TargetError> {
    let (asg, lt, rollback_alarms) = match target {
        Target::Direct {
            auto_scaling_group,
            launch_template,
        } => (
            auto_scaling_group.clone(),
            launch_template.clone(),
            Vec::new(),
        ),
        Target::Stack(stack) => {
            let s = from_stack(aws, stack).await?;
            (s.asg, Some(s.launch_template), s.alarms)
        }
    };
    let group = describe_group(aws, &asg).await?;
    let lt = match lt {
        Some(lt) if lt.starts_with("lt-") => lt,
        Some(name) => launch_template_id_by_name(aws, &name).await?,
        None => group_launch_template(&group)
            .ok_or_else(|| TargetError::GroupWithoutLaunchTemplate { asg: asg.clone() })?,
    };
    Ok(Targets {
        auto_scaling_group: asg,
        launch_template_id: lt,
        rollback_alarms,
    })
}

/// The group's launch template id, if it launches from one.
#[must_use]
pub fn group_launch_template(group: &AutoScalingGroup) -> Option<String> {
    group
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .map(ToOwned::to_owned)
}

/// Describes one group; a missing group is an error naming it.
pub async fn describe_group(aws: &Aws, asg: &str) -> Result<AutoScalingGroup, TargetError> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
        .map_err(|e| TargetError::DescribeGroup {
            asg: asg.to_owned(),
            source: Box::new(e),
        })?;
    if let Some(g) = out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(asg))
    {
        return Ok(g.clone());
    }
    Err(TargetError::NoGroup {
        asg: asg.to_owned(),
        region: aws.region.clone(),
        account: aws.account().await,
    })
}

async fn launch_template_id_by_name(aws: &Aws, name: &str) -> Result<String, TargetError> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .map_err(|e| TargetError::DescribeLaunchTemplate {
            name: name.to_owned(),
            source: Box::new(e),
        })?;
    out.launch_templates()
        .first()
        .and_then(|t| t.launch_template_id())
        .map(ToOwned::to_owned)
        .ok_or_else(|| TargetError::NoLaunchTemplate {
            name: name.to_owned(),
        })
}

/// What a stack's outputs name.
struct StackTargets {
    asg: String,
    launch_template: String,
    alarms: Vec<String>,
}

/// The alarm names of a `RollbackAlarmNames` value: comma-separated, blanks ignored.
#[must_use]
pub fn split_alarm_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(ToOwned::to_owned)
        .collect()
}

async fn from_stack(aws: &Aws, stack: &str) -> Result<StackTargets, TargetError> {
    let out = aws
        .cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            // CloudFormation answers an unknown stack with ValidationError "Stack with id X does not exist".
            let missing = e
                .as_service_error()
                .and_then(aws_sdk_cloudformation::error::ProvideErrorMetadata::message)
                .is_some_and(|m| m.contains("does not exist"));
            if missing {
                TargetError::NoStack {
                    stack: stack.to_owned(),
                }
            } else {
                TargetError::DescribeStack {
                    stack: stack.to_owned(),
                    source: Box::new(e),
                }
            }
        })?;
    let s = out.stacks().first().ok_or_else(|| TargetError::NoStack {
        stack: stack.to_owned(),
    })?;
    let output = |key: &'static str| -> Result<String, TargetError> {
        s.outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .filter(|v| !v.is_empty())
            .map(ToOwned::to_owned)
            .ok_or_else(|| TargetError::NoOutput {
                stack: stack.to_owned(),
                key,
            })
    };
    let alarms = s
        .outputs()
        .iter()
        .find(|o| o.output_key() == Some(OUTPUT_ROLLBACK_ALARMS))
        .and_then(|o| o.output_value())
        .map(split_alarm_names)
        .unwrap_or_default();
    Ok(StackTargets {
        asg: output(OUTPUT_ASG)?,
        launch_template: output(OUTPUT_LAUNCH_TEMPLATE)?,
        alarms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_alarm_names() {
        assert_eq!(
            split_alarm_names("bake-prod-cpu, bake-prod-restarts,,"),
            vec!["bake-prod-cpu".to_owned(), "bake-prod-restarts".to_owned()]
        );
        assert!(split_alarm_names("").is_empty());
    }
}
