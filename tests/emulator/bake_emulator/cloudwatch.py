"""CloudWatch for every client, and alarms that evaluate, on moto's CloudWatch backend.

One implementation, three wire formats. moto's ``CloudWatchResponse`` handlers and backend answer
every call; what differs is only how a request is decoded and an answer encoded:

- the query protocol (``Action=...`` forms; boto3 1.40, the AWS CLI before botocore 1.4x): moto's;
- AWS JSON 1.0 (``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``; the current AWS CLI
  v1, botocore >= 1.4x): moto's JSON parser and serializer, enabled here by giving moto's copy of
  the CloudWatch model the protocol metadata AWS's current model has (``json`` among
  ``protocols``, ``jsonVersion`` 1.0, the target prefix, ``awsQueryCompatible``, so errors carry
  ``x-amzn-query-error``);
- Smithy RPC v2 CBOR (aws-sdk-cloudwatch for Rust): ``cloudwatch_cbor``, which feeds the same
  handler class.

Fixes that hold for all three live on the handler or the backend: ListMetrics lists a metric once;
new alarms start ``INSUFFICIENT_DATA``; alarms are evaluated on the data received and their actions
run (``evaluate``); CloudWatch requests take the emulator's lock, like Auto Scaling's, so that the
background thread (which evaluates alarms and watches a refresh's alarms) sees a consistent state.
See docs/emulator-cloudwatch-cbor.md.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from moto.cloudwatch import models as cw_models
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core import serialize as moto_serialize
from moto.core.responses import ActionResult
from moto.core.utils import get_service_model

from . import autoscaling

TARGET_PREFIX = "GraniteServiceVersion20100801"

STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")
COMPARISONS = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}

_installed = False
_orig: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------
# Wire formats
# --------------------------------------------------------------------------------------------


class CloudWatchJsonSerializer(moto_serialize.JSONSerializer):
    """moto's JSON serializer with the content type AWS JSON 1.0 answers carry."""

    def _get_protocol_specific_content_type(self) -> str:
        return "application/x-amz-json-1.0"


def _enable_json_protocol() -> None:
    model = get_service_model("cloudwatch")
    meta = model.metadata
    protocols = list(meta.get("protocols") or [meta.get("protocol", "query")])
    if "json" not in protocols:
        protocols.append("json")
    meta["protocols"] = protocols
    meta.setdefault("jsonVersion", "1.0")
    meta.setdefault("targetPrefix", TARGET_PREFIX)
    meta.setdefault("awsQueryCompatible", {})
    moto_serialize.SERVICE_SPECIFIC_SERIALIZERS.setdefault("cloudwatch", {})[
        "json"
    ] = CloudWatchJsonSerializer


def list_metrics(self: Any) -> ActionResult:
    """ListMetrics, listing each metric (namespace, name, dimension set) once.

    moto 5.2.5 only folds repeated data points into one metric when the metric has exactly one
    dimension (its ``are_dimensions_same`` compares every pair of dimensions), so a metric
    without dimensions, or with two, is listed once per data point. AWS lists a metric once.
    """
    next_token = self._get_param("NextToken")
    backend = self.cloudwatch_backend
    if next_token:
        next_token, metrics = backend.list_metrics(next_token, None, None, [])
    else:
        found = backend.get_filtered_metrics(
            self._get_param("MetricName"),
            self._get_param("Namespace"),
            self._get_params().get("Dimensions", []),
        )
        seen = set()
        unique = []
        for metric in found:
            key = (
                metric.namespace,
                metric.name,
                frozenset((d.name, d.value) for d in metric.dimensions),
            )
            if key not in seen:
                seen.add(key)
                unique.append(metric)
        next_token, metrics = backend._get_paginated(unique)  # noqa: SLF001 - moto's pager
    return ActionResult({"Metrics": metrics, "NextToken": next_token})


# --------------------------------------------------------------------------------------------
# Alarms: initial state and evaluation
# --------------------------------------------------------------------------------------------


