//! Log shipping: the app's stdout/stderr and configured files to CloudWatch Logs.

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStderr, ChildStdout};

/// Where the supervisor hands the app's stdout and stderr. Cheap to clone.
///
/// The supervisor calls [`AppOutput::attach`] with the pipes of every process it starts;
/// reading happens in background tasks, so a restart never waits on log shipping.
#[derive(Clone, Debug, Default)]
pub struct AppOutput {
    _private: (),
}

impl AppOutput {
    /// Copies the app's lines to the agent's own stderr (journald), with no shipping.
    #[must_use]
    pub fn passthrough() -> Self {
        Self::default()
    }

    /// Takes a started process's pipes and consumes them in the background.
    pub fn attach(&self, stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) {
        if let Some(out) = stdout {
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("app: {line}");
                }
            });
        }
        if let Some(err) = stderr {
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("app[stderr]: {line}");
                }
            });
        }
    }
}
