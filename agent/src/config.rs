//! `agent.toml`: the file baked into the AMI, with the instance's userdata TOML laid over it.
//!
//! Three stages (B4): each source is parsed into [`RawConfig`] (all `Option`, unknown keys
//! rejected, errors name the source and the key path), the two TOML tables are merged (userdata
//! wins, tables merge key by key, arrays and scalars replace), and [`Settings::validate`] turns the
//! merged raw config into typed, non-optional settings. `bake-agent check` runs the very same
//! [`Settings::load`] as `bake-agent run`. The schema, with every default, is in `docs/agent.md`
//! and `examples/agent.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bake_common::aws::AwsSettings;
use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::logs::{LogsConfig, LogsError};
use crate::metrics::MetricsConfig;

/// Default grace period between the stop signal and SIGKILL of the app's process group.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default delay before the second restart in a row (the first restart is immediate).
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Default ceiling of the restart delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default run time after which the app counts as stable again (backoff reset).
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(60);
/// Default number of crashes within [`DEFAULT_CRASH_LOOP_WINDOW`] that make a crash loop.
pub const DEFAULT_CRASH_LOOP_COUNT: u32 = 5;
/// Default crash-loop window.
pub const DEFAULT_CRASH_LOOP_WINDOW: Duration = Duration::from_secs(120);
/// Default interval of the readiness probe.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default time the app has to become ready before the launch hook is ABANDONed.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Default interval of `RecordLifecycleActionHeartbeat` while waiting for readiness.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Default interval of the termination watch (IMDS target lifecycle state and spot notice).
pub const DEFAULT_TERMINATION_POLL: Duration = Duration::from_secs(5);
/// Default SSM path under which fleet leases are created.
pub const DEFAULT_LEASE_PREFIX: &str = "/bake/leases";
/// Default life of a `job` try without a renewal (`[lease] ttl`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);
/// Default tries of a `job` per period (`[lease] max_attempts`).
pub const DEFAULT_LEASE_MAX_ATTEMPTS: u32 = 3;
/// Default time the EFS mount is retried while its DNS name does not resolve.
pub const DEFAULT_MOUNT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default EFS mount point.
pub const DEFAULT_MOUNT_POINT: &str = "/mnt/efs";

/// A configuration that cannot be used. Always names where (file or userdata) and which key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a key of the wrong type, or an unknown key.
    #[error("{origin}: {key}: {message}")]
    Parse {
        /// The file path or `userdata`.
        origin: String,
        /// Dotted key path (`.` for the document itself).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The files the merged value may come from.
        origin: String,
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Where a TOML document came from, for error messages.
#[derive(Clone, Debug)]
pub enum Origin {
    /// A file on disk.
    File(PathBuf),
    /// The instance's userdata.
    Userdata,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Userdata => f.write_str("userdata"),
        }
    }
}

/// `agent.toml` as written: every field optional, unknown keys rejected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where AWS calls go (region, endpoint, retries). Region defaults to the instance's.
    pub aws: Option<AwsSettings>,
    /// How the instance finds its Auto Scaling group.
    pub identity: Option<RawIdentity>,
    /// The supervised application.
    pub app: Option<RawApp>,
    /// Restart policy.
    pub supervise: Option<RawSupervise>,
    /// Secrets from SSM Parameter Store.
    pub secrets: Option<RawSecrets>,
    /// The EFS file system for uploads.
    pub efs: Option<RawEfs>,
    /// Readiness probe and the launch lifecycle hook.
    pub readiness: Option<RawReadiness>,
    /// Termination watch and the terminate lifecycle hook.
    pub lifecycle: Option<RawLifecycle>,
    /// Fleet-wide leases (`bake-agent job`, secret rollouts).
    pub lease: Option<RawLease>,
    /// Log shipping to CloudWatch Logs (schema: docs/logs.md). Absent: nothing is shipped.
    pub logs: Option<LogsConfig>,
    /// Metrics to CloudWatch (schema: docs/logs.md). Absent: no metrics are published.
    pub metrics: Option<MetricsConfig>,
}

