//! One `tracing` subscriber for our code and the AWS SDK (which logs through `tracing` too).
//!
//! Logs go to stderr; stdout is for data (`--output json`, `status`). Under systemd (the
//! `JOURNAL_STREAM` variable is set) lines carry no timestamp: journald adds its own; with
//! [`init_with_priorities`] (the agent) they also carry their syslog priority when stderr is
//! that journal stream.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When log lines (and other styling) carry ANSI colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (to anything but the empty string) or the lines
    /// go to journald.
    #[default]
    Auto,
    /// Always, also into a pipe or a file (and over `NO_COLOR`).
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// The decision for this process: stderr a terminal, `NO_COLOR`, `JOURNAL_STREAM`.
    #[must_use]
    pub fn ansi_on_stderr(self) -> bool {
        self.ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("JOURNAL_STREAM").is_some(),
        )
    }

    /// The decision itself (<https://no-color.org>: an empty `NO_COLOR` counts as unset).
    #[must_use]
    pub fn ansi(self, terminal: bool, no_color: Option<&std::ffi::OsStr>, journald: bool) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => terminal && !journald && no_color.is_none_or(std::ffi::OsStr::is_empty),
        }
    }
}

/// Log targets of the AWS SDK and the HTTP stack below it (prefixes: `aws_` covers
/// `aws_config`, `aws_smithy_*`, `aws_sdk_*`, `aws_sigv4`, `aws_runtime`, …).
pub const SDK_TARGETS: &[&str] = &["aws_", "hyper", "h2", "rustls", "tower", "http"];

/// The most those targets may log: their trace events carry request headers (the IMDS session
/// token, `x-aws-ec2-metadata-token`) and responses (the IMDS token itself; with the SDK's
/// `LOG_SENSITIVE_BODIES=true`, every decrypted secret of GetParametersByPath). No `RUST_LOG`
/// or `-v` count lifts this cap.
pub const SDK_MAX_LEVEL: LevelFilter = LevelFilter::DEBUG;

/// The filter for a `-v` count: 0 → info, 1 → debug, 2+ → trace for our crates; other crates
/// (the AWS SDK, hyper) stay at warn until `-vvv` (debug). `RUST_LOG`, when set, wins:
/// comma-separated `target=level` directives and a bare default level, e.g.
/// `warn,bake_agent=debug`. (This is `tracing_subscriber`'s `Targets` syntax: no span or field
/// filters, so no regex engine in the binaries; an unparsable `RUST_LOG` is reported on stderr
/// and the default applies.) Either way the SDK's targets are capped at [`SDK_MAX_LEVEL`].
#[must_use]
pub fn filter_for(verbosity: u8) -> Targets {
    filter_from(std::env::var("RUST_LOG").ok().as_deref(), verbosity)
}

fn filter_from(rust_log: Option<&str>, verbosity: u8) -> Targets {
    if let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) {
        match spec.parse::<Targets>() {
            Ok(t) => return cap_sdk(&t),
            Err(e) => {
                eprintln!("warning: RUST_LOG ignored ({e}); expected e.g. warn,bake_agent=debug")
            }
        }
    }
    let ours = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let others = if verbosity >= 3 { "debug" } else { "warn" };
    let t = format!("{others},bake={ours},bake_agent={ours},bake_common={ours}")
        .parse()
        .expect("a valid filter");
    cap_sdk(&t)
}

/// `t` with every SDK target ([`SDK_TARGETS`]) at most [`SDK_MAX_LEVEL`]. `Targets` matches
/// the longest directive that is a prefix of an event's target, so the caps go in as
/// directives of their own (at the level `t` gives the prefix, capped), and `t`'s directives
/// for more specific SDK targets are capped too.
fn cap_sdk(t: &Targets) -> Targets {
    let sdk = |target: &str| SDK_TARGETS.iter().any(|p| target.starts_with(p));
    let level_for = |target: &str| {
        [
            LevelFilter::TRACE,
            LevelFilter::DEBUG,
            LevelFilter::INFO,
            LevelFilter::WARN,
            LevelFilter::ERROR,
        ]
        .into_iter()
        .find(|l| l.into_level().is_some_and(|l| t.would_enable(target, &l)))
        .unwrap_or(LevelFilter::OFF)
    };
    let mut out = Targets::new();
    if let Some(d) = t.default_level() {
        out = out.with_default(d);
    }
    for (target, level) in t.iter() {
        let level = if sdk(target) {
            level.min(SDK_MAX_LEVEL)
        } else {
            level
        };
        out = out.with_target(target, level);
    }
    for prefix in SDK_TARGETS {
        if !t.iter().any(|(target, _)| target == *prefix) {
            out = out.with_target(*prefix, level_for(prefix).min(SDK_MAX_LEVEL));
        }
    }
    out
}

/// Installs the global subscriber, colour as [`ColorChoice::Auto`]. Call once, first thing in
/// `main`.
pub fn init(format: LogFormat, verbosity: u8) {
    init_with_color(format, verbosity, ColorChoice::Auto);
}

