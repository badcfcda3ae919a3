//! `bake-agent migrate -- CMD…`: on a migration instance (instance tag `bake:migrate`, launched
//! by `bake release` from the release's new image, outside the group, before anything of the
//! release changes), runs the release's migration CMD once and reports it to bake through SSM.
//! `bake-migrate.service` runs it at every boot of every instance of the image; without the tag
//! it prints that there is nothing to run and exits 0 at once.
//!
//! Under the tag's value P (`<migrate.parameter_prefix>/<ami>/<time>` of bake.toml):
//! - `P/lease`: a create-only [`lease::Holder`] ([`lease::create`], the fleet lease of `bake-agent
//!   job`): the call that creates it runs CMD; any later call with the same tag (the unit again
//!   after a reboot, a second start by hand) finds it and runs nothing. A migration is never
//!   run twice by the agent: when a run was cut short, bake's timeout says so and a new release
//!   (a new P) runs it again.
//! - `P/log/000001`, `P/log/000002`, …: CMD's output (stdout and stderr lines, in the order they
//!   came), in chunks of at most [`LOG_CHUNK_BYTES`], each written once, in order, at least every
//!   [`LOG_FLUSH_INTERVAL`] while lines come. bake prints them as they appear. SecureString: the
//!   output is the app's own and may say more than it should; it is shown to the operator and
//!   deleted by bake with the rest of P.
//! - `P/result`: the [`MigrationResult`], written last.
//!
//! Why SSM and not the CloudWatch Logs stream the agent ships: bake already launches, polls and
//! cleans up such an instance through one SSM path (the boot test, `bake:image-test`), so the
//! release role and the instance role need one more path each and nothing else; log shipping is
//! optional (`[logs]`), its streams outlive the release by their retention, and bake would need
//! `logs:GetLogEvents` and a second clean-up. The cost is SSM's limits: a value of at most 4 KiB
//! (hence chunks) and a number of standard parameters per region (hence [`MAX_LOG_CHUNKS`]; lines
//! beyond are counted in the result, not written). The agent writes CMD's output and nothing
//! else: no value of its environment (the secrets it got through `/run/bake/app.env`) is added.
//!
//! Exit code: CMD's own (128+N when killed by signal N, 127 when it could not be started); 0
//! without the tag or when the lease exists; 3 when the lease or the result cannot be written.

use std::io::Write as _;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::Utc;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{coded, Exit};
use crate::identity::{self, MIGRATE_TAG};
use crate::imds::Imds;
use crate::lease::{self, Created, Holder};

/// Largest log chunk, in bytes of UTF-8 (SSM's limit of a standard parameter's value is 4 KB).
pub const LOG_CHUNK_BYTES: usize = 4096;
/// Most log chunks of one migration (4 MiB of output); the lines beyond are counted in the
/// result's `dropped_lines`. SSM allows 10,000 standard parameters per account and region.
pub const MAX_LOG_CHUNKS: u32 = 1000;
/// How long a line may wait in a partly filled chunk before the chunk is written.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long, after CMD exited, its output pipes may take to reach their end (a process that
/// inherited them may outlive it).
pub const PIPES_DEADLINE: Duration = Duration::from_secs(2);

/// `P/result`: how the migration ended (docs/agent.md, `migrate`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationResult {
    /// 1.
    pub schema_version: u32,
    /// The instance that ran it.
    pub instance_id: String,
    /// The image it ran from, as the metadata said.
    pub image_id: Option<String>,
    /// CMD and its arguments.
    pub command: Vec<String>,
    /// CMD's exit code (128+N after signal N, 127: it could not be started).
    pub exit_code: i32,
    /// Why CMD did not run to its own end (could not be started, stopped by a signal).
    pub error: Option<String>,
    /// When CMD started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Log chunks written (`P/log/000001` … ).
    pub log_chunks: u32,
    /// Output lines not written: beyond [`MAX_LOG_CHUNKS`], or whose chunk could not be put.
    pub dropped_lines: u64,
}

/// The name of log chunk `n` (1-based) under `path`.
#[must_use]
pub fn chunk_name(path: &str, n: u32) -> String {
    format!("{path}/log/{n:06}")
}

