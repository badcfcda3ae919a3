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

/// Runs `bake ARGS` on a pseudo-terminal (util-linux `script`) with `NO_COLOR` as given and
/// returns what the terminal showed (stdout and stderr together).
fn run_on_a_terminal(args: &str, no_color: Option<&str>) -> String {
    let mut c = Command::new("script");
    c.args(["-qec", &format!("{BAKE} {args}"), "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let o = c.output().expect("script (util-linux) runs");
    // `bake validate` of a bad bake.toml: exit 2 and one error log line.
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn test_color_follows_no_color_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bake.toml");
    std::fs::write(&cfg, "[target]\nasg = \"b\"\n").unwrap();
    let cmd = format!("--config {} validate", cfg.display());
    let esc = "\x1b[";
    let shown = run_on_a_terminal(&cmd, None);
    assert!(shown.contains("asg") && shown.contains(esc), "{shown:?}");
    let shown = run_on_a_terminal(&cmd, Some("1"));
    assert!(
        shown.contains("asg") && !shown.contains(esc),
        "NO_COLOR: {shown:?}"
    );
    // An empty NO_COLOR counts as unset.
    let shown = run_on_a_terminal(&cmd, Some(""));
    assert!(shown.contains(esc), "NO_COLOR empty: {shown:?}");
    let shown = run_on_a_terminal(&format!("--color always {cmd}"), Some("1"));
    assert!(shown.contains(esc), "--color always: {shown:?}");
    let shown = run_on_a_terminal(&format!("--color never {cmd}"), None);
    assert!(
        shown.contains("asg") && !shown.contains(esc),
        "--color never: {shown:?}"
    );
    // Into a pipe: plain unless asked for.
    let piped = |extra: &[&str]| {
        let o = Command::new(BAKE)
            .args(extra)
            .args(["--config", cfg.to_str().unwrap(), "validate"])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(!piped(&[]).contains(esc));
    assert!(piped(&["--color", "always"]).contains(esc));
}

#[test]
fn test_completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        // No bake.toml needed: run where there is none.
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new(BAKE)
            .args(["completion", shell])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{shell}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for sub in [
            "build",
            "release",
            "plan",
            "status",
            "rollback",
            "prune",
            "validate",
            "completion",
        ] {
            assert!(script.contains(sub), "{shell} script lacks {sub}: {script}");
        }
        assert!(
            script.contains("log-format"),
            "{shell} script lacks --log-format"
        );
    }
    let bash = Command::new(BAKE)
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete -F _bake"));
    let o = Command::new(BAKE)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// The AWS CLI's order: `--region` beats `AWS_REGION`, which beats `[aws] region` in bake.toml.
/// The group exists only in the emulator's region (the environment's `AWS_REGION`).
#[test]
fn test_region_flag_beats_env_beats_bake_toml() {
    let w = crate::util::World::new("cli-region");
    w.fleet(crate::util::BASE_AMI, 1);
    w.write_config("");
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    w.write_raw_config(&format!("[aws]\nregion = \"ap-south-1\"\n{text}"));
    // Environment over file: the group is found.
    let r = w.bake(&["status", "-o", "json"]).expect(0);
    assert_eq!(r.json()["auto_scaling_group"], w.asg(), "{r:?}");
    // Flag over environment: the group is looked for in the flag's region.
    let r = w.bake(&["status", "--region", "ap-south-1"]).expect(3);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    // Without the environment's region, the file's applies.
    let o = w
        .command(&["status"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

/// The man pages (`bake manpage DIR`, hidden): one per command, each naming every option of its
/// command (roff writes `-` as `\-`).
#[test]
fn test_man_pages_cover_every_command_and_flag() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let o = Command::new(BAKE)
        .args(["manpage", out.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let page = |name: &str| {
        let p = out.join(format!("{name}.1"));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .replace("\\-", "-")
    };
    let mut cmd = bake::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let flags = |c: &clap::Command| -> Vec<String> {
        c.get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    };
    let top = page("bake");
    for f in flags(&cmd) {
        assert!(top.contains(&f), "bake.1 lacks {f}");
    }
    assert!(top.contains("Exit codes"), "bake.1 lists the exit codes");
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let text = page(&format!("bake-{}", sub.get_name()));
        written += 1;
        assert!(text.contains(&format!("bake-{}", sub.get_name())), "{text}");
        for f in flags(sub) {
            assert!(
                text.contains(&f),
                "bake-{}.1 lacks {f}: {text}",
                sub.get_name()
            );
        }
    }
    assert!(written >= 8, "{written} pages");
    // Nothing else, and not the hidden command itself.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), written);
    assert!(!out.join("bake-manpage.1").exists());
    let release = page("bake-release");
    assert!(release.contains("--cancel-on-interrupt") && release.contains("--region"));
}

/// `bake status` for people: aligned columns with the app version of each instance's AMI (its
/// `bake:app-version` tag), the image's age and the time since launch; the same in JSON.
#[test]
fn test_status_shows_app_version_image_age_and_uptime() {
    let w = crate::util::World::new("cli-status");
    w.fleet(crate::util::BASE_AMI, 2);
    w.rt.block_on(async {
        w.aws
            .ec2
            .create_tags()
            .resources(crate::util::BASE_AMI)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("bake:app-version")
                    .value("2.3.4")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    let r = w.bake(&["status"]).expect(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    // Header, column header, 2 instances, the refresh; then where the image is written down
    // (no image parameter configured: 4 lines) and the drift verdict.
    assert_eq!(lines.len(), 10, "{}", r.stdout);
    assert_eq!(lines[5], "image:", "{}", r.stdout);
    assert_eq!(lines[9], "no drift", "{}", r.stdout);
    let header = lines[1];
    assert!(header.starts_with("INSTANCE "), "{}", r.stdout);
    let app = header.find("  APP").unwrap() + 2;
    let up = header.find("  UP").unwrap() + 2;
    for l in &lines[2..4] {
        assert!(l.starts_with("i-"), "{}", r.stdout);
        assert!(l[app..].starts_with("2.3.4 "), "{}", r.stdout);
        // Launched moments ago: seconds.
        let uptime = l[up..].split_whitespace().next().unwrap();
        assert!(uptime.ends_with('s'), "{uptime}: {}", r.stdout);
        assert!(l.contains(crate::util::BASE_AMI), "{}", r.stdout);
    }
    let j = w.bake(&["status", "-o", "json"]).expect(0).json();
    for i in j["instances"].as_array().unwrap() {
        assert_eq!(i["app_version"], "2.3.4", "{i}");
        assert!(i["launch_time"].as_str().is_some(), "{i}");
        assert!(i["image_created"].as_str().is_some(), "{i}");
    }
}
