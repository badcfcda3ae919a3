//! `bake.toml`: raw (every field optional, unknown keys rejected) → [`Settings`] (validated).
//!
//! Relative paths in the file are relative to the directory of the file. Every error names the
//! file and the dotted key path, e.g. `bake.toml: refresh.instance_warmup: "5x" is not a duration`.
//! The schema with defaults is documented in `docs/bake.md` and `examples/bake.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bake_common::aws::AwsSettings;
use serde::Deserialize;

/// Default lower bound of healthy capacity during a refresh, in percent (AWS's default).
pub const DEFAULT_MIN_HEALTHY_PERCENTAGE: i32 = 90;
/// Default poll interval while watching a refresh (the first; it backs off from there).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default longest poll interval while watching a refresh.
pub const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// Default time `bake release` waits for a refresh before giving up watching (exit 8).
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Default number of AMIs `bake prune` keeps.
pub const DEFAULT_PRUNE_KEEP: u32 = 5;
/// Longest `refresh.timeout`, `--timeout` and `packer.timeout` (30 days): a deadline is an
/// `Instant` plus the timeout, and nothing bake waits for takes longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
/// Longest `refresh.poll_interval` and `refresh.max_poll_interval` (1 hour).
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest `refresh.checkpoint_delay` and `refresh.bake_time`: AWS's 172800 seconds (2 days).
pub const MAX_REFRESH_DELAY: Duration = Duration::from_secs(172_800);
/// Longest `refresh.instance_warmup`: AWS takes an int32 of seconds.
pub const MAX_INSTANCE_WARMUP: Duration = Duration::from_secs(i32::MAX as u64);

/// A bad `bake.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file name.
        file: String,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file name.
        file: String,
        /// The dotted key path.
        key: String,
        /// What was expected.
        message: String,
    },
}

/// `bake.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[aws]`: region, profile, endpoint_url, max_attempts.
    pub aws: Option<AwsSettings>,
    /// `[target]`: what to release to.
    pub target: Option<RawTarget>,
    /// `[packer]`: how to build the AMI.
    pub packer: Option<RawPacker>,
    /// `[app]`: the application release baked in.
    pub app: Option<RawApp>,
    /// `[refresh]`: instance refresh preferences.
    pub refresh: Option<RawRefresh>,
    /// `[prune]`: AMI retention.
    pub prune: Option<RawPrune>,
    /// `[canary]`: judge the new release at a checkpoint before the rest of the fleet.
    pub canary: Option<RawCanary>,
    /// `[image_test]`: boot-test an image on one instance outside the group before a release.
    pub image_test: Option<RawImageTest>,
    /// `[migrate]`: run the release's migration once, from the new image, before the refresh.
    pub migrate: Option<RawMigrate>,
    /// `[release]`: the environment this file releases to, and where its images must come from.
    pub release: Option<RawRelease>,
    /// `[promote]`: how `bake promote` copies images to other regions.
    pub promote: Option<RawPromote>,
    /// `[sbom]`: where `bake build` stores each image's SBOM.
    pub sbom: Option<RawSbom>,
}

/// `[release]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    /// The name of the environment (stage) this file releases to.
    pub stage: Option<String>,
    /// `bake release` refuses an image not promoted from this stage.
    pub require_promoted_from: Option<String>,
}

/// `[sbom]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSbom {
    /// The artifacts bucket.
    pub bucket: Option<String>,
    /// The key prefix in it.
    pub prefix: Option<String>,
}

/// `[promote]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromote {
    /// The KMS key the copies are encrypted with.
    pub kms_key: Option<String>,
    /// How long a copy may take to become available.
    pub timeout: Option<String>,
}

/// `[migrate]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigrate {
    /// Where the migration instance writes the migration's log and result (an SSM path).
    pub parameter_prefix: Option<String>,
    /// How long a migration may take, launch to result.
    pub timeout: Option<String>,
}

/// `[image_test]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImageTest {
    /// `bake release` refuses an image not tagged `bake:tested=pass` (default true).
    pub required: Option<bool>,
    /// Where the test instance writes its report (an SSM parameter path).
    pub parameter_prefix: Option<String>,
    /// How long a test may take, launch to report.
    pub timeout: Option<String>,
}

/// `[canary]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    /// Percentage of the group replaced when the refresh holds for the verdict.
    pub checkpoint: Option<i64>,
    /// How long both releases are observed.
    pub window: Option<String>,
    /// How long after the window its metrics are read.
    pub settle: Option<String>,
    /// The held refresh's checkpoint delay.
    pub hold: Option<String>,
    /// Namespace of the app's request metrics.
    pub namespace: Option<String>,
    /// Request count metric.
    pub requests_metric: Option<String>,
    /// 5xx count metric.
    pub errors_metric: Option<String>,
    /// Latency metric.
    pub latency_metric: Option<String>,
    /// Fewer requests of either release in the window: inconclusive.
    pub min_requests: Option<i64>,
    /// Highest 5xx rate of the new release (0–1).
    pub max_error_rate: Option<f64>,
    /// Largest p50/p90 latency increase (0.5 = 50 %).
    pub max_latency_increase: Option<f64>,
    /// Significance level of the tests.
    pub significance: Option<f64>,
    /// `rollback` (default) or `continue`.
    pub on_inconclusive: Option<String>,
}

/// `[target]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// CloudFormation stack whose outputs name the targets.
    pub stack: Option<String>,
    /// Auto Scaling Group name.
    pub auto_scaling_group: Option<String>,
    /// Launch template id (`lt-…`) or name.
    pub launch_template: Option<String>,
    /// SSM parameter set to the image after a successful refresh.
    pub image_parameter: Option<String>,
}

