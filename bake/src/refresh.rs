//! Watching an instance refresh: a pure state machine ([`next`]) fed with
//! `DescribeInstanceRefreshes` output, a pure poll schedule ([`Backoff`]) and a thin poller
//! ([`watch`]) that does the I/O.
//!
//! Polling: one `DescribeInstanceRefreshes` and one `DescribeAutoScalingGroups` (the instances'
//! lifecycle states, for the rollout view: [`crate::rollout`]) per poll, starting at
//! `refresh.poll_interval` (5 s), growing ×1.5 per unchanged poll up to
//! `refresh.max_poll_interval` (15 s, the AWS CLI waiters' pace, so the end of a refresh is seen
//! within 15 s), back to the start on any change of the refresh or of an instance: 4–12 polls,
//! 8–24 calls a minute, far below Auto Scaling's API rate limits.

use std::time::Duration;

use aws_sdk_autoscaling::error::SdkError;
use aws_sdk_autoscaling::operation::cancel_instance_refresh::CancelInstanceRefreshError;
use aws_sdk_autoscaling::operation::describe_instance_refreshes::{
    DescribeInstanceRefreshesError, DescribeInstanceRefreshesOutput,
};
use aws_sdk_autoscaling::types::{InstanceRefresh, InstanceRefreshStatus};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::RefreshSettings;
use crate::exit::Exit;
use crate::output::Progress;
use crate::rollout::{Rollout, View};

/// What one `DescribeInstanceRefreshes` says about the watched refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// The refresh id.
    pub id: String,
    /// AWS's status (`Pending`, `InProgress`, `Baking`, `Successful`, …).
    pub status: String,
    /// Percent of instances replaced.
    pub percentage: Option<i32>,
    /// Instances still to replace.
    pub instances_to_update: Option<i32>,
    /// AWS's status reason.
    pub reason: Option<String>,
    /// Why AWS rolled back (`RollbackDetails.RollbackReason`): the failure's own reason.
    pub rollback_reason: Option<String>,
}

impl Snapshot {
    /// One line for people: `InProgress 50%, 1 instance left: reason`.
    #[must_use]
    pub fn describe(&self) -> String {
        self.describe_with(true)
    }

    /// [`Snapshot::describe`] without the percentage, for a progress bar that shows it itself:
    /// `InProgress, 1 instance left: reason`.
    #[must_use]
    pub fn describe_status(&self) -> String {
        self.describe_with(false)
    }

    fn describe_with(&self, percentage: bool) -> String {
        let mut s = self.status.clone();
        if let Some(p) = self.percentage.filter(|_| percentage) {
            s.push_str(&format!(" {p}%"));
        }
        if let Some(n) = self.instances_to_update {
            s.push_str(&format!(
                ", {n} instance{} left",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(": {r}"));
        }
        if let Some(r) = self
            .rollback_reason
            .as_deref()
            .filter(|r| !r.is_empty() && Some(*r) != self.reason.as_deref())
        {
            s.push_str(&format!(" (rolled back because: {r})"));
        }
        s
    }
}

/// How a refresh ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `Successful`.
    Successful,
    /// `Successful` at a last checkpoint below 100 % (`refresh.partial`): the rest of the fleet
    /// still runs the previous version.
    Partial,
    /// `Failed`.
    Failed,
    /// `Cancelled`.
    Cancelled,
    /// `RollbackSuccessful`.
    RolledBack,
    /// `RollbackFailed`.
    RollbackFailed,
}

impl Outcome {
    /// The exit code for this outcome.
    #[must_use]
    pub fn exit(self) -> Exit {
        match self {
            Outcome::Successful => Exit::Ok,
            Outcome::Partial => Exit::Partial,
            Outcome::Failed => Exit::RefreshFailed,
            Outcome::Cancelled => Exit::Cancelled,
            Outcome::RolledBack | Outcome::RollbackFailed => Exit::RolledBack,
        }
    }
}

