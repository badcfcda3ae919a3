//! Command-line options that `bake` and `bake-agent` share.

use crate::logging::{ColorChoice, LogFormat};

/// Log options of every command: verbosity and line format.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct LogArgs {
    /// More log output (-v debug, -vv trace, -vvv also the AWS SDK's).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the log subscriber these options ask for, colour as `color` decides
    /// ([`crate::logging::init_with_color`]). Call once, first thing in `main`.
    pub fn init_logging(&self, color: ColorChoice) {
        crate::logging::init_with_color(self.log_format, self.verbose, color);
    }
}
