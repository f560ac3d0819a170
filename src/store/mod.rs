//! Where traits and the run ledger live. The only module with SQL.
//!
//! A run talks to the store in three steps: [`Store::begin_run`] opens its ledger
//! row; a [`Staging`] area receives the export's rows while they stream in, then
//! plans and applies the change in one transaction together with the ledger row;
//! runs that apply nothing close their ledger row with [`Store::finish_run`].

mod known;
mod postgres;
mod repeats;
mod rows;
mod sqlite;

pub use postgres::{PgConnectorLock, PgStaging, PostgresStore};
pub use sqlite::{SqliteConnectorLock, SqliteStaging, SqliteStore};

use crate::clock::Clock;
use crate::export::Row;
use crate::run::{ChangeCounts, Mode, Rejection, RunRecord, RunReport, Trigger};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::future::Future;

/// At most this many rejections are stored per run; the counts stay exact.
pub const REJECTION_CAP: usize = 10_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store we support.
    #[error("unsupported store URL {0:?}: use sqlite://path.db or postgres://user@host/db")]
    BadUrl(String),
    /// Another run of the connector is in flight, in this process or another.
    #[error(
        "another run of connector {0:?} is in flight (in this or another process); nothing was done: try again when it has finished"
    )]
    Busy(String),
    /// The store could not be opened.
    #[error(
        "cannot open the store {url}: {source}; check the URL (host, port, user, database, sslmode) and that the server accepts connections"
    )]
    Open {
        /// The URL, password removed.
        url: String,
        /// What the driver said.
        source: sqlx::Error,
    },
    /// The run lock file next to a SQLite database could not be opened.
    #[error(
        "cannot open the run lock file {path}: {source}; the folder of the SQLite file must be writable"
    )]
    LockFile {
        /// The lock file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate the store {url}: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// What the migrator said.
        source: sqlx::migrate::MigrateError,
    },
    /// Rows could not be staged (the staging stream stopped).
    #[error("{0}; nothing was applied, the next run retries")]
    Staging(String),
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// Writing staged rows into SQLite's temporary tables failed.
    #[error(
        "writing the export's rows into SQLite's temporary tables failed: {0}; check the room \
         left where SQLite keeps temporary files (SQLITE_TMPDIR or TMPDIR, else /var/tmp)"
    )]
    Write(#[from] rusqlite::Error),
    /// Reading the stored row hashes through SQLite's own API failed.
    #[error(
        "reading the stored row hashes from the SQLite file failed: {0}; nothing was applied, the next run retries"
    )]
    Read(rusqlite::Error),
}

/// The start of a run, as the ledger records it.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Connector id.
    pub connector: String,
    /// What started it.
    pub trigger: Trigger,
    /// Local wall-clock time it was scheduled for, scheduled runs only.
    pub scheduled_for: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// The object of the last run that applied (or found unchanged) an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedObject {
    /// Object key.
    pub key: String,
    /// Its ETag.
    pub etag: String,
    /// SHA-256 of its content.
    pub sha256: String,
}

/// What applying the staged export would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Inserted, updated, unchanged and removed subscribers.
    pub changes: ChangeCounts,
    /// Subscribers present before the run.
    pub present: u64,
    /// Valid records rejected because their email occurs more than once.
    pub duplicate_rows: u64,
    /// Every record (valid or not) of a repeated email, oldest first, capped.
    pub duplicates: Vec<Rejection>,
}

