//! The `cleeng-sync` binary: parse, set up logs, dispatch.

use clap::Parser;
use cleeng_sync::cli::Cli;
use cleeng_sync::{commands, telemetry};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.verbose, cli.quiet);
    match commands::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", commands::describe(&err));
            commands::exit_for_error(&err)
        }
    }
}
