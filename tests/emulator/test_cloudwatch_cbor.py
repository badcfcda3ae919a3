"""CloudWatch over Smithy RPC v2 CBOR: requests built byte for byte the way aws-sdk-cloudwatch
(Rust, 1.140) builds them (path, headers, SigV4, CBOR body), answers decoded with cbor2 and
checked against the Smithy spec and CloudWatch's documented behaviour."""

import gzip
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "GraniteServiceVersion20100801"
NS = "Bake/Test"


def _walk(data, pos, tags):
    """Skip one definite-length CBOR item at ``pos``; record (tag, kind of content) pairs."""
    head = data[pos]
    major, info = head >> 5, head & 0x1F
    pos += 1
    if info < 24:
        arg = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        arg = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        raise AssertionError(f"indefinite or reserved CBOR item at {pos - 1}")
    if major in (0, 1, 7):
        return pos
    if major in (2, 3):
        return pos + arg
    if major == 4:
        for _ in range(arg):
            pos = _walk(data, pos, tags)
        return pos
    if major == 5:
        for _ in range(2 * arg):
            pos = _walk(data, pos, tags)
        return pos
    content = data[pos] >> 5
    is_number = content in (0, 1) or data[pos] in (0xFA, 0xFB)
    tags.append((arg, "number" if is_number else "other"))
    return _walk(data, pos, tags)


class Reply:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.raw = raw
        is_cbor = self.headers.get("content-type") == "application/cbor"
        self.body = cbor2.loads(raw) if raw and is_cbor else None

    def epoch_tags(self):
        """How many CBOR tag 1 (epoch seconds) items the body holds, each checked to wrap a number.

        cbor2 turns tags 0 and 1 into datetimes silently, so walk the bytes instead."""
        tags = []
        end = _walk(self.raw, 0, tags)
        assert end == len(self.raw)
        assert all(tag == (1, "number") for tag in tags), tags
        return len(tags)

    @property
    def error_type(self):
        return self.body["__type"]

    @property
    def query_error(self):
        return self.headers.get("x-amzn-query-error")


class CborClient:
    """What the Rust SDK puts on the wire for a CloudWatch call."""

    def __init__(self, url, region="us-east-1"):
        self.url = url
        self.region = region

    def raw(self, operation, body, headers=None, sign=True, service=SERVICE):
        url = f"{self.url}/service/{service}/operation/{operation}"
        hdrs = {
            "smithy-protocol": "rpc-v2-cbor",
            "Accept": "application/cbor",
            "x-amzn-query-mode": "true",
        }
        if body:
            hdrs["Content-Type"] = "application/cbor"
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        if sign:
            req = AWSRequest(method="POST", url=url, data=body, headers=hdrs)
            SigV4Auth(Credentials("testing", "testing"), "monitoring", self.region).add_auth(req)
            hdrs = dict(req.headers.items())
        request = urllib.request.Request(url, data=body, method="POST", headers=hdrs)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers), err.read())

    def call(self, operation, params=None, **kw):
        body = cbor2.dumps(params) if params is not None else b""
        return self.raw(operation, body, **kw)

    def ok(self, operation, params=None):
        reply = self.call(operation, params)
        assert reply.status == 200, (operation, reply.status, reply.body)
        assert reply.headers["smithy-protocol"] == "rpc-v2-cbor"
        return reply


@pytest.fixture
def cw(emulator):
    return CborClient(emulator.url)


def now():
    # Whole seconds keep the 1-second buckets of high-resolution metrics easy to reason about.
    return datetime.now(timezone.utc).replace(microsecond=0)


def dims(instance):
    return [{"Name": "InstanceId", "Value": instance}]


def test_put_metric_data_has_no_output_body(cw):
    reply = cw.ok(
        "PutMetricData",
        {"Namespace": NS, "MetricData": [{"MetricName": "m", "Value": 1.0, "Timestamp": now()}]},
    )
    assert reply.raw == b""
    assert "content-type" not in reply.headers
    assert reply.headers.get("x-amzn-requestid")


