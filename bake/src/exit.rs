//! The one list of `bake`'s exit codes. Also in `--help` and the README. Which error gets which
//! code is decided in one place, [`crate::exit_code`]; what the operator is told about a failed
//! command, in [`crate::failure`], which takes its code from there.

/// Exit codes of `bake`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (a release whose refresh ended `Successful`).
    Ok = 0,
    /// An unexpected internal error.
    Internal = 1,
    /// Bad command line or configuration (`bake.toml`, Packer template).
    Config = 2,
    /// An AWS API call failed (after retries), or a named resource does not exist.
    Aws = 3,
    /// The Packer build failed.
    Build = 4,
    /// The instance refresh ended `Failed`.
    RefreshFailed = 5,
    /// The instance refresh was rolled back (`RollbackSuccessful` or `RollbackFailed`).
    RolledBack = 6,
    /// The instance refresh was cancelled.
    Cancelled = 7,
    /// Watching timed out (`--timeout`); the refresh goes on.
    TimedOut = 8,
    /// Another instance refresh is already in progress on the group.
    InProgress = 9,
    /// A partial release (`refresh.partial`): the refresh ended `Successful` at its last
    /// checkpoint, below 100 %, and the rest of the fleet still runs the previous version.
    Partial = 10,
    /// `bake plan`: a release would change something (a new image, or a build first); 0 is
    /// nothing to do.
    Changes = 11,
    /// `release`/`rollback`: the refresh ended `Successful` (or `partial`), but the SSM parameter
    /// `target.image_parameter` could not be set to the image released: it still names the
    /// previous one, which a CloudFormation update of the fleet stack would launch again.
    ImageParameter = 12,
    /// `status --check`: the image parameter, the launch template's default version, the
    /// group's version or the instances disagree about the image (drift).
    Drift = 13,
    /// `test-image`, `build --test`, `release --test`: the image failed its boot test (a live
    /// check failed, or its test instance did not report in time); the image is tagged
    /// `bake:tested=fail`.
    ImageTestFailed = 14,
    /// `release`: the image is not tagged `bake:tested=pass` (never boot-tested, or failed) and
    /// `image_test.required` holds; nothing was changed. `--test` tests it first, `--untested`
    /// releases it anyway.
    Untested = 15,
    /// `release` with `[migrate]`: the release's migration failed (its command exited
    /// non-zero, or no result came within `migrate.timeout`, or its instance stopped first);
    /// nothing was changed: no launch template version, no refresh.
    MigrationFailed = 16,
    /// `release` with `release.require_promoted_from`: the image's `bake:promoted-stage` tag is
    /// not that stage (or it was never promoted); nothing was changed.
    NotPromoted = 17,
    /// Interrupted (SIGINT/Ctrl-C, SIGTERM or SIGHUP): a build was stopped and cleaned up, or
    /// watching was detached.
    Interrupted = 130,
    /// stdout was closed before the result was written (`bake status | head -0`): 128 + SIGPIPE,
    /// as a shell reports a command ended by a closed pipe. Nothing is printed.
    StdoutClosed = 141,
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  internal error
  2  bad command line or configuration
  3  AWS error (API call failed or resource not found)
  4  Packer build failed
  5  instance refresh failed
  6  instance refresh rolled back
  7  instance refresh cancelled
  8  timed out waiting for the instance refresh (it goes on)
  9  an instance refresh is already in progress
  10 partial release: the refresh stopped at its last checkpoint (refresh.partial)
  11 plan: a release would change something (0: nothing to do)
  12 released, but the SSM parameter target.image_parameter was not set to the image
  13 status --check: drift (the image parameter, launch template, group or instances disagree)
  14 the image failed its boot test (test-image, --test); it is tagged bake:tested=fail
  15 release refused an image not tagged bake:tested=pass (--test tests it, --untested overrides)
  16 release: the migration ([migrate]) failed or gave no result; nothing was released
  17 release refused an image not promoted from release.require_promoted_from (bake promote)
  130 interrupted by SIGINT, SIGTERM or SIGHUP (build stopped and cleaned up, or watching detached)
  141 stdout closed before the result was written (as for SIGPIPE); nothing is printed";

impl Exit {
    /// The code's name in an error document (`--output json`), e.g. `aws`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Internal => "internal",
            Self::Config => "config",
            Self::Aws => "aws",
            Self::Build => "build",
            Self::RefreshFailed => "refresh_failed",
            Self::RolledBack => "rolled_back",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::InProgress => "in_progress",
            Self::Partial => "partial",
            Self::Changes => "changes",
            Self::ImageParameter => "image_parameter",
            Self::Drift => "drift",
            Self::ImageTestFailed => "image_test_failed",
            Self::Untested => "untested",
            Self::MigrationFailed => "migration_failed",
            Self::NotPromoted => "not_promoted",
            Self::Interrupted => "interrupted",
            Self::StdoutClosed => "stdout_closed",
        }
    }
}

/// A failed command as its operator reads it ([`crate::failure`]): one line saying what to do
/// for the common failures, the exit code, and a name for scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The exit code ([`crate::exit_code`]).
    pub exit: Exit,
    /// What failed, for scripts: `no_credentials`, `credentials`, `no_answer`, `no_region`,
    /// `no_group`, `no_stack`, `no_packer`, or else the exit code's [`Exit::name`].
    pub code: &'static str,
    /// The one line, without the SDK's debug dump.
    pub message: String,
    /// The causes the line does not already say (contexts around a typed error).
    pub causes: Vec<String>,
}

impl Failure {
    /// The error document printed on stdout under `--output json`.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema_version": crate::output::SCHEMA_VERSION,
            "error": self.message,
            "code": self.code,
            "exit_code": self.exit as u8,
            "causes": self.causes,
        })
    }

    /// `error: …` and a ` -> cause` line per cause, as stderr shows it.
    #[must_use]
    pub fn text(&self) -> String {
        let mut text = format!("error: {}", self.message);
        for c in &self.causes {
            text.push_str("\n -> ");
            text.push_str(c);
        }
        text
    }

    /// Logs [`Failure::text`] (also plainly on stderr when logging is filtered off, so a
    /// failing command never exits silently).
    pub fn log(&self) {
        let text = self.text();
        tracing::error!("{text}");
        if !tracing::enabled!(tracing::Level::ERROR) {
            eprintln!("{text}");
        }
    }
}

/// The one sentence for no credentials at all.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_PROFILE (or --profile) to a \
    profile of ~/.aws/config, run 'aws sso login', or set AWS_ACCESS_KEY_ID and \
    AWS_SECRET_ACCESS_KEY";

/// The one sentence for no region at all (before any call: the SDK's own "Missing Region" says
/// nothing of where to set one).
pub const NO_REGION: &str = "no AWS region: set --region, AWS_REGION or aws.region in bake.toml \
    (or region in the profile of ~/.aws/config)";

/// The message and causes of `err`'s chain as [`bake_common::logging::error_chain_text`] says
/// them, without the debug dump the SDK's `DisplayErrorContext` appends to an error (` (…)`
/// after its text): that comes with `-v`.
#[must_use]
pub fn plain_chain(err: &(dyn std::error::Error + 'static)) -> (String, Vec<String>) {
    let mut text = bake_common::logging::error_chain_text(err);
    for e in bake_common::exit::chain(err) {
        text = text.replace(&format!(" ({e:?})"), "");
    }
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_owned();
    let mut lines = text.split("\n -> ").map(ToOwned::to_owned);
    let message = lines.next().unwrap_or_default();
    (message, lines.collect())
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
