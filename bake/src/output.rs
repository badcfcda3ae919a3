//! Progress on stderr (an indicatif spinner/bar on a terminal, with lines that stay above it;
//! plain timestamped lines otherwise), results on stdout (text or one JSON document), and the
//! Markdown summary for `$GITHUB_STEP_SUMMARY`.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use bake_common::exit::StdoutError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The version of every JSON document bake prints (`schema_version`): raised when a field
/// changes meaning or goes away, not when one is added.
pub const SCHEMA_VERSION: u32 = 1;

/// Result format on stdout (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Progress of one long step (a build, a refresh), on stderr.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    prefix: &'static str,
    started: Instant,
    last_line: std::sync::Mutex<String>,
}

impl Progress {
    /// A spinner with the current step on a terminal, plain lines otherwise.
    #[must_use]
    pub fn spinner(prefix: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .expect("static template is valid"),
            );
            b.set_prefix(prefix);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Self::new(bar, prefix)
    }

    /// A percentage bar on a terminal, plain lines otherwise. The bar shows the one elapsed
    /// time and the one percentage; its message should repeat neither.
    #[must_use]
    pub fn percent(prefix: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed}] [{bar:30}] {pos:>3}% {wide_msg}",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            );
            b.set_prefix(prefix);
            b.enable_steady_tick(Duration::from_millis(500));
            b
        });
        Self::new(bar, prefix)
    }

    fn new(bar: Option<ProgressBar>, prefix: &'static str) -> Self {
        Self {
            bar,
            prefix,
            started: Instant::now(),
            last_line: std::sync::Mutex::new(String::new()),
        }
    }

    /// Time since this progress started.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The current step; printed as a line when not on a terminal (repeats suppressed).
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(b) => b.set_message(message.to_owned()),
            None => self.line(message),
        }
    }

    /// Sets the percentage and the bar's message `on_bar` on a terminal; prints `as_line`
    /// otherwise (which should then say the percentage itself).
    pub fn position(&self, percent: u64, on_bar: &str, as_line: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(percent.min(100));
                b.set_message(on_bar.to_owned());
            }
            None => self.line(as_line),
        }
    }

    /// A line that stays (above the bar on a terminal).
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("{} {message}", self.prefix)),
            None => self.line(message),
        }
    }

    fn line(&self, message: &str) {
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == message {
            return;
        }
        message.clone_into(&mut last);
        eprintln!(
            "{} {}: {message}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            self.prefix
        );
    }

    /// Removes the spinner/bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes a command's result on stdout: `json` as one document, or `text` for people.
///
/// # Errors
/// [`StdoutError::Closed`] when the reader went away (as in `bake status | head -0`), which
/// `main` reports by its exit code alone; [`StdoutError::Write`] for any other write error.
pub fn emit(output: Output, json: &serde_json::Value, text: &str) -> Result<(), StdoutError> {
    let doc = match output {
        Output::Json => with_schema_version(json).to_string(),
        Output::Text if text.is_empty() => return Ok(()),
        Output::Text => text.trim_end().to_owned(),
    };
    print(&doc)
}

/// `json` with `schema_version` ([`SCHEMA_VERSION`]) as a field of its own: every document
/// bake prints is an object.
#[must_use]
pub fn with_schema_version(json: &serde_json::Value) -> serde_json::Value {
    let mut doc = json.clone();
    if let Some(o) = doc.as_object_mut() {
        o.insert("schema_version".to_owned(), SCHEMA_VERSION.into());
    }
    doc
}

/// Writes `doc` and a newline on stdout; errors as for [`emit`].
///
/// # Errors
/// As for [`emit`].
pub fn print(doc: &str) -> Result<(), StdoutError> {
    bake_common::exit::write_line(&mut std::io::stdout().lock(), doc)
}

/// Appends `markdown` to the file `$GITHUB_STEP_SUMMARY` names (GitHub Actions shows it on the
/// run's summary page), when that variable is set and not empty. A failure is a warning: the
/// command's result does not depend on it.
pub fn step_summary(markdown: &str) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    if let Err(e) = append(&path, markdown) {
        tracing::warn!(
            "cannot append the summary to GITHUB_STEP_SUMMARY '{}': {e}",
            path.display()
        );
    }
}

/// Appends `text` to `path` (created if missing), ending it with a newline.
///
/// # Errors
/// The file cannot be opened or written.
pub fn append(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = text.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    f.write_all(text.as_bytes())
}

/// Formats a duration to whole seconds for people (`1m 5s`).
#[must_use]
pub fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}
