//! A hand-written instance metadata service stand-in (IMDSv2). This is the project's one
//! hand-written fake: nothing real can serve instance metadata off EC2.
//!
//! It serves, on `127.0.0.1:PORT`, what `bake-agent` reads through `aws-config`'s IMDS client:
//! - `PUT /latest/api/token` (needs `X-aws-ec2-metadata-token-ttl-seconds`) → a token;
//! - every `GET` needs `X-aws-ec2-metadata-token` with an issued token, else 401;
//! - `/latest/meta-data/instance-id`, `ami-id`, `placement/region`, `placement/availability-zone`,
//!   `/latest/user-data` (text, or any bytes), `tags/instance` and `tags/instance/KEY`,
//!   `autoscaling/target-lifecycle-state`, `spot/instance-action`,
//!   `/latest/dynamic/instance-identity/document`; absent values are 404 as on EC2;
//! - the instance role's credentials as EC2 serves them ([`RoleCredentials`]):
//!   `iam/security-credentials/` (the role's name), `iam/security-credentials/ROLE` (the JSON the
//!   SDK's IMDS credentials provider reads) and `iam/info`; 404 when the instance has no role.
//!
//! Each [`Imds`] runs its own server thread (a current-thread tokio runtime), so it works from
//! sync and async tests alike and many of them live in one process (the local fleet). The state
//! is mutable while it runs ([`Imds::update`]); a child process is pointed at it with
//! [`Imds::env`] (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the stand-in serves. Change it while running with [`Imds::update`].
#[derive(Clone, Debug)]
pub struct ImdsState {
    /// `i-…`.
    pub instance_id: String,
    /// `ami-id`: the image it was launched from; `None` → 404.
    pub ami_id: Option<String>,
    /// e.g. `us-east-1`.
    pub region: String,
    /// e.g. `us-east-1a`.
    pub availability_zone: String,
    /// The userdata; `None` → 404.
    pub user_data: Option<String>,
    /// Userdata as raw bytes (gzip, binary), served instead of `user_data` when set.
    pub user_data_raw: Option<Vec<u8>>,
    /// Instance tags in metadata; `None` → tags not allowed in metadata (404).
    pub tags: Option<BTreeMap<String, String>>,
    /// `autoscaling/target-lifecycle-state`; `None` → 404.
    pub target_lifecycle_state: Option<String>,
    /// `spot/instance-action` JSON; `None` → 404.
    pub spot_instance_action: Option<String>,
    /// The instance role's credentials; `None`: launched without an instance profile (404).
    pub role_credentials: Option<RoleCredentials>,
    /// Answer every request with 500 (an IMDS outage).
    pub fail: bool,
}

