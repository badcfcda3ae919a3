//! `bake-agent run`: the boot sequence and the life of the agent, each step logged with its
//! duration (DESIGN.md, `bake-agent`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Probe;
use crate::config::Settings;
use crate::exit::{coded, Exit};
use crate::identity::{self, Identity};
use crate::imds::Imds;
use crate::lifecycle::{self, Target, Termination};
use crate::logs::{self, AppOutput, ShipperHandle};
use crate::memory;
use crate::metrics::{self, MetricsHandle};
use crate::mount;
use crate::notify;
use crate::readiness;
use crate::rotation;
use crate::secrets::{self, SecretEnv};
use crate::status::{self, Readiness, Status};
use crate::supervisor::socket::{self, ListenSocket};
use crate::supervisor::{self, process};

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Identity and config, as every command that needs the instance loads them.
pub struct Boot {
    /// The instance.
    pub identity: Identity,
    /// Validated settings.
    pub settings: Settings,
    /// AWS clients.
    pub aws: crate::aws::Aws,
    /// The metadata client.
    pub imds: Imds,
}

impl std::fmt::Debug for Boot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boot")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Step 1 and the config: IMDS identity, userdata overlay, AWS clients, group name.
pub async fn boot(config: &Path) -> anyhow::Result<Boot> {
    let t = Instant::now();
    let imds = Imds::from_env();
    let mut identity = identity::from_imds(&imds)
        .await
        .map_err(|e| coded(Exit::Imds, e))?;
    let settings = crate::config::load_on_instance(config, &imds).await?;
    let mut aws_settings = settings.aws.clone();
    if aws_settings.region.is_none() {
        aws_settings.region = Some(identity.region.clone());
    }
    let aws = crate::aws::Aws::load(&aws_settings).await;
    identity::resolve_group(&mut identity, &settings.identity, &imds, &aws.asg)
        .await
        .map_err(|e| coded(Exit::Aws, e))?;
    tracing::info!(step = "identity", instance_id = %identity.instance_id, region = %identity.region,
        az = %identity.availability_zone, asg = ?identity.asg_name, image_test = ?identity.image_test,
        migrate = ?identity.migrate, elapsed_ms = ms(t), "boot step done");
    Ok(Boot {
        identity,
        settings,
        aws,
        imds,
    })
}

/// The rest of `run` on a migration instance (tag `bake:migrate`, launched by `bake release`
/// outside the group): the app is not started. The new release's app may need the very
/// migration this instance is there to run, and it would serve nobody (no group, no load
/// balancer). Its environment was written in step 2, for bake-migrate.service (which starts
/// once this unit is up): the agent reports ready, keeps the watchdog fed and waits for SIGTERM.
async fn migration_instance(path: &str) -> anyhow::Result<Exit> {
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tracing::info!(tag = identity::MIGRATE_TAG, %path,
        "migration instance: in no Auto Scaling group, app not started; bake-migrate.service runs the migration");
    notify::notify("READY=1");
    notify::notify(
        "STATUS=migration instance: app not started (bake-migrate.service runs the migration)",
    );
    if let Some(interval) = notify::watchdog_ping_interval() {
        tokio::spawn(notify::watchdog(interval));
    }
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    notify::notify("STOPPING=1");
    tracing::info!("signal received; the migration instance's agent exits");
    Ok(Exit::Ok)
}

/// How long, after the app stopped, its stdout/stderr pipes may take to reach their end (a
/// process that inherited them may outlive the app's process group).
pub const PIPES_DEADLINE: Duration = Duration::from_secs(2);
/// How long the last logs may take to reach CloudWatch when the agent stops or drains. Whatever
/// is not acknowledged by then stays in the spool and checkpoints for the next agent run.
pub const LOG_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Starts log shipping when `[logs]` is configured: the app's output then goes to the spool.
/// Without `[logs]`, or when the state directory cannot be used, the app's lines go to the
/// agent's stderr (journald) instead: the app runs either way.
fn start_logs(
    settings: &Settings,
    aws: &crate::aws::Aws,
    instance_id: &str,
) -> (AppOutput, Option<ShipperHandle>) {
    let Some(cfg) = &settings.logs else {
        return (AppOutput::passthrough(), None);
    };
    let t = Instant::now();
    match logs::Shipper::start(aws.logs.clone(), cfg, instance_id) {
        Ok((output, shipper)) => {
            tracing::info!(step = "logs", elapsed_ms = ms(t), "boot step done");
            (output, Some(shipper))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start log shipping; the app's output goes to the agent's stderr");
            (AppOutput::passthrough(), None)
        }
    }
}

