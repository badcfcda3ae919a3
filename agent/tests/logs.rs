//! Log shipping and metrics against the local emulator (moto): crashes, rotation, faults.
//!
//! The fault-injecting proxy here is hand-written (no real stand-in can answer throttling or
//! reset connections on demand); everything behind it is the emulator.

// Integration tests are a test crate of their own: the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use bake_agent::logs::{LogsConfig, LogsSettings, Shipper};
use bake_e2e::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GROUP: &str = "/bake/test";

/// Every message of a stream, oldest first (GetLogEvents from the head, all pages).
async fn stream_messages(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let resp = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let Ok(resp) = resp else { return out };
        let events = resp.events();
        out.extend(events.iter().filter_map(|e| e.message().map(str::to_owned)));
        let next = resp.next_forward_token().map(str::to_owned);
        if events.is_empty() || next == token {
            break;
        }
        token = next;
    }
    out
}

fn seq_of(msg: &str) -> u64 {
    msg.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Asserts that `msgs` holds every line 0..n, in order except for re-sent runs after at most
/// `crashes` restarts (at-least-once: duplicates only from a crash window).
fn assert_complete(msgs: &[String], n: u64, crashes: usize) {
    let seqs: Vec<u64> = msgs.iter().map(|m| seq_of(m)).collect();
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (0..n).filter(|s| !distinct.contains(s)).take(10).collect();
    assert!(
        missing.is_empty(),
        "lost lines, first ones: {missing:?} (got {} events)",
        seqs.len()
    );
    assert_eq!(distinct.len() as u64, n, "unexpected lines");
    // Within a run the sequence goes up by one; a step back is a re-send after a crash. A
    // re-sent run may jump forward only over lines already delivered before it (a re-sent
    // rotated file's tail followed by a copytruncated file whose old lines are gone from disk).
    let mut resets = 0;
    let mut before: HashSet<u64> = HashSet::new();
    for w in seqs.windows(2) {
        before.insert(w[0]);
        if w[1] <= w[0] {
            resets += 1;
        } else if w[1] != w[0] + 1 {
            assert!(
                (w[0] + 1..w[1]).all(|s| before.contains(&s)),
                "gap from {} to {}: out of order",
                w[0],
                w[1]
            );
        }
    }
    assert!(
        resets <= crashes,
        "{resets} re-sent runs for {crashes} crashes"
    );
}

/// Appends lines `from..to` ("%09d" + padding to 100 bytes) to `path`.
fn write_lines(path: &Path, from: u64, to: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for i in from..to {
        buf.push_str(&format!("{i:09} {}\n", "x".repeat(90)));
        if buf.len() > 64 * 1024 {
            f.write_all(buf.as_bytes()).unwrap();
            buf.clear();
        }
    }
    f.write_all(buf.as_bytes()).unwrap();
}

struct Logship {
    config: PathBuf,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
}

impl Logship {
    fn new(dir: &Path, env: Vec<(&'static str, String)>, stream: &str) -> Self {
        let config = dir.join("logship.toml");
        std::fs::write(
            &config,
            format!(
                "instance_id = \"i-test\"\n[logs]\nstate_dir = \"{d}/state\"\npoll_interval = \"50ms\"\n\
                 [[logs.files]]\npath = \"{d}/logs/app*.log\"\nlog_group = \"{GROUP}\"\nlog_stream = \"{stream}\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        Self {
            config,
            env,
            child: None,
        }
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_bake-logship"))
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = c.wait().unwrap();
        assert!(status.success(), "bake-logship exited with {status}");
    }
}

impl Drop for Logship {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the stream holds all of 0..n.
async fn wait_for_all(
    client: &aws_sdk_cloudwatchlogs::Client,
    stream: &str,
    n: u64,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let msgs = stream_messages(client, GROUP, stream).await;
        let distinct: HashSet<u64> = msgs.iter().map(|m| seq_of(m)).collect();
        if (0..n).all(|s| distinct.contains(&s)) || Instant::now() > deadline {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sigkill_restarts_and_both_rotations_lose_nothing() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let dir = tempfile::tempdir().unwrap();
    let stream = "i-test/crash";
    let mut ship = Logship::new(dir.path(), emu.env(), stream);
    let log = dir.path().join("logs/app.log");
    let per = 3_000u64;
    let mut n = 0u64;
    let mut crashes = 0;
    ship.start();

    // 1. Lines while the shipper is SIGKILLed mid-stream, then restarted.
    write_lines(&log, n, n + per);
    n += per;
    tokio::time::sleep(Duration::from_millis(150)).await;
    ship.kill();
    crashes += 1;
    write_lines(&log, n, n + per);
    n += per;
    ship.start();

    // 2. Rename rotation while running: app.log -> app-1.log, a new app.log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(&log, dir.path().join("logs/app-1.log")).unwrap();
    write_lines(&log, n, n + per);
    n += per;

    // 3. Rename rotation while the shipper is dead.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ship.kill();
    crashes += 1;
    std::fs::rename(&log, dir.path().join("logs/app-2.log")).unwrap();
    write_lines(&log, n, n + per);
    n += per;
    ship.start();

    // 4. copytruncate (logrotate's own race: lines written between the copy and the truncate
    // are lost; so rotate when the shipper has caught up, as the copy is not in the glob).
    let msgs = wait_for_all(&aws.logs, stream, n, Duration::from_secs(60)).await;
    assert_complete(&msgs, n, crashes);
    std::fs::copy(&log, dir.path().join("logs/app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    write_lines(&log, n, n + 500); // shorter than before: the truncation is visible by size
    n += 500;

    // 5. One more crash with a rotated file deleted while the shipper is away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ship.kill();
    crashes += 1;
    std::fs::remove_file(dir.path().join("logs/app-1.log")).unwrap();
    write_lines(&log, n, n + per);
    n += per;
    ship.start();
    let msgs = wait_for_all(&aws.logs, stream, n, Duration::from_secs(60)).await;
    ship.stop();
    assert_complete(&msgs, n, crashes);
    let cp = std::fs::read_dir(dir.path().join("state/checkpoints"))
        .unwrap()
        .count();
    assert_eq!(cp, 1, "one checkpoint file for the one source");
}

/// The checkpoint holds offset X; while the shipper is down the file is truncated in place and
/// written longer than X again (same inode). The restarted shipper must see from the file's head
/// fingerprint that X points into other content and read from 0: every line, none skipped, and
/// (after a clean stop) none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_copytruncate_rewritten_longer_while_down_loses_nothing() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let dir = tempfile::tempdir().unwrap();
    let stream = "i-test/rewritten";
    let mut ship = Logship::new(dir.path(), emu.env(), stream);
    let log = dir.path().join("logs/app.log");
    write_lines(&log, 0, 300);
    ship.start();
    let msgs = wait_for_all(&aws.logs, stream, 300, Duration::from_secs(60)).await;
    ship.stop(); // SIGTERM: everything acknowledged is checkpointed
    assert_complete(&msgs, 300, 0);
    let checkpoint = std::fs::read_dir(dir.path().join("state/checkpoints"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    let x = std::fs::metadata(&log).unwrap().len();
    assert!(
        checkpoint.contains(&format!("\"offset\":{x},")) && checkpoint.contains("head_hash"),
        "checkpoint at the end of the file, with its head fingerprint: {checkpoint}"
    );
    let ino = std::fs::metadata(&log).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    write_lines(&log, 300, 800);
    let now = std::fs::metadata(&log).unwrap();
    assert!(now.len() > x, "rewritten past the checkpoint");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&now),
        std::os::unix::fs::MetadataExt::ino(&ino)
    );
    ship.start();
    let msgs = wait_for_all(&aws.logs, stream, 800, Duration::from_secs(60)).await;
    ship.stop();
    assert_complete(&msgs, 800, 0);
}

/// Appends lines `from..to` to `log` at about `rate` lines/s, doing what logrotate's
/// `copytruncate` with `rotate 2` does every `every` lines: `.1` becomes `.2`, the file is copied
/// to `.1` and truncated in place, while the writer keeps its descriptor (O_APPEND). The copy and
/// the truncation happen between two writes, so no line falls into logrotate's own window
/// between them. `progress` is the last line written.
fn write_with_copytruncate(
    log: &Path,
    from: u64,
    to: u64,
    every: u64,
    rate: u64,
    progress: &AtomicU64,
) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let (one, two) = (log.with_extension("log.1"), log.with_extension("log.2"));
    let chunk = (rate / 100).max(1); // 100 chunks a second
    let start = Instant::now();
    let mut rotations = 0;
    let mut i = from;
    while i < to {
        let end = (i + chunk).min(to);
        let mut buf = String::new();
        for j in i..end {
            buf.push_str(&format!("{j:09} {}\n", "x".repeat(90)));
            if (j + 1 - from) % every == 0 {
                f.write_all(buf.as_bytes()).unwrap();
                buf.clear();
                if one.exists() {
                    std::fs::rename(&one, &two).unwrap();
                }
                std::fs::copy(log, &one).unwrap();
                f.set_len(0).unwrap();
                rotations += 1;
            }
        }
        f.write_all(buf.as_bytes()).unwrap();
        progress.store(end, Ordering::SeqCst);
        i = end;
        // Paced by the clock (bounded: the loop ends at `to`).
        let due = start + Duration::from_secs_f64((i - from) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    rotations
}

/// copytruncate under load: 4,000 lines/s, rotated every 2 s. The lines written after the
/// shipper's last read and before the truncation exist only in the copy (`app.log.1`, outside
/// the glob); the shipper finishes the copy from where it stopped, so every line arrives exactly
/// once; across a SIGKILL (and a rotation while it is down) nothing is lost, and lines are sent
/// twice only from the crash window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_copytruncate_under_load_ships_every_line_once() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let dir = tempfile::tempdir().unwrap();
    let stream = "i-test/copytruncate";
    let mut ship = Logship::new(dir.path(), emu.env(), stream);
    let log = dir.path().join("logs/app.log");
    let (rate, every) = (4_000u64, 8_000u64);
    let progress = Arc::new(AtomicU64::new(0));
    ship.start();

    // 1. Three rotations, no crash: exactly once.
    let n = 24_000u64;
    let (l, p) = (log.clone(), progress.clone());
    let rotations =
        tokio::task::spawn_blocking(move || write_with_copytruncate(&l, 0, n, every, rate, &p))
            .await
            .unwrap();
    assert_eq!(rotations, 3);
    let msgs = wait_for_all(&aws.logs, stream, n, Duration::from_secs(60)).await;
    assert_complete(&msgs, n, 0);
    assert_eq!(msgs.len() as u64, n, "every line exactly once");

    // 2. SIGKILL mid-stream, down across a rotation, restarted: no loss.
    let m = n + 24_000;
    let (l, p) = (log.clone(), progress.clone());
    let writer =
        tokio::task::spawn_blocking(move || write_with_copytruncate(&l, n, m, every, rate, &p));
    while progress.load(Ordering::SeqCst) < n + 5_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ship.kill();
    // Down for a rotation (every 2 s).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ship.start();
    assert_eq!(writer.await.unwrap(), 3);
    let msgs = wait_for_all(&aws.logs, stream, m, Duration::from_secs(60)).await;
    ship.stop();
    assert_complete(&msgs, m, 1);
    let dups = msgs.len() as u64 - m;
    eprintln!(
        "copytruncate: {} lines, {dups} sent twice after the SIGKILL",
        m
    );
}

/// A proxy that, while `faulting`, answers every connection with a 503, a ThrottlingException
/// or a TCP reset (in turn); otherwise it forwards to `upstream`. Hand-written: no real stand-in
/// produces these faults on demand.
struct FaultProxy {
    addr: SocketAddr,
    faulting: Arc<AtomicBool>,
    faults: Arc<AtomicU64>,
}

impl FaultProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faulting = Arc::new(AtomicBool::new(true));
        let faults = Arc::new(AtomicU64::new(0));
        let (f, c) = (faulting.clone(), faults.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                if !f.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                        }
                    });
                    continue;
                }
                let n = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = vec![0u8; 4096];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), sock.read(&mut head)).await;
                    match n % 3 {
                        0 => {
                            let _ = sock
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                        }
                        1 => {
                            let body =
                                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                            let resp = format!(
                                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
                                 x-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                        }
                        _ => {
                            // RST instead of FIN: a connection reset mid-request.
                            let _ = sock.set_zero_linger();
                        }
                    }
                });
            }
        });
        Self {
            addr,
            faulting,
            faults,
        }
    }
}

