//! Command-line manners: a closed stdout, shell completions.

use std::process::{Command, Stdio};

use crate::util::AGENT;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.toml")
}

#[test]
fn test_closed_stdout_exits_141_without_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(AGENT)
        .arg("--config")
        .arg(example())
        .arg("check")
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "stderr not quiet: {stderr}");
}

#[test]
fn test_completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        // No agent.toml needed: the default path need not exist.
        let o = Command::new(AGENT)
            .args(["--config", "/nonexistent/agent.toml", "completion", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{shell}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for sub in ["run", "check", "job", "reap", "firewall", "completion"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}: {script}");
        }
        assert!(script.contains("bake-agent"), "{shell}");
    }
}
