"""CloudWatch extended statistics (percentiles, percentile rank, trimmed statistics) over the three
protocols the emulator serves, checked against the AWS documentation.

Sources: the API reference for GetMetricStatistics ("CloudWatch needs raw data points to calculate
percentile statistics. If you publish data using a statistic set instead, you can only retrieve
percentile statistics for this data if one of the following conditions is true: The SampleCount
value of the statistic set is 1. The Min and the Max values of the statistic set are equal.",
"Percentile statistics are not available for metrics when any of the metric values are negative
numbers.", ExtendedStatistics "Specify values between p0.0 and p100"), MetricStat ("Stat: The
statistic to return. It can include any CloudWatch statistic or extended statistic.") and the user
guide's "CloudWatch statistics definitions" (PR "is exclusive on the lower bound and inclusive on
the upper bound", tm90, TM(2%:98%), TM(150:1000), IQM, TC, TS, WM).

AWS does not publish its percentile estimator; the emulator's is nearest rank (the value of rank
ceil(P/100 x N) among the N sorted values, Counts weighting), so 1..100 gives p50 = 50, p90 = 90,
p99 = 99, p99.9 = 100.
"""

import re
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

from test_cloudwatch_cbor import CborClient
from test_cloudwatch_protocols import PROTOCOLS, make_client


@pytest.fixture(params=PROTOCOLS)
def cw(shared_emulator, tmp_path, request):
    """A client of one protocol on the module's emulator; ``cw.ns``: the test's own namespace."""
    client = make_client(shared_emulator, tmp_path, request.param)
    client.ns = "Bake/Percentiles/" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")
    return client