async fn client_for(url: &str) -> aws_sdk_cloudwatchlogs::Client {
    let settings = bake_common::aws::AwsSettings {
        region: Some(bake_e2e::emulator::REGION.into()),
        endpoint_url: Some(url.into()),
        ..Default::default()
    };
    let conf = bake_common::aws::sdk_config(&settings).await;
    let creds =
        SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "test"));
    let conf = conf.into_builder().credentials_provider(creds).build();
    aws_sdk_cloudwatchlogs::Client::new(&conf)
}

fn file_config(dir: &Path, stream: &str, extra: &str) -> LogsSettings {
    settings(&format!(
        "state_dir = \"{d}/state\"\npoll_interval = \"50ms\"\n[[files]]\npath = \"{d}/logs/*.log\"\n\
         log_group = \"{GROUP}\"\nlog_stream = \"{stream}\"\n{extra}",
        d = dir.display()
    ))
}

/// `[logs]` as agent.toml writes it, checked as the agent checks it.
fn settings(text: &str) -> LogsSettings {
    LogsSettings::with_config(&toml::from_str::<LogsConfig>(text).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_throttling_5xx_resets_and_deleted_file_lose_nothing() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let upstream: SocketAddr = emu.url().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let client = client_for(&format!("http://{}", proxy.addr)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let stream = "i-test/faults";
    let cfg = file_config(dir.path(), stream, "");
    let log = dir.path().join("logs/app.log");
    // 3 MB: more than the shipper holds in memory, so most of it is only on disk.
    let n = 30_000;
    write_lines(&log, 0, n);
    let (_app, handle) = Shipper::start(client, &cfg, "i-test").unwrap();
    // Faults for a while; the shipper has the file open and is retrying.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.faults.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.faults.load(Ordering::SeqCst) >= 6,
        "the shipper never retried"
    );
    // Nothing acknowledged: all of the file is in the source's two batches (100-byte lines) or
    // unread on disk, and the oldest line waits since the start.
    let file_len = std::fs::metadata(&log).unwrap().len();
    let source = || handle.stats().sources().into_values().next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waiting = source();
    while waiting.backlog_events * 100 + waiting.unread_bytes < file_len
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting = source();
    }
    let accounted = waiting.backlog_events * 100 + waiting.unread_bytes;
    assert!(
        (file_len..=file_len + 256 * 1024).contains(&accounted),
        "{file_len} bytes, {waiting:?}"
    );
    assert!(waiting.unread_bytes > 1_000_000, "{waiting:?}");
    assert!(
        waiting.lag_ms > 0 && waiting.last_put.is_none(),
        "{waiting:?}"
    );
    assert!(waiting.last_error.is_some(), "{waiting:?}");
    assert_eq!(waiting.stream, stream);
    // Deleted while not fully read: finished from the open descriptor.
    std::fs::remove_file(&log).unwrap();
    proxy.faulting.store(false, Ordering::SeqCst);
    wait_for_all(&aws.logs, stream, n, Duration::from_secs(60)).await;
    // Drained: nothing waits, in batches or on disk.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut drained = source();
    while (drained.backlog_events, drained.unread_bytes) != (0, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drained = source();
    }
    assert_eq!(
        (
            drained.backlog_events,
            drained.backlog_bytes,
            drained.unread_bytes,
            drained.lag_ms
        ),
        (0, 0, 0, 0),
        "{drained:?}"
    );
    assert!(
        drained.events_shipped >= n && drained.last_put.is_some(),
        "{drained:?}"
    );
    let retries = handle.stats().retries.load(Ordering::Relaxed);
    assert!(retries >= 2, "retries counted: {retries}");
    assert!(handle.shutdown(Duration::from_secs(10)).await);
    let msgs = stream_messages(&aws.logs, GROUP, stream).await;
    assert_complete(&msgs, n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_app_stdout_stderr_through_spool() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(&format!(
        "state_dir = \"{}/state\"\npoll_interval = \"50ms\"\n[app]\nlog_group = \"/bake/app\"\n",
        dir.path().display()
    ));
    let (app, handle) = Shipper::start(aws.logs.clone(), &cfg, "i-app").unwrap();
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 2000 ]; do echo \"$i out\"; echo \"$i err\" >&2; i=$((i+1)); done; printf '2000 no newline'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    app.attach(child.stdout.take(), child.stderr.take());
    assert!(child.wait().await.unwrap().success());
    assert!(
        app.drained(Duration::from_secs(10)).await,
        "the pipes reached their end"
    );
    assert!(handle.shutdown(Duration::from_secs(30)).await);
    let out = stream_messages(&aws.logs, "/bake/app", "i-app/stdout").await;
    assert_complete(&out, 2001, 0);
    assert_eq!(out.last().map(String::as_str), Some("2000 no newline"));
    let err = stream_messages(&aws.logs, "/bake/app", "i-app/stderr").await;
    assert_complete(&err, 2000, 0);
    assert!(err.iter().all(|m| m.ends_with(" err")));
    // Shipped segments are deleted, except the one still open for writing.
    let left = std::fs::read_dir(dir.path().join("state/spool/stdout"))
        .unwrap()
        .count();
    assert!(left <= 1, "{left} spool segments left");
    let retention = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/bake/app")
        .send()
        .await
        .unwrap();
    assert_eq!(retention.log_groups()[0].retention_in_days(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiline_timestamps_and_recreated_stream() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let stream = "i-test/multi";
    let cfg = file_config(
        dir.path(),
        stream,
        "multiline_start = '^\\d{4}-\\d{2}-\\d{2}'\ntimestamp_format = \"%Y-%m-%dT%H:%M:%S%.3fZ\"\n",
    );
    let (_app, handle) = Shipper::start(aws.logs.clone(), &cfg, "i-test").unwrap();
    let now = chrono::Utc::now() - chrono::Duration::minutes(10);
    let stamp = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let log = dir.path().join("logs/app.log");
    std::fs::write(
        &log,
        format!("{stamp} first\nTraceback:\n  at a\n  at b\n{stamp} second\n"),
    )
    .unwrap();
    // The second event is sent once no continuation line came for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let msgs = loop {
        let msgs = stream_messages(&aws.logs, GROUP, stream).await;
        if msgs.len() >= 2 || Instant::now() > deadline {
            break msgs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        msgs,
        vec![
            format!("{stamp} first\nTraceback:\n  at a\n  at b"),
            format!("{stamp} second")
        ]
    );
    // The stream vanishes (deleted by hand): the next batch creates it again.
    aws.logs
        .delete_log_stream()
        .log_group_name(GROUP)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{stamp} third\n").as_bytes()))
        .unwrap();
    assert!(handle.shutdown(Duration::from_secs(30)).await);
    let events = aws
        .logs
        .get_log_events()
        .log_group_name(GROUP)
        .log_stream_name(stream)
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let msgs: Vec<_> = events.events().iter().filter_map(|e| e.message()).collect();
    assert_eq!(
        msgs,
        vec![format!("{stamp} third")],
        "stream re-created with the new event"
    );
    assert_eq!(events.events()[0].timestamp(), Some(now.timestamp_millis()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_metrics_reach_cloudwatch_with_dimensions() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let cfg = bake_agent::metrics::MetricsSettings::with_config(
        &toml::from_str("publish_interval = \"1s\"").unwrap(),
    )
    .unwrap()
    .expect("metrics on");
    let restarts = Arc::new(AtomicU64::new(0));
    let m = bake_agent::metrics::start(
        aws.cw.clone(),
        &cfg,
        &bake_agent::identity::Identity {
            instance_id: "i-metrics".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            asg_name: Some("asg-1".into()),
            image_id: None,
            image_test: None,
            migrate: None,
        },
        restarts.clone(),
        None,
        None,
    );
    restarts.fetch_add(2, Ordering::Relaxed);
    let wanted = [
        "CPUUtilization",
        "MemoryUtilization",
        "DiskUtilization",
        "AppRestarts",
    ];
    // Published every second; CPU once two samples were taken. Deadline-based for loaded hosts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let listed = aws
            .cw
            .list_metrics()
            .namespace("Bake/Agent")
            .send()
            .await
            .unwrap();
        let names: HashSet<_> = listed
            .metrics()
            .iter()
            .filter_map(|m| m.metric_name())
            .collect();
        if wanted.iter().all(|w| names.contains(w)) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "metrics missing after 60s: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    m.shutdown().await;
    let cpu_dims: Vec<Vec<String>> = listed
        .metrics()
        .iter()
        .filter(|m| m.metric_name() == Some("CPUUtilization"))
        .map(|m| {
            m.dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect()
        })
        .collect();
    assert!(
        cpu_dims
            .iter()
            .any(|d| d.contains(&"InstanceId=i-metrics".to_owned())
                && d.contains(&"AutoScalingGroupName=asg-1".to_owned())),
        "{cpu_dims:?}"
    );
    assert!(
        cpu_dims
            .iter()
            .any(|d| d == &vec!["AutoScalingGroupName=asg-1".to_owned()]),
        "{cpu_dims:?}"
    );
}
