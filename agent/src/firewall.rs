//! `bake-agent firewall`: opens the app's port, `[app] port`, in the instance's nftables firewall.
//!
//! The image's ruleset (packer/scripts/harden.sh) accepts TCP to the ports in the set
//! `inet filter app_ports` and holds no port of its own, so the port the app listens on, the port
//! the agent gives it (`PORT`) and the port the firewall lets through are one value. This runs as
//! `ExecStartPre=+` of bake-agent.service (outside the sandbox, as root) and adds the port with
//! `nft add element inet filter app_ports { PORT }`; adding an element that is already in the set
//! is no error, so agent restarts are fine. Nothing from the configuration but the port (a
//! validated `u16`) reaches nft's command line.

use std::path::{Path, PathBuf};

/// Where Debian and Amazon Linux install nft.
pub const DEFAULT_NFT: &str = "/usr/sbin/nft";
/// The table family, table and set the port goes into.
pub const SET: [&str; 3] = ["inet", "filter", "app_ports"];

/// Errors running nft.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// nft could not be started.
    #[error("cannot run '{nft}': {source}")]
    Spawn {
        /// The program.
        nft: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// nft ran and failed.
    #[error("'{nft} {}' failed ({status}): {stderr}", args.join(" "))]
    Failed {
        /// The program.
        nft: PathBuf,
        /// Its arguments.
        args: Vec<String>,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// nft's arguments that add `port` to the set: `add element inet filter app_ports { PORT }`.
#[must_use]
pub fn nft_args(port: u16) -> Vec<String> {
    let mut args = vec!["add".to_owned(), "element".to_owned()];
    args.extend(SET.iter().map(|s| (*s).to_owned()));
    args.extend(["{".to_owned(), port.to_string(), "}".to_owned()]);
    args
}

/// Runs `nft add element inet filter app_ports { port }`.
pub fn open_port(nft: &Path, port: u16) -> Result<(), FirewallError> {
    let args = nft_args(port);
    let out = std::process::Command::new(nft)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| FirewallError::Spawn {
            nft: nft.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(FirewallError::Failed {
            nft: nft.to_owned(),
            args,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_nft_args_hold_only_the_port() {
        assert_eq!(
            nft_args(8080).join(" "),
            "add element inet filter app_ports { 8080 }"
        );
    }

    #[test]
    fn test_failure_names_the_command_and_what_nft_said() {
        let e = open_port(Path::new("/bin/false"), 3000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'/bin/false add element inet filter app_ports { 3000 }' failed"),
            "{e}"
        );
        let e = open_port(Path::new("/nonexistent/nft"), 3000)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot run '/nonexistent/nft'"), "{e}");
    }
}
