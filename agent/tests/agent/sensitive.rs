//! Secrets and the app's environment, secrets and the agent's own logs: a parameter may not
//! replace PATH, `LD_*` or an `app.env` key unless `allow_override` says so, and not even
//! `RUST_LOG=trace` with the SDK's `LOG_SENSITIVE_BODIES=true` prints the IMDS token or a value.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;

use crate::util::{agent, imds, rt, wait_for, Running, TestDir};

async fn put(aws: &bake_e2e::Aws, name: &str, value: &str) {
    aws.ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter");
}

#[test]
fn test_a_secret_may_not_replace_the_apps_environment_unless_allowed() {
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(async {
        put(&aws, "/t7a/app/db/password", "pw").await;
        put(&aws, "/t7a/app/ld/preload", "/tmp/evil.so").await;
        put(&aws, "/t7b/app/greeting", "from-ssm").await;
    });
    let t = TestDir::new();
    let marker = t.path("env");
    let md = imds("i-0override");
    let run = |path: &str, extra: &str| {
        let cfg = t.config(&format!(
            "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"env > {}; exec sleep 300\"]\n\
             [app.env]\nGREETING = \"from-config\"\n[secrets]\npath = \"{path}\"\n{extra}",
            marker.display()
        ));
        Running::spawn(agent(&cfg, Some(&emu), Some(&md)))
    };

    // LD_PRELOAD: refused, fails closed, the app never starts.
    let mut a = run("/t7a/app", "");
    assert_eq!(a.wait(Duration::from_secs(30)), Some(5), "{}", a.stderr());
    let e = a.stderr();
    assert!(
        e.contains(
            "SSM parameter '/t7a/app/ld/preload' maps to the environment variable LD_PRELOAD"
        ),
        "{e}"
    );
    assert!(!e.contains("/tmp/evil.so"), "a value in the error: {e}");
    assert!(!marker.exists(), "the app must not start");

    // A key of app.env: refused the same way.
    let mut a = run("/t7b/app", "");
    assert_eq!(a.wait(Duration::from_secs(30)), Some(5), "{}", a.stderr());
    assert!(
        a.stderr().contains(
            "SSM parameter '/t7b/app/greeting' maps to the environment variable GREETING"
        ),
        "{}",
        a.stderr()
    );
    assert!(!marker.exists(), "the app must not start");

    // Allowed explicitly: the secret wins.
    let mut a = run("/t7b/app", "allow_override = [\"GREETING\"]\n");
    let env = wait_for("the app's environment", Duration::from_secs(30), || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| s.contains("GREETING"))
    });
    assert!(env.contains("GREETING=from-ssm\n"), "{env}");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_trace_logging_never_prints_the_imds_token_or_a_secret() {
    const SECRET: &str = "tr4ce-s3cret-9b2e";
    let emu = bake_e2e::Emulator::start().unwrap();
    let rt = rt();
    let aws = rt.block_on(emu.aws());
    rt.block_on(put(&aws, "/t10/app/db/password", SECRET));
    let t = TestDir::new();
    let cfg = t.config(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 300\"]\n\
         [secrets]\npath = \"/t10/app\"\n",
    );
    let id = "i-0trace";
    let md = imds(id);
    let mut cmd = agent(&cfg, Some(&emu), Some(&md));
    cmd.env("RUST_LOG", "trace")
        .env("LOG_SENSITIVE_BODIES", "true");
    let mut a = Running::spawn(cmd);
    wait_for("the agent to be up", Duration::from_secs(30), || {
        a.stderr().contains("agent up").then_some(())
    });
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    let logs = a.stderr();
    // The SDK did log (at debug): the filter is not just off.
    assert!(logs.contains("beginning attempt #1"), "no SDK debug lines");
    assert!(!logs.contains(SECRET), "a secret value in the agent's logs");
    // The stand-in's tokens are "token-N-<instance id>".
    assert!(md.requests() > 0);
    for n in 0..1000 {
        let token = format!("token-{n}-{id}");
        assert!(
            !logs.contains(&token),
            "the IMDS token {token} in the agent's logs"
        );
    }
}
