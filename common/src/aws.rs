//! Where AWS calls go, built once in `main` and passed down.
//!
//! Everything defers to the SDK's standard chain unless set here: `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_PROFILE`, credentials (env, profile, SSO, web identity, IMDS),
//! and the endpoint override `AWS_ENDPOINT_URL` with its per-service variants
//! (`AWS_ENDPOINT_URL_AUTO_SCALING`, `AWS_ENDPOINT_URL_CLOUDWATCH`, …). That is how the very same
//! binaries run against real AWS and against the local emulator: there is no test branch here.

use std::num::NonZeroU32;

/// Overrides of the SDK's standard chain. Unset fields defer to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region, e.g. `eu-west-1`. Default: the SDK chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Named profile from `~/.aws/config`. Default: `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// One endpoint for every service, e.g. the emulator's `http://127.0.0.1:5000`.
    /// Default: `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`, else AWS's own.
    pub endpoint_url: Option<String>,
    /// Attempts per API call, including the first (standard retry mode). Default: 3.
    pub max_attempts: Option<NonZeroU32>,
}

/// Default attempts per API call (the SDK's standard retry mode default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The HTTPS client of every AWS call, the instance metadata service's included: the SDK's own
/// hyper client, with rustls on the *ring* crypto provider (TLS 1.2/1.3, the system's root
/// certificates). The SDK's default would be rustls on aws-lc-rs, which does the same with
/// several times the code, and the agent's resident memory is mostly its code
/// (docs/resident-memory.md). Timeouts still come from each client's config.
#[must_use]
pub fn http_client() -> aws_types::sdk_config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Builds the one `SdkConfig` of the process from `settings` on top of the standard chain.
#[allow(clippy::disallowed_methods)] // the one place allowed to load SDK config
pub async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client());
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let attempts = settings
        .max_attempts
        .map_or(DEFAULT_MAX_ATTEMPTS, NonZeroU32::get);
    loader
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts))
        .load()
        .await
}

/// The AWS clients of the project, all from one `SdkConfig`. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Aws {
    /// EC2: AMIs, snapshots, launch templates, instances.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling: groups, instance refreshes, lifecycle actions, instance health.
    pub asg: aws_sdk_autoscaling::Client,
    /// SSM Parameter Store: secrets and fleet leases.
    pub ssm: aws_sdk_ssm::Client,
    /// CloudWatch metrics and alarms.
    pub cw: aws_sdk_cloudwatch::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// CloudFormation: stack outputs naming the targets.
    pub cfn: aws_sdk_cloudformation::Client,
    /// The region the clients talk to, if one was resolved.
    pub region: Option<String>,
}

impl Aws {
    /// Clients for every service from one config.
    #[must_use]
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(conf),
            asg: aws_sdk_autoscaling::Client::new(conf),
            ssm: aws_sdk_ssm::Client::new(conf),
            cw: aws_sdk_cloudwatch::Client::new(conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(conf),
            cfn: aws_sdk_cloudformation::Client::new(conf),
            region: conf.region().map(ToString::to_string),
        }
    }

    /// Loads the config from `settings` and builds every client.
    pub async fn load(settings: &AwsSettings) -> Self {
        Self::from_conf(&sdk_config(settings).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_settings_override_region_and_endpoint() {
        let s = AwsSettings {
            region: Some("eu-central-1".into()),
            endpoint_url: Some("http://127.0.0.1:1".into()),
            ..AwsSettings::default()
        };
        let conf = sdk_config(&s).await;
        assert_eq!(
            conf.region().map(ToString::to_string).as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(conf.endpoint_url(), Some("http://127.0.0.1:1"));
        assert_eq!(
            conf.retry_config().map(|r| r.max_attempts()),
            Some(DEFAULT_MAX_ATTEMPTS)
        );
        assert!(
            conf.http_client().is_some(),
            "every config carries our client"
        );
    }

    #[test]
    fn test_settings_reject_unknown_keys() {
        let e = toml::from_str::<AwsSettings>("regoin = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("regoin"), "{e}");
    }
}