/// What the watcher knows between polls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// The watched refresh.
    pub id: String,
    /// The previous snapshot.
    pub last: Option<Snapshot>,
}

/// What to do after a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Still going: report `snapshot` (if `changed`) and poll again.
    Wait {
        /// The current snapshot.
        snapshot: Snapshot,
        /// Whether it differs from the previous one.
        changed: bool,
    },
    /// Finished.
    Done {
        /// How.
        outcome: Outcome,
        /// The final snapshot.
        snapshot: Snapshot,
    },
    /// The refresh is not in the output (AWS keeps refreshes for a while; a wrong id).
    Missing,
}

/// Whether `status` means the refresh is still running.
#[must_use]
pub fn is_active(status: &str) -> bool {
    matches!(
        status,
        "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking"
    )
}

/// What AWS says of one refresh, as a [`Snapshot`]. During a rollback the percentage and the
/// instances left are the rollback's own.
#[must_use]
pub fn snapshot(r: &InstanceRefresh) -> Snapshot {
    let status = r
        .status()
        .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned());
    let rolling_back = matches!(r.status(), Some(InstanceRefreshStatus::RollbackInProgress));
    let rb = r.rollback_details();
    Snapshot {
        id: r.instance_refresh_id().unwrap_or_default().to_owned(),
        status,
        percentage: if rolling_back {
            rb.and_then(|d| d.percentage_complete_on_rollback())
        } else {
            r.percentage_complete()
        },
        instances_to_update: if rolling_back {
            rb.and_then(|d| d.instances_to_update_on_rollback())
        } else {
            r.instances_to_update()
        },
        reason: r
            .status_reason()
            .map(ToOwned::to_owned)
            .or_else(|| rb.and_then(|d| d.rollback_reason()).map(ToOwned::to_owned)),
        rollback_reason: rb.and_then(|d| d.rollback_reason()).map(ToOwned::to_owned),
    }
}

/// The state machine: given what AWS said, what next.
#[must_use]
pub fn next(state: &WatchState, out: &DescribeInstanceRefreshesOutput) -> Action {
    let Some(r) = out
        .instance_refreshes()
        .iter()
        .find(|r| r.instance_refresh_id() == Some(state.id.as_str()))
    else {
        return Action::Missing;
    };
    let snapshot = snapshot(r);
    // "To replace all instances, the last number in the array must be 100": a refresh whose last
    // checkpoint is lower ends `Successful` with the rest of the group on the old configuration.
    let partial = r
        .preferences()
        .and_then(|p| p.checkpoint_percentages().last().copied())
        .is_some_and(|last| last < 100);
    let outcome = match r.status() {
        Some(InstanceRefreshStatus::Successful) if partial => Some(Outcome::Partial),
        Some(InstanceRefreshStatus::Successful) => Some(Outcome::Successful),
        Some(InstanceRefreshStatus::Failed) => Some(Outcome::Failed),
        Some(InstanceRefreshStatus::Cancelled) => Some(Outcome::Cancelled),
        Some(InstanceRefreshStatus::RollbackSuccessful) => Some(Outcome::RolledBack),
        Some(InstanceRefreshStatus::RollbackFailed) => Some(Outcome::RollbackFailed),
        _ => None,
    };
    match outcome {
        Some(outcome) => Action::Done { outcome, snapshot },
        None => {
            let changed = state.last.as_ref() != Some(&snapshot);
            Action::Wait { snapshot, changed }
        }
    }
}

/// The newest refresh of `asg` (AWS lists them newest first; the newest start time wins), if
/// it has any.
pub async fn latest(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
) -> Result<Option<Snapshot>, RefreshError> {
    let out = asg_client
        .describe_instance_refreshes()
        .auto_scaling_group_name(asg)
        .max_records(5)
        .send()
        .await
        .map_err(|e| RefreshError::Describe {
            asg: asg.to_owned(),
            source: Box::new(e),
        })?;
    Ok(newest(&out).map(snapshot))
}

