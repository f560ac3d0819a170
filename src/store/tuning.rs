//! The store's limits, which the environment may lower, and a test hook.

use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::staging::{MAX_CANDIDATES, MAX_HELD, PASS_HELD};

/// Refreshed subscribers read at a time ([`Tuning::live_page`]).
pub const LIVE_PAGE: u32 = 10_000;

/// The store's limits, and a test hook. The defaults are what production runs with;
/// tests lower the limits to run the paths a large connector takes on a few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Above this many present subscribers their row hashes are not held in memory at
    /// once ([`MAX_HELD`]); they are held in passes, `pass_held` at a time.
    pub max_held: u64,
    /// Present subscribers' hashes held at once past `max_held` ([`PASS_HELD`]), by the
    /// passes marked together (each holds its share); 0: no passes, every row is staged
    /// in full and the database compares them.
    pub pass_held: u64,
    /// Whether the hashes of a connector whose export alone is past `max_held` are read
    /// beside the export, as it streams, rather than before it (`store/staging/beside.rs`).
    /// On by default; off, tests take the path a connector past the limit takes when its
    /// export is not.
    pub read_beside: bool,
    /// Above this many emails that may repeat, the repeated-email check reads every
    /// staged row rather than the candidates ([`MAX_CANDIDATES`]).
    pub max_candidates: usize,
    /// Subscribers refreshed after an export read from the store at a time, as a run
    /// begins ([`LIVE_PAGE`]).
    pub live_page: u32,
    /// A test hook: the plan counts one change more than it found, so that a test can
    /// show an apply that does not match its plan is rolled back. `None` in production.
    pub miscount: Option<Miscount>,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            max_held: MAX_HELD,
            pass_held: PASS_HELD,
            read_beside: true,
            max_candidates: MAX_CANDIDATES,
            live_page: LIVE_PAGE,
            miscount: None,
        }
    }
}

impl Tuning {
    /// The defaults, with the memory limits the environment sets:
    /// `CLEENG_SYNC_MAX_HELD` and `CLEENG_SYNC_PASS_HELD` (counts of subscribers).
    /// Lower ones trade a little speed for memory; tests use them to take a large
    /// connector's paths on a few rows.
    pub fn from_env() -> Result<Tuning> {
        let mut tuning = Tuning::default();
        for (name, limit) in [
            ("CLEENG_SYNC_MAX_HELD", &mut tuning.max_held),
            ("CLEENG_SYNC_PASS_HELD", &mut tuning.pass_held),
        ] {
            if let Ok(value) = std::env::var(name) {
                *limit = value
                    .trim()
                    .parse()
                    .map_err(|_| StoreError::BadTuning { name, value })?;
            }
        }
        Ok(tuning)
    }
}

/// A test hook ([`Tuning::miscount`]): which count the plan makes one too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miscount {
    /// One more subscriber inserted than found.
    Inserted,
    /// One more updated.
    Updated,
    /// One more removed.
    Removed,
}
