//! The package index state as an input of an image (`[packer] package_indexes`): the digest of
//! each repository's `InRelease` file, read before a build. An archive publishes a new
//! `InRelease` whenever a package changes (a security update is a new one on
//! security.debian.org), so the inputs hash changes with it and `bake build` bakes anew instead
//! of reusing the image made before the update (`bake build --if-changed` on a schedule: the
//! nightly rebake).
//!
//! Plain `http://` only, as apt itself fetches Debian's archives: the file is signed by the
//! archive's key (apt checks it on the build instance), and only its digest is taken here.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

/// Longest `InRelease` read (Debian's are about 150 KB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Time for the whole fetch of one index.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An index that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("packer.package_indexes: {url}: {message}")]
pub struct IndexError {
    /// The index's URL.
    pub url: String,
    /// Why.
    pub message: String,
}

/// The input key of an index URL: `index:` and the URL without its scheme and a trailing
/// `/InRelease` (`index:deb.debian.org/debian/dists/bookworm`).
#[must_use]
pub fn key(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    format!("index:{}", rest.strip_suffix("/InRelease").unwrap_or(rest))
}

/// Checks the form of an index URL (for config validation): `http://HOST[:PORT]/PATH`.
///
/// # Errors
/// What is wrong, for the key's message.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) if uri.path().len() > 1 => Ok(()),
        (Some("https"), _) => Err(format!(
            "{url:?}: only http:// (as apt fetches Debian's archives; the file is signed by the archive's key)"
        )),
        _ => Err(format!("{url:?} is not an http://HOST/PATH URL")),
    }
}

/// GETs `url` and returns the sha256 of its body (lowercase hex).
///
/// # Errors
/// [`IndexError`] naming the URL: no connection, a status other than 200, a body too large,
/// or no answer within 30 s.
pub async fn digest(url: &str) -> Result<String, IndexError> {
    let err = |message: String| IndexError {
        url: url.to_owned(),
        message,
    };
    let body = tokio::time::timeout(TIMEOUT, fetch(url))
        .await
        .map_err(|_| err(format!("no answer within {}", crate::output::secs(TIMEOUT))))?
        .map_err(err)?;
    Ok(bake_common::sbom::sha256_hex(&body))
}

async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    check_url(url)?;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("bake/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        conn.abort();
        return Err(format!("answered {status}"));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keys_and_urls() {
        assert_eq!(
            key("http://deb.debian.org/debian/dists/bookworm/InRelease"),
            "index:deb.debian.org/debian/dists/bookworm"
        );
        assert!(check_url("http://deb.debian.org/debian/dists/bookworm/InRelease").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x/InRelease").is_ok());
        assert!(
            check_url("https://deb.debian.org/debian/dists/bookworm/InRelease")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(check_url("deb.debian.org/debian").is_err());
        assert!(check_url("http://deb.debian.org/").is_err());
    }
}