def minute(back):
    """The start of the minute ``back`` minutes ago (UTC), a period boundary for Period=60.

    moto's GetMetricStatistics starts its periods at the first data point (docs/emulator-cloudwatch-
    cbor.md, "What is not reproduced"): tests that look at several periods put one at ``t0``."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return now - timedelta(minutes=back)


def put(cw, name, t, **datum):
    cw.put_metric_data(Namespace=cw.ns, MetricData=[{"MetricName": name, "Timestamp": t, **datum}])


def stats(cw, name, t0, minutes, **kwargs):
    """GetMetricStatistics over ``minutes`` one-minute periods from ``t0``, oldest first."""
    out = cw.get_metric_statistics(
        Namespace=cw.ns,
        MetricName=name,
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=minutes),
        Period=60,
        **kwargs,
    )["Datapoints"]
    return sorted(out, key=lambda d: d["Timestamp"])


def data(cw, name, t0, minutes, *stat_names):
    """GetMetricData, one MetricStat query per statistic: {stat: [(minute index, value), ...]}."""
    queries = [
        {
            "Id": f"q{i}",
            "MetricStat": {
                "Metric": {"Namespace": cw.ns, "MetricName": name},
                "Period": 60,
                "Stat": stat,
            },
        }
        for i, stat in enumerate(stat_names)
    ]
    results = cw.get_metric_data(
        MetricDataQueries=queries,
        StartTime=t0,
        EndTime=t0 + timedelta(minutes=minutes),
        ScanBy="TimestampAscending",
    )["MetricDataResults"]
    by_id = {r["Id"]: r for r in results}
    out = {}
    for i, stat in enumerate(stat_names):
        r = by_id[f"q{i}"]
        out[stat] = [
            (int((ts - t0).total_seconds()) // 60, v)
            for ts, v in zip(r["Timestamps"], r["Values"])
        ]
    return out


def test_percentiles_of_one_to_a_hundred(cw):
    t0 = minute(10)
    put(cw, "Latency", t0 + timedelta(seconds=5), Values=[float(v) for v in range(100, 0, -1)])

    (point,) = stats(
        cw, "Latency", t0, 1, ExtendedStatistics=["p50", "p90", "p99", "p99.9", "p0.0", "p100"]
    )
    assert point["ExtendedStatistics"] == {
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "p99.9": 100.0,
        "p0.0": 1.0,
        "p100": 100.0,
    }
    assert "SampleCount" not in point and "Average" not in point

    got = data(cw, "Latency", t0, 1, "p50", "p99.9", "p7")
    assert got == {"p50": [(0, 50.0)], "p99.9": [(0, 100.0)], "p7": [(0, 7.0)]}


def test_percentile_rank_and_trimmed_statistics(cw):
    t0 = minute(10)
    put(cw, "Sizes", t0 + timedelta(seconds=5), Values=[float(v) for v in range(1, 101)])
    got = data(
        cw,
        "Sizes",
        t0,
        1,
        "PR(:50)",  # v <= 50
        "PR(10:20)",  # 10 < v <= 20: 11..20
        "PR(90:)",  # v > 90
        "PR(0.5:1)",  # the upper bound is inclusive: 1
        "tm90",  # the mean once the highest 10% are removed: 1..90
        "TM(10%:90%)",  # 11..90
        "IQM",  # TM(25%:75%): 26..75
        "TM(10:20)",  # 10 < v <= 20
        "tc90",
        "TS(80%:)",  # 81..100
        "wm90",  # 91..100 counted as p90 = 90
    )
    assert got == {
        "PR(:50)": [(0, 50.0)],
        "PR(10:20)": [(0, 10.0)],
        "PR(90:)": [(0, 10.0)],
        "PR(0.5:1)": [(0, 1.0)],
        "tm90": [(0, 45.5)],
        "TM(10%:90%)": [(0, 50.5)],
        "IQM": [(0, 50.5)],
        "TM(10:20)": [(0, 15.5)],
        "tc90": [(0, 90.0)],
        "TS(80%:)": [(0, 1810.0)],
        "wm90": [(0, 49.95)],
    }


def test_counts_weight_values_and_statistics_come_alongside(cw):
    t0 = minute(10)
    put(cw, "Weighted", t0 + timedelta(seconds=5), Values=[100.0, 1.0], Counts=[1.0, 99.0])
    (point,) = stats(
        cw,
        "Weighted",
        t0,
        1,
        Statistics=["SampleCount", "Maximum"],
        ExtendedStatistics=["p50", "p99", "p99.5"],
    )
    assert point["SampleCount"] == 100.0
    assert point["Maximum"] == 100.0
    # 99 ones and one hundred: 99% of the values are <= 1, the 100th is 100.
    assert point["ExtendedStatistics"] == {"p50": 1.0, "p99": 1.0, "p99.5": 100.0}
    assert data(cw, "Weighted", t0, 1, "PR(:1)")["PR(:1)"] == [(0, 99.0)]


def test_each_period_has_its_own_percentiles(cw):
    t0 = minute(10)
    put(cw, "Split", t0, Values=[float(v) for v in range(1, 11)])
    put(cw, "Split", t0 + timedelta(seconds=65), Values=[float(v) for v in range(101, 111)])
    put(cw, "Split", t0 + timedelta(seconds=185), Value=7.0)  # fourth minute; third is empty

    points = stats(cw, "Split", t0, 4, ExtendedStatistics=["p50", "p100"])
    assert [(p["Timestamp"] - t0).total_seconds() for p in points] == [0, 60, 180]
    assert [p["ExtendedStatistics"] for p in points] == [
        {"p50": 5.0, "p100": 10.0},
        {"p50": 105.0, "p100": 110.0},
        {"p50": 7.0, "p100": 7.0},
    ]
    assert data(cw, "Split", t0, 4, "p50")["p50"] == [(0, 5.0), (1, 105.0), (3, 7.0)]


def test_statistic_sets_give_percentiles_only_when_they_are_raw_values(cw):
    t0 = minute(10)
    spread = {"SampleCount": 4.0, "Sum": 20.0, "Minimum": 1.0, "Maximum": 9.0}
    # minute 0: a statistic set alone, Minimum != Maximum: no percentile
    put(cw, "Sets", t0, StatisticValues=spread)
    # minute 1: Minimum == Maximum: three sevens, beside one raw value 1
    put(
        cw,
        "Sets",
        t0 + timedelta(seconds=65),
        StatisticValues={"SampleCount": 3.0, "Sum": 21.0, "Minimum": 7.0, "Maximum": 7.0},
    )
    put(cw, "Sets", t0 + timedelta(seconds=66), Value=1.0)
    # minute 2: SampleCount 1 is one raw value
    put(
        cw,
        "Sets",
        t0 + timedelta(seconds=125),
        StatisticValues={"SampleCount": 1.0, "Sum": 5.0, "Minimum": 5.0, "Maximum": 5.0},
    )
    # minute 3: raw values beside a set that is not: the period's percentiles are not available
    put(cw, "Sets", t0 + timedelta(seconds=185), Value=3.0)
    put(cw, "Sets", t0 + timedelta(seconds=186), StatisticValues=spread)

    only = stats(cw, "Sets", t0, 4, ExtendedStatistics=["p50", "p25"])
    assert [((p["Timestamp"] - t0).total_seconds(), p["ExtendedStatistics"]) for p in only] == [
        (60, {"p50": 7.0, "p25": 1.0}),
        (120, {"p50": 5.0, "p25": 5.0}),
    ]
    both = stats(cw, "Sets", t0, 4, Statistics=["SampleCount"], ExtendedStatistics=["p50"])
    assert [p["SampleCount"] for p in both] == [4.0, 4.0, 1.0, 5.0]
    assert [p.get("ExtendedStatistics") for p in both] == [None, {"p50": 7.0}, {"p50": 5.0}, None]

    got = data(cw, "Sets", t0, 4, "p50", "PR(:5)", "SampleCount")
    assert got["p50"] == [(1, 7.0), (2, 5.0)]
    assert got["PR(:5)"] == [(1, 25.0), (2, 100.0)]
    assert got["SampleCount"] == [(0, 4.0), (1, 4.0), (2, 1.0), (3, 5.0)]


def test_negative_values_have_no_percentiles(cw):
    t0 = minute(10)
    put(cw, "Signed", t0, Values=[-1.0, 5.0, 6.0])
    put(cw, "Signed", t0 + timedelta(seconds=65), Values=[0.0, 5.0, 6.0])
    points = stats(cw, "Signed", t0, 2, Statistics=["Minimum"], ExtendedStatistics=["p50"])
    assert [(p["Minimum"], p.get("ExtendedStatistics")) for p in points] == [
        (-1.0, None),
        (0.0, {"p50": 5.0}),
    ]
    got = data(cw, "Signed", t0, 2, "p50", "PR(:5)", "Minimum")
    assert got == {
        "p50": [(1, 5.0)],
        "PR(:5)": [(1, 200 / 3)],  # two of the three values
        "Minimum": [(0, -1.0), (1, 0.0)],
    }


@pytest.mark.parametrize("bad", ["p101", "p100.5", "P99", "p", "p-1", "median", "tm90", "PR(:5)"])
def test_bad_extended_statistics_are_invalid_parameter_values(cw, bad):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        cw.get_metric_statistics(
            Namespace=cw.ns,
            MetricName="Any",
            StartTime=minute(10),
            EndTime=minute(0),
            Period=60,
            ExtendedStatistics=["p50", bad],
        )
    error = err.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue"
    assert f"The value {bad} for parameter ExtendedStatistics.member.2 " in error["Message"]


def test_bad_metric_stat_is_a_validation_error_naming_each_query(cw):
    t0 = minute(10)

    def stat(name):
        return {"Metric": {"Namespace": cw.ns, "MetricName": "Any"}, "Period": 60, "Stat": name}

    queries = [
        {"Id": "ok1", "MetricStat": stat("p99")},
        {"Id": "bad2", "MetricStat": stat("p101")},
        {"Id": "ok3", "MetricStat": stat("TM(10%:90%)")},
        {"Id": "bad4", "MetricStat": stat("PR(10%:20%)")},
        {"Id": "bad5", "MetricStat": stat("Median")},
        {"Id": "bad6", "MetricStat": stat("TM(90%:10%)")},
    ]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        cw.get_metric_data(
            MetricDataQueries=queries, StartTime=t0, EndTime=t0 + timedelta(minutes=1)
        )
    error = err.value.response["Error"]
    assert error["Code"] == "ValidationError"
    lines = error["Message"].strip().split("\n")
    assert lines == [
        f"The value {s} for parameter MetricDataQueries.member.{i}.MetricStat.Stat is not a"
        " valid statistic."
        for i, s in ((2, "p101"), (4, "PR(10%:20%)"), (5, "Median"), (6, "TM(90%:10%)"))
    ]


def test_neither_statistics_nor_extended_statistics(cw):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        cw.get_metric_statistics(
            Namespace=cw.ns, MetricName="Any", StartTime=minute(10), EndTime=minute(0), Period=60
        )
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_cbor_extended_statistics_are_a_map_of_cbor_floats(shared_emulator):
    """What the Rust SDK decodes: ``ExtendedStatistics`` a CBOR map, its values doubles (CBOR
    floats, not integers, even for whole numbers)."""
    cw = CborClient(shared_emulator.url)
    ns = "Bake/Percentiles/raw-cbor"
    t0 = minute(10)
    cw.ok(
        "PutMetricData",
        {
            "Namespace": ns,
            "MetricData": [
                {"MetricName": "Raw", "Timestamp": t0 + timedelta(seconds=5), "Values": [1.0, 2.0]}
            ],
        },
    )
    reply = cw.ok(
        "GetMetricStatistics",
        {
            "Namespace": ns,
            "MetricName": "Raw",
            "StartTime": t0,
            "EndTime": t0 + timedelta(minutes=1),
            "Period": 60,
            "ExtendedStatistics": ["p50", "p100"],
        },
    )
    (point,) = reply.body["Datapoints"]
    assert point["ExtendedStatistics"] == {"p50": 1.0, "p100": 2.0}
    assert all(type(v) is float for v in point["ExtendedStatistics"].values())

    bad = cw.call(
        "GetMetricData",
        {
            "MetricDataQueries": [
                {
                    "Id": "q",
                    "MetricStat": {
                        "Metric": {"Namespace": ns, "MetricName": "Raw"},
                        "Period": 60,
                        "Stat": "p200",
                    },
                }
            ],
            "StartTime": t0,
            "EndTime": t0 + timedelta(minutes=1),
        },
    )
    assert bad.status == 400
    assert bad.query_error == "ValidationError;Sender"
    message = bad.body["message"]
    assert "MetricDataQueries.member.1.MetricStat.Stat is not a valid statistic" in message