/// Splits `line` (with its newline) into pieces of at most `max` bytes, at char boundaries.
#[must_use]
pub fn split_line(line: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = line;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Fills log chunks and writes each once, in order.
struct LogWriter<'a> {
    ssm: &'a aws_sdk_ssm::Client,
    path: &'a str,
    buf: String,
    lines: u64,
    written: u32,
    dropped_lines: u64,
}

impl LogWriter<'_> {
    async fn push(&mut self, line: &str) {
        for piece in split_line(line, LOG_CHUNK_BYTES) {
            if self.buf.len() + piece.len() > LOG_CHUNK_BYTES {
                self.flush().await;
            }
            self.buf.push_str(piece);
        }
        self.lines += 1;
    }

    /// Writes the chunk filled so far (nothing when empty).
    async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        let text = std::mem::take(&mut self.buf);
        if self.written >= MAX_LOG_CHUNKS {
            self.dropped_lines += lines;
            return;
        }
        let name = chunk_name(self.path, self.written + 1);
        let put = self
            .ssm
            .put_parameter()
            .name(&name)
            .value(text)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await;
        match put {
            // The next chunk takes the next number only once this one is there: bake never
            // sees a gap.
            Ok(_) => self.written += 1,
            Err(e) => {
                tracing::warn!(chunk = %name, error = %DisplayErrorContext(&e), "cannot write a migration log chunk; its lines are dropped");
                self.dropped_lines += lines;
            }
        }
    }
}

/// Runs `cmd` (stdin /dev/null, stdout and stderr read line by line: each line goes to this
/// process's own stdout or stderr, the journal, and to the log) until it exits or this process
/// gets SIGTERM/SIGINT (CMD is stopped: SIGTERM, SIGKILL after [`crate::job::STOP_GRACE`]).
/// (exit code, why it did not end on its own).
async fn run_command(cmd: &[String], log: &mut LogWriter<'_>) -> (i32, Option<String>) {
    let (Ok(mut sigterm), Ok(mut sigint)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return (1, Some("cannot listen for SIGTERM/SIGINT".to_owned()));
    };
    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: restrict_exec makes raw prctl calls only (async-signal-safe, no allocation).
    unsafe { command.pre_exec(crate::supervisor::privileges::restrict_exec) };
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot run {}: {e}", cmd[0]);
            log.push(&format!("bake-agent: {why}\n")).await;
            return (127, Some(why));
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
    fn reader(
        pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        is_stderr: bool,
        tx: tokio::sync::mpsc::UnboundedSender<(bool, String)>,
    ) {
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let mut text = String::from_utf8_lossy(&line).into_owned();
                        if !text.ends_with('\n') {
                            text.push('\n');
                        }
                        if tx.send((is_stderr, text)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        reader(out, false, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        reader(err, true, tx.clone());
    }
    drop(tx);
    let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
    let mut status = None;
    let mut stopped = None;
    let mut pipes_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some((is_stderr, text)) => {
                    // The journal gets each line as it came (a closed stream is no reason to
                    // stop the migration).
                    let _ = if is_stderr {
                        std::io::stderr().write_all(text.as_bytes())
                    } else {
                        std::io::stdout().write_all(text.as_bytes())
                    };
                    log.push(&text).await;
                }
                None => break,
            },
            _ = tick.tick() => log.flush().await,
            s = child.wait(), if status.is_none() => {
                status = Some(s.ok());
                pipes_deadline = Some(tokio::time::Instant::now() + PIPES_DEADLINE);
            }
            () = async {
                match pipes_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::warn!("the migration's output pipes are still open after it exited (a process inherited them); writing what came");
                break;
            }
            _ = sigterm.recv(), if status.is_none() => {
                stopped = Some("stopped by SIGTERM".to_owned());
                status = Some(crate::job::stop_child(&mut child).await);
                pipes_deadline = Some(tokio::time::Instant::now() + PIPES_DEADLINE);
            }
            _ = sigint.recv(), if status.is_none() => {
                stopped = Some("stopped by SIGINT".to_owned());
                status = Some(crate::job::stop_child(&mut child).await);
                pipes_deadline = Some(tokio::time::Instant::now() + PIPES_DEADLINE);
            }
        }
    }
    let status = match status {
        Some(s) => s,
        // The pipes closed first: CMD is exiting.
        None => child.wait().await.ok(),
    };
    (crate::job::exit_code_of(status), stopped)
}