/// The newest refresh in `out`, by start time.
fn newest(out: &DescribeInstanceRefreshesOutput) -> Option<&InstanceRefresh> {
    out.instance_refreshes()
        .iter()
        .max_by_key(|r| r.start_time().map(|t| (t.secs(), t.subsec_nanos())))
}

/// The newest refresh of `asg` if it is still running ([`is_active`]).
pub async fn active(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
) -> Result<Option<Snapshot>, RefreshError> {
    Ok(latest(asg_client, asg)
        .await?
        .filter(|s| is_active(&s.status)))
}

/// The refresh's instance warm-up (`Preferences.InstanceWarmup`, seconds), zero when unsaid.
fn instance_warmup(out: &DescribeInstanceRefreshesOutput, id: &str) -> Duration {
    out.instance_refreshes()
        .iter()
        .find(|r| r.instance_refresh_id() == Some(id))
        .and_then(|r| r.preferences())
        .and_then(|p| p.instance_warmup())
        .and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// One poll of the group's instances for the rollout view: its lines are printed above the
/// bar (plain lines off a terminal); returns whether there were any. Best effort: a failed
/// `DescribeAutoScalingGroups` is a warning (once), never the end of the watch.
async fn poll_instances(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
    view: &mut View,
    now: Duration,
    warmup: Duration,
    warned: &mut bool,
    progress: &Progress,
) -> bool {
    let out = match asg_client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!(
                    "describing auto scaling group '{asg}' for the rollout view: {}; watching the refresh only",
                    DisplayErrorContext(&e)
                );
            }
            return false;
        }
    };
    let Some(group) = out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(asg))
    else {
        return false;
    };
    let events = view.observe(&crate::rollout::instances(group), now, warmup);
    for e in &events {
        progress.note(&e.line());
    }
    !events.is_empty()
}

/// The poll schedule: `min` after a change, ×1.5 per unchanged poll, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The delay before the next poll.
    pub fn next_delay(&mut self, changed: bool) -> Duration {
        if changed {
            self.current = self.min;
        } else {
            self.current = (self.current.saturating_mul(3) / 2).min(self.max);
        }
        self.current
    }
}

/// Errors while reading or watching a refresh. The SDK's errors are kept whole (boxed: they
/// are large), so a caller can ask for the service error.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `DescribeInstanceRefreshes` failed.
    #[error("describing instance refreshes of '{asg}': {}", DisplayErrorContext(.source))]
    Describe {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<SdkError<DescribeInstanceRefreshesError>>,
    },
    /// `CancelInstanceRefresh` failed.
    #[error("cancelling the instance refresh of '{asg}': {}", DisplayErrorContext(.source))]
    Cancel {
        /// The group.
        asg: String,
        /// The SDK's error.
        source: Box<SdkError<CancelInstanceRefreshError>>,
    },
    /// The refresh is not listed.
    #[error("instance refresh {id} of '{asg}' not found")]
    Missing {
        /// The group.
        asg: String,
        /// The refresh.
        id: String,
    },
}

/// Watch options.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Give up watching after this long.
    pub timeout: Duration,
    /// First poll interval.
    pub poll_interval: Duration,
    /// Longest poll interval.
    pub max_poll_interval: Duration,
    /// An interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the refresh instead of detaching.
    pub cancel_on_interrupt: bool,
    /// Stop watching once the refresh waits at a checkpoint ([`WatchEnd::AtCheckpoint`]): the
    /// canary's hold.
    pub until_checkpoint: bool,
}

/// Whether AWS's status reason says the refresh waits at a checkpoint ("Waiting for
/// checkpoint…").
#[must_use]
pub fn at_checkpoint(s: &Snapshot) -> bool {
    s.status == "InProgress"
        && s.reason
            .as_deref()
            .is_some_and(|r| r.to_ascii_lowercase().starts_with("waiting for checkpoint"))
}