/// One subscriber's stored traits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTraits {
    /// Connector id.
    pub connector: String,
    /// Email (lower case).
    pub email: String,
    /// Offer ID.
    pub offer_id: String,
    /// `YYYY-MM-DD`.
    pub expiry_date: String,
    /// `active` or `stopped`.
    pub status: String,
    /// Payment method ID.
    pub payment_method_id: i64,
    /// Subscription external ID.
    pub external_id: Option<String>,
    /// External properties.
    pub external_properties: Option<serde_json::Value>,
    /// Season index.
    pub season_index: Option<i64>,
    /// Coupon code.
    pub coupon_code: Option<String>,
    /// Campaign name.
    pub campaign_name: Option<String>,
    /// Coupon Already Used.
    pub coupon_uses: Option<i64>,
    /// Columns the template does not name.
    pub extra: Option<serde_json::Value>,
    /// Canonical row hash.
    pub row_hash: String,
    /// Run that first stored the subscriber.
    pub first_seen_run: i64,
    /// Run that last changed the traits.
    pub changed_run: i64,
    /// Run that found the subscriber gone; `null` while present.
    pub removed_run: Option<i64>,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// The result of claiming a scheduled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This daemon holds the claim: it runs the time.
    Won,
    /// The time ran, or runs under another live daemon.
    Taken,
}

/// A daemon's claim on one scheduled time of one connector.
#[derive(Debug, Clone, Copy)]
pub struct SlotClaim<'a> {
    /// Connector id.
    pub connector: &'a str,
    /// The scheduled local time, as the ledger names it (`scheduled_for`).
    pub slot: &'a str,
    /// The daemon that claims it.
    pub holder: &'a str,
}

/// A connector's run lock. Dropping it releases it too, but only eventually (a dropped
/// PostgreSQL session ends when the server notices); a run that goes on to the next
/// export, or a caller that starts another run at once, releases it first.
pub trait RunLock: Send + 'static {
    /// Releases the lock now.
    fn release(self) -> impl Future<Output = ()> + Send;
}

