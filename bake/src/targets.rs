//! Resolving `[target]`: the Auto Scaling Group and its launch template, named in `bake.toml`
//! or read from a CloudFormation stack's outputs `AutoScalingGroupName` and `LaunchTemplateId`,
//! and the optional output `RollbackAlarmNames` (comma-separated alarms that join
//! `refresh.alarms` in the refresh's alarm specification).

use crate::aws::Aws;
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Target;
use crate::exit::{coded, Exit};

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
pub async fn resolve(aws: &Aws, target: &Target) -> anyhow::Result<Targets> {
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
        None => group_launch_template(&group).ok_or_else(|| {
            coded(
                Exit::Config,
                format!("target.launch_template: auto scaling group '{asg}' has no launch template of its own (mixed instances policy or launch configuration); set target.launch_template"),
            )
        })?,
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
pub async fn describe_group(aws: &Aws, asg: &str) -> anyhow::Result<AutoScalingGroup> {
    let out = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
        .map_err(|e| {
            coded(
                Exit::Aws,
                format!(
                    "describing auto scaling group '{asg}': {}",
                    DisplayErrorContext(&e)
                ),
            )
        })?;
    out.auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(asg))
        .cloned()
        .ok_or_else(|| {
            coded(
                Exit::Aws,
                format!("auto scaling group '{asg}' does not exist"),
            )
        })
}

async fn launch_template_id_by_name(aws: &Aws, name: &str) -> anyhow::Result<String> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .map_err(|e| {
            coded(
                Exit::Aws,
                format!(
                    "target.launch_template: launch template '{name}': {}",
                    DisplayErrorContext(&e)
                ),
            )
        })?;
    out.launch_templates()
        .first()
        .and_then(|t| t.launch_template_id())
        .map(ToOwned::to_owned)
        .ok_or_else(|| {
            coded(
                Exit::Aws,
                format!("target.launch_template: launch template '{name}' does not exist"),
            )
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

async fn from_stack(aws: &Aws, stack: &str) -> anyhow::Result<StackTargets> {
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
                coded(
                    Exit::Aws,
                    format!("target.stack: CloudFormation stack '{stack}' does not exist"),
                )
            } else {
                coded(
                    Exit::Aws,
                    format!(
                        "target.stack: describing CloudFormation stack '{stack}': {}",
                        DisplayErrorContext(&e)
                    ),
                )
            }
        })?;
    let s = out.stacks().first().ok_or_else(|| {
        coded(
            Exit::Aws,
            format!("target.stack: CloudFormation stack '{stack}' does not exist"),
        )
    })?;
    let output = |key: &str| -> anyhow::Result<String> {
        s.outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .filter(|v| !v.is_empty())
            .map(ToOwned::to_owned)
            .ok_or_else(|| {
                coded(
                    Exit::Config,
                    format!("target.stack: CloudFormation stack '{stack}' has no output '{key}'"),
                )
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
