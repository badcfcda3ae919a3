"""CloudWatch over all three protocols AWS serves it with: one implementation, the same answers.

AWS's current CloudWatch model (botocore >= 1.4x, the Rust SDK) lists the protocols
``smithy-rpc-v2-cbor``, ``json`` and ``query``: the Rust SDK sends RPC v2 CBOR, the AWS CLI v1 sends
AWS JSON 1.0 (``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``), older SDKs and boto3
1.40 send the query protocol. The API reference documents one set of operations whatever the wire
format, so the same calls must give the same answers over each. boto3 1.40 speaks all three; its
bundled model lists only ``query``, so two clients get a copy of it with the current protocol
metadata (as botocore 1.43 ships it), each restricted to one protocol.
"""

import gzip
import json
import os
from datetime import datetime, timedelta, timezone

import boto3
import botocore
import botocore.exceptions
import botocore.session
import pytest

PROTOCOLS = ("query", "json", "smithy-rpc-v2-cbor")


def make_client(emulator, tmp_path, protocol):
    if protocol == "query":
        client = emulator.client("cloudwatch")
    else:
        src = os.path.join(
            os.path.dirname(botocore.__file__), "data", "cloudwatch", "2010-08-01", "service-2.json.gz"
        )
        with open(src, "rb") as f:
            model = json.loads(gzip.decompress(f.read()))
        model["metadata"].update(
            {
                "protocol": protocol,
                "protocols": [protocol],
                "jsonVersion": "1.0",
                "targetPrefix": "GraniteServiceVersion20100801",
                "awsQueryCompatible": {},
            }
        )
        root = tmp_path / protocol
        target = root / "cloudwatch" / "2010-08-01"
        target.mkdir(parents=True)
        (target / "service-2.json").write_text(json.dumps(model))
        session = botocore.session.Session()
        session.get_component("data_loader").search_paths.insert(0, str(root))
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
            {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        ),
    )
    client.sent = sent
    return client


@pytest.fixture
def clients(emulator, tmp_path):
    return {p: make_client(emulator, tmp_path, p) for p in PROTOCOLS}


def test_each_client_speaks_its_protocol(clients):
    for protocol, client in clients.items():
        client.list_metrics()
        headers = client.sent[-1]
        assert client.meta.service_model.protocol == protocol
        if protocol == "json":
            assert headers["x-amz-target"] == "GraniteServiceVersion20100801.ListMetrics"
            assert headers["content-type"] == "application/x-amz-json-1.0"
        elif protocol == "smithy-rpc-v2-cbor":
            assert headers["smithy-protocol"] == "rpc-v2-cbor"
        else:
            assert headers["content-type"].startswith("application/x-www-form-urlencoded")


