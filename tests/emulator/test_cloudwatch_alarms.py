"""CloudWatch alarms evaluated on the data received, and their actions, checked against the AWS
documentation.

Sources: the API reference for PutMetricAlarm, SetAlarmState and MetricAlarm, and the user guide
chapters "Using Amazon CloudWatch alarms" ("Evaluating an alarm") and "Configuring how CloudWatch
alarms treat missing data". Periods are wall-clock periods aligned on multiples of Period, like
the data's timestamps; the tests put data into the last complete period, which an evaluation
picks up at once (a datapoint for the current period would wait for the period to end).
"""

import json
import time
import urllib.request
from datetime import datetime, timezone

from test_autoscaling_refresh import start, versions

PERIOD = 10  # "Valid values are 10, 30, and any multiple of 60" (PutMetricAlarm, Period)


def last_complete_period(period=PERIOD, back=0):
    """A timestamp in the middle of the last complete period (``back`` periods earlier), at
    least 1.5 s away from the next period boundary so it stays the last complete one."""
    into = time.time() % period
    if period - into < 1.5:
        time.sleep(period - into + 0.05)
    end = time.time() - time.time() % period
    return datetime.fromtimestamp(end - period / 2 - back * period, timezone.utc)


def alarm(cw, name, **kwargs):
    params = {
        "AlarmName": name,
        "Namespace": "Bake/Alarms",
        "MetricName": name,
        "Statistic": "Sum",
        "Period": PERIOD,
        "EvaluationPeriods": 1,
        "Threshold": 5.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    }
    params.update(kwargs)
    cw.put_metric_alarm(**params)


def put(cw, name, value, ts, dims=None):
    cw.put_metric_data(
        Namespace="Bake/Alarms",
        MetricData=[
            {"MetricName": name, "Value": float(value), "Timestamp": ts, "Dimensions": dims or []}
        ],
    )


def state(cw, name):
    (a,) = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return a


def wait_state(h, name, want, timeout=5.0):
    return h.wait_for(
        f"alarm {name} in {want}",
        lambda: (lambda a: a if a["StateValue"] == want else None)(state(h.cw, name)),
        timeout=timeout,
    )


def test_new_alarm_is_insufficient_data_until_data_breaches(asg_helper):
    """PutMetricAlarm: "When this operation creates an alarm, the alarm state is immediately set
    to INSUFFICIENT_DATA. The alarm is then evaluated and its state is set appropriately." User
    guide: "ALARM – The metric or expression is outside of the defined threshold." """
    h = asg_helper
    alarm(h.cw, "al-breach")
    a = state(h.cw, "al-breach")
    assert a["StateValue"] == "INSUFFICIENT_DATA"
    put(h.cw, "al-breach", 2, last_complete_period())
    a = wait_state(h, "al-breach", "OK")
    put(h.cw, "al-breach", 4, last_complete_period())  # Sum 6 >= 5
    a = wait_state(h, "al-breach", "ALARM")
    assert a["StateReason"].startswith("Threshold Crossed"), a["StateReason"]
    assert json.loads(a["StateReasonData"])["recentDatapoints"] == [6.0]


def test_datapoints_to_alarm_m_out_of_n(asg_helper):
    """User guide, "Evaluating an alarm": "Evaluation Periods is the number of the most recent
    periods, or data points, to evaluate when determining alarm state. Datapoints to Alarm is the
    number of data points within the Evaluation Periods that must be breaching to cause the alarm
    to go to the ALARM state." """
    h = asg_helper
    alarm(h.cw, "al-m-of-n", EvaluationPeriods=3, DatapointsToAlarm=2, TreatMissingData="notBreaching")
    put(h.cw, "al-m-of-n", 9, last_complete_period())
    wait_state(h, "al-m-of-n", "OK")  # 1 of 3 breaching
    put(h.cw, "al-m-of-n", 9, last_complete_period(back=2))
    wait_state(h, "al-m-of-n", "ALARM")  # 2 of 3 breaching


def test_statistic_and_comparison_are_the_alarms(asg_helper):
    """MetricAlarm: "Statistic - The statistic for the metric associated with the alarm, other
    than percentile." and "ComparisonOperator - The arithmetic operation to use when comparing the
    specified statistic and threshold. The specified statistic value is used as the first
    operand." The same data: Average 2 is below 2.5, Maximum 3 is not."""
    h = asg_helper
    ts = last_complete_period()
    for name, stat in (("al-avg", "Average"), ("al-max", "Maximum")):
        alarm(h.cw, name, Statistic=stat, Threshold=2.5, ComparisonOperator="LessThanThreshold")
        put(h.cw, name, 1, ts)
        put(h.cw, name, 3, ts)
    wait_state(h, "al-avg", "ALARM")
    wait_state(h, "al-max", "OK")


def test_only_the_alarms_dimensions_count(asg_helper):
    """PutMetricAlarm, Dimensions: "The dimensions for the metric specified in MetricName." A
    metric is identified by its name, namespace and dimensions: data with other dimensions is
    another metric and leaves the alarm without data."""
    h = asg_helper
    dims = [{"Name": "InstanceId", "Value": "i-1"}]
    alarm(h.cw, "al-dims", Dimensions=dims)
    ts = last_complete_period()
    put(h.cw, "al-dims", 100, ts, dims=[{"Name": "InstanceId", "Value": "i-2"}])
    put(h.cw, "al-dims", 100, ts)
    time.sleep(0.3)
    assert state(h.cw, "al-dims")["StateValue"] == "INSUFFICIENT_DATA"
    put(h.cw, "al-dims", 100, ts, dims=dims)
    wait_state(h, "al-dims", "ALARM")


