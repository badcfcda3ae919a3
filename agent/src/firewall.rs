//! `bake-agent firewall`: opens the app's port, `[app] port`, in the instance's nftables firewall.
//!
//! The image's ruleset (packer/scripts/harden.sh) accepts TCP to the ports in the set
//! `inet filter app_ports` and holds no port of its own, so the port the app listens on, the port
//! the agent gives it (`PORT`) and the port the firewall lets through are one value. This runs as
//! `ExecStartPre=+` of bake-agent.service (outside the sandbox, as root) and adds the port with
//! `nft add element inet filter app_ports { PORT }`; adding an element that is already in the set
//! is no error, so agent restarts are fine. Nothing from the configuration but the port (a
//! validated `u16`) reaches nft's command line.
//!
//! `bake-agent check --live` reads the set back ([`list_set`]): `nft -j list set inet filter
//! app_ports`, nft's JSON output (nftables 1.0.6 on Debian 12), parsed by [`parse_set`].

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
    /// nft's output could not be understood.
    #[error("'{nft}' printed what is not a set: {message}")]
    Output {
        /// The program.
        nft: PathBuf,
        /// What is wrong with it.
        message: String,
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
    run(nft, nft_args(port)).map(drop)
}

/// Runs `nft ARGS` with no stdin; its output when it exits 0.
fn run(nft: &Path, args: Vec<String>) -> Result<std::process::Output, FirewallError> {
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
    Ok(out)
}

/// nft's arguments that list the set as JSON: `-j list set inet filter app_ports`.
#[must_use]
pub fn nft_list_args() -> Vec<String> {
    let mut args = vec!["-j".to_owned(), "list".to_owned(), "set".to_owned()];
    args.extend(SET.iter().map(|s| (*s).to_owned()));
    args
}

/// The ports in the set, as inclusive ranges (a single port is `p..=p`): `nft -j list set inet
/// filter app_ports`.
pub fn list_set(nft: &Path) -> Result<Vec<std::ops::RangeInclusive<u16>>, FirewallError> {
    let out = run(nft, nft_list_args())?;
    parse_set(&String::from_utf8_lossy(&out.stdout)).map_err(|message| FirewallError::Output {
        nft: nft.to_owned(),
        message,
    })
}

/// The elements of the first set in nft's JSON (`{"nftables": [{"metainfo": …}, {"set": {…,
/// "elem": [3000, …]}}]}`; an empty set has no `elem`). An element is a number, a `{"range":
/// [LOW, HIGH]}` (sets with `flags interval`) or either wrapped as `{"elem": {"val": …}}`
/// (elements with a timeout or counter).
pub fn parse_set(text: &str) -> Result<Vec<std::ops::RangeInclusive<u16>>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let set = doc["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i.get("set")))
        .ok_or("no set in the output")?;
    let Some(elems) = set.get("elem") else {
        return Ok(Vec::new());
    };
    let port = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("element {v} is not a port"))
    };
    let mut out = Vec::new();
    for e in elems.as_array().ok_or("elem is not a list")? {
        let e = e.get("elem").and_then(|w| w.get("val")).unwrap_or(e);
        match e.get("range").and_then(serde_json::Value::as_array) {
            Some(r) if r.len() == 2 => out.push(port(&r[0])?..=port(&r[1])?),
            Some(_) => return Err(format!("element {e} is not a range of two ports")),
            None => {
                let p = port(e)?;
                out.push(p..=p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_set_of_nft_1_0_6() {
        // `nft -j list set inet filter app_ports` on Debian 12 (nftables 1.0.6), one element.
        let one = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "app_ports", "table": "filter", "type": "inet_service", "handle": 3, "elem": [3000]}}]}"#;
        assert_eq!(parse_set(one).unwrap(), vec![3000..=3000]);
        // The image's empty set: no "elem" at all.
        let empty = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "app_ports", "table": "filter", "type": "inet_service", "handle": 3}}]}"#;
        assert!(parse_set(empty).unwrap().is_empty());
        let mixed = r#"{"nftables": [{"set": {"elem": [80, {"range": [8000, 8010]}, {"elem": {"val": 443, "timeout": 60}}]}}]}"#;
        assert_eq!(
            parse_set(mixed).unwrap(),
            vec![80..=80, 8000..=8010, 443..=443]
        );
        assert!(parse_set("Error: No such file or directory").is_err());
        assert!(parse_set(r#"{"nftables": [{"metainfo": {}}]}"#).is_err());
        assert!(parse_set(r#"{"nftables": [{"set": {"elem": [70000]}}]}"#)
            .unwrap_err()
            .contains("70000"));
        assert_eq!(
            nft_list_args().join(" "),
            "-j list set inet filter app_ports"
        );
    }

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
