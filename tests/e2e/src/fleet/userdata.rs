//! The userdata of a fleet's launch template: the agent configuration that
//! `cloudformation/fleet.yaml` renders into its launch template (rendered from the template itself
//! by `tests/infra/render_userdata.py`, the renderer `make test` checks the template with), with
//! the few settings a test fleet changes laid over it ([`OVERRIDDEN`]): faster clocks, and the
//! group's name. A booted instance gets it from its metadata and lays it over the image's
//! `/etc/bake/agent.toml`, as on EC2; the process runtime writes a configuration of its own.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::FleetOptions;

/// The app's port in a booted instance (fleet.yaml's `AppPort`).
pub const APP_PORT: u16 = 3000;
/// The app's argv in a booted instance (fleet.yaml's `AppCommand`): the image's Node and release.
pub const APP_COMMAND: &str = r#"["/usr/bin/node", "/opt/app/server.js"]"#;

/// The keys a test fleet sets over fleet.yaml's (each one a clock or a count the scenarios need
/// shorter, or the group's name: fleet.yaml names its group `bake-<EnvName>`).
pub const OVERRIDDEN: [&str; 11] = [
    "identity.asg_name",
    "supervise.backoff_initial",
    "supervise.backoff_max",
    "supervise.stable_after",
    "supervise.crash_loop_count",
    "supervise.crash_loop_window",
    "readiness.interval",
    "readiness.timeout",
    "readiness.heartbeat_interval",
    "lifecycle.poll_interval",
    "lifecycle.spot",
];

fn ms(d: Duration) -> toml::Value {
    toml::Value::String(format!("{}ms", d.as_millis()))
}