/// `[identity]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// The Auto Scaling group name; default: discovered (IMDS tags, then DescribeAutoScalingInstances).
    pub asg_name: Option<String>,
    /// Read the group name from the IMDS instance tags first (needs tags in metadata). Default true.
    pub imds_tags: Option<bool>,
    /// Run without an Auto Scaling group (no lifecycle hooks, no health reports). Default false.
    pub standalone: Option<bool>,
}

/// `[app]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// Program and arguments, e.g. `["/usr/bin/node", "/opt/app/server.js"]`. Required for `run`.
    pub command: Option<Vec<String>>,
    /// User the app runs as; default: the agent's own.
    pub user: Option<String>,
    /// Group the app runs as; default: the user's primary group.
    pub group: Option<String>,
    /// Working directory; default: `/`.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables (not secret).
    pub env: Option<BTreeMap<String, String>>,
    /// Signal for a graceful stop, e.g. `"SIGTERM"` (default) or `"SIGINT"`.
    pub stop_signal: Option<String>,
    /// Grace period before SIGKILL of the whole group (humantime). Default `"10s"`.
    pub stop_timeout: Option<String>,
}

/// `[supervise]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervise {
    /// Delay before the second restart in a row; doubles after that. Default `"100ms"`.
    pub backoff_initial: Option<String>,
    /// Largest restart delay. Default `"30s"`.
    pub backoff_max: Option<String>,
    /// Run time after which the backoff resets. Default `"60s"`.
    pub stable_after: Option<String>,
    /// Crashes within `crash_loop_window` that make a crash loop. Default 5.
    pub crash_loop_count: Option<u32>,
    /// Default `"2m"`.
    pub crash_loop_window: Option<String>,
    /// On a crash loop, `SetInstanceHealth Unhealthy` so the ASG replaces the instance. Default true.
    pub mark_unhealthy: Option<bool>,
}

/// `[secrets]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    /// SSM path prefix, e.g. `/app/prod`. Every parameter below it becomes an env variable.
    pub path: Option<String>,
    /// Also write them to this env file (mode 0600, owned by the app user).
    pub env_file: Option<PathBuf>,
    /// Version polling interval (humantime); `"0s"` or unset: no polling.
    pub poll_interval: Option<String>,
    /// What a changed version does: `"restart"`, `"rollout"` (default) or `"ignore"`.
    pub on_change: Option<String>,
}

/// `[efs]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEfs {
    /// File system id, `fs-…`. Required when `[efs]` is present.
    pub file_system_id: Option<String>,
    /// Access point id, `fsap-…`.
    pub access_point: Option<String>,
    /// Where to mount. Default `/mnt/efs`.
    pub mount_point: Option<PathBuf>,
    /// How long DNS failures are retried (humantime). Default `"5m"`.
    pub timeout: Option<String>,
}

/// `[readiness]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    /// `http://127.0.0.1:PORT/PATH` (2xx = ready) or `tcp://127.0.0.1:PORT` (connect = ready).
    pub probe: Option<String>,
    /// Probe interval. Default `"1s"`.
    pub interval: Option<String>,
    /// Give up (ABANDON the launch hook) after this long. Default `"5m"`.
    pub timeout: Option<String>,
    /// Launch lifecycle hook name; default: discovered with DescribeLifecycleHooks.
    pub launch_hook: Option<String>,
    /// Heartbeat interval while waiting. Default `"60s"`.
    pub heartbeat_interval: Option<String>,
}

/// `[lifecycle]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLifecycle {
    /// Terminate lifecycle hook name; default: discovered with DescribeLifecycleHooks.
    pub terminate_hook: Option<String>,
    /// Poll interval of IMDS target lifecycle state and spot notice. Default `"5s"`.
    pub poll_interval: Option<String>,
    /// Treat a spot interruption notice like termination. Default true.
    pub spot: Option<bool>,
}

