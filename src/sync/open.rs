//! A run whose ledger row is open.

use crate::run::{Outcome, RunReport};
use std::time::Instant;

/// A run whose ledger row is open, holding its connector's run lock until it is closed.
pub struct OpenRun<L> {
    pub(super) id: i64,
    pub(super) connector: String,
    pub(super) started: Instant,
    pub(super) lock: L,
}

impl<L> OpenRun<L> {
    /// The run's ledger id.
    pub fn id(&self) -> i64 {
        self.id
    }

    pub(super) fn report(&self, outcome: Outcome, message: Option<String>) -> RunReport {
        RunReport {
            duration_ms: self.elapsed_ms(),
            message,
            ..RunReport::empty(self.id, &self.connector, outcome)
        }
    }

    pub(super) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
