"""Instance refresh, lifecycle actions and health replacement for moto's Auto Scaling backend.

moto 5.2.5 stores lifecycle hooks but launches every instance straight into ``InService``, leaves an
instance marked ``Unhealthy`` in service forever, and has no instance refresh. ``install()`` patches
its backend and responses so that, as AWS documents:

- a launching instance waits in ``Pending:Wait`` while the group has an
  ``autoscaling:EC2_INSTANCE_LAUNCHING`` hook, goes ``InService`` on CONTINUE, and is terminated on
  ABANDON or when the hook's ``HeartbeatTimeout`` runs out with ``DefaultResult`` ABANDON;
  ``RecordLifecycleActionHeartbeat`` restarts the timeout; a terminating instance waits in
  ``Terminating:Wait`` while an ``autoscaling:EC2_INSTANCE_TERMINATING`` hook is open;
- ``SetInstanceHealth Unhealthy`` is visible at once; shortly after, the background thread
  terminates the instance (through its terminate hooks) and launches a replacement (through the
  launch hooks), also for an instance marked while in ``Pending:Wait`` once it is InService;
- ``HealthCheckGracePeriod`` defaults to 0 (moto: 300); termination protection does not keep an
  instance from being terminated by the group;
- ``StartInstanceRefresh`` and friends replace instances in the background at the refresh's own
  pace, within both ``MinHealthyPercentage`` and ``MaxHealthyPercentage``, ``InstanceWarmup``, checkpoints,
  ``SkipMatching``, ``DesiredConfiguration``, ``AutoRollback``, ``BakeTime``, cancel and rollback;
- every instance records the launch template version it was launched from, as a number;
- every launch and termination the emulator performs is recorded as a scaling activity
  (``Activity``: cause, status, progress, details), listed by ``DescribeScalingActivities``.

Every emulated delay is multiplied by ``BAKE_EMULATOR_TIME_SCALE`` (unset: 1, real time).
One lock guards moto's Auto Scaling and EC2 state and ours: the HTTP server is threaded and a
background thread drives lifecycle timeouts and refreshes. See docs/emulator.md.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.autoscaling import models as as_models
from moto.autoscaling import responses as as_responses
from moto.autoscaling.exceptions import ValidationError
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2 import responses as ec2_responses

LAUNCH_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATE_TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"

# Lifecycle states that count towards the group's capacity (AWS: pending and in-service instances;
# terminating, terminated, standby and detaching ones do not).
LIVE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")

ACTIVE_STATUSES = ("Pending", "InProgress", "Baking", "Cancelling", "RollbackInProgress")

# Documented defaults (RefreshPreferences, CLI/SDK column of "Understand the default values for an
# instance refresh").
DEFAULT_MIN_HEALTHY_PERCENTAGE = 90
DEFAULT_MAX_HEALTHY_PERCENTAGE = 100
DEFAULT_CHECKPOINT_DELAY_SECS = 3600
# "Wait": AWS waits one hour for scale-in protection / standby to be removed, then fails.
PROTECTED_WAIT_SECS = 3600
# A replacement fails when its new instance is not InService and Healthy this long after launch.
# AWS does not publish this number; lifecycle hooks usually end a launch far sooner (the hook's
# HeartbeatTimeout with DefaultResult ABANDON).
REPLACEMENT_TIMEOUT_SECS = 3600
# Lifecycle actions end at the latest after min(100 x HeartbeatTimeout, 48 hours) (AWS limit).
GLOBAL_TIMEOUT_SECS = 172800
# An instance marked Unhealthy stays visible as InService/Unhealthy this long (emulated seconds)
# before Amazon EC2 Auto Scaling starts replacing it. AWS: "almost immediately scheduled for
# replacement", no number published.
HEALTH_REPLACEMENT_DELAY_SECS = 10

_lock = threading.RLock()
_cond = threading.Condition(_lock)
_stop = threading.Event()
_thread: threading.Thread | None = None
_installed = False
_scale = 1.0
# Set by _wake(); a change made by the background thread itself cannot be seen through notify().
_woken = False
# The Auto Scaling action being handled on this thread (``kind``: "SetDesiredCapacity",
# "UpdateAutoScalingGroup"), for the Cause of the activities it starts.
_request = threading.local()

# InstanceRefresh records, oldest first, per (account, region, group name).
_refreshes: dict[tuple[str, str, str], list[Refresh]] = {}
# Open lifecycle actions by token.
_actions: dict[str, LifecycleAction] = {}
# Groups whose capacity must be re-checked by the background thread.
_dirty: set[Any] = set()
# Instances marked Unhealthy, waiting for their health replacement.
_unhealthy: list[Any] = []
# Other periodic work (CloudWatch alarm evaluation): callables ``(now) -> next due or None``,
# run by the background thread under the lock.
_periodic: list[Any] = []


def _time_scale() -> float:
    raw = os.environ.get("BAKE_EMULATOR_TIME_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"BAKE_EMULATOR_TIME_SCALE: {raw!r} is not a positive number (e.g. 0.01)"
        )
    return value


def _wake() -> None:
    """Something changed: the background thread looks again at once.

    Takes the (reentrant) lock itself: moto's CloudFormation creates groups through
    FakeAutoScalingGroup.__init__ -> set_desired_capacity without holding it."""
    global _woken
    with _cond:
        _woken = True
        _cond.notify_all()


def _delay(secs: float) -> float:
    """Real seconds for an emulated delay of ``secs``."""
    return float(secs) * _scale


def _now() -> float:
    return time.monotonic()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _log(msg: str) -> None:
    print(f"bake_emulator.autoscaling: {msg}", file=sys.stderr, flush=True)


class _Error(ServiceException):
    """An Auto Scaling error whose code is one of the service model's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


def _validation(message: str) -> ValidationError:
    return ValidationError(message)


# ---------------------------------------------------------------------------------------------
# Launch configuration of a group or a refresh
# ---------------------------------------------------------------------------------------------


class Config:
    """What instances are launched from: a launch template + version spec, or a launch config."""

    def __init__(self, template: Any = None, version: str | None = None, lc: Any = None):
        self.template = template
        self.version = version or "$Default"
        self.lc = lc

    @classmethod
    def of_group(cls, group: Any) -> Config:
        if group.ec2_launch_template is not None:
            return cls(group.ec2_launch_template, getattr(group, "launch_template_version", None))
        return cls(lc=group.launch_config)

    def resolve(self) -> Any:
        """The concrete launch template version (moto LaunchTemplateVersion)."""
        return self.template.get_version(self.version)

    def is_symbolic(self) -> bool:
        return self.template is not None and self.version.lower() in ("$latest", "$default")

    def matches(self, state: Any) -> bool:
        """Whether an instance was launched from this configuration (SkipMatching)."""
        if self.template is not None:
            lt = getattr(state, "bake_launch_template", None)
            if lt is None:
                return False
            return lt["LaunchTemplateId"] == self.template.id and lt["Version"] == str(
                self.resolve().number
            )
        lc_name = getattr(state, "bake_launch_configuration_name", None)
        return self.lc is not None and lc_name == self.lc.name

    def apply_to(self, group: Any) -> None:
        if self.template is not None:
            group.ec2_launch_template = self.template
            group.launch_template_version = self.version
            group.provided_launch_template_version = self.version
            group.launch_config = None
            if hasattr(group, "launch_configuration_name"):
                group.launch_configuration_name = None
        else:
            group.launch_config = self.lc
            group.launch_configuration_name = self.lc.name
            group.ec2_launch_template = None

    def spec(self) -> dict[str, Any]:
        if self.template is None:
            return {}
        return {
            "LaunchTemplateId": self.template.id,
            "LaunchTemplateName": self.template.name,
            "Version": self.version,
        }


def _launch_config_for(group: Any) -> Config:
    """New instances follow the active refresh's target configuration, else the group's."""
    refresh = _active_refresh(group)
    if refresh is not None and refresh.target is not None:
        return refresh.target
    return Config.of_group(group)


# ---------------------------------------------------------------------------------------------
# Instances: launch, lifecycle hooks, termination
# ---------------------------------------------------------------------------------------------


class LifecycleAction:
    """An open lifecycle action: one hook, one instance."""

    def __init__(self, hook: Any, state: Any, group: Any) -> None:
        self.token = str(uuid.uuid4())
        self.hook_name = hook.name
        self.transition = hook.lifecycle_transition
        self.heartbeat_secs = int(hook.heartbeat_timeout or 3600)
        self.default_result = (hook.default_result or "ABANDON").upper()
        self.state = state
        self.group = group
        start = _now()
        self.deadline = start + _delay(self.heartbeat_secs)
        self.global_deadline = start + _delay(
            min(100 * self.heartbeat_secs, GLOBAL_TIMEOUT_SECS)
        )

    def heartbeat(self) -> None:
        self.deadline = min(_now() + _delay(self.heartbeat_secs), self.global_deadline)

    def due(self) -> float:
        return min(self.deadline, self.global_deadline)


# ---------------------------------------------------------------------------------------------
# Scaling activities
# ---------------------------------------------------------------------------------------------

