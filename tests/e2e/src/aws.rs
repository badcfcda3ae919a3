//! Clients for every service the binaries call, for tests to arrange and inspect the emulator.
//! (Each binary builds only its own clients: `bake::aws`, `bake_agent::aws`.)

use bake_common::aws_client;

/// One client per service, all from one config. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Aws {
    /// EC2: AMIs, snapshots, launch templates, instances.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling: groups, instance refreshes, lifecycle actions, instance health.
    pub asg: aws_sdk_autoscaling::Client,
    /// SSM Parameter Store: secrets, fleet leases, refresh preferences.
    pub ssm: aws_sdk_ssm::Client,
    /// CloudWatch metrics and alarms.
    pub cw: aws_sdk_cloudwatch::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// CloudFormation: stacks and their outputs.
    pub cfn: aws_sdk_cloudformation::Client,
    /// Elastic Load Balancing v2: target groups and their targets.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// S3 (path-style: the emulator answers on one host name): the artifacts bucket.
    pub s3: aws_sdk_s3::Client,
    /// The region the clients talk to, if one was resolved.
    pub region: Option<String>,
}

impl Aws {
    /// Every client from one config.
    #[must_use]
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self {
            ec2: aws_client!(aws_sdk_ec2, conf),
            asg: aws_client!(aws_sdk_autoscaling, conf),
            ssm: aws_client!(aws_sdk_ssm, conf),
            cw: aws_client!(aws_sdk_cloudwatch, conf),
            logs: aws_client!(aws_sdk_cloudwatchlogs, conf),
            cfn: aws_client!(aws_sdk_cloudformation, conf),
            elb: aws_client!(aws_sdk_elasticloadbalancingv2, conf),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(conf)
                    .force_path_style(true)
                    .build(),
            ),
            region: conf.region().map(ToString::to_string),
        }
    }

    /// The names of the SSM parameters under `path`, recursively (one page: the leases and
    /// reports the tests look for are a handful).
    pub async fn parameter_names(&self, path: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .send()
            .await?;
        Ok(out
            .parameters()
            .iter()
            .filter_map(|p| p.name().map(str::to_owned))
            .collect())
    }

    /// The instance refreshes of group `asg`, newest first: (id, status).
    pub async fn instance_refreshes(&self, asg: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .send()
            .await?;
        Ok(out
            .instance_refreshes()
            .iter()
            .map(|r| {
                (
                    r.instance_refresh_id().unwrap_or_default().to_owned(),
                    r.status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }
}
