//! aws-sdk-cloudwatch speaks Smithy RPC v2 CBOR; the emulator answers it from moto's
//! CloudWatch backend (tests/emulator/bake_emulator/cloudwatch_cbor.py).

use aws_sdk_cloudwatch::operation::set_alarm_state::SetAlarmStateError;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy,
    StandardUnit, StateValue, Statistic, StatisticSet,
};
use aws_smithy_types::DateTime;
use bake_e2e::Emulator;

const NAMESPACE: &str = "Bake/E2E";

fn instance(id: &str) -> Dimension {
    Dimension::builder().name("InstanceId").value(id).build()
}

/// Now, in whole seconds, so one-second buckets line up with what the test put.
fn now() -> DateTime {
    DateTime::from_secs(DateTime::from(std::time::SystemTime::now()).secs())
}

fn plus(t: DateTime, secs: i64) -> DateTime {
    DateTime::from_secs(t.secs() + secs)
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cloudwatch_cbor_metrics_round_trip() {
    let emu = Emulator::start().unwrap();
    let cw = emu.aws().await.cw;
    let t = now();

    // A high-resolution statistic set (what an agent sends after sampling every second)...
    cw.put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name("CPUUtilization")
                .dimensions(instance("i-1"))
                .timestamp(t)
                .statistic_values(
                    StatisticSet::builder()
                        .sample_count(4.0)
                        .sum(200.0)
                        .minimum(5.0)
                        .maximum(97.5)
                        .build(),
                )
                .unit(StandardUnit::Percent)
                .storage_resolution(1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // ...and values with counts, one second later.
    cw.put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name("CPUUtilization")
                .dimensions(instance("i-1"))
                .timestamp(plus(t, 1))
                .values(10.0)
                .values(60.0)
                .counts(1.0)
                .counts(3.0)
                .unit(StandardUnit::Percent)
                .storage_resolution(1)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let stats = cw
        .get_metric_statistics()
        .namespace(NAMESPACE)
        .metric_name("CPUUtilization")
        .dimensions(instance("i-1"))
        .start_time(plus(t, -10))
        .end_time(plus(t, 10))
        .period(1)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::Minimum)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Sum)
        .statistics(Statistic::Average)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.label(), Some("CPUUtilization"));
    let mut points = stats.datapoints().to_vec();
    points.sort_by_key(|p| p.timestamp().map(DateTime::secs));
    assert_eq!(points.len(), 2, "{points:?}");
    let set = &points[0];
    assert_eq!(set.timestamp(), Some(&t));
    assert_eq!(set.maximum(), Some(97.5));
    assert_eq!(set.minimum(), Some(5.0));
    assert_eq!(set.sample_count(), Some(4.0));
    assert_eq!(set.sum(), Some(200.0));
    assert_eq!(set.average(), Some(50.0));
    assert_eq!(set.unit(), Some(&StandardUnit::Percent));
    let values = &points[1];
    assert_eq!(values.sample_count(), Some(4.0));
    assert_eq!(values.sum(), Some(190.0));
    assert_eq!(values.maximum(), Some(60.0));

    let data = cw
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("peak")
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace(NAMESPACE)
                                .metric_name("CPUUtilization")
                                .dimensions(instance("i-1"))
                                .build(),
                        )
                        .period(1)
                        .stat("Maximum")
                        .build(),
                )
                .build(),
        )
        .start_time(t)
        .end_time(plus(t, 5))
        .scan_by(ScanBy::TimestampAscending)
        .send()
        .await
        .unwrap();
    let [result] = data.metric_data_results() else {
        panic!("one result expected: {data:?}");
    };
    assert_eq!(result.id(), Some("peak"));
    assert_eq!(result.values(), &[97.5, 60.0]);
    assert_eq!(result.timestamps(), &[t, plus(t, 1)]);
    assert_eq!(
        result.status_code(),
        Some(&aws_sdk_cloudwatch::types::StatusCode::Complete)
    );

    let listed = cw.list_metrics().namespace(NAMESPACE).send().await.unwrap();
    let [metric] = listed.metrics() else {
        panic!("one metric expected: {listed:?}");
    };
    assert_eq!(metric.namespace(), Some(NAMESPACE));
    assert_eq!(metric.metric_name(), Some("CPUUtilization"));
    assert_eq!(metric.dimensions(), &[instance("i-1")]);
    assert!(listed.next_token().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cloudwatch_cbor_alarms() {
    let emu = Emulator::start().unwrap();
    let cw = emu.aws().await.cw;

    cw.put_metric_alarm()
        .alarm_name("bake-cpu-peak")
        .alarm_description("CPU peak during the bake")
        .namespace(NAMESPACE)
        .metric_name("CPUUtilization")
        .dimensions(instance("i-1"))
        .statistic(Statistic::Maximum)
        .period(10)
        .evaluation_periods(3)
        .datapoints_to_alarm(2)
        .threshold(90.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .treat_missing_data("notBreaching")
        .send()
        .await
        .unwrap();

    let described = cw
        .describe_alarms()
        .alarm_names("bake-cpu-peak")
        .send()
        .await
        .unwrap();
    let [alarm] = described.metric_alarms() else {
        panic!("one alarm expected: {described:?}");
    };
    assert_eq!(alarm.alarm_name(), Some("bake-cpu-peak"));
    assert_eq!(alarm.namespace(), Some(NAMESPACE));
    assert_eq!(alarm.metric_name(), Some("CPUUtilization"));
    assert_eq!(alarm.dimensions(), &[instance("i-1")]);
    assert_eq!(alarm.statistic(), Some(&Statistic::Maximum));
    assert_eq!(alarm.period(), Some(10));
    assert_eq!(alarm.evaluation_periods(), Some(3));
    assert_eq!(alarm.datapoints_to_alarm(), Some(2));
    assert_eq!(alarm.threshold(), Some(90.0));
    assert_eq!(
        alarm.comparison_operator(),
        Some(&ComparisonOperator::GreaterThanOrEqualToThreshold)
    );
    assert_eq!(alarm.treat_missing_data(), Some("notBreaching"));
    assert!(alarm.state_updated_timestamp().is_some());

    cw.set_alarm_state()
        .alarm_name("bake-cpu-peak")
        .state_value(StateValue::Alarm)
        .state_reason("peak")
        .send()
        .await
        .unwrap();
    let in_alarm = cw
        .describe_alarms()
        .state_value(StateValue::Alarm)
        .send()
        .await
        .unwrap();
    assert_eq!(in_alarm.metric_alarms().len(), 1);
    assert_eq!(
        in_alarm.metric_alarms()[0].state_value(),
        Some(&StateValue::Alarm)
    );

    // Errors arrive as CloudWatch's modelled errors (via the x-amzn-query-error code).
    let err = cw
        .set_alarm_state()
        .alarm_name("no-such-alarm")
        .state_value(StateValue::Ok)
        .state_reason("x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, SetAlarmStateError::ResourceNotFound(_)),
        "{err:?}"
    );

    cw.delete_alarms()
        .alarm_names("bake-cpu-peak")
        .send()
        .await
        .unwrap();
    let after = cw.describe_alarms().send().await.unwrap();
    assert!(after.metric_alarms().is_empty(), "{after:?}");
}
