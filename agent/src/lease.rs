//! Fleet-wide leases: one instance of the fleet wins the right to do something once per period.
//!
//! A lease is an SSM parameter created with `PutParameter Overwrite=false`, which AWS creates at
//! most once: every other caller gets `ParameterAlreadyExists`. Path:
//! `{prefix}/{asg}/{name}/{period}` (e.g. `/bake/leases/web-asg/user-stats/2026-W48`), value
//! `{"instance_id": "i-…", "started_at": "2026-11-23T16:00:00Z"}`. Leases are never released:
//! the period id makes the next one a new parameter (old ones can expire with a parameter policy
//! or be cleaned up; they are tiny).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;

/// Errors taking a lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// PutParameter failed for another reason than "already exists".
    #[error("taking lease '{path}': {message}")]
    Put {
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

/// The civil date (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
#[must_use]
#[allow(clippy::cast_possible_truncation)] // month and day are < 32; year fits i64
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The period id of `secs` seconds since the epoch (UTC).
#[must_use]
pub fn period_id(period: Period, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match period {
        Period::Daily => format!("{y:04}-{m:02}-{d:02}"),
        Period::Hourly => format!("{y:04}-{m:02}-{d:02}T{:02}", secs.rem_euclid(86_400) / 3600),
        Period::Weekly => {
            // ISO 8601: the week belongs to the year of its Thursday. 1970-01-01 was a Thursday.
            let weekday = (days + 3).rem_euclid(7); // Monday = 0
            let thursday = days - weekday + 3;
            let (ty, _, _) = civil_from_days(thursday);
            let week = (thursday - days_from_civil(ty, 1, 1)) / 7 + 1;
            format!("{ty:04}-W{week:02}")
        }
    }
}

/// Seconds since the epoch now.
#[must_use]
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC, seconds precision.
#[must_use]
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
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

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The winner.
    pub instance_id: String,
    /// When it took the lease (RFC 3339).
    pub started_at: String,
}

/// The outcome of [`acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// We hold it now.
    Won,
    /// Someone else got there first (or we did, in an earlier run); holder if readable.
    Lost(Option<Holder>),
}

/// Tries to create the lease parameter at `path` for `instance_id`.
pub async fn acquire(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
    instance_id: &str,
) -> Result<Outcome, LeaseError> {
    let holder = Holder {
        instance_id: instance_id.to_owned(),
        started_at: rfc3339(now_secs()),
    };
    let value = serde_json::to_string(&holder).expect("a struct of strings serializes");
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
        Ok(_) => Ok(Outcome::Won),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(PutParameterError::ParameterAlreadyExists(_))
            ) =>
        {
            let current = ssm.get_parameter().name(path).send().await.ok();
            let holder = current
                .and_then(|o| o.parameter().and_then(|p| p.value().map(ToOwned::to_owned)))
                .and_then(|v| serde_json::from_str::<Holder>(&v).ok());
            Ok(Outcome::Lost(holder))
        }
        Err(e) => Err(LeaseError::Put {
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

    #[test]
    fn test_period_ids() {
        // 2026-11-23T16:25:36Z, a Monday.
        let t = 1_795_451_136;
        assert_eq!(rfc3339(t), "2026-11-23T16:25:36Z");
        assert_eq!(period_id(Period::Daily, t), "2026-11-23");
        assert_eq!(period_id(Period::Hourly, t), "2026-11-23T16");
        assert_eq!(period_id(Period::Weekly, t), "2026-W48");
    }

    #[test]
    fn test_iso_week_edges() {
        let at = |y, m, d| days_from_civil(y, m, d) * 86_400;
        // 2021-01-03 (Sunday) is in 2020-W53; 2024-12-30 (Monday) is in 2025-W01.
        assert_eq!(period_id(Period::Weekly, at(2021, 1, 3)), "2020-W53");
        assert_eq!(period_id(Period::Weekly, at(2021, 1, 4)), "2021-W01");
        assert_eq!(period_id(Period::Weekly, at(2024, 12, 30)), "2025-W01");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn test_names() {
        assert!(check_name("user-stats").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }
}