def test_statistic_set_aggregates_into_statistics(cw):
    t = now()
    cw.ok(
        "PutMetricData",
        {
            "Namespace": NS,
            "MetricData": [
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": dims("i-1"),
                    "Timestamp": t,
                    "StatisticValues": {
                        "SampleCount": 4.0,
                        "Sum": 200.0,
                        "Minimum": 5.0,
                        "Maximum": 97.5,
                    },
                    "Unit": "Percent",
                    "StorageResolution": 1,
                },
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": dims("i-1"),
                    "Timestamp": t,
                    "StatisticValues": {
                        "SampleCount": 2.0,
                        "Sum": 60.0,
                        "Minimum": 20.0,
                        "Maximum": 40.0,
                    },
                    "Unit": "Percent",
                    "StorageResolution": 1,
                },
            ],
        },
    )
    reply = cw.ok(
        "GetMetricStatistics",
        {
            "Namespace": NS,
            "MetricName": "CPUUtilization",
            "Dimensions": dims("i-1"),
            "StartTime": t - timedelta(seconds=10),
            "EndTime": t + timedelta(seconds=10),
            "Period": 1,
            "Statistics": ["Maximum", "Minimum", "SampleCount", "Sum", "Average"],
        },
    )
    assert reply.headers["content-type"] == "application/cbor"
    assert reply.body["Label"] == "CPUUtilization"
    [point] = reply.body["Datapoints"]
    assert point["Maximum"] == 97.5
    assert point["Minimum"] == 5.0
    assert point["SampleCount"] == 6.0
    assert point["Sum"] == 260.0
    assert point["Average"] == pytest.approx(260.0 / 6)
    assert point["Unit"] == "Percent"
    assert point["Timestamp"] == t
    assert reply.epoch_tags() == 1  # the timestamp went out as CBOR tag 1 (epoch seconds)


def test_values_and_counts_weight_each_value(cw):
    t = now()
    cw.ok(
        "PutMetricData",
        {
            "Namespace": NS,
            "MetricData": [
                {
                    "MetricName": "Latency",
                    "Timestamp": t,
                    "Values": [10.0, 20.0, 30.0],
                    "Counts": [1.0, 2.0, 3.0],
                    "StorageResolution": 1,
                    "Unit": "Milliseconds",
                }
            ],
        },
    )
    reply = cw.ok(
        "GetMetricStatistics",
        {
            "Namespace": NS,
            "MetricName": "Latency",
            "StartTime": t - timedelta(seconds=5),
            "EndTime": t + timedelta(seconds=5),
            "Period": 1,
            "Statistics": ["SampleCount", "Sum", "Maximum", "Minimum"],
        },
    )
    [point] = reply.body["Datapoints"]
    assert point["SampleCount"] == 6.0
    assert point["Sum"] == 10 + 40 + 90
    assert point["Maximum"] == 30.0
    assert point["Minimum"] == 10.0


def test_get_metric_data_high_resolution_one_second_buckets(cw):
    t = now()
    data = []
    for second, value in enumerate([50.0, 70.0, 90.0]):
        data.append(
            {
                "MetricName": "CPUUtilization",
                "Dimensions": dims("i-2"),
                "Timestamp": t + timedelta(seconds=second),
                "Value": value,
                "StorageResolution": 1,
                "Unit": "Percent",
            }
        )
    cw.ok("PutMetricData", {"Namespace": NS, "MetricData": data})
    reply = cw.ok(
        "GetMetricData",
        {
            "MetricDataQueries": [
                {
                    "Id": "peak",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NS,
                            "MetricName": "CPUUtilization",
                            "Dimensions": dims("i-2"),
                        },
                        "Period": 1,
                        "Stat": "Maximum",
                    },
                    "ReturnData": True,
                }
            ],
            "StartTime": t,
            "EndTime": t + timedelta(seconds=10),
            "ScanBy": "TimestampAscending",
        },
    )
    [result] = reply.body["MetricDataResults"]
    assert result["Id"] == "peak"
    assert result["StatusCode"] == "Complete"
    assert result["Values"] == [50.0, 70.0, 90.0]
    assert result["Timestamps"] == [t, t + timedelta(seconds=1), t + timedelta(seconds=2)]
    assert all(isinstance(v, float) for v in result["Values"])
    assert reply.epoch_tags() == 3