/// Runs the migration `cmd` once on a migration instance: see the module's comment.
pub async fn run(config: &Path, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let imds = Imds::from_env();
    let identity = identity::from_imds(&imds)
        .await
        .map_err(|e| coded(Exit::Imds, e))?;
    // bake-migrate.service runs this at every boot of every instance: elsewhere it must cost
    // nothing.
    let Some(path) = identity.migrate.clone() else {
        crate::outln!("not a migration instance (no {MIGRATE_TAG} tag): nothing to run");
        return Ok(Exit::Ok.into());
    };
    let settings = crate::config::load_on_instance(config, &imds).await?;
    let mut aws_settings = settings.aws.clone();
    if aws_settings.region.is_none() {
        aws_settings.region = Some(identity.region.clone());
    }
    let aws = crate::aws::Aws::load(&aws_settings).await;
    let ssm = &aws.ssm;
    let lease_path = format!("{path}/lease");
    let holder = Holder::now(&identity.instance_id);
    match lease::create(ssm, &lease_path, &holder.to_json())
        .await
        .map_err(|e| coded(Exit::Aws, e))?
    {
        Created::Won => {
            tracing::info!(lease = %lease_path, command = ?cmd, "migration lease won; running the migration");
        }
        Created::Exists(value) => {
            let by = value
                .and_then(|v| serde_json::from_str::<Holder>(&v).ok())
                .map_or_else(|| "another run".to_owned(), |h| h.instance_id);
            crate::outln!(
                "migration {path}: already started by {by} (lease {lease_path}); not running again"
            );
            return Ok(Exit::Ok.into());
        }
    }
    let started_at = lease::rfc3339(Utc::now());
    let mut log = LogWriter {
        ssm,
        path: &path,
        buf: String::new(),
        lines: 0,
        written: 0,
        dropped_lines: 0,
    };
    let (exit_code, error) = run_command(cmd, &mut log).await;
    log.flush().await;
    let result = MigrationResult {
        schema_version: 1,
        instance_id: identity.instance_id.clone(),
        image_id: identity.image_id.clone(),
        command: cmd.to_vec(),
        exit_code,
        error,
        started_at,
        finished_at: lease::rfc3339(Utc::now()),
        log_chunks: log.written,
        dropped_lines: log.dropped_lines,
    };
    let result_path = format!("{path}/result");
    let doc = serde_json::to_string(&result).expect("plain data serializes");
    lease::overwrite(ssm, &result_path, &doc)
        .await
        .map_err(|e| coded(Exit::Aws, e))?;
    crate::outln!(
        "migration {path}: {} exited {exit_code} on {} ({} log chunks{})",
        cmd[0],
        identity.instance_id,
        result.log_chunks,
        if result.dropped_lines > 0 {
            format!(", {} lines dropped", result.dropped_lines)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::from(u8::try_from(exit_code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_line_cuts_at_char_boundaries_within_the_limit() {
        assert_eq!(split_line("abc\n", 10), vec!["abc\n"]);
        assert_eq!(split_line("abcdef\n", 3), vec!["abc", "def", "\n"]);
        // 'é' is two bytes: never cut in half.
        let pieces = split_line("aéé\n", 2);
        assert_eq!(pieces, vec!["a", "é", "é", "\n"]);
        assert!(split_line("", 4).is_empty());
        let long = "x".repeat(LOG_CHUNK_BYTES * 2 + 1);
        let p = split_line(&long, LOG_CHUNK_BYTES);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|s| s.len() <= LOG_CHUNK_BYTES));
    }

    #[test]
    fn test_chunk_names_sort_in_write_order() {
        assert_eq!(chunk_name("/p", 1), "/p/log/000001");
        assert!(chunk_name("/p", 9) < chunk_name("/p", 10));
        assert!(chunk_name("/p", MAX_LOG_CHUNKS).len() == "/p/log/001000".len());
    }

    #[test]
    fn test_result_document_round_trips() {
        let r = MigrationResult {
            schema_version: 1,
            instance_id: "i-1".into(),
            image_id: Some("ami-1".into()),
            command: vec!["/opt/app/bin/migrate".into()],
            exit_code: 3,
            error: None,
            started_at: "2026-12-03T07:15:00Z".into(),
            finished_at: "2026-12-03T07:15:09Z".into(),
            log_chunks: 2,
            dropped_lines: 0,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.len() < 4096);
        assert_eq!(serde_json::from_str::<MigrationResult>(&text).unwrap(), r);
    }
}
