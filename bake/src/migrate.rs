//! The release's migration, once per release (`[migrate]` in bake.toml): after the image is
//! chosen and accepted and before anything is changed, `bake release` launches one instance of
//! the new image exactly as a boot test does ([`crate::image_test::launch_outside_group`]: the
//! group's launch template at its default version with the image overridden, the group's first
//! subnet, outside the group, so no traffic and no lifecycle hook) with the instance tag
//! [`MIGRATE_TAG`] = `<migrate.parameter_prefix>/<ami>/<UTC time>`. Its agent does not start
//! the app; `bake-migrate.service` runs the image's own migration command once
//! (`bake-agent migrate -- CMD`, under a create-only lease at that path) and writes the
//! command's output in chunks (`…/log/000001`, …) and its end (`…/result`) there.
//!
//! bake polls the path (GetParametersByPath), prints each chunk's lines on stderr as they come
//! (`migrate | …`), and waits for the result, the instance's end or `migrate.timeout`. Whatever
//! happened, the instance is terminated and every parameter under the path deleted. Exit 0 of
//! the command lets the release go on; anything else ends it with exit 16 before any launch
//! template version exists (docs/bake.md, "Migrations").
//!
//! The command is the image's, not bake.toml's: the release's migration ships with the
//! release's image (systemd/bake-migrate.service names it), which is what "from the new image"
//! means; bake.toml only says whether a release migrates and how long it waits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::aws::Aws;
use crate::config::{MigrateSettings, Settings};
use crate::image_test::{call_err, compact, now_rfc3339, ImageTestError};
use crate::targets::Targets;

/// The instance tag naming the SSM path the migration instance writes to.
pub const MIGRATE_TAG: &str = "bake:migrate";
/// The prefix of the migration's output lines on stderr.
pub const LINE_PREFIX: &str = "migrate | ";
/// Longest poll interval while waiting for the migration (its output is streamed).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long bake waits, after terminating an instance that gave no result, for it to be
/// `terminated` before deleting its parameters (an agent being stopped may still write its
/// result).
pub const TERMINATED_WAIT: Duration = Duration::from_secs(60);

/// Errors of a migration run, besides its verdict (a failed migration is a report, not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Interrupted (SIGINT, SIGTERM, SIGHUP): the instance was terminated, nothing released.
    #[error(
        "interrupted during the migration: instance {instance_id} terminated, nothing released"
    )]
    Interrupted {
        /// The migration instance.
        instance_id: String,
    },
}

/// What the agent writes to `…/result` (`bake-agent migrate`, docs/agent.md).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AgentResult {
    /// 1.
    pub schema_version: u32,
    /// The instance that ran it.
    pub instance_id: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Its exit code.
    pub exit_code: i32,
    /// Why it did not end on its own, if so.
    pub error: Option<String>,
    /// Log chunks written.
    pub log_chunks: u32,
    /// Output lines the agent did not write (beyond its limit).
    pub dropped_lines: u64,
}

/// The migration of a release, as printed (the release document's `migrate`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MigrationReport {
    /// The image it ran from.
    pub image_id: String,
    /// The command, as the agent reported it (empty without a result).
    pub command: Vec<String>,
    /// Its exit code (`None`: no result).
    pub exit_code: Option<i32>,
    /// Why it failed when the exit code does not say it (no result in time, the instance
    /// stopped, a result that cannot be read, the agent's own error).
    pub reason: Option<String>,
    /// The migration instance.
    pub instance: String,
    /// The SSM path it wrote to (deleted afterwards).
    pub parameter: String,
    /// The launch template version it was launched with.
    pub launch_template_version: i64,
    /// Seconds from launch to result.
    pub duration_s: f64,
    /// The command's output lines, in order.
    pub log_lines: Vec<String>,
    /// Lines the agent did not write (beyond its limit).
    pub dropped_lines: u64,
}

impl MigrationReport {
    /// Whether the migration ran and exited 0.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.reason.is_none()
    }

    /// Why it failed, in a few words: "exit code 3", or the reason.
    #[must_use]
    pub fn why(&self) -> String {
        match (&self.reason, self.exit_code) {
            (Some(r), Some(c)) => format!("exit code {c}: {r}"),
            (Some(r), None) => r.clone(),
            (None, Some(c)) => format!("exit code {c}"),
            (None, None) => "no result".to_owned(),
        }
    }
}

/// Prints chunks in order as they arrive: whole lines only, a line cut between two chunks
/// once both are there.
#[derive(Debug, Default)]
pub struct LogStream {
    /// Chunks printed.
    pub printed: u32,
    partial: String,
    /// Every line printed.
    pub lines: Vec<String>,
}

impl LogStream {
    /// Takes the chunks of `params` (name → value) that follow the ones printed, in order;
    /// returns the new whole lines.
    pub fn take(&mut self, path: &str, params: &BTreeMap<String, String>) -> Vec<String> {
        let mut new = Vec::new();
        while let Some(text) = params.get(&chunk_name(path, self.printed + 1)) {
            self.printed += 1;
            self.partial.push_str(text);
            while let Some(n) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=n).collect();
                new.push(line.trim_end_matches('\n').to_owned());
            }
        }
        self.lines.extend(new.iter().cloned());
        new
    }

    /// The rest of a line cut off at the end of the log.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.partial);
        self.lines.push(line.clone());
        Some(line)
    }
}

