//! Readiness probe: an HTTP GET expecting 2xx, or a TCP connect.
//!
//! The HTTP probe is a hand-made HTTP/1.1 request over a TCP stream: the agent only ever probes
//! its own app on loopback, and this keeps an HTTP client (and its memory) out of the agent.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Probe;

/// Timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One probe: `Ok(())` when ready, else why not.
pub async fn probe_once(p: &Probe) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(p)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn probe_inner(p: &Probe) -> Result<(), String> {
    match p {
        Probe::Tcp { addr } => TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Probe::Http { addr, path } => {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bake-agent\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let mut n = 0;
            // The status line fits in 64 bytes: "HTTP/1.1 200 OK".
            while n < 12 {
                let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let code = head.split_whitespace().nth(1).unwrap_or("");
            if code.len() == 3 && code.starts_with('2') {
                Ok(())
            } else {
                Err(format!("answered {:?}", head.lines().next().unwrap_or("")))
            }
        }
    }
}

/// Probes every `interval` until ready (`true`) or `timeout` (`false`), calling `heartbeat`
/// every `heartbeat_every` while waiting.
pub async fn wait_ready<H, F>(
    p: &Probe,
    interval: Duration,
    timeout: Duration,
    heartbeat_every: Duration,
    mut heartbeat: H,
) -> bool
where
    H: FnMut() -> F,
    F: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut last_beat = start;
    loop {
        let Err(last_err) = probe_once(p).await else {
            return true;
        };
        if start.elapsed() >= timeout {
            tracing::warn!(probe = ?p, error = %last_err, timeout_s = timeout.as_secs(), "app never became ready");
            return false;
        }
        if last_beat.elapsed() >= heartbeat_every {
            last_beat = Instant::now();
            heartbeat().await;
        }
        tokio::time::sleep(interval).await;
    }
}
