//! `logsink`: a fast local CloudWatch Logs endpoint for the log-shipping bench (bench/logs.py).
//!
//! Speaks the JSON 1.1 protocol (`X-Amz-Target: Logs_20140328.<Op>`) for PutLogEvents,
//! CreateLogGroup, CreateLogStream, PutRetentionPolicy and DescribeLogStreams. Every
//! PutLogEvents request is checked against every documented limit (1,048,576 bytes counting 26
//! per event, 10,000 events, 24-hour span, chronological order, 256 KiB per event, no empty
//! message); a violation answers `InvalidParameterException` and is counted.
//!
//! With `--check-sequence`, every message must start with a decimal number (what bench/logs.py
//! writes: 0, 1, 2, … per stream). Nothing is refused for its order: the sink keeps one counter
//! byte per number and stream, so `distinct` (numbers seen at least once), `duplicates` (seen
//! again) and `unnumbered` tell lost and duplicated lines apart from order, and order is counted
//! on its own: `sequence_errors` (a message that is not one above the previous message of its
//! stream, in arrival order) and `late_batches` (a PutLogEvents whose first number is below the
//! highest number its stream already had: a batch stored after a later one, as a shipper with
//! several requests per stream in flight does).
//!
//! Timing of PutLogEvents, for what bounds a shipper with one request in flight per stream:
//! `put_handle_us` (sum over requests: the handler's start, headers read, to its reply, body
//! read and checked) and `put_gap_us` (sum over requests: the previous reply of the same stream
//! to this request's headers: the shipper's share of each round trip, network included),
//! `max_in_flight` (the most PutLogEvents at once, from their headers to the reply).
//!
//! Request bodies with `Content-Encoding: gzip` (as `aws logs push` sends them) are decoded.
//!
//! Usage: `logsink [--port N] [--check-sequence] [--tls-cert FILE --tls-key FILE]`; prints
//! `listening on http://127.0.0.1:PORT`, or `https://` with a certificate (PEM: the chain, and
//! its PKCS#8, PKCS#1 or SEC1 key), which is then the only protocol it serves.
//! `GET /stats` answers JSON counters. Loopback only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
const MAX_EVENTS: usize = 10_000;
const MAX_EVENT_BYTES: usize = 262_144;
const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Sequence numbers at or above this are counted as `unnumbered` (the counters are one byte each).
const MAX_SEQUENCE: u64 = 1 << 28;

#[derive(Default)]
struct Sink {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    violations: AtomicU64,
    check_sequence: bool,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    put_handle_us: AtomicU64,
    put_gap_us: AtomicU64,
    streams: Mutex<HashMap<String, Stream>>,
    seq: Mutex<SeqStats>,
}