/// `[lease]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLease {
    /// SSM path prefix of leases. Default `/bake/leases`.
    pub prefix: Option<String>,
    /// How long a `job` try counts as alive without a renewal (humantime, at least 3s; renewed
    /// every third of it). Default `"10m"`.
    pub ttl: Option<String>,
    /// Tries of a `job` per period (1..=20). Default 3.
    pub max_attempts: Option<u32>,
}

/// Validated settings, everything typed and defaulted.
#[derive(Clone, Debug)]
pub struct Settings {
    /// AWS overrides (region defaults to the instance's own).
    pub aws: AwsSettings,
    /// Group discovery.
    pub identity: IdentitySettings,
    /// The app; `None` when `[app]` has no command (only `job`/`reap`/`check` can run).
    pub app: Option<AppSettings>,
    /// Restart policy.
    pub supervise: SuperviseSettings,
    /// Secrets; `None` without `[secrets] path`.
    pub secrets: Option<SecretsSettings>,
    /// EFS; `None` without `[efs]`.
    pub efs: Option<EfsSettings>,
    /// Readiness; `None` without `[readiness] probe`: ready as soon as the app started.
    pub readiness: Option<ReadinessSettings>,
    /// Termination.
    pub lifecycle: LifecycleSettings,
    /// Leases.
    pub lease: LeaseSettings,
    /// Log shipping, checked with [`LogsConfig::validate`]; `None` without `[logs]`.
    pub logs: Option<LogsConfig>,
    /// Metrics, checked with [`MetricsConfig::validate`]; `None` without `[metrics]` or with
    /// `enabled = false`.
    pub metrics: Option<MetricsConfig>,
}

/// `[identity]`, validated.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// Fixed group name.
    pub asg_name: Option<String>,
    /// Look at IMDS tags first.
    pub imds_tags: bool,
    /// No Auto Scaling group at all.
    pub standalone: bool,
}

/// `[app]`, validated.
#[derive(Clone, Debug)]
pub struct AppSettings {
    /// Program and arguments (non-empty).
    pub command: Vec<String>,
    /// Run-as user name.
    pub user: Option<String>,
    /// Run-as group name.
    pub group: Option<String>,
    /// Working directory.
    pub working_dir: PathBuf,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Graceful stop signal.
    pub stop_signal: Signal,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
}

/// `[supervise]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuperviseSettings {
    /// Delay before the second restart in a row.
    pub backoff_initial: Duration,
    /// Largest delay.
    pub backoff_max: Duration,
    /// Run time that resets the backoff.
    pub stable_after: Duration,
    /// Crashes that make a loop (>= 1).
    pub crash_loop_count: u32,
    /// Window of the crash-loop count.
    pub crash_loop_window: Duration,
    /// Report Unhealthy on a crash loop.
    pub mark_unhealthy: bool,
}

impl Default for SuperviseSettings {
    fn default() -> Self {
        Self {
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stable_after: DEFAULT_STABLE_AFTER,
            crash_loop_count: DEFAULT_CRASH_LOOP_COUNT,
            crash_loop_window: DEFAULT_CRASH_LOOP_WINDOW,
            mark_unhealthy: true,
        }
    }
}

/// What a rotated secret does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    /// Restart the app gracefully with the new values.
    Restart,
    /// One instance (lease winner) starts an instance refresh of the group.
    Rollout,
    /// Log it and carry on.
    Ignore,
}

/// `[secrets]`, validated.
#[derive(Clone, Debug)]
pub struct SecretsSettings {
    /// Normalised prefix: leading `/`, no trailing `/`.
    pub path: String,
    /// Env file to write.
    pub env_file: Option<PathBuf>,
    /// Polling interval; `None`: no polling.
    pub poll_interval: Option<Duration>,
    /// Reaction to a change.
    pub on_change: OnChange,
}

/// `[efs]`, validated.
#[derive(Clone, Debug)]
pub struct EfsSettings {
    /// `fs-…`.
    pub file_system_id: String,
    /// `fsap-…`.
    pub access_point: Option<String>,
    /// Mount point.
    pub mount_point: PathBuf,
    /// DNS retry budget.
    pub timeout: Duration,
}

