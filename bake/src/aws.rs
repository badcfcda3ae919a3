//! The AWS clients `bake` calls, all from the one `SdkConfig` of the process
//! ([`bake_common::aws::sdk_config`]). Only the services it calls are built in.

use bake_common::aws::{sdk_config, AwsSettings};
use bake_common::aws_client;

/// `bake`'s clients. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Aws {
    /// EC2: AMIs, snapshots, launch templates, instances.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling: groups, instance refreshes.
    pub asg: aws_sdk_autoscaling::Client,
    /// SSM Parameter Store: the refresh preferences of the last release
    /// ([`bake_common::refresh_preferences`]).
    pub ssm: aws_sdk_ssm::Client,
    /// CloudFormation: stack outputs naming the targets.
    pub cfn: aws_sdk_cloudformation::Client,
    /// Elastic Load Balancing v2: the health of the instances in the group's target groups
    /// (`bake status`).
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// CloudWatch: the app's metrics by release, for the canary verdict ([`crate::canary`]).
    pub cw: aws_sdk_cloudwatch::Client,
    /// S3: the images' SBOMs in the artifacts bucket (`[sbom]`, [`crate::sbom`]).
    pub s3: aws_sdk_s3::Client,
    /// STS: the account the credentials belong to, named in errors (`GetCallerIdentity`, which
    /// needs no permission).
    pub sts: aws_sdk_sts::Client,
    /// The region the clients talk to, if one was resolved.
    pub region: Option<String>,
    /// The config the clients were built from: [`Aws::ec2_in`] builds another region's client
    /// from it (same credentials, retries, timeouts and endpoint).
    conf: aws_config::SdkConfig,
}

impl Aws {
    /// Every client from one config.
    #[must_use]
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self {
            ec2: aws_client!(aws_sdk_ec2, conf),
            asg: aws_client!(aws_sdk_autoscaling, conf),
            ssm: aws_client!(aws_sdk_ssm, conf),
            cfn: aws_client!(aws_sdk_cloudformation, conf),
            elb: aws_client!(aws_sdk_elasticloadbalancingv2, conf),
            cw: aws_client!(aws_sdk_cloudwatch, conf),
            sts: aws_client!(aws_sdk_sts, conf),
            s3: s3_client(conf),
            region: conf.region().map(ToString::to_string),
            conf: conf.clone(),
        }
    }

    /// An EC2 client of `region` (`bake promote`: a cross-region CopyImage is requested in the
    /// destination region), from the process's one config.
    #[must_use]
    pub fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let conf = self
            .conf
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        aws_client!(aws_sdk_ec2, &conf)
    }

    /// An S3 client of `region` (an SBOM stored in another region's bucket: a promoted image).
    #[must_use]
    pub fn s3_in(&self, region: &str) -> aws_sdk_s3::Client {
        let conf = self
            .conf
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        s3_client(&conf)
    }

    /// The account of the credentials (`GetCallerIdentity`), or `None` if STS does not answer
    /// within 3 s (it only adds detail to an error: never worth the SDK's retries).
    pub async fn account(&self) -> Option<String> {
        let call = self.sts.get_caller_identity().send();
        let out = tokio::time::timeout(std::time::Duration::from_secs(3), call)
            .await
            .ok()?
            .ok()?;
        out.account().map(str::to_owned)
    }

    /// Loads the config from `settings` and builds every client.
    pub async fn load(settings: &AwsSettings) -> Self {
        Self::from_conf(&sdk_config(settings).await)
    }
}

/// S3's client: path-style addressing (`ENDPOINT/BUCKET/KEY`) when an endpoint is overridden
/// (an emulator answers on one host name, not on `BUCKET.host`), virtual-hosted style on AWS.
fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let custom = conf.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(conf)
            .interceptor(bake_common::aws::NameTheEndpoint)
            .force_path_style(custom)
            .build(),
    )
}