/// What `--check-sequence` keeps of one stream.
#[derive(Default)]
struct Stream {
    /// The last number, in arrival order.
    last: Option<u64>,
    /// The highest number so far.
    max: Option<u64>,
    /// How often each number arrived (saturating).
    seen: Vec<u8>,
    /// When the previous PutLogEvents of this stream was answered.
    replied: Option<Instant>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct SeqStats {
    sequence_errors: u64,
    distinct: u64,
    duplicates: u64,
    unnumbered: u64,
    late_batches: u64,
}

impl Stream {
    /// Counts one batch's numbers (`None`: a message without a leading number).
    fn record(&mut self, numbers: impl IntoIterator<Item = Option<u64>>, st: &mut SeqStats) {
        let mut first = true;
        for n in numbers {
            let Some(n) = n.filter(|&n| n < MAX_SEQUENCE) else {
                st.unnumbered += 1;
                continue;
            };
            if first && self.max.is_some_and(|m| n < m) {
                st.late_batches += 1;
            }
            first = false;
            if self.last.is_some_and(|p| n != p + 1) || (self.last.is_none() && n != 0) {
                // Print the first five.
                if st.sequence_errors < 5 {
                    eprintln!("logsink: sequence {:?} then {n}", self.last);
                }
                st.sequence_errors += 1;
            }
            self.last = Some(n);
            self.max = Some(self.max.map_or(n, |m| m.max(n)));
            let i = usize::try_from(n).expect("below MAX_SEQUENCE");
            if self.seen.len() <= i {
                self.seen.resize((i + 1).max(self.seen.len() * 2), 0);
            }
            match self.seen[i] {
                0 => st.distinct += 1,
                _ => st.duplicates += 1,
            }
            self.seen[i] = self.seen[i].saturating_add(1);
        }
    }
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
    // Every AWS answer has one; fluent-bit's cloudwatch_logs output takes a 200 without it for a
    // failed request and sends the whole chunk again.
    static REQUEST_ID: AtomicU64 = AtomicU64::new(0);
    let id = REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    r.headers_mut().insert(
        "x-amzn-requestid",
        hyper::header::HeaderValue::from_str(&format!("00000000-0000-4000-8000-{id:012x}"))
            .expect("ASCII"),
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

struct InFlight<'a>(&'a Sink);

impl<'a> InFlight<'a> {
    fn new(sink: &'a Sink) -> Self {
        let now = sink.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        sink.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(sink)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn put_log_events(sink: &Sink, body: &[u8], start: Instant) -> Response<Full<Bytes>> {
    let put: Put<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return invalid(sink, &format!("bad JSON: {e}")),
    };
    let bytes = match check(&put) {
        Ok(b) => b,
        Err(why) => return invalid(sink, &why),
    };
    let key = format!("{}\n{}", put.group, put.stream);
    let mut streams = sink
        .streams
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stream = streams.entry(key).or_default();
    if sink.check_sequence {
        let mut st = sink
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stream.record(
            put.events.iter().map(|e| leading_number(&e.message)),
            &mut st,
        );
    }
    sink.requests.fetch_add(1, Ordering::Relaxed);
    sink.events
        .fetch_add(put.events.len() as u64, Ordering::Relaxed);
    sink.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    let done = Instant::now();
    if let Some(prev) = stream.replied {
        let gap = start.saturating_duration_since(prev).as_micros();
        sink.put_gap_us
            .fetch_add(u64::try_from(gap).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    stream.replied = Some(done);
    let took = u64::try_from(done.duration_since(start).as_micros()).unwrap_or(u64::MAX);
    sink.put_handle_us.fetch_add(took, Ordering::Relaxed);
    reply(200, r#"{"nextSequenceToken":"1"}"#.into())
}

async fn handle(
    sink: Arc<Sink>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::GET && req.uri().path() == "/stats" {
        let s = &sink;
        let q = *s
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let streams = s
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        let body = format!(
            concat!(
                r#"{{"requests":{},"events":{},"bytes":{},"violations":{},"sequence_errors":{},"#,
                r#""distinct":{},"duplicates":{},"unnumbered":{},"late_batches":{},"streams":{},"#,
                r#""max_in_flight":{},"put_handle_us":{},"put_gap_us":{}}}"#
            ),
            s.requests.load(Ordering::Relaxed),
            s.events.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
            s.violations.load(Ordering::Relaxed),
            q.sequence_errors,
            q.distinct,
            q.duplicates,
            q.unnumbered,
            q.late_batches,
            streams,
            s.max_in_flight.load(Ordering::Relaxed),
            s.put_handle_us.load(Ordering::Relaxed),
            s.put_gap_us.load(Ordering::Relaxed),
        );
        return Ok(reply(200, body));
    }
    let start = Instant::now();
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // PutLogEvents being received or handled at once (counted from their headers on).
    let _in_flight = (target == "Logs_20140328.PutLogEvents").then(|| InFlight::new(&sink));
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
        "PutLogEvents" => put_log_events(&sink, &body, start),
        "CreateLogGroup" | "CreateLogStream" | "PutRetentionPolicy" => reply(200, "{}".into()),
        "DescribeLogStreams" => reply(200, r#"{"logStreams":[]}"#.into()),
        _ => reply(
            400,
            format!(r#"{{"__type":"UnknownOperationException","message":"{op}"}}"#),
        ),
    };
    Ok(resp)
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The TLS acceptor for `--tls-cert`/`--tls-key` (rustls on ring, TLS 1.2 and 1.3, HTTP/1.1).
fn tls_acceptor(cert: &str, key: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| bad(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| bad("TLS configuration", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve<I>(io: I, sink: Arc<Sink>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let svc = hyper::service::service_fn(move |req| handle(sink.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = arg(&args, "--port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let tls = match (arg(&args, "--tls-cert"), arg(&args, "--tls-key")) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--tls-cert and --tls-key go together",
            ))
        }
    };
    let sink = Arc::new(Sink {
        check_sequence: args.iter().any(|a| a == "--check-sequence"),
        ..Sink::default()
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // A failed handshake (a client that does not trust the CA) just ends the connection.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, sink).await;
                    }
                }
                None => serve(stream, sink).await,
            }
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

    fn batch(st: &mut Stream, q: &mut SeqStats, nums: &[u64]) {
        st.record(nums.iter().map(|&n| Some(n)), q);
    }

    #[test]
    fn test_sequence_counts_loss_duplicates_and_order_apart() {
        let (mut s, mut q) = (Stream::default(), SeqStats::default());
        batch(&mut s, &mut q, &[0, 1, 2]);
        batch(&mut s, &mut q, &[3, 4]);
        assert_eq!(
            q,
            SeqStats {
                distinct: 5,
                ..SeqStats::default()
            }
        );
        // 7-8 arrive before 5-6: one late batch, two jumps, nothing lost or duplicated.
        batch(&mut s, &mut q, &[7, 8]);
        batch(&mut s, &mut q, &[5, 6]);
        assert_eq!(
            (q.distinct, q.duplicates, q.late_batches, q.sequence_errors),
            (9, 0, 1, 2)
        );
        // A batch sent again: duplicates, and late.
        batch(&mut s, &mut q, &[5, 6]);
        assert_eq!((q.distinct, q.duplicates, q.late_batches), (9, 2, 2));
        s.record([None, Some(MAX_SEQUENCE)], &mut q);
        assert_eq!(q.unnumbered, 2);
        // A stream that does not start at 0 is out of sequence from its first line.
        let (mut s, mut q) = (Stream::default(), SeqStats::default());
        batch(&mut s, &mut q, &[1, 2]);
        assert_eq!((q.distinct, q.sequence_errors), (2, 1));
    }
}