# Progress of an activity still in progress. AWS publishes no scale: 0 when it begins (the
# TerminateInstanceInAutoScalingGroup example), 50 for an instance being taken out of service (the
# DetachInstances and EnterStandby examples, a termination in the console), 100 once it ended.
# 30 for a launch waiting on its lifecycle hooks is the emulator's.
LAUNCH_WAIT_PROGRESS = 30
TERMINATE_WAIT_PROGRESS = 50
# StatusMessage of a launch abandoned through its lifecycle hook (CompleteLifecycleAction ABANDON
# or DefaultResult ABANDON on timeout), from the user guide's troubleshooting chapter and
# lifecycle hook tutorials, where the activity is "Cancelled".
ABANDONED_MESSAGE = (
    "Instance failed to complete user's Lifecycle Action: Lifecycle Action with token {token}"
    " was abandoned: Lifecycle Action Completed with ABANDON Result"
)
# StatusMessage of a launch whose instance the group took out of service before it was InService
# (a refresh replacement aborted, a scale-in, a deletion). AWS documents no wording: made up.
INTERRUPTED_MESSAGE = "The instance was taken out of service before its launch completed."
# Most activity IDs a DescribeScalingActivities request may name (API reference).
MAX_ACTIVITY_IDS = 50

_activity_seq = itertools.count(1)


def _timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _at(text: str) -> str:
    """One sentence of an activity's Cause: "At 2020-10-30T19:36:07Z an instance was ..."."""
    return f"At {_timestamp(_utcnow())} {text}"


def _cause(*sentences: str | None) -> str:
    """AWS joins the sentences of a Cause with two spaces."""
    return "  ".join(s for s in sentences if s)


def _activity_log(backend: Any) -> list[Activity]:
    """The activities of one account and Region, oldest first. Kept on moto's backend, so that
    ``/moto-api/reset`` (a new backend state) clears them, as it clears the groups."""
    log = backend.__dict__.get("bake_activities")
    if log is None:
        log = backend.bake_activities = []
    return log


class Activity:
    """One scaling activity: the launch or the termination of one instance (Activity in the API
    reference: "a long-running process that represents a change to your Auto Scaling group, such
    as changing its size or replacing an instance")."""

    def __init__(self, state: Any, description: str, cause: str) -> None:
        group = state.auto_scaling_group
        self.id = str(uuid.uuid4())
        self.seq = next(_activity_seq)
        self.group = group
        self.group_name = group.name
        try:
            self.group_arn: str | None = group.arn
        except AttributeError:  # a group moto has not finished constructing
            self.group_arn = None
        self.description = description
        # Activity.Cause: "Maximum length of 1023" (a scale-in of many instances names them all).
        self.cause = cause[:1023]
        self.start_time = _utcnow()
        self.end_time: datetime | None = None
        self.status_code = "InProgress"
        self.status_message: str | None = None
        self.progress = 0
        details: dict[str, str] = {}
        subnet_id = getattr(state.instance, "subnet_id", None)
        if subnet_id:
            details["Subnet ID"] = subnet_id
        details["Availability Zone"] = state.availability_zone
        self.details = json.dumps(details, separators=(",", ":"))
        _activity_log(group.autoscaling_backend).append(self)
        # The activity as it began: what TerminateInstanceInAutoScalingGroup returns ("InProgress",
        # Progress 0), even when the emulator has already finished it.
        self.started = self.describe()

    @property
    def in_progress(self) -> bool:
        return self.end_time is None

    def finish(self, status: str, message: str | None = None) -> None:
        """End the activity: ``Successful``, ``Failed`` or ``Cancelled`` (with a StatusMessage)."""
        if not self.in_progress:
            return
        self.status_code = status
        self.progress = 100
        self.end_time = _utcnow()
        if message:
            self.status_message = message
            # As in the troubleshooting chapter's examples: "Launching a new EC2 instance:
            # i-003a5b3ffe1e9358e.  Status Reason: Instance failed to complete ..."
            self.description = f"{self.description}.  Status Reason: {message}"

    def group_deleted(self) -> bool:
        group = self.group
        if getattr(group, "bake_creating", False):
            return False
        return group.autoscaling_backend.autoscaling_groups.get(group.name) is not group

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ActivityId": self.id,
            "AutoScalingGroupName": self.group_name,
            "Description": self.description,
            "Cause": self.cause,
            "StartTime": self.start_time,
            "StatusCode": self.status_code,
            "Progress": self.progress,
            "Details": self.details,
        }
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.status_message:
            out["StatusMessage"] = self.status_message
        if self.group_arn:
            out["AutoScalingGroupARN"] = self.group_arn
        if self.group_deleted():
            # "The state of the Auto Scaling group, which is either InService or Deleted"; AWS's
            # examples show it only for a deleted group.
            out["AutoScalingGroupState"] = "Deleted"
        return out


def _launch_activity(state: Any) -> Activity | None:
    return getattr(state, "bake_launch_activity", None)


def _interrupt_launch(state: Any) -> None:
    """The instance leaves before its launch completed: its launch activity is Cancelled."""
    activity = _launch_activity(state)
    if activity is not None and activity.in_progress:
        activity.finish("Cancelled", INTERRUPTED_MESSAGE)


def _terminate_activity(state: Any, cause: str | None) -> Activity:
    """The instance's termination activity, begun now unless one is already in progress."""
    activity = getattr(state, "bake_terminate_activity", None)
    if activity is None or not activity.in_progress:
        if cause is None:
            cause = _at(f"instance {state.instance_id} was taken out of service.")
        activity = Activity(state, f"Terminating EC2 instance: {state.instance_id}", cause)
        state.bake_terminate_activity = activity
    return activity


def _hooks(group: Any, transition: str) -> list[Any]:
    backend = group.autoscaling_backend
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group.name and h.lifecycle_transition == transition
    ]


def _instance_actions(state: Any, transition: str | None = None) -> list[LifecycleAction]:
    return [
        a
        for a in _actions.values()
        if a.state is state and (transition is None or a.transition == transition)
    ]


def _is_live(state: Any) -> bool:
    return state.lifecycle_state in LIVE_STATES


def _pick_zone(group: Any, extra: dict[str, int] | None = None) -> tuple[str, str | None]:
    """Availability zone (and subnet) with the fewest live instances: AWS balances across AZs.
    ``extra``: instances per zone about to be launched."""
    subnets: list[tuple[str, str | None]] = []
    if group.vpc_zone_identifier:
        ids = [s for s in group.vpc_zone_identifier.split(",") if s]
        for subnet in group.autoscaling_backend.ec2_backend.describe_subnets(subnet_ids=ids):
            subnets.append((subnet.availability_zone, subnet.id))
    else:
        subnets = [(az, None) for az in group.availability_zones]
    counts: dict[str, int] = dict(extra or {})
    for s in group.instance_states:
        if _is_live(s):
            counts[s.availability_zone] = counts.get(s.availability_zone, 0) + 1
    return min(subnets, key=lambda z: counts.get(z[0], 0))


def _launch(
    group: Any, count: int, config: Config | None = None, cause: str | None = None
) -> list[Any]:
    """Launch ``count`` instances into ``group``; through the launch hooks when there are any.

    Each launch is a scaling activity with ``cause`` (default: the difference between desired and
    actual capacity), in progress until the instance is InService."""
    config = config or _launch_config_for(group)
    if cause is None:
        live = len([s for s in group.instance_states if _is_live(s) and not _draining(s)])
        cause = _at(
            "an instance was started in response to a difference between desired and actual"
            f" capacity, increasing the capacity from {live} to {live + count}."
        )
    ec2 = group.autoscaling_backend.ec2_backend
    hooks = _hooks(group, LAUNCH_TRANSITION)
    launched = []
    # One EC2 reservation per availability zone and launch, as moto does for a group's launch.
    placements: list[tuple[tuple[str, str | None], int]] = []
    extra: dict[str, int] = {}
    for _ in range(count):
        zone = _pick_zone(group, extra)
        extra[zone[0]] = extra.get(zone[0], 0) + 1
        if placements and placements[-1][0] == zone:
            placements[-1] = (zone, placements[-1][1] + 1)
        else:
            placements.append((zone, 1))
    for (zone, subnet_id), n in placements:
        tags = group.get_propagated_tags()
        tags[as_models.ASG_NAME_TAG] = group.name
        lt_record = None
        if config.template is not None:
            version = config.resolve()
            tags.update(version.instance_tags)
            lt_record = {
                "LaunchTemplateId": config.template.id,
                "LaunchTemplateName": config.template.name,
                "Version": str(version.number),
            }
            reservation = ec2.run_instances(
                version.image_id,
                n,
                version.user_data,
                version.security_groups,
                instance_type=version.instance_type,
                tags={"instance": tags},
                placement=zone,
                launch_template={
                    "LaunchTemplateId": config.template.id,
                    "Version": str(version.number),
                },
                is_instance_type_default=False,
                subnet_id=subnet_id,
            )
        else:
            lc = config.lc
            reservation = ec2.run_instances(
                lc.image_id,
                n,
                lc.user_data,
                lc.security_groups,
                instance_type=lc.instance_type,
                tags={"instance": tags},
                placement=zone,
                launch_config=lc,
                is_instance_type_default=False,
                associate_public_ip=lc.associate_public_ip_address,
                subnet_id=subnet_id,
            )
        for instance in reservation.instances:
            instance.autoscaling_group = group
            state = as_models.InstanceState(
                instance,
                lifecycle_state="Pending:Wait" if hooks else "InService",
                protected_from_scale_in=group.new_instances_protected_from_scale_in,
                autoscaling_group=group,
            )
            state.bake_launch_template = lt_record
            state.bake_launch_configuration_name = config.lc.name if config.lc else None
            state.bake_launched_at = _now()
            state.bake_in_service_at = None if hooks else _now()
            state.bake_draining = False
            group.instance_states.append(state)
            activity = Activity(state, f"Launching a new EC2 instance: {instance.id}", cause)
            state.bake_launch_activity = activity
            if hooks:
                activity.progress = LAUNCH_WAIT_PROGRESS
            else:
                activity.finish("Successful")
            for hook in hooks:
                action = LifecycleAction(hook, state, group)
                _actions[action.token] = action
            launched.append(state)
    _refresh_load_balancers(group)
    _wake()
    return launched


