//! The one list of `bake-agent`'s exit codes. Also in `--help` and the README.

/// Exit codes of `bake-agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// An unexpected internal error.
    Internal = 1,
    /// Bad command line, configuration (agent.toml, userdata) or input.
    Config = 2,
    /// An AWS API call failed (after retries), or a named resource does not exist.
    Aws = 3,
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  internal error
  2  bad command line or configuration
  3  AWS error (API call failed or resource not found)";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Marks an error with the exit code it should produce; found anywhere in an anyhow chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// The exit code.
    pub code: Exit,
    /// What went wrong.
    pub message: String,
}

impl Exit {
    /// The code for an error chain: the first [`Coded`] in it, else [`Exit::Internal`].
    #[must_use]
    pub fn from_error(err: &anyhow::Error) -> Self {
        err.chain()
            .find_map(|e| e.downcast_ref::<Coded>().map(|c| c.code))
            .unwrap_or(Exit::Internal)
    }
}

/// Logs `error: …` then ` -> cause` for each cause.
pub fn log_error_chain(err: &anyhow::Error) {
    let mut text = format!("error: {err}");
    for cause in err.chain().skip(1) {
        text.push_str(&format!("\n -> {cause}"));
    }
    tracing::error!("{text}");
    // Also on stderr without the logger's decoration, in case logging is filtered off.
    if !tracing::enabled!(tracing::Level::ERROR) {
        eprintln!("{text}");
    }
}
