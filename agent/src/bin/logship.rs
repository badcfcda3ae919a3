//! `bake-logship`: log shipping alone, without the rest of the agent.
//!
//! Usage: `bake-logship CONFIG.toml` where the file holds `instance_id = "…"` and a `[logs]`
//! table as in agent.toml. AWS settings come from the SDK's standard chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, …). It ships until SIGTERM/SIGINT, then flushes within 10 s and exits 0.
//! Used by the crash/restart tests and by bench/logs.sh. Exit codes: 0 ok, 2 bad config, 1 other.
use std::process::ExitCode;
use std::time::Duration;

use bake_agent::logs::{LogsConfig, LogsSettings, Shipper};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    instance_id: String,
    #[serde(default)]
    logs: LogsConfig,
}

async fn run(path: &str) -> Result<(), (u8, String)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| (2, format!("cannot read '{path}': {e}")))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| (2, format!("{path}: {e}")))?;
    let settings = LogsSettings::with_config(&cfg.logs).map_err(|e| (2, format!("{path}: {e}")))?;
    // Only the client it uses: the other services' clients would cost heap and code for nothing.
    let conf = bake_common::aws::sdk_config(&bake_common::aws::AwsSettings::default()).await;
    let logs: aws_sdk_cloudwatchlogs::Client =
        bake_common::aws_client!(aws_sdk_cloudwatchlogs, &conf);
    let (_app, handle) = Shipper::start(logs, &settings, &cfg.instance_id)
        .map_err(|e| (2, format!("{path}: {e}")))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| (1, format!("signal handler: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if !handle.shutdown(Duration::from_secs(10)).await {
        return Err((1, "log shipping did not finish within 10s".into()));
    }
    Ok(())
}

fn main() -> ExitCode {
    bake_common::logging::init(bake_common::logging::LogFormat::default(), 0);
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: bake-logship CONFIG.toml");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}
