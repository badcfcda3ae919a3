//! Command line of `bake-agent`.
use std::path::PathBuf;

use bake_common::cli::LogArgs;
use clap::{Args, Parser, Subcommand};

use crate::lease::Period;

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
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "/etc/bake/agent.toml",
        env = "BAKE_AGENT_CONFIG"
    )]
    pub config: PathBuf,
    /// Verbosity and log line format.
    #[command(flatten)]
    pub log: LogArgs,
    /// The state file `run` keeps (app state, restarts, readiness, lifecycle, log shipping) and
    /// `status` reads.
    #[arg(
        long,
        global = true,
        default_value = crate::status::DEFAULT_FILE,
        env = "BAKE_AGENT_STATUS_FILE"
    )]
    pub status_file: PathBuf,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    /// Aligned lines for a person.
    #[default]
    Text,
    /// The state file's JSON document, as it is.
    Json,
}

/// `bake-agent` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon (systemd's `bake-agent.service`): identity, secrets, mounts, supervise the app,
    /// lifecycle hooks, drain on termination.
    Run,
    /// How the running agent is: app state and pid, restarts, readiness, lifecycle, log
    /// shipping per source (group and stream, backlog, lag, last put, last error), last error
    /// (from the state file `run` keeps). Exit 0 when the agent runs, 9 when it does not (no
    /// state file, or the process that wrote it is gone).
    Status {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = StatusOutput::Text)]
        output: StatusOutput,
    },
    /// Validate the configuration file (and a userdata file) exactly as `run` would, and explain
    /// errors by key. With `--live`: check the running instance instead (units, app, readiness,
    /// secrets, EFS, firewall); exit 10 when a check fails.
    Check {
        /// Also lay this userdata file over the configuration, as the instance would (gzip,
        /// scripts and binary are handled as on the instance).
        #[arg(long, conflicts_with = "live")]
        userdata: Option<PathBuf>,
        /// Check the instance as it runs now, with the configuration `run` reads (baked file +
        /// userdata from IMDS): systemd units active and none failed, the app running, the app
        /// ready, `[secrets] path` readable (a count only), `[efs]` mounted and writable, `[app]
        /// port` in the firewall. Exit 0 when all pass, 10 when one fails.
        #[arg(long)]
        live: bool,
        /// `--live` output: aligned lines, or the report document (JSON).
        #[arg(long, short = 'o', value_enum, default_value_t = crate::live::CheckOutput::Text,
              requires = "live")]
        output: crate::live::CheckOutput,
        /// `--live`: first wait (reading the state file every second) until the agent's
        /// readiness is decided or this long passed, e.g. `15min`.
        #[arg(long, value_parser = parse_wait, requires = "live")]
        wait: Option<std::time::Duration>,
        /// `--live` on an image-test instance (tag `bake:image-test`): write the report to the
        /// SSM parameter the tag names. Elsewhere: print that there is nothing to report and
        /// exit 0 without checking (bake-image-test.service runs at every boot).
        #[arg(long, requires = "live")]
        report: bool,
        /// `--live`: the nft program (`nft -j list set inet filter app_ports`).
        #[arg(long, default_value = crate::firewall::DEFAULT_NFT, requires = "live")]
        nft: PathBuf,
        /// `--live`: the systemctl program (`systemctl is-active`, `systemctl list-units`).
        #[arg(long, default_value = crate::live::DEFAULT_SYSTEMCTL, requires = "live")]
        systemctl: PathBuf,
    },
    /// Run CMD once per period on one instance of the fleet (a failed or abandoned try is retaken).
    Job {
        /// Job name (letters, digits, '.', '_', '-'), part of the lease path.
        name: String,
        /// Lease period: one run per ISO week, UTC day or UTC hour.
        #[arg(long, value_enum, default_value_t = Period::Weekly)]
        period: Period,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// On a migration instance (tag `bake:migrate`, launched by `bake release` from the new
    /// image): run CMD once (a create-only lease under the tag's path), writing its output and
    /// its result there for bake. Elsewhere: print that there is nothing to run and exit 0
    /// (bake-migrate.service runs at every boot). Exit code: CMD's.
    Migrate {
        /// The migration command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Delete expired uploads: files by mtime, then empty directories; never follows symlinks.
    /// Without DIR: `[uploads] dir` of the configuration (baked file + userdata), skipped with a
    /// warning (exit 0) when it is missing or the EFS file system is not mounted.
    Reap {
        /// The upload directory; default: `[uploads] dir`.
        dir: Option<PathBuf>,
        /// Age limit, e.g. `13d`; default: `[uploads] max_age` (13d).
        #[arg(long, value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Open `[app] port` in the instance's firewall: `nft add element inet filter app_ports
    /// { PORT }` (systemd's `ExecStartPre=+` of bake-agent.service). Reads the configuration as
    /// `run` does (baked file + userdata); without `[app] port`: a warning, exit 0.
    Firewall {
        /// The nft program.
        #[arg(long, default_value = crate::firewall::DEFAULT_NFT)]
        nft: PathBuf,
    },
    /// Mount `[efs]` at its mount point (systemd's `ExecStartPre=+` of bake-agent.service: the
    /// daemon itself does not mount). Reads the configuration as `run` does (baked file +
    /// userdata); already mounted or no `[efs]`: nothing to do, exit 0; mount failed: exit 6.
    Mount,
    /// Write the software bill of materials of a root file system (CycloneDX 1.5 JSON): its OS
    /// packages (dpkg or rpm database), the app's installed npm packages (its
    /// package-lock.json), the agent's crates (from its lockfile, built in). Run by the image
    /// build (packer/scripts/cleanup.sh) after the last package change. Exit 2 when the root
    /// has no package database or a file cannot be read or written.
    Sbom {
        /// The root file system to describe.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The app's directory inside the root.
        #[arg(long, default_value = "/opt/app")]
        app_dir: PathBuf,
        /// Write the document here (0644, replaced atomically); default: stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also print it framed for `bake build` (gzip, base64, SHA-256: `bake-sbom-begin` …
        /// `bake-sbom-end`), the way out of an EC2 build instance.
        #[arg(long)]
        frame: bool,
        /// The rpm program (rpm-based roots).
        #[arg(long, default_value = "rpm")]
        rpm: PathBuf,
    },
    /// Print a shell completion script: `bake-agent completion bash >
    /// /etc/bash_completion.d/bake-agent` (zsh: a `_bake-agent` file on `$fpath`; fish:
    /// `~/.config/fish/completions/bake-agent.fish`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The completion script of `bake-agent` for `shell`.
#[must_use]
pub fn completion(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "bake-agent",
        &mut script,
    );
    String::from_utf8_lossy(&script).into_owned()
}

/// `bake-agent manpage DIR`: writes the man pages (roff) into DIR, bake-agent.1 and
/// bake-agent-COMMAND.1 for every command (for packagers: `bake-agent manpage target/man`, then
/// DIR/*.1 into /usr/share/man/man1). Hidden, and not one of [`Command`]: it is answered from
/// the raw arguments before anything else (no configuration, no logging).
#[derive(Debug, Parser)]
#[command(name = "bake-agent manpage", bin_name = "bake-agent manpage")]
pub struct ManpageArgs {
    /// Directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

/// Answers `bake-agent manpage DIR` when `args` (the process's arguments) are that: the exit
/// code, `None` for any other command line.
pub fn manpage_command(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<std::process::ExitCode> {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    if args.get(1).is_none_or(|a| a != "manpage") {
        return None;
    }
    let m = ManpageArgs::try_parse_from(&args[1..]).unwrap_or_else(|e| e.exit());
    Some(match manpages(&m.dir) {
        Ok(pages) => {
            for p in pages {
                println!("{}", p.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: cannot write man pages into '{}': {e}",
                m.dir.display()
            );
            crate::exit::Exit::Config.into()
        }
    })
}

/// Writes the man pages of `bake-agent` and of every command into `dir`; returns the files written.
///
/// # Errors
/// The directory cannot be created or a page written.
pub fn manpages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    bake_common::cli::write_man_pages(<Cli as clap::CommandFactory>::command(), dir)
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    bake_common::duration::parse("--wait", s).map_err(|e| e.to_string())
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    bake_common::duration::parse("--older-than", s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn test_cli_is_consistent() {
        Cli::command().debug_assert();
        ManpageArgs::command().debug_assert();
    }

    #[test]
    fn test_man_pages_cover_every_command_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let pages = manpages(dir.path()).unwrap();
        let page = |name: &str| {
            let p = dir.path().join(format!("{name}.1"));
            assert!(pages.contains(&p), "{} not written: {pages:?}", p.display());
            std::fs::read_to_string(&p).unwrap().replace("\\-", "-")
        };
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let flags = |c: &clap::Command| -> Vec<String> {
            c.get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        };
        let top = page("bake-agent");
        assert!(top.contains("Exit codes"), "{top}");
        for f in flags(&cmd) {
            assert!(top.contains(&f), "bake-agent.1 lacks {f}");
        }
        let subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
        assert!(subs.len() >= 7, "{subs:?}");
        for sub in &subs {
            let name = format!("bake-agent-{}", sub.get_name());
            let text = page(&name);
            for f in flags(sub) {
                assert!(text.contains(&f), "{name}.1 lacks {f}: {text}");
            }
        }
        assert_eq!(pages.len(), subs.len() + 1, "{pages:?}");
        assert!(page("bake-agent-reap").contains("--older-than"));
        // Any other command line is not the man page writer's.
        assert!(manpage_command(["bake-agent", "check"].map(Into::into)).is_none());
        assert!(manpage_command(["bake-agent"].map(Into::into)).is_none());
    }

    #[test]
    fn test_job_takes_command_after_dashes() {
        let c = Cli::try_parse_from([
            "bake-agent",
            "job",
            "stats",
            "--period",
            "daily",
            "--",
            "rake",
            "-x",
        ])
        .unwrap();
        match c.command {
            Command::Job { name, period, cmd } => {
                assert_eq!((name.as_str(), period), ("stats", Period::Daily));
                assert_eq!(cmd, vec!["rake".to_owned(), "-x".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["bake-agent", "reap", "/x", "--older-than", "5x"]).is_err());
    }

    #[test]
    fn test_check_live_flags() {
        match Cli::try_parse_from([
            "bake-agent",
            "check",
            "--live",
            "--wait",
            "15min",
            "--report",
            "-o",
            "json",
        ])
        .unwrap()
        .command
        {
            Command::Check {
                live,
                wait,
                report,
                output,
                nft,
                systemctl,
                ..
            } => {
                assert!(live && report);
                assert_eq!(wait, Some(std::time::Duration::from_secs(900)));
                assert_eq!(output, crate::live::CheckOutput::Json);
                assert_eq!(nft, PathBuf::from("/usr/sbin/nft"));
                assert_eq!(systemctl, PathBuf::from("/bin/systemctl"));
            }
            other => panic!("{other:?}"),
        }
        // The --live options need --live; --userdata is for the configuration check only.
        for args in [
            &["check", "--report"][..],
            &["check", "--wait", "1s"],
            &["check", "-o", "json"],
            &["check", "--nft", "/x"],
            &["check", "--live", "--userdata", "/x"],
            &["check", "--live", "--wait", "5x"],
        ] {
            let argv = std::iter::once("bake-agent").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["bake-agent", "check", "--userdata", "/x"]).is_ok());
    }

    #[test]
    fn test_reap_and_firewall_defaults() {
        match Cli::try_parse_from(["bake-agent", "reap"]).unwrap().command {
            Command::Reap {
                dir,
                older_than,
                dry_run,
            } => assert!(dir.is_none() && older_than.is_none() && !dry_run),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["bake-agent", "firewall"])
            .unwrap()
            .command
        {
            Command::Firewall { nft } => assert_eq!(nft, PathBuf::from("/usr/sbin/nft")),
            other => panic!("{other:?}"),
        }
    }
}
