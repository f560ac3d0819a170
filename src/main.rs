//! The `cleeng-sync` binary: parse, set up logs, dispatch.

use clap::Parser;
use cleeng_sync::cli::{Cli, Command};
use cleeng_sync::{commands, error, process, telemetry};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime's threads exist.
    process::tune_malloc();
    if !matches!(cli.command, Command::Daemon(_)) {
        process::end_quietly_on_closed_pipe();
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(commands::exit::FAILED)
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    telemetry::init(cli.log_format, cli.verbose, cli.quiet);
    match commands::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error::one_line(err.as_ref()));
            commands::exit_for_error(&err)
        }
    }
}
