//! The command handlers: each turns parsed arguments into settings, does its work
//! through the library, prints for a person or as JSON, and says how to exit.

mod action;
mod check;
mod daemon;
mod ledger;
mod subscribers;
mod sync;
mod validate;

use crate::cli::{Cli, Command, Target};
use crate::clock::SystemClock;
use crate::config::{ConfigError, Connector, Overrides, Settings};
use crate::run::Outcome;
use crate::source::AnySource;
use crate::store::StoreError;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit statuses of the contract.
pub mod exit {
    /// Applied, unchanged, no export, dry run; `validate` found nothing.
    pub const OK: u8 = 0;
    /// The run failed; nothing applied.
    pub const FAILED: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Refused by a guard; for `validate`, rows were rejected.
    pub const REFUSED: u8 = 3;
}

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
        Command::Subscribers(args) => {
            let settings = load(&config, &args.target, None)?;
            subscribers::run(settings, &args, &SystemClock).await?
        }
        Command::Action(args) => {
            let settings = load(&config, &args.action.common().target, None)?;
            action::run(settings, &args).await?
        }
        Command::Actions(args) => action::list(load(&config, &args.target, None)?, &args).await?,
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

/// An error and its causes on one line, each cause once: most of our messages already
/// quote their cause, which the chain would repeat.
pub fn describe(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// The exit status an error at the edge maps to.
pub fn exit_for_error(err: &anyhow::Error) -> ExitCode {
    let usage = err.downcast_ref::<ConfigError>().is_some()
        || matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::BadUrl(_))
        );
    ExitCode::from(if usage { exit::USAGE } else { exit::FAILED })
}

fn load(
    config: &Option<PathBuf>,
    target: &Target,
    source: Option<String>,
) -> Result<Settings, ConfigError> {
    Settings::load(&Overrides {
        config: config.clone(),
        store: target.store.clone(),
        source,
        connector: target.connector.clone(),
    })
}

/// The source of a connector; a URL it cannot use is a configuration error.
async fn source(connector: &Connector) -> Result<AnySource, ConfigError> {
    AnySource::from_url(&connector.source, &connector.s3)
        .await
        .map_err(|e| ConfigError::Invalid {
            key: format!("connector {:?}: source", connector.id),
            message: e.to_string(),
        })
}

/// The exit status for a set of runs: any failure wins, then any refusal.
fn exit_for_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> u8 {
    let mut code = exit::OK;
    for outcome in outcomes {
        match outcome {
            Outcome::Failed | Outcome::Running => return exit::FAILED,
            Outcome::Refused => code = exit::REFUSED,
            Outcome::Applied | Outcome::Unchanged | Outcome::NoExport | Outcome::DryRun => {}
        }
    }
    code
}
