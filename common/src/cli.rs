//! Command-line options that `bake` and `bake-agent` share.

use std::path::{Path, PathBuf};

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

/// Writes the man pages of `cmd` and of every one of its commands into `dir` (created if
/// missing) with clap_mangen: `NAME.1` and `NAME-COMMAND.1`. Returns the pages in `dir`, sorted.
///
/// # Errors
/// The directory cannot be created or a page written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}