def _refresh_load_balancers(group: Any) -> None:
    backend = group.autoscaling_backend
    if backend.autoscaling_groups.get(group.name) is group:
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)


def _to_in_service(state: Any) -> None:
    state.lifecycle_state = "InService"
    state.bake_in_service_at = _now()
    # "the instance remains in a wait state until you either complete the lifecycle action, or
    # the timeout period ends": the launch activity ends with it.
    activity = _launch_activity(state)
    if activity is not None:
        activity.finish("Successful")
    _refresh_load_balancers(state.auto_scaling_group)


def _begin_terminate(state: Any, run_hooks: bool = True, cause: str | None = None) -> None:
    """Take an instance out of service: Terminating:Wait while terminate hooks are open.

    Begins the instance's termination activity (``cause``), in progress until it left the
    group; a launch still in progress is Cancelled."""
    group = state.auto_scaling_group
    for action in _instance_actions(state):
        _actions.pop(action.token, None)
    _interrupt_launch(state)
    activity = _terminate_activity(state, cause)
    hooks = _hooks(group, TERMINATE_TRANSITION) if run_hooks else []
    if getattr(group, "bake_deleting", False):
        hooks = []
    if hooks:
        state.lifecycle_state = "Terminating:Wait"
        activity.progress = TERMINATE_WAIT_PROGRESS
        for hook in hooks:
            action = LifecycleAction(hook, state, group)
            _actions[action.token] = action
        _refresh_load_balancers(group)
        _wake()
    else:
        _finish_terminate(state)


def _finish_terminate(state: Any, cause: str | None = None) -> None:
    """The instance leaves the group and EC2 terminates it. Its termination activity, if any (or
    a new one when ``cause`` is given), ends Successful; a launch still in progress is Cancelled
    (an abandoned launch has been Cancelled by its lifecycle action already)."""
    group = state.auto_scaling_group
    for action in _instance_actions(state):
        _actions.pop(action.token, None)
    _interrupt_launch(state)
    activity = getattr(state, "bake_terminate_activity", None)
    if cause is not None and (activity is None or not activity.in_progress):
        activity = _terminate_activity(state, cause)
    if activity is not None:
        activity.finish("Successful")
    state.lifecycle_state = "Terminated"
    if state in group.instance_states:
        group.instance_states.remove(state)
    ec2 = group.autoscaling_backend.ec2_backend
    # "Termination protection does not prevent Amazon EC2 Auto Scaling from terminating an
    # instance" (EC2 user guide): the group terminates it whatever DisableApiTermination says.
    state.instance.disable_api_termination = False
    try:
        ec2.terminate_instances([state.instance_id])
    except Exception as exc:  # already gone from EC2: nothing left to do
        _log(f"terminating {state.instance_id}: {exc}")
    _refresh_load_balancers(group)
    _dirty.add(group)
    _wake()


def _reconcile(group: Any, trigger: str | None = None, launch_reason: str | None = None) -> None:
    """Bring the number of live instances to the desired capacity (launch or terminate).

    ``trigger``: the first sentence of the activities' Cause, the request that changed the
    desired capacity ("At ... a user request explicitly set group desired capacity changing the
    desired capacity from 1 to 2."); ``launch_reason``: why instances are launched, when it is
    not the difference between desired and actual capacity."""
    backend = group.autoscaling_backend
    if backend.autoscaling_groups.get(group.name) is not group and not getattr(
        group, "bake_creating", False
    ):
        return
    desired = group.desired_capacity or 0
    live = [s for s in group.instance_states if _is_live(s) and not _draining(s)]
    delta = desired - len(live)
    if delta > 0:
        reason = launch_reason or (
            "an instance was started in response to a difference between desired and actual"
            f" capacity, increasing the capacity from {len(live)} to {desired}."
        )
        _launch(group, delta, cause=_cause(trigger, _at(reason)))
    elif delta < 0:
        target = _launch_config_for(group)
        candidates = [s for s in live if not s.protected_from_scale_in]
        # Default termination policy, simplified: instances not on the current configuration
        # first, then the oldest.
        candidates.sort(
            key=lambda s: (
                target.matches(s),
                s.lifecycle_state == "InService",
                getattr(s, "bake_launched_at", 0.0),
            )
        )
        selected = candidates[:-delta]
        cause = _cause(
            trigger,
            _at(
                "an instance was taken out of service in response to a difference between"
                f" desired and actual capacity, shrinking the capacity from {len(live)} to"
                f" {desired}."
            ),
            *(_at(f"instance {s.instance_id} was selected for termination.") for s in selected),
        )
        for state in selected:
            _begin_terminate(state, cause=cause)


def _draining(state: Any) -> bool:
    """An instance kept running only until its refresh replacement is ready (not counted)."""
    return bool(getattr(state, "bake_draining", False))


def _find_state(backend: Any, instance_id: str) -> Any:
    for group in backend.autoscaling_groups.values():
        for state in group.instance_states:
            if state.instance_id == instance_id:
                return state
    return None


# ---------------------------------------------------------------------------------------------
# Instance refresh
# ---------------------------------------------------------------------------------------------


