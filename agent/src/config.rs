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

use crate::logs::{LogsConfig, LogsSettings};
use crate::metrics::{MetricsConfig, MetricsSettings};

/// Default grace period between the stop signal and SIGKILL of the app's process group.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `app.stop_timeout`. The whole drain must fit systemd's `TimeoutStopSec=3min`
/// (systemd/bake-agent.service): 120 s for the app, then up to 2 s for its pipes
/// ([`crate::daemon::PIPES_DEADLINE`]), 10 s of log flush ([`crate::daemon::LOG_FLUSH_DEADLINE`])
/// and 5 s for the last metrics, leaves 43 s for `CompleteLifecycleAction` on the terminate hook.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Shortest `secrets.poll_interval` other than `"0s"` (off): shorter is a busy loop against SSM.
/// Every instance of the fleet polls `DescribeParameters`, which SSM throttles per account and
/// region, so a fleet should poll every few minutes (examples/agent.toml: `"5m"`).
pub const MIN_SECRETS_POLL: Duration = Duration::from_secs(1);
/// Largest `lifecycle.poll_interval`: a spot interruption notice comes two minutes ahead, and the
/// drain needs most of them.
pub const MAX_TERMINATION_POLL: Duration = Duration::from_secs(60);
/// Largest `readiness.timeout`: a lifecycle hook can be held at most 48 hours.
pub const MAX_READY_TIMEOUT: Duration = Duration::from_secs(48 * 3600);
/// Largest `readiness.heartbeat_interval`: the longest heartbeat timeout a lifecycle hook can have.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(7200);
/// Largest value of any other duration in agent.toml, a year (humantime's `"1year"`, 365.25 days):
/// longer is a typo, and every duration stays far from the overflow of the clock arithmetic it
/// feeds.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);
/// Default age after which `bake-agent reap` removes an upload: with the hourly timer
/// (`RandomizedDelaySec=10min`) a file lives at most 13 d + 1 h + 10 min + the run, under 14 days.
pub const DEFAULT_UPLOADS_MAX_AGE: Duration = Duration::from_secs(13 * 86_400);
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
    /// The uploads directory the app writes and `bake-agent reap` empties.
    pub uploads: Option<RawUploads>,
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
    /// User the app runs as. Required with `command` (`"root"` must be written out).
    pub user: Option<String>,
    /// Group the app runs as; default: the user's primary group.
    pub group: Option<String>,
    /// Working directory; default: `/`.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables (not secret).
    pub env: Option<BTreeMap<String, String>>,
    /// Signal for a graceful stop, e.g. `"SIGTERM"` (default) or `"SIGINT"`.
    pub stop_signal: Option<String>,
    /// Grace period before SIGKILL of the whole group (humantime, at most `"2m"`). Default `"10s"`.
    pub stop_timeout: Option<String>,
    /// The TCP port the app listens on (1..=65535): given to it as `PORT`, and opened in the
    /// instance's firewall by `bake-agent firewall`. Default: none.
    pub port: Option<i64>,
    /// Socket activation: the address the agent binds the app's listening socket to, once,
    /// before the first start (`"0.0.0.0:3000"`, `"[::]:3000"`). Every start of the app gets it
    /// as fd 3 with `LISTEN_FDS=1`, `LISTEN_PID` and `LISTEN_FDNAMES=app`, as systemd passes
    /// sockets, so connections wait in its backlog while the app restarts. Its port is
    /// `app.port`. Default: none (the app binds `PORT` itself).
    pub listen: Option<String>,
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
    /// Variables a secret may replace although the app's environment has them (PATH, HOME,
    /// USER, LOGNAME, SHELL, `LD_*`, `app.env` keys), e.g. `["HOME"]`. Default: none.
    pub allow_override: Option<Vec<String>>,
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

/// `[uploads]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUploads {
    /// The uploads directory (absolute), e.g. `/mnt/efs/uploads`: given to the app as
    /// `UPLOADS_DIR`, reaped by `bake-agent reap`. Required in `[uploads]`.
    pub dir: Option<PathBuf>,
    /// Age after which `bake-agent reap` removes a file (humantime). Default `"13d"`.
    pub max_age: Option<String>,
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
    /// Log shipping ([`LogsSettings::with_config`]); `None` without `[logs]`.
    pub logs: Option<LogsSettings>,
    /// Metrics ([`MetricsSettings::with_config`]); `None` without `[metrics]` or with
    /// `enabled = false`.
    pub metrics: Option<MetricsSettings>,
    /// Uploads; `None` without `[uploads]`.
    pub uploads: Option<UploadsSettings>,
    /// The sources, for messages: `/etc/bake/agent.toml` or `/etc/bake/agent.toml + userdata`.
    pub origin: String,
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
    pub user: String,
    /// Run-as group name.
    pub group: Option<String>,
    /// Working directory.
    pub working_dir: PathBuf,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Graceful stop signal.
    pub stop_signal: Signal,
    /// Grace period before SIGKILL (at most [`MAX_STOP_TIMEOUT`]).
    pub stop_timeout: Duration,
    /// The port the app listens on (also `PORT` in `env`; `listen`'s port when that is set).
    pub port: Option<u16>,
    /// The address of the listening socket the agent binds and passes to the app (socket
    /// activation, see [`crate::supervisor::socket`]); `None`: the app binds its port itself.
    pub listen: Option<std::net::SocketAddr>,
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
    /// Variables secrets may replace (see `secrets::refuse_overrides`).
    pub allow_override: std::collections::BTreeSet<String>,
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

/// `[uploads]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadsSettings {
    /// Absolute, without `.` or `..` components.
    pub dir: PathBuf,
    /// Reaper age limit (> 0).
    pub max_age: Duration,
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

/// The largest userdata the agent reads once decompressed. EC2 takes at most 16 KiB of userdata;
/// a gzip member that inflates beyond this is not agent TOML.
pub const MAX_USERDATA_BYTES: usize = 1 << 20;

/// What the instance's userdata is to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Userdata {
    /// Agent TOML, to be laid over the baked file.
    Toml {
        /// The document.
        text: String,
        /// It arrived gzip-compressed.
        gzip: bool,
    },
    /// Not agent TOML, ignored: why.
    Ignored(&'static str),
}