/// The name of log chunk `n` (1-based) under `path`, as the agent writes it.
#[must_use]
pub fn chunk_name(path: &str, n: u32) -> String {
    format!("{path}/log/{n:06}")
}

fn print_lines(lines: &[String]) {
    for l in lines {
        eprintln!("{LINE_PREFIX}{l}");
    }
}

/// Every parameter under `path` (recursive, decrypted): name → value.
async fn parameters(aws: &Aws, path: &str) -> Result<BTreeMap<String, String>, ImageTestError> {
    let mut out = BTreeMap::new();
    let mut pages = aws
        .ssm
        .get_parameters_by_path()
        .path(path)
        .recursive(true)
        .with_decryption(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(call_err("GetParametersByPath", path))?;
        for p in page.parameters() {
            if let (Some(n), Some(v)) = (p.name(), p.value()) {
                out.insert(n.to_owned(), v.to_owned());
            }
        }
    }
    Ok(out)
}

/// Runs the release's migration on one instance of `ami` outside group `t` and waits for it:
/// see the module's comment. A migration that failed is a report whose
/// [`MigrationReport::succeeded`] is false, not an error.
///
/// # Errors
/// An AWS call failed (after the launch: the instance is terminated first, as far as AWS lets
/// it); interrupted.
pub async fn migrate(
    aws: &Aws,
    settings: &Settings,
    m: &MigrateSettings,
    t: &Targets,
    ami: &str,
) -> anyhow::Result<MigrationReport> {
    let path = format!("{}/{ami}/{}", m.parameter_prefix, compact(&now_rfc3339()));
    let t0 = Instant::now();
    let launched = crate::image_test::launch_outside_group(
        aws,
        t,
        ami,
        (MIGRATE_TAG, &path),
        &format!("bake migration of {ami}"),
    )
    .await?;
    let instance_id = launched.instance_id.clone();
    tracing::info!(
        "launched migration instance {instance_id} of {ami} (launch template {} version {}, subnet {}, outside '{}'); waiting up to {} for the migration at {path}",
        t.launch_template_id,
        launched.launch_template_version,
        launched.subnet_id.as_deref().unwrap_or("EC2's default"),
        t.auto_scaling_group,
        humantime::format_duration(m.timeout)
    );
    let mut stream = LogStream::default();
    let waited = wait(aws, settings, m, &instance_id, &path, &mut stream).await;
    if let Some(rest) = stream.finish() {
        print_lines(&[rest]);
    }
    // Whatever happened: the instance and its parameters go.
    let cleaned = clean_up(aws, &instance_id, &path, !matches!(waited, Ok(Ok(_)))).await;
    let waited = match waited {
        Ok(w) => w,
        Err(e) => {
            if let Err(c) = cleaned {
                tracing::error!("{c}");
            }
            return Err(e);
        }
    };
    cleaned?;
    let mut report = MigrationReport {
        image_id: ami.to_owned(),
        instance: instance_id.clone(),
        parameter: path,
        launch_template_version: launched.launch_template_version,
        duration_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        log_lines: std::mem::take(&mut stream.lines),
        ..MigrationReport::default()
    };
    match waited {
        Ok(r) if r.schema_version != 1 => {
            report.reason = Some(format!(
                "result of schema_version {}, this bake reads 1",
                r.schema_version
            ));
        }
        Ok(r) if r.instance_id != instance_id => {
            report.reason = Some(format!(
                "the result is from {}, not from the migration instance {instance_id}",
                r.instance_id
            ));
        }
        Ok(r) => {
            report.command = r.command;
            report.exit_code = Some(r.exit_code);
            report.reason = r.error;
            report.dropped_lines = r.dropped_lines;
        }
        Err(why) => report.reason = Some(why),
    }
    if report.dropped_lines > 0 {
        tracing::warn!(
            "{} lines of the migration's output were not kept (the agent's limit)",
            report.dropped_lines
        );
    }
    if report.succeeded() {
        tracing::info!(
            "migration of {ami} exited 0 on {instance_id} in {:.1}s",
            report.duration_s
        );
    }
    Ok(report)
}