class Refresh:
    """One instance refresh and its progress (InstanceRefresh in the API)."""

    def __init__(self, backend: Any, group: Any, prefs: dict[str, Any], desired: Any) -> None:
        self.id = str(uuid.uuid4())
        self.backend = backend
        self.group_name = group.name
        self.status = "Pending"
        self.status_reason: str | None = None
        self.start_time = _utcnow()
        self.end_time: datetime | None = None
        self.prefs = prefs
        self.desired_configuration = desired
        self.previous = Config.of_group(group)
        self.target: Config | None = None
        self.mode = "forward"
        self.plan: list[str] = []
        self.total = 0
        self.done: set[str] = set()
        self.in_flight: dict[str, str | None] = {}
        self.checkpoint_index = 0
        self.checkpoint_until: float | None = None
        self.bake_until: float | None = None
        self.wait_since: float | None = None
        self.wait_for_transitioning = True
        self.rollback_details: dict[str, Any] | None = None
        # Rollback: when it began (monotonic), and the instances the group launched since to
        # restore its capacity, watched until InService.
        self.rollback_began: float | None = None
        self.refills: set[str] = set()

    # -- progress ------------------------------------------------------------------------------

    def instances_to_update(self) -> int:
        """Instances of the plan not replaced yet (forward: still to update; rollback: still on
        the refresh's configuration)."""
        return len([i for i in self.plan if i not in self.done])

    def percentage(self) -> int:
        if self.total <= 0:
            return 100
        updated = self.total - self.instances_to_update()
        return max(0, min(100, (100 * updated) // self.total))

    def reported_progress(self) -> tuple[int, int]:
        """(PercentageComplete, InstancesToUpdate) as DescribeInstanceRefreshes reports them.

        During and after a rollback (InstanceRefresh): "PercentageComplete does not include
        instances that are replaced during a rollback. This value gradually goes back down to
        zero during a rollback." and "If you roll back the instance refresh, InstancesToUpdate
        shows you the number of instances that were not yet updated by the instance refresh."
        """
        if self.mode != "rollback" or not self.rollback_details:
            return self.percentage(), self.instances_to_update()
        pct0 = self.rollback_details["PercentageCompleteOnRollback"]
        todo0 = self.rollback_details["InstancesToUpdateOnRollback"]
        if not self.plan:
            return 0, todo0
        return (pct0 * self.instances_to_update()) // len(self.plan), todo0

    def describe(self) -> dict[str, Any]:
        pct, todo = self.reported_progress()
        if self.status == "Pending":
            pct, todo = 0, None
        out: dict[str, Any] = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group_name,
            "Strategy": "Rolling",
            "Status": self.status,
            "StartTime": self.start_time,
            "PercentageComplete": pct,
            "Preferences": self.prefs,
        }
        if todo is not None:
            out["InstancesToUpdate"] = todo
            out["ProgressDetails"] = {
                "LivePoolProgress": {"PercentageComplete": pct, "InstancesToUpdate": todo},
                "WarmPoolProgress": {"PercentageComplete": 100, "InstancesToUpdate": 0},
            }
        if self.status_reason:
            out["StatusReason"] = self.status_reason
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.desired_configuration:
            out["DesiredConfiguration"] = self.desired_configuration
        if self.rollback_details:
            out["RollbackDetails"] = self.rollback_details
        return out

    # -- planning ------------------------------------------------------------------------------

    def start(self, group: Any) -> None:
        """Pending -> InProgress: decide which instances need replacing."""
        self.status = "InProgress"
        self.status_reason = None
        live = [s for s in group.instance_states if _is_live(s)]
        self.total = len(live)
        skip = self.prefs.get("SkipMatching", False)
        self.plan = []
        for s in live:
            if skip and self.target.matches(s):
                continue
            self.plan.append(s.instance_id)

    def begin_rollback(self, group: Any, reason: str) -> None:
        """Undo what was deployed so far: replace instances not on the previous configuration."""
        self.rollback_details = {
            "RollbackReason": reason,
            "RollbackStartTime": _utcnow(),
            "PercentageCompleteOnRollback": self.percentage(),
            "InstancesToUpdateOnRollback": self.instances_to_update(),
            "ProgressDetailsOnRollback": {
                "LivePoolProgress": {
                    "PercentageComplete": self.percentage(),
                    "InstancesToUpdate": self.instances_to_update(),
                },
                "WarmPoolProgress": {"PercentageComplete": 100, "InstancesToUpdate": 0},
            },
        }
        self._abort_in_flight(group)
        self.mode = "rollback"
        self.rollback_began = _now()
        self.refills = set()
        self.status = "RollbackInProgress"
        self.status_reason = reason
        self.target = self.previous
        self.checkpoint_until = None
        self.bake_until = None
        self.wait_since = None
        live = [s for s in group.instance_states if _is_live(s)]
        self.total = len(live)
        self.plan = [s.instance_id for s in live if not self.target.matches(s)]
        self.done = set()
        self.in_flight = {}

    def _settled(self, group: Any) -> bool:
        """The group is back on ``self.target`` at its desired capacity, every instance
        InService and healthy (what RollbackSuccessful promises)."""
        live = [s for s in group.instance_states if _is_live(s)]
        if len(live) != (group.desired_capacity or 0):
            return False
        return all(
            s.lifecycle_state == "InService"
            and s.health_status == "Healthy"
            and self.target.matches(s)
            for s in live
        )

    def _abort_in_flight(self, group: Any) -> None:
        """Terminate replacements that have not finished launching; keep their old instances."""
        for new_id, old_id in list(self.in_flight.items()):
            state = _find_state(self.backend, new_id)
            if state is not None and state.lifecycle_state.startswith("Pending"):
                _begin_terminate(state, cause=_refresh_terminate_cause(state))
            if old_id:
                old = _find_state(self.backend, old_id)
                if old is not None:
                    old.bake_draining = False
        self.in_flight = {}

    def finish(self, status: str, reason: str | None) -> None:
        self.status = status
        self.status_reason = reason
        self.end_time = _utcnow()
        for old_id in self.in_flight.values():
            if old_id:
                old = _find_state(self.backend, old_id)
                if old is not None:
                    old.bake_draining = False
        group = self.backend.autoscaling_groups.get(self.group_name)
        if group is not None:
            _dirty.add(group)

    # -- one step of the background thread ------------------------------------------------------

    def step(self, group: Any, now: float) -> float | None:
        """Advance this refresh; returns when it next needs attention (monotonic), if known."""
        if self.status == "Pending":
            self.start(group)

        if self.status in ("InProgress", "Baking") and self.mode == "forward":
            alarm = self._alarm_in_alarm()
            if alarm:
                return self._failed(group, f"CloudWatch alarm {alarm} is in ALARM state.")

        warmup = self.prefs["InstanceWarmup"]
        failed = []
        next_due: float | None = None
        for new_id, old_id in list(self.in_flight.items()):
            state = _find_state(self.backend, new_id)
            if state is None or not _is_live(state) or state.health_status != "Healthy":
                failed.append(new_id)
                continue
            if state.lifecycle_state == "InService" and state.bake_in_service_at is not None:
                ready_at = state.bake_in_service_at + _delay(warmup)
                if now >= ready_at:
                    del self.in_flight[new_id]
                    if old_id:
                        self.done.add(old_id)
                        old = _find_state(self.backend, old_id)
                        if old is not None and old.bake_draining:
                            old.bake_draining = False
                            _begin_terminate(old, cause=_refresh_terminate_cause(old))
                    continue
                next_due = _min(next_due, ready_at)
            else:
                timeout_at = state.bake_launched_at + _delay(REPLACEMENT_TIMEOUT_SECS)
                if now >= timeout_at:
                    failed.append(new_id)
                    continue
                next_due = _min(next_due, timeout_at)
        if failed:
            for new_id in failed:
                old_id = self.in_flight.pop(new_id, None)
                if old_id:
                    old = _find_state(self.backend, old_id)
                    if old is not None:
                        old.bake_draining = False
            if self.status != "Cancelling":
                ids = ", ".join(failed)
                return self._failed(
                    group,
                    f"Replacement instance(s) {ids} failed to launch or to become healthy.",
                )
            # Cancelling: a failed replacement is one less to wait for; the refresh still ends
            # Cancelled ("Cancelling" -> "Cancelled"), neither Failed nor rolled back.

        # Old instances that left the group by other means (scale-in, health) were not updated:
        # they leave the plan and the group's count instead of counting as replaced.
        for old_id in list(self.plan):
            if old_id in self.done or old_id in self.in_flight.values():
                continue
            state = _find_state(self.backend, old_id)
            if state is None or not _is_live(state):
                self.plan.remove(old_id)
                self.total = max(0, self.total - 1)

        if self.mode == "rollback" and self.status == "RollbackInProgress":
            # The group's own launches since the rollback began restore its capacity: the rollback
            # cannot succeed without them, and fails when one fails (never gets InService and
            # healthy, or not within REPLACEMENT_TIMEOUT_SECS).
            for s in group.instance_states:
                if (
                    s.lifecycle_state.startswith("Pending")
                    and s.instance_id not in self.in_flight
                    and getattr(s, "bake_launched_at", 0.0) >= (self.rollback_began or 0.0)
                ):
                    self.refills.add(s.instance_id)
            failed_refills = []
            for refill_id in sorted(self.refills):
                state = _find_state(self.backend, refill_id)
                if state is None or not _is_live(state) or state.health_status != "Healthy":
                    failed_refills.append(refill_id)
                elif state.lifecycle_state == "InService":
                    self.refills.discard(refill_id)
                elif now >= state.bake_launched_at + _delay(REPLACEMENT_TIMEOUT_SECS):
                    failed_refills.append(refill_id)
                else:
                    next_due = _min(next_due, state.bake_launched_at + _delay(REPLACEMENT_TIMEOUT_SECS))
            if failed_refills:
                self.refills.difference_update(failed_refills)
                return self._failed(
                    group,
                    f"Instance(s) {', '.join(failed_refills)} launched to restore the desired"
                    " capacity failed to launch or to become healthy.",
                )
            # Instances launched on the refresh's configuration after the rollback started (a
            # scale-out or a health replacement decided before) are rolled back as well.
            in_flight_new = set(self.in_flight)
            for s in group.instance_states:
                if (
                    s.lifecycle_state == "InService"
                    and s.instance_id not in self.plan
                    and s.instance_id not in in_flight_new
                    and not self.target.matches(s)
                ):
                    self.plan.append(s.instance_id)
                    self.total += 1

        if self.status == "Cancelling":
            if not self.in_flight or not self.wait_for_transitioning:
                self.finish("Cancelled", "Instance refresh was cancelled.")
                return None
            return next_due

        if self.status == "Baking":
            if now >= self.bake_until:
                self._succeeded(group)
                return None
            return self.bake_until

        if self.instances_to_update() == 0 and not self.in_flight:
            if self.mode == "rollback":
                # The instances that refill aborted replacements are launched by the group, not
                # by the rollback: it succeeds once the group is whole again.
                if not self._settled(group):
                    self.status_reason = (
                        "Waiting for the Auto Scaling group to be back at its desired capacity"
                        " on the previous configuration."
                    )
                    return None
                self.finish("RollbackSuccessful", "Instance refresh was rolled back successfully.")
                return None
            bake = self.prefs.get("BakeTime", 0)
            if bake > 0:
                self.status = "Baking"
                self.status_reason = "Waiting for the bake time to elapse."
                self.bake_until = now + _delay(bake)
                return self.bake_until
            self._succeeded(group)
            return None

        # Checkpoints (forward only).
        cap = None
        checkpoints = self.prefs.get("CheckpointPercentages") or []
        if self.mode == "forward" and self.checkpoint_index < len(checkpoints):
            if self.checkpoint_until is not None:
                if now < self.checkpoint_until:
                    return self.checkpoint_until
                self.checkpoint_until = None
                self.checkpoint_index += 1
                self.status_reason = None
                if self.checkpoint_index >= len(checkpoints) and checkpoints[-1] < 100:
                    # "To replace all instances, the last number in the array must be 100."
                    self._succeeded(group)
                    return None
            if self.checkpoint_index < len(checkpoints):
                cp = checkpoints[self.checkpoint_index]
                needed = math.ceil(self.total * cp / 100)
                updated = self.total - self.instances_to_update()
                if updated >= needed and not self.in_flight and cp < 100:
                    # "Checkpoints can be skipped in some cases": every checkpoint below 100
                    # that this many replacements reach is waited for once, at the highest.
                    while (
                        self.checkpoint_index + 1 < len(checkpoints)
                        and checkpoints[self.checkpoint_index + 1] < 100
                        and updated
                        >= math.ceil(self.total * checkpoints[self.checkpoint_index + 1] / 100)
                    ):
                        self.checkpoint_index += 1
                    cp = checkpoints[self.checkpoint_index]
                    delay = self.prefs.get("CheckpointDelay", DEFAULT_CHECKPOINT_DELAY_SECS)
                    self.checkpoint_until = now + _delay(delay)
                    self.status_reason = (
                        f"Waiting for checkpoint: {self.percentage()}% of the instances are"
                        f" replaced (checkpoint {cp}%); continuing after {delay} seconds."
                    )
                    return self.checkpoint_until
                cap = needed - updated - len(self.in_flight)

        due = self._replace_some(group, now, cap)
        return _min(next_due, due)

    def _replace_some(self, group: Any, now: float, cap: int | None) -> float | None:
        in_flight_old = set(v for v in self.in_flight.values() if v)
        candidates = []
        blocked = []
        for old_id in self.plan:
            if old_id in self.done or old_id in in_flight_old:
                continue
            state = _find_state(self.backend, old_id)
            if state is None or state.lifecycle_state != "InService":
                continue
            if state.protected_from_scale_in:
                policy = self.prefs["ScaleInProtectedInstances"]
                if policy == "Ignore":
                    self.done.add(old_id)
                    continue
                if policy == "Wait":
                    blocked.append(old_id)
                    continue
            candidates.append(state)
        if blocked and not candidates and not self.in_flight:
            if self.wait_since is None:
                self.wait_since = now
            until = self.wait_since + _delay(PROTECTED_WAIT_SECS)
            self.status_reason = (
                "Waiting for instances protected from scale in to be unprotected: "
                + ", ".join(blocked)
            )
            if now >= until:
                return self._failed(
                    group,
                    "Instance refresh timed out waiting for scale-in protection to be removed"
                    " from: " + ", ".join(blocked),
                )
            return until
        self.wait_since = None
        if not candidates:
            return None

        desired = group.desired_capacity or 0
        min_pct = self.prefs["MinHealthyPercentage"]
        max_pct = self.prefs["MaxHealthyPercentage"]
        # Instance maintenance policies: "your Auto Scaling group can only increase and decrease
        # capacity within that minimum-maximum range when replacing instances".
        min_healthy = math.ceil(desired * min_pct / 100)
        max_total = max(desired + 1, (desired * max_pct) // 100) if max_pct > 100 else desired
        warmup = self.prefs["InstanceWarmup"]
        in_flight_new = set(self.in_flight)
        live = [s for s in group.instance_states if _is_live(s)]
        healthy = 0
        for s in live:
            if s.lifecycle_state != "InService" or s.health_status != "Healthy":
                continue
            if s.instance_id in in_flight_new:
                continue
            if _draining(s):
                # Counted until its replacement is ready.
                healthy += 1
                continue
            if (
                getattr(s, "bake_in_service_at", None) is not None
                and now < s.bake_in_service_at + _delay(warmup)
            ):
                continue
            healthy += 1
        # In flight, whoever launched it: the refresh's replacements (until ready), and every
        # instance not InService and healthy: a health replacement, the refill of an aborted
        # replacement, an instance marked Unhealthy.
        in_flight_any = len(self.in_flight) + sum(
            1
            for s in live
            if s.instance_id not in in_flight_new
            and (s.lifecycle_state != "InService" or s.health_status != "Healthy")
        )
        # Capacity the group has yet to launch (an aborted replacement's slot, say) is missing,
        # not spare.
        in_flight_any += max(0, desired - len([s for s in live if not _draining(s)]))

        # Terminate and launch while healthy capacity stays at or above the lower bound; with
        # MaxHealthyPercentage > 100, launch before terminating while the group stays at or
        # below the upper bound.
        terminate_room = healthy - min_healthy
        launch_room = max_total - len(live) if max_pct > 100 else 0
        if terminate_room <= 0 and launch_room <= 0 and in_flight_any == 0:
            # At least one at a time, but only when nothing at all is in flight: never below
            # the minimum because of an instance launched by someone else.
            terminate_room = 1
        budget = len(candidates) if cap is None else min(cap, len(candidates))
        count = 0
        for old in candidates:
            if count >= budget:
                break
            if launch_room > 0:
                launch_room -= 1
                old.bake_draining = True
            elif terminate_room > 0:
                terminate_room -= 1
                _begin_terminate(old, cause=_refresh_terminate_cause(old))
            else:
                break
            (new,) = _launch(group, 1, self.target, cause=_at(REFRESH_LAUNCH_REASON))
            self.in_flight[new.instance_id] = old.instance_id
            count += 1
        if count:
            self.status_reason = None
        return None

    def _failed(self, group: Any, reason: str) -> float | None:
        if (
            self.mode == "forward"
            and self.prefs.get("AutoRollback")
            and self.desired_configuration
        ):
            self.begin_rollback(group, f"Instance refresh failed: {reason} Rolling back.")
            return _now()
        if self.mode == "rollback":
            self._abort_in_flight(group)
            self.finish("RollbackFailed", f"Rollback failed: {reason}")
            return None
        self._abort_in_flight(group)
        self.finish("Failed", reason)
        return None

    def _succeeded(self, group: Any) -> None:
        if self.desired_configuration:
            self.target.apply_to(group)
        self.finish("Successful", None)

    def _alarm_in_alarm(self) -> str | None:
        alarms = (self.prefs.get("AlarmSpecification") or {}).get("Alarms") or []
        if not alarms:
            return None
        try:
            from moto.cloudwatch.models import cloudwatch_backends

            cw = cloudwatch_backends[self.backend.account_id][self.backend.region_name]
            for name in alarms:
                alarm = cw.alarms.get(name)
                if alarm is not None and alarm.state_value == "ALARM":
                    return name
        except Exception as exc:  # CloudWatch state changing under us: look again next tick
            _log(f"reading alarms: {exc}")
        return None


# Causes of the activities of an instance refresh (and of its rollback). The termination's, with
# "selected for termination", is AWS's (as in its notifications); the launch's is not in the AWS
# documentation, it is the wording of public examples of refresh launch events.
REFRESH_LAUNCH_REASON = "an instance was launched in response to an instance refresh."


def _refresh_terminate_cause(state: Any) -> str:
    return _cause(
        _at("an instance was taken out of service in response to an instance refresh."),
        _at(f"instance {state.instance_id} was selected for termination."),
    )


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _key(backend: Any, group_name: str) -> tuple[str, str, str]:
    return (backend.account_id, backend.region_name, group_name)


def _active_refresh(group: Any) -> Refresh | None:
    for r in _refreshes.get(_key(group.autoscaling_backend, group.name), []):
        if r.status in ACTIVE_STATUSES:
            return r
    return None


# ---------------------------------------------------------------------------------------------
# Background thread
# ---------------------------------------------------------------------------------------------


def _tick() -> float | None:
    """One pass over lifecycle timeouts, refreshes, health replacements, periodic work and dirty
    groups; returns seconds to sleep, None when nothing is due (sleep until woken)."""
    now = _now()
    next_due: float | None = None

    for action in list(_actions.values()):
        if action.token not in _actions:
            continue
        state, group = action.state, action.group
        backend = group.autoscaling_backend
        if (
            state not in group.instance_states
            or backend.autoscaling_groups.get(group.name) is not group
        ):
            # The instance or its group is gone (deleted, moto reset): nothing left to decide.
            _actions.pop(action.token, None)
            continue
        if now >= action.due():
            try:
                _complete(action, action.default_result)
            except Exception:
                _log("lifecycle action timeout failed:\n" + traceback.format_exc())
                _actions.pop(action.token, None)
        else:
            next_due = _min(next_due, action.due())

    for key, refreshes in list(_refreshes.items()):
        for refresh in refreshes:
            if refresh.status not in ACTIVE_STATUSES:
                continue
            group = refresh.backend.autoscaling_groups.get(refresh.group_name)
            if group is None:
                refresh.finish("Cancelled", "The Auto Scaling group was deleted.")
                continue
            try:
                due = refresh.step(group, now)
            except Exception as exc:
                # A broken refresh (say, its launch template was deleted) ends as AWS would end
                # it, Failed with a reason, instead of failing again on every step.
                _log(f"refresh {refresh.id} failed:\n" + traceback.format_exc())
                refresh.finish("Failed", f"The instance refresh could not continue: {exc}")
                continue
            next_due = _min(next_due, due)

    next_due = _min(next_due, _health_replacements(now))

    for work in list(_periodic):
        try:
            next_due = _min(next_due, work(now))
        except Exception:
            _log("periodic work failed:\n" + traceback.format_exc())

    while _dirty:
        group = _dirty.pop()
        _reconcile(group)

    if next_due is None:
        return None
    return max(0.0, next_due - _now())


def _run() -> None:
    """The background thread: sleeps until the next deadline, or until a request changes
    something (_wake), never polling."""
    global _woken
    with _cond:
        while not _stop.is_set():
            _woken = False
            try:
                wait = _tick()
            except Exception:
                _log("background step failed:\n" + traceback.format_exc())
                wait = 1.0
            if _dirty or _woken:
                continue
            if wait is None:
                _cond.wait()
            elif wait > 0:
                _cond.wait(timeout=wait)


def _complete(action: LifecycleAction, result: str) -> None:
    """Apply a lifecycle action's result (CONTINUE or ABANDON)."""
    state = action.state
    if action.transition == LAUNCH_TRANSITION:
        if result == "CONTINUE":
            _actions.pop(action.token, None)
            if not _instance_actions(state, LAUNCH_TRANSITION):
                _to_in_service(state)
        else:
            # ABANDON: the instance is terminated and replaced. The terminate hooks do not run
            # for an instance that never got in service. Its launch activity is "Cancelled" with
            # the user guide's status message; no termination activity is recorded.
            activity = _launch_activity(state)
            if activity is not None:
                activity.finish("Cancelled", ABANDONED_MESSAGE.format(token=action.token))
            _finish_terminate(state)
    else:
        if result == "CONTINUE":
            _actions.pop(action.token, None)
            if not _instance_actions(state, TERMINATE_TRANSITION):
                _finish_terminate(state)
        else:
            # ABANDON on terminate: the instance terminates, remaining hooks are skipped.
            _finish_terminate(state)
    _wake()


# ---------------------------------------------------------------------------------------------
# Patched backend methods
# ---------------------------------------------------------------------------------------------

_orig: dict[str, Any] = {}


def _group_set_desired_capacity(self: Any, new_capacity: int | None) -> None:
    policy = self.mixed_instances_policy
    if policy and len(policy.get("LaunchTemplate", {}).get("Overrides", [])):
        # Weighted mixed-instances groups keep moto's own arithmetic.
        return _orig["set_desired_capacity"](self, new_capacity)
    old_capacity = getattr(self, "desired_capacity", None) or 0
    self.desired_capacity = self.min_size if new_capacity is None else new_capacity
    creating = self.name not in self.autoscaling_backend.autoscaling_groups
    self.bake_creating = creating
    try:
        _reconcile(self, trigger=_capacity_trigger(self, creating, old_capacity))
    finally:
        self.bake_creating = False
    if not creating:
        _refresh_load_balancers(self)


def _capacity_trigger(group: Any, creating: bool, old: int) -> str | None:
    """The first sentence of the Cause of the activities a change of desired capacity starts,
    after the request that made it (AWS's wordings, from the user guide and CLI examples; the
    deletion's is the emulator's)."""
    new = group.desired_capacity or 0
    if creating:
        old = 0
    if new == old:
        return None
    change = f"changing the desired capacity from {old} to {new}."
    if creating:
        return _at(f"a user request created an AutoScalingGroup {change}")
    if getattr(group, "bake_deleting", False):
        return _at(f"a user request deleted the AutoScalingGroup {change}")
    kind = getattr(_request, "kind", None)
    if kind == "UpdateAutoScalingGroup":
        return _at(
            f"a user request update of AutoScalingGroup constraints to min: {group.min_size},"
            f" max: {group.max_size}, desired: {new} {change}"
        )
    if kind == "SetDesiredCapacity":
        return _at(f"a user request explicitly set group desired capacity {change}")
    return None


def _group_replace_instances(self: Any, count_needed: int, propagated_tags: Any) -> None:
    _launch(self, count_needed)


def _state_launch_template(self: Any) -> dict[str, Any] | None:
    lt = getattr(self, "bake_launch_template", None)
    if lt is not None:
        return dict(lt)
    if getattr(self, "bake_launch_configuration_name", None):
        return None
    return _orig["launch_template"].fget(self)


def _state_launch_configuration_name(self: Any) -> str | None:
    if hasattr(self, "bake_launch_configuration_name"):
        return self.bake_launch_configuration_name
    return getattr(self.auto_scaling_group, "launch_configuration_name", None)


def _backend_set_instance_health(self: Any, instance_id: str, health_status: str) -> None:
    state = _find_state(self, instance_id)
    if state is None:
        raise _validation(f"Instance Id not found - No managed instance found for instance ID {instance_id}")
    state.health_status = health_status
    if health_status == "Unhealthy" and state not in _unhealthy:
        # AWS replaces unhealthy instances, asynchronously: the instance stays InService and
        # Unhealthy for a moment, then the background thread terminates it (through the
        # terminate hooks) and launches a replacement (through the launch hooks). An instance
        # marked while in Pending:Wait is replaced once it has gone InService.
        state.bake_unhealthy_at = _now()
        _unhealthy.append(state)
    _wake()


def _health_replacements(now: float) -> float | None:
    """Replace the instances marked Unhealthy whose time has come; returns the next due time."""
    next_due = None
    for state in list(_unhealthy):
        group = state.auto_scaling_group
        gone = (
            state not in group.instance_states
            or group.autoscaling_backend.autoscaling_groups.get(group.name) is not group
        )
        if gone or state.health_status != "Unhealthy" or not _is_live(state):
            _unhealthy.remove(state)
            continue
        if state.lifecycle_state != "InService":
            continue  # acted on once its launch hooks let it go InService
        due = max(state.bake_unhealthy_at, state.bake_in_service_at or 0.0) + _delay(
            HEALTH_REPLACEMENT_DELAY_SECS
        )
        if now < due:
            next_due = _min(next_due, due)
            continue
        _unhealthy.remove(state)
        # "If it terminated any unhealthy instances, the Cause column shows ... At
        # 2022-05-14T20:11:53Z an instance was taken out of service in response to a user
        # health-check" (user guide, health checks). The replacement's wording is not in the AWS
        # documentation; it is the one public examples of activity histories show.
        _begin_terminate(
            state, cause=_at("an instance was taken out of service in response to a user health-check.")
        )
        _reconcile(
            group,
            launch_reason="an instance was launched in response to an unhealthy instance needing"
            " to be replaced.",
        )
    return next_due


def _backend_create_group(self: Any, *args: Any, **kwargs: Any) -> Any:
    """moto defaults HealthCheckGracePeriod to 300 (and turns an explicit 0 into 300). The API
    reference (CreateAutoScalingGroup): "HealthCheckGracePeriod ... Default: 0 seconds"; the
    user guide: "Its default value is 0 seconds when you create an Auto Scaling group using the
    AWS CLI or an SDK". 300 is the console's default."""
    bound = inspect.signature(_orig["create_auto_scaling_group"]).bind(self, *args, **kwargs)
    group = _orig["create_auto_scaling_group"](self, *args, **kwargs)
    raw = bound.arguments.get("health_check_period")
    group.health_check_grace_period = 0 if raw in (None, "") else as_models.make_int(raw)
    return group


def _backend_terminate_instance(self: Any, instance_id: str, should_decrement: bool) -> Any:
    state = _find_state(self, instance_id)
    if state is None:
        raise _validation(f"Instance Id not found - No managed instance found for instance ID {instance_id}")
    group = state.auto_scaling_group
    original_size = group.desired_capacity or 0
    if should_decrement:
        group.desired_capacity = max(0, original_size - 1)
    reason = f"instance {instance_id} was taken out of service in response to a user request"
    if group.desired_capacity != original_size:
        reason += f", shrinking the capacity from {original_size} to {group.desired_capacity}"
    _begin_terminate(state, cause=_at(reason + "."))
    activity = state.bake_terminate_activity
    _reconcile(group)
    # TerminateInstanceInAutoScalingGroup returns the activity as it began: InProgress, Progress 0
    # (the CLI example), even when the instance has already left the group.
    return activity.started


def _backend_delete_group(self: Any, group_name: str) -> None:
    group = self.autoscaling_groups.get(group_name)
    if group is not None:
        group.bake_deleting = True
        refresh = _active_refresh(group)
        if refresh is not None:
            refresh.finish("Cancelled", "The Auto Scaling group was deleted.")
    try:
        _orig["delete_auto_scaling_group"](self, group_name)
    finally:
        if group is not None and group_name in self.autoscaling_groups:
            group.bake_deleting = False
    if group is not None:
        for state in list(group.instance_states):
            # Left by the scale-in to 0 (protected from scale in, or already terminating).
            _finish_terminate(
                state,
                cause=_at(
                    f"instance {state.instance_id} was taken out of service in response to a"
                    " user request deleting the AutoScalingGroup."
                ),
            )
        for action in list(_actions.values()):
            if action.group is group:
                _actions.pop(action.token, None)
        _dirty.discard(group)
        # AWS deletes a group's lifecycle hooks with it; moto keeps them for the next group of
        # the same name.
        for key, hook in list(self.lifecycle_hooks.items()):
            if hook.auto_scaling_group_name == group_name:
                del self.lifecycle_hooks[key]


def _backend_notify_terminate_instances(self: Any, instance_ids: list[str]) -> None:
    """EC2 TerminateInstances on group members: moto drops them from the group and launches
    replacements. Their termination is an activity, with AWS's cause for an instance found
    terminated by the EC2 health check."""
    for group in list(self.autoscaling_groups.values()):
        for state in group.instance_states:
            if state.instance_id not in instance_ids or state.lifecycle_state == "Terminated":
                continue
            _interrupt_launch(state)
            activity = getattr(state, "bake_terminate_activity", None)
            if activity is None or not activity.in_progress:
                activity = _terminate_activity(
                    state,
                    _at(
                        "an instance was taken out of service in response to an EC2 health"
                        " check indicating it has been terminated or stopped."
                    ),
                )
            activity.finish("Successful")
    _orig["notify_terminate_instances"](self, instance_ids)


def _backend_delete_lifecycle_hook(self: Any, as_name: str, name: str) -> None:
    _orig["delete_lifecycle_hook"](self, as_name, name)
    # Instances waiting on a deleted hook carry on as if it had been completed with CONTINUE.
    for action in list(_actions.values()):
        if action.group.name == as_name and action.hook_name == name:
            if action.group.autoscaling_backend is self:
                _complete(action, "CONTINUE")


_READ_ONLY = ("Describe", "List", "Get")


def _locked(fn: Any) -> Any:
    """Run a request handler (``call_action``) under the emulator's lock; afterwards wake the
    background thread, unless the action only reads (Describe*, List*, Get*)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _cond:
            try:
                return fn(*args, **kwargs)
            finally:
                action = None
                try:
                    action = args[0]._get_action() if args else None  # noqa: SLF001
                except Exception:  # noqa: BLE001 - not a response object: wake to be safe
                    action = None
                if not (isinstance(action, str) and action.startswith(_READ_ONLY)):
                    _wake()

    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.__wrapped__ = fn
    return wrapper


# ---------------------------------------------------------------------------------------------
# API: request parsing and responses
# ---------------------------------------------------------------------------------------------


def _group_or_error(backend: Any, name: str | None) -> Any:
    if not name:
        raise _validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise _validation(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    return group


def _int_pref(prefs: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = prefs.get(key)
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise _validation(f"Preferences.{key}: {value!r} is not an integer") from None
    if not lo <= value <= hi:
        raise _validation(
            f"Preferences.{key}: {value} is out of range; valid values are {lo} to {hi}"
        )
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


def _desired_config(backend: Any, raw: dict[str, Any] | None) -> tuple[Config | None, Any]:
    if not raw:
        return None, None
    if raw.get("MixedInstancesPolicy"):
        raise _validation(
            "DesiredConfiguration.MixedInstancesPolicy is not supported by the emulator;"
            " use DesiredConfiguration.LaunchTemplate"
        )
    spec = raw.get("LaunchTemplate") or {}
    lt_id, lt_name = spec.get("LaunchTemplateId"), spec.get("LaunchTemplateName")
    if bool(lt_id) == bool(lt_name):
        raise _validation(
            "DesiredConfiguration.LaunchTemplate: specify exactly one of LaunchTemplateId"
            " or LaunchTemplateName"
        )
    ec2 = backend.ec2_backend
    try:
        template = (
            ec2.get_launch_template(lt_id) if lt_id else ec2.get_launch_template_by_name(lt_name)
        )
    except Exception:
        template = None
    if template is None:
        what = f"ID {lt_id}" if lt_id else f"name {lt_name}"
        raise _validation(f"The specified launch template, with template {what}, does not exist.")
    version = str(spec.get("Version") or "$Default")
    config = Config(template, version)
    try:
        config.resolve()
    except Exception:
        raise _validation(
            f"The specified launch template version {version} of launch template"
            f" {template.id} does not exist."
        ) from None
    echo = {"LaunchTemplate": {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}}
    if spec.get("Version"):
        echo["LaunchTemplate"]["Version"] = version
    return config, echo


def _preferences(group: Any, raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    prefs: dict[str, Any] = {}
    min_pct = _int_pref(raw, "MinHealthyPercentage", 0, 100)
    max_pct = _int_pref(raw, "MaxHealthyPercentage", 100, 200)
    if max_pct is not None and min_pct is None:
        raise _validation(
            "Preferences: MaxHealthyPercentage requires MinHealthyPercentage as well"
        )
    min_pct = DEFAULT_MIN_HEALTHY_PERCENTAGE if min_pct is None else min_pct
    max_pct = DEFAULT_MAX_HEALTHY_PERCENTAGE if max_pct is None else max_pct
    if max_pct - min_pct > 100:
        raise _validation(
            "Preferences: the difference between MaxHealthyPercentage and"
            " MinHealthyPercentage cannot be greater than 100"
        )
    prefs["MinHealthyPercentage"] = min_pct
    warmup = _int_pref(raw, "InstanceWarmup", 0, 2**31 - 1)
    if warmup is None:
        warmup = getattr(group, "default_instance_warmup", None)
        if warmup is None or warmup < 0:
            warmup = group.health_check_grace_period or 0
    prefs["InstanceWarmup"] = int(warmup)
    checkpoints = raw.get("CheckpointPercentages")
    delay = _int_pref(raw, "CheckpointDelay", 0, 172800)
    if checkpoints:
        try:
            checkpoints = [int(c) for c in checkpoints]
        except (TypeError, ValueError):
            raise _validation("Preferences.CheckpointPercentages must be integers") from None
        if any(not 1 <= c <= 100 for c in checkpoints) or checkpoints != sorted(set(checkpoints)):
            raise _validation(
                "Preferences.CheckpointPercentages must be unique values from 1 to 100 in"
                " ascending order"
            )
        prefs["CheckpointPercentages"] = checkpoints
        prefs["CheckpointDelay"] = DEFAULT_CHECKPOINT_DELAY_SECS if delay is None else delay
    elif delay is not None:
        raise _validation("Preferences.CheckpointDelay requires CheckpointPercentages")
    prefs["SkipMatching"] = _bool(raw.get("SkipMatching", False))
    prefs["AutoRollback"] = _bool(raw.get("AutoRollback", False))
    for key, allowed in (
        ("ScaleInProtectedInstances", ("Refresh", "Ignore", "Wait")),
        ("StandbyInstances", ("Terminate", "Ignore", "Wait")),
    ):
        value = raw.get(key, "Wait")
        if value not in allowed:
            raise _validation(f"Preferences.{key}: {value!r} is not one of {', '.join(allowed)}")
        prefs[key] = value
    alarms = (raw.get("AlarmSpecification") or {}).get("Alarms")
    if alarms:
        if len(alarms) > 10:
            raise _validation("Preferences.AlarmSpecification.Alarms: at most 10 alarms")
        prefs["AlarmSpecification"] = {"Alarms": list(alarms)}
    prefs["MaxHealthyPercentage"] = max_pct
    prefs["BakeTime"] = _int_pref(raw, "BakeTime", 0, 172800) or 0
    return prefs


def _check_alarms_exist(backend: Any, alarms: list[str]) -> None:
    from moto.cloudwatch.models import cloudwatch_backends

    cw = cloudwatch_backends[backend.account_id][backend.region_name]
    missing = [a for a in alarms if a not in cw.alarms]
    if missing:
        raise _validation(f"The following alarms do not exist: {', '.join(missing)}")


def start_instance_refresh(self: Any) -> ActionResult:
    backend = self.autoscaling_backend
    params = self._get_params()
    group = _group_or_error(backend, params.get("AutoScalingGroupName"))
    strategy = params.get("Strategy") or "Rolling"
    if strategy != "Rolling":
        raise _validation(f"Strategy: {strategy!r} is not valid; the only valid value is Rolling")
    if _active_refresh(group) is not None:
        raise _Error(
            "InstanceRefreshInProgress",
            "An Instance Refresh is already in progress and blocks the execution of this"
            " Instance Refresh.",
        )
    desired, echo = _desired_config(backend, params.get("DesiredConfiguration"))
    prefs = _preferences(group, params.get("Preferences"))
    if prefs.get("AlarmSpecification"):
        _check_alarms_exist(backend, prefs["AlarmSpecification"]["Alarms"])
    if prefs["AutoRollback"]:
        if desired is None:
            raise _validation(
                "Preferences.AutoRollback requires a DesiredConfiguration: there is nothing to"
                " roll back to otherwise"
            )
        if Config.of_group(group).is_symbolic():
            raise _validation(
                "Preferences.AutoRollback is not supported when the Auto Scaling group uses the"
                " launch template's $Latest or $Default version"
            )
    if prefs["SkipMatching"] and group.ec2_launch_template is None and desired is None:
        raise _validation("Preferences.SkipMatching requires a launch template")
    refresh = Refresh(backend, group, prefs, echo)
    refresh.target = desired or Config.of_group(group)
    _refreshes.setdefault(_key(backend, group.name), []).append(refresh)
    _wake()
    return ActionResult({"InstanceRefreshId": refresh.id})


def describe_instance_refreshes(self: Any) -> ActionResult:
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    if not name:
        raise _validation("AutoScalingGroupName is required")
    ids = self._get_param("InstanceRefreshIds", []) or []
    max_records = self._get_int_param("MaxRecords") or 50
    items = list(reversed(_refreshes.get(_key(backend, name), [])))
    if ids:
        items = [r for r in items if r.id in ids]
    return _paged(self, "InstanceRefreshes", [r.describe() for r in items], max_records)


def _paged(self: Any, member: str, items: list[Any], max_records: int) -> ActionResult:
    """One page of ``items`` as ``{member: [...], NextToken}``: ``MaxRecords`` 1 to 100, the
    token an offset the emulator handed out (anything else: ``InvalidNextToken``)."""
    if not 1 <= max_records <= 100:
        raise _validation("MaxRecords: valid values are 1 to 100")
    token = self._get_param("NextToken")
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            start = -1
        if not 0 <= start <= len(items):
            raise _Error("InvalidNextToken", "The token provided is not valid.")
    result: dict[str, Any] = {member: items[start : start + max_records]}
    if start + max_records < len(items):
        result["NextToken"] = str(start + max_records)
    return ActionResult(result)


def describe_scaling_activities(self: Any) -> ActionResult:
    """DescribeScalingActivities: "Gets information about the scaling activities in the account
    and Region". ``AutoScalingGroupName`` optional; ``ActivityIds`` ("up to 50 IDs ... If
    unknown activities are requested, they are ignored with no error. If you specify an Auto
    Scaling group, the results are limited to that group"); ``IncludeDeletedGroups``;
    ``MaxRecords`` ("The default value is 100 and the maximum value is 100") and ``NextToken``.
    Order: "Activities are sorted by start time. Activities still in progress are described
    first", the latest first (troubleshooting chapter)."""
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    ids = self._get_param("ActivityIds", []) or []
    if len(ids) > MAX_ACTIVITY_IDS:
        raise _validation(f"ActivityIds: at most {MAX_ACTIVITY_IDS} activity IDs are allowed")
    include_deleted = self._get_bool_param("IncludeDeletedGroups", False)
    raw_max = self._get_int_param("MaxRecords")
    max_records = 100 if raw_max is None else raw_max
    items = [
        a
        for a in _activity_log(backend)
        if (not name or a.group_name == name)
        and (not ids or a.id in ids)
        and (include_deleted or not a.group_deleted())
    ]
    items.sort(key=lambda a: (not a.in_progress, -a.seq))
    return _paged(self, "Activities", [a.describe() for a in items], max_records)


def cancel_instance_refresh(self: Any) -> ActionResult:
    backend = self.autoscaling_backend
    group = _group_or_error(backend, self._get_param("AutoScalingGroupName"))
    refresh = _active_refresh(group)
    if refresh is None or refresh.status == "Cancelling":
        raise _Error(
            "ActiveInstanceRefreshNotFound",
            "No in progress or pending Instance Refresh found for Auto Scaling group "
            + group.name,
        )
    wait = self._get_param("WaitForTransitioningInstances")
    refresh.wait_for_transitioning = True if wait is None else _bool(wait)
    refresh.status = "Cancelling"
    refresh.status_reason = "Cancelling the instance refresh."
    _wake()
    return ActionResult({"InstanceRefreshId": refresh.id})


def rollback_instance_refresh(self: Any) -> ActionResult:
    backend = self.autoscaling_backend
    group = _group_or_error(backend, self._get_param("AutoScalingGroupName"))
    refresh = _active_refresh(group)
    if refresh is None or refresh.status in ("Cancelling", "RollbackInProgress"):
        raise _Error(
            "ActiveInstanceRefreshNotFound",
            "No in progress or pending Instance Refresh found for Auto Scaling group "
            + group.name,
        )
    if not refresh.desired_configuration:
        raise _Error(
            "IrreversibleInstanceRefresh",
            "The instance refresh cannot be rolled back: it has no desired configuration.",
        )
    if refresh.previous.is_symbolic():
        raise _Error(
            "IrreversibleInstanceRefresh",
            "The instance refresh cannot be rolled back: the Auto Scaling group uses the launch"
            " template's $Latest or $Default version.",
        )
    if refresh.status == "Pending":
        refresh.start(group)
    refresh.begin_rollback(group, "Rollback started by a RollbackInstanceRefresh request.")
    _wake()
    return ActionResult({"InstanceRefreshId": refresh.id})


def _find_action(self: Any) -> LifecycleAction:
    backend = self.autoscaling_backend
    group = _group_or_error(backend, self._get_param("AutoScalingGroupName"))
    hook_name = self._get_param("LifecycleHookName")
    if not hook_name:
        raise _validation("LifecycleHookName is required")
    if f"{group.name}_{hook_name}" not in backend.lifecycle_hooks:
        raise _validation(
            f"No Lifecycle Hook found with name {hook_name} for group {group.name}"
        )
    token = self._get_param("LifecycleActionToken")
    instance_id = self._get_param("InstanceId")
    if not token and not instance_id:
        raise _validation("Either LifecycleActionToken or InstanceId must be specified")
    for action in _actions.values():
        if action.group is not group or action.hook_name != hook_name:
            continue
        if token and action.token != token:
            continue
        if instance_id and action.state.instance_id != instance_id:
            continue
        return action
    if token:
        raise _validation(f"No active Lifecycle Action found with token {token}")
    raise _validation(f"No active Lifecycle Action found with instance ID {instance_id}")


def complete_lifecycle_action(self: Any) -> ActionResult:
    result = (self._get_param("LifecycleActionResult") or "").upper()
    if result not in ("CONTINUE", "ABANDON"):
        raise _validation("LifecycleActionResult: valid values are CONTINUE and ABANDON")
    action = _find_action(self)
    _complete(action, result)
    return EmptyResult()


def record_lifecycle_action_heartbeat(self: Any) -> ActionResult:
    action = _find_action(self)
    action.heartbeat()
    _wake()
    return EmptyResult()


def _wrap_group_params(name: str) -> Any:
    """Create/UpdateAutoScalingGroup: also take DefaultInstanceWarmup and launch hook specs."""
    original = getattr(as_responses.AutoScalingResponse, name)

    def wrapper(self: Any) -> Any:
        group_name = self._get_param("AutoScalingGroupName")
        backend = self.autoscaling_backend
        created_hooks = []
        if name == "create_auto_scaling_group":
            # LifecycleHookSpecificationList: the hooks exist before the first instances launch.
            for spec in self._get_param("LifecycleHookSpecificationList", []) or []:
                hook = backend.create_lifecycle_hook(
                    name=spec.get("LifecycleHookName"),
                    as_name=group_name,
                    transition=spec.get("LifecycleTransition"),
                    timeout=as_models.make_int(spec.get("HeartbeatTimeout")),
                    result=spec.get("DefaultResult"),
                )
                created_hooks.append(hook)
        try:
            response = original(self)
        except Exception:
            for hook in created_hooks:
                backend.lifecycle_hooks.pop(f"{group_name}_{hook.name}", None)
            raise
        warmup = self._get_int_param("DefaultInstanceWarmup")
        group = backend.autoscaling_groups.get(group_name)
        if group is not None and warmup is not None:
            group.default_instance_warmup = None if warmup < 0 else warmup
        return response

    wrapper.__name__ = name
    return wrapper


def _with_request_kind(kind: str, handler: Any) -> Any:
    """Run a response handler with ``_request.kind`` set: the Cause of the activities it starts
    names the request."""

    def wrapper(self: Any) -> Any:
        previous = getattr(_request, "kind", None)
        _request.kind = kind
        try:
            return handler(self)
        finally:
            _request.kind = previous

    wrapper.__name__ = getattr(handler, "__name__", "wrapper")
    return wrapper


def _set_instance_health_response(self: Any) -> ActionResult:
    health_status = self._get_param("HealthStatus")
    if health_status not in ("Healthy", "Unhealthy"):
        raise _validation("Valid instance health states are: [Healthy, Unhealthy]")
    self.autoscaling_backend.set_instance_health(self._get_param("InstanceId"), health_status)
    return EmptyResult()


def install() -> None:
    """Patch moto's autoscaling backend and responses. Idempotent."""
    global _installed, _scale, _thread
    with _lock:
        if _installed:
            return
        _scale = _time_scale()
        Group = as_models.FakeAutoScalingGroup
        Backend = as_models.AutoScalingBackend
        State = as_models.InstanceState
        Response = as_responses.AutoScalingResponse

        _orig["set_desired_capacity"] = Group.set_desired_capacity
        _orig["launch_template"] = State.launch_template
        _orig["delete_auto_scaling_group"] = Backend.delete_auto_scaling_group
        _orig["delete_lifecycle_hook"] = Backend.delete_lifecycle_hook
        _orig["create_auto_scaling_group"] = Backend.create_auto_scaling_group

        Group.set_desired_capacity = _group_set_desired_capacity
        Group.replace_autoscaling_group_instances = _group_replace_instances
        Group.default_instance_warmup = None
        State.launch_template = property(_state_launch_template)
        State.launch_configuration_name = property(_state_launch_configuration_name)
        Backend.set_instance_health = _backend_set_instance_health
        Backend.create_auto_scaling_group = _backend_create_group
        Backend.terminate_instance = _backend_terminate_instance
        Backend.delete_auto_scaling_group = _backend_delete_group
        Backend.delete_lifecycle_hook = _backend_delete_lifecycle_hook
        # EC2 TerminateInstances on a group member reaches the group through this.
        _orig["notify_terminate_instances"] = Backend.notify_terminate_instances
        Backend.notify_terminate_instances = _locked(_backend_notify_terminate_instances)

        Response.start_instance_refresh = start_instance_refresh
        Response.describe_instance_refreshes = describe_instance_refreshes
        Response.cancel_instance_refresh = cancel_instance_refresh
        Response.rollback_instance_refresh = rollback_instance_refresh
        Response.complete_lifecycle_action = complete_lifecycle_action
        Response.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat
        Response.set_instance_health = _set_instance_health_response
        Response.create_auto_scaling_group = _wrap_group_params("create_auto_scaling_group")
        Response.update_auto_scaling_group = _with_request_kind(
            "UpdateAutoScalingGroup", _wrap_group_params("update_auto_scaling_group")
        )
        Response.set_desired_capacity = _with_request_kind(
            "SetDesiredCapacity", Response.set_desired_capacity
        )
        Response.describe_scaling_activities = describe_scaling_activities
        # One lock for Auto Scaling and EC2 requests and the background thread: they share state.
        Response.call_action = _locked(Response.call_action)
        ec2_responses.EC2Response.call_action = _locked(ec2_responses.EC2Response.call_action)
        # Target registration happens from the background thread too.
        from moto.elb import responses as elb_responses
        from moto.elbv2 import responses as elbv2_responses

        elb_responses.ELBResponse.call_action = _locked(elb_responses.ELBResponse.call_action)
        elbv2_responses.ELBV2Response.call_action = _locked(
            elbv2_responses.ELBV2Response.call_action
        )

        # moto serializes from botocore 1.40's model, whose InstanceRefresh has no Strategy yet
        # (AWS's current one does): add the member so DescribeInstanceRefreshes returns it.
        from moto.core.utils import get_service_model

        shapes = get_service_model("autoscaling")._shape_resolver._shape_map  # noqa: SLF001
        shapes["InstanceRefresh"]["members"].setdefault("Strategy", {"shape": "RefreshStrategy"})

        _stop.clear()
        _thread = threading.Thread(target=_run, name="bake-autoscaling", daemon=True)
        _thread.start()
        _installed = True


def shutdown() -> None:
    """Stop background threads."""
    global _thread
    _stop.set()
    with _cond:
        _cond.notify_all()
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=5)
    _thread = None


__all__ = ["install", "shutdown"]