/// A readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// GET `path` on `addr`; 2xx is ready.
    Http {
        /// `host:port`.
        addr: String,
        /// Request path with query.
        path: String,
    },
    /// A TCP connect to `addr` is ready.
    Tcp {
        /// `host:port`.
        addr: String,
    },
}

/// `[readiness]`, validated.
#[derive(Clone, Debug)]
pub struct ReadinessSettings {
    /// The probe.
    pub probe: Probe,
    /// Probe interval.
    pub interval: Duration,
    /// Deadline.
    pub timeout: Duration,
    /// Launch hook name, else discovered.
    pub launch_hook: Option<String>,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
}

/// `[lifecycle]`, validated.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Terminate hook name, else discovered.
    pub terminate_hook: Option<String>,
    /// IMDS poll interval.
    pub poll_interval: Duration,
    /// Spot notices drain too.
    pub spot: bool,
}

/// `[lease]`, validated.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Normalised prefix.
    pub prefix: String,
    /// How long a `job` try counts as alive without a renewal.
    pub ttl: Duration,
    /// Tries of a `job` per period.
    pub max_attempts: u32,
}

/// Userdata that is not agent TOML (a shell script, cloud-config, MIME multipart, binary):
/// returns why, so the caller can log it and carry on.
#[must_use]
pub fn userdata_not_toml(text: &str) -> Option<&'static str> {
    let t = text.trim_start();
    if t.starts_with("#!") {
        Some("a script (#!)")
    } else if t.starts_with("#cloud-config")
        || t.starts_with("#include")
        || t.starts_with("#cloud-boothook")
    {
        Some("cloud-init directives")
    } else if t.starts_with("Content-Type:") || t.starts_with("MIME-Version:") {
        Some("MIME multipart")
    } else if t.is_empty() {
        Some("empty")
    } else {
        None
    }
}

/// Parses one TOML document into a table, checking it against [`RawConfig`] so that errors
/// name the document and the key path.
pub fn parse_document(origin: &Origin, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        key: ".".into(),
        message: e.message().to_owned() + &line_of(text, e.span()),
    })?;
    // Typed check of this document alone, for errors that name its own key path.
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Parse {
            origin: origin.to_string(),
            key: if key.is_empty() { ".".into() } else { key },
            message: e.into_inner().message().to_owned(),
        }
    })?;
    Ok(table)
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