/// Polls `path` (and the instance's state) until the result is there, the instance stopped, or
/// the timeout, printing the log as it comes: the result, or why there is none.
async fn wait(
    aws: &Aws,
    settings: &Settings,
    m: &MigrateSettings,
    instance_id: &str,
    path: &str,
    stream: &mut LogStream,
) -> anyhow::Result<Result<AgentResult, String>> {
    let deadline = Instant::now() + m.timeout;
    let mut interval = settings.refresh.poll_interval.min(MAX_POLL_INTERVAL);
    let mut last_state = String::new();
    let result_name = format!("{path}/result");
    loop {
        if crate::signals::received() > 0 {
            return Err(MigrateError::Interrupted {
                instance_id: instance_id.to_owned(),
            }
            .into());
        }
        let params = parameters(aws, path).await?;
        print_lines(&stream.take(path, &params));
        if let Some(text) = params.get(&result_name) {
            return Ok(match serde_json::from_str::<AgentResult>(text) {
                Ok(r) => {
                    if stream.printed < r.log_chunks {
                        // Listed before the result was: read once more.
                        let again = parameters(aws, path).await?;
                        print_lines(&stream.take(path, &again));
                    }
                    if stream.printed < r.log_chunks {
                        tracing::warn!(
                            "the migration wrote {} log chunks, {} could be read",
                            r.log_chunks,
                            stream.printed
                        );
                    }
                    Ok(r)
                }
                Err(e) => Err(format!("the result cannot be read: {e}")),
            });
        }
        let (state, why) = crate::image_test::instance_state(aws, instance_id).await?;
        if state != last_state {
            tracing::info!("migration instance {instance_id}: {state}");
            last_state.clone_from(&state);
        }
        if crate::image_test::is_gone(&state) {
            return Ok(Err(format!(
                "the migration instance went {state} before the migration reported a result{}",
                why.map(|m| format!(" ({m})")).unwrap_or_default()
            )));
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!(
                "no result within {} (migrate.timeout)",
                humantime::format_duration(m.timeout)
            )));
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = (interval * 3 / 2).min(MAX_POLL_INTERVAL);
    }
}

/// Terminates the migration instance and deletes every parameter under `path`. `no_result`:
/// the agent may still be writing (it is stopped by the termination): wait, at most
/// [`TERMINATED_WAIT`], for the instance to be `terminated` first.
async fn clean_up(
    aws: &Aws,
    instance_id: &str,
    path: &str,
    no_result: bool,
) -> Result<(), ImageTestError> {
    crate::image_test::terminate(aws, instance_id).await?;
    tracing::info!("migration instance {instance_id} terminated");
    if no_result {
        let until = Instant::now() + TERMINATED_WAIT;
        while Instant::now() < until {
            match crate::image_test::instance_state(aws, instance_id).await {
                Ok((s, _)) if s == "terminated" || s.is_empty() => break,
                Ok(_) => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(e) => {
                    tracing::warn!("{e}");
                    break;
                }
            }
        }
    }
    let names: Vec<String> = parameters(aws, path).await?.into_keys().collect();
    // DeleteParameters takes at most 10 names.
    for batch in names.chunks(10) {
        let out = aws
            .ssm
            .delete_parameters()
            .set_names(Some(batch.to_vec()))
            .send()
            .await
            .map_err(call_err("DeleteParameters", path))?;
        if !out.invalid_parameters().is_empty() {
            tracing::warn!(
                "DeleteParameters under {path}: not deleted: {}",
                out.invalid_parameters().join(", ")
            );
        }
    }
    tracing::debug!(count = names.len(), %path, "migration parameters deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_log_stream_prints_chunks_in_order_and_whole_lines() {
        let path = "/p/ami-1/t";
        let mut s = LogStream::default();
        let mut params = BTreeMap::new();
        // Chunk 2 before chunk 1: nothing yet.
        params.insert(chunk_name(path, 2), "cut line\nthree\n".to_owned());
        assert!(s.take(path, &params).is_empty());
        params.insert(chunk_name(path, 1), "one\ntwo and a ".to_owned());
        assert_eq!(
            s.take(path, &params),
            vec!["one", "two and a cut line", "three"]
        );
        assert_eq!(s.printed, 2);
        // Taken once only.
        assert!(s.take(path, &params).is_empty());
        params.insert(chunk_name(path, 3), "no newline".to_owned());
        assert!(s.take(path, &params).is_empty());
        assert_eq!(s.finish().as_deref(), Some("no newline"));
        assert_eq!(s.lines.len(), 4);
        assert!(s.finish().is_none());
    }

    #[test]
    fn test_why_and_succeeded() {
        let ok = MigrationReport {
            exit_code: Some(0),
            ..MigrationReport::default()
        };
        assert!(ok.succeeded());
        let failed = MigrationReport {
            exit_code: Some(3),
            ..MigrationReport::default()
        };
        assert!(!failed.succeeded());
        assert_eq!(failed.why(), "exit code 3");
        let silent = MigrationReport {
            reason: Some("no result within 2s (migrate.timeout)".into()),
            ..MigrationReport::default()
        };
        assert!(!silent.succeeded());
        assert!(silent.why().contains("no result"));
    }

    #[test]
    fn test_the_agents_result_parses() {
        let text = r#"{"schema_version":1,"instance_id":"i-1","image_id":"ami-1",
            "command":["/opt/app/bin/migrate"],"exit_code":3,"error":null,
            "started_at":"2026-12-03T07:15:00Z","finished_at":"2026-12-03T07:15:09Z",
            "log_chunks":2,"dropped_lines":0}"#;
        let r: AgentResult = serde_json::from_str(text).unwrap();
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.log_chunks, 2);
    }
}
