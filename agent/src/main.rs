//! `bake-agent`: makes an instance of a bake AMI a healthy member of its fleet.
//! See `bake-agent --help` and docs/agent.md (configuration, exit codes).
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Some(code) = bake_agent::cli::manpage_command(std::env::args_os()) {
        return code;
    }
    let cli = bake_agent::cli::Cli::parse();
    // Under systemd, each line carries its syslog priority (`<4>` …) for journald, so that
    // `journalctl -p warning -u bake-agent` works.
    bake_common::logging::init_with_priorities(
        cli.global.log.log_format,
        cli.global.log.verbose,
        bake_common::logging::ColorChoice::Auto,
        true,
    );
    // A current-thread runtime: the agent is I/O bound and stays small (idle RSS). The app is not
    // started here: the supervisor spawns, waits for and reaps it on a thread of its own, whose
    // end the app's parent-death signal is bound to (supervisor/mod.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return bake_agent::exit::Exit::Internal.into();
        }
    };
    match runtime.block_on(bake_agent::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            bake_common::logging::log_error_chain(err.as_ref());
            bake_agent::exit::Exit::from_error(&err).into()
        }
    }
}
