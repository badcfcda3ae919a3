//! `bake`: bake a hardened AMI with Packer and roll it across an Auto Scaling Group with a
//! watched, reversible instance refresh. See `bake --help` and the README.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match bake::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() && bake::cli::asks_for_json(std::env::args_os()) {
                // A bad command line is an error document too (exit 2, as clap's own).
                let _ = bake::output::print(&bake::cli::usage_error_json(&e).to_string());
            }
            e.exit()
        }
    };
    let output = cli.global.output;
    cli.global.log.init_logging(cli.global.color);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return bake::exit::Exit::Internal.into();
        }
    };
    match runtime.block_on(bake::run(cli)) {
        Ok(code) => code.into(),
        Err(err) => {
            let failure = bake::failure(&err);
            // Nobody reads a closed stdout: the exit code says it; stderr stays quiet.
            if failure.exit == bake::exit::Exit::StdoutClosed {
                return failure.exit.into();
            }
            if output == bake::output::Output::Json {
                // The error document; if stdout cannot take it, stderr still says it.
                let _ = bake::output::print(&failure.json().to_string());
            }
            failure.log();
            // The whole chain with the SDK's debug dumps, with -v.
            tracing::debug!(
                "{}",
                bake_common::logging::error_chain_text(err.as_ref()).replacen(
                    "error: ",
                    "error details: ",
                    1
                )
            );
            failure.exit.into()
        }
    }
}