impl WatchOptions {
    /// From `[refresh]` and the command line's `--timeout` (which wins over `refresh.timeout`).
    #[must_use]
    pub fn new(r: &RefreshSettings, timeout: Option<Duration>, cancel_on_interrupt: bool) -> Self {
        Self {
            timeout: timeout.unwrap_or(r.timeout),
            poll_interval: r.poll_interval,
            max_poll_interval: r.max_poll_interval,
            cancel_on_interrupt,
            until_checkpoint: false,
        }
    }
}

/// How watching ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The refresh finished.
    Finished(Outcome, Snapshot),
    /// `timeout` passed; the refresh goes on.
    TimedOut(Option<Snapshot>),
    /// Interrupted (SIGINT, SIGTERM or SIGHUP): stopped watching; the refresh goes on.
    Detached(Option<Snapshot>),
    /// The refresh waits at a checkpoint (only with [`WatchOptions::until_checkpoint`]).
    AtCheckpoint(Snapshot),
}

/// A watch's result and its cost.
#[derive(Clone, Debug)]
pub struct Watched {
    /// How it ended.
    pub end: WatchEnd,
    /// `DescribeInstanceRefreshes` calls made.
    pub polls: u32,
    /// Time watched.
    pub elapsed: Duration,
    /// What the instances did.
    pub rollout: Rollout,
}

/// Polls refresh `id` of `asg` until it ends, `timeout` passes or an interrupt (SIGINT, SIGTERM,
/// SIGHUP) detaches, or with `cancel_on_interrupt` cancels (a second one detaches). The bar
/// shows the refresh's percentage and status; the instances' changes ([`View`]) are lines above
/// it.
pub async fn watch(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
    id: &str,
    opts: WatchOptions,
    progress: &Progress,
    view: &mut View,
) -> Result<Watched, RefreshError> {
    let started = tokio::time::Instant::now();
    // `refresh.timeout` and `--timeout` are bounded by config validation; a deadline beyond the
    // clock's range would still be no deadline rather than a panic.
    let deadline = started.checked_add(opts.timeout);
    let mut state = WatchState {
        id: id.to_owned(),
        last: None,
    };
    let mut backoff = Backoff::new(opts.poll_interval, opts.max_poll_interval);
    let mut polls = 0u32;
    let mut cancelled = false;
    let mut interrupts = crate::signals::Interrupts::new();
    let mut warned = false;
    let done = |end, polls, view: &View| Watched {
        end,
        polls,
        elapsed: started.elapsed(),
        rollout: view.rollout(),
    };
    loop {
        polls += 1;
        let out = asg_client
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .instance_refresh_ids(id)
            .send()
            .await
            .map_err(|e| RefreshError::Describe {
                asg: asg.to_owned(),
                source: Box::new(e),
            })?;
        let action = next(&state, &out);
        let instances_changed = match action {
            Action::Missing => false,
            _ => {
                let warmup = instance_warmup(&out, id);
                let now = started.elapsed();
                poll_instances(asg_client, asg, view, now, warmup, &mut warned, progress).await
            }
        };
        let percent = |s: &Snapshot| u64::try_from(s.percentage.unwrap_or(0)).unwrap_or(0);
        let delay = match action {
            Action::Missing => {
                return Err(RefreshError::Missing {
                    asg: asg.to_owned(),
                    id: id.to_owned(),
                })
            }
            Action::Done { outcome, snapshot } => {
                if matches!(outcome, Outcome::Successful | Outcome::Partial) {
                    for e in view.finish_warm_up(started.elapsed()) {
                        progress.note(&e.line());
                    }
                }
                progress.position(
                    percent(&snapshot),
                    &snapshot.describe_status(),
                    &snapshot.describe(),
                );
                return Ok(done(WatchEnd::Finished(outcome, snapshot), polls, view));
            }
            Action::Wait { snapshot, .. } if opts.until_checkpoint && at_checkpoint(&snapshot) => {
                progress.position(
                    percent(&snapshot),
                    &snapshot.describe_status(),
                    &snapshot.describe(),
                );
                return Ok(done(WatchEnd::AtCheckpoint(snapshot), polls, view));
            }
            Action::Wait { snapshot, changed } => {
                if changed {
                    progress.position(
                        percent(&snapshot),
                        &snapshot.describe_status(),
                        &snapshot.describe(),
                    );
                    tracing::debug!(refresh = id, status = %snapshot.status, "refresh progress");
                }
                state.last = Some(snapshot);
                backoff.next_delay(changed || instances_changed)
            }
        };
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(done(WatchEnd::TimedOut(state.last), polls, view));
        }
        let wake = match (now.checked_add(delay), deadline) {
            (Some(w), Some(d)) => w.min(d),
            (Some(w), None) => w,
            (None, d) => d.unwrap_or(now),
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            name = interrupts.recv() => {
                if opts.cancel_on_interrupt && !cancelled {
                    progress.note(&format!("interrupted ({name}): cancelling instance refresh {id} (interrupt again to stop watching)"));
                    asg_client
                        .cancel_instance_refresh()
                        .auto_scaling_group_name(asg)
                        .send()
                        .await
                        .map_err(|e| RefreshError::Cancel { asg: asg.to_owned(), source: Box::new(e) })?;
                    cancelled = true;
                } else {
                    return Ok(done(WatchEnd::Detached(state.last), polls, view));
                }
            }
        }
    }
}

