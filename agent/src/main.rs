//! `bake-agent`: makes an instance of a bake AMI a healthy member of its fleet.
//! See `bake-agent --help` and the README.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bake_agent::cli::Cli::parse();
    bake_common::logging::init(cli.global.log_format, cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return bake_agent::exit::Exit::Internal.into();
        }
    };
    match runtime.block_on(bake_agent::run(cli)) {
        Ok(code) => code.into(),
        Err(err) => {
            bake_agent::exit::log_error_chain(&err);
            bake_agent::exit::Exit::from_error(&err).into()
        }
    }
}