/// `[packer]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPacker {
    /// Template directory or single `.pkr.hcl` file.
    pub template: Option<PathBuf>,
    /// The `packer` executable.
    pub binary: Option<PathBuf>,
    /// The agent binary baked in.
    pub agent_binary: Option<PathBuf>,
    /// More `-var` values.
    pub variables: Option<BTreeMap<String, toml::Value>>,
    /// Longest time a build may take.
    pub timeout: Option<String>,
    /// What to build: `ami` (default) or `local` (a root file system and its AMI record).
    pub target: Option<String>,
    /// The local target's work dir (images, debootstrap cache); default `.work`.
    pub work_dir: Option<PathBuf>,
    /// `InRelease` URLs of the archives the image installs from: their state is an input.
    pub package_indexes: Option<Vec<String>>,
}

/// `[app]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// What the template installs (`app_release` variable): a version, URL or path.
    pub release: Option<String>,
    /// Version tagged on the AMI as `bake:app-version`.
    pub version: Option<String>,
}

/// `[refresh]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    /// Percent of desired capacity that must stay healthy.
    pub min_healthy_percentage: Option<i64>,
    /// Percent of desired capacity the group may grow to while replacing.
    pub max_healthy_percentage: Option<i64>,
    /// Time a new instance needs before it counts.
    pub instance_warmup: Option<String>,
    /// Percentages at which the refresh pauses.
    pub checkpoint_percentages: Option<Vec<i64>>,
    /// Pause at each checkpoint.
    pub checkpoint_delay: Option<String>,
    /// Skip instances already on the desired configuration.
    pub skip_matching: Option<bool>,
    /// Let AWS roll back a failed refresh.
    pub auto_rollback: Option<bool>,
    /// CloudWatch alarms that fail the refresh.
    pub alarms: Option<Vec<String>>,
    /// Time to wait after the last replacement before `Successful`.
    pub bake_time: Option<String>,
    /// Longest time `bake release` watches.
    pub timeout: Option<String>,
    /// Accept a last checkpoint below 100 (the refresh then ends with part of the fleet on the
    /// previous version).
    pub partial: Option<bool>,
    /// First poll interval.
    pub poll_interval: Option<String>,
    /// Longest poll interval.
    pub max_poll_interval: Option<String>,
}

/// Default of `prune.disable_after` and `prune.deregister_after`.
pub const DEFAULT_PRUNE_STAGE_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The delays between the stages (`[prune]`; [`crate::prune`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneStages {
    /// From deprecation to disabling.
    pub disable_after: Duration,
    /// From disabling to deregistration.
    pub deregister_after: Duration,
}

impl Default for PruneStages {
    fn default() -> Self {
        Self {
            disable_after: DEFAULT_PRUNE_STAGE_DELAY,
            deregister_after: DEFAULT_PRUNE_STAGE_DELAY,
        }
    }
}

/// `[prune]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrune {
    /// Newest bake-made AMIs to keep.
    pub keep: Option<i64>,
    /// From an AMI's deprecation to its disabling.
    pub disable_after: Option<String>,
    /// From an AMI's disabling to its deregistration.
    pub deregister_after: Option<String>,
}

/// Where releases go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Names given in `bake.toml`.
    Direct {
        /// Auto Scaling Group name.
        auto_scaling_group: String,
        /// Launch template id or name; `None`: the group's own.
        launch_template: Option<String>,
    },
    /// Read from a CloudFormation stack's outputs `AutoScalingGroupName` and `LaunchTemplateId`.
    Stack(String),
}

/// `[packer]`, validated.
#[derive(Clone, Debug)]
pub struct PackerSettings {
    /// Template directory or file (absolute).
    pub template: PathBuf,
    /// The `packer` executable (default `packer` on `PATH`).
    pub binary: PathBuf,
    /// The agent binary (absolute), hashed and passed as `agent_binary`.
    pub agent_binary: Option<PathBuf>,
    /// Extra variables, as strings.
    pub variables: BTreeMap<String, String>,
    /// Longest build.
    pub timeout: Option<Duration>,
    /// What `bake build` makes (`packer.target`).
    pub target: crate::local_image::Target,
    /// The local target's work dir (absolute; default `.work` next to bake.toml).
    pub work_dir: PathBuf,
    /// `InRelease` URLs whose digests are inputs of the image ([`crate::package_index`]).
    pub package_indexes: Vec<String>,
}

/// `[refresh]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshSettings {
    /// Percent, 0–100. Default 90.
    pub min_healthy_percentage: i32,
    /// Percent, 100–200. Default: AWS's (unset).
    pub max_healthy_percentage: Option<i32>,
    /// Default: the group's own warm-up.
    pub instance_warmup: Option<Duration>,
    /// Ascending, 1–100; the last is 100 unless `partial`.
    pub checkpoint_percentages: Vec<i32>,
    /// Default false: a last checkpoint below 100 is refused. True: it is accepted, and a refresh
    /// that ends `Successful` at that checkpoint is reported `partial` (exit 10).
    pub partial: bool,
    /// Default: AWS's (1 h when checkpoints are set).
    pub checkpoint_delay: Option<Duration>,
    /// Default true.
    pub skip_matching: bool,
    /// Default true.
    pub auto_rollback: bool,
    /// Default none.
    pub alarms: Vec<String>,
    /// Default: none.
    pub bake_time: Option<Duration>,
    /// Default 2 h.
    pub timeout: Duration,
    /// Default 5 s.
    pub poll_interval: Duration,
    /// Default 15 s ([`DEFAULT_MAX_POLL_INTERVAL`]), or `poll_interval` when that is longer.
    pub max_poll_interval: Duration,
}