/// fleet.yaml's UserData for environment `env` with the app of a booted instance.
pub fn fleet_template_userdata(env: &str) -> anyhow::Result<String> {
    let repo = crate::paths::repo_root();
    let values = serde_json::json!({
        "EnvName": env,
        "AppCommand": APP_COMMAND,
        "AppPort": APP_PORT.to_string(),
        "HealthCheckPath": "/health",
        "FileSystemId": "fs-0123456789abcdef0",
        // No access point: the EFS stand-in is a host directory bound at the mount point.
        "AccessPointLine": "",
        // SocketActivation "true" (the stack's default).
        "ListenLine": format!("listen = \"0.0.0.0:{APP_PORT}\""),
    });
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys; sys.path.insert(0, sys.argv[1]); import render_userdata as r; \
             sys.stdout.write(r.render(sys.argv[2], **json.loads(sys.argv[3])))",
        )
        .arg(repo.join("tests/infra"))
        .arg(repo.join("cloudformation/fleet.yaml"))
        .arg(values.to_string())
        .output()
        .context("running python3 tests/infra/render_userdata.py")?;
    if !out.status.success() {
        bail!(
            "rendering fleet.yaml's UserData failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The fleet's userdata: fleet.yaml's for environment `opts.env`, with [`OVERRIDDEN`] set from
/// `opts` (the group's name `opts.asg` among them), and `[secrets] poll_interval` and
/// `on_change` when `opts.secret_rotation` asks for rotation.
pub fn userdata(opts: &FleetOptions) -> anyhow::Result<String> {
    let text = fleet_template_userdata(&opts.env)?;
    let mut conf: toml::Table =
        toml::from_str(&text).context("fleet.yaml's UserData is not TOML")?;
    let over: [(&str, &str, toml::Value); 11] = [
        ("identity", "asg_name", opts.asg.clone().into()),
        ("supervise", "backoff_initial", "100ms".into()),
        ("supervise", "backoff_max", "1s".into()),
        ("supervise", "stable_after", "5s".into()),
        (
            "supervise",
            "crash_loop_count",
            i64::from(opts.crash_loop_count).into(),
        ),
        ("supervise", "crash_loop_window", ms(opts.crash_loop_window)),
        ("readiness", "interval", "100ms".into()),
        ("readiness", "timeout", ms(opts.ready_timeout)),
        ("readiness", "heartbeat_interval", "2s".into()),
        ("lifecycle", "poll_interval", "200ms".into()),
        // No spot interruption notices off EC2 (the metadata stand-in answers 404).
        ("lifecycle", "spot", false.into()),
    ];
    for (table, key, value) in over {
        let t = conf
            .entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = t.as_table_mut() else {
            bail!("fleet.yaml's UserData: [{table}] is not a table");
        };
        t.insert(key.to_owned(), value);
    }
    let mut overridden = OVERRIDDEN.join(", ");
    if let Some((poll, on_change)) = opts.secret_rotation {
        let Some(secrets) = conf.get_mut("secrets").and_then(toml::Value::as_table_mut) else {
            bail!("fleet.yaml's UserData has no [secrets] table");
        };
        secrets.insert("poll_interval".into(), ms(poll));
        secrets.insert("on_change".into(), on_change.into());
        overridden.push_str(", secrets.poll_interval, secrets.on_change");
    }
    if !opts.app_env.is_empty() {
        let Some(env) = conf
            .get_mut("app")
            .and_then(toml::Value::as_table_mut)
            .and_then(|a| a.get_mut("env"))
            .and_then(toml::Value::as_table_mut)
        else {
            bail!("fleet.yaml's UserData has no [app.env] table");
        };
        for (k, v) in &opts.app_env {
            env.insert((*k).to_owned(), v.clone().into());
            overridden.push_str(&format!(", app.env.{k}"));
        }
    }
    Ok(format!(
        "# cloudformation/fleet.yaml's UserData (EnvName {}), with a test fleet's settings of {overridden}\n{}",
        opts.asg,
        toml::to_string(&conf)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_userdata_is_fleet_yamls_with_the_overrides() {
        let mut opts = FleetOptions::new("web", "/bin/true".into());
        opts.crash_loop_count = 3;
        opts.ready_timeout = Duration::from_secs(4);
        let text = userdata(&opts).unwrap();
        let c: toml::Table = toml::from_str(&text).unwrap();
        // From the template: the app, its port and host, the secrets and log group of env "web".
        assert_eq!(c["app"]["port"].as_integer(), Some(i64::from(APP_PORT)));
        assert_eq!(c["app"]["command"][0].as_str(), Some("/usr/bin/node"));
        assert_eq!(c["app"]["env"]["HOST"].as_str(), Some("0.0.0.0"));
        assert_eq!(c["app"]["listen"].as_str(), Some("0.0.0.0:3000"));
        assert_eq!(c["secrets"]["path"].as_str(), Some("/bake/web/app"));
        assert_eq!(c["uploads"]["dir"].as_str(), Some("/mnt/efs/uploads"));
        // Overridden.
        assert_eq!(c["identity"]["asg_name"].as_str(), Some("web"));
        assert_eq!(c["supervise"]["crash_loop_count"].as_integer(), Some(3));
        assert_eq!(c["readiness"]["timeout"].as_str(), Some("4000ms"));
        // Kept: the template's launch hook and probe.
        assert_eq!(
            c["readiness"]["launch_hook"].as_str(),
            Some(super::super::LAUNCH_HOOK)
        );
        assert_eq!(
            c["readiness"]["probe"].as_str(),
            Some("http://127.0.0.1:3000/health")
        );
        // No rotation unless asked for.
        assert!(c["secrets"].get("poll_interval").is_none(), "{text}");
        opts.secret_rotation = Some((Duration::from_secs(1), "rollout"));
        let text = userdata(&opts).unwrap();
        let c: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(c["secrets"]["poll_interval"].as_str(), Some("1000ms"));
        assert_eq!(c["secrets"]["on_change"].as_str(), Some("rollout"));
        assert_eq!(c["secrets"]["path"].as_str(), Some("/bake/web/app"));
        assert!(
            text.starts_with("# ") && text.lines().next().unwrap().contains("secrets.on_change")
        );
    }
}
