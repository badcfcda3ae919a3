//! Command line of `bake`.
use std::path::PathBuf;

use bake_common::logging::LogFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Bake a hardened AMI with Packer and roll it across an Auto Scaling Group.
#[derive(Debug, Parser)]
#[command(name = "bake", version = bake_common::clap_version!(), rename_all = "kebab-case",
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
    /// Configuration file.
    #[arg(long, short = 'c', global = true, default_value = "bake.toml", env = "BAKE_CONFIG")]
    pub config: PathBuf,
    /// More log output (-v debug, -vv trace, -vvv also the AWS SDK's).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Result format on stdout.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Result format on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// `bake` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The fleet: instances, AMI, launch template version, health, lifecycle state.
    Status {
        /// Auto Scaling Group name (default: from the config).
        #[arg(long)]
        asg: Option<String>,
    },
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