def _put_metric_alarm(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """PutMetricAlarm: "When this operation creates an alarm, the alarm state is immediately set to
    INSUFFICIENT_DATA. The alarm is then evaluated and its state is set appropriately." and
    "When you update an existing alarm, its state is left unchanged" (moto: OK, always)."""
    previous = self.alarms.get(name)
    alarm = _orig["put_metric_alarm"](self, name, *args, **kwargs)
    if previous is not None:
        alarm.state_value = previous.state_value
        alarm.state_reason = previous.state_reason
        alarm.state_reason_data = previous.state_reason_data
        alarm.state_updated_timestamp = previous.state_updated_timestamp
        alarm.history = previous.history
    else:
        alarm.state_value = "INSUFFICIENT_DATA"
    alarm.bake_next_eval = _next_boundary(alarm)
    autoscaling._wake()  # noqa: SLF001
    return alarm


def _put_metric_data(self: Any, namespace: str, metric_data: list[dict[str, Any]]) -> None:
    """PutMetricData, then the alarms on the metrics it touched are evaluated at once: data that
    arrives for a period already complete counts at the next evaluation on AWS too; here the
    next evaluation is now."""
    _orig["put_metric_data"](self, namespace, metric_data)
    names = {m.get("MetricName") for m in metric_data}
    now = autoscaling._now()  # noqa: SLF001
    touched = False
    for alarm in self.alarms.values():
        if alarm.namespace == namespace and alarm.metric_name in names:
            alarm.bake_next_eval = now
            touched = True
    if touched:
        autoscaling._wake()  # noqa: SLF001


def _set_alarm_state(self: Any, alarm_name: str, reason: str, reason_data: str, state_value: str) -> None:
    """SetAlarmState: "When the updated state differs from the previous value, the action
    configured for the appropriate state is invoked." The next evaluation sets the state from
    the data again ("the alarm state returns to its actual state often within seconds")."""
    previous = self.alarms[alarm_name].state_value if alarm_name in self.alarms else None
    _orig["set_alarm_state"](self, alarm_name, reason, reason_data, state_value)
    alarm = self.alarms[alarm_name]
    if previous is not None and alarm.state_value != previous:
        _run_actions(self, alarm, previous, datetime.now(timezone.utc).replace(tzinfo=None))


def _next_boundary(alarm: Any) -> float:
    """When the current period ends (monotonic clock): the next scheduled evaluation. Periods are
    aligned on multiples of Period in wall-clock time, as the data's timestamps are; the time
    scale does not apply to CloudWatch."""
    period = max(1, int(alarm.period or 60))
    wall = time.time()
    return autoscaling._now() + (period - wall % period) + 0.01  # noqa: SLF001


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _statistic(data: list[Any], statistic: str) -> float | None:
    """One datapoint of ``statistic`` over raw values and statistic sets."""
    count = 0.0
    total = 0.0
    lo = math.inf
    hi = -math.inf
    for d in data:
        if isinstance(d, cw_models.MetricAggregatedDatum):
            count += float(d.sample_count)
            total += float(d.sum)
            lo = min(lo, float(d.min))
            hi = max(hi, float(d.max))
        else:
            count += 1
            total += float(d.value)
            lo = min(lo, float(d.value))
            hi = max(hi, float(d.value))
    if count == 0:
        return None
    return {
        "SampleCount": count,
        "Sum": total,
        "Minimum": lo,
        "Maximum": hi,
        "Average": total / count,
    }.get(statistic)


def _evaluable(alarm: Any) -> bool:
    """Single-metric alarms on a plain statistic and a static threshold; metric math, percentiles
    and anomaly detection bands are not evaluated (their state is left alone)."""
    return bool(
        alarm.metric_name
        and not alarm.metric_data_queries
        and alarm.statistic
        and not alarm.extended_statistic
        and alarm.comparison_operator in COMPARISONS
        and getattr(alarm, "rule", None) is None
    )


def evaluate(backend: Any, alarm: Any, now: datetime) -> None:
    """Evaluate one alarm on the data received, as the user guide's "Evaluating an alarm" and
    "Configuring how CloudWatch alarms treat missing data" describe it: the last EvaluationPeriods
    complete periods (aligned on multiples of Period, wall-clock time, as the data's timestamps
    are), one datapoint per period (the alarm's Statistic over data with the alarm's namespace,
    name, exact dimension set and, if given, unit), ALARM when DatapointsToAlarm of them breach.
    Missing periods: ``missing`` (default) evaluates the others, INSUFFICIENT_DATA when all are
    missing; ``ignore`` evaluates the others and keeps the state when all are missing;
    ``breaching`` / ``notBreaching`` count them as breaching / not."""
    period = int(alarm.period or 60)
    n = max(1, int(alarm.evaluation_periods or 1))
    m = int(alarm.datapoints_to_alarm or n)
    epoch = datetime(1970, 1, 1)
    end_s = (int((now - epoch).total_seconds()) // period) * period
    end = epoch + timedelta(seconds=end_s)
    start = end - timedelta(seconds=n * period)
    want = {(d.name, d.value) for d in alarm.dimensions}
    buckets: list[list[Any]] = [[] for _ in range(n)]
    for d in list(backend.metric_data):
        if d.namespace != alarm.namespace or d.name != alarm.metric_name:
            continue
        if {(x.name, x.value) for x in d.dimensions} != want:
            continue
        if alarm.unit and d.unit != alarm.unit:
            continue
        ts = _naive_utc(d.timestamp)
        if not start <= ts < end:
            continue
        buckets[int((ts - start).total_seconds()) // period].append(d)
    test, words = COMPARISONS[alarm.comparison_operator]
    treat = alarm.treat_missing_data or "missing"
    values = [_statistic(b, alarm.statistic) for b in buckets]
    breaching = 0
    present = []
    for i, v in enumerate(values):
        if v is None:
            if treat == "breaching":
                breaching += 1
            continue
        present.append((start + timedelta(seconds=i * period), v))
        if test(v, float(alarm.threshold)):
            breaching += 1
    if not present and treat in ("missing", "ignore"):
        if treat == "ignore":
            return
        new_state = "INSUFFICIENT_DATA"
        reason = (
            "Insufficient Data: 1 datapoint was unknown."
            if n == 1
            else f"Insufficient Data: {n} datapoints were unknown."
        )
    else:
        new_state = "ALARM" if breaching >= m else "OK"
        shown = ", ".join(f"{v:g} ({t:%d/%m/%y %H:%M:%S})" for t, v in reversed(present))
        verb = "was" if new_state == "ALARM" else "was not"
        reason = (
            f"Threshold Crossed: {breaching} out of the last {n} datapoints [{shown}] {verb}"
            f" {words} the threshold ({float(alarm.threshold):g}) (minimum {m} datapoint"
            f"{'s' if m != 1 else ''} for {'OK -> ALARM' if new_state == 'ALARM' else 'ALARM -> OK'}"
            " transition)."
        )
    if new_state == alarm.state_value:
        return
    old_state = alarm.state_value
    reason_data = json.dumps(
        {
            "version": "1.0",
            "queryDate": now.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "startDate": start.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "statistic": alarm.statistic,
            "period": period,
            "recentDatapoints": [v for _, v in present],
            "threshold": float(alarm.threshold),
            "evaluatedDatapoints": [
                {"timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.000+0000"), "value": v}
                for t, v in present
            ],
        }
    )
    alarm.update_state(reason, reason_data, new_state)
    _run_actions(backend, alarm, old_state, now)
    autoscaling._wake()  # noqa: SLF001 - a refresh watching this alarm looks again at once


def _run_actions(backend: Any, alarm: Any, old_state: str, now: datetime) -> None:
    """An alarm's actions for its new state: SNS topics get the alarm notification (published
    through moto's SNS backend: subscribers such as SQS queues receive it, and
    ``/bake-emulator/sns-notifications`` lists it). Other action types are not run."""
    if not alarm.actions_enabled:
        return
    actions = {
        "ALARM": alarm.alarm_actions,
        "OK": alarm.ok_actions,
        "INSUFFICIENT_DATA": alarm.insufficient_data_actions,
    }[alarm.state_value] or []
    for arn in actions:
        parts = arn.split(":")
        if len(parts) < 6 or parts[2] != "sns":
            autoscaling._log(f"alarm {alarm.name}: action {arn} is not run by the emulator")  # noqa: SLF001
            continue
        from moto.sns.models import sns_backends

        region, account = parts[3], parts[4]
        message = {
            "AlarmName": alarm.name,
            "AlarmDescription": alarm.description,
            "AWSAccountId": backend.account_id,
            "AlarmConfigurationUpdatedTimestamp": alarm.configuration_updated_timestamp.strftime(
                "%Y-%m-%dT%H:%M:%S.000+0000"
            )
            if isinstance(alarm.configuration_updated_timestamp, datetime)
            else str(alarm.configuration_updated_timestamp),
            "NewStateValue": alarm.state_value,
            "NewStateReason": alarm.state_reason,
            "StateChangeTime": now.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "Region": backend.region_name,
            "AlarmArn": alarm.alarm_arn,
            "OldStateValue": old_state,
            "Trigger": {
                "MetricName": alarm.metric_name,
                "Namespace": alarm.namespace,
                "StatisticType": "Statistic",
                "Statistic": (alarm.statistic or "").upper(),
                "Unit": alarm.unit,
                "Dimensions": [{"value": d.value, "name": d.name} for d in alarm.dimensions],
                "Period": alarm.period,
                "EvaluationPeriods": alarm.evaluation_periods,
                "DatapointsToAlarm": alarm.datapoints_to_alarm or alarm.evaluation_periods,
                "ComparisonOperator": alarm.comparison_operator,
                "Threshold": float(alarm.threshold),
                "TreatMissingData": alarm.treat_missing_data or "missing",
            },
        }
        subject = f'{alarm.state_value}: "{alarm.name}" in {backend.region_name}'
        try:
            sns_backends[account][region].publish(
                message=json.dumps(message), arn=arn, subject=subject[:100]
            )
        except Exception as exc:  # noqa: BLE001 - a missing topic is the alarm owner's problem
            autoscaling._log(f"alarm {alarm.name}: publishing to {arn}: {exc}")  # noqa: SLF001


def _evaluate_due(now_mono: float) -> float | None:
    """Periodic work for the background thread: evaluate the alarms that are due."""
    next_due = None
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for account, regions in list(cw_models.cloudwatch_backends.items()):
        for region in list(regions.keys()):
            backend = regions[region]
            for alarm in list(backend.alarms.values()):
                if not _evaluable(alarm):
                    continue
                due = getattr(alarm, "bake_next_eval", None)
                if due is None:
                    due = alarm.bake_next_eval = _next_boundary(alarm)
                if now_mono >= due:
                    evaluate(backend, alarm, now)
                    due = alarm.bake_next_eval = _next_boundary(alarm)
                next_due = autoscaling._min(next_due, due)  # noqa: SLF001
    return next_due


def sns_notifications(account: str, region: str, topic_arn: str | None) -> list[dict[str, Any]]:
    """What moto's SNS backend recorded as published: ``[{topic, message_id, message, subject}]``."""
    from moto.sns.models import sns_backends

    out = []
    backend = sns_backends[account][region]
    for arn, topic in backend.topics.items():
        if topic_arn and arn != topic_arn:
            continue
        for message_id, message, subject, _attrs, _group in topic.sent_notifications:
            out.append(
                {"TopicArn": arn, "MessageId": message_id, "Message": message, "Subject": subject}
            )
    return out


# --------------------------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------------------------


def install() -> None:
    """Patch moto's CloudWatch model, handlers and backend. Idempotent; after autoscaling."""
    global _installed
    if _installed:
        return
    _enable_json_protocol()
    CloudWatchResponse.list_metrics = list_metrics
    CloudWatchResponse.call_action = autoscaling._locked(CloudWatchResponse.call_action)  # noqa: SLF001
    Backend = cw_models.CloudWatchBackend
    _orig["put_metric_alarm"] = Backend.put_metric_alarm
    Backend.put_metric_alarm = _put_metric_alarm
    _orig["set_alarm_state"] = Backend.set_alarm_state
    _orig["put_metric_data"] = Backend.put_metric_data
    Backend.put_metric_data = _put_metric_data
    Backend.set_alarm_state = _set_alarm_state
    autoscaling._periodic.append(_evaluate_due)  # noqa: SLF001
    _installed = True


__all__ = ["install", "evaluate", "sns_notifications"]
