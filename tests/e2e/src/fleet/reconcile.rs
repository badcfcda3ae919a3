//! The fleet's decision, pure: from what the emulated group says, what runs here and what the
//! load balancer holds, the actions that bring the local fleet in line with the group. The
//! watcher (`fleet/watcher.rs`) observes, calls [`decide`] and carries the actions out; nothing
//! here does I/O, so every rule is tested below without an emulator, haproxy or an agent.
//!
//! The rules are AWS's, for an Auto Scaling group attached to an ALB target group:
//! - an instance the group launches (any state but `Terminating*`) is booted, once: instance
//!   ids are never reused;
//! - the group registers an instance with the target group as it goes `InService` (not while its
//!   launch hook holds it in `Pending:Wait`);
//! - a registered target gets requests once it passed one health check (the load balancer's
//!   `initial` state): [`Action::Admit`];
//! - an instance the group terminates is deregistered first (draining: no new requests, those in
//!   flight go on); the deregistration completes when nothing is in flight, else after the
//!   deregistration delay, at once when the instance is gone from the group. "Nothing in flight"
//!   is read at the next poll, from the load balancer's counts taken after the drain: the counts
//!   of this poll were taken before it, and requests sent to the target since (while the watcher
//!   booted another instance, say) would be cut;
//! - only then does its metadata say `Terminated` (the agent drains the app and completes the
//!   terminate hook), and once the group has let it go it is stopped;
//! - an instance whose runtime ended on its own while the group still counts it is reported, not
//!   booted again and not deregistered: the load balancer's health checks take it out, as an
//!   ALB's do (nothing here plays EC2's status checks, so the group does not replace it unless
//!   its agent marked it Unhealthy before).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::haproxy::ServerState;

/// The group's lifecycle state of an instance in service.
pub const IN_SERVICE: &str = "InService";

/// Whether the group is terminating an instance in `lifecycle` (`Terminating`,
/// `Terminating:Wait`, `Terminating:Proceed`, `Terminated`).
#[must_use]
pub fn is_terminating(lifecycle: &str) -> bool {
    lifecycle.starts_with("Terminat")
}

/// One instance of the group, as `DescribeAutoScalingGroups` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInstance {
    /// `i-…`.
    pub id: String,
    /// Its lifecycle state (`Pending:Wait`, `InService`, `Terminating:Wait`, …).
    pub lifecycle: String,
}

/// Where an instance stands with the load balancer's target group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Not registered (yet, or never: it was terminated before it went `InService`).
    Unregistered,
    /// Registered (`RegisterTargets`): health checked, routed to once a check passed.
    Registered,
    /// Deregistered at `since` (`DeregisterTargets`): draining, the deregistration not complete.
    Draining {
        /// When the deregistration began.
        since: Instant,
    },
    /// The deregistration is complete: the target is gone from the load balancer.
    Removed,
}

impl Registration {
    /// No longer (or not yet) a target the load balancer may send new requests to.
    #[must_use]
    pub fn is_out(self) -> bool {
        self != Self::Registered
    }
}

/// What the harness knows of an instance it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// `i-…`.
    pub id: String,
    /// Its target in the load balancer.
    pub registration: Registration,
    /// Its metadata says `target-lifecycle-state` `Terminated` already.
    pub told_terminated: bool,
    /// Its runtime ended on its own (the agent process exited, the container stopped).
    pub exited: bool,
    /// That end was reported ([`Action::Crashed`]) already.
    pub crash_reported: bool,
}

impl Running {
    /// A newly booted instance: not registered, told nothing.
    #[must_use]
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            registration: Registration::Unregistered,
            told_terminated: false,
            exited: false,
            crash_reported: false,
        }
    }
}

/// One step for the watcher to carry out, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Boot the instance the group launched (it becomes [`Running::new`]).
    Boot {
        /// The instance.
        id: String,
    },
    /// `RegisterTargets`: add it to the load balancer, health checks running, no requests yet.
    Register {
        /// The instance.
        id: String,
    },
    /// Route requests to a registered target that passed its first health check.
    Admit {
        /// The instance.
        id: String,
    },
    /// `DeregisterTargets`: drain it (no new requests; those in flight go on).
    Deregister {
        /// The instance.
        id: String,
    },
    /// The deregistration is complete: close what is still open to it, remove it.
    Remove {
        /// The instance.
        id: String,
    },
    /// Its metadata's `autoscaling/target-lifecycle-state` becomes `Terminated`.
    NotifyTerminated {
        /// The instance.
        id: String,
    },
    /// Its runtime ended while the group counts it: report it (once).
    Crashed {
        /// The instance.
        id: String,
    },
    /// The group has let it go and it is out of the load balancer: stop it.
    Stop {
        /// The instance.
        id: String,
    },
}