/// Lays `over` on `base`: tables merge key by key, everything else is replaced.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Settings {
    /// Reads the baked file, lays the userdata over it (if it is agent TOML), validates.
    ///
    /// `userdata` is the raw userdata text, `None` when the instance has none. Userdata that is
    /// a script or cloud-init is skipped with a log line; userdata TOML with errors is an error.
    pub fn load(path: &Path, userdata: Option<&str>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut table = parse_document(&Origin::File(path.to_owned()), &text)?;
        let mut origin = path.display().to_string();
        if let Some(ud) = userdata {
            match userdata_not_toml(ud) {
                Some(why) => tracing::info!(kind = why, "userdata is not agent TOML; ignored"),
                None => {
                    let over = parse_document(&Origin::Userdata, ud)?;
                    merge(&mut table, over);
                    origin.push_str(" + userdata");
                }
            }
        }
        let raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: origin.clone(),
                    key: ".".into(),
                    message: e.message().to_owned(),
                })?;
        Self::validate(raw, &origin)
    }

    /// Checks and types a merged raw config. `origin` names the sources for errors.
    pub fn validate(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        let v = Validator { origin };
        let identity = raw.identity.unwrap_or_default();
        let app = match raw.app {
            Some(a) if a.command.is_some() => Some(v.app(a)?),
            Some(a) => {
                if a.user.is_some() || a.env.is_some() || a.working_dir.is_some() {
                    return Err(v.err("app.command", "missing: the program and its arguments, e.g. [\"/usr/bin/node\", \"server.js\"]"));
                }
                None
            }
            None => None,
        };
        let s = raw.supervise.unwrap_or_default();
        let defaults = SuperviseSettings::default();
        let supervise = SuperviseSettings {
            backoff_initial: v.dur(
                "supervise.backoff_initial",
                s.backoff_initial,
                defaults.backoff_initial,
            )?,
            backoff_max: v.dur("supervise.backoff_max", s.backoff_max, defaults.backoff_max)?,
            stable_after: v.dur(
                "supervise.stable_after",
                s.stable_after,
                defaults.stable_after,
            )?,
            crash_loop_count: match s.crash_loop_count {
                Some(0) => return Err(v.err("supervise.crash_loop_count", "must be at least 1")),
                Some(n) => n,
                None => defaults.crash_loop_count,
            },
            crash_loop_window: v.dur(
                "supervise.crash_loop_window",
                s.crash_loop_window,
                defaults.crash_loop_window,
            )?,
            mark_unhealthy: s.mark_unhealthy.unwrap_or(true),
        };
        if supervise.backoff_max < supervise.backoff_initial {
            return Err(v.err(
                "supervise.backoff_max",
                "must not be less than supervise.backoff_initial",
            ));
        }
        let secrets = match raw.secrets {
            Some(s) => Some(v.secrets(s)?),
            None => None,
        };
        let efs = match raw.efs {
            Some(e) => Some(v.efs(e)?),
            None => None,
        };
        let readiness = match raw.readiness {
            Some(r) => v.readiness(r)?,
            None => None,
        };
        let l = raw.lifecycle.unwrap_or_default();
        let lifecycle = LifecycleSettings {
            terminate_hook: l.terminate_hook,
            poll_interval: v.positive(
                "lifecycle.poll_interval",
                l.poll_interval,
                DEFAULT_TERMINATION_POLL,
            )?,
            spot: l.spot.unwrap_or(true),
        };
        let l = raw.lease.unwrap_or_default();
        let prefix = l.prefix.unwrap_or_else(|| DEFAULT_LEASE_PREFIX.into());
        let ttl = v.dur("lease.ttl", l.ttl, DEFAULT_LEASE_TTL)?;
        if ttl < Duration::from_secs(3) || ttl > Duration::from_secs(7 * 86_400) {
            return Err(v.err("lease.ttl", "must be between 3s and 7d"));
        }
        let max_attempts = l.max_attempts.unwrap_or(DEFAULT_LEASE_MAX_ATTEMPTS);
        if !(1..=20).contains(&max_attempts) {
            return Err(v.err("lease.max_attempts", "must be between 1 and 20"));
        }
        let lease = LeaseSettings {
            prefix: v.ssm_path("lease.prefix", &prefix)?,
            ttl,
            max_attempts,
        };
        let logs = match raw.logs {
            Some(l) => {
                l.validate().map_err(|e| match e {
                    LogsError::Config { key, message } => v.err(&key, message),
                    LogsError::State(m) => v.err("logs", m),
                })?;
                Some(l)
            }
            None => None,
        };
        let metrics = match raw.metrics {
            Some(m) => {
                m.validate().map_err(|e| v.err(&e.key, e.message))?;
                m.enabled().then_some(m)
            }
            None => None,
        };
        Ok(Settings {
            aws: raw.aws.unwrap_or_default(),
            identity: IdentitySettings {
                asg_name: identity.asg_name,
                imds_tags: identity.imds_tags.unwrap_or(true),
                standalone: identity.standalone.unwrap_or(false),
            },
            app,
            supervise,
            secrets,
            efs,
            readiness,
            lifecycle,
            lease,
            logs,
            metrics,
        })
    }
}

struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn dur(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(s) => bake_common::duration::parse(key, &s).map_err(|e| {
                self.err(
                    key,
                    format!(
                        "\"{}\" is not a duration (examples: \"500ms\", \"30s\", \"5m\"): {}",
                        e.value, e.reason
                    ),
                )
            }),
        }
    }

    fn positive(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.dur(key, value, default)?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    fn ssm_path(&self, key: &str, path: &str) -> Result<String, ConfigError> {
        let trimmed = path.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.len() < 2 {
            return Err(self.err(
                key,
                format!("\"{path}\" is not an SSM path like \"/app/prod\""),
            ));
        }
        if let Some(c) = trimmed
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_.-".contains(*c)))
        {
            return Err(self.err(
                key,
                format!("\"{path}\": character {c:?} is not allowed in an SSM parameter name"),
            ));
        }
        Ok(trimmed.to_owned())
    }

    fn app(&self, a: RawApp) -> Result<AppSettings, ConfigError> {
        let command = a.command.unwrap_or_default();
        if command.is_empty() || command[0].is_empty() {
            return Err(self.err("app.command", "must name a program"));
        }
        let env = a.env.unwrap_or_default();
        for k in env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(self.err(
                    &format!("app.env.{k}"),
                    "not a valid environment variable name",
                ));
            }
        }
        let stop_signal = match a.stop_signal {
            None => Signal::SIGTERM,
            Some(s) => {
                let name = if s.starts_with("SIG") {
                    s.clone()
                } else {
                    format!("SIG{s}")
                };
                name.parse::<Signal>().map_err(|_| {
                    self.err(
                        "app.stop_signal",
                        format!("\"{s}\" is not a signal name (e.g. \"SIGTERM\")"),
                    )
                })?
            }
        };
        Ok(AppSettings {
            command,
            user: a.user,
            group: a.group,
            working_dir: a.working_dir.unwrap_or_else(|| PathBuf::from("/")),
            env,
            stop_signal,
            stop_timeout: self.dur("app.stop_timeout", a.stop_timeout, DEFAULT_STOP_TIMEOUT)?,
        })
    }

    fn secrets(&self, s: RawSecrets) -> Result<SecretsSettings, ConfigError> {
        let Some(path) = s.path else {
            return Err(self.err(
                "secrets.path",
                "missing: the SSM path prefix, e.g. \"/app/prod\"",
            ));
        };
        let poll = self.dur("secrets.poll_interval", s.poll_interval, Duration::ZERO)?;
        let on_change = match s.on_change.as_deref() {
            None | Some("rollout") => OnChange::Rollout,
            Some("restart") => OnChange::Restart,
            Some("ignore") => OnChange::Ignore,
            Some(other) => {
                return Err(self.err(
                    "secrets.on_change",
                    format!("\"{other}\": expected \"restart\", \"rollout\" or \"ignore\""),
                ))
            }
        };
        Ok(SecretsSettings {
            path: self.ssm_path("secrets.path", &path)?,
            env_file: s.env_file,
            poll_interval: (!poll.is_zero()).then_some(poll),
            on_change,
        })
    }

    fn efs(&self, e: RawEfs) -> Result<EfsSettings, ConfigError> {
        let Some(fs) = e.file_system_id else {
            return Err(self.err(
                "efs.file_system_id",
                "missing: the file system id, e.g. \"fs-0123456789abcdef0\"",
            ));
        };
        let id_ok = |id: &str, prefix: &str| {
            id.strip_prefix(prefix)
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        };
        if !id_ok(&fs, "fs-") {
            return Err(self.err(
                "efs.file_system_id",
                format!("\"{fs}\" is not a file system id (fs-<hex>)"),
            ));
        }
        if let Some(ap) = &e.access_point {
            if !id_ok(ap, "fsap-") {
                return Err(self.err(
                    "efs.access_point",
                    format!("\"{ap}\" is not an access point id (fsap-<hex>)"),
                ));
            }
        }
        let mount_point = e
            .mount_point
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MOUNT_POINT));
        if !mount_point.is_absolute() {
            return Err(self.err("efs.mount_point", "must be an absolute path"));
        }
        Ok(EfsSettings {
            file_system_id: fs,
            access_point: e.access_point,
            mount_point,
            timeout: self.dur("efs.timeout", e.timeout, DEFAULT_MOUNT_TIMEOUT)?,
        })
    }

    fn readiness(&self, r: RawReadiness) -> Result<Option<ReadinessSettings>, ConfigError> {
        let Some(p) = r.probe else {
            return Ok(None);
        };
        let probe = parse_probe(&p).map_err(|m| self.err("readiness.probe", m))?;
        Ok(Some(ReadinessSettings {
            probe,
            interval: self.positive("readiness.interval", r.interval, DEFAULT_PROBE_INTERVAL)?,
            timeout: self.positive("readiness.timeout", r.timeout, DEFAULT_READY_TIMEOUT)?,
            launch_hook: r.launch_hook,
            heartbeat_interval: self.positive(
                "readiness.heartbeat_interval",
                r.heartbeat_interval,
                DEFAULT_HEARTBEAT_INTERVAL,
            )?,
        }))
    }
}

