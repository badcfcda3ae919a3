//! `bake-agent job NAME [--period …] -- CMD…`: CMD runs on one instance of the fleet per period;
//! a failed or abandoned try is retaken (a bounded number of times), and every outcome is a metric.
//!
//! The records of one job and period live under `{lease.prefix}/{asg}/{NAME}/{PERIOD}` in SSM
//! (see [`crate::lease`]), each created at most once (`PutParameter Overwrite=false`):
//! - `…/succeeded`: written by the try that succeeded. A later call of the same period finds it
//!   and runs nothing, so the timer may fire daily and at boot (a freshly launched instance
//!   catches up a missed run) while the task still runs once per period.
//! - `…/attempt-1` … `…/attempt-{lease.max_attempts}`: one per try, an [`Attempt`] (holder,
//!   expiry, state). A call takes the first try that does not exist yet, unless the last existing
//!   one is still held by a live instance (then it runs nothing). A try is over when its holder
//!   recorded `failed` (CMD exited non-zero, could not start, or the call was stopped by SIGTERM),
//!   or when its `expires_at` passed: the holder renews it every third of `lease.ttl` while CMD
//!   runs, so an expired try means the holder was killed or its instance is gone. Two callers
//!   that both find a try over race for the next one, and only one can create it.
//!
//! Outcome metrics (namespace of `[metrics]`, dimensions `AutoScalingGroupName` + `Job`, Count):
//! `JobSucceeded` 1 and `JobFailed` 1 per try that ended; `JobPeriodSucceeded` 1 from every call
//! that finds the period succeeded (the try that succeeded included), the steady signal the
//! fleet stack's "no success for a week" alarm counts (cloudformation/fleet.yaml). Without
//! `[metrics]` (or with `enabled = false`) nothing is published.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};

use crate::daemon;
use crate::exit::{coded, Exit};
use crate::lease::{self, Attempt, AttemptState, Created, Judged, Period};
use crate::metrics::{self, MetricsSettings};

/// How long CMD may take to exit after the call forwarded SIGTERM to it, before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

struct Job<'a> {
    ssm: &'a aws_sdk_ssm::Client,
    cw: &'a aws_sdk_cloudwatch::Client,
    metrics: Option<&'a MetricsSettings>,
    name: &'a str,
    group: String,
    instance_id: String,
    period_id: String,
    base: String,
}

impl Job<'_> {
    fn attempt_path(&self, n: u32) -> String {
        format!("{}/attempt-{n}", self.base)
    }

    fn success_path(&self) -> String {
        format!("{}/succeeded", self.base)
    }

    /// Publishes `metric` = 1; a failure is logged, never fatal (the job's work is done).
    async fn publish(&self, metric: &str) {
        let Some(cfg) = self.metrics else {
            tracing::debug!(metric, "no [metrics]: job outcome not published");
            return;
        };
        let dims = [
            ("AutoScalingGroupName", self.group.as_str()),
            ("Job", self.name),
        ];
        match metrics::publish_count(self.cw, cfg, metric, 1.0, &dims).await {
            Ok(()) => tracing::info!(job = self.name, metric, "job outcome published"),
            Err(e) => {
                tracing::warn!(job = self.name, metric, error = %e, "cannot publish the job outcome")
            }
        }
    }

    /// The period already succeeded: say so, keep the steady success signal going.
    async fn already_succeeded(&self, by: &str) -> ExitCode {
        self.publish("JobPeriodSucceeded").await;
        crate::outln!(
            "job {}: {} already succeeded on {by}; not running here",
            self.name,
            self.period_id
        );
        Exit::Ok.into()
    }
}

/// Finds this call's try of `name` for the current period and runs `cmd` (inherited stdio and
/// environment) if it got one, returning CMD's exit code; when the period already succeeded, a
/// live instance holds the current try, every try is used, or this is an image-test or
/// migration instance (tag `bake:image-test`, `bake:migrate`), it prints why and returns 0.
pub async fn run(
    config: &Path,
    name: &str,
    period: Period,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    lease::check_name(name).map_err(|e| coded(Exit::Config, e))?;
    let boot = daemon::boot(config).await?;
    if let Some((tag, parameter)) = boot.identity.outside_group() {
        // A boot test of an image (`bake test-image`) or a migration instance (`bake release`)
        // is no member of the fleet: it must not take (or use up) the fleet's try of this period.
        let what = if tag == crate::identity::MIGRATE_TAG {
            "migration"
        } else {
            "image-test"
        };
        crate::outln!("job {name}: {what} instance (tag {tag} = {parameter}): not running here");
        return Ok(Exit::Ok.into());
    }
    let group = boot
        .identity
        .asg_name
        .clone()
        .unwrap_or_else(|| "standalone".to_owned());
    let period_id = lease::period_id(period, Utc::now());
    let job = Job {
        ssm: &boot.aws.ssm,
        cw: &boot.aws.cw,
        metrics: boot.settings.metrics.as_ref(),
        name,
        base: lease::job_path(&boot.settings.lease.prefix, &group, name, &period_id),
        group,
        instance_id: boot.identity.instance_id.clone(),
        period_id,
    };
    let aws_err = |e| coded(Exit::Aws, e);
    let success = lease::get(job.ssm, &job.success_path())
        .await
        .map_err(aws_err)?;
    if let Some(v) = success {
        let by = serde_json::from_str::<serde_json::Value>(&v)
            .ok()
            .and_then(|j| j["instance_id"].as_str().map(ToOwned::to_owned))
            .unwrap_or_else(|| "another instance".to_owned());
        return Ok(job.already_succeeded(&by).await);
    }
    let ttl = boot.settings.lease.ttl;
    let max = boot.settings.lease.max_attempts;
    for n in 1..=max {
        let path = job.attempt_path(n);
        let attempt = Attempt::running(&job.instance_id, Utc::now(), ttl);
        match lease::create(job.ssm, &path, &attempt.to_json())
            .await
            .map_err(aws_err)?
        {
            Created::Won => {
                tracing::info!(job = name, lease = %path, attempt = n, "lease won; running the job");
                return run_attempt(&job, &path, attempt, ttl, cmd).await;
            }
            // It exists but could not be read: never guess that a try someone may hold is over.
            Created::Exists(None) => {
                return Err(coded(
                    Exit::Aws,
                    format!("job {name}: {path} exists but cannot be read"),
                ))
            }
            Created::Exists(value) => match Attempt::judge(value.as_deref(), Utc::now()) {
                Judged::Held { holder, until } => {
                    crate::outln!(
                        "job {name}: {holder} holds the lease for {} (try {n} of {max}, alive until {until}); not running here",
                        job.period_id
                    );
                    return Ok(Exit::Ok.into());
                }
                Judged::Succeeded { holder } => return Ok(job.already_succeeded(&holder).await),
                Judged::Over { why } => {
                    tracing::info!(job = name, lease = %path, attempt = n, why, "try is over; taking the next one");
                }
            },
        }
    }
    tracing::warn!(job = name, period = %job.period_id, max_attempts = max,
        "every try of this period is used and none succeeded; the job waits for the next period");
    crate::outln!(
        "job {name}: all {max} tries for {} are used and none succeeded; not running here",
        job.period_id
    );
    Ok(Exit::Ok.into())
}

