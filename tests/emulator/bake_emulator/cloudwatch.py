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
GetMetricStatistics answers ``ExtendedStatistics`` (percentiles) and GetMetricData computes
percentiles, percentile ranks and trimmed statistics in ``MetricStat.Stat`` (moto computes neither);
new alarms start ``INSUFFICIENT_DATA``; alarms are evaluated on the data received and their actions
run (``evaluate``); CloudWatch requests take the emulator's lock, like Auto Scaling's, so that the
background thread (which evaluates alarms and watches a refresh's alarms) sees a consistent state.
See docs/emulator-cloudwatch-cbor.md and docs/emulator.md.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from moto.cloudwatch import models as cw_models
from moto.cloudwatch.exceptions import (
    InvalidParameterCombination,
    InvalidParameterValue,
    ValidationError,
)
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
# Extended statistics: percentiles, percentile rank, trimmed and winsorized statistics
# --------------------------------------------------------------------------------------------

#: The statistics GetMetricData's ``MetricStat.Stat`` takes besides the extended ones.
BASIC_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")

# A percentage (0 to 100) or an absolute value, "up to 10 decimal places" (statistics definitions).
_NUMBER = r"\d+(?:\.\d{1,10})?"
_SINGLE = re.compile(rf"(p|tm|wm|tc|ts)({_NUMBER})")
_RANGE = re.compile(rf"(TM|WM|TC|TS|PR)\((?:({_NUMBER})(%)?)?:(?:({_NUMBER})(%)?)?\)")


@dataclass(frozen=True)
class ExtendedStatistic:
    """One extended statistic, parsed: ``kind`` is ``p`` (percentile), ``PR`` (percentile rank),
    ``TM`` (trimmed mean), ``WM`` (winsorized mean), ``TC`` (trimmed count) or ``TS`` (trimmed
    sum); ``lower``/``upper`` are its bounds (None: open), percentages of the values when
    ``percent``, else values of the metric. A percentile's rank is ``upper``."""

    kind: str
    lower: Fraction | None
    upper: Fraction | None
    percent: bool


def parse_extended_statistic(text: Any) -> ExtendedStatistic | None:
    """Parse an extended statistic as the CloudWatch user guide ("CloudWatch statistics
    definitions") writes them, or None when ``text`` is not one:

    - ``pNN.NN``: the percentile, "p0.0" to "p100" (GetMetricStatistics, ExtendedStatistics);
    - ``tmNN``, ``wmNN``, ``tcNN``, ``tsNN``: trimmed mean, winsorized mean, trimmed count, trimmed
      sum of the values up to the NN percentile ("tm90 calculates the average after removing the
      10% of data points with the highest values"); ``IQM`` is ``TM(25%:75%)``;
    - ``TM(x:y)``, ``WM``, ``TC``, ``TS`` with two bounds, "one or two numbers between 0 and 100,
      up to 10 decimal places. The numbers can be absolute values or percentages" (``TM(2%:98%)``,
      ``TM(150:1000)``, ``TS(80%:)``);
    - ``PR(x:y)``, ``PR(:y)``, ``PR(x:)``: the percentile rank, bounds in values of the metric
      ("PR(n:m) where n and m are values of the metric", PutMetricAlarm ExtendedStatistic).

    Bounds of one statistic are both percentages or both values; the lower one must be below the
    upper one. The lower-case single-bound and upper-case two-bound spellings are the documented
    ones, and the only ones accepted.
    """
    if not isinstance(text, str):
        return None
    if text == "IQM":
        return ExtendedStatistic("TM", Fraction(25), Fraction(75), True)
    single = _SINGLE.fullmatch(text)
    if single:
        bound = Fraction(single.group(2))
        if bound > 100:
            return None
        kind = single.group(1)
        return ExtendedStatistic("p" if kind == "p" else kind.upper(), None, bound, True)
    ranged = _RANGE.fullmatch(text)
    if not ranged:
        return None
    kind, lower, lower_pct, upper, upper_pct = ranged.groups()
    if lower is None and upper is None:
        return None
    marks = {bool(pct) for bound, pct in ((lower, lower_pct), (upper, upper_pct)) if bound}
    if len(marks) != 1:
        return None  # one bound a percentage, the other a value
    percent = marks.pop()
    if percent and kind == "PR":
        return None
    low = Fraction(lower) if lower is not None else None
    high = Fraction(upper) if upper is not None else None
    if percent and any(b is not None and b > 100 for b in (low, high)):
        return None
    if low is not None and high is not None and low >= high:
        return None
    return ExtendedStatistic(kind, low, high, percent)


def percentile_values(data: list[Any]) -> list[tuple[Fraction, Fraction]] | None:
    """The values of one period as ``(value, weight)``, sorted by value, from which its
    extended statistics are computed; None when they are not available for the period.

    GetMetricStatistics: "CloudWatch needs raw data points to calculate percentile statistics. If
    you publish data using a statistic set instead, you can only retrieve percentile statistics
    for this data if one of the following conditions is true: The SampleCount value of the
    statistic set is 1. The Min and the Max values of the statistic set are equal." and
    "Percentile statistics are not available for metrics when any of the metric values are
    negative numbers." Here a period holding a statistic set that meets neither condition, or a
    negative value, has no extended statistics. A value sent with ``Values`` and ``Counts`` is
    already one raw datum per count (moto's backend); a statistic set with ``Minimum`` =
    ``Maximum`` counts as ``SampleCount`` values equal to it.
    """
    values: list[tuple[Fraction, Fraction]] = []
    for d in data:
        if isinstance(d, cw_models.MetricAggregatedDatum):
            weight = Fraction(float(d.sample_count))
            low, high = float(d.min), float(d.max)
            if weight == 1:
                value = float(d.sum)
            elif low == high:
                value = low
            else:
                return None
            if low < 0:
                return None
        else:
            weight = Fraction(1)
            value = float(d.value)
        if value < 0:
            return None
        if weight > 0:
            values.append((Fraction(value), weight))
    if not values:
        return None
    values.sort(key=lambda vw: vw[0])
    return values


def _at_rank(values: list[tuple[Fraction, Fraction]], position: Fraction) -> Fraction:
    """Nearest rank: the smallest value whose cumulative weight reaches ``position`` (the first
    value for position 0). For N values of weight 1, the value of rank ceil(P/100 x N)."""
    cumulative = Fraction(0)
    for value, weight in values:
        cumulative += weight
        if cumulative >= position:
            return value
    return values[-1][0]


def _inside(value: Fraction, stat: ExtendedStatistic) -> bool:
    """Absolute bounds: "Percentile rank is exclusive on the lower bound and inclusive on the
    upper bound"; the same for trimmed statistics ("TM(150:1000) calculates the average after
    removing all data points that are lower than or equal to 150, or higher than 1000")."""
    above = stat.lower is None or value > stat.lower
    return above and (stat.upper is None or value <= stat.upper)


def compute_extended_statistic(
    stat: ExtendedStatistic, values: list[tuple[Fraction, Fraction]]
) -> float | None:
    """One extended statistic over one period's ``percentile_values``; None when it has no value
    (a trimmed mean over no values).

    - percentile ``pP``: nearest rank, the smallest value such that at least P% of the values
      (by weight) are lower or equal; p0 is the minimum, p100 the maximum;
    - ``PR(x:y)``: the percentage of values v with x < v <= y;
    - percentage bounds ``(a%:b%)``: the values between the a% and the b% of the weight, a value
      straddling a bound counted in part, so a trimmed count can be fractional ("it is an
      interpolated approximation"); ``TC`` is that weight, ``TS`` the sum of those values, ``TM``
      their mean, ``WM`` the mean of all values once those below / above the bounds are replaced
      by the values at the bounds (nearest rank);
    - value bounds ``(x:y)``: the values x < v <= y; ``WM`` replaces values outside by the bound.
    """
    total = sum((w for _, w in values), Fraction(0))
    if stat.kind == "p":
        return float(_at_rank(values, total * stat.upper / 100))
    if stat.kind == "PR":
        inside = sum((w for v, w in values if _inside(v, stat)), Fraction(0))
        return float(100 * inside / total)
    count = Fraction(0)
    summed = Fraction(0)
    if stat.percent:
        low = total * (stat.lower or 0) / 100
        high = total * (stat.upper if stat.upper is not None else 100) / 100
        start = Fraction(0)
        for value, weight in values:
            end = start + weight
            share = min(end, high) - max(start, low)
            if share > 0:
                count += share
                summed += value * share
            start = end
        if stat.kind == "WM":
            summed += low * _at_rank(values, low) + (total - high) * _at_rank(values, high)
            count = total
    elif stat.kind == "WM":
        for value, weight in values:
            if stat.lower is not None and value <= stat.lower:
                value = stat.lower
            elif stat.upper is not None and value > stat.upper:
                value = stat.upper
            summed += value * weight
        count = total
    else:
        for value, weight in values:
            if _inside(value, stat):
                count += weight
                summed += value * weight
    if stat.kind == "TC":
        return float(count)
    if stat.kind == "TS":
        return float(summed)
    if count == 0:
        return None
    return float(summed / count)


def get_metric_statistics(self: Any) -> ActionResult:
    """GetMetricStatistics with ``ExtendedStatistics``: "The percentile statistics. Specify values
    between p0.0 and p100." Each datapoint carries ``ExtendedStatistics``, a map from the
    statistic as asked to its value over the period's values (``percentile_values``); a period
    whose percentiles are not available has none, and is left out when no ``Statistics`` were
    asked. An extended statistic that is not a percentile between p0.0 and p100:
    ``InvalidParameterValue``.

    The API reference says "you must specify either Statistics or ExtendedStatistics, but not
    both"; CloudWatch answers both in one call (clients such as Prometheus' cloudwatch_exporter
    send them together), and so does the emulator, as moto did.
    """
    namespace = self._get_param("Namespace")
    metric_name = self._get_param("MetricName")
    start_time = self._get_param("StartTime")
    end_time = self._get_param("EndTime")
    period = self._get_int_param("Period")
    statistics = self._get_param("Statistics", [])
    dimensions = self._get_param("Dimensions", [])
    unit = self._get_param("Unit")
    extended = self._get_param("ExtendedStatistics") or []
    if not statistics and not extended:
        raise InvalidParameterCombination("Must specify either Statistics or ExtendedStatistics")
    wanted = []
    for i, name in enumerate(extended, start=1):
        stat = parse_extended_statistic(name)
        if stat is None or stat.kind != "p":
            raise InvalidParameterValue(
                f"The value {name} for parameter ExtendedStatistics.member.{i} is not a valid"
                " percentile statistic. Specify values between p0.0 and p100."
            )
        wanted.append((name, stat))
    datapoints = self.cloudwatch_backend.get_metric_statistics(
        namespace,
        metric_name,
        start_time,
        end_time,
        period,
        statistics,
        unit=unit,
        dimensions=dimensions,
    )
    answered = []
    for datapoint in datapoints:
        datapoint.extended_statistics = None
        if wanted:
            values = percentile_values(datapoint.metric_data)
            if values is not None:
                datapoint.extended_statistics = {
                    name: compute_extended_statistic(stat, values) for name, stat in wanted
                }
        if statistics or datapoint.extended_statistics:
            answered.append(datapoint)
    return ActionResult({"Label": metric_name, "Datapoints": answered})


def _get_statistics_for_type(self: Any, stat: str) -> Any:
    """moto computes one GetMetricData value per period here; the extended statistics too."""
    extended = parse_extended_statistic(stat)
    if extended is None:
        return _orig["get_statistics_for_type"](self, stat)
    values = percentile_values(self.metric_data)
    return None if values is None else compute_extended_statistic(extended, values)


def _get_metric_data(self: Any, queries: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
    """GetMetricData: ``MetricStat.Stat`` "can include any CloudWatch statistic or extended
    statistic". Another value fails the call as CloudWatch fails it, ``ValidationError`` with one
    line per query: "The value X for parameter MetricDataQueries.member.N.MetricStat.Stat is not a
    valid statistic." A period without a value for its statistic (percentiles not available, a
    trimmed mean over no values) is left out of ``Values`` and ``Timestamps``."""
    errors = []
    for i, query in enumerate(queries, start=1):
        stat = (query.get("MetricStat") or {}).get("Stat")
        if isinstance(stat, str) and stat not in BASIC_STATISTICS:
            if parse_extended_statistic(stat) is None:
                errors.append(
                    f"The value {stat} for parameter MetricDataQueries.member.{i}.MetricStat.Stat"
                    " is not a valid statistic."
                )
    if errors:
        raise ValidationError("\n".join(errors))
    results = _orig["get_metric_data"](self, queries, *args, **kwargs)
    for result in results:
        pairs = [(v, t) for v, t in zip(result["values"], result["timestamps"]) if v is not None]
        result["values"] = [v for v, _ in pairs]
        result["timestamps"] = [t for _, t in pairs]
    return results


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
    CloudWatchResponse.get_metric_statistics = get_metric_statistics
    _orig["get_statistics_for_type"] = cw_models.Statistics.get_statistics_for_type
    cw_models.Statistics.get_statistics_for_type = _get_statistics_for_type
    CloudWatchResponse.call_action = autoscaling._locked(CloudWatchResponse.call_action)  # noqa: SLF001
    Backend = cw_models.CloudWatchBackend
    _orig["put_metric_alarm"] = Backend.put_metric_alarm
    Backend.put_metric_alarm = _put_metric_alarm
    _orig["set_alarm_state"] = Backend.set_alarm_state
    _orig["put_metric_data"] = Backend.put_metric_data
    Backend.put_metric_data = _put_metric_data
    Backend.set_alarm_state = _set_alarm_state
    _orig["get_metric_data"] = Backend.get_metric_data
    Backend.get_metric_data = _get_metric_data
    autoscaling._periodic.append(_evaluate_due)  # noqa: SLF001
    _installed = True


__all__ = [
    "install",
    "evaluate",
    "sns_notifications",
    "parse_extended_statistic",
    "percentile_values",
    "compute_extended_statistic",
]
