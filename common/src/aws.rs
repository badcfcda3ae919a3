//! Where AWS calls go: one `SdkConfig` per process, loaded in `main`, its clients passed down.
//!
//! Everything defers to the SDK's standard chain unless set here: `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_PROFILE`, credentials (env, profile, SSO, web identity, IMDS),
//! and the endpoint override `AWS_ENDPOINT_URL` with its per-service variants
//! (`AWS_ENDPOINT_URL_AUTO_SCALING`, `AWS_ENDPOINT_URL_CLOUDWATCH`, …). That is how the very same
//! binaries run against real AWS and against the local emulator: there is no test branch here.
//!
//! Each binary builds the clients it calls with [`aws_client!`](crate::aws_client) from
//! [`sdk_config`] and depends on their service crates itself; this crate has only Auto Scaling's,
//! which both call ([`crate::refresh_preferences`]). So `bake-agent` compiles and links no EC2 or
//! CloudFormation code, even in a workspace build that also builds `bake`.

use std::num::NonZeroU32;
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

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
    /// Attempts per API call, including the first. Default: 3.
    pub max_attempts: Option<NonZeroU32>,
    /// How calls are retried: `standard`, or `adaptive` (standard plus client-side rate
    /// limiting when AWS throttles). Default: standard.
    pub retry_mode: Option<RetryMode>,
    /// Longest time one attempt of an API call may take, connecting included, e.g. `"30s"`
    /// (more than 0, at most 1 h). Default: [`DEFAULT_ATTEMPT_TIMEOUT`].
    #[serde(
        default,
        with = "bounded_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_timeout: Option<Duration>,
    /// Longest time an API call may take, all attempts and the pauses between them included
    /// (more than 0, at most 1 h). Default: [`DEFAULT_OPERATION_TIMEOUT`].
    #[serde(
        default,
        with = "bounded_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub operation_timeout: Option<Duration>,
}

/// The SDK's retry modes (`aws.retry_mode`, `AWS_RETRY_MODE`; the AWS CLI's `legacy` has no
/// counterpart in the Rust SDK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Exponential back-off with jitter, a retry quota.
    #[default]
    Standard,
    /// Standard, and a client-side rate limit that slows down when AWS throttles.
    Adaptive,
}

impl std::str::FromStr for RetryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(Self::Standard),
            "adaptive" => Ok(Self::Adaptive),
            _ => Err(format!("'{s}' is not a retry mode: standard or adaptive")),
        }
    }
}

/// Default attempts per API call (the SDK's standard retry mode default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default longest time of one attempt (`aws.attempt_timeout`). No call the binaries make takes
/// more than a few seconds on AWS; an endpoint that accepts a connection and never answers would
/// otherwise hold the call for ever.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest time of an API call (`aws.operation_timeout`): three attempts of 30 s and the
/// standard retry mode's pauses (at most 1 s, then 2 s) fit in it, so the last attempt's own
/// error, which names the endpoint, is the one reported.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default longest time to connect (part of every attempt).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of `aws.attempt_timeout` and `aws.operation_timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// serde adapter for the timeouts: a humantime string, more than 0 and at most [`MAX_TIMEOUT`],
/// checked where it is parsed (toml names the key).
mod bounded_timeout {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        // toml names the key: the message need not.
        let v = crate::duration::parse("", &s).map_err(|e| D::Error::custom(e.message()))?;
        if v.is_zero() {
            return Err(D::Error::custom(format!("\"{s}\": must be more than 0s")));
        }
        if v > super::MAX_TIMEOUT {
            return Err(D::Error::custom(format!(
                "\"{s}\" is longer than the maximum, 1h"
            )));
        }
        Ok(Some(v))
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&humantime::format_duration(*v).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// The timeouts of every call: `attempt_timeout`, `operation_timeout` (at least the attempt
/// timeout) and [`DEFAULT_CONNECT_TIMEOUT`].
#[must_use]
pub fn timeout_config(settings: &AwsSettings) -> aws_config::timeout::TimeoutConfig {
    let attempt = settings.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
    let operation = settings
        .operation_timeout
        .unwrap_or(DEFAULT_OPERATION_TIMEOUT)
        .max(attempt);
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT.min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// Names the service, operation and endpoint in a call's error when it never got an answer (a
/// timeout, a refused connection, a DNS failure): the SDK's own "dispatch failure" or "timeout"
/// names none of them. Runs once per call, after the last attempt. Every client gets it from
/// [`aws_client!`](crate::aws_client).
#[derive(Clone, Copy, Debug)]
pub struct NameTheEndpoint;

/// A call that got no answer from its endpoint.
#[derive(Debug)]
struct NoAnswer {
    service: String,
    operation: String,
    endpoint: String,
    source: BoxError,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} at {}: no answer",
            self.service, self.operation, self.endpoint
        )
    }
}

impl std::error::Error for NoAnswer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The URI of a call's last attempt (the request itself is gone when a timeout ends it).
#[derive(Clone, Debug)]
struct AttemptUri(String);