def test_doubles_are_cbor_floats_and_integers_are_cbor_integers(cw):
    cw.ok(
        "PutMetricAlarm",
        {
            "AlarmName": "whole-threshold",
            "Namespace": NS,
            "MetricName": "m",
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 2,
            "Threshold": 80.0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    )
    reply = cw.ok("DescribeAlarms", {"AlarmNames": ["whole-threshold"]})
    [alarm] = reply.body["MetricAlarms"]
    # minicbor (the Rust SDK's decoder) reads a double only from a CBOR float and an integer
    # only from a CBOR integer.
    assert type(alarm["Threshold"]) is float
    assert type(alarm["Period"]) is int
    assert type(alarm["EvaluationPeriods"]) is int
    assert type(alarm["ActionsEnabled"]) is bool


def test_list_metrics_filters_and_lists_each_metric_once(cw):
    t = now()
    data = [
        {"MetricName": "A", "Dimensions": dims("i-1"), "Value": 1.0, "Timestamp": t},
        {"MetricName": "A", "Dimensions": dims("i-1"), "Value": 2.0, "Timestamp": t},
        {"MetricName": "A", "Dimensions": dims("i-2"), "Value": 3.0, "Timestamp": t},
        {"MetricName": "B", "Value": 4.0, "Timestamp": t},
        {"MetricName": "B", "Value": 5.0, "Timestamp": t},
        {
            "MetricName": "C",
            "Dimensions": [
                {"Name": "AutoScalingGroupName", "Value": "g"},
                {"Name": "InstanceId", "Value": "i-3"},
            ],
            "Value": 6.0,
            "Timestamp": t,
        },
        {
            "MetricName": "C",
            "Dimensions": [
                {"Name": "AutoScalingGroupName", "Value": "g"},
                {"Name": "InstanceId", "Value": "i-3"},
            ],
            "Value": 7.0,
            "Timestamp": t,
        },
    ]
    cw.ok("PutMetricData", {"Namespace": NS, "MetricData": data})
    cw.ok("PutMetricData", {"Namespace": "Other", "MetricData": [{"MetricName": "A", "Value": 1.0}]})

    everything = cw.ok("ListMetrics", {"Namespace": NS}).body["Metrics"]
    assert sorted(
        (m["MetricName"], tuple((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
        for m in everything
    ) == [
        ("A", (("InstanceId", "i-1"),)),
        ("A", (("InstanceId", "i-2"),)),
        ("B", ()),
        ("C", (("AutoScalingGroupName", "g"), ("InstanceId", "i-3"))),
    ]
    assert all(m["Namespace"] == NS for m in everything)
    assert "NextToken" not in cw.ok("ListMetrics", {"Namespace": NS}).body

    by_name = cw.ok("ListMetrics", {"Namespace": NS, "MetricName": "A"}).body["Metrics"]
    assert len(by_name) == 2
    by_dim = cw.ok(
        "ListMetrics", {"Namespace": NS, "Dimensions": [{"Name": "InstanceId", "Value": "i-2"}]}
    ).body["Metrics"]
    assert [m["Dimensions"] for m in by_dim] == [dims("i-2")]
    # A dimension filter without a value matches every value of that dimension.
    by_dim_name = cw.ok(
        "ListMetrics", {"Namespace": NS, "Dimensions": [{"Name": "InstanceId"}]}
    ).body["Metrics"]
    assert len(by_dim_name) == 3

    # No input at all (empty body) lists every namespace.
    all_ns = cw.call("ListMetrics", None)
    assert all_ns.status == 200
    assert {m["Namespace"] for m in all_ns.body["Metrics"]} == {NS, "Other"}


def test_list_metrics_pages_with_next_token(cw):
    data = [{"MetricName": f"m{i:04d}", "Value": float(i)} for i in range(520)]
    cw.ok("PutMetricData", {"Namespace": NS, "MetricData": data[:500]})
    cw.ok("PutMetricData", {"Namespace": NS, "MetricData": data[500:]})
    first = cw.ok("ListMetrics", {"Namespace": NS}).body
    assert len(first["Metrics"]) == 500
    token = first["NextToken"]
    second = cw.ok("ListMetrics", {"Namespace": NS, "NextToken": token}).body
    assert len(second["Metrics"]) == 20
    assert "NextToken" not in second
    names = {m["MetricName"] for m in first["Metrics"] + second["Metrics"]}
    assert len(names) == 520
    # A token is good for one use, as moto's backend keeps it.
    reused = cw.call("ListMetrics", {"Namespace": NS, "NextToken": token})
    assert reused.status == 400
    assert reused.query_error == "InvalidParameterValue;Sender"


def put_alarm(cw, name, instance="i-1", threshold=80.0):
    cw.ok(
        "PutMetricAlarm",
        {
            "AlarmName": name,
            "AlarmDescription": "CPU peak",
            "Namespace": NS,
            "MetricName": "CPUUtilization",
            "Dimensions": dims(instance),
            "Statistic": "Maximum",
            "Period": 10,
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "Unit": "Percent",
            "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:topic"],
        },
    )


def test_put_metric_alarm_then_describe_alarms(cw):
    put_alarm(cw, "bake-cpu-peak-1")
    put_alarm(cw, "bake-cpu-peak-2", instance="i-2", threshold=95.5)
    put_alarm(cw, "other-alarm")

    [alarm] = cw.ok("DescribeAlarms", {"AlarmNames": ["bake-cpu-peak-1"]}).body["MetricAlarms"]
    assert alarm["AlarmName"] == "bake-cpu-peak-1"
    assert alarm["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:bake-cpu-peak-1"
    assert alarm["AlarmDescription"] == "CPU peak"
    assert alarm["Namespace"] == NS
    assert alarm["MetricName"] == "CPUUtilization"
    assert alarm["Dimensions"] == dims("i-1")
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Period"] == 10
    assert alarm["EvaluationPeriods"] == 3
    assert alarm["DatapointsToAlarm"] == 2
    assert alarm["Threshold"] == 80.0
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["Unit"] == "Percent"
    assert alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:topic"]
    assert alarm["ActionsEnabled"] is True
    assert isinstance(alarm["StateUpdatedTimestamp"], datetime)

    prefixed = cw.ok("DescribeAlarms", {"AlarmNamePrefix": "bake-"}).body["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in prefixed) == ["bake-cpu-peak-1", "bake-cpu-peak-2"]
    assert [a["Threshold"] for a in prefixed if a["AlarmName"].endswith("2")] == [95.5]

    everything = cw.call("DescribeAlarms", None)
    assert everything.status == 200
    assert len(everything.body["MetricAlarms"]) == 3


def test_alarm_state_describe_by_state_for_metric_and_delete(cw):
    put_alarm(cw, "a1")
    put_alarm(cw, "a2", instance="i-2")
    cw.ok(
        "SetAlarmState",
        {"AlarmName": "a1", "StateValue": "ALARM", "StateReason": "peak above threshold"},
    )
    in_alarm = cw.ok("DescribeAlarms", {"StateValue": "ALARM"}).body["MetricAlarms"]
    assert [(a["AlarmName"], a["StateReason"]) for a in in_alarm] == [("a1", "peak above threshold")]

    for_metric = cw.ok(
        "DescribeAlarmsForMetric", {"Namespace": NS, "MetricName": "CPUUtilization"}
    ).body["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in for_metric) == ["a1", "a2"]

    reply = cw.ok("DeleteAlarms", {"AlarmNames": ["a1"]})
    assert reply.raw == b""
    left = cw.ok("DescribeAlarms", {}).body["MetricAlarms"]
    assert [a["AlarmName"] for a in left] == ["a2"]


def test_region_comes_from_the_signature_scope(emulator):
    east = CborClient(emulator.url, region="us-east-1")
    west = CborClient(emulator.url, region="eu-west-1")
    west.ok("PutMetricData", {"Namespace": NS, "MetricData": [{"MetricName": "w", "Value": 1.0}]})
    put_alarm(west, "west-alarm")
    assert east.ok("ListMetrics", {"Namespace": NS}).body["Metrics"] == []
    assert [m["MetricName"] for m in west.ok("ListMetrics", {"Namespace": NS}).body["Metrics"]] == [
        "w"
    ]
    [alarm] = west.ok("DescribeAlarms", {}).body["MetricAlarms"]
    assert alarm["AlarmArn"].startswith("arn:aws:cloudwatch:eu-west-1:123456789012:")
    assert east.ok("DescribeAlarms", {}).body["MetricAlarms"] == []


def test_cbor_and_query_protocol_share_one_backend(emulator, cw):
    t = now()
    cw.ok(
        "PutMetricData",
        {"Namespace": NS, "MetricData": [{"MetricName": "shared", "Value": 3.0, "Timestamp": t}]},
    )
    boto = emulator.client("cloudwatch")
    listed = boto.list_metrics(Namespace=NS)["Metrics"]
    assert [m["MetricName"] for m in listed] == ["shared"]
    boto.put_metric_data(Namespace=NS, MetricData=[{"MetricName": "from-query", "Value": 1.0}])
    names = {m["MetricName"] for m in cw.ok("ListMetrics", {"Namespace": NS}).body["Metrics"]}
    assert names == {"shared", "from-query"}


def test_gzip_request_body_is_accepted(cw):
    # aws-sdk-cloudwatch compresses PutMetricData bodies (@requestCompression) past 10 KiB.
    data = [{"MetricName": f"z{i}", "Value": float(i)} for i in range(400)]
    body = gzip.compress(cbor2.dumps({"Namespace": NS, "MetricData": data}))
    reply = cw.raw("PutMetricData", body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200, reply.body
    assert len(cw.ok("ListMetrics", {"Namespace": NS}).body["Metrics"]) == 400


def test_unknown_operation_is_a_cbor_error(cw):
    reply = cw.call("DescribeNothing", {})
    assert reply.status == 404
    assert reply.headers["smithy-protocol"] == "rpc-v2-cbor"
    assert reply.headers["content-type"] == "application/cbor"
    assert reply.error_type.endswith("#UnknownOperationException")
    assert "DescribeNothing" in reply.body["message"]


def test_missing_required_member_is_missing_parameter(cw):
    reply = cw.call("GetMetricStatistics", {"Namespace": NS, "MetricName": "m", "Period": 60})
    assert reply.status == 400
    assert reply.query_error == "MissingParameter;Sender"
    assert reply.error_type == "com.amazonaws.cloudwatch#MissingRequiredParameterException"
    assert "StartTime" in reply.body["message"]

    nested = cw.call("PutMetricData", {"Namespace": NS, "MetricData": [{"Value": 1.0}]})
    assert nested.status == 400
    assert nested.query_error == "MissingParameter;Sender"
    assert "MetricName" in nested.body["message"]


def test_backend_errors_carry_type_message_and_query_code(cw):
    t = now()
    reply = cw.call(
        "GetMetricStatistics",
        {
            "Namespace": NS,
            "MetricName": "m",
            "StartTime": t,
            "EndTime": t - timedelta(minutes=1),
            "Period": 60,
            "Statistics": ["Maximum"],
        },
    )
    assert reply.status == 400
    assert reply.headers["smithy-protocol"] == "rpc-v2-cbor"
    assert reply.error_type == "com.amazonaws.cloudwatch#InvalidParameterValueException"
    assert reply.query_error == "InvalidParameterValue;Sender"
    assert "StartTime" in reply.body["message"]

    missing = cw.call("SetAlarmState", {"AlarmName": "nope", "StateValue": "OK", "StateReason": "x"})
    assert missing.status == 400
    assert missing.error_type == "com.amazonaws.cloudwatch#ResourceNotFound"
    assert missing.query_error == "ResourceNotFound;Sender"

    both = cw.call(
        "PutMetricData",
        {"Namespace": NS, "MetricData": [{"MetricName": "m", "Value": 1.0, "Values": [1.0]}]},
    )
    assert both.status == 400
    assert both.query_error == "InvalidParameterValue;Sender"


def test_malformed_requests_are_rejected(cw):
    garbage = cw.raw("ListMetrics", b"\xff\x00not cbor")
    assert garbage.status == 400
    assert garbage.error_type.endswith("#SerializationException")

    not_a_map = cw.raw("ListMetrics", cbor2.dumps([1, 2]))
    assert not_a_map.status == 400

    wrong_type = cw.call("ListMetrics", {"Namespace": 42})
    assert wrong_type.status == 400
    assert "Namespace" in wrong_type.body["message"]

    no_protocol = cw.call("ListMetrics", {}, headers={"smithy-protocol": None})
    assert no_protocol.status == 400
    assert "smithy-protocol" in no_protocol.body["message"]

    with_target = cw.call(
        "ListMetrics", {}, headers={"X-Amz-Target": "GraniteServiceVersion20100801.ListMetrics"}
    )
    assert with_target.status == 400


def test_absolute_service_id_and_path_prefix_route_the_same(cw):
    reply = cw.call("ListMetrics", {}, service="com.amazonaws.cloudwatch.GraniteServiceVersion20100801")
    assert reply.status == 200
    prefixed = CborClient(cw.url + "/v1")
    assert prefixed.call("ListMetrics", {}).status == 200


def test_other_services_pass_through(emulator):
    ec2 = emulator.client("ec2")
    assert "Reservations" in ec2.describe_instances()
    # Another service name in an rpcv2Cbor path is not CloudWatch's: moto answers it.
    reply = CborClient(emulator.url).call("Whatever", {}, service="SomeOtherService")
    assert reply.status == 404
    assert "smithy-protocol" not in reply.headers
