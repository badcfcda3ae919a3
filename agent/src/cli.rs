//! Command line of `bake-agent`.
use std::path::PathBuf;

use bake_common::logging::LogFormat;
use clap::{Args, Parser, Subcommand};

/// Makes an instance of a bake AMI a healthy member of its fleet.
#[derive(Debug, Parser)]
#[command(name = "bake-agent", version = bake_common::clap_version!(), rename_all = "kebab-case",
          after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub struct Global {
    /// Baked-in configuration file (userdata TOML is laid over it).
    #[arg(long, short = 'c', global = true, default_value = "/etc/bake/agent.toml", env = "BAKE_AGENT_CONFIG")]
    pub config: PathBuf,
    /// More log output (-v debug, -vv trace, -vvv also the AWS SDK's).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `bake-agent` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration file and explain errors by key.
    Check,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn test_cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
