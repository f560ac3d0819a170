//! The `cleeng-sync` binary: parse, set up logs, dispatch.

use clap::Parser;
use cleeng_sync::cli::Cli;
use cleeng_sync::{commands, memory, telemetry};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before the runtime's threads exist.
    memory::limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(commands::exit::FAILED)
        }
    }
}

async fn run() -> ExitCode {
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