/// `bake.toml`, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file it came from.
    pub path: PathBuf,
    /// AWS overrides.
    pub aws: AwsSettings,
    /// Where releases go; `None` when the file has no `[target]` (build/validate need none).
    pub target: Option<Target>,
    /// How to build; `None` when the file has no `[packer]` (release then needs `--ami`).
    pub packer: Option<PackerSettings>,
    /// `app_release` variable.
    pub app_release: Option<String>,
    /// `bake:app-version` tag.
    pub app_version: Option<String>,
    /// Refresh preferences.
    pub refresh: RefreshSettings,
    /// Default of `bake prune --keep`.
    pub prune_keep: u32,
    /// `prune.disable_after`, `prune.deregister_after`: the delays between the stages of an AMI's
    /// retirement ([`crate::prune`]).
    pub prune_stages: PruneStages,
    /// `target.image_parameter`: the SSM parameter `bake release` and `bake rollback` set to the
    /// image once its refresh ended `Successful` ([`crate::image_parameter`]); `None`: none is
    /// written.
    pub image_parameter: Option<String>,
    /// `[canary]`: `None` when the file has none (no verdict, one refresh).
    pub canary: Option<crate::canary::CanarySettings>,
    /// `[image_test]`, with its defaults when the file has none.
    pub image_test: ImageTestSettings,
    /// `[migrate]`: `None` when the file has none (a release runs no migration).
    pub migrate: Option<MigrateSettings>,
    /// `[release]`, with its defaults when the file has none.
    pub release: ReleaseSettings,
    /// `[promote]`, with its defaults when the file has none.
    pub promote: PromoteSettings,
    /// `[sbom]`; `None` without a bucket: SBOMs are not stored.
    pub sbom: Option<SbomSettings>,
}

/// `[release]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseSettings {
    /// `release.stage`: the environment this file releases to (`staging`, `prod`), recorded by
    /// `bake promote` as the stage its images come from (`bake:promoted-stage`). Default none.
    pub stage: Option<String>,
    /// `release.require_promoted_from`: `bake release` refuses an image whose
    /// `bake:promoted-stage` tag is not this stage (an image never promoted too), exit
    /// [`crate::exit::Exit::NotPromoted`]. Default none: any image.
    pub require_promoted_from: Option<String>,
}

/// `[sbom]`, validated ([`crate::sbom`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbomSettings {
    /// `sbom.bucket`: the S3 bucket (data.yaml's `ArtifactsBucket` output).
    pub bucket: String,
    /// `sbom.prefix`: key prefix, ending in `/` (default `sbom/`); the key is
    /// `PREFIX<AMI id>.cdx.json`.
    pub prefix: String,
}

/// Default of `sbom.prefix` (iam.yaml grants the release role this prefix only).
pub const DEFAULT_SBOM_PREFIX: &str = "sbom/";

/// `[promote]`, validated ([`crate::promote`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromoteSettings {
    /// `promote.kms_key`: the KMS key (id, alias or ARN) of the copies' snapshots; `--kms-key`
    /// wins. Default none: each destination region's default EBS key (`aws/ebs`).
    pub kms_key: Option<String>,
    /// `promote.timeout`: longest wait for one copy to become available; `--timeout` wins.
    /// Default [`DEFAULT_PROMOTE_TIMEOUT`].
    pub timeout: Duration,
}

/// Default of `promote.timeout`: AWS copies an AMI's snapshots across regions in minutes to
/// tens of minutes for a small root volume.
pub const DEFAULT_PROMOTE_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for PromoteSettings {
    fn default() -> Self {
        Self {
            kms_key: None,
            timeout: DEFAULT_PROMOTE_TIMEOUT,
        }
    }
}

/// `[migrate]`, validated ([`crate::migrate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateSettings {
    /// The SSM path under which the migration instance writes the migration's log and result
    /// (`<prefix>/<ami>/<timestamp>/…`). Required.
    pub parameter_prefix: String,
    /// Longest migration, launch to result. Default [`DEFAULT_MIGRATE_TIMEOUT`].
    pub timeout: Duration,
}

/// Default of `migrate.timeout`: a boot, the agent's secrets, and the migration itself.
pub const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `[image_test]`, validated ([`crate::image_test`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTestSettings {
    /// `bake release` refuses an image that is not tagged `bake:tested=pass` unless
    /// `--untested` is given. Default true.
    pub required: bool,
    /// The SSM path under which a test instance writes its report
    /// (`<prefix>/<ami>/<timestamp>`); `None`: `bake test-image` and `--test` refuse to run.
    pub parameter_prefix: Option<String>,
    /// Longest test, launch to report. Default [`DEFAULT_IMAGE_TEST_TIMEOUT`].
    pub timeout: Duration,
}

/// Default of `image_test.timeout`: a boot, the agent's readiness (its own timeout is 10
/// minutes in the fleet) and the checks.
pub const DEFAULT_IMAGE_TEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl Default for ImageTestSettings {
    fn default() -> Self {
        Self {
            required: true,
            parameter_prefix: None,
            timeout: DEFAULT_IMAGE_TEST_TIMEOUT,
        }
    }
}

impl Settings {
    /// `image_test.parameter_prefix`, or an error naming it (`bake test-image`, `--test`).
    pub fn image_test_prefix(&self) -> Result<&str, ConfigError> {
        self.image_test
            .parameter_prefix
            .as_deref()
            .ok_or_else(|| ConfigError::Invalid {
                file: self.path.display().to_string(),
                key: "image_test.parameter_prefix".into(),
                message: "missing: a boot test needs the SSM path its instance reports under, \
                          e.g. \"/bake/prod/image-tests\" (iam.yaml lets the instance role write there)"
                    .into(),
            })
    }
}

impl Settings {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Self::parse(&text, path, &base)
    }

    /// Parses `text` (the content of `path`), resolving relative paths against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Validator { file, base }.settings(raw, path)
    }

    /// The `[packer]` section, or an error naming it.
    pub fn packer(&self) -> Result<&PackerSettings, ConfigError> {
        self.packer.as_ref().ok_or_else(|| ConfigError::Invalid {
            file: self.path.display().to_string(),
            key: "packer".into(),
            message: "missing: building an AMI needs [packer] template = \"…\"".into(),
        })
    }

    /// The `[target]` section, or an error naming it.
    pub fn target(&self) -> Result<&Target, ConfigError> {
        self.target.as_ref().ok_or_else(|| ConfigError::Invalid {
            file: self.path.display().to_string(),
            key: "target".into(),
            message: "missing: set target.stack or target.auto_scaling_group".into(),
        })
    }
}

