//! The AWS clients the agent calls, all from the one `SdkConfig` of the process
//! ([`bake_common::aws::sdk_config`]). Only these four services: the agent's build has no
//! other service crate (`bake`'s EC2 and CloudFormation clients live in `bake`).

use bake_common::aws::{sdk_config, AwsSettings};
use bake_common::aws_client;

/// The agent's clients. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Aws {
    /// Auto Scaling: the instance's group, lifecycle actions, instance health, refreshes.
    pub asg: aws_sdk_autoscaling::Client,
    /// SSM Parameter Store: secrets, fleet leases, refresh preferences.
    pub ssm: aws_sdk_ssm::Client,
    /// CloudWatch metrics and alarms.
    pub cw: aws_sdk_cloudwatch::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Aws {
    /// Every client from one config.
    #[must_use]
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self {
            asg: aws_client!(aws_sdk_autoscaling, conf),
            ssm: aws_client!(aws_sdk_ssm, conf),
            cw: aws_client!(aws_sdk_cloudwatch, conf),
            logs: aws_client!(aws_sdk_cloudwatchlogs, conf),
        }
    }

    /// Loads the config from `settings` and builds every client.
    pub async fn load(settings: &AwsSettings) -> Self {
        Self::from_conf(&sdk_config(settings).await)
    }
}