/// Ships the app's last lines and everything else read so far, within the deadlines, and stops
/// log shipping. Called once the app has stopped: before the terminate hook is completed and
/// before the agent exits on SIGTERM.
async fn flush_logs(output: &AppOutput, shipper: Option<ShipperHandle>) {
    if !output.drained(PIPES_DEADLINE).await {
        tracing::warn!(
            deadline_ms = PIPES_DEADLINE.as_millis(),
            "the app's output pipes are still open (a process inherited them); shipping what came"
        );
    }
    if let Some(shipper) = shipper {
        let t = Instant::now();
        let done = shipper.shutdown(LOG_FLUSH_DEADLINE).await;
        tracing::info!(complete = done, elapsed_ms = ms(t), "log shipping stopped");
    }
}

/// Runs the daemon until SIGTERM/SIGINT (exit 0 after a graceful stop) or termination (drain,
/// complete the terminate hook, exit 0).
pub async fn run(config: &Path, status_file: &Path) -> anyhow::Result<Exit> {
    let boot_start = Instant::now();
    let Boot {
        identity,
        settings,
        aws,
        imds,
    } = boot(config).await?;
    if let Some(parameter) = &identity.image_test {
        // `bake test-image`: launched from the fleet's template, outside its group and load
        // balancer. Without a group there is no lifecycle hook to complete, no instance health
        // to set and no rollout to start; bake-image-test.service reports to the parameter.
        tracing::info!(tag = identity::IMAGE_TEST_TAG, %parameter,
            "image-test instance: in no Auto Scaling group (lifecycle hooks, mark-unhealthy and secret rollouts off); bake-image-test.service reports to the parameter");
    }
    let app = settings
        .app_for_run()
        .map_err(|e| coded(Exit::Config, e))?
        .clone();
    let run_as = Some(
        process::RunAs::resolve(&app.user, app.group.as_deref())
            .map_err(|e| coded(Exit::Config, e))?,
    );
    let target = identity.asg_name.as_ref().map(|g| Target {
        asg: aws.asg.clone(),
        group: g.clone(),
        instance_id: identity.instance_id.clone(),
    });

    // 2. Secrets: fail closed.
    let mut secret_env = SecretEnv::default();
    if let Some(s) = &settings.secrets {
        let t = Instant::now();
        secret_env = secrets::fetch(&aws.ssm, &s.path)
            .await
            .and_then(|e| secrets::refuse_overrides(&e, &app.env, &s.allow_override).map(|()| e))
            .map_err(|e| coded(Exit::Secrets, e))?;
        if let Some(file) = &s.env_file {
            let owner = run_as.as_ref().map(|r| (r.uid.as_raw(), r.gid.as_raw()));
            secrets::write_env_file(file, &secret_env, owner)
                .map_err(|e| coded(Exit::Secrets, e))?;
        }
        tracing::info!(step = "secrets", count = secret_env.vars.len(), path = %s.path, elapsed_ms = ms(t), "boot step done");
    }

    // 3. Mounts: made by `bake-agent mount` before the daemon starts (the unit's ExecStartPre=+,
    // outside this sandbox); here only checked.
    if let Some(efs) = &settings.efs {
        let t = Instant::now();
        let m = mount::check_mounted(efs).map_err(|e| coded(Exit::Mount, e))?;
        tracing::info!(step = "mount", target = %efs.mount_point.display(), fstype = %m.fstype, elapsed_ms = ms(t), "boot step done");
    }

    if let Some(path) = &identity.migrate {
        return migration_instance(path).await;
    }

    // 4. Supervise.
    let t = Instant::now();
    // Socket activation: bound once, before the first start, and kept across every restart.
    let listen = match app.listen {
        Some(addr) => {
            let socket = ListenSocket::bind(addr).map_err(|e| coded(Exit::App, e))?;
            tracing::info!(addr = %socket.addr(), backlog = socket::LISTEN_BACKLOG, "app.listen: socket bound; the app gets it as fd 3 (LISTEN_FDS)");
            if let Some(Probe::Tcp { addr }) = settings.readiness.as_ref().map(|r| &r.probe) {
                tracing::warn!(probe = %addr, "readiness.probe is tcp with app.listen: a connect succeeds as soon as the agent's socket is bound, before the app accepts; an http probe shows that the app answers");
            }
            Some(Arc::new(socket))
        }
        None => None,
    };
    let spec = process::AppSpec {
        command: app.command.clone(),
        env: app.env.clone(),
        secrets: secret_env.vars.clone(),
        working_dir: app.working_dir.clone(),
        run_as,
        stop_signal: app.stop_signal,
        stop_timeout: app.stop_timeout,
        listen: listen.clone(),
    };
    process::become_subreaper();
    let (output, shipper) = start_logs(&settings, &aws, &identity.instance_id);
    // The app's EMF lines, from both pipes, for the metrics publisher.
    let app_metrics = settings
        .metrics
        .as_ref()
        .filter(|m| m.emf)
        .map(|_| Arc::new(crate::emf::AppMetrics::default()));
    let output = match &app_metrics {
        Some(m) => output.with_app_metrics(m.clone()),
        None => output,
    };
    let crash_hook: Option<supervisor::CrashLoopHook> =
        match (&target, settings.supervise.mark_unhealthy) {
            (Some(tg), true) => {
                let tg = tg.clone();
                Some(Arc::new(move || {
                    let tg = tg.clone();
                    tokio::spawn(async move {
                        if let Err(e) = tg.mark_unhealthy().await {
                            tracing::error!(error = %e, "cannot mark the instance Unhealthy");
                        }
                    });
                }))
            }
            _ => None,
        };
    // SIGTERM/SIGINT are caught from before the app exists: one that arrives while the rest of
    // the boot runs is answered by a graceful stop below, never by the default action (which
    // would end the agent and leave the app to its parent-death signal, unflushed).
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    // The status line (`systemctl status`): app state, restarts, readiness, log shipping lag.
    let status = Status::new();
    if let Some(s) = &shipper {
        status.set_log_stats(s.stats());
    }
    status.set_file(
        status_file.to_owned(),
        spec.run_as.as_ref().map(|r| r.gid.as_raw()),
    );
    let publisher = tokio::spawn(status::publish(status.clone()));
    let (handle, mut sup_done) = supervisor::start(
        spec.clone(),
        settings.supervise,
        output.clone(),
        crash_hook,
        status.clone(),
    )
    .await
    .map_err(|e| coded(Exit::App, e))?;
    tracing::info!(step = "supervise", elapsed_ms = ms(t), "boot step done");

    // Metrics: CPU/memory/disk, the supervisor's restart counter, the shipper's counters, the
    // app's own (EMF).
    let metrics = settings.metrics.as_ref().map(|m| {
        metrics::start(
            aws.cw.clone(),
            m,
            &identity,
            handle.restarts.clone(),
            shipper.as_ref().map(ShipperHandle::stats),
            app_metrics.clone(),
        )
    });

    // 5. Readiness → launch hook, sd_notify READY.
    let ready_task = tokio::spawn(readiness_and_launch_hook(
        settings.clone(),
        target.clone(),
        status.clone(),
    ));
    if let Some(interval) = notify::watchdog_ping_interval() {
        tokio::spawn(notify::watchdog(interval));
    }

    // Secret rotation.
    rotation::start(
        &settings,
        &aws,
        target.as_ref().map(|tg| tg.group.as_str()),
        &identity.instance_id,
        handle.clone(),
        spec.clone(),
        secret_env.versions.clone(),
    );
    tracing::info!(elapsed_ms = ms(boot_start), "agent up");

    // 6. Until SIGTERM or termination.
    let mut supervisor_died = false;
    let why = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        _ = &mut sup_done => {
            // Its thread ended without being asked (a bug); the app went with it (parent-death
            // signal). Exit non-zero so systemd starts the agent, and so the app, again.
            tracing::error!("the supervisor ended unexpectedly; the agent exits to be restarted");
            supervisor_died = true;
            None
        }
        t = lifecycle::watch_termination(&imds, settings.lifecycle.poll_interval, settings.lifecycle.spot) => Some(t),
    };
    ready_task.abort();
    status.update(|s| s.draining = why.is_some());
    notify::notify("STOPPING=1");
    match &why {
        None => tracing::info!("signal received; stopping the app"),
        Some(Termination::Terminated) => tracing::info!("instance is terminating; draining"),
        Some(Termination::Spot(n)) => {
            tracing::info!(notice = %n, "spot interruption notice; draining")
        }
    }
    let t = Instant::now();
    handle.stop().await;
    if !supervisor_died {
        let _ = sup_done.await;
    }
    if let Some(socket) = &listen {
        // The app is down for good: connections still queued are reset and new ones refused
        // now, as for an app that bound its port itself, not when the agent exits.
        socket.stop_listening();
    }
    flush_logs(&output, shipper).await;
    if let Some(m) = metrics {
        // The last interval's data, so a crash loop's final restarts are counted too.
        MetricsHandle::shutdown(m).await;
    }
    tracing::info!(
        step = "drain",
        elapsed_ms = ms(t),
        "app stopped, logs flushed"
    );
    publisher.abort();
    // The last word, whether or not the publisher had its turn since the app stopped.
    let _ = status.send_if_changed();
    // No state file: no agent (`bake-agent status`).
    status.remove_file();
    if why.is_some() {
        if let Some(tg) = &target {
            match tg
                .hook(
                    settings.lifecycle.terminate_hook.as_deref(),
                    lifecycle::TERMINATING,
                )
                .await
            {
                Ok(Some(hook)) => {
                    if let Err(e) = tg.complete(&hook, "CONTINUE").await {
                        tracing::warn!(error = %e, "cannot complete the terminate hook");
                    }
                }
                Ok(None) => tracing::info!("the group has no terminate hook"),
                Err(e) => tracing::warn!(error = %e, "cannot find the terminate hook"),
            }
        }
    }
    Ok(if supervisor_died { Exit::App } else { Exit::Ok })
}

