//! Exit statuses of the contract, and what each ending maps to.

use crate::config::ConfigError;
use crate::run::Outcome;
use crate::store::StoreError;
use std::process::ExitCode;

/// Applied, unchanged, no export, dry run; `validate` found nothing.
pub const OK: u8 = 0;
/// The run failed; nothing applied.
pub const FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// Refused by a guard; for `validate`, rows were rejected.
pub const REFUSED: u8 = 3;

/// The exit status an error at the edge maps to.
pub fn exit_for_error(err: &anyhow::Error) -> ExitCode {
    let usage = err.downcast_ref::<ConfigError>().is_some()
        || matches!(
            err.downcast_ref::<StoreError>(),
            Some(StoreError::BadUrl(_))
        );
    ExitCode::from(if usage { USAGE } else { FAILED })
}

/// The exit status for a set of runs: any failure wins, then any refusal.
pub(super) fn exit_for_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> u8 {
    let mut code = OK;
    for outcome in outcomes {
        match outcome {
            Outcome::Failed | Outcome::Running => return FAILED,
            Outcome::Refused => code = REFUSED,
            Outcome::Applied | Outcome::Unchanged | Outcome::NoExport | Outcome::DryRun => {}
        }
    }
    code
}