/// Installs the global subscriber with colour as `color` decides.
pub fn init_with_color(format: LogFormat, verbosity: u8, color: ColorChoice) {
    init_with_priorities(format, verbosity, color, false);
}

/// Installs the global subscriber with colour as `color` decides and, when `journal_priorities`
/// is set and stderr is the journal stream systemd connected ([`stderr_is_journal`]), every
/// line prefixed with its syslog priority (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and
/// trace), which journald (`SyslogLevelPrefix=yes`, its default) takes as the entry's priority
/// and strips: `journalctl -p warning` then shows warnings and errors only. Elsewhere (a
/// terminal, a pipe, a file) lines are written as without the option.
pub fn init_with_priorities(
    format: LogFormat,
    verbosity: u8,
    color: ColorChoice,
    journal_priorities: bool,
) {
    let filter = filter_for(verbosity);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = color.ansi_on_stderr();
    let writer = JournalStderr {
        prefix: journal_priorities && stderr_is_journal(),
    };
    let layer = fmt::layer()
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    let layer = match (format, under_journald) {
        (LogFormat::Json, _) => layer.json().flatten_event(true).boxed(),
        (LogFormat::Text, true) => layer.without_time().boxed(),
        (LogFormat::Text, false) => layer.boxed(),
    };
    // `try_init`: a second call (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Whether this process's stderr is the stream systemd connected to the journal: `JOURNAL_STREAM`
/// (`DEVICE:INODE`, set by systemd for a service with `StandardError=journal`) names the device
/// and inode of fd 2 (as `sd_journal_stream_fd(3)` says to check: the variable is inherited by
/// processes whose stderr went elsewhere).
#[must_use]
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| journal_stream_is(&var, m.dev(), m.ino()))
}

