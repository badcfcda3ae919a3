//! Fleet-wide leases in SSM Parameter Store: one instance of the fleet wins the right to do
//! something, with records that every other instance can read.
//!
//! SSM has no compare-and-swap, but `PutParameter Overwrite=false` creates a parameter at most
//! once: every other caller gets `ParameterAlreadyExists`. Every decision that must have a single
//! winner is such a create-only put of a parameter of its own ([`create`]); a parameter is only
//! ever overwritten by the instance that created it (to renew it or record how it ended), so no
//! two writers race on one value.
//!
//! Two users:
//! - `bake-agent job` (see [`crate::job`]): per job and period `{prefix}/{asg}/{job}/{period}`,
//!   each try is a create-only `…/attempt-N` holding an [`Attempt`] (holder, expiry, state), and
//!   a success is recorded once in `…/succeeded`.
//! - the secret-rotation rollout (see [`crate::rollout`]): the lease
//!   `{prefix}/{asg}/secrets-rollout/{id}` holds a [`Holder`] (with the refresh it started) and
//!   `…/{id}.outcome` records the refresh's end once.
//!
//! Period ids come from chrono: ISO 8601 weeks (`2026-W48`, the year of the week's Thursday), UTC
//! days (`2026-11-23`) and UTC hours (`2026-11-23T16`).

use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// Errors reading or writing lease parameters.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// PutParameter failed for another reason than "already exists".
    #[error("writing lease parameter '{path}': {message}")]
    Put {
        /// The lease parameter.
        path: String,
        /// SDK error with context.
        message: String,
    },
    /// GetParameter failed for another reason than "not found".
    #[error("reading lease parameter '{path}': {message}")]
    Get {
        /// The lease parameter.
        path: String,
        /// SDK error with context.
        message: String,
    },
    /// A name that cannot be part of a parameter path.
    #[error("lease name '{0}': use letters, digits, '.', '_' and '-' only")]
    BadName(String),
}

/// How often a job runs: the period of its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Period {
    /// ISO week, `2026-W48`.
    Weekly,
    /// UTC day, `2026-11-23`.
    Daily,
    /// UTC hour, `2026-11-23T16`.
    Hourly,
}

/// The period id of the instant `at`.
#[must_use]
pub fn period_id(period: Period, at: DateTime<Utc>) -> String {
    match period {
        Period::Daily => at.format("%Y-%m-%d").to_string(),
        Period::Hourly => at.format("%Y-%m-%dT%H").to_string(),
        Period::Weekly => {
            let w = at.iso_week();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
    }
}

/// RFC 3339 UTC, seconds precision (`2026-11-23T16:25:36Z`).
#[must_use]
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses what [`rfc3339`] wrote.
#[must_use]
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Checks a path component.
pub fn check_name(name: &str) -> Result<(), LeaseError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(LeaseError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Who holds a lease that is never retaken (the secret-rotation rollout).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The winner.
    pub instance_id: String,
    /// When it took the lease (RFC 3339).
    pub started_at: String,
    /// The instance refresh the winner started, once it started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_id: Option<String>,
}

impl Holder {
    /// `instance_id`, now.
    #[must_use]
    pub fn now(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            started_at: rfc3339(Utc::now()),
            refresh_id: None,
        }
    }

    /// The parameter value.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings serializes")
    }
}

/// Where one try of a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// The holder runs the command and renews `expires_at`.
    Running,
    /// The command exited 0.
    Succeeded,
    /// The command failed, could not start, or was stopped.
    Failed,
}

/// The value of `…/attempt-N`: one try of a job in one period.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// The instance that took this try.
    pub instance_id: String,
    /// When it took it (RFC 3339).
    pub started_at: String,
    /// Until when the holder counts as alive (RFC 3339), renewed while the command runs.
    pub expires_at: String,
    /// Where the try stands.
    pub state: AttemptState,
    /// The command's exit code (128+N after signal N), once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the try ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What another instance makes of an [`Attempt`] it finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judged {
    /// Its holder is running it and is alive (until `until`).
    Held {
        /// The holder.
        holder: String,
        /// Its expiry.
        until: String,
    },
    /// It ended in success.
    Succeeded {
        /// The holder.
        holder: String,
    },
    /// It failed, or its holder stopped renewing it (killed, instance gone): the next try may go.
    Over {
        /// Why: "failed (exit code 3)", "expired at …", "unreadable".
        why: String,
    },
}

impl Attempt {
    /// A running try of `instance_id` from `now`, alive until `now + ttl`.
    #[must_use]
    pub fn running(instance_id: &str, now: DateTime<Utc>, ttl: std::time::Duration) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            started_at: rfc3339(now),
            expires_at: rfc3339(expiry(now, ttl)),
            state: AttemptState::Running,
            exit_code: None,
            finished_at: None,
        }
    }

    /// The parameter value.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// What a value found in SSM means at `now`. A value that is not an [`Attempt`] (written by
    /// hand or by something else) cannot be held by anyone alive: it is over.
    #[must_use]
    pub fn judge(value: Option<&str>, now: DateTime<Utc>) -> Judged {
        let Some(a) = value.and_then(|v| serde_json::from_str::<Self>(v).ok()) else {
            return Judged::Over {
                why: "unreadable".into(),
            };
        };
        match a.state {
            AttemptState::Succeeded => Judged::Succeeded {
                holder: a.instance_id,
            },
            AttemptState::Failed => Judged::Over {
                why: match a.exit_code {
                    Some(c) => format!("failed on {} (exit code {c})", a.instance_id),
                    None => format!("failed on {}", a.instance_id),
                },
            },
            AttemptState::Running => match parse_time(&a.expires_at) {
                Some(t) if t > now => Judged::Held {
                    holder: a.instance_id,
                    until: a.expires_at,
                },
                _ => Judged::Over {
                    why: format!("held by {} expired at {}", a.instance_id, a.expires_at),
                },
            },
        }
    }
}

