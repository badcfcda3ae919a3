//! Durations in config files are humantime strings: `"250ms"`, `"30s"`, `"5m"`, `"14d"`.

use std::time::Duration;

/// A config value that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{key}: \"{value}\" is not a duration (examples: \"500ms\", \"30s\", \"5m\", \"14d\"): {reason}")]
pub struct DurationError {
    /// The dotted key path of the value, e.g. `supervise.restart_backoff`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What humantime said.
    pub reason: String,
}

/// Parses `value` (the value of `key`) as a humantime duration.
pub fn parse(key: &str, value: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(value.trim()).map_err(|e| DurationError {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// serde adapter: `#[serde(with = "bake_common::duration::serde_humantime")]` on a `Duration`.
pub mod serde_humantime {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Deserializes a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            D::Error::custom(format!(
                "\"{s}\" is not a duration ({e}); examples: \"500ms\", \"30s\", \"5m\", \"14d\""
            ))
        })
    }

    /// Serializes as a humantime string.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// serde adapter for `Option<Duration>`.
pub mod serde_humantime_opt {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Deserializes an optional humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(s.trim()).map_err(|e| {
                D::Error::custom(format!("\"{s}\" is not a duration ({e}); examples: \"500ms\", \"30s\", \"5m\", \"14d\""))
            })
        })
        .transpose()
    }

    /// Serializes as an optional humantime string.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&humantime::format_duration(*v).to_string()),
            None => s.serialize_none(),
        }
    }
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
}