impl Storable for AttemptUri {
    type Storer = StoreReplace<Self>;
}

impl Intercept for NameTheEndpoint {
    fn name(&self) -> &'static str {
        "NameTheEndpoint"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        let uri = uri.split('?').next().unwrap_or(uri).to_owned();
        cfg.interceptor_state().store_put(AttemptUri(uri));
        Ok(())
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let endpoint = cfg
            .load::<AttemptUri>()
            .map_or_else(|| "its endpoint".to_owned(), |u| u.0.clone());
        let (service, operation) = cfg.load::<Metadata>().map_or_else(
            || ("AWS".to_owned(), "call".to_owned()),
            |m| (m.service().to_owned(), m.name().to_owned()),
        );
        let Some(Err(err)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let timeout = err.is_timeout_error();
        let connector = err.as_connector_error().map(ConnectorError::is_timeout);
        if !timeout && connector.is_none() {
            return Ok(());
        }
        let old = std::mem::replace(err, OrchestratorError::other("replaced"));
        let named = Box::new(NoAnswer {
            service,
            operation,
            endpoint,
            source: Box::new(old),
        });
        *err = match connector {
            Some(false) => OrchestratorError::connector(ConnectorError::io(named)),
            Some(true) => OrchestratorError::connector(ConnectorError::timeout(named)),
            None => OrchestratorError::timeout(named),
        };
        Ok(())
    }
}

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

/// The retries of every call: `max_attempts` (default [`DEFAULT_MAX_ATTEMPTS`]) in
/// `retry_mode` (default standard). Always set here: the SDK's own chain would read
/// `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` too, but panics on a bad value; a binary that honours
/// them reads them into `settings` first, with an error naming the variable.
#[must_use]
pub fn retry_config(settings: &AwsSettings) -> aws_config::retry::RetryConfig {
    let attempts = settings
        .max_attempts
        .map_or(DEFAULT_MAX_ATTEMPTS, NonZeroU32::get);
    let config = match settings.retry_mode.unwrap_or_default() {
        RetryMode::Standard => aws_config::retry::RetryConfig::standard(),
        RetryMode::Adaptive => aws_config::retry::RetryConfig::adaptive(),
    };
    config.with_max_attempts(attempts)
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
    loader
        .retry_config(retry_config(settings))
        .timeout_config(timeout_config(settings))
        .load()
        .await
}

/// A client of the service crate `$sdk` (e.g. `aws_sdk_ssm`) from the `SdkConfig` `$conf`, which
/// names the service, operation and endpoint of a call that got no answer ([`NameTheEndpoint`]).
///
/// A macro, expanded in the caller, so that this crate needs no service crate: each binary
/// builds the clients it calls and compiles only their crates.
///
/// ```no_run
/// # async fn clients(settings: &bake_common::aws::AwsSettings) {
/// let conf = bake_common::aws::sdk_config(settings).await;
/// let asg: aws_sdk_autoscaling::Client = bake_common::aws_client!(aws_sdk_autoscaling, &conf);
/// # }
/// ```
#[macro_export]
macro_rules! aws_client {
    ($sdk:ident, $conf:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($conf)
                .interceptor($crate::aws::NameTheEndpoint)
                .build(),
        )
    };
}

/// Why an AWS call failed when the cause is the same whatever the call, so that what to do
/// about it names none of the call's own resources: no credentials, or no answer from the
/// endpoint. Found in an error chain by [`call_failure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// No provider of the standard chain (environment, profile, web identity, ECS, IMDS) had
    /// credentials.
    NoCredentials,
    /// A provider failed to load credentials (an expired SSO session, a broken profile).
    Credentials {
        /// The provider's innermost reason.
        reason: String,
    },
    /// The endpoint never answered: connection refused, a name that does not resolve, a
    /// timeout.
    NoAnswer {
        /// The service, e.g. `Auto Scaling`.
        service: String,
        /// The operation, e.g. `DescribeAutoScalingGroups`.
        operation: String,
        /// The URL of the last attempt, without its query.
        endpoint: String,
        /// The innermost reason, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
}

