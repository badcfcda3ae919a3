//! The instance refresh preferences of the last release, recorded where both binaries read them.
//!
//! `bake release` writes the preferences it starts a refresh with (min/max healthy, warm-up,
//! checkpoints, skip matching, auto rollback, alarms, bake time) to the SSM String parameter
//! [`parameter_name`]`(group)` before it starts the refresh. A secret-rotation rollout started by
//! `bake-agent` reads that parameter, so it rolls the fleet with the same safety as a release.
//!
//! The value is JSON with the AWS API's field names (those of `aws autoscaling
//! start-instance-refresh --preferences`), wrapped with a schema version and the strategy:
//!
//! ```json
//! {"SchemaVersion":1,"Strategy":"Rolling",
//!  "Preferences":{"MinHealthyPercentage":90,"MaxHealthyPercentage":100,"InstanceWarmup":60,
//!                 "CheckpointPercentages":[50,100],"CheckpointDelay":300,"SkipMatching":true,
//!                 "AutoRollback":true,"AlarmSpecification":{"Alarms":["bake-prod-restarts"]},
//!                 "BakeTime":0}}
//! ```

use aws_sdk_autoscaling::types::{AlarmSpecification, RefreshPreferences};
use serde::{Deserialize, Serialize};

/// The version of the JSON layout this module writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// Upper bound of a Standard-tier SSM parameter value (4 KB).
pub const MAX_VALUE_BYTES: usize = 4096;

/// The SSM parameter that holds the recorded preferences of group `group`.
#[must_use]
pub fn parameter_name(group: &str) -> String {
    format!("/bake/refresh-preferences/{group}")
}

/// What `bake release` records: the strategy and preferences of the refresh it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Recorded {
    /// Layout version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The refresh strategy; only `Rolling` exists.
    pub strategy: String,
    /// The preferences, AWS's field names.
    pub preferences: Preferences,
}

/// `RefreshPreferences`, in the AWS API's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Preferences {
    /// Percentage of desired capacity that stays in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_percentage: Option<i32>,
    /// Percentage of desired capacity the group may grow to (launch before terminate above 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_healthy_percentage: Option<i32>,
    /// Seconds a new instance warms up before it counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_warmup: Option<i32>,
    /// Percentages at which the refresh pauses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_percentages: Vec<i32>,
    /// Seconds to wait at each checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_delay: Option<i32>,
    /// Skip instances already on the desired configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_matching: Option<bool>,
    /// Roll back when the refresh fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// Alarms that fail the refresh when they go to ALARM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_specification: Option<Alarms>,
    /// Seconds to wait after the last replacement before the refresh succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_time: Option<i32>,
}

/// `AlarmSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Alarms {
    /// Alarm names.
    #[serde(default)]
    pub alarms: Vec<String>,
}

/// A recorded value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of this layout.
    #[error("parameter {name}: not a recorded refresh preference document: {reason}")]
    Malformed {
        /// The parameter's name.
        name: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// A layout this version does not know.
    #[error("parameter {name}: SchemaVersion {found} is not supported (this version reads {SCHEMA_VERSION})")]
    Schema {
        /// The parameter's name.
        name: String,
        /// The version found.
        found: u32,
    },
}

impl Recorded {
    /// The document for `prefs` with the rolling strategy.
    #[must_use]
    pub fn rolling(prefs: &RefreshPreferences) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            strategy: "Rolling".to_owned(),
            preferences: Preferences::from_sdk(prefs),
        }
    }

    /// The JSON value stored in the parameter.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// Parses the value of parameter `name`.
    pub fn from_json(name: &str, value: &str) -> Result<Self, Error> {
        let r: Self = serde_json::from_str(value).map_err(|e| Error::Malformed {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if r.schema_version != SCHEMA_VERSION {
            return Err(Error::Schema {
                name: name.to_owned(),
                found: r.schema_version,
            });
        }
        Ok(r)
    }
}

impl Preferences {
    /// From the SDK's type.
    #[must_use]
    pub fn from_sdk(p: &RefreshPreferences) -> Self {
        Self {
            min_healthy_percentage: p.min_healthy_percentage(),
            max_healthy_percentage: p.max_healthy_percentage(),
            instance_warmup: p.instance_warmup(),
            checkpoint_percentages: p.checkpoint_percentages().to_vec(),
            checkpoint_delay: p.checkpoint_delay(),
            skip_matching: p.skip_matching(),
            auto_rollback: p.auto_rollback(),
            alarm_specification: p.alarm_specification().map(|a| Alarms {
                alarms: a.alarms().to_vec(),
            }),
            bake_time: p.bake_time(),
        }
    }

    /// To the SDK's type, for `StartInstanceRefresh`.
    #[must_use]
    pub fn to_sdk(&self) -> RefreshPreferences {
        RefreshPreferences::builder()
            .set_min_healthy_percentage(self.min_healthy_percentage)
            .set_max_healthy_percentage(self.max_healthy_percentage)
            .set_instance_warmup(self.instance_warmup)
            .set_checkpoint_percentages(
                (!self.checkpoint_percentages.is_empty())
                    .then(|| self.checkpoint_percentages.clone()),
            )
            .set_checkpoint_delay(self.checkpoint_delay)
            .set_skip_matching(self.skip_matching)
            .set_auto_rollback(self.auto_rollback)
            .set_alarm_specification(self.alarm_specification.as_ref().map(|a| {
                AlarmSpecification::builder()
                    .set_alarms(Some(a.alarms.clone()))
                    .build()
            }))
            .set_bake_time(self.bake_time)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> RefreshPreferences {
        RefreshPreferences::builder()
            .min_healthy_percentage(90)
            .max_healthy_percentage(100)
            .instance_warmup(60)
            .checkpoint_percentages(50)
            .checkpoint_percentages(100)
            .checkpoint_delay(300)
            .skip_matching(true)
            .auto_rollback(true)
            .alarm_specification(AlarmSpecification::builder().alarms("a").build())
            .bake_time(0)
            .build()
    }

    #[test]
    fn test_round_trip_keeps_every_field() {
        let r = Recorded::rolling(&full());
        let back = Recorded::from_json("/p", &r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.preferences.to_sdk(), full());
    }

    #[test]
    fn test_json_uses_the_aws_field_names() {
        let v: serde_json::Value =
            serde_json::from_str(&Recorded::rolling(&full()).to_json()).unwrap();
        assert_eq!(v["Strategy"], "Rolling");
        assert_eq!(v["Preferences"]["MinHealthyPercentage"], 90);
        assert_eq!(v["Preferences"]["CheckpointPercentages"][1], 100);
        assert_eq!(v["Preferences"]["AlarmSpecification"]["Alarms"][0], "a");
        assert!(Recorded::rolling(&full()).to_json().len() < MAX_VALUE_BYTES);
    }

    #[test]
    fn test_bad_documents_name_the_parameter() {
        let e = Recorded::from_json("/bake/refresh-preferences/g", "{}").unwrap_err();
        assert!(e.to_string().contains("/bake/refresh-preferences/g"), "{e}");
        let e = Recorded::from_json(
            "/p",
            r#"{"SchemaVersion":2,"Strategy":"Rolling","Preferences":{}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Schema { found: 2, .. }), "{e}");
        let e = Recorded::from_json(
            "/p",
            r#"{"SchemaVersion":1,"Strategy":"Rolling","Preferences":{"MinHealthy":1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("MinHealthy"), "{e}");
    }

    #[test]
    fn test_parameter_name() {
        assert_eq!(
            parameter_name("bake-prod"),
            "/bake/refresh-preferences/bake-prod"
        );
    }
}
