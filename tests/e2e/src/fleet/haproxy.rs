//! haproxy as the fleet's ALB and its target group.
//!
//! The target group's settings are read from `cloudformation/edge.yaml` (the template that
//! defines it), never copied: [`TargetGroup::from_edge_template`]. Its clock-driven settings
//! (health check interval and timeout, deregistration delay) run at the emulator's time scale,
//! as the Auto Scaling group's do; request timeouts (connect, idle) are real time.
//!
//! Targets are registered and deregistered at run time through haproxy's runtime API (a Unix
//! socket), not by reloading: a reload starts a new worker in which every server is up before
//! its first check, which an ALB never does. What each ALB behaviour becomes here is written
//! next to the configuration, in `tests/fleet/haproxy.cfg.in`, and in [`Lb::register`],
//! [`Lb::deregister`] and [`Lb::remove`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Debian's haproxy.
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// The template defining the target group and the load balancer.
pub const EDGE_TEMPLATE: &str = include_str!("../../../../cloudformation/edge.yaml");
const CONFIG_TEMPLATE: &str = include_str!("../../../fleet/haproxy.cfg.in");
/// AWS's `HealthCheckTimeoutSeconds` for an HTTP target group of instances when none is given.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// AWS's `idle_timeout.timeout_seconds` when none is given.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The ALB's connection timeout to a target (fixed by AWS, 10 s: then 504).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The target group of `cloudformation/edge.yaml`, in AWS's terms and units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroup {
    /// `HealthCheckPath` (the parameter's default when it is a `!Ref`).
    pub health_check_path: String,
    /// `HealthCheckIntervalSeconds`.
    pub interval: Duration,
    /// `HealthCheckTimeoutSeconds` (AWS's default when absent).
    pub timeout: Duration,
    /// `HealthyThresholdCount`.
    pub healthy_threshold: u32,
    /// `UnhealthyThresholdCount`.
    pub unhealthy_threshold: u32,
    /// `Matcher.HttpCode` (e.g. `200-399`).
    pub matcher: String,
    /// The attribute `deregistration_delay.timeout_seconds`.
    pub deregistration_delay: Duration,
    /// The load balancer's attribute `idle_timeout.timeout_seconds`.
    pub idle_timeout: Duration,
}

/// The lines of the resource `name` (two-space indented key) of a CloudFormation template.
fn resource_block<'a>(template: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let head = format!("  {name}:");
    let mut lines = template.lines().skip_while(|l| l.trim_end() != head);
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
            .collect(),
    )
}

fn field<'a>(block: &[&'a str], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}:");
    block
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().trim_matches('"'))
}

/// `{ Key: KEY, Value: "V" }` among `block`'s attribute lines.
fn attribute<'a>(block: &[&'a str], key: &str) -> Option<&'a str> {
    let needle = format!("Key: {key},");
    block.iter().find_map(|l| {
        let rest = l.split_once(needle.as_str())?.1;
        let v = rest.split_once("Value:")?.1;
        Some(v.trim().trim_end_matches('}').trim().trim_matches('"'))
    })
}

impl TargetGroup {
    /// Reads it from the shipped `cloudformation/edge.yaml`.
    pub fn from_edge_template() -> anyhow::Result<Self> {
        Self::parse(EDGE_TEMPLATE)
    }

    /// Reads `TargetGroup` and `LoadBalancer` of `template`; a missing setting is an error naming it.
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        let tg = resource_block(template, "TargetGroup")
            .context("edge.yaml: no resource TargetGroup")?;
        let lb = resource_block(template, "LoadBalancer")
            .context("edge.yaml: no resource LoadBalancer")?;
        let num = |key: &str| -> anyhow::Result<u32> {
            field(&tg, key)
                .with_context(|| format!("edge.yaml: TargetGroup has no {key}"))?
                .parse()
                .with_context(|| format!("edge.yaml: TargetGroup {key} is not a number"))
        };
        let secs = |v: &str, what: &str| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(v.parse().with_context(|| {
                format!("edge.yaml: {what} {v:?} is not a number of seconds")
            })?))
        };
        let path = field(&tg, "HealthCheckPath")
            .context("edge.yaml: TargetGroup has no HealthCheckPath")?;
        let health_check_path = match path.strip_prefix("!Ref ") {
            Some(param) => {
                let p = resource_block(template, param)
                    .with_context(|| format!("edge.yaml: no parameter {param}"))?;
                field(&p, "Default")
                    .with_context(|| format!("edge.yaml: parameter {param} has no Default"))?
                    .to_owned()
            }
            None => path.to_owned(),
        };
        let matcher = field(&tg, "Matcher")
            .and_then(|m| m.split_once("HttpCode:"))
            .map(|(_, v)| {
                v.trim()
                    .trim_end_matches('}')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
            .context("edge.yaml: TargetGroup has no Matcher HttpCode")?;
        Ok(Self {
            health_check_path,
            interval: Duration::from_secs(num("HealthCheckIntervalSeconds")?.into()),
            timeout: match field(&tg, "HealthCheckTimeoutSeconds") {
                Some(v) => secs(v, "HealthCheckTimeoutSeconds")?,
                None => DEFAULT_HEALTH_CHECK_TIMEOUT,
            },
            healthy_threshold: num("HealthyThresholdCount")?,
            unhealthy_threshold: num("UnhealthyThresholdCount")?,
            matcher,
            deregistration_delay: secs(
                attribute(&tg, "deregistration_delay.timeout_seconds").context(
                    "edge.yaml: TargetGroup has no deregistration_delay.timeout_seconds",
                )?,
                "deregistration_delay.timeout_seconds",
            )?,
            idle_timeout: match attribute(&lb, "idle_timeout.timeout_seconds") {
                Some(v) => secs(v, "idle_timeout.timeout_seconds")?,
                None => DEFAULT_IDLE_TIMEOUT,
            },
        })
    }

    /// haproxy's `http-check expect status` list for the matcher (`200-399`, `200,202`).
    #[must_use]
    pub fn haproxy_status_list(&self) -> String {
        self.matcher.replace(' ', "")
    }
}

