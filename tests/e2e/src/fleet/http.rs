//! A minimal HTTP/1.1 client for the fleet's tests and load: one request per connection, to
//! loopback addresses and the fleet's own instances only ([`fleet_reachable`]).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::boot::network::DEFAULT_FLEET_NET;

/// Whether the fleet's clients may send to `addr`: a loopback address, or one in the booted
/// fleet's /24 ([`DEFAULT_FLEET_NET`]: the addresses of containers the harness made).
#[must_use]
pub fn fleet_reachable(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[..3] == DEFAULT_FLEET_NET.octets()[..3],
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// One `GET path` with `Connection: close`: (status, body). Loopback and the fleet's /24 only.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", path, None)
}

/// One `POST path` of a form (`application/x-www-form-urlencoded`) body, as [`http_get`].
pub fn http_post_form(addr: SocketAddr, path: &str, form: &str) -> anyhow::Result<(u16, String)> {
    request(
        addr,
        "POST",
        path,
        Some(("application/x-www-form-urlencoded", form)),
    )
}

/// One `POST path` of a `text/plain` body, as [`http_get`].
pub fn http_post_text(addr: SocketAddr, path: &str, text: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "POST", path, Some(("text/plain", text)))
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> anyhow::Result<(u16, String)> {
    if !fleet_reachable(addr) {
        bail!("{addr} is neither a loopback address nor in the fleet's network");
    }
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    match body {
        None => write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n"
        )?,
        Some((content_type, body)) => write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?,
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// The payload of a chunked body (enough for the sample app's short answers).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        let tail = &after[n..];
        rest = tail.strip_prefix("\r\n").unwrap_or(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dechunk() {
        assert_eq!(dechunk("8\r\napp dev\n\r\n0\r\n\r\n"), "app dev\n");
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn test_http_get_refuses_non_loopback() {
        let e = http_get(SocketAddr::from(([10, 0, 0, 1], 80)), "/").unwrap_err();
        assert!(e.to_string().contains("neither a loopback address"), "{e}");
        assert!(fleet_reachable(SocketAddr::from(([10, 231, 0, 6], 3000))));
        assert!(!fleet_reachable(SocketAddr::from(([10, 231, 1, 6], 3000))));
    }
}