/// A refresh watched to its end (or to a timeout or an interrupt), as the commands report it.
#[derive(Clone, Debug)]
pub struct Followed {
    /// `successful`, `partial`, `failed`, `cancelled`, `rolled_back`, `rollback_failed` (the
    /// [`Outcome`]), `timed_out`, `detached`, or `held` (at a checkpoint, with
    /// [`WatchOptions::until_checkpoint`]).
    pub result: String,
    /// The refresh's last known state.
    pub refresh: Option<Snapshot>,
    /// `DescribeInstanceRefreshes` calls made.
    pub polls: u32,
    /// Seconds watched.
    pub watch_secs: f64,
    /// The exit code of this end.
    pub exit: Exit,
    /// What the instances did while watched.
    pub rollout: Rollout,
}

/// Watches refresh `id` of `asg` with a progress bar and the rollout view `view` ([`watch`])
/// and says how it ended, in the log too (with how to resume watching after a timeout or an
/// interrupt).
pub async fn follow(
    asg_client: &aws_sdk_autoscaling::Client,
    asg: &str,
    id: &str,
    opts: WatchOptions,
    mut view: View,
) -> Result<Followed, RefreshError> {
    let progress = Progress::percent("refresh");
    let watched = watch(asg_client, asg, id, opts, &progress, &mut view).await?;
    progress.finish();
    let resume = format!("resume watching with `bake status --watch` (refresh {id} of '{asg}')");
    let (result, refresh, exit) = match watched.end {
        WatchEnd::Finished(outcome, snap) => {
            let result = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(ToOwned::to_owned))
                .unwrap_or_default();
            match outcome {
                Outcome::Successful => {}
                Outcome::Partial => tracing::warn!(
                    "partial release: instance refresh {id} of '{asg}' ended {} at its last checkpoint (refresh.partial); the instances not replaced still run the previous version",
                    snap.describe()
                ),
                _ => tracing::error!("instance refresh {id} of '{asg}' ended {}", snap.describe()),
            }
            (result, Some(snap), outcome.exit())
        }
        WatchEnd::TimedOut(snap) => {
            tracing::error!(
                "stopped watching after {}; the refresh goes on; {resume}",
                crate::output::secs(opts.timeout)
            );
            ("timed_out".to_owned(), snap, Exit::TimedOut)
        }
        WatchEnd::Detached(snap) => {
            tracing::warn!("detached; the refresh goes on; {resume}; cancel it with `aws autoscaling cancel-instance-refresh --auto-scaling-group-name {asg}` or `bake rollback`");
            ("detached".to_owned(), snap, Exit::Interrupted)
        }
        WatchEnd::AtCheckpoint(snap) => ("held".to_owned(), Some(snap), Exit::Ok),
    };
    Ok(Followed {
        result,
        refresh,
        polls: watched.polls,
        watch_secs: watched.elapsed.as_secs_f64(),
        exit,
        rollout: watched.rollout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::{InstanceRefresh, RollbackDetails};

    fn out(
        id: &str,
        status: InstanceRefreshStatus,
        pct: i32,
        left: i32,
        reason: Option<&str>,
    ) -> DescribeInstanceRefreshesOutput {
        let r = InstanceRefresh::builder()
            .instance_refresh_id(id)
            .status(status)
            .percentage_complete(pct)
            .instances_to_update(left)
            .set_status_reason(reason.map(ToOwned::to_owned))
            .build();
        DescribeInstanceRefreshesOutput::builder()
            .instance_refreshes(r)
            .build()
    }

    #[test]
    fn test_state_machine_happy_path() {
        let mut s = WatchState {
            id: "r1".into(),
            last: None,
        };
        let a = next(&s, &out("r1", InstanceRefreshStatus::Pending, 0, 2, None));
        let Action::Wait {
            snapshot,
            changed: true,
        } = a
        else {
            panic!("{a:?}")
        };
        s.last = Some(snapshot);
        // The same again: unchanged.
        let a = next(&s, &out("r1", InstanceRefreshStatus::Pending, 0, 2, None));
        assert!(matches!(a, Action::Wait { changed: false, .. }), "{a:?}");
        let a = next(
            &s,
            &out("r1", InstanceRefreshStatus::InProgress, 50, 1, None),
        );
        let Action::Wait {
            snapshot,
            changed: true,
        } = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(snapshot.describe(), "InProgress 50%, 1 instance left");
        s.last = Some(snapshot);
        let a = next(&s, &out("r1", InstanceRefreshStatus::Baking, 100, 0, None));
        assert!(matches!(a, Action::Wait { changed: true, .. }), "{a:?}");
        let a = next(
            &s,
            &out("r1", InstanceRefreshStatus::Successful, 100, 0, None),
        );
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::Successful,
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn test_successful_at_a_last_checkpoint_below_100_is_partial() {
        use aws_sdk_autoscaling::types::InstanceRefreshStatus as S;
        let s = WatchState {
            id: "r1".into(),
            last: None,
        };
        let with_checkpoints = |cps: &[i32]| {
            let r = InstanceRefresh::builder()
                .instance_refresh_id("r1")
                .status(S::Successful)
                .percentage_complete(50)
                .instances_to_update(2)
                .preferences(
                    aws_sdk_autoscaling::types::RefreshPreferences::builder()
                        .set_checkpoint_percentages(Some(cps.to_vec()))
                        .build(),
                )
                .build();
            DescribeInstanceRefreshesOutput::builder()
                .instance_refreshes(r)
                .build()
        };
        let a = next(&s, &with_checkpoints(&[50]));
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::Partial,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(Outcome::Partial.exit(), crate::exit::Exit::Partial);
        let a = next(&s, &with_checkpoints(&[50, 100]));
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::Successful,
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn test_backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..200 {
            b.next_delay(false);
        }
        assert!(b.next_delay(false) <= Duration::MAX);
    }

    #[test]
    fn test_state_machine_failures_keep_reason() {
        let s = WatchState {
            id: "r1".into(),
            last: None,
        };
        let a = next(
            &s,
            &out(
                "r1",
                InstanceRefreshStatus::Failed,
                50,
                1,
                Some("instances failed to launch"),
            ),
        );
        let Action::Done {
            outcome: Outcome::Failed,
            snapshot,
        } = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(
            snapshot.reason.as_deref(),
            Some("instances failed to launch")
        );
        assert_eq!(Outcome::Failed.exit(), crate::exit::Exit::RefreshFailed);
        let a = next(
            &s,
            &out(
                "r1",
                InstanceRefreshStatus::RollbackSuccessful,
                0,
                0,
                Some("alarm"),
            ),
        );
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::RolledBack,
                    ..
                }
            ),
            "{a:?}"
        );
        let a = next(
            &s,
            &out("r1", InstanceRefreshStatus::RollbackFailed, 0, 0, None),
        );
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::RollbackFailed,
                    ..
                }
            ),
            "{a:?}"
        );
        let a = next(&s, &out("r1", InstanceRefreshStatus::Cancelled, 0, 0, None));
        assert!(
            matches!(
                a,
                Action::Done {
                    outcome: Outcome::Cancelled,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(Outcome::Cancelled.exit(), crate::exit::Exit::Cancelled);
    }

    #[test]
    fn test_state_machine_rollback_progress_and_missing() {
        let s = WatchState {
            id: "r1".into(),
            last: None,
        };
        let r = InstanceRefresh::builder()
            .instance_refresh_id("r1")
            .status(InstanceRefreshStatus::RollbackInProgress)
            .percentage_complete(50)
            .rollback_details(
                RollbackDetails::builder()
                    .percentage_complete_on_rollback(30)
                    .instances_to_update_on_rollback(2)
                    .rollback_reason("failed health checks")
                    .build(),
            )
            .build();
        let o = DescribeInstanceRefreshesOutput::builder()
            .instance_refreshes(r)
            .build();
        let Action::Wait { snapshot, .. } = next(&s, &o) else {
            panic!()
        };
        assert_eq!(snapshot.percentage, Some(30));
        assert_eq!(snapshot.instances_to_update, Some(2));
        assert_eq!(snapshot.reason.as_deref(), Some("failed health checks"));
        assert_eq!(
            next(
                &s,
                &out("other", InstanceRefreshStatus::InProgress, 0, 0, None)
            ),
            Action::Missing
        );
        assert_eq!(
            next(&s, &DescribeInstanceRefreshesOutput::builder().build()),
            Action::Missing
        );
    }

    #[test]
    fn test_snapshot_of_the_newest_refresh() {
        let at = |secs| aws_smithy_types::DateTime::from_secs(secs);
        let refresh = |id: &str, status, secs| {
            InstanceRefresh::builder()
                .instance_refresh_id(id)
                .status(status)
                .percentage_complete(40)
                .instances_to_update(3)
                .start_time(at(secs))
                .build()
        };
        let o = DescribeInstanceRefreshesOutput::builder()
            .instance_refreshes(refresh("old", InstanceRefreshStatus::Successful, 100))
            .instance_refreshes(refresh("new", InstanceRefreshStatus::InProgress, 200))
            .build();
        let s = snapshot(newest(&o).expect("two refreshes"));
        assert_eq!((s.id.as_str(), s.status.as_str()), ("new", "InProgress"));
        assert_eq!(s.describe(), "InProgress 40%, 3 instances left");
        assert!(is_active(&s.status));
        assert_eq!(
            newest(&DescribeInstanceRefreshesOutput::builder().build()),
            None
        );
    }

    #[test]
    fn test_backoff_grows_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(5));
        assert_eq!(b.next_delay(true), Duration::from_secs(2));
        assert_eq!(b.next_delay(false), Duration::from_secs(3));
        assert_eq!(b.next_delay(false), Duration::from_millis(4500));
        assert_eq!(b.next_delay(false), Duration::from_secs(5));
        assert_eq!(b.next_delay(false), Duration::from_secs(5));
        assert_eq!(b.next_delay(true), Duration::from_secs(2));
    }

    #[test]
    fn test_active_statuses() {
        for s in [
            "Pending",
            "InProgress",
            "Cancelling",
            "RollbackInProgress",
            "Baking",
        ] {
            assert!(is_active(s), "{s}");
        }
        for s in [
            "Successful",
            "Failed",
            "Cancelled",
            "RollbackSuccessful",
            "RollbackFailed",
        ] {
            assert!(!is_active(s), "{s}");
        }
    }
}
