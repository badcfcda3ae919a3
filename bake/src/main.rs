//! `bake`: bake a hardened AMI with Packer and roll it across an Auto Scaling Group with a
//! watched, reversible instance refresh. See `bake --help` and the README.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bake::cli::Cli::parse();
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
            let code = bake::exit_code(&err);
            // Nobody reads a closed stdout: the exit code says it; stderr stays quiet.
            if code != bake::exit::Exit::StdoutClosed {
                bake_common::logging::log_error_chain(err.as_ref());
            }
            code.into()
        }
    }
}