/// The target group's clocks at the emulator's time scale (never below 1 ms).
#[must_use]
pub fn scaled(d: Duration, time_scale: f64) -> Duration {
    d.mul_f64(time_scale).max(Duration::from_millis(1))
}

/// The health check timeout used: the scaled one, but at least this. Under 2 cores shared with
/// the emulator and every agent, a loopback answer can take longer than 50 ms; a failed check
/// on a slow answer would measure the machine, not the release.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// The deregistration delay used: the scaled one, but at least this. The delay runs at the
/// emulator's time scale (60 s becomes 0.6 s) but requests take real time: a request that a
/// loaded 2-core machine answers in a second would be cut, which an ALB with its 60 s would let
/// finish. 5 s is still 12 times stricter than edge.yaml's delay against real request times.
pub const MIN_DEREGISTRATION_DELAY: Duration = Duration::from_secs(5);

/// The haproxy configuration of the fleet: the listener on `port`, the runtime API on `socket`,
/// the target group `tg` at `time_scale`; no server (they are added at run time).
#[must_use]
pub fn config(port: u16, socket: &Path, tg: &TargetGroup, time_scale: f64) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    CONFIG_TEMPLATE
        .replace("@PORT@", &port.to_string())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@CHECK_PATH@", &tg.health_check_path)
        .replace("@MATCHER@", &tg.haproxy_status_list())
        .replace("@INTERVAL@", &ms(scaled(tg.interval, time_scale)))
        .replace("@HEALTHY@", &tg.healthy_threshold.to_string())
        .replace("@UNHEALTHY@", &tg.unhealthy_threshold.to_string())
        .replace(
            "@CHECK_TIMEOUT@",
            &ms(scaled(tg.timeout, time_scale).max(MIN_CHECK_TIMEOUT)),
        )
        .replace("@CONNECT_TIMEOUT@", &ms(CONNECT_TIMEOUT))
        .replace("@IDLE_TIMEOUT@", &ms(tg.idle_timeout))
        .replace("@SERVERS@\n", "")
}

/// A target's state in haproxy (`show stat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// The server's name (the instance id).
    pub name: String,
    /// `UP`, `DOWN`, `DRAIN`, `MAINT`, `UP 1/3`, …
    pub status: String,
    /// The last check's status (`INI`, `L7OK`, `L4CON`, …).
    pub check: String,
    /// Sessions now open to it.
    pub sessions: u64,
}

impl ServerState {
    /// haproxy sends it new requests (the ALB's `healthy`).
    #[must_use]
    pub fn serving(&self) -> bool {
        self.status.starts_with("UP")
    }

    /// Registered, still kept from requests, and its last health check passed: an ALB's
    /// `initial` target that may now be routed to.
    #[must_use]
    pub fn passed_first_check(&self) -> bool {
        self.status == "MAINT" && self.check.starts_with("L7OK")
    }
}

/// haproxy in master-worker mode, its own process group; stopped when dropped.
pub struct Lb {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    port: u16,
    tg: TargetGroup,
    time_scale: f64,
}