/// The credentials EC2 gets for an instance's role (STS, on the instance profile's behalf) and
/// serves in its metadata; here issued by the emulator (`/bake-emulator/ec2/role-credentials`),
/// so calls signed with them are held to the role's policies. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    /// The instance profile's ARN (`iam/info`).
    pub instance_profile_arn: String,
    /// The role's name (`iam/security-credentials/`).
    pub role_name: String,
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: String,
    /// The session token.
    pub token: String,
    /// When they expire, `YYYY-MM-DDTHH:MM:SSZ`.
    pub expiration: String,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("instance_profile_arn", &self.instance_profile_arn)
            .field("role_name", &self.role_name)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl RoleCredentials {
    /// The same credentials, said to expire `after` from now (as EC2 says of credentials it
    /// is about to rotate): the SDK's identity cache loads new ones at its first call within
    /// 5–10 s of then, or after it. The emulator still accepts these until their own expiry.
    #[must_use]
    pub fn expiring_in(mut self, after: std::time::Duration) -> Self {
        self.expiration = utc(std::time::SystemTime::now() + after);
        self
    }

    /// The JSON of `iam/security-credentials/ROLE`, as EC2 serves it.
    fn document(&self) -> String {
        serde_json::json!({
            "Code": "Success",
            "LastUpdated": now_utc(),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token,
            "Expiration": self.expiration,
        })
        .to_string()
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_utc() -> String {
    utc(std::time::SystemTime::now())
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(t: std::time::SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .map(|s| {
            // Whole seconds, as EC2 writes them.
            match s.split_once('.') {
                Some((head, _)) => format!("{head}Z"),
                None => s,
            }
        })
        .unwrap_or_default()
}

impl ImdsState {
    /// An instance with `instance_id` in us-east-1a, no userdata, no tags, InService.
    #[must_use]
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            ami_id: None,
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            user_data: None,
            user_data_raw: None,
            tags: None,
            target_lifecycle_state: Some("InService".into()),
            spot_instance_action: None,
            role_credentials: None,
            fail: false,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Option<ImdsState>,
    tokens: Vec<String>,
    requests: u64,
    /// The access key of every role credentials document served, and when.
    credentials_served: Vec<(String, std::time::SystemTime)>,
}

/// A running stand-in; stopped when dropped.
#[derive(Debug)]
pub struct Imds {
    url: String,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Imds {
    /// Starts serving `state` on a free loopback port.
    pub fn start(state: ImdsState) -> anyhow::Result<Self> {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0")?, state)
    }

    /// Starts serving `state` on `listener`, bound by the caller: a socket keeps the network
    /// namespace it was made in, so one bound inside a container's namespace serves that
    /// container (the booted instances' 169.254.169.254:80).
    pub fn start_on(listener: std::net::TcpListener, state: ImdsState) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared {
            state: Some(state),
            ..Shared::default()
        }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("imds-standin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the IMDS stand-in");
                rt.block_on(serve(listener, sh, stop_rx));
            })?;
        Ok(Self {
            url,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Environment that points a child's SDK (and `bake-agent`) at this stand-in.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("{}/", self.url),
        )]
    }

    /// Changes what is served, e.g. `imds.update(|s| s.target_lifecycle_state = Some("Terminated".into()))`.
    pub fn update(&self, f: impl FnOnce(&mut ImdsState)) {
        let mut g = self.shared.lock().expect("imds state lock");
        if let Some(s) = g.state.as_mut() {
            f(s);
        }
    }

    /// A copy of the current state.
    #[must_use]
    pub fn state(&self) -> ImdsState {
        self.shared
            .lock()
            .expect("imds state lock")
            .state
            .clone()
            .expect("state is set")
    }

    /// The role credentials served so far (`iam/security-credentials/ROLE`): their access key
    /// ids and when, oldest first.
    #[must_use]
    pub fn credentials_served(&self) -> Vec<(String, std::time::SystemTime)> {
        self.shared
            .lock()
            .expect("imds state lock")
            .credentials_served
            .clone()
    }

    /// Requests served so far (tokens included).
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.shared.lock().expect("imds state lock").requests
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Mutex<Shared>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else { continue };
                let sh = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = sh.clone();
                        async move { Ok::<_, Infallible>(handle(&sh, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn handle(shared: &Mutex<Shared>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut g = shared.lock().expect("imds state lock");
    g.requests += 1;
    let Some(state) = g.state.clone() else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "");
    };
    if state.fail {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    let path = req.uri().path().to_owned();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        let ttl_ok = req
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|t| (1..=21_600).contains(&t));
        if !ttl_ok {
            return reply(
                StatusCode::BAD_REQUEST,
                "missing or invalid X-aws-ec2-metadata-token-ttl-seconds",
            );
        }
        let token = format!("token-{}-{}", g.tokens.len(), state.instance_id);
        g.tokens.push(token.clone());
        let mut r = reply(StatusCode::OK, token);
        r.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            hyper::header::HeaderValue::from_static("21600"),
        );
        return r;
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let token = req
        .headers()
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    if !token.is_some_and(|t| g.tokens.iter().any(|k| k == t)) {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    if path == "/latest/user-data" {
        if let Some(raw) = state.user_data_raw {
            return reply(StatusCode::OK, raw);
        }
    }
    let found: Option<String> = match path.as_str() {
        "/latest/meta-data/instance-id" => Some(state.instance_id.clone()),
        "/latest/meta-data/ami-id" => state.ami_id.clone(),
        "/latest/meta-data/placement/region" => Some(state.region.clone()),
        "/latest/meta-data/placement/availability-zone" => Some(state.availability_zone.clone()),
        "/latest/user-data" => state.user_data.clone(),
        "/latest/meta-data/autoscaling/target-lifecycle-state" => {
            state.target_lifecycle_state.clone()
        }
        "/latest/meta-data/spot/instance-action" => state.spot_instance_action.clone(),
        "/latest/meta-data/tags/instance" | "/latest/meta-data/tags/instance/" => state
            .tags
            .as_ref()
            .map(|t| t.keys().cloned().collect::<Vec<_>>().join("\n")),
        "/latest/meta-data/iam/security-credentials"
        | "/latest/meta-data/iam/security-credentials/" => {
            state.role_credentials.as_ref().map(|c| c.role_name.clone())
        }
        "/latest/meta-data/iam/info" => state.role_credentials.as_ref().map(|c| {
            serde_json::json!({
                "Code": "Success",
                "LastUpdated": now_utc(),
                "InstanceProfileArn": c.instance_profile_arn,
            })
            .to_string()
        }),
        "/latest/dynamic/instance-identity/document" => Some(
            serde_json::json!({
                "instanceId": state.instance_id,
                "region": state.region,
                "availabilityZone": state.availability_zone,
            })
            .to_string(),
        ),
        p => match p.strip_prefix("/latest/meta-data/iam/security-credentials/") {
            Some(role) => {
                let served = state
                    .role_credentials
                    .as_ref()
                    .filter(|c| c.role_name == role);
                if let Some(c) = served {
                    g.credentials_served
                        .push((c.access_key_id.clone(), std::time::SystemTime::now()));
                }
                served.map(RoleCredentials::document)
            }
            None => p
                .strip_prefix("/latest/meta-data/tags/instance/")
                .and_then(|k| state.tags.as_ref().and_then(|t| t.get(k).cloned())),
        },
    };
    match found {
        Some(body) => reply(StatusCode::OK, body),
        None => reply(StatusCode::NOT_FOUND, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("X-aws-ec2-metadata-token: {t}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (code, body)
    }

    fn token(url: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        s.write_all(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n").nth(1).unwrap().to_owned()
    }

    #[test]
    fn test_token_required_and_state_mutable() {
        let imds = Imds::start(ImdsState::new("i-0abc")).unwrap();
        assert_eq!(
            get(imds.url(), "/latest/meta-data/instance-id", None).0,
            401
        );
        let t = token(imds.url());
        assert_eq!(
            get(imds.url(), "/latest/meta-data/instance-id", Some(&t)),
            (200, "i-0abc".into())
        );
        assert_eq!(
            get(
                imds.url(),
                "/latest/meta-data/spot/instance-action",
                Some(&t)
            )
            .0,
            404
        );
        imds.update(|s| s.target_lifecycle_state = Some("Terminated".into()));
        assert_eq!(
            get(
                imds.url(),
                "/latest/meta-data/autoscaling/target-lifecycle-state",
                Some(&t)
            )
            .1,
            "Terminated"
        );
    }

    #[test]
    fn test_role_credentials_are_served_as_ec2_serves_them_and_never_debug_printed() {
        let imds = Imds::start(ImdsState::new("i-0abc")).unwrap();
        let t = token(imds.url());
        let list = "/latest/meta-data/iam/security-credentials/";
        assert_eq!(get(imds.url(), list, Some(&t)).0, 404);
        let creds = RoleCredentials {
            instance_profile_arn: "arn:aws:iam::123456789012:instance-profile/bake-a-instance"
                .into(),
            role_name: "bake-a-instance".into(),
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret-key-value".into(),
            token: "session-token-value".into(),
            expiration: "2030-01-01T00:00:00Z".into(),
        };
        assert!(!format!("{creds:?}").contains("secret-key-value"));
        assert!(!format!("{creds:?}").contains("session-token-value"));
        imds.update(|s| s.role_credentials = Some(creds.clone()));
        assert_eq!(
            get(imds.url(), list, Some(&t)),
            (200, "bake-a-instance".into())
        );
        let (code, body) = get(
            imds.url(),
            "/latest/meta-data/iam/security-credentials/bake-a-instance",
            Some(&t),
        );
        assert_eq!(code, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["Code"], "Success");
        assert_eq!(doc["Type"], "AWS-HMAC");
        assert_eq!(doc["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(doc["Token"], "session-token-value");
        assert_eq!(doc["Expiration"], "2030-01-01T00:00:00Z");
        let updated = doc["LastUpdated"].as_str().unwrap();
        assert!(updated.len() == 20 && updated.ends_with('Z'), "{updated}");
        let other = "/latest/meta-data/iam/security-credentials/other-role";
        assert_eq!(get(imds.url(), other, Some(&t)).0, 404);
        let info: serde_json::Value =
            serde_json::from_str(&get(imds.url(), "/latest/meta-data/iam/info", Some(&t)).1)
                .unwrap();
        assert_eq!(
            info["InstanceProfileArn"],
            "arn:aws:iam::123456789012:instance-profile/bake-a-instance"
        );
        // One document served, by its key.
        let served = imds.credentials_served();
        assert_eq!(served.len(), 1, "{served:?}");
        assert_eq!(served[0].0, "ASIAEXAMPLE");
        // Said to expire soon: the document says when, to the second.
        let soon = creds.expiring_in(std::time::Duration::from_secs(60));
        let want = aws_smithy_types::DateTime::from(
            std::time::SystemTime::now() + std::time::Duration::from_secs(60),
        )
        .secs();
        imds.update(|s| s.role_credentials = Some(soon));
        let (_, body) = get(
            imds.url(),
            "/latest/meta-data/iam/security-credentials/bake-a-instance",
            Some(&t),
        );
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let exp = aws_smithy_types::DateTime::from_str(
            doc["Expiration"].as_str().unwrap(),
            aws_smithy_types::date_time::Format::DateTime,
        )
        .unwrap()
        .secs();
        assert!((want - 2..=want).contains(&exp), "{exp} vs {want}");
        assert_eq!(imds.credentials_served().len(), 2);
    }
}