impl Action {
    /// The instance it is about.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Self::Boot { id }
            | Self::Register { id }
            | Self::Admit { id }
            | Self::Deregister { id }
            | Self::Remove { id }
            | Self::NotifyTerminated { id }
            | Self::Crashed { id }
            | Self::Stop { id } => id,
        }
    }
}

/// The outcome of one [`decide`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// The instances the load balancer sends new requests to once the actions are done.
    pub in_lb: BTreeSet<String>,
}

/// The decision of one poll.
///
/// `group`: the group's instances; `running`: the instances this harness runs (any order);
/// `lb`: the load balancer's targets as observed this poll; `now`: the time of the poll;
/// `deregistration_delay`: the target group's (at the emulator's time scale).
#[must_use]
pub fn decide(
    group: &[GroupInstance],
    running: &[Running],
    lb: &[ServerState],
    now: Instant,
    deregistration_delay: Duration,
) -> Plan {
    let lifecycle: BTreeMap<&str, &str> = group
        .iter()
        .map(|g| (g.id.as_str(), g.lifecycle.as_str()))
        .collect();
    let sessions: BTreeMap<&str, u64> = lb.iter().map(|s| (s.name.as_str(), s.sessions)).collect();
    let mut fleet: BTreeMap<String, Running> =
        running.iter().map(|r| (r.id.clone(), r.clone())).collect();
    let mut actions = Vec::new();

    for g in group {
        if !fleet.contains_key(&g.id) && !is_terminating(&g.lifecycle) {
            actions.push(Action::Boot { id: g.id.clone() });
            fleet.insert(g.id.clone(), Running::new(&g.id));
        }
    }

    // Each instance through the target group's steps; several may follow in one poll (a removed
    // target is told Terminated at once).
    for r in fleet.values_mut() {
        let id = || r.id.clone();
        let state = lifecycle.get(r.id.as_str()).copied();
        let terminating = state.is_none_or(is_terminating);
        if r.exited && !r.crash_reported && !terminating {
            actions.push(Action::Crashed { id: id() });
            r.crash_reported = true;
        }
        if state == Some(IN_SERVICE) && r.registration == Registration::Unregistered {
            actions.push(Action::Register { id: id() });
            r.registration = Registration::Registered;
        }
        // Drained before this poll: `sessions` were counted after the drain began.
        let drained_before = matches!(r.registration, Registration::Draining { .. });
        if terminating && r.registration == Registration::Registered {
            actions.push(Action::Deregister { id: id() });
            r.registration = Registration::Draining { since: now };
        }
        if let Registration::Draining { since } = r.registration {
            let idle = drained_before && sessions.get(r.id.as_str()).is_none_or(|n| *n == 0);
            if idle || now.duration_since(since) >= deregistration_delay || state.is_none() {
                actions.push(Action::Remove { id: id() });
                r.registration = Registration::Removed;
            }
        }
        // AWS deregisters first, then the instance enters Terminating:Wait.
        let out_of_lb = matches!(
            r.registration,
            Registration::Unregistered | Registration::Removed
        );
        if terminating && out_of_lb && !r.told_terminated {
            actions.push(Action::NotifyTerminated { id: id() });
            r.told_terminated = true;
        }
    }

    let out = |name: &str| fleet.get(name).is_some_and(|r| r.registration.is_out());
    for s in lb {
        if s.passed_first_check() && !out(&s.name) {
            actions.push(Action::Admit { id: s.name.clone() });
        }
    }
    let in_lb = lb
        .iter()
        .filter(|s| s.serving() && !out(&s.name))
        .map(|s| s.name.clone())
        .collect();

    for r in fleet.values() {
        let out_of_lb = matches!(
            r.registration,
            Registration::Unregistered | Registration::Removed
        );
        if !lifecycle.contains_key(r.id.as_str()) && out_of_lb {
            actions.push(Action::Stop { id: r.id.clone() });
        }
    }
    Plan { actions, in_lb }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(600);

    fn group(list: &[(&str, &str)]) -> Vec<GroupInstance> {
        list.iter()
            .map(|(id, lifecycle)| GroupInstance {
                id: (*id).to_owned(),
                lifecycle: (*lifecycle).to_owned(),
            })
            .collect()
    }

    fn running(id: &str, registration: Registration) -> Running {
        Running {
            registration,
            ..Running::new(id)
        }
    }

    fn server(name: &str, status: &str, check: &str, sessions: u64) -> ServerState {
        ServerState {
            name: name.to_owned(),
            status: status.to_owned(),
            check: check.to_owned(),
            sessions,
        }
    }

    fn boot(id: &str) -> Action {
        Action::Boot { id: id.into() }
    }

    #[test]
    fn test_scale_out_boots_each_new_instance_once_and_registers_none_before_in_service() {
        let now = Instant::now();
        let g = group(&[
            ("i-1", IN_SERVICE),
            ("i-2", "Pending"),
            ("i-3", "Pending:Wait"),
        ]);
        let r = [running("i-1", Registration::Registered)];
        let lb = [server("i-1", "UP", "L7OK", 0)];
        let plan = decide(&g, &r, &lb, now, DELAY);
        assert_eq!(plan.actions, vec![boot("i-2"), boot("i-3")]);
        assert_eq!(plan.in_lb, BTreeSet::from(["i-1".to_owned()]));
        // Booted already: not again.
        let r = [
            running("i-1", Registration::Registered),
            Running::new("i-2"),
            Running::new("i-3"),
        ];
        assert_eq!(decide(&g, &r, &lb, now, DELAY).actions, vec![]);
    }

    #[test]
    fn test_an_instance_first_seen_terminating_is_not_booted() {
        let g = group(&[("i-9", "Terminating:Wait")]);
        assert_eq!(decide(&g, &[], &[], Instant::now(), DELAY), Plan::default());
    }

    #[test]
    fn test_pending_launch_hook_keeps_the_instance_out_of_the_lb() {
        let g = group(&[("i-1", "Pending:Wait")]);
        let r = [Running::new("i-1")];
        let plan = decide(&g, &r, &[], Instant::now(), DELAY);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn test_in_service_instance_is_registered_then_admitted_after_a_passed_check() {
        let now = Instant::now();
        let g = group(&[("i-1", IN_SERVICE)]);
        let plan = decide(&g, &[Running::new("i-1")], &[], now, DELAY);
        assert_eq!(plan.actions, vec![Action::Register { id: "i-1".into() }]);
        assert!(plan.in_lb.is_empty());
        // Registered, its first check not yet run: no requests.
        let r = [running("i-1", Registration::Registered)];
        let lb = [server("i-1", "MAINT", "INI", 0)];
        assert_eq!(decide(&g, &r, &lb, now, DELAY), Plan::default());
        // The check passed: admitted; the next poll sees it serving.
        let lb = [server("i-1", "MAINT", "L7OK", 0)];
        let plan = decide(&g, &r, &lb, now, DELAY);
        assert_eq!(plan.actions, vec![Action::Admit { id: "i-1".into() }]);
        assert!(plan.in_lb.is_empty());
        let lb = [server("i-1", "UP", "L7OK", 0)];
        let plan = decide(&g, &r, &lb, now, DELAY);
        assert_eq!(plan.actions, vec![]);
        assert_eq!(plan.in_lb, BTreeSet::from(["i-1".to_owned()]));
    }

    #[test]
    fn test_terminating_idle_instance_is_drained_then_removed_and_told_at_the_next_poll() {
        let now = Instant::now();
        let g = group(&[("i-1", "Terminating:Wait")]);
        let r = [running("i-1", Registration::Registered)];
        // Idle in the counts taken before the drain: those may miss requests sent since, so
        // the target is only drained.
        let lb = [server("i-1", "UP", "L7OK", 0)];
        let plan = decide(&g, &r, &lb, now, DELAY);
        let id = || "i-1".to_owned();
        assert_eq!(plan.actions, vec![Action::Deregister { id: id() }]);
        assert!(
            plan.in_lb.is_empty(),
            "a draining target gets no new requests"
        );
        // Idle in the next poll's counts, taken while draining: removed and told.
        let draining = [running("i-1", Registration::Draining { since: now })];
        let lb = [server("i-1", "DRAIN", "L7OK", 0)];
        let plan = decide(&g, &draining, &lb, now + DELAY / 10, DELAY);
        assert_eq!(
            plan.actions,
            vec![
                Action::Remove { id: id() },
                Action::NotifyTerminated { id: id() },
            ]
        );
    }

    #[test]
    fn test_terminating_busy_instance_drains_until_idle_or_the_delay() {
        let now = Instant::now();
        let g = group(&[("i-1", "Terminating:Wait")]);
        let busy = [server("i-1", "DRAIN", "L7OK", 2)];
        let r = [running("i-1", Registration::Registered)];
        let plan = decide(&g, &r, &busy, now, DELAY);
        assert_eq!(plan.actions, vec![Action::Deregister { id: "i-1".into() }]);
        // Still busy within the delay: nothing; not told Terminated while draining.
        let draining = [running("i-1", Registration::Draining { since: now })];
        let later = now + DELAY / 2;
        assert_eq!(decide(&g, &draining, &busy, later, DELAY), Plan::default());
        // The delay passed: removed although requests are open, then told.
        let plan = decide(&g, &draining, &busy, now + DELAY, DELAY);
        assert_eq!(
            plan.actions,
            vec![
                Action::Remove { id: "i-1".into() },
                Action::NotifyTerminated { id: "i-1".into() },
            ]
        );
        // Idle before the delay: removed at once.
        let idle = [server("i-1", "DRAIN", "L7OK", 0)];
        let plan = decide(&g, &draining, &idle, later, DELAY);
        assert_eq!(plan.actions[0], Action::Remove { id: "i-1".into() });
    }

    #[test]
    fn test_terminated_instance_is_told_once_and_stopped_when_the_group_lets_it_go() {
        let now = Instant::now();
        let g = group(&[("i-1", "Terminating:Wait")]);
        let told = [Running {
            told_terminated: true,
            ..running("i-1", Registration::Removed)
        }];
        assert_eq!(decide(&g, &told, &[], now, DELAY), Plan::default());
        let plan = decide(&[], &told, &[], now, DELAY);
        assert_eq!(plan.actions, vec![Action::Stop { id: "i-1".into() }]);
    }

    #[test]
    fn test_abandoned_launch_never_registered_is_told_and_stopped() {
        let now = Instant::now();
        let r = [Running::new("i-1")];
        let g = group(&[("i-1", "Terminating:Wait")]);
        let plan = decide(&g, &r, &[], now, DELAY);
        assert_eq!(
            plan.actions,
            vec![Action::NotifyTerminated { id: "i-1".into() }]
        );
        // Gone from the group: stopped (and told, if it was not yet).
        let plan = decide(&[], &r, &[], now, DELAY);
        assert_eq!(
            plan.actions,
            vec![
                Action::NotifyTerminated { id: "i-1".into() },
                Action::Stop { id: "i-1".into() },
            ]
        );
    }

    #[test]
    fn test_gone_from_the_group_while_draining_is_removed_at_once_and_stopped() {
        let now = Instant::now();
        let r = [running("i-1", Registration::Draining { since: now })];
        let busy = [server("i-1", "DRAIN", "L7OK", 3)];
        let plan = decide(&[], &r, &busy, now, DELAY);
        assert_eq!(
            plan.actions,
            vec![
                Action::Remove { id: "i-1".into() },
                Action::NotifyTerminated { id: "i-1".into() },
                Action::Stop { id: "i-1".into() },
            ]
        );
    }

    #[test]
    fn test_crashed_instance_is_reported_once_not_booted_again_and_left_to_health_checks() {
        let now = Instant::now();
        let g = group(&[("i-1", IN_SERVICE)]);
        let lb = [server("i-1", "DOWN", "L4CON", 0)];
        let crashed = Running {
            exited: true,
            ..running("i-1", Registration::Registered)
        };
        let plan = decide(&g, std::slice::from_ref(&crashed), &lb, now, DELAY);
        assert_eq!(plan.actions, vec![Action::Crashed { id: "i-1".into() }]);
        assert!(plan.in_lb.is_empty(), "a failed health check took it out");
        let reported = Running {
            crash_reported: true,
            ..crashed
        };
        let plan = decide(&g, std::slice::from_ref(&reported), &lb, now, DELAY);
        assert_eq!(plan, Plan::default());
        // An agent that ends after the terminate hook is no crash.
        let g = group(&[("i-1", "Terminating:Proceed")]);
        let done = Running {
            exited: true,
            told_terminated: true,
            ..running("i-1", Registration::Removed)
        };
        assert_eq!(decide(&g, &[done], &[], now, DELAY), Plan::default());
    }

    #[test]
    fn test_nothing_to_do_for_a_steady_fleet() {
        let now = Instant::now();
        let g = group(&[("i-1", IN_SERVICE), ("i-2", IN_SERVICE)]);
        let r = [
            running("i-1", Registration::Registered),
            running("i-2", Registration::Registered),
        ];
        let lb = [
            server("i-1", "UP", "L7OK", 1),
            server("i-2", "UP", "L7OK", 0),
        ];
        let plan = decide(&g, &r, &lb, now, DELAY);
        assert_eq!(plan.actions, vec![]);
        assert_eq!(
            plan.in_lb,
            BTreeSet::from(["i-1".to_owned(), "i-2".to_owned()])
        );
        assert_eq!(decide(&[], &[], &[], now, DELAY), Plan::default());
    }
}
