//! The secret-rotation rollout: the refresh starts with the preferences `bake release` recorded
//! (and none without them), and its outcome is published once.

use std::time::Duration;

use aws_sdk_autoscaling::types::RefreshPreferences;
use aws_sdk_ssm::types::ParameterType;
use bake_common::refresh_preferences::{parameter_name, Recorded};

use crate::util::{agent, group, imds, rt, wait_for, Running, TestDir};

async fn put(aws: &bake_e2e::Aws, name: &str, value: &str, t: ParameterType) {
    aws.ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(t)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

fn config(group: &str, path: &str) -> String {
    format!(
        "[identity]\nasg_name = \"{group}\"\n[app]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 300\"]\nuser = \"root\"\n\
         [secrets]\npath = \"{path}\"\npoll_interval = \"1s\"\non_change = \"rollout\"\n[metrics]\npublish_interval = \"1s\"\n"
    )
}

/// Metric names in Bake/Agent whose only dimension is `AutoScalingGroupName = group`.
async fn group_metrics(aws: &bake_e2e::Aws, group: &str) -> Vec<String> {
    let out = aws
        .cw
        .list_metrics()
        .namespace("Bake/Agent")
        .send()
        .await
        .unwrap();
    let mut names: Vec<String> = out
        .metrics()
        .iter()
        .filter(|m| {
            let d = m.dimensions();
            d.len() == 1
                && d[0].name() == Some("AutoScalingGroupName")
                && d[0].value() == Some(group)
        })
        .filter_map(|m| m.metric_name().map(ToOwned::to_owned))
        .filter(|n| n.starts_with("SecretRollout"))
        .collect();
    names.sort();
    names
}

#[test]
fn test_rollout_uses_the_recorded_preferences_and_publishes_its_outcome_once() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let g = "roll-prefs";
    let ids = rt.block_on(group(&aws, g, 2, &[]));
    rt.block_on(put(
        &aws,
        "/roll1/app/token",
        "old",
        ParameterType::SecureString,
    ));
    // What `bake release` records before its own refresh.
    let recorded = Recorded::rolling(
        &RefreshPreferences::builder()
            .min_healthy_percentage(50)
            .max_healthy_percentage(100)
            .instance_warmup(1)
            .checkpoint_percentages(50)
            .checkpoint_percentages(100)
            .checkpoint_delay(1)
            .skip_matching(true)
            .auto_rollback(false)
            .bake_time(0)
            .build(),
    );
    rt.block_on(put(
        &aws,
        &parameter_name(g),
        &recorded.to_json(),
        ParameterType::String,
    ));

    let t = TestDir::new();
    let cfg = t.config(&config(g, "/roll1/app"));
    let (m1, m2) = (imds(&ids[0]), imds(&ids[1]));
    let mut a1 = Running::spawn(agent(&cfg, Some(&emu), Some(&m1)));
    let mut a2 = Running::spawn(agent(&cfg, Some(&emu), Some(&m2)));
    wait_for("both agents up", Duration::from_secs(30), || {
        (a1.stderr().contains("agent up") && a2.stderr().contains("agent up")).then_some(())
    });
    rt.block_on(put(
        &aws,
        "/roll1/app/token",
        "new",
        ParameterType::SecureString,
    ));

    let refresh = wait_for("the rollout's refresh", Duration::from_secs(30), || {
        rt.block_on(
            aws.asg
                .describe_instance_refreshes()
                .auto_scaling_group_name(g)
                .send(),
        )
        .unwrap()
        .instance_refreshes()
        .first()
        .cloned()
    });
    let p = refresh.preferences().expect("preferences");
    assert_eq!(p.min_healthy_percentage(), Some(50));
    assert_eq!(p.max_healthy_percentage(), Some(100));
    assert_eq!(p.instance_warmup(), Some(1));
    assert_eq!(p.checkpoint_percentages(), [50, 100]);
    assert_eq!(p.checkpoint_delay(), Some(1));
    assert_eq!(p.auto_rollback(), Some(false));
    // A rotation changes nothing in the launch template: skipping matching instances would
    // replace none, so it is the one preference not taken as recorded.
    assert_eq!(p.skip_matching(), Some(false));
    let id = refresh.instance_refresh_id().unwrap().to_owned();

    // Watched to its end; the outcome is recorded and published by one agent only.
    wait_for("the outcome metric", Duration::from_secs(90), || {
        let names = rt.block_on(group_metrics(&aws, g));
        (names == ["SecretRolloutSucceeded"]).then_some(())
    });
    let done = rt
        .block_on(
            aws.asg
                .describe_instance_refreshes()
                .auto_scaling_group_name(g)
                .instance_refresh_ids(&id)
                .send(),
        )
        .unwrap();
    assert_eq!(
        done.instance_refreshes()[0].status().map(|s| s.as_str()),
        Some("Successful")
    );
    std::thread::sleep(Duration::from_secs(1));
    let logs = [a1.stderr(), a2.stderr()];
    let outcomes = logs
        .iter()
        .map(|e| e.matches("secret rollout succeeded").count())
        .sum::<usize>();
    assert_eq!(outcomes, 1, "published once: {logs:?}");
    assert_eq!(
        logs.iter()
            .filter(|e| e.contains("won the rollout lease"))
            .count(),
        1
    );
    assert!(
        logs.iter().any(|e| e.contains(&id)),
        "the log names the refresh"
    );
    assert_eq!(
        rt.block_on(group_metrics(&aws, g)),
        ["SecretRolloutSucceeded"]
    );
    assert_eq!(a1.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(a2.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_rollout_without_recorded_preferences_starts_no_refresh() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let g = "roll-none";
    let ids = rt.block_on(group(&aws, g, 1, &[]));
    rt.block_on(put(
        &aws,
        "/roll2/app/token",
        "old",
        ParameterType::SecureString,
    ));
    let t = TestDir::new();
    let cfg = t.config(&config(g, "/roll2/app"));
    let m = imds(&ids[0]);
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&m)));
    wait_for("the agent up", Duration::from_secs(30), || {
        a.stderr().contains("agent up").then_some(())
    });
    let refreshes = || {
        rt.block_on(
            aws.asg
                .describe_instance_refreshes()
                .auto_scaling_group_name(g)
                .send(),
        )
        .unwrap()
        .instance_refreshes()
        .len()
    };

    // Nothing recorded: an error naming the parameter, the failed outcome, no refresh.
    rt.block_on(put(
        &aws,
        "/roll2/app/token",
        "new",
        ParameterType::SecureString,
    ));
    let param = parameter_name(g);
    wait_for("the error", Duration::from_secs(30), || {
        let e = a.stderr();
        (e.contains("secret rollout failed")
            && e.contains(&format!("parameter {param} does not exist")))
        .then_some(())
    });
    wait_for("the failed metric", Duration::from_secs(30), || {
        (rt.block_on(group_metrics(&aws, g)) == ["SecretRolloutFailed"]).then_some(())
    });

    // A document that is not a recorded preference: the same, naming the parameter.
    rt.block_on(put(
        &aws,
        &param,
        "{\"MinHealthy\": 1}",
        ParameterType::String,
    ));
    rt.block_on(put(
        &aws,
        "/roll2/app/token",
        "newer",
        ParameterType::SecureString,
    ));
    wait_for("the second error", Duration::from_secs(30), || {
        a.stderr()
            .contains(&format!(
                "parameter {param}: not a recorded refresh preference document"
            ))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(refreshes(), 0, "no refresh without usable preferences");
    // One failure per rotation, not one per poll.
    assert_eq!(
        a.stderr().matches("secret rollout failed").count(),
        2,
        "{}",
        a.stderr()
    );
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

/// The winner is gone (killed, as when its instance is replaced) before the refresh ends: an
/// agent that boots with the new secrets (an instance the refresh launched) follows the rollout
/// to its end and publishes the outcome.
#[test]
fn test_rollout_outcome_is_published_by_an_instance_that_boots_later() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let g = "roll-moves";
    let ids = rt.block_on(group(&aws, g, 2, &[]));
    rt.block_on(put(
        &aws,
        "/roll3/app/token",
        "old",
        ParameterType::SecureString,
    ));
    // Checkpoints of 300 s (3 s at the emulator's time scale) keep the refresh going a while.
    let recorded = Recorded::rolling(
        &RefreshPreferences::builder()
            .min_healthy_percentage(50)
            .checkpoint_percentages(50)
            .checkpoint_percentages(100)
            .checkpoint_delay(300)
            .build(),
    );
    rt.block_on(put(
        &aws,
        &parameter_name(g),
        &recorded.to_json(),
        ParameterType::String,
    ));
    let t = TestDir::new();
    let cfg = t.config(&config(g, "/roll3/app"));
    let m1 = imds(&ids[0]);
    let mut a1 = Running::spawn(agent(&cfg, Some(&emu), Some(&m1)));
    wait_for("the agent up", Duration::from_secs(30), || {
        a1.stderr().contains("agent up").then_some(())
    });
    rt.block_on(put(
        &aws,
        "/roll3/app/token",
        "new",
        ParameterType::SecureString,
    ));
    wait_for("the refresh started", Duration::from_secs(30), || {
        a1.stderr()
            .contains("instance refresh started")
            .then_some(())
    });
    a1.child.kill().unwrap(); // SIGKILL: it records nothing more
    a1.child.wait().unwrap();
    assert!(!a1.stderr().contains("secret rollout succeeded"));

    // A new instance boots with the new secrets: it finds the rollout's lease without an outcome.
    let m3 = imds("i-0launched3");
    let mut a3 = Running::spawn(agent(&cfg, Some(&emu), Some(&m3)));
    wait_for("the new agent to follow", Duration::from_secs(30), || {
        a3.stderr()
            .contains("following the unfinished secret rollout")
            .then_some(())
    });
    wait_for("the outcome", Duration::from_secs(90), || {
        (a3.stderr().contains("secret rollout succeeded")
            && rt.block_on(group_metrics(&aws, g)) == ["SecretRolloutSucceeded"])
        .then_some(())
    });
    assert_eq!(a3.terminate(Duration::from_secs(10)), Some(0));
}

/// Recorded auto rollback: the refresh gets it, with the group's own launch template version as
/// its desired configuration (AWS rolls back only refreshes that have one).
#[test]
fn test_rollout_with_auto_rollback_names_the_groups_own_configuration() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    let g = "roll-back";
    let lt = rt.block_on(async {
        let lt = aws
            .ec2
            .create_launch_template()
            .launch_template_name(format!("{g}-lt"))
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id("ami-12c6146b")
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let id = lt
            .launch_template()
            .unwrap()
            .launch_template_id()
            .unwrap()
            .to_owned();
        aws.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(g)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&id)
                    .version("1")
                    .build(),
            )
            .min_size(0)
            .max_size(3)
            .desired_capacity(1)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        id
    });
    rt.block_on(put(
        &aws,
        "/roll4/app/token",
        "old",
        ParameterType::SecureString,
    ));
    let recorded = Recorded::rolling(
        &RefreshPreferences::builder()
            .min_healthy_percentage(90)
            .auto_rollback(true)
            .build(),
    );
    rt.block_on(put(
        &aws,
        &parameter_name(g),
        &recorded.to_json(),
        ParameterType::String,
    ));
    let t = TestDir::new();
    let cfg = t.config(&config(g, "/roll4/app"));
    let m = imds("i-0rollback");
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&m)));
    wait_for("the agent up", Duration::from_secs(30), || {
        a.stderr().contains("agent up").then_some(())
    });
    rt.block_on(put(
        &aws,
        "/roll4/app/token",
        "new",
        ParameterType::SecureString,
    ));
    let refresh = wait_for("the rollout's refresh", Duration::from_secs(30), || {
        rt.block_on(
            aws.asg
                .describe_instance_refreshes()
                .auto_scaling_group_name(g)
                .send(),
        )
        .unwrap()
        .instance_refreshes()
        .first()
        .cloned()
    });
    let p = refresh.preferences().unwrap();
    assert_eq!(p.auto_rollback(), Some(true));
    assert_eq!(p.min_healthy_percentage(), Some(90));
    let spec = refresh
        .desired_configuration()
        .and_then(|d| d.launch_template())
        .expect("a desired launch template");
    assert_eq!(spec.launch_template_id(), Some(lt.as_str()));
    assert_eq!(spec.version(), Some("1"));
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}