/// `now + ttl`, saturating at the far future.
#[must_use]
pub fn expiry(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The outcome of [`create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// We created it: we hold it now.
    Won,
    /// It existed already (someone else won, or we did in an earlier run); its value if readable.
    Exists(Option<String>),
}

/// Creates parameter `path` with `value` unless it exists (`PutParameter Overwrite=false`).
pub async fn create(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
    value: &str,
) -> Result<Created, LeaseError> {
    let res = ssm
        .put_parameter()
        .name(path)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(false)
        .description("bake-agent fleet lease")
        .send()
        .await;
    match res {
        Ok(_) => Ok(Created::Won),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(PutParameterError::ParameterAlreadyExists(_))
            ) =>
        {
            Ok(Created::Exists(get(ssm, path).await.ok().flatten()))
        }
        Err(e) => Err(LeaseError::Put {
            path: path.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        }),
    }
}

/// Overwrites parameter `path`, which this instance created (renewal, final state).
pub async fn overwrite(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
    value: &str,
) -> Result<(), LeaseError> {
    ssm.put_parameter()
        .name(path)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| LeaseError::Put {
            path: path.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        })
}

/// The value of parameter `path`; `None` when it does not exist.
pub async fn get(ssm: &aws_sdk_ssm::Client, path: &str) -> Result<Option<String>, LeaseError> {
    match ssm.get_parameter().name(path).send().await {
        Ok(o) => Ok(o.parameter().and_then(|p| p.value()).map(ToOwned::to_owned)),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(GetParameterError::ParameterNotFound(_))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(LeaseError::Get {
            path: path.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        }),
    }
}

/// The lease path of job `name` in group `asg` for `period_id`.
#[must_use]
pub fn job_path(prefix: &str, asg: &str, name: &str, period_id: &str) -> String {
    format!("{prefix}/{asg}/{name}/{period_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn test_period_ids() {
        // 2026-11-23T16:25:36Z, a Monday.
        let t = Utc.timestamp_opt(1_795_451_136, 0).unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T16:25:36Z");
        assert_eq!(parse_time("2026-11-23T16:25:36Z"), Some(t));
        assert_eq!(period_id(Period::Daily, t), "2026-11-23");
        assert_eq!(period_id(Period::Hourly, t), "2026-11-23T16");
        assert_eq!(period_id(Period::Weekly, t), "2026-W48");
    }

    #[test]
    fn test_iso_week_edges() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
        // 2021-01-03 (Sunday) is in 2020-W53; 2024-12-30 (Monday) is in 2025-W01.
        assert_eq!(period_id(Period::Weekly, at(2021, 1, 3)), "2020-W53");
        assert_eq!(period_id(Period::Weekly, at(2021, 1, 4)), "2021-W01");
        assert_eq!(period_id(Period::Weekly, at(2024, 12, 30)), "2025-W01");
        // A week starts on Monday 00:00 UTC.
        let sunday_late = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 59).unwrap();
        assert_eq!(period_id(Period::Weekly, sunday_late), "2026-W48");
        let monday = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        assert_eq!(period_id(Period::Weekly, monday), "2026-W49");
    }

    #[test]
    fn test_names() {
        assert!(check_name("user-stats").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn test_judge_attempts() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap();
        let ttl = std::time::Duration::from_secs(600);
        let a = Attempt::running("i-1", now, ttl);
        assert_eq!(a.expires_at, "2026-11-23T03:10:00Z");
        let json = a.to_json();
        assert_eq!(
            Attempt::judge(Some(&json), now),
            Judged::Held {
                holder: "i-1".into(),
                until: "2026-11-23T03:10:00Z".into()
            }
        );
        // Not renewed: expired once its expiry passed.
        let later = now + chrono::Duration::seconds(601);
        assert!(matches!(
            Attempt::judge(Some(&json), later),
            Judged::Over { why } if why.contains("expired")
        ));
        let failed = Attempt {
            state: AttemptState::Failed,
            exit_code: Some(3),
            ..a.clone()
        };
        assert!(matches!(
            Attempt::judge(Some(&failed.to_json()), now),
            Judged::Over { why } if why.contains("exit code 3")
        ));
        let ok = Attempt {
            state: AttemptState::Succeeded,
            ..a
        };
        assert_eq!(
            Attempt::judge(Some(&ok.to_json()), later),
            Judged::Succeeded {
                holder: "i-1".into()
            }
        );
        assert!(matches!(
            Attempt::judge(Some("{\"instance_id\":\"i-1\"}"), now),
            Judged::Over { .. }
        ));
        assert!(matches!(Attempt::judge(None, now), Judged::Over { .. }));
        // A ttl beyond chrono's range saturates instead of panicking.
        assert_eq!(
            expiry(now, std::time::Duration::from_secs(u64::MAX)),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
