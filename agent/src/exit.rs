//! The one list of `bake-agent`'s exit codes. Also in `--help` and docs/agent.md.

/// Exit codes of `bake-agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (also: `run` drained after termination or SIGTERM; `job` ran nothing here).
    Ok = 0,
    /// An unexpected internal error; `reap`: some entries could not be removed.
    Internal = 1,
    /// Bad command line, configuration (agent.toml, userdata) or input.
    Config = 2,
    /// An AWS API call failed (after retries), or a named resource does not exist.
    Aws = 3,
    /// The instance metadata service is unreachable or incomplete.
    Imds = 4,
    /// Secrets could not be loaded (missing path, access denied, name collision): the app was not started.
    Secrets = 5,
    /// The EFS file system could not be mounted (`mount`), or is not mounted (`run`).
    Mount = 6,
    /// The app could not be started (also: `[app] listen` could not be bound).
    App = 7,
    /// `firewall`: nft could not add `[app] port` to the firewall.
    Firewall = 8,
    /// `status`: the agent is not running (no state file, or the process that wrote it is gone).
    NotRunning = 9,
    /// `check --live`: a live check failed (the checks ran; the output says which).
    LiveCheckFailed = 10,
    /// stdout was closed before a result line was written (`bake-agent check | head -0`):
    /// 128 + SIGPIPE, as a shell reports a command ended by a closed pipe. Nothing is printed.
    StdoutClosed = 141,
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (run: drained after termination or SIGTERM; job: nothing run here)
  1  internal error (reap: some entries could not be removed)
  2  bad command line or configuration (agent.toml, userdata)
  3  AWS error (API call failed or resource not found)
  4  instance metadata service unreachable or incomplete
  5  secrets could not be loaded; the app was not started
  6  EFS mount failed (mount), or the EFS mount point is not mounted (run)
  7  the app could not be started (also: [app] listen could not be bound)
  8  firewall: nft could not open [app] port
  9  status: the agent is not running (no state file, or its process is gone)
  10 check --live: a live check failed
  141 stdout closed before a result line was written (as for SIGPIPE); nothing is printed
  job, migrate: once CMD ran, its own exit code (128+N when killed by signal N; migrate: 127
  when CMD could not be started)";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Writes one result line on stdout (as `println!`, which panics on a closed stdout). A closed
/// stdout ends the process quietly with [`Exit::StdoutClosed`]; another write error (a full disk
/// under a redirect) with [`Exit::Internal`] and one line on stderr. The lines are the last thing
/// a command does, so nothing is left half-done.
#[expect(
    clippy::exit,
    reason = "called where a println! would be; the callers have no Result to carry the code"
)]
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use bake_common::exit::StdoutError;
    if let Err(e) = bake_common::exit::write_line(&mut std::io::stdout().lock(), line) {
        let code = match e {
            StdoutError::Closed => Exit::StdoutClosed,
            StdoutError::Write(e) => {
                eprintln!("error: cannot write to stdout: {e}");
                Exit::Internal
            }
        };
        std::process::exit(i32::from(code as u8));
    }
}

/// `println!` for result lines: see [`print_line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::exit::print_line(format_args!($($arg)*))
    };
}

/// An error marked with the exit code it should produce; found anywhere in an anyhow chain.
pub type Coded = bake_common::exit::Coded<Exit>;

/// Wraps any error with the exit code it should produce.
pub fn coded(code: Exit, err: impl std::fmt::Display) -> anyhow::Error {
    Coded::new(code, err).into()
}

impl Exit {
    /// The code for an error chain: the first [`Coded`] in it, else [`Exit::Internal`].
    #[must_use]
    pub fn from_error(err: &anyhow::Error) -> Self {
        bake_common::exit::first_code(err.as_ref(), |_| None).unwrap_or(Exit::Internal)
    }
}