/// Whether the `JOURNAL_STREAM` value `var` names device `dev` and inode `ino`.
#[must_use]
pub fn journal_stream_is(var: &std::ffi::OsStr, dev: u64, ino: u64) -> bool {
    var.to_str()
        .and_then(|v| v.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// The syslog priority of a log level: error 3, warn 4, info 6, debug and trace 7.
#[must_use]
pub fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// `buf` with `<prio>` before every line: at its start when `at_line_start`, and after every
/// newline that more text follows. Updates `at_line_start` for the next piece of the same event.
#[must_use]
pub fn prefix_lines(prio: u8, at_line_start: &mut bool, buf: &[u8]) -> Vec<u8> {
    let tag = format!("<{prio}>");
    let mut out = Vec::with_capacity(buf.len() + tag.len() * 2);
    for &b in buf {
        if *at_line_start {
            out.extend_from_slice(tag.as_bytes());
            *at_line_start = false;
        }
        out.push(b);
        if b == b'\n' {
            *at_line_start = true;
        }
    }
    out
}

/// stderr, each line of an event prefixed with its syslog priority when `prefix` is set.
#[derive(Clone, Copy, Debug)]
struct JournalStderr {
    prefix: bool,
}

/// One event's writer: [`prefix_lines`] over what the formatter writes, to stderr.
#[derive(Debug)]
struct PrefixedStderr {
    prio: Option<u8>,
    at_line_start: bool,
}

impl std::io::Write for PrefixedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.prio {
            Some(p) => {
                let out = prefix_lines(p, &mut self.at_line_start, buf);
                std::io::stderr().lock().write_all(&out)?;
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> fmt::MakeWriter<'a> for JournalStderr {
    type Writer = PrefixedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        PrefixedStderr {
            prio: self.prefix.then_some(6),
            at_line_start: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        PrefixedStderr {
            prio: self.prefix.then(|| syslog_priority(*meta.level())),
            at_line_start: true,
        }
    }
}

/// Logs `error: …` then ` -> cause` for each cause of `err` (an `anyhow::Error` gives its chain
/// through `as_ref()`). Also printed plainly on stderr when logging is filtered off, so a failing
/// command never exits silently.
pub fn log_error_chain(err: &(dyn std::error::Error + 'static)) {
    let text = error_chain_text(err);
    tracing::error!("{text}");
    if !tracing::enabled!(tracing::Level::ERROR) {
        eprintln!("{text}");
    }
}

/// `error: …` then ` -> cause` for each cause whose text the lines above do not already hold:
/// an error that shows its source in its own message (an AWS SDK error through
/// `DisplayErrorContext`, which writes the whole chain) keeps it as its `source()` for callers,
/// and it is said once.
#[must_use]
pub fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("error: {err}");
    let mut cause = err.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(&format!("\n -> {line}"));
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;
    use tracing::Level;

    #[test]
    fn test_error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("describing group 'web': {source}: timed out")]
        struct Shown {
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("release of 'web'")]
        struct Context {
            source: Shown,
        }
        let e = Context {
            source: Shown {
                source: std::io::Error::other("dispatch failure"),
            },
        };
        assert_eq!(
            error_chain_text(&e),
            "error: release of 'web'\n -> describing group 'web': dispatch failure: timed out"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("reading 'x'")]
        struct Hidden {
            source: std::io::Error,
        }
        let plain = Hidden {
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(
            error_chain_text(&plain),
            "error: reading 'x'\n -> permission denied"
        );
    }

    #[test]
    fn test_priority_prefix_on_every_line() {
        let mut start = true;
        assert_eq!(
            prefix_lines(3, &mut start, b"error: x\n -> cause\n"),
            b"<3>error: x\n<3> -> cause\n"
        );
        assert!(start);
        // An event written in pieces: a line split over two writes gets one prefix.
        let mut start = true;
        let mut out = prefix_lines(4, &mut start, b"WARN app ");
        out.extend(prefix_lines(4, &mut start, b"exited\n"));
        assert_eq!(out, b"<4>WARN app exited\n");
        assert_eq!(
            [
                tracing::Level::ERROR,
                tracing::Level::WARN,
                tracing::Level::INFO,
                tracing::Level::DEBUG,
                tracing::Level::TRACE
            ]
            .map(syslog_priority),
            [3, 4, 6, 7, 7]
        );
    }

    #[test]
    fn test_journal_stream_names_device_and_inode() {
        use std::ffi::OsStr;
        assert!(journal_stream_is(OsStr::new("8:12345"), 8, 12345));
        assert!(!journal_stream_is(OsStr::new("8:12346"), 8, 12345));
        assert!(!journal_stream_is(OsStr::new("9:12345"), 8, 12345));
        assert!(!journal_stream_is(OsStr::new("8"), 8, 12345));
        assert!(!journal_stream_is(OsStr::new(""), 0, 0));
        assert!(!journal_stream_is(OsStr::new("x:y"), 0, 0));
    }

    #[test]
    fn test_color_choice() {
        use std::ffi::OsStr;
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(ColorChoice::Auto.ansi(true, None, false));
        assert!(ColorChoice::Auto.ansi(true, empty, false));
        assert!(!ColorChoice::Auto.ansi(true, set, false));
        assert!(!ColorChoice::Auto.ansi(false, None, false));
        assert!(!ColorChoice::Auto.ansi(true, None, true));
        assert!(ColorChoice::Always.ansi(false, set, true));
        assert!(!ColorChoice::Never.ansi(true, None, false));
    }

    #[test]
    fn test_default_filter_by_verbosity() {
        let f = filter_from(None, 0);
        assert!(f.would_enable("bake_agent::daemon", &Level::INFO));
        assert!(!f.would_enable("bake_agent::daemon", &Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime", &Level::INFO));
        assert!(f.would_enable("aws_smithy_runtime", &Level::WARN));
        let f = filter_from(None, 3);
        assert!(f.would_enable("bake::release", &Level::TRACE));
        assert!(f.would_enable("hyper", &Level::DEBUG));
    }

    #[test]
    fn test_sdk_targets_never_trace() {
        for (rust_log, verbosity) in [
            (Some("trace"), 0),
            (
                Some("aws_smithy_runtime=trace,aws_config::imds=trace,hyper=trace"),
                0,
            ),
            (Some("aws=trace,h=trace,a=trace"), 0),
            (None, 3),
        ] {
            let f = filter_from(rust_log, verbosity);
            for target in [
                "aws_smithy_runtime::client::orchestrator",
                "aws_smithy_runtime::client::orchestrator::http",
                "aws_config::imds::client::token",
                "aws_sigv4::http_request::sign",
                "aws_sdk_ssm::operation",
                "hyper::proto::h1::io",
                "hyper_util::client::legacy::pool",
                "h2::codec",
                "rustls::client",
                "tower::buffer",
            ] {
                assert!(
                    !f.would_enable(target, &Level::TRACE),
                    "{rust_log:?}/{verbosity}: {target} at trace"
                );
            }
            assert!(
                f.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG),
                "{rust_log:?}/{verbosity}: debug stays"
            );
        }
        // Our own crates keep their trace, and a quiet default stays quiet for the SDK.
        let f = filter_from(Some("trace"), 0);
        assert!(f.would_enable("bake_agent::secrets", &Level::TRACE));
        let f = filter_from(Some("warn"), 0);
        assert!(!f.would_enable("aws_config::imds", &Level::INFO));
        assert!(f.would_enable("aws_config::imds", &Level::WARN));
        let f = filter_from(Some("error,aws_config=info"), 0);
        assert!(f.would_enable("aws_config::imds", &Level::INFO));
        assert!(!f.would_enable("aws_config::imds", &Level::DEBUG));
    }

    #[test]
    fn test_rust_log_wins_and_a_bad_one_falls_back() {
        let f = filter_from(Some("error,bake_agent::logs=trace"), 0);
        assert!(f.would_enable("bake_agent::logs::ship", &Level::TRACE));
        assert!(!f.would_enable("bake_agent::daemon", &Level::WARN));
        assert_eq!(f.default_level(), Some(LevelFilter::ERROR));
        let f = filter_from(Some("bake_agent=loud"), 0);
        assert!(f.would_enable("bake_agent", &Level::INFO));
        assert!(!f.would_enable("bake_agent", &Level::DEBUG));
    }
}