/// Checks a duration against its bounds: more than 0 (unless `allow_zero`) and at most `max`.
/// The message follows the key's name in an error (`--timeout` uses it too).
pub fn check_duration(d: Duration, allow_zero: bool, max: Duration) -> Result<(), String> {
    if d.is_zero() && !allow_zero {
        return Err("must be more than 0s".to_owned());
    }
    if d > max {
        return Err(format!(
            "{} is longer than the maximum, {}",
            humantime::format_duration(d),
            humantime::format_duration(max)
        ));
    }
    Ok(())
}

/// An S3 bucket name as AWS allows it: 3–63 of lowercase letters, digits, `.` and `-`,
/// beginning and ending with a letter or digit.
fn check_bucket(b: &str) -> Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len())
        || !ok_chars
        || !ends(b.bytes().next())
        || !ends(b.bytes().last())
    {
        return Err(format!(
            "{b:?} is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// A stage name (`--from-stage`, `release.stage`, `release.require_promoted_from`): 1–64 of
/// `A-Za-z0-9._-`, as a tag value and a word in a sentence.
pub fn check_stage(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
        return Err(format!(
            "{s:?} is not a stage name: 1 to 64 letters, digits, '.', '_' or '-' (e.g. \"staging\")"
        ));
    }
    Ok(())
}

/// A KMS key as CopyImage takes it ("key ID, key alias, key ARN or alias ARN").
pub fn check_kms_key(k: &str) -> Result<(), String> {
    let arn_ok = |rest: &str| {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        parts.len() == 5
            && parts[1] == "kms"
            && (parts[4].starts_with("key/") || parts[4].starts_with("alias/"))
    };
    let ok = match k.strip_prefix("arn:") {
        Some(rest) => arn_ok(rest),
        None => !k.contains(char::is_whitespace) && !k.contains(':'),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a KMS key: a key id, alias/NAME, or a key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
        ))
    }
}

