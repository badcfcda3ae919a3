//! The `agent.toml` of an instance run as a host process: the file the image would carry in
//! `/etc/bake/agent.toml`, with the app on a port of its own on 127.0.0.1 and fast clocks.

use std::path::Path;
use std::time::Duration;

use super::{FleetOptions, BROKEN};

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The `agent.toml` "baked into the AMI" of a simulated instance.
pub(crate) fn agent_config(
    opts: &FleetOptions,
    node: &Path,
    app_dir: &Path,
    inst_dir: &Path,
    port: u16,
    version: &str,
) -> String {
    let mut extra_env = if version == BROKEN {
        "NEVER_READY = \"1\"\n".to_owned()
    } else {
        String::new()
    };
    for (k, v) in &opts.app_env {
        extra_env.push_str(&format!("{k} = {v:?}\n"));
    }
    format!(
        r#"[identity]
imds_tags = true
[app]
command = ["{node}", "{app}/server.js"]
user = "root"
working_dir = "{inst}"
stop_timeout = "5s"
[app.env]
PORT = "{port}"
APP_VERSION = "{version}"
UPLOADS_DIR = "{inst}/uploads"
{extra_env}[supervise]
backoff_initial = "100ms"
backoff_max = "1s"
stable_after = "5s"
crash_loop_count = {count}
crash_loop_window = "{window}"
mark_unhealthy = true
[readiness]
probe = "http://127.0.0.1:{port}/health"
interval = "100ms"
timeout = "{ready}"
heartbeat_interval = "2s"
[lifecycle]
poll_interval = "200ms"
spot = false
"#,
        node = node.display(),
        app = app_dir.display(),
        inst = inst_dir.display(),
        count = opts.crash_loop_count,
        window = humantime(opts.crash_loop_window),
        ready = humantime(opts.ready_timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_agent_config_carries_the_options_and_never_ready_only_for_broken() {
        let mut opts = FleetOptions::new("g", "/bin/true".into());
        opts.crash_loop_count = 3;
        opts.ready_timeout = Duration::from_secs(4);
        let node = Path::new("/usr/bin/node");
        let inst = Path::new("/f/instances/i-1");
        let c = agent_config(&opts, node, Path::new("/f/versions/2"), inst, 4242, "2");
        for line in [
            "command = [\"/usr/bin/node\", \"/f/versions/2/server.js\"]",
            "PORT = \"4242\"",
            "APP_VERSION = \"2\"",
            "UPLOADS_DIR = \"/f/instances/i-1/uploads\"",
            "crash_loop_count = 3",
            "timeout = \"4000ms\"",
            "probe = \"http://127.0.0.1:4242/health\"",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} not in {c}");
        }
        assert!(!c.contains("NEVER_READY"), "{c}");
        let b = agent_config(
            &opts,
            node,
            Path::new("/f/versions/broken"),
            inst,
            1,
            BROKEN,
        );
        assert!(b.lines().any(|l| l == "NEVER_READY = \"1\""), "{b}");
    }
}