def test_missing_data_treatment(asg_helper):
    """User guide, "Configuring how CloudWatch alarms treat missing data": "notBreaching – Missing
    data points are treated as "good" and within the threshold", "breaching – Missing data points
    are treated as "bad" and breaching the threshold", "ignore – The current alarm state is
    maintained", "missing – If all data points in the alarm evaluation range are missing, the
    alarm transitions to INSUFFICIENT_DATA." SetAlarmState: "the alarm state returns to its actual
    state often within seconds" (at the next evaluation); with ignore there is nothing to return
    to. No data at all: the evaluations at the end of each period decide."""
    h = asg_helper
    for treat in ("breaching", "notBreaching", "ignore", "missing"):
        alarm(h.cw, f"al-miss-{treat}", TreatMissingData=treat)
    wait_state(h, "al-miss-breaching", "ALARM", timeout=PERIOD + 5)
    wait_state(h, "al-miss-notBreaching", "OK", timeout=5)
    assert state(h.cw, "al-miss-ignore")["StateValue"] == "INSUFFICIENT_DATA"
    assert state(h.cw, "al-miss-missing")["StateValue"] == "INSUFFICIENT_DATA"
    for treat in ("ignore", "missing"):
        h.cw.set_alarm_state(AlarmName=f"al-miss-{treat}", StateValue="ALARM", StateReason="test")
    wait_state(h, "al-miss-missing", "INSUFFICIENT_DATA", timeout=PERIOD + 5)
    # Both were evaluated at the same period end; ignore kept the state it was set to.
    assert state(h.cw, "al-miss-ignore")["StateValue"] == "ALARM"


def test_alarm_actions_publish_to_sns(asg_helper):
    """PutMetricAlarm, AlarmActions: "The actions to execute when this alarm transitions to the
    ALARM state from any other state. Each action is specified as an Amazon Resource Name (ARN).
    Valid values: ... Amazon SNS actions: arn:aws:sns:region:account-id:sns-topic-name".
    SetAlarmState: "When the updated state differs from the previous value, the action configured
    for the appropriate state is invoked." The notification reaches the topic's subscribers."""
    h = asg_helper
    sns = h.emu.client("sns")
    sqs = h.emu.client("sqs")
    topic = sns.create_topic(Name="al-topic")["TopicArn"]
    queue = sqs.create_queue(QueueName="al-queue")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    alarm(h.cw, "al-actions", AlarmActions=[topic], OKActions=[topic])
    put(h.cw, "al-actions", 50, last_complete_period())
    wait_state(h, "al-actions", "ALARM")

    def received():
        out = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(json.loads(m["Body"])["Message"]) for m in out]

    (note,) = h.wait_for("the ALARM notification", received)
    assert (note["AlarmName"], note["OldStateValue"], note["NewStateValue"]) == (
        "al-actions",
        "INSUFFICIENT_DATA",
        "ALARM",
    )
    assert note["Trigger"]["MetricName"] == "al-actions"
    h.cw.set_alarm_state(AlarmName="al-actions", StateValue="OK", StateReason="by hand")
    (note,) = h.wait_for("the OK notification", received)
    assert (note["OldStateValue"], note["NewStateValue"]) == ("ALARM", "OK")

    url = f"{h.emu.url}/bake-emulator/sns-notifications?TopicArn={topic}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        recorded = json.loads(resp.read())
    assert [json.loads(r["Message"])["NewStateValue"] for r in recorded] == ["ALARM", "OK"]
    assert recorded[0]["Subject"].startswith('ALARM: "al-actions"')


def test_refresh_rolls_back_when_an_alarm_goes_off_on_its_data(asg_helper):
    """RefreshPreferences, AlarmSpecification: "CloudWatch alarms can be used to identify any
    issues and fail the operation if an alarm threshold is met." With AutoRollback the refresh
    rolls back; the alarm goes to ALARM on a datapoint, nobody calls SetAlarmState."""
    h = asg_helper
    alarm(h.cw, "al-refresh-5xx", TreatMissingData="notBreaching")
    g = h.create_group("al-refresh", 1)
    rid = start(
        h, g, BakeTime=100000, AutoRollback=True, AlarmSpecification={"Alarms": ["al-refresh-5xx"]}
    )
    h.wait_status(g, rid, "Baking")
    put(h.cw, "al-refresh-5xx", 7, last_complete_period())
    r = h.wait_status(g, rid, "RollbackInProgress", "RollbackSuccessful")
    assert "al-refresh-5xx" in r["RollbackDetails"]["RollbackReason"]
    h.wait_status(g, rid, "RollbackSuccessful")
    assert versions(h, g) == ["1"]


def test_old_data_outside_the_evaluation_range_does_not_count(asg_helper):
    """"Evaluation Periods is the number of the most recent periods": a breaching datapoint three
    periods ago does not make a one-period alarm go off."""
    h = asg_helper
    alarm(h.cw, "al-old", TreatMissingData="notBreaching")
    put(h.cw, "al-old", 100, last_complete_period(back=3))
    a = wait_state(h, "al-old", "OK")
    assert json.loads(a["StateReasonData"])["recentDatapoints"] == []
