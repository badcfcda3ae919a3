//! `bake-agent`: makes an instance of a bake AMI a healthy member of its fleet.
//!
//! Configuration: `/etc/bake/agent.toml` (`--config`). Exit codes: [`exit::Exit`].

/// Command line.
pub mod cli;
/// Exit codes and error reporting.
pub mod exit;
/// Log shipping to CloudWatch Logs.
pub mod logs;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::exit::{Coded, Exit};

/// Runs one command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Check => {
            let path = &cli.global.config;
            let text = std::fs::read_to_string(path)
                .map_err(|e| Coded { code: Exit::Config, message: format!("cannot read '{}': {e}", path.display()) })?;
            let _: toml::Table = toml::from_str(&text)
                .map_err(|e| Coded { code: Exit::Config, message: format!("{}: {e}", path.display()) })
                .context("checking the configuration")?;
            println!("{}: ok", path.display());
            Ok(Exit::Ok)
        }
    }
}
