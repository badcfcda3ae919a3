//! The one list of `bake`'s exit codes. Also in `--help` and the README. Which error gets which
//! code is decided in one place, [`crate::exit_code`].

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
  130 interrupted by SIGINT, SIGTERM or SIGHUP (build stopped and cleaned up, or watching detached)
  141 stdout closed before the result was written (as for SIGPIPE); nothing is printed";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
