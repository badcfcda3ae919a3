//! `bake-agent job NAME [--period …] -- CMD…`: CMD runs only on the lease winner.

use std::path::Path;
use std::process::ExitCode;

use crate::daemon;
use crate::exit::{coded, Exit};
use crate::lease::{self, Outcome, Period};

/// Takes this period's lease for `name`; runs `cmd` (inherited stdio and environment) if won and
/// returns its exit code; a lost lease prints the winner and returns 0.
pub async fn run(
    config: &Path,
    name: &str,
    period: Period,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    lease::check_name(name).map_err(|e| coded(Exit::Config, e))?;
    let boot = daemon::boot(config).await?;
    let group = boot
        .identity
        .asg_name
        .clone()
        .unwrap_or_else(|| "standalone".to_owned());
    let period_id = lease::period_id(period, lease::now_secs());
    let path = lease::job_path(&boot.settings.lease.prefix, &group, name, &period_id);
    match lease::acquire(&boot.aws.ssm, &path, &boot.identity.instance_id)
        .await
        .map_err(|e| coded(Exit::Aws, e))?
    {
        Outcome::Lost(holder) => {
            let who = holder.map_or_else(
                || "another instance".to_owned(),
                |h| format!("{} (since {})", h.instance_id, h.started_at),
            );
            println!("job {name}: {who} holds the lease for {period_id}; not running here");
            Ok(Exit::Ok.into())
        }
        Outcome::Won => {
            tracing::info!(job = name, lease = %path, "lease won; running the job");
            let status = tokio::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .status()
                .await
                .map_err(|e| {
                    coded(
                        Exit::Config,
                        format!("job {name}: cannot run {}: {e}", cmd[0]),
                    )
                })?;
            let code = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => u8::try_from(c).unwrap_or(1),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
                (None, None) => 1,
            };
            println!(
                "job {name}: ran on {} for {period_id}, exit code {code}",
                boot.identity.instance_id
            );
            Ok(ExitCode::from(code))
        }
    }
}
