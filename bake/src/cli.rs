//! Command line of `bake`.
use std::path::PathBuf;

use bake_common::cli::LogArgs;
use bake_common::logging::ColorChoice;
use clap::{Args, Parser, Subcommand};

use crate::output::Output;

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
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "bake.toml",
        env = "BAKE_CONFIG"
    )]
    pub config: PathBuf,
    /// Verbosity and log line format.
    #[command(flatten)]
    pub log: LogArgs,
    /// AWS region; wins over AWS_REGION / AWS_DEFAULT_REGION, which win over [aws] region in
    /// bake.toml, which wins over the profile's region.
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Named profile of ~/.aws/config; wins over AWS_PROFILE, which wins over [aws] profile in
    /// bake.toml.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Colour in log lines on stderr: auto (on a terminal, unless NO_COLOR is set), always,
    /// never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Result format on stdout.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `bake` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bake an AMI with Packer (or reuse one built from the same inputs); prints its id.
    Build(BuildCommandArgs),
    /// Build (or take --ami), make it the launch template's default and roll it out with an
    /// instance refresh, watched to the end.
    Release(ReleaseArgs),
    /// What `release` would do, changing nothing: the image change, the new launch template
    /// version, the refresh preferences and alarms, the instances replaced and in what batches.
    /// Exit 0 when there is nothing to do, 11 when a release would change something.
    Plan(PlanArgs),
    /// The fleet: instances, AMI, app version, launch template version, health, lifecycle
    /// state, AZ, the health of each in the group's target groups (DescribeTargetHealth; a
    /// denied call is a warning, not an error), and the current or last instance refresh.
    Status {
        /// Watch the refresh in progress to its end (exit code as for `release`).
        #[arg(long)]
        watch: bool,
        /// Stop watching after this long (e.g. "30m"; default refresh.timeout).
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Exit 13 when the image parameter, the launch template's default version, the
        /// group's version or the running instances disagree about the image (drift); a
        /// refresh in progress is not drift.
        #[arg(long)]
        check: bool,
        /// Also show the last rollout per instance: launched, in service, draining and
        /// terminated times with the release each ran (from the group's scaling activities).
        #[arg(long)]
        timeline: bool,
    },
    /// Boot-test an image: launch one instance from it with the group's launch template, outside
    /// the group and the load balancer, wait for `bake-agent check --live` on it (units, app,
    /// readiness, secrets, EFS, firewall), tag the image bake:tested=pass|fail, terminate the
    /// instance. Exit 0 on pass, 14 on fail. An image tagged pass already is not tested again.
    TestImage {
        /// The image (`ami-…`).
        ami: String,
        /// Longest test, launch to report (default image_test.timeout, 20m).
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// Roll back the refresh in progress, or release the previous image again.
    Rollback(WatchArgs),
    /// Retire old bake-made AMIs in stages: deprecate, then disable (prune.disable_after, 7d),
    /// then deregister and delete their snapshots (prune.deregister_after, 7d). Never the newest
    /// K nor any in use (every launch template version, group, the image parameter, instance),
    /// and an AMI in use again is restored.
    Prune {
        /// Keep the newest K (default prune.keep, 5).
        #[arg(long)]
        keep: Option<u32>,
        /// Only say what each AMI's run would do and why; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy a bake-made AMI to other regions, encrypted, tagged with its provenance and
    /// bake:promoted-from / bake:promoted-stage, and share the copies with other accounts. A
    /// second run finds the copies it made (bake:promoted-from) instead of copying again.
    Promote(PromoteArgs),
    /// Check bake.toml and the Packer template (`packer validate`) without touching AWS.
    Validate,
    /// Print a shell completion script: `bake completion bash > ~/.local/share/bash-completion/completions/bake`
    /// (zsh: a `_bake` file on `$fpath`; fish: `~/.config/fish/completions/bake.fish`). Reads
    /// no configuration.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff) into DIR: bake.1 and bake-COMMAND.1 for every command (for
    /// packagers: `bake manpage target/man`, then install DIR/*.1 into /usr/share/man/man1).
    /// Reads no configuration.
    #[command(hide = true)]
    Manpage {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
}

/// Writes the man pages of `bake` and of every command into `dir`; returns the files written.
///
/// # Errors
/// The directory cannot be created or a page written.
pub fn manpages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    bake_common::cli::write_man_pages(<Cli as clap::CommandFactory>::command(), dir)
}

/// Whether a command line clap refused asks for `--output json` (`-o json`, `-ojson`,
/// `-o=json`, `--output json`, `--output=json`), so that its error is a JSON document too.
#[must_use]
pub fn asks_for_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().enumerate().any(|(i, a)| {
        matches!(a.as_str(), "-ojson" | "-o=json" | "--output=json")
            || (matches!(a.as_str(), "-o" | "--output")
                && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// The error document of a command line clap refused: code `usage`, exit code 2.
#[must_use]
pub fn usage_error_json(e: &clap::Error) -> serde_json::Value {
    let text = e.render().to_string();
    let message = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    serde_json::json!({
        "schema_version": crate::output::SCHEMA_VERSION,
        "error": message,
        "code": "usage",
        "exit_code": crate::exit::Exit::Config as u8,
        "causes": [],
    })
}

/// The completion script of `bake` for `shell`.
#[must_use]
pub fn completion(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "bake",
        &mut script,
    );
    String::from_utf8_lossy(&script).into_owned()
}

/// Options of `bake build`.
#[derive(Debug, Args, Clone, Default)]
pub struct BuildArgs {
    /// Build even if an AMI with the same inputs hash exists.
    #[arg(long)]
    pub force: bool,
    /// The app release to bake (overrides app.release).
    #[arg(long)]
    pub app_release: Option<String>,
}

/// Options of `bake build`.
#[derive(Debug, Args, Clone, Default)]
pub struct BuildCommandArgs {
    /// Build options.
    #[command(flatten)]
    pub build: BuildArgs,
    /// For a schedule (the nightly rebake): say whether any input changed since the newest
    /// image of the template (the base image, the package indexes of packer.package_indexes,
    /// the template, the agent, the app) and bake only then; exit 0 either way.
    #[arg(long, conflicts_with = "force")]
    pub if_changed: bool,
    /// Boot-test the image built or reused (as `bake test-image`); exit 14 when it fails.
    #[arg(long)]
    pub test: bool,
}

/// Options for watching a refresh.
#[derive(Debug, Args, Clone, Default)]
pub struct WatchArgs {
    /// Start the refresh and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop watching after this long (e.g. "30m"; default refresh.timeout); the refresh goes on.
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    /// An interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the refresh instead of detaching from it.
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

/// Options of `bake release`.
#[derive(Debug, Args, Clone, Default)]
pub struct ReleaseArgs {
    /// Release this AMI instead of building one.
    #[arg(long, value_name = "ID")]
    pub ami: Option<String>,
    /// Build options.
    #[command(flatten)]
    pub build: BuildArgs,
    /// Watch options.
    #[command(flatten)]
    pub watch: WatchArgs,
    /// If a refresh is in progress, wait for it to end, then release.
    #[arg(long)]
    pub wait_for_current: bool,
    /// Boot-test the image first (as `bake test-image`) unless it passed already; a failed test
    /// (exit 14) releases nothing.
    #[arg(long, conflicts_with = "untested")]
    pub test: bool,
    /// Release an image that is not tagged bake:tested=pass (never boot-tested, or failed).
    /// Without it, and with image_test.required (the default), such a release exits 15.
    #[arg(long)]
    pub untested: bool,
    /// Release without running the migration of bake.toml's [migrate] (it ran already, or the
    /// release needs none); said on stderr.
    #[arg(long)]
    pub skip_migrate: bool,
}

/// Options of `bake promote`.
#[derive(Debug, Args, Clone, Default)]
pub struct PromoteArgs {
    /// The image (`ami-…`), in the command's region (--region, AWS_REGION, aws.region); it must
    /// carry bake:inputs-hash.
    pub ami: String,
    /// Destination regions, comma-separated or repeated. The command's own region gets no copy:
    /// the source itself is shared there.
    #[arg(long, required = true, value_delimiter = ',', value_name = "REGION", value_parser = parse_region)]
    pub to: Vec<String>,
    /// Share every resulting image (launch permission) and its snapshots (create-volume
    /// permission) with this account (12 digits); repeatable. Needs --kms-key or
    /// promote.kms_key for copies: EBS shares no snapshot on the default key.
    #[arg(long = "account", value_name = "ID", value_parser = parse_account)]
    pub accounts: Vec<String>,
    /// KMS key of the copies' snapshots (key id, alias/NAME, key or alias ARN; a multi-Region
    /// key's ARN serves every region); wins over promote.kms_key. Default: each destination
    /// region's default EBS key.
    #[arg(long, value_name = "KEY", value_parser = parse_kms_key)]
    pub kms_key: Option<String>,
    /// The stage the image was released to, recorded as bake:promoted-stage (default
    /// release.stage; one of the two is required).
    #[arg(long, value_name = "NAME", value_parser = parse_stage)]
    pub from_stage: Option<String>,
    /// Longest wait for each copy to become available (e.g. "30m"; default promote.timeout,
    /// 1h); AWS goes on copying after it.
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

/// A region name (`--to`): lowercase letters, digits and '-', as `us-east-1`.
fn parse_region(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.contains('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not a region name (e.g. us-east-1)"))
}

/// An AWS account id (`--account`): 12 digits.
fn parse_account(s: &str) -> Result<String, String> {
    (s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()))
        .then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not an AWS account id (12 digits)"))
}

fn parse_kms_key(s: &str) -> Result<String, String> {
    crate::config::check_kms_key(s).map(|()| s.to_owned())
}

fn parse_stage(s: &str) -> Result<String, String> {
    crate::config::check_stage(s).map(|()| s.to_owned())
}

/// Options of `bake plan`.
#[derive(Debug, Args, Clone, Default)]
pub struct PlanArgs {
    /// Plan the release of this AMI instead of the one `build` would make or reuse.
    #[arg(long, value_name = "ID")]
    pub ami: Option<String>,
    /// Build options, as for `release` (`--force`: a release would build anew).
    #[command(flatten)]
    pub build: BuildArgs,
}

/// A watch timeout (`--timeout`): a duration as in the config files
/// ([`bake_common::duration::parse`]), more than 0 and at most [`crate::config::MAX_TIMEOUT`],
/// checked before anything is changed in AWS.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = bake_common::duration::parse("--timeout", s).map_err(|e| e.to_string())?;
    crate::config::check_duration(d, false, crate::config::MAX_TIMEOUT)
        .map_err(|m| format!("--timeout: {m}"))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn test_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_a_refused_command_line_asking_for_json_gets_a_document() {
        let args = |a: &[&str]| {
            a.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        for a in [
            &["bake", "-o", "json", "bogus"][..],
            &["bake", "status", "--output", "json", "--nope"],
            &["bake", "-ojson", "x"],
            &["bake", "--output=json", "x"],
            &["bake", "-o=json", "x"],
        ] {
            assert!(asks_for_json(args(a)), "{a:?}");
        }
        assert!(!asks_for_json(args(&["bake", "status", "--nope"])));
        assert!(!asks_for_json(args(&["bake", "-o", "text", "json"])));
        let e = Cli::try_parse_from(["bake", "status", "--nope", "-o", "json"]).unwrap_err();
        let doc = usage_error_json(&e);
        assert_eq!(doc["code"], "usage");
        assert_eq!(doc["exit_code"], 2);
        assert_eq!(doc["schema_version"], 1);
        let message = doc["error"].as_str().unwrap();
        assert!(message.contains("--nope"), "{message}");
        assert!(!message.starts_with("error"), "{message}");
    }

    #[test]
    fn test_promote_arguments_are_checked() {
        let parse = |a: &[&str]| {
            let mut argv = vec!["bake", "promote", "ami-1"];
            argv.extend_from_slice(a);
            Cli::try_parse_from(argv)
        };
        match parse(&[
            "--to",
            "us-east-1,eu-west-1",
            "--to",
            "ap-south-1",
            "--account",
            "111122223333",
        ])
        .unwrap()
        .command
        {
            Command::Promote(p) => {
                assert_eq!(p.to, ["us-east-1", "eu-west-1", "ap-south-1"]);
                assert_eq!(p.accounts, ["111122223333"]);
            }
            other => panic!("{other:?}"),
        }
        for (args, want) in [
            (&["--account", "111122223333"][..], "--to"),
            (&["--to", "US_EAST"], "not a region name"),
            (
                &["--to", "us-east-1", "--account", "12345"],
                "not an AWS account id",
            ),
            (
                &["--to", "us-east-1", "--from-stage", "a b"],
                "not a stage name",
            ),
            (
                &["--to", "us-east-1", "--kms-key", "arn:aws:s3:::b"],
                "not a KMS key",
            ),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn test_timeout_is_bounded() {
        assert!(parse_timeout("30m").is_ok());
        assert!(parse_timeout("0s").unwrap_err().contains("more than 0s"));
        let e = parse_timeout("500000000000y").unwrap_err();
        assert!(e.contains("longer than the maximum"), "{e}");
        let e = Cli::try_parse_from(["bake", "release", "--timeout", "500000000000y"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--timeout"), "{e}");
    }

    #[test]
    fn test_timeout_is_parsed_as_config_durations_are() {
        // The one duration parser of the workspace: same text as a bad `refresh.timeout`.
        let e = parse_timeout("5x").unwrap_err();
        let config = bake_common::duration::parse("--timeout", "5x")
            .unwrap_err()
            .to_string();
        assert_eq!(e, config);
        assert!(e.starts_with("--timeout: \"5x\" is not a duration"), "{e}");
        assert_eq!(
            parse_timeout(" 90s ").unwrap(),
            std::time::Duration::from_secs(90)
        );
    }
}
