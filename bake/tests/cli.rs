//! Command-line manners that need no AWS: a closed stdout, colour, shell completions.

use std::process::{Command, Stdio};

const BAKE: &str = env!("CARGO_BIN_EXE_bake");

/// A `bake.toml` with no `[packer]` and no `[target]`: `validate` checks it without AWS.
fn minimal_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("bake.toml");
    std::fs::write(
        &p,
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    p
}

/// Runs `bake ARGS` with its stdout a pipe whose read end is already closed.
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BAKE)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn test_closed_stdout_exits_141_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = minimal_config(&dir);
    let cfg = cfg.to_str().unwrap();
    for output in ["text", "json"] {
        let o = run_into_closed_pipe(&["--config", cfg, "validate", "-o", output]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "-o {output}: {stderr}");
        assert!(!stderr.contains("panicked"), "-o {output}: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "-o {output}: stderr not quiet: {stderr}"
        );
    }
    // The same command with a reader prints its result and exits 0.
    let o = Command::new(BAKE)
        .args(["--config", cfg, "validate"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(": valid"));
}
