"""CloudWatch over RPC v2 CBOR with a second, independent client: botocore's own
``smithy-rpc-v2-cbor`` serializer and parser.

botocore 1.40 speaks the protocol, but its bundled CloudWatch model still lists only ``query``.
The fixture copies that model with the protocol metadata AWS's current Smithy model has
(protocol ``smithy-rpc-v2-cbor``, the ``GraniteServiceVersion20100801`` service name,
``awsQueryCompatible``) into a private data path, so boto3 builds a CBOR CloudWatch client —
the same wire format aws-sdk-cloudwatch uses, from another code base."""

import gzip
import json
import os
from datetime import datetime, timedelta, timezone

import boto3
import botocore
import botocore.session
import pytest

NS = "Bake/Boto"


@pytest.fixture
def cbor_cw(emulator, tmp_path):
    src = os.path.join(
        os.path.dirname(botocore.__file__), "data", "cloudwatch", "2010-08-01", "service-2.json.gz"
    )
    with open(src, "rb") as f:
        model = json.loads(gzip.decompress(f.read()))
    model["metadata"].update(
        {
            "protocol": "smithy-rpc-v2-cbor",
            "protocols": ["smithy-rpc-v2-cbor"],
            "targetPrefix": "GraniteServiceVersion20100801",
            "awsQueryCompatible": {},
        }
    )
    target = tmp_path / "cloudwatch" / "2010-08-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))

    session = botocore.session.Session()
    session.get_component("data_loader").search_paths.insert(0, str(tmp_path))
    client = boto3.session.Session(botocore_session=session).client(
        "cloudwatch",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sent = []
    client.meta.events.register(
        "before-send.cloudwatch",
        lambda request, **_: sent.append(
            (request.url, {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
        ),
    )
    client.sent = sent
    return client


def test_client_really_speaks_cbor(cbor_cw):
    assert cbor_cw.meta.service_model.protocol == "smithy-rpc-v2-cbor"
    cbor_cw.list_metrics()
    url, headers = cbor_cw.sent[-1]
    assert url.endswith("/service/GraniteServiceVersion20100801/operation/ListMetrics")
    assert headers["smithy-protocol"] == "rpc-v2-cbor"
    assert headers["x-amzn-query-mode"] == "true"


def test_statistic_set_and_values_round_trip(cbor_cw):
    t = datetime.now(timezone.utc).replace(microsecond=0)
    dims = [{"Name": "InstanceId", "Value": "i-9"}]
    cbor_cw.put_metric_data(
        Namespace=NS,
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": dims,
                "Timestamp": t,
                "StatisticValues": {"SampleCount": 3, "Sum": 120, "Minimum": 10, "Maximum": 88.5},
                "StorageResolution": 1,
                "Unit": "Percent",
            },
            {
                "MetricName": "CPUUtilization",
                "Dimensions": dims,
                "Timestamp": t + timedelta(seconds=1),
                "Values": [5.0, 99.0],
                "Counts": [2.0, 1.0],
                "StorageResolution": 1,
                "Unit": "Percent",
            },
        ],
    )
    stats = cbor_cw.get_metric_statistics(
        Namespace=NS,
        MetricName="CPUUtilization",
        Dimensions=dims,
        StartTime=t - timedelta(seconds=5),
        EndTime=t + timedelta(seconds=5),
        Period=1,
        Statistics=["Maximum", "Minimum", "SampleCount", "Sum", "Average"],
    )
    points = sorted(stats["Datapoints"], key=lambda p: p["Timestamp"])
    assert [(p["Maximum"], p["Minimum"], p["SampleCount"], p["Sum"]) for p in points] == [
        (88.5, 10.0, 3.0, 120.0),
        (99.0, 5.0, 3.0, 109.0),
    ]
    assert points[0]["Average"] == 40.0
    assert points[0]["Timestamp"] == t

    data = cbor_cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "peak",
                "MetricStat": {
                    "Metric": {"Namespace": NS, "MetricName": "CPUUtilization", "Dimensions": dims},
                    "Period": 1,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=t,
        EndTime=t + timedelta(seconds=3),
        ScanBy="TimestampAscending",
    )
    [result] = data["MetricDataResults"]
    assert result["Values"] == [88.5, 99.0]
    assert result["Timestamps"] == [t, t + timedelta(seconds=1)]
    assert result["StatusCode"] == "Complete"

    [metric] = cbor_cw.list_metrics(Namespace=NS)["Metrics"]
    assert metric["Dimensions"] == dims


def test_alarms_round_trip(cbor_cw):
    cbor_cw.put_metric_alarm(
        AlarmName="boto-peak",
        Namespace=NS,
        MetricName="CPUUtilization",
        Statistic="Maximum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=75.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    [alarm] = cbor_cw.describe_alarms(AlarmNames=["boto-peak"])["MetricAlarms"]
    # PutMetricAlarm: "When this operation creates an alarm, the alarm state is immediately set
    # to INSUFFICIENT_DATA."
    assert (alarm["Threshold"], alarm["Period"], alarm["StateValue"]) == (
        75.0,
        10,
        "INSUFFICIENT_DATA",
    )
    assert isinstance(alarm["AlarmConfigurationUpdatedTimestamp"], datetime)
    cbor_cw.set_alarm_state(AlarmName="boto-peak", StateValue="ALARM", StateReason="test")
    assert [a["AlarmName"] for a in cbor_cw.describe_alarms(StateValue="ALARM")["MetricAlarms"]] == [
        "boto-peak"
    ]


def test_errors_map_to_modelled_exceptions(cbor_cw):
    with pytest.raises(cbor_cw.exceptions.ResourceNotFound) as err:
        cbor_cw.set_alarm_state(AlarmName="missing", StateValue="OK", StateReason="x")
    assert err.value.response["Error"]["Type"] == "Sender"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    t = datetime.now(timezone.utc)
    with pytest.raises(cbor_cw.exceptions.InvalidParameterValueException) as err:
        cbor_cw.get_metric_statistics(
            Namespace=NS,
            MetricName="m",
            StartTime=t,
            EndTime=t - timedelta(minutes=5),
            Period=60,
            Statistics=["Sum"],
        )
    assert "StartTime" in err.value.response["Error"]["Message"]
