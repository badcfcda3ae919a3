//! `logsink`: a fast local CloudWatch Logs endpoint for the log-shipping bench (bench/logs.sh).
//!
//! Speaks the JSON 1.1 protocol (`X-Amz-Target: Logs_20140328.<Op>`) for PutLogEvents,
//! CreateLogGroup, CreateLogStream, PutRetentionPolicy and DescribeLogStreams. Every
//! PutLogEvents request is checked against every documented limit (1,048,576 bytes counting 26
//! per event, 10,000 events, 24-hour span, chronological order, 256 KiB per event, no empty
//! message); a violation answers `InvalidParameterException` and is counted. With
//! `--check-sequence`, every message must start with a decimal number one above the previous
//! message's in its stream (what bench/logs.sh writes), so a lost or reordered line is counted.
//!
//! Request bodies with `Content-Encoding: gzip` (as `aws logs push` sends them) are decoded.
//!
//! Usage: `logsink [--port N] [--check-sequence]`; prints `listening on http://127.0.0.1:PORT`.
//! `GET /stats` answers JSON counters. Loopback only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
const MAX_EVENTS: usize = 10_000;
const MAX_EVENT_BYTES: usize = 262_144;
const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;

#[derive(Default)]
struct Sink {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    violations: AtomicU64,
    sequence_errors: AtomicU64,
    check_sequence: bool,
    /// Last sequence number per stream.
    last: Mutex<HashMap<String, u64>>,
}

#[derive(serde::Deserialize)]
struct Event<'a> {
    timestamp: i64,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct Put<'a> {
    #[serde(rename = "logGroupName")]
    group: std::borrow::Cow<'a, str>,
    #[serde(rename = "logStreamName")]
    stream: std::borrow::Cow<'a, str>,
    #[serde(rename = "logEvents", borrow)]
    events: Vec<Event<'a>>,
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn invalid(sink: &Sink, why: &str) -> Response<Full<Bytes>> {
    sink.violations.fetch_add(1, Ordering::Relaxed);
    eprintln!("logsink: limit violated: {why}");
    reply(
        400,
        format!(r#"{{"__type":"InvalidParameterException","message":"{why}"}}"#),
    )
}

/// Checks one PutLogEvents body; returns the error message of the first violation.
fn check(put: &Put<'_>) -> Result<usize, String> {
    if put.events.is_empty() || put.events.len() > MAX_EVENTS {
        return Err(format!("{} events", put.events.len()));
    }
    let mut bytes = 0;
    for e in &put.events {
        let size = e.message.len() + EVENT_OVERHEAD;
        if e.message.is_empty() || size > MAX_EVENT_BYTES {
            return Err(format!("event of {size} bytes"));
        }
        bytes += size;
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(format!("batch of {bytes} bytes"));
    }
    if put
        .events
        .windows(2)
        .any(|w| w[1].timestamp < w[0].timestamp)
    {
        return Err("events not in chronological order".into());
    }
    let span = put.events[put.events.len() - 1].timestamp - put.events[0].timestamp;
    if span > MAX_SPAN_MS {
        return Err(format!("batch spans {span} ms"));
    }
    Ok(bytes)
}

fn leading_number(s: &str) -> Option<u64> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

async fn handle(
    sink: Arc<Sink>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::GET && req.uri().path() == "/stats" {
        let s = &sink;
        let body = format!(
            r#"{{"requests":{},"events":{},"bytes":{},"violations":{},"sequence_errors":{}}}"#,
            s.requests.load(Ordering::Relaxed),
            s.events.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
            s.violations.load(Ordering::Relaxed),
            s.sequence_errors.load(Ordering::Relaxed),
        );
        return Ok(reply(200, body));
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, "{}".into())),
    };
    // CloudWatch Logs accepts gzip request bodies; the awscli-cwlogs plugin sends them.
    let body = if gzip {
        let mut out = Vec::with_capacity(body.len() * 8);
        match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out) {
            Ok(_) => Bytes::from(out),
            Err(e) => return Ok(invalid(&sink, &format!("bad gzip body: {e}"))),
        }
    } else {
        body
    };
    let op = target.strip_prefix("Logs_20140328.").unwrap_or("");
    let resp = match op {
        "PutLogEvents" => {
            let put: Put<'_> = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => return Ok(invalid(&sink, &format!("bad JSON: {e}"))),
            };
            let bytes = match check(&put) {
                Ok(b) => b,
                Err(why) => return Ok(invalid(&sink, &why)),
            };
            if sink.check_sequence {
                let key = format!("{}\n{}", put.group, put.stream);
                let mut last = sink
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut prev = last.get(&key).copied();
                for e in &put.events {
                    let n = leading_number(&e.message);
                    match (prev, n) {
                        (_, None) => {
                            sink.sequence_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        // Count every gap; print the first five.
                        (Some(p), Some(n))
                            if n != p + 1
                                && sink.sequence_errors.fetch_add(1, Ordering::Relaxed) < 5 =>
                        {
                            eprintln!("logsink: sequence {p} then {n}");
                        }
                        _ => {}
                    }
                    prev = n.or(prev);
                }
                if let Some(p) = prev {
                    last.insert(key, p);
                }
            }
            sink.requests.fetch_add(1, Ordering::Relaxed);
            sink.events
                .fetch_add(put.events.len() as u64, Ordering::Relaxed);
            sink.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            reply(200, r#"{"nextSequenceToken":"1"}"#.into())
        }
        "CreateLogGroup" | "CreateLogStream" | "PutRetentionPolicy" => reply(200, "{}".into()),
        "DescribeLogStreams" => reply(200, r#"{"logStreams":[]}"#.into()),
        _ => reply(
            400,
            format!(r#"{{"__type":"UnknownOperationException","message":"{op}"}}"#),
        ),
    };
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let sink = Arc::new(Sink {
        check_sequence: args.iter().any(|a| a == "--check-sequence"),
        ..Sink::default()
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| handle(sink.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(events: Vec<(i64, String)>) -> String {
        let evs: Vec<_> = events
            .into_iter()
            .map(|(t, m)| serde_json::json!({"timestamp": t, "message": m}))
            .collect();
        serde_json::json!({"logGroupName": "g", "logStreamName": "s", "logEvents": evs}).to_string()
    }

    #[test]
    fn test_limits_are_checked() {
        let ok = put(vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(check(&serde_json::from_str(&ok).unwrap()), Ok(54));
        let unordered = put(vec![(2, "a".into()), (1, "b".into())]);
        assert!(check(&serde_json::from_str(&unordered).unwrap()).is_err());
        let big = put((0..5).map(|i| (i, "x".repeat(250_000))).collect());
        assert!(check(&serde_json::from_str(&big).unwrap())
            .unwrap_err()
            .contains("batch of"));
        let span = put(vec![(0, "a".into()), (MAX_SPAN_MS + 1, "b".into())]);
        assert!(check(&serde_json::from_str(&span).unwrap()).is_err());
        assert_eq!(leading_number("000123 hello"), Some(123));
    }
}
