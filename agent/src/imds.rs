//! IMDSv2 through `aws-config`'s client (token first, then GETs with the token).
//!
//! The endpoint follows the SDK's standard chain, in particular `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
//! which is how tests and the local fleet point an agent at a hand-written metadata stand-in.
//! Docs: <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html>

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;

/// Errors talking to the instance metadata service.
#[derive(Debug, thiserror::Error)]
pub enum ImdsClientError {
    /// The request failed (no service, token refused, 5xx after retries).
    #[error("instance metadata {path}: {source}")]
    Get {
        /// The metadata path.
        path: String,
        /// The client's error.
        source: ImdsError,
    },
}

/// A thin IMDSv2 client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Imds {
    /// A client for the endpoint of the standard chain (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, else
    /// the link-local address).
    #[must_use]
    pub fn from_env() -> Self {
        // Short timeouts: the agent polls lifecycle state; a hung request must not stall it.
        let client = aws_config::imds::Client::builder()
            .configure(
                &aws_config::provider_config::ProviderConfig::default()
                    .with_http_client(bake_common::aws::http_client()),
            )
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        Self { client }
    }

    /// GETs `path` (e.g. `/latest/meta-data/instance-id`); `Ok(None)` on 404 (not present).
    pub async fn get_opt(&self, path: &str) -> Result<Option<String>, ImdsClientError> {
        match self.client.get(path).await {
            Ok(v) => Ok(Some(v.as_ref().to_owned())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(source) => Err(ImdsClientError::Get {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// GETs `path`; a 404 is an error naming the path.
    pub async fn get(&self, path: &str) -> Result<String, ImdsClientError> {
        match self.client.get(path).await {
            Ok(v) => Ok(v.as_ref().to_owned()),
            Err(source) => Err(ImdsClientError::Get {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The userdata, `None` when the instance has none.
    pub async fn user_data(&self) -> Result<Option<String>, ImdsClientError> {
        self.get_opt("/latest/user-data").await
    }

    /// `autoscaling/target-lifecycle-state` (`InService`, `Terminated`, `Warmed:*`), if present.
    pub async fn target_lifecycle_state(&self) -> Result<Option<String>, ImdsClientError> {
        self.get_opt("/latest/meta-data/autoscaling/target-lifecycle-state")
            .await
    }

    /// The spot interruption notice (`{"action": "terminate", "time": …}`), if any.
    pub async fn spot_instance_action(&self) -> Result<Option<String>, ImdsClientError> {
        self.get_opt("/latest/meta-data/spot/instance-action").await
    }
}