def drive(client, ns, t):
    """The same calls for every protocol; returns the answers with the namespace taken out."""
    two_dims = [{"Name": "Group", "Value": "web"}, {"Name": "InstanceId", "Value": "i-1"}]
    for i in range(3):
        client.put_metric_data(
            Namespace=ns,
            MetricData=[{"MetricName": "Requests", "Value": float(i + 1), "Timestamp": t}],
        )
        client.put_metric_data(
            Namespace=ns,
            MetricData=[
                {
                    "MetricName": "Latency",
                    "Dimensions": two_dims,
                    "Values": [10.0, 20.0],
                    "Counts": [1.0, 3.0],
                    "Timestamp": t,
                    "Unit": "Milliseconds",
                }
            ],
        )
    client.put_metric_data(
        Namespace=ns,
        MetricData=[
            {
                "MetricName": "Cpu",
                "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}],
                "StatisticValues": {"SampleCount": 4, "Sum": 100, "Minimum": 5, "Maximum": 60},
                "Timestamp": t,
            }
        ],
    )
    out = {}
    metrics = client.list_metrics(Namespace=ns)["Metrics"]
    out["ListMetrics"] = sorted(
        (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
        for m in metrics
    )
    out["ListMetrics.Dimensions"] = sorted(
        m["MetricName"]
        for m in client.list_metrics(
            Namespace=ns, Dimensions=[{"Name": "InstanceId", "Value": "i-1"}]
        )["Metrics"]
    )
    stats = client.get_metric_statistics(
        Namespace=ns,
        MetricName="Latency",
        Dimensions=two_dims,
        StartTime=t - timedelta(minutes=1),
        EndTime=t + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum", "Maximum", "Minimum", "SampleCount", "Average"],
    )
    out["GetMetricStatistics"] = [
        {k: v for k, v in d.items() if k != "Timestamp"} for d in stats["Datapoints"]
    ]
    data = client.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "cpu",
                "MetricStat": {
                    "Metric": {
                        "Namespace": ns,
                        "MetricName": "Cpu",
                        "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=t - timedelta(minutes=1),
        EndTime=t + timedelta(minutes=1),
    )
    out["GetMetricData"] = [(r["Id"], r["Values"], r["StatusCode"]) for r in data["MetricDataResults"]]
    alarm = f"{ns}-alarm"
    client.put_metric_alarm(
        AlarmName=alarm,
        Namespace=ns,
        MetricName="Requests",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=100,
        ComparisonOperator="GreaterThanThreshold",
    )
    (a,) = client.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    out["DescribeAlarms"] = {
        k: a[k]
        for k in ("StateValue", "Statistic", "Period", "EvaluationPeriods", "Threshold", "ComparisonOperator")
    }
    client.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="by hand")
    out["SetAlarmState"] = client.describe_alarms(StateValue="ALARM", AlarmNamePrefix=ns)[
        "MetricAlarms"
    ][0]["StateReason"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.set_alarm_state(AlarmName=f"{ns}-missing", StateValue="OK", StateReason="x")
    out["Error"] = (err.value.response["Error"]["Code"], type(err.value).__name__)
    out["ErrorClass"] = isinstance(err.value, client.exceptions.ResourceNotFound)
    client.delete_alarms(AlarmNames=[alarm])
    out["DeleteAlarms"] = client.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    return out


def test_the_same_calls_give_the_same_answers_over_every_protocol(clients):
    t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    answers = {p: drive(c, f"Bake/Proto-{i}", t) for i, (p, c) in enumerate(clients.items())}
    query = answers["query"]
    # What the API reference says these calls return, over the query protocol first:
    # ListMetrics lists each metric (namespace, name, dimensions) once, however often it was put.
    assert query["ListMetrics"] == [
        ("Cpu", (("InstanceId", "i-1"),)),
        ("Latency", (("Group", "web"), ("InstanceId", "i-1"))),
        ("Requests", ()),
    ]
    assert query["ListMetrics.Dimensions"] == ["Cpu", "Latency"]
    assert query["GetMetricStatistics"] == [
        {
            "Sum": 210.0,
            "Maximum": 20.0,
            "Minimum": 10.0,
            "SampleCount": 12.0,
            "Average": 17.5,
            "Unit": "Milliseconds",
        }
    ]
    assert query["GetMetricData"] == [("cpu", [60.0], "Complete")]
    assert query["DescribeAlarms"]["StateValue"] == "INSUFFICIENT_DATA"
    assert query["SetAlarmState"] == "by hand"
    assert query["Error"][0] == "ResourceNotFound" and query["ErrorClass"] is True
    assert query["DeleteAlarms"] == []
    for protocol in ("json", "smithy-rpc-v2-cbor"):
        assert answers[protocol] == query, protocol


def test_data_put_over_one_protocol_is_read_over_the_others(clients):
    t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    ns = "Bake/Cross"
    for i, client in enumerate(clients.values()):
        client.put_metric_data(
            Namespace=ns, MetricData=[{"MetricName": "Hits", "Value": float(i + 1), "Timestamp": t}]
        )
    for client in clients.values():
        (m,) = client.list_metrics(Namespace=ns)["Metrics"]
        assert m["MetricName"] == "Hits"
        (d,) = client.get_metric_statistics(
            Namespace=ns,
            MetricName="Hits",
            StartTime=t - timedelta(minutes=1),
            EndTime=t + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum", "SampleCount"],
        )["Datapoints"]
        assert (d["Sum"], d["SampleCount"]) == (6.0, 3.0)