impl std::fmt::Debug for Lb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Lb {
    /// Starts haproxy on 127.0.0.1:`port` with its files in `dir`.
    pub fn start(dir: &Path, port: u16, tg: TargetGroup, time_scale: f64) -> anyhow::Result<Self> {
        let path = dir.join("haproxy.cfg");
        let socket = dir.join("haproxy.sock");
        std::fs::write(&path, config(port, &socket, &tg, time_scale))
            .with_context(|| format!("writing {}", path.display()))?;
        let check = Command::new(HAPROXY)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .with_context(|| format!("running {HAPROXY} (installed by tools/setup)"))?;
        if !check.status.success() {
            bail!(
                "haproxy rejects {}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let mut cmd = Command::new(HAPROXY);
        cmd.args(["-W", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        crate::process::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {HAPROXY} (installed by tools/setup)"))?;
        let lb = Self {
            child,
            dir: dir.to_path_buf(),
            socket,
            port,
            tg,
            time_scale,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || lb.cli("show info").is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "haproxy did not listen on 127.0.0.1:{port}; see {}",
                    lb.dir.join("haproxy.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(lb)
    }

    /// Its listener, 127.0.0.1:port.
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The target group it plays.
    #[must_use]
    pub fn target_group(&self) -> &TargetGroup {
        &self.tg
    }

    /// The deregistration delay at the time scale, at least [`MIN_DEREGISTRATION_DELAY`].
    #[must_use]
    pub fn deregistration_delay(&self) -> Duration {
        scaled(self.tg.deregistration_delay, self.time_scale).max(MIN_DEREGISTRATION_DELAY)
    }

    /// One runtime API command (several separated by `;`): its answer.
    pub fn cli(&self, command: &str) -> anyhow::Result<String> {
        let mut s = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(command.as_bytes())?;
        s.write_all(b"\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn cli_ok(&self, command: &str) -> anyhow::Result<()> {
        let out = self.cli(command)?;
        let low = out.to_ascii_lowercase();
        if low.contains("error")
            || low.contains("unknown")
            || low.contains("no such")
            || low.contains("require")
        {
            bail!("haproxy refused {command:?}: {}", out.trim());
        }
        Ok(())
    }

    /// RegisterTargets: the server is added in maintenance with its health checks running; it
    /// gets requests once [`Lb::admit_healthy`] has seen it pass one check (an ALB's `initial`
    /// target must pass one health check before it is routed to).
    pub fn register(&self, id: &str, port: u16) -> anyhow::Result<()> {
        self.register_target(id, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// [`Lb::register`] for a target at any address (an instance with a network of its own).
    pub fn register_target(&self, id: &str, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        let inter = scaled(self.tg.interval, self.time_scale).as_millis();
        self.cli_ok(&format!(
            "add server app/{id} {addr} check inter {inter}ms rise {} fall {}",
            self.tg.healthy_threshold, self.tg.unhealthy_threshold
        ))?;
        self.cli_ok(&format!("enable health app/{id}"))
    }

    /// Puts in service every registered server still in maintenance whose last check passed.
    /// Returns the ids admitted.
    pub fn admit_healthy(
        &self,
        states: &[ServerState],
        draining: &dyn Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut admitted = Vec::new();
        for s in states {
            if s.passed_first_check() && !draining(&s.name) {
                self.admit(&s.name)?;
                admitted.push(s.name.clone());
            }
        }
        Ok(admitted)
    }

    /// Puts the registered server `id` in service (it passed its first health check).
    pub fn admit(&self, id: &str) -> anyhow::Result<()> {
        self.cli_ok(&format!("enable server app/{id}"))
    }

    /// DeregisterTargets: the target is `draining`: no new requests, the ones in flight go on.
    pub fn deregister(&self, id: &str) -> anyhow::Result<()> {
        self.cli_ok(&format!("set server app/{id} state drain"))
    }

    /// The end of the deregistration delay: what is still open to the target is closed (an ALB
    /// answers those requests 502), and the target is gone.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        self.cli_ok(&format!("set server app/{id} state maint"))?;
        let _ = self.cli(&format!("shutdown sessions server app/{id}"));
        self.cli_ok(&format!("disable health app/{id}"))?;
        self.cli_ok(&format!("del server app/{id}"))
    }

    /// Every server of the target group and its state.
    pub fn servers(&self) -> anyhow::Result<Vec<ServerState>> {
        let out = self.cli("show stat")?;
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .context("haproxy's show stat is empty")?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("show stat has no {name}"))
        };
        let (px, sv, status, check, scur) = (
            col("pxname")?,
            col("svname")?,
            col("status")?,
            col("check_status")?,
            col("scur")?,
        );
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.get(px) == Some(&"app")
                    && !matches!(f.get(sv), Some(&"BACKEND" | &"FRONTEND") | None)
            })
            .map(|f| ServerState {
                name: f[sv].to_owned(),
                status: f.get(status).copied().unwrap_or_default().to_owned(),
                check: f
                    .get(check)
                    .copied()
                    .unwrap_or_default()
                    .trim_start_matches('*')
                    .to_owned(),
                sessions: f.get(scur).and_then(|v| v.parse().ok()).unwrap_or(0),
            })
            .collect())
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        crate::process::stop_group(&mut self.child, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_haproxy_config_has_the_edge_rules_and_no_static_server() {
        let tg = TargetGroup::from_edge_template().unwrap();
        let c = config(8080, Path::new("/tmp/s"), &tg, 0.01);
        assert!(c.contains("bind 127.0.0.1:8080"), "{c}");
        assert!(c.contains("/crash") && c.contains("/generatecert"), "{c}");
        assert!(
            !c.lines().any(|l| l.trim_start().starts_with("server ")),
            "{c}"
        );
        assert!(!c.contains('@'), "placeholders left: {c}");
    }

    #[test]
    fn test_passed_first_check_is_a_registered_target_kept_from_requests_whose_check_passed() {
        let st = |status: &str, check: &str| ServerState {
            name: "i-1".into(),
            status: status.into(),
            check: check.into(),
            sessions: 0,
        };
        assert!(st("MAINT", "L7OK").passed_first_check());
        assert!(!st("MAINT", "INI").passed_first_check());
        assert!(!st("MAINT", "L4CON").passed_first_check());
        assert!(!st("UP", "L7OK").passed_first_check(), "in service already");
        assert!(!st("DRAIN", "L7OK").passed_first_check());
    }

    #[test]
    fn test_target_group_is_read_from_the_edge_template() {
        let tg = TargetGroup::from_edge_template().unwrap();
        // The numbers are the template's: this test changes when the template does.
        let text = EDGE_TEMPLATE;
        assert!(text.contains(&format!(
            "HealthCheckIntervalSeconds: {}",
            tg.interval.as_secs()
        )));
        assert!(text.contains(&format!("HealthyThresholdCount: {}", tg.healthy_threshold)));
        assert!(text.contains(&format!(
            "UnhealthyThresholdCount: {}",
            tg.unhealthy_threshold
        )));
        assert!(text.contains(&format!("HttpCode: \"{}\"", tg.matcher)));
        assert!(text.contains(&format!(
            "deregistration_delay.timeout_seconds, Value: \"{}\"",
            tg.deregistration_delay.as_secs()
        )));
        assert!(text.contains(&format!("Default: {}", tg.health_check_path)));
        assert!(tg.health_check_path.starts_with('/'));
    }

    #[test]
    fn test_parse_names_what_is_missing() {
        let t = "Parameters:\n  P:\n    Default: /h\nResources:\n  LoadBalancer:\n    Type: x\n  TargetGroup:\n    Properties:\n      HealthCheckPath: !Ref P\n      HealthCheckIntervalSeconds: 10\n      HealthyThresholdCount: 2\n      Matcher: { HttpCode: \"200\" }\n";
        let e = TargetGroup::parse(t).unwrap_err().to_string();
        assert!(e.contains("UnhealthyThresholdCount"), "{e}");
        let t = t.replace("Matcher", "UnhealthyThresholdCount: 3\n      Matcher");
        let e = TargetGroup::parse(&t).unwrap_err().to_string();
        assert!(e.contains("deregistration_delay"), "{e}");
        let t = format!("{t}      TargetGroupAttributes:\n        - {{ Key: deregistration_delay.timeout_seconds, Value: \"7\" }}\n");
        let tg = TargetGroup::parse(&t).unwrap();
        assert_eq!(tg.health_check_path, "/h");
        assert_eq!(tg.deregistration_delay, Duration::from_secs(7));
        assert_eq!(tg.timeout, DEFAULT_HEALTH_CHECK_TIMEOUT);
        assert_eq!(tg.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn test_config_is_the_target_group_at_the_time_scale_and_never_retries() {
        let tg = TargetGroup::from_edge_template().unwrap();
        let c = config(8080, Path::new("/tmp/x.sock"), &tg, 0.01);
        assert!(c.contains("bind 127.0.0.1:8080"), "{c}");
        assert!(c.contains("stats socket /tmp/x.sock"), "{c}");
        assert!(
            c.contains(&format!("option httpchk GET {}", tg.health_check_path)),
            "{c}"
        );
        assert!(
            c.contains(&format!("http-check expect status {}", tg.matcher)),
            "{c}"
        );
        let inter = tg.interval.as_millis() / 100;
        assert!(
            c.contains(&format!(
                "default-server inter {inter}ms rise {} fall {}",
                tg.healthy_threshold, tg.unhealthy_threshold
            )),
            "{c}"
        );
        assert!(
            c.contains(&format!("timeout server {}ms", tg.idle_timeout.as_millis())),
            "{c}"
        );
        // An ALB sends a request to one target, once.
        let directives: Vec<&str> = c
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(directives.contains(&"retries 0"), "{c}");
        assert!(
            !directives
                .iter()
                .any(|l| l.contains("redispatch") || l.starts_with("retry-on")),
            "{c}"
        );
        assert!(!c.contains('@'), "placeholders left: {c}");
    }
}