/// Decides what raw userdata is: gzip (as cloud-init accepts it) is decompressed first; what is
/// then not UTF-8 text, or is a script, cloud-init directives, MIME multipart or empty, is
/// ignored. Only gzip that does not decompress is an error (`userdata: .`).
pub fn classify_userdata(raw: &[u8]) -> Result<Userdata, ConfigError> {
    let gzip = raw.starts_with(&[0x1f, 0x8b]);
    let bytes = if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        let limit = u64::try_from(MAX_USERDATA_BYTES).unwrap_or(u64::MAX) + 1;
        flate2::read::MultiGzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| ConfigError::Parse {
                origin: Origin::Userdata.to_string(),
                key: ".".into(),
                message: format!("gzip data that does not decompress: {e}"),
            })?;
        if out.len() > MAX_USERDATA_BYTES {
            return Ok(Userdata::Ignored("gzip larger than 1 MiB decompressed"));
        }
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Userdata::Ignored("not UTF-8 text (binary)"));
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(match userdata_not_toml(text) {
        Some(why) => Userdata::Ignored(why),
        None => Userdata::Toml {
            text: text.to_owned(),
            gzip,
        },
    })
}

/// The baked file with the userdata the instance metadata service serves laid over it: what
/// `run` boots with, and what `firewall` and `reap` read. An unreachable metadata service is
/// [`Exit::Imds`](crate::exit::Exit::Imds), a bad configuration
/// [`Exit::Config`](crate::exit::Exit::Config).
pub async fn load_on_instance(path: &Path, imds: &crate::imds::Imds) -> anyhow::Result<Settings> {
    use crate::exit::{coded, Exit};
    let userdata = imds.user_data().await.map_err(|e| coded(Exit::Imds, e))?;
    Settings::load(path, userdata.as_deref()).map_err(|e| coded(Exit::Config, e))
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
    sections_are_tables(origin, &table)?;
    Ok(table)
}