/// Runs CMD as try `path`: renews it while CMD runs, records how it ended, publishes the outcome.
async fn run_attempt(
    job: &Job<'_>,
    path: &str,
    mut attempt: Attempt,
    ttl: Duration,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    let name = job.name;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| coded(Exit::Internal, e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| coded(Exit::Internal, e))?;
    let mut command = tokio::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // SAFETY: restrict_exec makes raw prctl calls only (async-signal-safe, no allocation).
    unsafe { command.pre_exec(crate::supervisor::privileges::restrict_exec) };
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            finish(job, path, &mut attempt, None).await;
            return Err(coded(
                Exit::Config,
                format!("job {name}: cannot run {}: {e}", cmd[0]),
            ));
        }
    };

    // Renewal: every third of the ttl, so two renewals can fail before the try looks expired.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let renewal = {
        let ssm = job.ssm.clone();
        let path = path.to_owned();
        let mut a = attempt.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(ttl / 3) => {}
                    _ = &mut stop_rx => return,
                }
                a.expires_at = lease::rfc3339(lease::expiry(Utc::now(), ttl));
                // Not inside the select: a renewal that started completes before the final write.
                if let Err(e) = lease::overwrite(&ssm, &path, &a.to_json()).await {
                    tracing::warn!(lease = %path, error = %e, "cannot renew the job lease");
                }
            }
        })
    };

    let exited = tokio::select! {
        s = child.wait() => Some(s),
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
    };
    let status = match exited {
        Some(s) => s.ok(),
        None => stop_child(&mut child).await,
    };
    let _ = stop_tx.send(());
    let _ = renewal.await;

    let code = exit_code_of(status);
    finish(job, path, &mut attempt, Some(code)).await;
    crate::outln!(
        "job {name}: ran on {} for {}, exit code {code}",
        job.instance_id,
        job.period_id
    );
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// The exit code of a command that ended with `status`: its own, 128+N when killed by signal
/// N, 1 when its status is unknown.
pub(crate) fn exit_code_of(status: Option<std::process::ExitStatus>) -> i32 {
    status.map_or(1, |s| {
        match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        }
    })
}

/// SIGTERM to CMD (the call itself was asked to stop), SIGKILL after [`STOP_GRACE`].
pub(crate) async fn stop_child(
    child: &mut tokio::process::Child,
) -> Option<std::process::ExitStatus> {
    tracing::info!("stop signal received; stopping the job's command");
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// Records how try `path` ended (`code` None: CMD did not start), the period's success, and
/// the outcome metrics.
async fn finish(job: &Job<'_>, path: &str, attempt: &mut Attempt, code: Option<i32>) {
    let ok = code == Some(0);
    attempt.state = if ok {
        AttemptState::Succeeded
    } else {
        AttemptState::Failed
    };
    attempt.exit_code = code;
    attempt.finished_at = Some(lease::rfc3339(Utc::now()));
    if let Err(e) = lease::overwrite(job.ssm, path, &attempt.to_json()).await {
        // Others then see the try expire after the ttl and retake it.
        tracing::warn!(lease = %path, error = %e, "cannot record how the job ended");
    }
    if ok {
        let value = serde_json::json!({
            "instance_id": attempt.instance_id,
            "attempt": path,
            "finished_at": attempt.finished_at,
        })
        .to_string();
        if let Err(e) = lease::create(job.ssm, &job.success_path(), &value).await {
            tracing::warn!(error = %e, "cannot record the period's success");
        }
        job.publish("JobSucceeded").await;
        job.publish("JobPeriodSucceeded").await;
    } else {
        job.publish("JobFailed").await;
    }
}
