//! Secrets reach the app's environment (and the 0600 env file), never the logs; a missing path
//! fails closed; rotation with `on_change = "rollout"` on two agents → exactly one refresh.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;

use crate::util::{agent, group, imds, rt, wait_for, Running, TestDir};

const SECRET: &str = "s3cr3t-value-7f1d";

async fn put(aws: &bake_e2e::Aws, name: &str, value: &str, overwrite: bool) {
    aws.ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .overwrite(overwrite)
        .send()
        .await
        .expect("put parameter");
}

#[test]
fn test_secrets_reach_the_app_env_and_never_the_logs() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(async {
        put(&aws, "/t1/app/db/password", SECRET, false).await;
        put(
            &aws,
            "/t1/app/DB_CONNECTION_STRING",
            "postgres://u@db/x",
            false,
        )
        .await;
        // More than one page (GetParametersByPath pages by 10).
        for i in 0..12 {
            put(
                &aws,
                &format!("/t1/app/extra/k{i}"),
                &format!("v{i}"),
                false,
            )
            .await;
        }
    });
    let t = TestDir::new();
    let envout = t.path("env");
    let envfile = t.path("app.env");
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"env > {}; exec sleep 300\"]\n[secrets]\npath = \"/t1/app\"\nenv_file = \"{}\"\n",
        envout.display(),
        envfile.display()
    ));
    let md = imds("i-0secrets");
    let mut cmd = agent(&cfg, Some(&emu), Some(&md));
    cmd.arg("-vv");
    let mut a = Running::spawn(cmd);
    let env = wait_for("the app's environment", Duration::from_secs(30), || {
        std::fs::read_to_string(&envout)
            .ok()
            .filter(|s| s.contains("DB_PASSWORD"))
    });
    assert!(env.contains(&format!("DB_PASSWORD={SECRET}\n")), "{env}");
    assert!(
        env.contains("DB_CONNECTION_STRING=postgres://u@db/x\n"),
        "{env}"
    );
    assert!(env.contains("EXTRA_K11=v11\n"), "all pages: {env}");
    assert!(
        !env.contains("AWS_ENDPOINT_URL"),
        "the agent's own environment is not inherited"
    );
    let meta = std::fs::metadata(&envfile).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&envfile)
        .unwrap()
        .contains(&format!("DB_PASSWORD=\"{SECRET}\"")));
    // Not in argv either.
    for (pid, _) in crate::util::children_of(a.pid()) {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&argv).contains(SECRET));
    }
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    let logs = a.stderr();
    assert!(logs.contains("boot step done"), "{logs}");
    assert!(!logs.contains(SECRET), "secret value in the agent's logs");
}

#[test]
fn test_missing_secret_path_fails_closed() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let t = TestDir::new();
    let marker = t.path("started");
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}\"]\n[secrets]\npath = \"/no/such/path\"\n",
        marker.display()
    ));
    let md = imds("i-0closed");
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(30)), Some(5), "{}", a.stderr());
    assert!(
        a.stderr()
            .contains("no SSM parameters under '/no/such/path'"),
        "{}",
        a.stderr()
    );
    assert!(!marker.exists(), "the app must not start");
}

#[test]
fn test_rotation_restart_gives_the_app_new_values() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(put(&aws, "/t3/app/token", "one", false));
    let t = TestDir::new();
    let out = t.path("token");
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"echo $TOKEN >> {}; exec sleep 300\"]\n[secrets]\npath = \"/t3/app\"\npoll_interval = \"1s\"\non_change = \"restart\"\n",
        out.display()
    ));
    let md = imds("i-0rotate");
    let mut a = Running::spawn(agent(&cfg, Some(&emu), Some(&md)));
    wait_for("first start", Duration::from_secs(30), || {
        std::fs::read_to_string(&out).ok().filter(|s| s == "one\n")
    });
    rt.block_on(put(&aws, "/t3/app/token", "two", true));
    wait_for(
        "restart with the new value",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|s| s == "one\ntwo\n")
        },
    );
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_rotation_rollout_on_two_agents_starts_one_refresh() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(put(&aws, "/t4/app/db/password", "old", false));
    let ids = rt.block_on(group(&aws, "rollout", 2, &[]));
    // The preferences `bake release` records; without them a rollout starts no refresh.
    let prefs = bake_common::refresh_preferences::Recorded::rolling(
        &aws_sdk_autoscaling::types::RefreshPreferences::builder().build(),
    );
    rt.block_on(
        aws.ssm
            .put_parameter()
            .name(bake_common::refresh_preferences::parameter_name("rollout"))
            .value(prefs.to_json())
            .r#type(ParameterType::String)
            .send(),
    )
    .expect("record refresh preferences");
    let t = TestDir::new();
    let cfg = t.config(
        "[identity]\nasg_name = \"rollout\"\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 300\"]\n[secrets]\npath = \"/t4/app\"\npoll_interval = \"1s\"\non_change = \"rollout\"\n",
    );
    let (m1, m2) = (imds(&ids[0]), imds(&ids[1]));
    let mut a1 = Running::spawn(agent(&cfg, Some(&emu), Some(&m1)));
    let mut a2 = Running::spawn(agent(&cfg, Some(&emu), Some(&m2)));
    wait_for("both agents up", Duration::from_secs(30), || {
        (a1.stderr().contains("agent up") && a2.stderr().contains("agent up")).then_some(())
    });
    rt.block_on(put(&aws, "/t4/app/db/password", "new", true));
    let refreshes = || {
        rt.block_on(async {
            aws.asg
                .describe_instance_refreshes()
                .auto_scaling_group_name("rollout")
                .send()
                .await
                .expect("describe refreshes")
                .instance_refreshes()
                .len()
        })
    };
    wait_for("an instance refresh", Duration::from_secs(30), || {
        (refreshes() >= 1).then_some(())
    });
    // Both agents saw the change (several polls later), and only one refresh exists.
    wait_for("both agents to react", Duration::from_secs(10), || {
        let (e1, e2) = (a1.stderr(), a2.stderr());
        (e1.contains("secrets changed") && e2.contains("secrets changed")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(refreshes(), 1);
    let winners = [a1.stderr(), a2.stderr()]
        .iter()
        .filter(|e| e.contains("won the rollout lease"))
        .count();
    assert_eq!(winners, 1);
    assert_eq!(a1.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(a2.terminate(Duration::from_secs(10)), Some(0));
}
