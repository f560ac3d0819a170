//! The command handlers: each turns parsed arguments into settings, does its work
//! through the library, prints for a person or as JSON, and says how to exit.

mod action;
mod changes;
mod check;
mod daemon;
mod deliver;
mod events;
pub mod exit;
mod ledger;
mod output;
mod refresh;
mod settings;
mod subscribers;
mod sync;
mod validate;

pub use exit::exit_for_error;

use crate::cli::{Cli, Command, DeliverCommand, Target};
use crate::clock::SystemClock;
use settings::load;
use std::process::ExitCode;

/// Runs the command the CLI names.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config;
    let code = match cli.command {
        Command::Sync(args) => {
            let settings = load(&config, &args.target, args.source.clone())?;
            sync::run(settings, &args).await?
        }
        Command::Daemon(args) => {
            let target = Target {
                connector: None,
                store: args.store.clone(),
            };
            daemon::run(load(&config, &target, None)?).await?
        }
        Command::Validate(args) => {
            let target = Target {
                connector: args.connector.clone(),
                store: None,
            };
            let settings = load(&config, &target, None)?;
            validate::run(&settings, &args, &SystemClock).await?
        }
        Command::Runs(args) => ledger::runs(load(&config, &args.target, None)?, &args).await?,
        Command::Traits(args) => ledger::traits(load(&config, &args.target, None)?, &args).await?,
        Command::Refresh(args) => refresh::run(load(&config, &args.target, None)?, &args).await?,
        Command::Subscribers(args) => {
            let settings = load(&config, &args.target, None)?;
            subscribers::run(settings, &args, &SystemClock).await?
        }
        Command::Action(args) => {
            let settings = load(&config, &args.action.common().target, None)?;
            action::run(settings, &args).await?
        }
        Command::Actions(args) => action::list(load(&config, &args.target, None)?, &args).await?,
        Command::Events(args) => events::list(load(&config, &args.target, None)?, &args).await?,
        Command::Changes(args) => changes::list(load(&config, &args.target, None)?, &args).await?,
        Command::Deliver(args) => match &args.command {
            DeliverCommand::Status(a) => {
                deliver::status(load(&config, &a.target, None)?, a).await?
            }
            DeliverCommand::Resume(a) => {
                deliver::resume(load(&config, &a.target, None)?, a).await?
            }
        },
        Command::Check(args) => {
            check::run(
                load(&config, &args.target, args.source.clone())?,
                &SystemClock,
            )
            .await?
        }
    };
    Ok(ExitCode::from(code))
}