/// serde lets an array stand for a struct (`app = ["/bin/app", "root", …]` fills `[app]` field by
/// field, in declaration order); agent.toml's sections are tables only.
fn sections_are_tables(origin: &Origin, table: &toml::Table) -> Result<(), ConfigError> {
    let not_table = |key: String| ConfigError::Parse {
        origin: origin.to_string(),
        key,
        message: "must be a table (a [section] or { key = value, … }), not an array".into(),
    };
    for (name, value) in table {
        let Some(section) = value.as_table() else {
            return Err(not_table(name.clone()));
        };
        // The tables nested in sections: [logs.app] and each [[logs.files]].
        if name == "logs" {
            if section.get("app").is_some_and(|a| !a.is_table()) {
                return Err(not_table("logs.app".into()));
            }
            if let Some(files) = section.get("files").and_then(toml::Value::as_array) {
                if let Some(i) = files.iter().position(|f| !f.is_table()) {
                    return Err(not_table(format!("logs.files[{i}]")));
                }
            }
        }
    }
    Ok(())
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
    /// `userdata` is the raw userdata as the instance serves it (bytes: it may be gzip), `None`
    /// when the instance has none; [`classify_userdata`] decides what it is. Userdata that is not
    /// agent TOML is skipped with a log line; userdata TOML with errors is an error. `run`,
    /// `check`, `firewall` and `reap` all load their settings here.
    pub fn load(path: &Path, userdata: Option<&[u8]>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut table = parse_document(&Origin::File(path.to_owned()), &text)?;
        let mut origin = path.display().to_string();
        if let Some(raw) = userdata {
            match classify_userdata(raw)? {
                Userdata::Ignored(why) => {
                    tracing::info!(kind = why, "userdata is not agent TOML; ignored");
                }
                Userdata::Toml { text, gzip } => {
                    if gzip {
                        tracing::info!(bytes = raw.len(), "userdata is gzip; decompressed");
                    }
                    let over = parse_document(&Origin::Userdata, &text)?;
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

    /// The app, as `run` needs it: `check` asks the same question, so that both refuse the same
    /// configurations.
    pub fn app_for_run(&self) -> Result<&AppSettings, ConfigError> {
        self.app.as_ref().ok_or_else(|| ConfigError::Invalid {
            origin: self.origin.clone(),
            key: "app.command".into(),
            message: "missing: the app to supervise, e.g. [\"/usr/bin/node\", \"server.js\"]"
                .into(),
        })
    }

    /// Checks and types a merged raw config. `origin` names the sources for errors.
    pub fn validate(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        let v = Validator { origin };
        let aws = v.aws(raw.aws.unwrap_or_default())?;
        let identity = raw.identity.unwrap_or_default();
        if let Some(name) = &identity.asg_name {
            v.asg_name("identity.asg_name", name)?;
        }
        let mut app = match raw.app {
            Some(a) if a.command.is_some() => Some(v.app(a)?),
            Some(a) => {
                if a.user.is_some()
                    || a.group.is_some()
                    || a.env.is_some()
                    || a.working_dir.is_some()
                    || a.port.is_some()
                    || a.listen.is_some()
                {
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
        if let Some(h) = &l.terminate_hook {
            v.hook_name("lifecycle.terminate_hook", h)?;
        }
        let lifecycle = LifecycleSettings {
            terminate_hook: l.terminate_hook,
            poll_interval: v.at_most(
                "lifecycle.poll_interval",
                v.positive(
                    "lifecycle.poll_interval",
                    l.poll_interval,
                    DEFAULT_TERMINATION_POLL,
                )?,
                MAX_TERMINATION_POLL,
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
        let logs = match &raw.logs {
            Some(l) => Some(LogsSettings::with_config(l).map_err(|e| v.err(&e.key, e.message))?),
            None => None,
        };
        let metrics = match &raw.metrics {
            Some(m) => MetricsSettings::with_config(m).map_err(|e| v.err(&e.key, e.message))?,
            None => None,
        };
        let uploads = match raw.uploads {
            Some(u) => Some(v.uploads(u)?),
            None => None,
        };
        // With EFS the uploads must be on it: every instance must see every upload, and the
        // reaper's mount check is only meaningful for a directory below the mount point.
        if let (Some(u), Some(e)) = (&uploads, &efs) {
            if !u.dir.starts_with(&e.mount_point) || u.dir == e.mount_point {
                return Err(v.err(
                    "uploads.dir",
                    format!(
                        "\"{}\" is not below efs.mount_point \"{}\": the uploads would not be shared",
                        u.dir.display(),
                        e.mount_point.display()
                    ),
                ));
            }
        }
        if let Some(a) = app.as_mut() {
            if let Some(port) = a.port {
                v.give_app(a, "PORT", "app.port", port.to_string())?;
            }
            if let Some(u) = &uploads {
                v.give_app(a, "UPLOADS_DIR", "uploads.dir", u.dir.display().to_string())?;
            }
        }
        Ok(Settings {
            aws,
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
            uploads,
            origin: origin.to_owned(),
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

    /// A humantime duration ([`bake_common::duration::parse`]), at most [`MAX_DURATION`].
    fn dur(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = match value {
            None => default,
            Some(s) => {
                bake_common::duration::parse(key, &s).map_err(|e| self.err(key, e.message()))?
            }
        };
        self.at_most(key, d, MAX_DURATION)
    }

    fn at_most(&self, key: &str, d: Duration, max: Duration) -> Result<Duration, ConfigError> {
        if d > max {
            return Err(self.err(
                key,
                format!(
                    "\"{}\" is too long: at most \"{}\"",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
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

    /// An SSM parameter path (prefix), by Parameter Store's naming rules: `/` then names of
    /// `a-zA-Z0-9_.-` separated by single `/`, at most 15 levels and 1011 characters, not
    /// starting with `aws` or `ssm`. Returned without a trailing `/`.
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
        let levels: Vec<&str> = trimmed[1..].split('/').collect();
        if levels
            .iter()
            .any(|l| l.is_empty() || *l == "." || *l == "..")
        {
            return Err(self.err(
                key,
                format!("\"{path}\": empty, \".\" or \"..\" levels are not SSM path levels"),
            ));
        }
        if levels.len() > 15 || trimmed.len() > 1011 {
            return Err(self.err(
                key,
                format!("\"{path}\": SSM paths have at most 15 levels and 1011 characters"),
            ));
        }
        let first = levels[0].to_ascii_lowercase();
        if first.starts_with("aws") || first.starts_with("ssm") {
            return Err(self.err(
                key,
                format!("\"{path}\": names starting with \"aws\" or \"ssm\" are reserved by SSM"),
            ));
        }
        Ok(trimmed.to_owned())
    }

    /// An absolute path without `..`, normalised (no `.` components, no trailing `/`).
    fn abs_path(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        use std::path::Component;
        if !path.is_absolute() {
            return Err(self.err(
                key,
                format!("\"{}\" is not an absolute path", path.display()),
            ));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(self.err(
                key,
                format!(
                    "\"{}\": \"..\" is not allowed (write the path it means)",
                    path.display()
                ),
            ));
        }
        Ok(path.components().collect())
    }

    /// [`Self::abs_path`], and not `/` itself.
    fn dir_below_root(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        let p = self.abs_path(key, path)?;
        if p == Path::new("/") {
            return Err(self.err(key, "must not be \"/\""));
        }
        Ok(p)
    }

    /// A user or group name as useradd accepts it: 1 to 32 characters, no `:`, `/`, `,`,
    /// whitespace or control characters, not starting with `-`.
    fn account_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        if name.chars().count() > 32
            || name.starts_with('-')
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ":/,".contains(c))
        {
            return Err(self.err(key, format!("\"{name}\" is not a user or group name")));
        }
        Ok(())
    }

    /// An Auto Scaling group name: 1 to 255 characters, no control characters.
    fn asg_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
            return Err(self.err(
                key,
                format!("\"{name}\" is not an Auto Scaling group name (1 to 255 characters)"),
            ));
        }
        Ok(())
    }

    /// A lifecycle hook name, by Auto Scaling's rule: 1 to 255 of `A-Za-z0-9-_/`.
    fn hook_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty()
            || name.len() > 255
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
        {
            return Err(self.err(
                key,
                format!("\"{name}\" is not a lifecycle hook name (1 to 255 of A-Za-z0-9-_/)"),
            ));
        }
        Ok(())
    }

    fn aws(&self, a: AwsSettings) -> Result<AwsSettings, ConfigError> {
        if let Some(r) = &a.region {
            let ok = r.starts_with(|c: char| c.is_ascii_lowercase())
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(self.err(
                    "aws.region",
                    format!("\"{r}\" is not a region name like \"eu-west-1\""),
                ));
            }
        }
        if a.profile.as_deref() == Some("") {
            return Err(self.err("aws.profile", "must not be empty"));
        }
        if let Some(u) = &a.endpoint_url {
            let host = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
            match host {
                None => {
                    return Err(self.err(
                        "aws.endpoint_url",
                        format!("\"{u}\" is not a URL: it needs the scheme, e.g. \"https://{u}\""),
                    ))
                }
                Some(h) if h.is_empty() || u.chars().any(|c| c.is_whitespace()) => {
                    return Err(self.err(
                        "aws.endpoint_url",
                        format!("\"{u}\" is not a URL like \"http://127.0.0.1:5000\""),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(a)
    }

    fn app(&self, a: RawApp) -> Result<AppSettings, ConfigError> {
        let command = a.command.unwrap_or_default();
        if command.is_empty() || command[0].is_empty() {
            return Err(self.err("app.command", "must name a program"));
        }
        // execve takes C strings: a NUL byte would only fail at the first start.
        if let Some(i) = command.iter().position(|c| c.contains('\0')) {
            return Err(self.err(&format!("app.command[{i}]"), "contains a NUL character"));
        }
        let Some(user) = a.user else {
            return Err(self.err(
                "app.user",
                "missing: the user the app runs as, e.g. \"app\" (write \"root\" to run it as root)",
            ));
        };
        self.account_name("app.user", &user)?;
        if let Some(g) = &a.group {
            self.account_name("app.group", g)?;
        }
        let env = a.env.unwrap_or_default();
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(self.err(
                    &format!("app.env.{k}"),
                    "not a valid environment variable name",
                ));
            }
            if v.contains('\0') {
                return Err(self.err(&format!("app.env.{k}"), "contains a NUL character"));
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
        let stop_timeout = self.dur("app.stop_timeout", a.stop_timeout, DEFAULT_STOP_TIMEOUT)?;
        if stop_timeout > MAX_STOP_TIMEOUT {
            return Err(self.err(
                "app.stop_timeout",
                format!(
                    "\"{}\" is too long: at most \"{}\", so that the drain (the app's stop, log \
                     flush, the terminate hook) fits systemd's TimeoutStopSec=3min",
                    humantime::format_duration(stop_timeout),
                    humantime::format_duration(MAX_STOP_TIMEOUT)
                ),
            ));
        }
        let mut port = match a.port {
            None => None,
            Some(p) => Some(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| self.err("app.port", format!("{p} is not in 1..=65535")))?,
            ),
        };
        let listen = match &a.listen {
            None => None,
            Some(l) => Some(parse_listen(l).map_err(|m| self.err("app.listen", m))?),
        };
        if let Some(addr) = listen {
            match port {
                Some(p) if p != addr.port() => {
                    return Err(self.err(
                        "app.port",
                        format!(
                            "{p} differs from the port of app.listen (\"{addr}\"): the app \
                             serves on the socket the agent binds"
                        ),
                    ))
                }
                _ => port = Some(addr.port()),
            }
            // The agent sets them for every start (LISTEN_PID is the started process's own pid).
            if let Some(k) = crate::supervisor::socket::LISTEN_VARS
                .iter()
                .find(|k| env.contains_key(**k))
            {
                return Err(self.err(
                    &format!("app.env.{k}"),
                    "is set by the agent for app.listen (socket activation): remove it",
                ));
            }
        }
        Ok(AppSettings {
            command,
            user,
            group: a.group,
            working_dir: match a.working_dir {
                Some(w) => self.abs_path("app.working_dir", &w)?,
                None => PathBuf::from("/"),
            },
            env,
            stop_signal,
            stop_timeout,
            port,
            listen,
        })
    }

    /// Puts `name=value` in the app's environment for `key`; an `app.env.NAME` that differs is an
    /// error naming both keys.
    fn give_app(
        &self,
        app: &mut AppSettings,
        name: &str,
        key: &str,
        value: String,
    ) -> Result<(), ConfigError> {
        match app.env.get(name) {
            Some(v) if *v != value => Err(self.err(
                &format!("app.env.{name}"),
                format!("\"{v}\" differs from {key} (\"{value}\"): set it once, in {key}"),
            )),
            _ => {
                app.env.insert(name.to_owned(), value);
                Ok(())
            }
        }
    }

    fn secrets(&self, s: RawSecrets) -> Result<SecretsSettings, ConfigError> {
        let Some(path) = s.path else {
            return Err(self.err(
                "secrets.path",
                "missing: the SSM path prefix, e.g. \"/app/prod\"",
            ));
        };
        let poll = self.at_most(
            "secrets.poll_interval",
            self.dur("secrets.poll_interval", s.poll_interval, Duration::ZERO)?,
            Duration::from_secs(86_400),
        )?;
        if !poll.is_zero() && poll < MIN_SECRETS_POLL {
            return Err(self.err(
                "secrets.poll_interval",
                format!(
                    "\"{}\" is too short: \"0s\" (off) or at least \"{}\" (every instance polls)",
                    humantime::format_duration(poll),
                    humantime::format_duration(MIN_SECRETS_POLL)
                ),
            ));
        }
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
        let mut allow_override = std::collections::BTreeSet::new();
        for (i, var) in s.allow_override.unwrap_or_default().into_iter().enumerate() {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(
                    &format!("secrets.allow_override[{i}]"),
                    format!("\"{var}\": expected an environment variable name, e.g. \"HOME\""),
                ));
            }
            allow_override.insert(var);
        }
        Ok(SecretsSettings {
            path: self.ssm_path("secrets.path", &path)?,
            env_file: match s.env_file {
                Some(f) => Some(self.dir_below_root("secrets.env_file", &f)?),
                None => None,
            },
            poll_interval: (!poll.is_zero()).then_some(poll),
            on_change,
            allow_override,
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
        let mount_point = self.dir_below_root(
            "efs.mount_point",
            &e.mount_point
                .unwrap_or_else(|| PathBuf::from(DEFAULT_MOUNT_POINT)),
        )?;
        Ok(EfsSettings {
            file_system_id: fs,
            access_point: e.access_point,
            mount_point,
            timeout: self.positive("efs.timeout", e.timeout, DEFAULT_MOUNT_TIMEOUT)?,
        })
    }

    fn readiness(&self, r: RawReadiness) -> Result<Option<ReadinessSettings>, ConfigError> {
        let Some(p) = r.probe else {
            return Ok(None);
        };
        let probe = parse_probe(&p).map_err(|m| self.err("readiness.probe", m))?;
        if let Some(h) = &r.launch_hook {
            self.hook_name("readiness.launch_hook", h)?;
        }
        let timeout = self.positive("readiness.timeout", r.timeout, DEFAULT_READY_TIMEOUT)?;
        Ok(Some(ReadinessSettings {
            probe,
            interval: self.positive("readiness.interval", r.interval, DEFAULT_PROBE_INTERVAL)?,
            timeout: self.at_most("readiness.timeout", timeout, MAX_READY_TIMEOUT)?,
            launch_hook: r.launch_hook,
            heartbeat_interval: self.at_most(
                "readiness.heartbeat_interval",
                self.positive(
                    "readiness.heartbeat_interval",
                    r.heartbeat_interval,
                    DEFAULT_HEARTBEAT_INTERVAL,
                )?,
                MAX_HEARTBEAT_INTERVAL,
            )?,
        }))
    }

    fn uploads(&self, u: RawUploads) -> Result<UploadsSettings, ConfigError> {
        let Some(dir) = u.dir else {
            return Err(self.err(
                "uploads.dir",
                "missing: the uploads directory, e.g. \"/mnt/efs/uploads\"",
            ));
        };
        Ok(UploadsSettings {
            dir: self.dir_below_root("uploads.dir", &dir)?,
            max_age: self.positive("uploads.max_age", u.max_age, DEFAULT_UPLOADS_MAX_AGE)?,
        })
    }
}

/// `app.listen`: an IP address and a port 1..=65535 (`0.0.0.0:3000`, `127.0.0.1:3000`,
/// `[::]:3000`). No host names: the socket is bound once, before anything resolves names.
pub fn parse_listen(l: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = l.parse().map_err(|_| {
        format!(
            "\"{l}\" is not an IP address and port; expected e.g. \"0.0.0.0:3000\" or \"[::]:3000\""
        )
    })?;
    if addr.port() == 0 {
        return Err(format!(
            "\"{l}\": port 0 is not in 1..=65535 (the load balancer needs a fixed port)"
        ));
    }
    Ok(addr)
}

/// `http://HOST:PORT/PATH` or `tcp://HOST:PORT`, HOST a name, an IPv4 address or `[IPv6]`, PORT
/// in 1..=65535, PATH printable ASCII (it goes into the request line as written).
pub fn parse_probe(p: &str) -> Result<Probe, String> {
    let bad = |why: &str| {
        format!(
            "\"{p}\": {why}; expected \"http://127.0.0.1:PORT/PATH\" or \"tcp://127.0.0.1:PORT\""
        )
    };
    let (scheme, rest) = p.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let (addr, path) = match scheme {
        "http" => match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, Some("/")),
        },
        "tcp" => (rest, None),
        other => return Err(bad(&format!("scheme \"{other}\" is not http or tcp"))),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
    };
    if !host_ok {
        return Err(bad(&format!("\"{host}\" is not a host name or address")));
    }
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(&format!("port \"{port}\" is not a number")));
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 => {}
        _ => return Err(bad(&format!("port {port} is not in 1..=65535"))),
    }
    let addr = addr.to_owned();
    match path {
        None => Ok(Probe::Tcp { addr }),
        Some(path) => {
            if !path.chars().all(|c| c.is_ascii_graphic()) {
                return Err(bad("the path must be printable ASCII without spaces"));
            }
            Ok(Probe::Http {
                addr,
                path: path.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(base: &str, userdata: Option<&str>) -> Result<Settings, ConfigError> {
        load_bytes(base, userdata.map(str::as_bytes))
    }

    fn load_bytes(base: &str, userdata: Option<&[u8]>) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, base).unwrap();
        Settings::load(&p, userdata)
    }

    #[test]
    fn test_minimal_defaults() {
        let s = load_str("[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n", None).unwrap();
        assert_eq!(s.supervise, SuperviseSettings::default());
        assert_eq!(s.lease.prefix, "/bake/leases");
        assert!(s.secrets.is_none() && s.efs.is_none() && s.readiness.is_none());
        assert_eq!(s.app.unwrap().stop_signal, Signal::SIGTERM);
    }

    #[test]
    fn test_userdata_overrides_and_merges() {
        let base = "[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\nenv = { A = \"1\", B = \"2\" }\n[supervise]\ncrash_loop_count = 3\n";
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
                load_str(
                    "[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n",
                    Some(ud)
                )
                .is_ok(),
                "{ud}"
            );
        }
    }

    #[test]
    fn test_bad_userdata_toml_names_userdata_and_key() {
        let e = load_str(
            "[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n",
            Some("[supervise]\ncrash_loop_cont = 3\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("userdata: supervise"), "{e}");
        assert!(e.contains("crash_loop_cont"), "{e}");
        let e = load_str(
            "[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n",
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
        let e = load_str(
            "[app]\ncommand = [\"x\"]\nuser = \"root\"\nstop_signal = \"SIGFOO\"\n",
            None,
        )
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
        let s = load_str("[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n", None).unwrap();
        assert!(s.logs.is_none() && s.metrics.is_none());
        let base = "[logs]\nretention_days = 14\n[logs.app]\nlog_group = \"/bake/base\"\n\
                    [[logs.files]]\npath = \"/var/log/a.log\"\nlog_group = \"g\"\nlog_stream = \"s\"\n\
                    [metrics]\npublish_interval = \"30s\"\n";
        // Userdata merges into the tables key by key; the files array is replaced as a whole.
        let ud = "[logs.app]\nlog_group = \"/bake/prod\"\n[[logs.files]]\npath = \"/var/log/b.log\"\n\
                  log_group = \"g\"\nlog_stream = \"{instance_id}/b\"\n[metrics]\nnamespace = \"Prod\"\n";
        let s = load_str(base, Some(ud)).unwrap();
        let logs = s.logs.unwrap();
        assert_eq!(logs.retention_days, 14);
        assert_eq!(logs.app.unwrap().log_group.as_str(), "/bake/prod");
        assert_eq!(logs.files.len(), 1);
        assert_eq!(logs.files[0].path, "/var/log/b.log");
        let m = s.metrics.unwrap();
        assert_eq!(m.publish_interval, Duration::from_secs(30));
        assert_eq!(m.namespace, "Prod");
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
            "[app]\ncommand = [\"x\"]\nuser = \"root\"\n",
            Some("[metrics]\nenable = true\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("userdata: metrics.enable: unknown field `enable`"),
            "{e}"
        );
    }

    const APP: &str = "[app]\ncommand = [\"/bin/true\"]\nuser = \"root\"\n";

    /// Every rule of the validation: the document (after [`APP`]), the key the error must name
    /// and a part of its message.
    #[test]
    fn test_each_rule_names_its_key() {
        let deep = format!("/{}", ["a"; 16].join("/"));
        let cases: Vec<(String, &str, &str)> = vec![
            // readiness.probe
            ("[readiness]\nprobe = \"http://127.0.0.1:99999/health\"\n".into(), "readiness.probe", "port 99999 is not in 1..=65535"),
            ("[readiness]\nprobe = \"tcp://127.0.0.1:0\"\n".into(), "readiness.probe", "port 0 is not in 1..=65535"),
            ("[readiness]\nprobe = \"tcp://127.0.0.1:http\"\n".into(), "readiness.probe", "port \"http\" is not a number"),
            ("[readiness]\nprobe = \"http://:3000/health\"\n".into(), "readiness.probe", "no host"),
            ("[readiness]\nprobe = \"http://127.0.0.1:3000/a b\"\n".into(), "readiness.probe", "printable ASCII"),
            ("[readiness]\nprobe = \"https://127.0.0.1:3000/\"\n".into(), "readiness.probe", "scheme \"https\""),
            ("[readiness]\nprobe = \"tcp://[::1:3000\"\n".into(), "readiness.probe", "is not a host name"),
            ("[readiness]\nprobe = \"tcp://127.0.0.1:3000\"\nlaunch_hook = \"\"\n".into(), "readiness.launch_hook", "not a lifecycle hook name"),
            ("[readiness]\nprobe = \"tcp://127.0.0.1:3000\"\ntimeout = \"49h\"\n".into(), "readiness.timeout", "at most \"2days\""),
            ("[readiness]\nprobe = \"tcp://127.0.0.1:3000\"\nheartbeat_interval = \"3h\"\n".into(), "readiness.heartbeat_interval", "at most \"2h\""),
            // [aws]
            ("[aws]\nendpoint_url = \"127.0.0.1:5000\"\n".into(), "aws.endpoint_url", "it needs the scheme"),
            ("[aws]\nendpoint_url = \"http://\"\n".into(), "aws.endpoint_url", "is not a URL"),
            ("[aws]\nregion = \"\"\n".into(), "aws.region", "not a region name"),
            ("[aws]\nregion = \"EU West 1\"\n".into(), "aws.region", "not a region name"),
            ("[aws]\nprofile = \"\"\n".into(), "aws.profile", "must not be empty"),
            // names
            ("[identity]\nasg_name = \"\"\n".into(), "identity.asg_name", "not an Auto Scaling group name"),
            ("[lifecycle]\nterminate_hook = \"drain me\"\n".into(), "lifecycle.terminate_hook", "not a lifecycle hook name"),
            ("[lifecycle]\npoll_interval = \"5m\"\n".into(), "lifecycle.poll_interval", "at most \"1m\""),
            // logs
            ("[logs.app]\nlog_group = \"/bake/my app\"\n".into(), "logs.app.log_group", "' ' is not allowed in a log group name"),
            ("[logs.app]\nlog_group = \"\"\n".into(), "logs.app.log_group", "not a valid log stream or group name"),
            (format!("[logs.app]\nlog_group = \"/{}\"\n", "g".repeat(512)), "logs.app.log_group", "not a valid"),
            ("[logs.app]\nlog_group = \"/bake\"\nstdout_stream = \"a*b\"\n".into(), "logs.app.stdout_stream", "not a valid log stream"),
            ("[[logs.files]]\npath = \"/var/log/x.log\"\nlog_group = \"g?x\"\nlog_stream = \"s\"\n".into(), "logs.files[0].log_group", "'?' is not allowed"),
            ("[[logs.files]]\npath = \"/var/log/x.log\"\nlog_group = \"g\"\nlog_stream = \"a:b\"\n".into(), "logs.files[0].log_stream", "not a valid log stream"),
            ("[logs]\nspool_max_mib = 17592186044416\n".into(), "logs.spool_max_mib", "is not in 1..=1048576"),
            ("[logs]\nspool_max_mib = 0\n".into(), "logs.spool_max_mib", "is not in 1..=1048576"),
            // paths
            ("[secrets]\npath = \"/app\"\nenv_file = \"app.env\"\n".into(), "secrets.env_file", "is not an absolute path"),
            ("[secrets]\npath = \"/app\"\nenv_file = \"/run/../etc/app.env\"\n".into(), "secrets.env_file", "\"..\" is not allowed"),
            ("[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"/mnt/../etc\"\n".into(), "efs.mount_point", "\"..\" is not allowed"),
            ("[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"mnt/efs\"\n".into(), "efs.mount_point", "is not an absolute path"),
            ("[efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"/\"\n".into(), "efs.mount_point", "must not be \"/\""),
            ("[efs]\nfile_system_id = \"fs-0a\"\ntimeout = \"0s\"\n".into(), "efs.timeout", "greater than zero"),
            ("[secrets]\npath = \"/app/../prod\"\n".into(), "secrets.path", "\"..\" levels"),
            ("[secrets]\npath = \"/app//prod\"\n".into(), "secrets.path", "empty"),
            ("[secrets]\npath = \"/aws/app\"\n".into(), "secrets.path", "reserved by SSM"),
            (format!("[secrets]\npath = \"{deep}\"\n"), "secrets.path", "at most 15 levels"),
            ("[lease]\nprefix = \"/bake/../leases\"\n".into(), "lease.prefix", "\"..\" levels"),
            ("[secrets]\npath = \"/app\"\npoll_interval = \"1ns\"\n".into(), "secrets.poll_interval", "at least \"1s\""),
            ("[secrets]\npath = \"/app\"\npoll_interval = \"2days\"\n".into(), "secrets.poll_interval", "at most \"1day\""),
            // durations that would overflow the clock arithmetic they feed
            ("[supervise]\ncrash_loop_window = \"500000000000y\"\n".into(), "supervise.crash_loop_window", "at most \"1year"),
            ("[supervise]\nbackoff_max = \"400d\"\n".into(), "supervise.backoff_max", "is too long"),
            // [uploads]
            ("[uploads]\nmax_age = \"13d\"\n".into(), "uploads.dir", "missing"),
            ("[uploads]\ndir = \"uploads\"\n".into(), "uploads.dir", "is not an absolute path"),
            ("[uploads]\ndir = \"/mnt/efs/../uploads\"\n".into(), "uploads.dir", "\"..\" is not allowed"),
            ("[uploads]\ndir = \"/mnt/efs/uploads\"\nmax_age = \"0s\"\n".into(), "uploads.max_age", "greater than zero"),
            ("[efs]\nfile_system_id = \"fs-0a\"\n[uploads]\ndir = \"/mnt/uploads\"\n".into(), "uploads.dir", "is not below efs.mount_point \"/mnt/efs\""),
            ("[efs]\nfile_system_id = \"fs-0a\"\n[uploads]\ndir = \"/mnt/efs\"\n".into(), "uploads.dir", "is not below efs.mount_point"),
        ];
        for (doc, key, message) in &cases {
            let e = load_str(&format!("{APP}{doc}"), None)
                .err()
                .unwrap_or_else(|| panic!("accepted:\n{doc}"))
                .to_string();
            assert!(
                e.contains(&format!(": {key}: ")),
                "{doc}\n→ {e}\n(expected key {key})"
            );
            assert!(e.contains(message), "{doc}\n→ {e}\n(expected {message:?})");
        }

        // [app] itself.
        let app_cases: Vec<(&str, &str, &str)> = vec![
            ("[app]\ncommand = [\"/bin/true\"]\n", "app.user", "missing: the user the app runs as"),
            ("[app]\ncommand = [\"/bin/true\", \"a\\u0000b\"]\nuser = \"app\"\n", "app.command[1]", "contains a NUL character"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nenv = { A = \"x\\u0000\" }\n", "app.env.A", "contains a NUL character"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"\"\n", "app.user", "must not be empty"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"a:b\"\n", "app.user", "not a user or group name"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\ngroup = \"\"\n", "app.group", "must not be empty"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nworking_dir = \"opt/app\"\n", "app.working_dir", "is not an absolute path"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nworking_dir = \"/opt/../etc\"\n", "app.working_dir", "\"..\" is not allowed"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nstop_timeout = \"121s\"\n", "app.stop_timeout", "at most \"2m\""),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nstop_timeout = \"500000000000y\"\n", "app.stop_timeout", "is too long"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nport = 0\n", "app.port", "0 is not in 1..=65535"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nport = 65536\n", "app.port", "65536 is not in 1..=65535"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nport = -1\n", "app.port", "-1 is not in 1..=65535"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nport = 3000\nenv = { PORT = \"8080\" }\n", "app.env.PORT", "differs from app.port (\"3000\")"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nenv = { UPLOADS_DIR = \"/mnt/uploads\" }\n[uploads]\ndir = \"/mnt/efs/uploads\"\n", "app.env.UPLOADS_DIR", "differs from uploads.dir (\"/mnt/efs/uploads\")"),
            ("[app]\nuser = \"app\"\nport = 3000\n", "app.command", "missing"),
            // app.listen (socket activation)
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"localhost:3000\"\n", "app.listen", "\"localhost:3000\" is not an IP address and port"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"3000\"\n", "app.listen", "is not an IP address and port"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"::1:3000\"\n", "app.listen", "expected e.g. \"0.0.0.0:3000\" or \"[::]:3000\""),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:0\"\n", "app.listen", "port 0 is not in 1..=65535"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:70000\"\n", "app.listen", "is not an IP address and port"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:3000\"\nport = 8080\n", "app.port", "8080 differs from the port of app.listen (\"0.0.0.0:3000\")"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:3000\"\nenv = { LISTEN_FDS = \"2\" }\n", "app.env.LISTEN_FDS", "set by the agent for app.listen"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:3000\"\nenv = { LISTEN_PID = \"1\" }\n", "app.env.LISTEN_PID", "set by the agent for app.listen"),
            ("[app]\ncommand = [\"/bin/true\"]\nuser = \"app\"\nlisten = \"0.0.0.0:3000\"\nenv = { PORT = \"8080\" }\n", "app.env.PORT", "differs from app.port (\"3000\")"),
            ("[app]\nuser = \"app\"\nlisten = \"0.0.0.0:3000\"\n", "app.command", "missing"),
            // serde would take an array for the table, field by field: refused, at any length.
            ("app = [[\"/bin/true\"], \"root\", \"root\", \"/\", {}, \"SIGTERM\", \"10s\", 3000, \"0.0.0.0:3000\"]\n", "app", "must be a table"),
            ("app = [[\"/bin/true\"], \"root\", \"root\", \"/\", {}, \"SIGTERM\", \"10s\", 3000]\n", "app", ""),
            ("app = [[\"/bin/true\"], \"root\", \"root\", \"/\", {}, \"SIGTERM\", \"10s\"]\n", "app", ""),
            ("[logs]\napp = [\"g\", \"a\", \"b\", \"c\", \"%Y\"]\n", "logs.app", ""),
            ("[logs]\nfiles = [[\"/x.log\", \"g\", \"s\", 7, \"x\", \"%Y\"]]\n", "logs.files[0]", ""),
        ];
        for (doc, key, message) in &app_cases {
            let e = load_str(doc, None)
                .err()
                .unwrap_or_else(|| panic!("accepted:\n{doc}"))
                .to_string();
            assert!(
                e.contains(&format!(": {key}")),
                "{doc}\n→ {e}\n(expected key {key})"
            );
            assert!(e.contains(message), "{doc}\n→ {e}\n(expected {message:?})");
        }
    }

    #[test]
    fn test_sections_are_tables_at_every_level() {
        for (doc, key) in [
            ("app = [1]\n", "app"),
            ("logs = { app = [\"g\"] }\n", "logs.app"),
            (
                "logs = { files = [{ path = \"/x\" }, [\"/y\"]] }\n",
                "logs.files[1]",
            ),
        ] {
            let table: toml::Table = toml::from_str(doc).unwrap();
            let e = sections_are_tables(&Origin::Userdata, &table)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("userdata: {key}: must be a table (a [section] or {{ key = value, … }}), not an array"),
            );
        }
        let table: toml::Table =
            toml::from_str("[logs]\napp = { log_group = \"g\" }\n[[logs.files]]\npath = \"/x\"\n")
                .unwrap();
        assert!(sections_are_tables(&Origin::Userdata, &table).is_ok());
    }

    #[test]
    fn test_accepted_values_at_the_bounds() {
        let s = load_str(
            &format!(
                "{APP}port = 65535\nstop_timeout = \"2m\"\nworking_dir = \"/opt/./app/\"\n\
                 [readiness]\nprobe = \"tcp://[::1]:1\"\ntimeout = \"48h\"\n\
                 [secrets]\npath = \"/app/prod/\"\npoll_interval = \"1s\"\n\
                 [logs]\nspool_max_mib = 1048576\n[logs.app]\nlog_group = \"/bake/app#1_x-y.z\"\n\
                 [efs]\nfile_system_id = \"fs-0a\"\nmount_point = \"/mnt/efs/\"\n"
            ),
            None,
        )
        .unwrap();
        let app = s.app.unwrap();
        assert_eq!(app.port, Some(65535));
        assert_eq!(app.stop_timeout, MAX_STOP_TIMEOUT);
        assert_eq!(app.working_dir, PathBuf::from("/opt/app"));
        assert_eq!(s.secrets.unwrap().poll_interval, Some(MIN_SECRETS_POLL));
        assert_eq!(s.efs.unwrap().mount_point, PathBuf::from("/mnt/efs"));
        assert_eq!(
            s.readiness.unwrap().probe,
            Probe::Tcp {
                addr: "[::1]:1".into()
            }
        );
    }

    #[test]
    fn test_port_and_uploads_reach_the_app_environment() {
        let s = load_str(
            &format!(
                "{APP}port = 3000\nenv = {{ PORT = \"3000\", A = \"1\" }}\n\
                 [uploads]\ndir = \"/mnt/efs/uploads\"\n"
            ),
            None,
        )
        .unwrap();
        let app = s.app.as_ref().unwrap();
        assert_eq!(app.env["PORT"], "3000");
        assert_eq!(app.env["UPLOADS_DIR"], "/mnt/efs/uploads");
        assert_eq!(app.env["A"], "1");
        let u = s.uploads.unwrap();
        assert_eq!(u.max_age, DEFAULT_UPLOADS_MAX_AGE);
        assert_eq!(u.max_age, Duration::from_secs(13 * 86_400));
        // Without them, neither variable is invented.
        let s = load_str(APP, None).unwrap();
        let env = &s.app.as_ref().unwrap().env;
        assert!(!env.contains_key("PORT") && !env.contains_key("UPLOADS_DIR"));
        assert!(s.uploads.is_none());
    }

    #[test]
    fn test_listen_gives_the_port_and_no_env_of_its_own() {
        for (doc, addr) in [
            ("listen = \"0.0.0.0:3000\"\n", "0.0.0.0:3000"),
            ("listen = \"[::]:3000\"\nport = 3000\n", "[::]:3000"),
            ("listen = \"127.0.0.1:3000\"\n", "127.0.0.1:3000"),
        ] {
            let s = load_str(&format!("{APP}{doc}"), None).unwrap();
            let app = s.app.unwrap();
            assert_eq!(app.listen, Some(addr.parse().unwrap()), "{doc}");
            // The port is the listen port: PORT for the app, and what the firewall opens.
            assert_eq!(app.port, Some(3000), "{doc}");
            assert_eq!(app.env["PORT"], "3000", "{doc}");
            // LISTEN_* are set per start by the spawner, never in app.env.
            assert!(!app.env.keys().any(|k| k.starts_with("LISTEN_")), "{doc}");
        }
        assert_eq!(load_str(APP, None).unwrap().app.unwrap().listen, None);
    }

    #[test]
    fn test_check_and_run_share_the_app_requirement() {
        let e = load_str("[identity]\nstandalone = true\n", None)
            .unwrap()
            .app_for_run()
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml: app.command: missing"), "{e}");
        assert!(load_str(APP, None).unwrap().app_for_run().is_ok());
    }

    /// The arithmetic of [`MAX_STOP_TIMEOUT`], against the unit that ships.
    #[test]
    fn test_max_stop_timeout_fits_the_units_stop_timeout() {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/bake-agent.service"),
        )
        .unwrap();
        let value = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .expect("TimeoutStopSec= in bake-agent.service");
        let stop = bake_common::duration::parse("TimeoutStopSec", value).unwrap();
        let metrics_last_interval = Duration::from_secs(5);
        let terminate_hook = Duration::from_secs(40);
        let drain = MAX_STOP_TIMEOUT
            + crate::daemon::PIPES_DEADLINE
            + crate::daemon::LOG_FLUSH_DEADLINE
            + metrics_last_interval
            + terminate_hook;
        assert!(drain <= stop, "{drain:?} > TimeoutStopSec={stop:?}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn test_userdata_bytes() {
        let toml = b"[supervise]\ncrash_loop_count = 3\n";
        assert_eq!(
            classify_userdata(&gzip(toml)).unwrap(),
            Userdata::Toml {
                text: String::from_utf8(toml.to_vec()).unwrap(),
                gzip: true
            }
        );
        let s = load_bytes(APP, Some(&gzip(toml))).unwrap();
        assert_eq!(s.supervise.crash_loop_count, 3);
        assert_eq!(s.origin.rsplit(' ').next(), Some("userdata"));
        assert_eq!(
            classify_userdata(&gzip(b"#!/bin/bash\necho hi\n")).unwrap(),
            Userdata::Ignored("a script (#!)")
        );
        let junk: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
        assert_eq!(
            classify_userdata(&junk).unwrap(),
            Userdata::Ignored("not UTF-8 text (binary)")
        );
        assert!(load_bytes(APP, Some(&junk)).is_ok());
        assert_eq!(
            classify_userdata(&gzip(&junk)).unwrap(),
            Userdata::Ignored("not UTF-8 text (binary)")
        );
        // A byte order mark is not part of the document.
        assert!(matches!(
            classify_userdata(b"\xef\xbb\xbf[app]\n").unwrap(),
            Userdata::Toml { .. }
        ));
        // Gzip that does not decompress is an error: it was meant as something.
        let mut broken = gzip(toml);
        broken.truncate(12);
        let e = load_bytes(APP, Some(&broken)).unwrap_err().to_string();
        assert!(
            e.starts_with("userdata: .: gzip data that does not decompress"),
            "{e}"
        );
        // A gzip bomb is not read beyond the limit.
        let big = gzip(&vec![b'#'; MAX_USERDATA_BYTES + 1]);
        assert_eq!(
            classify_userdata(&big).unwrap(),
            Userdata::Ignored("gzip larger than 1 MiB decompressed")
        );
    }
}