struct Validator<'a> {
    file: String,
    base: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn duration(&self, key: &str, v: Option<String>) -> Result<Option<Duration>, ConfigError> {
        v.map(|s| {
            bake_common::duration::parse(key, &s).map_err(|e| ConfigError::Invalid {
                file: self.file.clone(),
                key: key.into(),
                message: e
                    .to_string()
                    .trim_start_matches(&format!("{key}: "))
                    .to_owned(),
            })
        })
        .transpose()
    }

    /// A duration that must be more than 0 and at most `max`.
    fn bounded(
        &self,
        key: &str,
        v: Option<String>,
        allow_zero: bool,
        max: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let d = self.duration(key, v)?;
        if let Some(d) = d {
            check_duration(d, allow_zero, max).map_err(|m| self.invalid(key, m))?;
        }
        Ok(d)
    }

    fn percent(&self, key: &str, v: i64, lo: i64, hi: i64) -> Result<i32, ConfigError> {
        if (lo..=hi).contains(&v) {
            i32::try_from(v).map_err(|_| self.invalid(key, "out of range"))
        } else {
            Err(self.invalid(
                key,
                format!("{v} is not a percentage between {lo} and {hi}"),
            ))
        }
    }

    fn non_empty(&self, key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be empty")),
            other => Ok(other),
        }
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn settings(&self, mut raw: RawConfig, path: &Path) -> Result<Settings, ConfigError> {
        let image_parameter = raw
            .target
            .as_mut()
            .and_then(|t| t.image_parameter.take())
            .map(|name| {
                crate::image_parameter::check_name(&name)
                    .map(|()| name)
                    .map_err(|m| self.invalid("target.image_parameter", m))
            })
            .transpose()?;
        let target = raw.target.map(|t| self.target(t)).transpose()?;
        let packer = raw.packer.map(|p| self.packer(p)).transpose()?;
        let app = raw.app.unwrap_or_default();
        let refresh = self.refresh(raw.refresh.unwrap_or_default())?;
        let canary = raw.canary.map(|c| self.canary(c, &refresh)).transpose()?;
        let image_test = self.image_test(raw.image_test.unwrap_or_default())?;
        let migrate = raw.migrate.map(|m| self.migrate(m)).transpose()?;
        let release = self.release(raw.release.unwrap_or_default())?;
        let promote = self.promote(raw.promote.unwrap_or_default())?;
        let sbom = raw.sbom.map(|s| self.sbom(s)).transpose()?.flatten();
        let raw_prune = raw.prune.unwrap_or_default();
        // At most ten years: EC2 takes no deprecation time further ahead.
        let stage_max = Duration::from_secs(10 * 365 * 24 * 3600);
        let prune_stages = PruneStages {
            disable_after: self
                .bounded(
                    "prune.disable_after",
                    raw_prune.disable_after,
                    true,
                    stage_max,
                )?
                .unwrap_or(DEFAULT_PRUNE_STAGE_DELAY),
            deregister_after: self
                .bounded(
                    "prune.deregister_after",
                    raw_prune.deregister_after,
                    true,
                    stage_max,
                )?
                .unwrap_or(DEFAULT_PRUNE_STAGE_DELAY),
        };
        let prune_keep = match raw_prune.keep {
            None => DEFAULT_PRUNE_KEEP,
            Some(k) if k >= 1 => {
                u32::try_from(k).map_err(|_| self.invalid("prune.keep", "too large"))?
            }
            Some(k) => return Err(self.invalid("prune.keep", format!("{k}: must be at least 1"))),
        };
        if let Some(aws) = &raw.aws {
            if let Some(u) = &aws.endpoint_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(
                        self.invalid("aws.endpoint_url", format!("\"{u}\" is not an http(s) URL"))
                    );
                }
            }
        }
        Ok(Settings {
            path: path.to_path_buf(),
            aws: raw.aws.unwrap_or_default(),
            target,
            packer,
            app_release: self.non_empty("app.release", app.release)?,
            app_version: self.non_empty("app.version", app.version)?,
            refresh,
            prune_keep,
            prune_stages,
            image_parameter,
            canary,
            image_test,
            migrate,
            release,
            promote,
            sbom,
        })
    }

    fn sbom(&self, s: RawSbom) -> Result<Option<SbomSettings>, ConfigError> {
        let prefix = match s.prefix {
            None => DEFAULT_SBOM_PREFIX.to_owned(),
            Some(p) if p.starts_with('/') || p.contains("//") || p.len() > 512 => {
                return Err(self.invalid(
                    "sbom.prefix",
                    format!("{p:?}: a key prefix must not start with / nor contain //"),
                ))
            }
            Some(p) if p.is_empty() || p.ends_with('/') => p,
            Some(p) => format!("{p}/"),
        };
        let Some(bucket) = s.bucket else {
            return Err(self.invalid(
                "sbom.bucket",
                "missing: the S3 bucket the SBOMs are stored in (data.yaml's ArtifactsBucket output)",
            ));
        };
        check_bucket(&bucket).map_err(|m| self.invalid("sbom.bucket", m))?;
        Ok(Some(SbomSettings { bucket, prefix }))
    }

    fn release(&self, r: RawRelease) -> Result<ReleaseSettings, ConfigError> {
        let stage = |key: &str, v: Option<String>| {
            v.map(|s| {
                check_stage(&s)
                    .map(|()| s)
                    .map_err(|m| self.invalid(key, m))
            })
            .transpose()
        };
        Ok(ReleaseSettings {
            stage: stage("release.stage", r.stage)?,
            require_promoted_from: stage("release.require_promoted_from", r.require_promoted_from)?,
        })
    }

    fn promote(&self, p: RawPromote) -> Result<PromoteSettings, ConfigError> {
        let kms_key = self.non_empty("promote.kms_key", p.kms_key)?;
        if let Some(k) = &kms_key {
            check_kms_key(k).map_err(|m| self.invalid("promote.kms_key", m))?;
        }
        Ok(PromoteSettings {
            kms_key,
            timeout: self
                .bounded("promote.timeout", p.timeout, false, MAX_TIMEOUT)?
                .unwrap_or(DEFAULT_PROMOTE_TIMEOUT),
        })
    }

    fn migrate(&self, m: RawMigrate) -> Result<MigrateSettings, ConfigError> {
        let key = "migrate.parameter_prefix";
        let parameter_prefix = match m.parameter_prefix {
            None => {
                return Err(self.invalid(
                    key,
                    "missing: a migration needs the SSM path its instance writes the log and result under, \
                     e.g. \"/bake/prod/migrations\" (iam.yaml lets the instance role write there)",
                ))
            }
            Some(p) => {
                let p = p.trim_end_matches('/').to_owned();
                crate::image_parameter::check_name(&p).map_err(|m| self.invalid(key, m))?;
                p
            }
        };
        Ok(MigrateSettings {
            parameter_prefix,
            timeout: self
                .bounded("migrate.timeout", m.timeout, false, MAX_TIMEOUT)?
                .unwrap_or(DEFAULT_MIGRATE_TIMEOUT),
        })
    }

    fn image_test(&self, t: RawImageTest) -> Result<ImageTestSettings, ConfigError> {
        let key = "image_test.parameter_prefix";
        let parameter_prefix = match t.parameter_prefix {
            None => None,
            Some(p) => {
                let p = p.trim_end_matches('/').to_owned();
                crate::image_parameter::check_name(&p).map_err(|m| self.invalid(key, m))?;
                Some(p)
            }
        };
        Ok(ImageTestSettings {
            required: t.required.unwrap_or(true),
            parameter_prefix,
            timeout: self
                .bounded("image_test.timeout", t.timeout, false, MAX_TIMEOUT)?
                .unwrap_or(DEFAULT_IMAGE_TEST_TIMEOUT),
        })
    }

    fn canary(
        &self,
        c: RawCanary,
        r: &RefreshSettings,
    ) -> Result<crate::canary::CanarySettings, ConfigError> {
        use crate::canary as k;
        let checkpoint = match c.checkpoint {
            None => k::DEFAULT_CHECKPOINT,
            Some(p) => self.percent("canary.checkpoint", p, 1, 99)?,
        };
        if !r.skip_matching {
            return Err(self.invalid(
                "canary",
                "needs refresh.skip_matching = true (after a passed verdict the refresh goes on without replacing the canary instances again)",
            ));
        }
        if !r.auto_rollback {
            return Err(self.invalid(
                "canary",
                "needs refresh.auto_rollback = true (a failed verdict rolls the canary back with RollbackInstanceRefresh)",
            ));
        }
        if r.partial {
            return Err(self.invalid("canary", "cannot be combined with refresh.partial"));
        }
        let window = self
            .bounded("canary.window", c.window, false, k::MAX_WINDOW)?
            .unwrap_or(k::DEFAULT_WINDOW);
        if window < k::MIN_WINDOW {
            return Err(self.invalid("canary.window", "must be at least 1s"));
        }
        let settle = self
            .bounded("canary.settle", c.settle, true, Duration::from_secs(3600))?
            .unwrap_or(k::DEFAULT_SETTLE);
        let hold = self
            .bounded("canary.hold", c.hold, false, MAX_REFRESH_DELAY)?
            .unwrap_or_else(|| k::DEFAULT_HOLD.max(window * 2).min(MAX_REFRESH_DELAY));
        if hold < window + settle + Duration::from_secs(60) {
            return Err(self.invalid(
                "canary.hold",
                format!(
                    "{} is shorter than canary.window + canary.settle + 1m: the refresh would go on before the verdict",
                    humantime::format_duration(hold)
                ),
            ));
        }
        let name = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
            Ok(self
                .non_empty(key, v)?
                .unwrap_or_else(|| default.to_owned()))
        };
        let namespace = name("canary.namespace", c.namespace, k::DEFAULT_NAMESPACE)?;
        if namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(self.invalid(
                "canary.namespace",
                format!("{namespace:?} is not a namespace of the app's"),
            ));
        }
        let fraction = |key: &str, v: Option<f64>, default: f64, hi: f64| match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 && x <= hi => Ok(x),
            Some(x) => Err(self.invalid(key, format!("{x}: must be more than 0 and at most {hi}"))),
        };
        Ok(k::CanarySettings {
            checkpoint,
            window,
            settle,
            hold,
            namespace,
            requests_metric: name("canary.requests_metric", c.requests_metric, "Requests")?,
            errors_metric: name("canary.errors_metric", c.errors_metric, "Errors5xx")?,
            latency_metric: name("canary.latency_metric", c.latency_metric, "Latency")?,
            min_requests: match c.min_requests {
                None => k::DEFAULT_MIN_REQUESTS,
                Some(n) if n >= 1 => n.unsigned_abs(),
                Some(n) => {
                    return Err(
                        self.invalid("canary.min_requests", format!("{n}: must be at least 1"))
                    )
                }
            },
            max_error_rate: fraction(
                "canary.max_error_rate",
                c.max_error_rate,
                k::DEFAULT_MAX_ERROR_RATE,
                1.0,
            )?,
            max_latency_increase: fraction(
                "canary.max_latency_increase",
                c.max_latency_increase,
                k::DEFAULT_MAX_LATENCY_INCREASE,
                100.0,
            )?,
            significance: fraction(
                "canary.significance",
                c.significance,
                k::DEFAULT_SIGNIFICANCE,
                0.5,
            )?,
            on_inconclusive: match c.on_inconclusive.as_deref() {
                None | Some("rollback") => k::OnInconclusive::Rollback,
                Some("continue") => k::OnInconclusive::Continue,
                Some(o) => {
                    return Err(self.invalid(
                        "canary.on_inconclusive",
                        format!("\"{o}\": must be \"rollback\" or \"continue\""),
                    ))
                }
            },
        })
    }

    fn target(&self, t: RawTarget) -> Result<Target, ConfigError> {
        let stack = self.non_empty("target.stack", t.stack)?;
        let asg = self.non_empty("target.auto_scaling_group", t.auto_scaling_group)?;
        let lt = self.non_empty("target.launch_template", t.launch_template)?;
        match (stack, asg) {
            (Some(s), None) => {
                if lt.is_some() {
                    return Err(self.invalid(
                        "target.launch_template",
                        "not allowed with target.stack (the stack's LaunchTemplateId output names it)",
                    ));
                }
                Ok(Target::Stack(s))
            }
            (None, Some(a)) => Ok(Target::Direct {
                auto_scaling_group: a,
                launch_template: lt,
            }),
            (Some(_), Some(_)) => Err(self.invalid(
                "target.auto_scaling_group",
                "give either target.stack or target.auto_scaling_group, not both",
            )),
            (None, None) => {
                Err(self.invalid("target", "set target.stack or target.auto_scaling_group"))
            }
        }
    }

    fn packer(&self, p: RawPacker) -> Result<PackerSettings, ConfigError> {
        let template = p.template.ok_or_else(|| {
            self.invalid(
                "packer.template",
                "missing: a template directory or .pkr.hcl file",
            )
        })?;
        let mut variables = BTreeMap::new();
        for (k, v) in p.variables.unwrap_or_default() {
            let key = format!("packer.variables.{k}");
            if crate::packer::RESERVED_VARIABLES.contains(&k.as_str()) {
                return Err(self.invalid(&key, "set by bake itself; remove it"));
            }
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "expected a string, number or boolean, got {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            variables.insert(k, s);
        }
        let package_indexes = p.package_indexes.unwrap_or_default();
        for (i, url) in package_indexes.iter().enumerate() {
            crate::package_index::check_url(url)
                .map_err(|m| self.invalid(&format!("packer.package_indexes[{i}]"), m))?;
        }
        Ok(PackerSettings {
            template: self.path(template),
            binary: p.binary.map_or_else(
                || PathBuf::from("packer"),
                |b| {
                    if b.components().count() > 1 {
                        self.path(b)
                    } else {
                        b
                    }
                },
            ),
            agent_binary: p.agent_binary.map(|a| self.path(a)),
            variables,
            timeout: self.bounded("packer.timeout", p.timeout, false, MAX_TIMEOUT)?,
            target: match p.target.as_deref().map(crate::local_image::Target::parse) {
                None => crate::local_image::Target::default(),
                Some(Some(t)) => t,
                Some(None) => {
                    return Err(self.invalid(
                        "packer.target",
                        format!(
                            "{:?} is not a target: {}",
                            p.target.unwrap_or_default(),
                            crate::local_image::Target::NAMES
                        ),
                    ))
                }
            },
            work_dir: self.path(p.work_dir.unwrap_or_else(|| PathBuf::from(".work"))),
            package_indexes,
        })
    }

    fn refresh(&self, r: RawRefresh) -> Result<RefreshSettings, ConfigError> {
        let min = r
            .min_healthy_percentage
            .map(|v| self.percent("refresh.min_healthy_percentage", v, 0, 100))
            .transpose()?
            .unwrap_or(DEFAULT_MIN_HEALTHY_PERCENTAGE);
        let max = r
            .max_healthy_percentage
            .map(|v| self.percent("refresh.max_healthy_percentage", v, 100, 200))
            .transpose()?;
        if let Some(max) = max {
            // AWS: the difference may be at most 100.
            if max - min > 100 {
                return Err(self.invalid(
                    "refresh.max_healthy_percentage",
                    format!("{max} is more than 100 above refresh.min_healthy_percentage ({min})"),
                ));
            }
        }
        let mut checkpoints = Vec::new();
        for (i, c) in r
            .checkpoint_percentages
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("refresh.checkpoint_percentages[{i}]");
            let c = self.percent(&key, c, 1, 100)?;
            if checkpoints.last().is_some_and(|&l| l >= c) {
                return Err(
                    self.invalid(&key, format!("{c}: checkpoints must be in ascending order"))
                );
            }
            checkpoints.push(c);
        }
        let partial = r.partial.unwrap_or(false);
        match checkpoints.last() {
            Some(&last) if last < 100 && !partial => {
                return Err(self.invalid(
                    &format!("refresh.checkpoint_percentages[{}]", checkpoints.len() - 1),
                    format!("{last}: the last checkpoint must be 100, or the refresh ends with {}% of the fleet still on the previous version (AWS: \"to replace all instances, the last number in the array must be 100\"); add 100, or set refresh.partial = true for a partial release", 100 - last),
                ))
            }
            Some(100) | None if partial => {
                return Err(self.invalid(
                    "refresh.partial",
                    "needs refresh.checkpoint_percentages ending below 100",
                ))
            }
            _ => {}
        }
        let checkpoint_delay = self.bounded(
            "refresh.checkpoint_delay",
            r.checkpoint_delay,
            true,
            MAX_REFRESH_DELAY,
        )?;
        if checkpoint_delay.is_some() && checkpoints.is_empty() {
            return Err(self.invalid(
                "refresh.checkpoint_delay",
                "needs refresh.checkpoint_percentages",
            ));
        }
        let alarms = r.alarms.unwrap_or_default();
        for (i, a) in alarms.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(self.invalid(&format!("refresh.alarms[{i}]"), "must not be empty"));
            }
        }
        let auto_rollback = r.auto_rollback.unwrap_or(true);
        if !alarms.is_empty() && !auto_rollback {
            // AWS rejects alarm specifications without auto rollback.
            return Err(self.invalid("refresh.alarms", "needs refresh.auto_rollback = true"));
        }
        let poll_interval = self
            .bounded(
                "refresh.poll_interval",
                r.poll_interval,
                false,
                MAX_POLL_INTERVAL,
            )?
            .unwrap_or(DEFAULT_POLL_INTERVAL);
        let max_poll_interval = self
            .bounded(
                "refresh.max_poll_interval",
                r.max_poll_interval,
                false,
                MAX_POLL_INTERVAL,
            )?
            .unwrap_or_else(|| DEFAULT_MAX_POLL_INTERVAL.max(poll_interval));
        if max_poll_interval < poll_interval {
            return Err(self.invalid(
                "refresh.max_poll_interval",
                "must not be less than refresh.poll_interval",
            ));
        }
        let warmup = self.bounded(
            "refresh.instance_warmup",
            r.instance_warmup,
            true,
            MAX_INSTANCE_WARMUP,
        )?;
        let bake_time = self.bounded("refresh.bake_time", r.bake_time, true, MAX_REFRESH_DELAY)?;
        Ok(RefreshSettings {
            min_healthy_percentage: min,
            max_healthy_percentage: max,
            instance_warmup: warmup,
            checkpoint_percentages: checkpoints,
            partial,
            checkpoint_delay,
            skip_matching: r.skip_matching.unwrap_or(true),
            auto_rollback,
            alarms,
            bake_time,
            timeout: self
                .bounded("refresh.timeout", r.timeout, false, MAX_TIMEOUT)?
                .unwrap_or(DEFAULT_REFRESH_TIMEOUT),
            poll_interval,
            max_poll_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("bake.toml"), Path::new("/cfg"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn test_full_example_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/bake.toml"
        ))
        .expect("examples/bake.toml exists");
        let s = parse(&text).expect("example is valid");
        assert!(s.packer.is_some());
        assert!(s.target.is_some());
    }

    #[test]
    fn test_defaults_and_relative_paths() {
        let s = parse("[packer]\ntemplate = \"packer\"\nagent_binary = \"/bin/agent\"\n[target]\nauto_scaling_group = \"web\"\n").unwrap();
        let p = s.packer.unwrap();
        assert_eq!(p.template, PathBuf::from("/cfg/packer"));
        assert_eq!(p.agent_binary, Some(PathBuf::from("/bin/agent")));
        assert_eq!(p.binary, PathBuf::from("packer"));
        assert_eq!(s.refresh.min_healthy_percentage, 90);
        assert!(s.refresh.skip_matching && s.refresh.auto_rollback);
        assert_eq!(s.prune_keep, DEFAULT_PRUNE_KEEP);
        assert_eq!(
            s.target,
            Some(Target::Direct {
                auto_scaling_group: "web".into(),
                launch_template: None
            })
        );
    }

    #[test]
    fn test_errors_name_the_key() {
        assert!(err("[refresh]\ninstance_warmup = \"5x\"")
            .starts_with("bake.toml: refresh.instance_warmup: \"5x\" is not a duration"));
        assert!(err("[refresh]\nmin_healthy_percentage = 120")
            .contains("refresh.min_healthy_percentage: 120 is not a percentage"));
        assert!(err("[refresh]\ncheckpoint_percentages = [50, 20]")
            .contains("refresh.checkpoint_percentages[1]"));
        assert!(err("[target]\nstack = \"a\"\nauto_scaling_group = \"b\"")
            .contains("target.auto_scaling_group"));
        assert!(err("[target]\n").contains("bake.toml: target: set"));
        assert!(err("[packer]\nbinary = \"p\"").contains("packer.template: missing"));
        assert!(
            err("[packer]\ntemplate = \"p\"\n[packer.variables]\nbake_version = \"x\"")
                .contains("packer.variables.bake_version")
        );
        assert!(err("[prune]\nkeep = 0").contains("prune.keep"));
        assert!(
            err("[refresh]\nalarms = [\"a\"]\nauto_rollback = false").contains("refresh.alarms")
        );
    }

    #[test]
    fn test_last_checkpoint_must_be_100_unless_partial() {
        let e = err("[refresh]\ncheckpoint_percentages = [50]");
        assert!(
            e.contains("refresh.checkpoint_percentages[0]: 50: the last checkpoint must be 100"),
            "{e}"
        );
        assert!(e.contains("refresh.partial = true"), "{e}");
        let s = parse("[refresh]\ncheckpoint_percentages = [50]\npartial = true").unwrap();
        assert!(s.refresh.partial);
        assert!(
            !parse("[refresh]\ncheckpoint_percentages = [20, 100]")
                .unwrap()
                .refresh
                .partial
        );
        assert!(err("[refresh]\npartial = true").contains("refresh.partial: needs"));
        assert!(
            err("[refresh]\ncheckpoint_percentages = [50, 100]\npartial = true")
                .contains("refresh.partial")
        );
    }

    #[test]
    fn test_durations_are_bounded_and_timeouts_not_zero() {
        for (text, key) in [
            (
                "[refresh]\ntimeout = \"0s\"",
                "refresh.timeout: must be more than 0s",
            ),
            (
                "[packer]\ntemplate = \"p\"\ntimeout = \"0s\"",
                "packer.timeout: must be more than 0s",
            ),
            (
                "[refresh]\npoll_interval = \"0s\"",
                "refresh.poll_interval: must be more than 0s",
            ),
            (
                "[refresh]\ntimeout = \"500000000000y\"",
                "refresh.timeout: ",
            ),
            (
                "[packer]\ntemplate = \"p\"\ntimeout = \"500000000000y\"",
                "packer.timeout: ",
            ),
            (
                "[refresh]\nmax_poll_interval = \"500000000000y\"",
                "refresh.max_poll_interval: ",
            ),
            (
                "[refresh]\ninstance_warmup = \"500000000000y\"",
                "refresh.instance_warmup: ",
            ),
            ("[refresh]\nbake_time = \"3d\"", "refresh.bake_time: "),
            (
                "[refresh]\ncheckpoint_percentages = [100]\ncheckpoint_delay = \"3d\"",
                "refresh.checkpoint_delay: ",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text:?}: {e}");
            if !key.ends_with("0s") {
                assert!(e.contains("longer than the maximum"), "{text:?}: {e}");
            }
        }
        let s = parse("[refresh]\ntimeout = \"30d\"\nbake_time = \"2d\"\ninstance_warmup = \"0s\"")
            .unwrap();
        assert_eq!(s.refresh.timeout, MAX_TIMEOUT);
        assert_eq!(s.refresh.instance_warmup, Some(Duration::ZERO));
    }

    #[test]
    fn test_image_parameter_is_optional_and_checked() {
        let target = "[target]\nauto_scaling_group = \"web\"\n";
        assert_eq!(parse(target).unwrap().image_parameter, None);
        let s = parse(&format!(
            "{target}image_parameter = \"/bake/prod/image-id\"\n"
        ))
        .unwrap();
        assert_eq!(s.image_parameter.as_deref(), Some("/bake/prod/image-id"));
        let e = err(&format!("{target}image_parameter = \"/bake/prod/\"\n"));
        assert!(
            e.starts_with("bake.toml: target.image_parameter: \"/bake/prod/\": empty level"),
            "{e}"
        );
        assert!(
            err("[target]\nstack = \"s\"\nimage_parameter = \"ssm-x\"\n")
                .starts_with("bake.toml: target.image_parameter: \"ssm-x\" must be a path")
        );
    }

    #[test]
    fn test_sbom_section_names_a_bucket_and_a_prefix() {
        assert_eq!(parse("").unwrap().sbom, None);
        let s = parse("[sbom]\nbucket = \"bake-prod-eu-west-1-123456789012\"\n").unwrap();
        assert_eq!(
            s.sbom,
            Some(SbomSettings {
                bucket: "bake-prod-eu-west-1-123456789012".into(),
                prefix: "sbom/".into()
            })
        );
        let s = parse("[sbom]\nbucket = \"b-1\"\nprefix = \"images/sbom\"\n").unwrap();
        assert_eq!(s.sbom.unwrap().prefix, "images/sbom/");
        for (text, want) in [
            ("[sbom]\nprefix = \"x/\"", "bake.toml: sbom.bucket: missing"),
            (
                "[sbom]\nbucket = \"Bad_Bucket\"",
                "bake.toml: sbom.bucket: \"Bad_Bucket\" is not an S3 bucket name",
            ),
            ("[sbom]\nbucket = \"ab\"", "sbom.bucket"),
            (
                "[sbom]\nbucket = \"b-1\"\nprefix = \"/abs\"",
                "bake.toml: sbom.prefix: \"/abs\"",
            ),
            ("[sbom]\nbucket = \"b-1\"\nkey = \"x\"", "key"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn test_release_stage_and_promote_are_optional_and_checked() {
        let s = parse("").unwrap();
        assert_eq!(s.release, ReleaseSettings::default());
        assert_eq!(s.promote, PromoteSettings::default());
        let s = parse("[release]\nstage = \"prod\"\nrequire_promoted_from = \"staging\"\n[promote]\nkms_key = \"alias/bake-ami\"\ntimeout = \"20m\"\n").unwrap();
        assert_eq!(s.release.stage.as_deref(), Some("prod"));
        assert_eq!(s.release.require_promoted_from.as_deref(), Some("staging"));
        assert_eq!(s.promote.kms_key.as_deref(), Some("alias/bake-ami"));
        assert_eq!(s.promote.timeout, Duration::from_secs(1200));
        for (text, want) in [
            ("[release]\nstage = \"\"", "bake.toml: release.stage: "),
            (
                "[release]\nrequire_promoted_from = \"stag ing\"",
                "bake.toml: release.require_promoted_from: \"stag ing\"",
            ),
            (
                "[promote]\nkms_key = \" \"",
                "bake.toml: promote.kms_key: must not be empty",
            ),
            (
                "[promote]\nkms_key = \"arn:aws:s3:::b\"",
                "bake.toml: promote.kms_key: ",
            ),
            (
                "[promote]\ntimeout = \"0s\"",
                "bake.toml: promote.timeout: must be more than 0s",
            ),
            ("[release]\nstages = \"x\"", "stages"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn test_unknown_key_is_named() {
        let e = err("[refresh]\nmin_healthy = 3");
        assert!(e.starts_with("bake.toml: "), "{e}");
        assert!(e.contains("min_healthy"), "{e}");
    }
}