/// The trait store and run ledger.
pub trait Store: Send + Sync + 'static {
    /// The staging area of one run.
    type Staging: Staging;
    /// Held for the length of a run of a connector.
    type Lock: RunLock;

    /// Takes the connector's run lock, or `None` if another run holds it.
    fn lock_connector(
        &self,
        connector: &str,
    ) -> impl Future<Output = Result<Option<Self::Lock>, StoreError>> + Send;

    /// How many subscribers of the connector are present (not removed).
    fn present(&self, connector: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The object of the connector's last run that applied or confirmed an export.
    fn last_accepted(
        &self,
        connector: &str,
    ) -> impl Future<Output = Result<Option<AcceptedObject>, StoreError>> + Send;

    /// Answers when the store can be reached (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Opens the ledger row of a run (outcome `running`) and returns its id.
    ///
    /// The caller holds the connector's lock ([`Store::lock_connector`]), so a run of
    /// the connector still marked `running` belongs to a process that died (killed,
    /// crashed, its machine gone): it is closed as `failed` first. Its rows never
    /// committed: a run commits its changes and its ledger row together.
    fn begin_run(&self, start: &RunStart) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Closes the ledger row of a run that applies nothing, with its rejections.
    fn finish_run(
        &self,
        report: &RunReport,
        rejections: &[Rejection],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Closes a run that stopped before it finished (shutdown, a dead daemon) as
    /// `failed`, unless it has finished meanwhile; its staged rows never committed.
    fn abandon_run(
        &self,
        run_id: i64,
        message: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims a scheduled time for its holder, for `lease`. A claim that is done, or
    /// held by another daemon whose lease runs, is [`Claim::Taken`]; an expired one is
    /// taken over, and the run its holder left `running` is closed as failed.
    fn claim_slot(
        &self,
        claim: SlotClaim<'_>,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Extends a claim its holder has; `false` if it lost it.
    fn renew_claim(
        &self,
        claim: SlotClaim<'_>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks the claimed time as run, whatever the outcome: it never runs again.
    fn settle_claim(
        &self,
        claim: SlotClaim<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a claim back without running the time (shutdown), so that another
    /// daemon, or this one restarted, runs it.
    fn release_claim(
        &self,
        claim: SlotClaim<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A fresh staging area for the connector's export.
    fn staging(
        &self,
        connector: &str,
    ) -> impl Future<Output = Result<Self::Staging, StoreError>> + Send;

    /// Recent runs, newest first.
    fn runs(
        &self,
        connector: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;

    /// One run.
    fn run(
        &self,
        run_id: i64,
    ) -> impl Future<Output = Result<Option<RunRecord>, StoreError>> + Send;

    /// The stored rejections of a run, by record.
    fn rejections(
        &self,
        run_id: i64,
    ) -> impl Future<Output = Result<Vec<Rejection>, StoreError>> + Send;

    /// One subscriber's traits.
    fn traits(
        &self,
        connector: &str,
        email: &str,
    ) -> impl Future<Output = Result<Option<StoredTraits>, StoreError>> + Send;
}

/// Rows of one export on their way into the store. Dropping it discards them.
pub trait Staging: Send {
    /// Stages a valid row.
    fn add_valid(&mut self, row: Row) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notes the email of a rejected record: its subscriber is not absent.
    fn add_rejected(
        &mut self,
        record: u64,
        email: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rejects repeated emails and computes the change. From here until
    /// [`Staging::apply`] or [`Staging::discard`] the store is held for writing, so
    /// that what is applied is exactly what was planned.
    fn plan(
        &mut self,
        connector: &str,
        mode: Mode,
    ) -> impl Future<Output = Result<Plan, StoreError>> + Send;

    /// Applies the planned change and closes the run's ledger row, in one transaction.
    /// The clock stamps `updated_at` before the change and `finished_at` after it.
    fn apply(
        self,
        mode: Mode,
        report: &RunReport,
        rejections: &[Rejection],
        clock: &dyn Clock,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives up: nothing staged reaches the store.
    fn discard(self) -> impl Future<Output = ()> + Send;
}

/// The message of a run whose process died before it finished.
const ORPHAN_MESSAGE: &str = "the process running it stopped before it finished (killed or crashed); \
     nothing was applied; the next run applies the export";

/// The ledger's text form of an instant.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Fails unless the update that closes a run found its ledger row (`rows` updated): every
/// row a run writes refers to that row, and neither store checks the references one by
/// one (PostgreSQL's were dropped, migration 0002; SQLite's staging does not enforce
/// them), so an apply for a run that is not there must roll back here.
fn closed(run_id: i64, rows: u64) -> Result<(), StoreError> {
    if rows == 1 {
        return Ok(());
    }
    Err(StoreError::Staging(format!(
        "run {run_id} is not in the ledger (sync_runs)"
    )))
}

/// The rejections of the records of repeated emails.
fn duplicate_rejections(records: Vec<(i64, String)>) -> Vec<Rejection> {
    records
        .into_iter()
        .map(|(record, email)| Rejection {
            record: record as u64,
            column: "email".to_string(),
            reason: crate::run::Reason::DuplicateEmail,
            value: Some(crate::redact::mask_email(&email)),
        })
        .collect()
}

/// Opens the store a URL names: `sqlite://...` or `postgres://...`.
pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(AnyStore::Sqlite(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(AnyStore::Postgres(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::BadUrl(crate::redact::redact_url(url)))
    }
}

/// Either store, chosen by URL.
#[derive(Clone)]
pub enum AnyStore {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// The production store.
    Postgres(PostgresStore),
}

/// The staging area of either store.
pub enum AnyStaging {
    /// SQLite's.
    Sqlite(SqliteStaging),
    /// PostgreSQL's.
    Postgres(PgStaging),
}

/// The run lock of either store.
pub enum AnyLock {
    /// SQLite's lock file.
    Sqlite(SqliteConnectorLock),
    /// PostgreSQL's advisory lock.
    Postgres(PgConnectorLock),
}

impl RunLock for AnyLock {
    async fn release(self) {
        match self {
            AnyLock::Sqlite(lock) => lock.release().await,
            AnyLock::Postgres(lock) => lock.release().await,
        }
    }
}

/// Calls the same method on whichever store (or staging area) this is.
macro_rules! either {
    ($value:expr, $inner:ident => $call:expr) => {
        match $value {
            AnyStore::Sqlite($inner) => $call,
            AnyStore::Postgres($inner) => $call,
        }
    };
}

impl Store for AnyStore {
    type Staging = AnyStaging;
    type Lock = AnyLock;

    async fn lock_connector(&self, connector: &str) -> Result<Option<AnyLock>, StoreError> {
        Ok(match self {
            AnyStore::Sqlite(s) => s.lock_connector(connector).await?.map(AnyLock::Sqlite),
            AnyStore::Postgres(s) => s.lock_connector(connector).await?.map(AnyLock::Postgres),
        })
    }

    async fn present(&self, connector: &str) -> Result<u64, StoreError> {
        either!(self, s => s.present(connector).await)
    }

    async fn last_accepted(&self, connector: &str) -> Result<Option<AcceptedObject>, StoreError> {
        either!(self, s => s.last_accepted(connector).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        either!(self, s => s.ping().await)
    }

    async fn begin_run(&self, start: &RunStart) -> Result<i64, StoreError> {
        either!(self, s => s.begin_run(start).await)
    }

    async fn finish_run(
        &self,
        report: &RunReport,
        rejections: &[Rejection],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        either!(self, s => s.finish_run(report, rejections, now).await)
    }

    async fn abandon_run(
        &self,
        run_id: i64,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        either!(self, s => s.abandon_run(run_id, message, now).await)
    }

    async fn claim_slot(
        &self,
        claim: SlotClaim<'_>,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        either!(self, s => s.claim_slot(claim, now, lease).await)
    }

    async fn renew_claim(
        &self,
        claim: SlotClaim<'_>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        either!(self, s => s.renew_claim(claim, until).await)
    }

    async fn settle_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        either!(self, s => s.settle_claim(claim).await)
    }

    async fn release_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        either!(self, s => s.release_claim(claim).await)
    }

    async fn staging(&self, connector: &str) -> Result<AnyStaging, StoreError> {
        Ok(match self {
            AnyStore::Sqlite(s) => AnyStaging::Sqlite(s.staging(connector).await?),
            AnyStore::Postgres(s) => AnyStaging::Postgres(s.staging(connector).await?),
        })
    }

    async fn runs(
        &self,
        connector: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        either!(self, s => s.runs(connector, limit).await)
    }

    async fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        either!(self, s => s.run(run_id).await)
    }

    async fn rejections(&self, run_id: i64) -> Result<Vec<Rejection>, StoreError> {
        either!(self, s => s.rejections(run_id).await)
    }

    async fn traits(
        &self,
        connector: &str,
        email: &str,
    ) -> Result<Option<StoredTraits>, StoreError> {
        either!(self, s => s.traits(connector, email).await)
    }
}

/// Calls the same method on whichever staging area this is.
macro_rules! either_staging {
    ($value:expr, $inner:ident => $call:expr) => {
        match $value {
            AnyStaging::Sqlite($inner) => $call,
            AnyStaging::Postgres($inner) => $call,
        }
    };
}

impl Staging for AnyStaging {
    async fn add_valid(&mut self, row: Row) -> Result<(), StoreError> {
        either_staging!(self, s => s.add_valid(row).await)
    }

    async fn add_rejected(&mut self, record: u64, email: String) -> Result<(), StoreError> {
        either_staging!(self, s => s.add_rejected(record, email).await)
    }

    async fn plan(&mut self, connector: &str, mode: Mode) -> Result<Plan, StoreError> {
        either_staging!(self, s => s.plan(connector, mode).await)
    }

    async fn apply(
        self,
        mode: Mode,
        report: &RunReport,
        rejections: &[Rejection],
        clock: &dyn Clock,
    ) -> Result<(), StoreError> {
        either_staging!(self, s => s.apply(mode, report, rejections, clock).await)
    }

    async fn discard(self) {
        either_staging!(self, s => s.discard().await)
    }
}