/// The [`CallFailure`] somewhere in `err`'s chain, if there is one.
#[must_use]
pub fn call_failure(err: &(dyn std::error::Error + 'static)) -> Option<CallFailure> {
    use aws_credential_types::provider::error::CredentialsError;
    let innermost = |e: &(dyn std::error::Error + 'static)| {
        crate::exit::chain(e)
            .last()
            .map_or_else(String::new, |e| e.to_string())
    };
    crate::exit::chain(err).find_map(|e| {
        if let Some(n) = e.downcast_ref::<NoAnswer>() {
            return Some(CallFailure::NoAnswer {
                service: n.service.clone(),
                operation: n.operation.clone(),
                endpoint: n.endpoint.clone(),
                reason: innermost(e),
            });
        }
        e.downcast_ref::<CredentialsError>().map(|c| match c {
            CredentialsError::CredentialsNotLoaded(_) => CallFailure::NoCredentials,
            _ => CallFailure::Credentials {
                reason: innermost(e),
            },
        })
    })
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

    #[tokio::test]
    async fn test_timeouts_default_and_configured() {
        let conf = sdk_config(&AwsSettings::default()).await;
        let t = conf.timeout_config().expect("timeouts are set");
        assert_eq!(t.operation_attempt_timeout(), Some(DEFAULT_ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(DEFAULT_OPERATION_TIMEOUT));
        assert_eq!(t.connect_timeout(), Some(DEFAULT_CONNECT_TIMEOUT));
        let s: AwsSettings =
            toml::from_str("attempt_timeout = \"2s\"\noperation_timeout = \"1s\"").unwrap();
        let t = timeout_config(&s);
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(
            t.operation_timeout(),
            Some(Duration::from_secs(2)),
            "never shorter than one attempt"
        );
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn test_timeouts_are_bounded_where_parsed() {
        for (text, want) in [
            ("attempt_timeout = \"0s\"", "more than 0s"),
            (
                "operation_timeout = \"500000000000y\"",
                "longer than the maximum",
            ),
            ("attempt_timeout = \"soon\"", "not a duration"),
        ] {
            let e = toml::from_str::<AwsSettings>(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                e.contains(text.split(' ').next().unwrap()),
                "names the key: {e}"
            );
        }
    }

    /// An endpoint that accepts connections and never answers: the call fails within its
    /// timeouts, and the error names the service, the operation and the endpoint.
    #[tokio::test]
    async fn test_a_silent_endpoint_fails_in_bounded_time_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted by the kernel's backlog; nobody ever reads or answers.
        let s = AwsSettings {
            region: Some("us-east-1".into()),
            endpoint_url: Some(format!("http://{addr}")),
            max_attempts: NonZeroU32::new(2),
            attempt_timeout: Some(Duration::from_millis(300)),
            operation_timeout: Some(Duration::from_secs(5)),
            ..AwsSettings::default()
        };
        let conf = sdk_config(&s).await.into_builder().credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("k", "s", None, None, "test"),
            ),
        );
        let asg: aws_sdk_autoscaling::Client =
            crate::aws_client!(aws_sdk_autoscaling, &conf.build());
        let started = std::time::Instant::now();
        let e = asg.describe_auto_scaling_groups().send().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
        let text = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
        assert!(text.contains("Auto Scaling"), "{text}");
        assert!(text.contains("DescribeAutoScalingGroups"), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        match call_failure(&e) {
            Some(CallFailure::NoAnswer {
                service,
                operation,
                endpoint,
                ..
            }) => {
                assert_eq!(service, "Auto Scaling");
                assert_eq!(operation, "DescribeAutoScalingGroups");
                assert_eq!(endpoint, format!("http://{addr}/"));
            }
            other => panic!("{other:?}"),
        }
        drop(listener);
    }

    /// The `aws-sdk-*` crates in the normal (not dev, not build) dependency graph of `package`,
    /// as `cargo tree` resolves it for a build of that package alone.
    fn service_crates(package: &str) -> std::collections::BTreeSet<String> {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let out = std::process::Command::new(env!("CARGO"))
            .args(["tree", "--frozen", "-e", "normal", "--prefix", "none"])
            .args([
                "--format",
                "{p}",
                "--manifest-path",
                manifest,
                "-p",
                package,
            ])
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("aws-sdk-"))
            .map(str::to_owned)
            .collect()
    }

    /// This crate holds no service crate but Auto Scaling's (both binaries call it), so each
    /// binary compiles only the clients it calls: a workspace build unifies this crate's
    /// features across both binaries, and another service crate here (or behind a feature
    /// `bake` enables) would be built into the agent too.
    #[test]
    fn test_each_binary_builds_only_the_service_crates_it_calls() {
        // aws-config's own: STS (web identity, assumed roles) and SSO (`sso` profiles).
        let config = ["aws-sdk-sso", "aws-sdk-ssooidc", "aws-sdk-sts"];
        let want = |services: &[&str]| -> std::collections::BTreeSet<String> {
            services
                .iter()
                .chain(&config)
                .map(|s| (*s).to_owned())
                .collect()
        };
        assert_eq!(
            service_crates("bake-common"),
            want(&["aws-sdk-autoscaling"])
        );
        assert_eq!(
            service_crates("bake-agent"),
            want(&[
                "aws-sdk-autoscaling",
                "aws-sdk-cloudwatch",
                "aws-sdk-cloudwatchlogs",
                "aws-sdk-ssm"
            ])
        );
        assert_eq!(
            service_crates("bake"),
            want(&[
                "aws-sdk-autoscaling",
                "aws-sdk-cloudformation",
                "aws-sdk-cloudwatch",
                "aws-sdk-ec2",
                "aws-sdk-elasticloadbalancingv2",
                "aws-sdk-s3",
                "aws-sdk-ssm"
            ])
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
