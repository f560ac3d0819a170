//! Where traits and the run ledger live. The only module with SQL.
//!
//! The store is one backend-neutral core on a narrow seam ([`Backend`]): the ledger
//! ([`ledger`]), the daemon's schedule claims ([`claims`]), the webhook inbox (`events`), the change feed and its
//! deliveries (`changes`, `deliveries`), the reads ([`reads`]) and
//! the staging of a run ([`Staging`], `staging/`) are written once; SQLite and PostgreSQL each bring
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

// The seam and what both sides share.
mod backend;
mod error;
mod rows;
mod tuning;
// The ledger side: runs, claims, actions, and the reads of the stored traits.
mod actions;
mod changes;
pub mod claims;
mod deliveries;
mod events;
pub mod ledger;
mod listing;
mod live;
mod offers;
pub mod reads;
// The staging side: one run's rows on their way in.
mod staging;
// The drivers.
mod postgres;
mod sqlite;

pub use actions::{ActionEnd, Begun, NewAction, PendingRow, TraitsAndActions};
pub use backend::{Backend, EventSql, RunLock, Store};
pub use claims::{Claim, SlotClaim};
pub use deliveries::{DeliveryKey, DeliveryState, HeldDelivery};
pub use error::StoreError;
pub use events::{ClaimedEvent, Enqueued, NewEvent};
pub use ledger::{AcceptedObject, REJECTION_CAP, RunStart};
pub use listing::{Cursor, SubscriberPage, SubscriberQuery};
pub use live::LiveWrite;
pub use postgres::Postgres;
pub use reads::StoredTraits;
pub use rows::timestamp;
pub use sqlite::Sqlite;
pub use staging::{MAX_CANDIDATES, MAX_HELD, PASS_HELD, Plan, Staging};
pub use tuning::{Miscount, Tuning};

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

/// Opens the store a URL names: `sqlite://...` or `postgres://...`, with the limits of
/// [`Tuning::from_env`].
pub async fn open(url: &str) -> Result<Opened, StoreError> {
    open_tuned(url, Tuning::from_env()?).await
}

/// How long [`Store::close`] waits for connections still in use.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl<B: Backend> Store<B> {
    /// Closes the store's connections, for a command that is about to end. SQLite's
    /// last connection to close deletes the WAL file; a process that ends with its
    /// connections open leaves the file behind, as large as the last apply made it (over
    /// a gigabyte after a 5M night), for the next process to read back first.
    /// Connections still in use are waited for at most [`CLOSE_WAIT`].
    pub async fn close(&self) {
        if tokio::time::timeout(CLOSE_WAIT, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "the store's connections were still in use after {CLOSE_WAIT:?}; ending without them"
            );
        }
    }
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
