//! One `tracing` subscriber for our code and the AWS SDK (which logs through `tracing` too).
//!
//! Logs go to stderr; stdout is for data (`--output json`, `status`). Under systemd (the
//! `JOURNAL_STREAM` variable is set) lines carry no timestamp: journald adds its own.

use tracing_subscriber::{fmt, EnvFilter};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter for a `-v` count: 0 → info, 1 → debug, 2+ → trace for our crates; other crates
/// (the AWS SDK, hyper) stay at warn until `-vvv`. `RUST_LOG`, when set, wins.
#[must_use]
pub fn filter_for(verbosity: u8) -> EnvFilter {
    if let Ok(f) = EnvFilter::try_from_default_env() {
        return f;
    }
    let ours = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let others = if verbosity >= 3 { "debug" } else { "warn" };
    EnvFilter::new(format!(
        "{others},bake={ours},bake_agent={ours},bake_common={ours}"
    ))
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat, verbosity: u8) {
    let filter = filter_for(verbosity);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !under_journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // `try_init`: a second call (tests) is harmless.
    let _ = match (format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

/// Logs `error: …` then ` -> cause` for each cause of `err` (an `anyhow::Error` gives its chain
/// through `as_ref()`). Also printed plainly on stderr when logging is filtered off, so a failing
/// command never exits silently.
pub fn log_error_chain(err: &(dyn std::error::Error + 'static)) {
    let mut text = format!("error: {err}");
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(&format!("\n -> {c}"));
        cause = c.source();
    }
    tracing::error!("{text}");
    if !tracing::enabled!(tracing::Level::ERROR) {
        eprintln!("{text}");
    }
}
