//! IMDSv2 through `aws-config`'s client (token first, then GETs with the token).
//!
//! The endpoint follows the SDK's standard chain, in particular `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
//! which is how tests and the local fleet point an agent at a hand-written metadata stand-in.
//! Docs: <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html>
//!
//! The userdata is the exception: it is bytes (cloud-init accepts gzip), and `aws-config`'s client
//! only returns UTF-8 text, so [`Imds::user_data`] makes the same two IMDSv2 requests itself with
//! hyper's HTTP/1.1 client, to the same endpoint.

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

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
    /// A request of [`Imds::user_data`] failed (after its retries).
    #[error("instance metadata {path} at {endpoint}: {message}")]
    Raw {
        /// The metadata path.
        path: String,
        /// The endpoint it was asked.
        endpoint: String,
        /// What went wrong (never the token).
        message: String,
    },
}

/// Default endpoint of the instance metadata service (IPv4).
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The IPv6 endpoint (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`).
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
/// Connect timeout of a metadata request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one whole metadata request once connected.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of each userdata request; retried after 0.25 s and 0.5 s (as aws-config's client
/// retries: connection errors, timeouts and 5xx).
pub const USERDATA_ATTEMPTS: u32 = 3;
/// The largest userdata body read (EC2 allows 16 KiB).
pub const MAX_USERDATA_BODY: usize = 64 * 1024;
/// Lifetime of the session token of [`Imds::user_data`]: it is used at once.
const TOKEN_TTL_SECS: &str = "60";

/// A thin IMDSv2 client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Imds {
    client: aws_config::imds::Client,
    /// `http://host[:port]`, without a trailing `/`.
    endpoint: String,
}

/// The endpoint as the SDK's chain picks it from the environment:
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` (`IPv6`),
/// else the IPv4 link-local address.
fn endpoint_from_env() -> String {
    if let Ok(e) = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        if !e.trim().is_empty() {
            return e.trim().trim_end_matches('/').to_owned();
        }
    }
    match std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
        Ok(m) if m.eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.to_owned(),
        _ => DEFAULT_ENDPOINT.to_owned(),
    }
}

/// Why one attempt failed, and whether another may help.
struct Failed {
    message: String,
    retry: bool,
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
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build();
        Self {
            client,
            endpoint: endpoint_from_env(),
        }
    }

    /// A client for `endpoint` (`http://host:port`), whatever the environment says: e.g. the
    /// metadata stand-in of a test.
    pub fn with_endpoint(endpoint: &str) -> Result<Self, String> {
        let client = aws_config::imds::Client::builder()
            .configure(
                &aws_config::provider_config::ProviderConfig::default()
                    .with_http_client(bake_common::aws::http_client()),
            )
            .endpoint(endpoint)
            .map_err(|e| format!("'{endpoint}' is not a metadata endpoint: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build();
        Ok(Self {
            client,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
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

    /// The userdata as bytes (it may be gzip or binary), `None` when the instance has none.
    pub async fn user_data(&self) -> Result<Option<Vec<u8>>, ImdsClientError> {
        const PATH: &str = "/latest/user-data";
        let mut attempt = 1;
        loop {
            match self.user_data_once(PATH).await {
                Ok(v) => return Ok(v),
                Err(f) if f.retry && attempt < USERDATA_ATTEMPTS => {
                    tracing::debug!(path = PATH, endpoint = %self.endpoint, attempt, error = %f.message,
                        "instance metadata request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
                    attempt += 1;
                }
                Err(f) => {
                    return Err(ImdsClientError::Raw {
                        path: PATH.to_owned(),
                        endpoint: self.endpoint.clone(),
                        message: f.message,
                    })
                }
            }
        }
    }

    async fn user_data_once(&self, path: &str) -> Result<Option<Vec<u8>>, Failed> {
        let token = self
            .request(hyper::Method::PUT, "/latest/api/token", None)
            .await?;
        let token = match token {
            (200, body) => String::from_utf8(body).map_err(|_| Failed {
                message: "the session token is not text".into(),
                retry: false,
            })?,
            (status, _) => {
                return Err(Failed {
                    message: format!("session token request answered {status}"),
                    retry: status >= 500,
                })
            }
        };
        match self.request(hyper::Method::GET, path, Some(&token)).await? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, _) => Err(Failed {
                message: format!("answered {status}"),
                retry: status >= 500 || status == 401,
            }),
        }
    }

    /// One HTTP/1.1 request on a connection of its own; `(status, body)`.
    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), Failed> {
        let transient = |message: String| Failed {
            message,
            retry: true,
        };
        let uri: hyper::Uri = format!("{}{path}", self.endpoint)
            .parse()
            .map_err(|e| Failed {
                message: format!("bad endpoint URL: {e}"),
                retry: false,
            })?;
        let (Some(host), Some("http")) = (uri.host(), uri.scheme_str()) else {
            return Err(Failed {
                message: "the endpoint must be an http:// URL".into(),
                retry: false,
            });
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| transient(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| transient(format!("cannot connect: {e}")))?;
        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| transient(e.to_string()))?;
            let conn = tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, authority);
            req = match token {
                Some(t) => req.header("x-aws-ec2-metadata-token", t),
                None => req.header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECS),
            };
            let req = req.body(Empty::<Bytes>::new()).map_err(|e| Failed {
                message: e.to_string(),
                retry: false,
            })?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| transient(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_USERDATA_BODY)
                .collect()
                .await
                .map_err(|e| Failed {
                    message: format!("reading the body: {e}"),
                    retry: false,
                })?
                .to_bytes()
                .to_vec();
            conn.abort();
            Ok::<_, Failed>((status, body))
        };
        tokio::time::timeout(READ_TIMEOUT, exchange)
            .await
            .map_err(|_| transient(format!("no answer within {READ_TIMEOUT:?}")))?
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

#[cfg(test)]
mod tests {
    use super::*;
    use bake_e2e::{Imds as StandIn, ImdsState};

    #[tokio::test]
    async fn test_user_data_is_bytes() {
        let md = StandIn::start(ImdsState::new("i-0bytes")).unwrap();
        let imds = Imds::with_endpoint(md.url()).unwrap();
        assert_eq!(imds.user_data().await.unwrap(), None, "404: no userdata");
        let junk = vec![0x1f, 0x8b, 0xff, 0x00, 0xc3, 0x28];
        md.update(|s| s.user_data_raw = Some(junk.clone()));
        assert_eq!(imds.user_data().await.unwrap(), Some(junk));
        md.update(|s| s.user_data = Some("[app]\n".into()));
        md.update(|s| s.user_data_raw = None);
        assert_eq!(imds.user_data().await.unwrap(), Some(b"[app]\n".to_vec()));
        // The other paths still go through aws-config's client, to the same endpoint.
        assert_eq!(
            imds.get("/latest/meta-data/instance-id").await.unwrap(),
            "i-0bytes"
        );
    }

    #[tokio::test]
    async fn test_user_data_outage_names_path_and_endpoint() {
        let md = StandIn::start(ImdsState::new("i-0down")).unwrap();
        md.update(|s| s.fail = true);
        let imds = Imds::with_endpoint(md.url()).unwrap();
        let before = md.requests();
        let e = imds.user_data().await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "instance metadata /latest/user-data at {}: session token request answered 500",
                md.url()
            )
        );
        assert_eq!(
            md.requests() - before,
            u64::from(USERDATA_ATTEMPTS),
            "retried"
        );
    }
}