async fn readiness_and_launch_hook(
    settings: Settings,
    target: Option<Target>,
    status: Arc<Status>,
) {
    let hook = match &target {
        Some(tg) => match tg
            .hook(
                settings
                    .readiness
                    .as_ref()
                    .and_then(|r| r.launch_hook.as_deref()),
                lifecycle::LAUNCHING,
            )
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the launch hook");
                None
            }
        },
        None => None,
    };
    let t = Instant::now();
    let ready = match &settings.readiness {
        Some(r) => {
            let beat = || async {
                if let (Some(tg), Some(h)) = (&target, &hook) {
                    tg.heartbeat(h).await;
                }
            };
            readiness::wait_ready(&r.probe, r.interval, r.timeout, r.heartbeat_interval, beat).await
        }
        None => true,
    };
    status.update(|s| {
        s.readiness = if ready {
            Readiness::Ready
        } else {
            Readiness::NeverReady
        };
    });
    if ready {
        tracing::info!(step = "readiness", elapsed_ms = ms(t), "app is ready");
        notify::notify("READY=1");
    }
    if let (Some(tg), Some(h)) = (&target, &hook) {
        let result = if ready { "CONTINUE" } else { "ABANDON" };
        match tg.complete(h, result).await {
            Ok(()) => status.update(|s| {
                s.lifecycle = Some(format!("launch hook completed ({result})"));
            }),
            Err(e) => {
                // No pending action (the instance was already InService, e.g. an agent restart).
                tracing::warn!(error = %e, "cannot complete the launch hook");
                status.update(|s| {
                    s.last_error = Some(format!("cannot complete the launch hook: {e}"));
                });
            }
        }
    } else if target.is_some() {
        status.update(|s| s.lifecycle = Some("no launch hook".to_owned()));
    }
    // The boot is over: its code need not stay resident (see memory.rs).
    let before = memory::resident_kib();
    match memory::release_startup_pages() {
        Ok(kib) => tracing::info!(
            step = "memory",
            released_kib = kib,
            resident_before_kib = before,
            resident_kib = memory::resident_kib(),
            "unmapped the start-up pages of the binary"
        ),
        Err(e) => tracing::debug!(error = %e, "cannot unmap the start-up pages"),
    }
}
