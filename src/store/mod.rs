//! Where traits and the run ledger live. The only module with SQL.
//!
//! The store is one backend-neutral core on a narrow seam ([`Backend`]): the ledger
//! ([`ledger`]), the daemon's schedule claims ([`claims`]), the reads ([`reads`]) and
//! the staging of a run ([`Staging`]) are written once; SQLite and PostgreSQL each bring
//! their dialect, their run lock, a fast read of the stored row hashes and the
//! temporary tables of a run (`sqlite/`, `postgres/`).
//!
//! A run talks to the store in three steps: [`Store::begin_run`] opens its ledger
//! row; a [`Staging`] area receives the export's rows while they stream in, then
//! plans and applies the change in one transaction together with the ledger row;
//! runs that apply nothing close their ledger row with [`Store::close_run`].
//!
//! The backend is chosen once, where a command opens the store ([`open`]); everything
//! after runs on a [`Store`] of that backend.

mod actions;
mod backend;
pub mod claims;
mod error;
mod held;
pub mod ledger;
mod listing;
mod offers;
mod passes;
mod postgres;
pub mod reads;
mod repeats;
mod rows;
mod sqlite;
mod staging;

pub use actions::{ActionEnd, Begun, NewAction, PendingRow, TraitsAndActions};
pub use backend::{Backend, RunLock};
pub use claims::{Claim, SlotClaim};
pub use error::StoreError;
pub use held::{MAX_HELD, PASS_HELD};
pub use ledger::{AcceptedObject, RunStart};
pub use listing::{Cursor, SubscriberPage, SubscriberQuery};
pub use postgres::Postgres;
pub use reads::StoredTraits;
pub use repeats::MAX_CANDIDATES;
pub use sqlite::Sqlite;
pub use staging::{Miscount, Plan, Staging};

use chrono::{DateTime, Utc};

/// At most this many rejections are stored per run; the counts stay exact.
pub const REJECTION_CAP: usize = 10_000;

/// The store's limits, and a test hook. The defaults are what production runs with;
/// tests lower the limits to run the paths a large connector takes on a few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Above this many present subscribers their row hashes are not held in memory at
    /// once ([`MAX_HELD`]); they are held in passes of `pass_held`.
    pub max_held: u64,
    /// Present subscribers' hashes held per pass past `max_held` ([`PASS_HELD`]); 0: no
    /// passes, every row is staged in full and the database compares them.
    pub pass_held: u64,
    /// Above this many emails that may repeat, the repeated-email check reads every
    /// staged row rather than the candidates ([`MAX_CANDIDATES`]).
    pub max_candidates: usize,
    /// A test hook: the plan counts one change more than it found, so that a test can
    /// show an apply that does not match its plan is rolled back. `None` in production.
    pub miscount: Option<Miscount>,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            max_held: MAX_HELD,
            pass_held: PASS_HELD,
            max_candidates: MAX_CANDIDATES,
            miscount: None,
        }
    }
}

/// The trait store and run ledger on one backend.
pub struct Store<B: Backend> {
    pool: sqlx::Pool<B::Db>,
    backend: B,
    tuning: Tuning,
}

impl<B: Backend> Clone for Store<B> {
    fn clone(&self) -> Self {
        Store {
            pool: self.pool.clone(),
            backend: self.backend.clone(),
            tuning: self.tuning,
        }
    }
}

/// A store of either backend, as [`open`] found it. Match it once, with [`with_store!`],
/// and go on with the [`Store`] inside.
#[derive(Clone)]
pub enum Opened {
    /// The embedded store.
    Sqlite(Store<Sqlite>),
    /// The production store.
    Postgres(Store<Postgres>),
}

/// Runs `$body` with `$store` bound to the [`Store`] an [`Opened`] holds, whichever
/// backend it is: the one place a command chooses the backend.
#[macro_export]
macro_rules! with_store {
    ($opened:expr, $store:ident => $body:expr) => {
        match $opened {
            $crate::store::Opened::Sqlite($store) => $body,
            $crate::store::Opened::Postgres($store) => $body,
        }
    };
}

impl Tuning {
    /// The defaults, with the memory limits the environment sets:
    /// `CLEENG_SYNC_MAX_HELD` and `CLEENG_SYNC_PASS_HELD` (counts of subscribers).
    /// Lower ones trade a little speed for memory; tests use them to take a large
    /// connector's paths on a few rows.
    pub fn from_env() -> Result<Tuning, StoreError> {
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

/// Opens the store a URL names: `sqlite://...` or `postgres://...`, with the limits of
/// [`Tuning::from_env`].
pub async fn open(url: &str) -> Result<Opened, StoreError> {
    open_tuned(url, Tuning::from_env()?).await
}

/// [`open`] with other limits (tests).
pub async fn open_tuned(url: &str, tuning: Tuning) -> Result<Opened, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Opened::Sqlite(Sqlite::open(url, tuning).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Opened::Postgres(Postgres::open(url, tuning).await?))
    } else {
        Err(StoreError::BadUrl(crate::redact::redact_url(url)))
    }
}

/// The ledger's text form of an instant.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
