//! Durations in config files and on command lines are humantime strings: `"250ms"`, `"30s"`,
//! `"5m"`, `"14d"`. [`parse`] is the one parser of both binaries; bounds are the callers'.

use std::time::Duration;

/// A config value that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {}", self.message())]
pub struct DurationError {
    /// The dotted key path of the value, e.g. `supervise.restart_backoff`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What humantime said.
    pub reason: String,
}

impl DurationError {
    /// What is wrong, without the key: for errors that name the key (and its source) their own
    /// way, e.g. `agent.toml: supervise.backoff_max: …`.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "\"{}\" is not a duration (examples: \"500ms\", \"30s\", \"5m\", \"14d\"): {}",
            self.value, self.reason
        )
    }
}

/// Parses `value` (the value of `key`) as a humantime duration.
pub fn parse(key: &str, value: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(value.trim()).map_err(|e| DurationError {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_units() {
        assert_eq!(parse("a", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("a", "14d").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse("a", " 250ms ").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn test_parse_error_names_key_and_value() {
        let e = parse("supervise.restart_backoff", "5x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("supervise.restart_backoff: \"5x\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn test_message_leaves_the_key_to_the_caller() {
        let e = parse("metrics.publish_interval", "soon").unwrap_err();
        assert!(
            e.message()
                .starts_with("\"soon\" is not a duration (examples: \"500ms\""),
            "{}",
            e.message()
        );
        assert_eq!(
            e.to_string(),
            format!("metrics.publish_interval: {}", e.message())
        );
    }
}