/// `http://host:port/path` or `tcp://host:port`.
pub fn parse_probe(p: &str) -> Result<Probe, String> {
    let bad =
        || format!("\"{p}\": expected \"http://127.0.0.1:PORT/PATH\" or \"tcp://127.0.0.1:PORT\"");
    if let Some(rest) = p.strip_prefix("http://") {
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !addr.contains(':') || addr.ends_with(':') {
            return Err(bad());
        }
        Ok(Probe::Http {
            addr: addr.to_owned(),
            path: path.to_owned(),
        })
    } else if let Some(addr) = p.strip_prefix("tcp://") {
        if !addr.contains(':') || addr.contains('/') || addr.ends_with(':') {
            return Err(bad());
        }
        Ok(Probe::Tcp {
            addr: addr.to_owned(),
        })
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(base: &str, userdata: Option<&str>) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, base).unwrap();
        Settings::load(&p, userdata)
    }

    #[test]
    fn test_minimal_defaults() {
        let s = load_str("[app]\ncommand = [\"/bin/true\"]\n", None).unwrap();
        assert_eq!(s.supervise, SuperviseSettings::default());
        assert_eq!(s.lease.prefix, "/bake/leases");
        assert!(s.secrets.is_none() && s.efs.is_none() && s.readiness.is_none());
        assert_eq!(s.app.unwrap().stop_signal, Signal::SIGTERM);
    }

    #[test]
    fn test_userdata_overrides_and_merges() {
        let base = "[app]\ncommand = [\"/bin/true\"]\nenv = { A = \"1\", B = \"2\" }\n[supervise]\ncrash_loop_count = 3\n";
        let ud = "[app.env]\nB = \"20\"\n[supervise]\nbackoff_max = \"5s\"\n";
        let s = load_str(base, Some(ud)).unwrap();
        let app = s.app.unwrap();
        assert_eq!(app.env["A"], "1");
        assert_eq!(app.env["B"], "20");
        assert_eq!(s.supervise.crash_loop_count, 3);
        assert_eq!(s.supervise.backoff_max, Duration::from_secs(5));
    }

    #[test]
    fn test_script_userdata_is_ignored() {
        for ud in [
            "#!/bin/bash\necho hi\n",
            "#cloud-config\npackages: []\n",
            "Content-Type: multipart/mixed; boundary=x\n",
            "",
        ] {
            assert!(
                load_str("[app]\ncommand = [\"/bin/true\"]\n", Some(ud)).is_ok(),
                "{ud}"
            );
        }
    }

    #[test]
    fn test_bad_userdata_toml_names_userdata_and_key() {
        let e = load_str(
            "[app]\ncommand = [\"/bin/true\"]\n",
            Some("[supervise]\ncrash_loop_cont = 3\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("userdata: supervise"), "{e}");
        assert!(e.contains("crash_loop_cont"), "{e}");
        let e = load_str(
            "[app]\ncommand = [\"/bin/true\"]\n",
            Some("this is = = not toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("userdata: ."), "{e}");
    }

    #[test]
    fn test_errors_name_file_and_key() {
        let e = load_str("[supervise]\ncrash_loop_count = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml: supervise.crash_loop_count: "),
            "{e}"
        );
        let e = load_str("[supervise]\nbackoff_max = \"5x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml: supervise.backoff_max: \"5x\" is not a duration"),
            "{e}"
        );
        let e = load_str("[secrets]\npath = \"app/prod\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrets.path"), "{e}");
        let e = load_str("[secrets]\npath = \"/a\"\non_change = \"reboot\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrets.on_change: \"reboot\""), "{e}");
        let e = load_str("[efs]\nfile_system_id = \"vol-1\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("efs.file_system_id"), "{e}");
        let e = load_str("[app]\ncommand = []\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("app.command"), "{e}");
        let e = load_str("[app]\ncommand = [\"x\"]\nstop_signal = \"SIGFOO\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("app.stop_signal"), "{e}");
    }

    #[test]
    fn test_probe_parsing() {
        assert_eq!(
            parse_probe("http://127.0.0.1:3000/health").unwrap(),
            Probe::Http {
                addr: "127.0.0.1:3000".into(),
                path: "/health".into()
            }
        );
        assert_eq!(
            parse_probe("tcp://127.0.0.1:22").unwrap(),
            Probe::Tcp {
                addr: "127.0.0.1:22".into()
            }
        );
        assert!(parse_probe("https://x:1/").is_err());
        assert!(parse_probe("tcp://x").is_err());
    }

    #[test]
    fn test_logs_and_metrics_sections() {
        let s = load_str("[app]\ncommand = [\"/bin/true\"]\n", None).unwrap();
        assert!(s.logs.is_none() && s.metrics.is_none());
        let base = "[logs]\nretention_days = 14\n[logs.app]\nlog_group = \"/bake/base\"\n\
                    [[logs.files]]\npath = \"/var/log/a.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n\
                    [metrics]\npublish_interval = \"30s\"\n";
        // Userdata merges into the tables key by key; the files array is replaced as a whole.
        let ud = "[logs.app]\nlog_group = \"/bake/prod\"\n[[logs.files]]\npath = \"/var/log/b.log\"\n\
                  log_group = \"g\"\nlog_stream = \"{instance_id}/b\"\n[metrics]\nnamespace = \"Prod\"\n";
        let s = load_str(base, Some(ud)).unwrap();
        let logs = s.logs.unwrap();
        assert_eq!(logs.retention_days, Some(14));
        assert_eq!(logs.app.unwrap().log_group, "/bake/prod");
        assert_eq!(logs.files.len(), 1);
        assert_eq!(logs.files[0].path, "/var/log/b.log");
        let m = s.metrics.unwrap();
        assert_eq!(m.publish_interval.as_deref(), Some("30s"));
        assert_eq!(m.namespace.as_deref(), Some("Prod"));
        let s = load_str("[metrics]\nenabled = false\n", None).unwrap();
        assert!(s.metrics.is_none());
    }

    #[test]
    fn test_logs_and_metrics_errors_name_file_and_key() {
        let e = load_str(
            "[[logs.files]]\npath = \"/x/*.log\"\nlog_group = \"g\"\nlog_stream = \"{host}\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.toml: logs.files[0].log_stream: "), "{e}");
        let e = load_str(
            "[logs]\nretention_days = 8\n",
            Some("[logs]\nretention_days = 9\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agent.toml + userdata: logs.retention_days: 9 "),
            "{e}"
        );
        let e = load_str("[logs.app]\nlog_grop = \"g\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml: logs.app.log_grop: unknown field `log_grop`"),
            "{e}"
        );
        let e = load_str("[metrics]\npublish_interval = \"1h\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml: metrics.publish_interval: "), "{e}");
        let e = load_str(
            "[app]\ncommand = [\"x\"]\n",
            Some("[metrics]\nenable = true\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("userdata: metrics.enable: unknown field `enable`"),
            "{e}"
        );
    }
}
