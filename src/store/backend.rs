//! The seam between the backend-neutral store and a database: what a backend must
//! provide, and nothing more. The ledger, the claims, the reads and the staging logic
//! are written once on top of these traits; a backend brings its SQL dialect
//! ([`Sql`]), how it binds and reads values ([`Session`]), its run lock, how it reads
//! the stored row hashes fast, and the temporary tables of a run ([`Tables`]).

use super::rows::{Columns, Kept};
use crate::export::Row;
use crate::run::Rejection;
use crate::store::error::{Result, StoreError};
use crate::store::staging::gather::Gather;
use crate::store::staging::held::{HeldHashes, Listing};
use crate::store::staging::repeats::RepeatCheck;
use crate::store::tuning::Tuning;
use chrono::{DateTime, Utc};
use std::future::Future;

/// A value bound to a statement's positional parameter (`?N` in SQLite, `$N` in
/// PostgreSQL). Instants are bound as each backend keeps them (text, `timestamptz`).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// Text, or NULL.
    Text(Option<&'a str>),
    /// An integer, or NULL.
    Int(Option<i64>),
    /// An instant, UTC.
    Instant(DateTime<Utc>),
}

/// A connection of a backend, as the neutral code uses it: statements with positional
/// parameters, and the few columns each backend types its own way.
pub trait Session: Send {
    /// A result row.
    type Row: Columns + Send;

    /// Runs a statement; its rows affected.
    fn execute(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Runs a query; every row.
    fn fetch_all(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// Runs a query; its first row, if any.
    fn fetch_optional(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;

    /// Stores a run's rejections (at most [`super::REJECTION_CAP`], given).
    fn insert_rejections(
        &mut self,
        run_id: i64,
        rejections: &[Rejection],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// An instant column as RFC 3339 text, UTC.
    fn instant(row: &Self::Row, name: &str) -> Result<Option<String>, sqlx::Error>;

    /// A date column as `YYYY-MM-DD`.
    fn date(row: &Self::Row, name: &str) -> Result<String, sqlx::Error>;

    /// A JSON column.
    fn json(row: &Self::Row, name: &str) -> Result<Option<serde_json::Value>, sqlx::Error>;

    /// A change's side (a text array; on SQLite a JSON array, or a JSON object of the
    /// changed fields).
    fn side(row: &Self::Row, name: &str) -> Result<Option<Kept>, sqlx::Error>;
}

/// The statements that differ between backends only by dialect: placeholders, types,
/// booleans. Each backend's `ledger.rs` is one value of this, to be read side by side.
pub struct Sql {
    /// Closes the connector's runs left `running`: `1` connector, `2` now, `3` message.
    pub close_orphans: &'static str,
    /// Opens a run, returning `id`: `1` connector, `2` trigger, `3` scheduled_for, `4` now.
    pub open_run: &'static str,
    /// Closes a run: `1` id, `2` now, `3` outcome, `4`-`6` object, `7`-`9` rows,
    /// `10`-`13` changes, `14` message, `15` warnings (JSON text), `16` superseded.
    pub close_run: &'static str,
    /// Closes a run still `running` as failed: `1` id, `2` now, `3` message.
    pub abandon_run: &'static str,
    /// The last applied or unchanged object: `1` connector.
    pub last_accepted: &'static str,
    /// Recent runs: `1` connector or NULL, `2` limit.
    pub runs: &'static str,
    /// The connector's last run that succeeded (exit 0): `1` connector.
    pub last_success: &'static str,
    /// The connector's last run that applied an export: `1` connector.
    pub last_applied: &'static str,
    /// One run: `1` id.
    pub run: &'static str,
    /// A run's rejections: `1` run id.
    pub rejections: &'static str,
    /// One subscriber: `1` connector, `2` email.
    pub traits: &'static str,
    /// Present subscribers, as `n`: `1` connector.
    pub present: &'static str,
    /// Whether anything was ever stored for the connector, as `n` (0 or 1): `1` connector.
    pub anything_stored: &'static str,
    /// Claims a scheduled time, returning `holder` if won: `1` connector, `2` slot,
    /// `3` holder, `4` now, `5` lease end.
    pub claim: &'static str,
    /// Closes the runs of lapsed or taken-over claims: `1` connector, `2` slot, `3` now.
    pub claim_orphans: &'static str,
    /// Extends a claim: `1`-`3` the claim, `4` lease end.
    pub renew_claim: &'static str,
    /// Marks a claim done: `1`-`3` the claim.
    pub settle_claim: &'static str,
    /// Gives a claim back: `1`-`3` the claim.
    pub release_claim: &'static str,
    /// The connector's stored offer map, as `offer_id`, `plan`, `country`, by offer:
    /// `1` connector.
    pub offer_plans: &'static str,
    /// Forgets the connector's offer map: `1` connector.
    pub forget_offer_plans: &'static str,
    /// Stores one offer of the map: `1` connector, `2` offer, `3` plan, `4` country.
    pub keep_offer_plan: &'static str,
    /// Records a billing action as `pending`, returning `id`, unless its idempotency key
    /// is taken (no row): `1` connector, `2` email, `3` action, `4` params (JSON text),
    /// `5` key, `6` request hash, `7` trigger, `8` owner, `9` lease end, `10` now.
    pub begin_action: &'static str,
    /// The action of an idempotency key: `1` key.
    pub action_by_key: &'static str,
    /// One action: `1` id.
    pub action: &'static str,
    /// Recent actions, newest first: `1` connector or NULL, `2` email or NULL, `3` limit.
    pub actions: &'static str,
    /// Ends an action its owner carried out (also one a start took for dead): `1` id,
    /// `2` owner, `3` status, `4` HTTP status, `5` code, `6` message, `7` subscription
    /// id, `8` attempts, `9` now.
    pub finish_action: &'static str,
    /// Actions still `pending`, as `id`, `owner`, `lease_until`.
    pub pending_actions: &'static str,
    /// Turns a `pending` action `unknown`: `1` id, `2` message, `3` now.
    pub abandon_action: &'static str,
    /// The subscriber's actions that succeeded since the connector's last applied export
    /// started and that no refresh confirmed yet: `1` connector, `2` email.
    pub actions_since_export: &'static str,
    /// Writes a refresh into a subscriber's row if it is still as read, present again:
    /// `1` connector, `2` email, `3` offer, `4` status, `5` expiry date (text), `6` row
    /// hash, `7` live_at (also `updated_at` when the traits change), `8` live_source,
    /// `9` row hash read, `10` removed_run read (0 for none).
    pub write_live: &'static str,
    /// A page of the present subscribers refreshed after an instant, as `email`,
    /// `row_hash`, `live_at`, by the partial index on `live_at`: `1` connector, `2` the
    /// instant, `3`-`4` the last (live_at as text, email) of the page before, `5` the
    /// page size.
    pub live_after: &'static str,
    /// Forgets the refreshes an export is newer than, of present subscribers (by the
    /// partial index): `1` connector, `2` its instant.
    pub clear_live: &'static str,
    /// Confirms a succeeded action: `1` id, `2` now.
    pub confirm_action: &'static str,
    /// Placeholder `n` of a listing built from its filters: text and integers, then
    /// dates (`YYYY-MM-DD` text bound, compared as the column's type).
    pub marker: fn(usize) -> String,
    /// See [`Sql::marker`].
    pub date_marker: fn(usize) -> String,
    /// What makes a statement answer with its plan, and the plan's text column.
    pub explain: (&'static str, &'static str),
}

/// The inbox's statements, in each backend's dialect.
pub struct EventSql {
    /// Queues a delivery, returning `id`, unless its body is in already (no row): `1`
    /// connector, `2` topic, `3` body SHA-256, `4` received at, `5` email, `6` customer
    /// id, `7` subscription id, `8` status (`skipped` also sets `processed_at`), `9` message,
    /// `10` not before.
    pub enqueue: &'static str,
    /// The event of a body: `1` connector, `2` body SHA-256.
    pub by_body: &'static str,
    /// Claims the oldest due queued event whose lease is free, with every queued event of
    /// its subscriber not claimed by another worker; their `attempts` grow by one. As
    /// `id`, `email`, `attempts`: `1` connector, `2` now, `3` owner, `4` lease end.
    pub claim: &'static str,
    /// Ends the events of a claim: `1` owner (the claim's), `2` status, `3` message, `4` now.
    pub finish: &'static str,
    /// Extends the lease of a claim's events: `1` owner (the claim's), `2` lease end.
    pub renew: &'static str,
    /// Gives a claimed event back for another attempt: `1` id, `2` owner, `3` not before,
    /// `4` message, `5` attempts given back (0, or 1 when the attempt does not count).
    pub retry: &'static str,
    /// Recent events, newest first: `1` connector or NULL, `2` status or NULL, `3` limit.
    pub list: &'static str,
    /// The inbox at a glance, as `queued`, `oldest`, `last`, `failed`: `1` connector,
    /// `2` since when failures count.
    pub summary: &'static str,
}

/// The two SQL dialects of the change feed's statements (built in `changes.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Text instants and dates, JSON as text.
    Sqlite,
    /// `date`, `jsonb`.
    Postgres,
}

/// A database the store runs on.
pub trait Backend: Clone + Sized + Send + Sync + 'static {
    /// The sqlx driver; its connections are the backend's [`Session`].
    type Db: sqlx::Database<Connection: Session>;
    /// Held for the length of a run of a connector.
    type Lock: RunLock;
    /// The temporary tables of one run.
    type Tables: Tables;

    /// The dialect's statements.
    const SQL: &'static Sql;
    /// The webhook inbox's statements.
    const EVENTS: &'static EventSql;
    /// The dialect the change feed's statements are built in.
    const DIALECT: Dialect;

    /// Takes the connector's run lock, or `None` if another run holds it.
    fn lock(
        store: &Store<Self>,
        connector: &str,
    ) -> impl Future<Output = Result<Option<Self::Lock>>> + Send;

    /// Feeds the present subscribers' row hashes to `gather`, until it says stop.
    /// `false`: this store cannot (an in-memory SQLite database); nothing is held.
    fn read_hashes(
        store: &Store<Self>,
        connector: &str,
        gather: &mut Gather,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Empty temporary tables for one run of the connector, on a connection of their own.
    fn tables(
        store: &Store<Self>,
        connector: &str,
    ) -> impl Future<Output = Result<Self::Tables>> + Send;
}

/// A connector's run lock. Dropping it releases it too, but only eventually (a dropped
/// PostgreSQL session ends when the server notices); a run that goes on to the next
/// export, or a caller that starts another run at once, releases it first.
pub trait RunLock: Send + Sync + 'static {
    /// Releases the lock now.
    fn release(self) -> impl Future<Output = ()> + Send;
}

/// How a row is staged by record and email only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByEmail {
    /// A valid row its held hash marked already: its subscriber is stored as it is.
    Marked,
    /// A rejected row: its subscriber is listed, its traits are not to be applied.
    Rejected,
}

/// What the repeated-email check found.
#[derive(Debug, Default)]
pub struct Repeated {
    /// Emails that occur more than once.
    pub emails: u64,
    /// Valid rows it rejected (every record of those emails that was valid).
    pub rows: u64,
    /// The records of those emails, oldest first, capped: `(record, email)`.
    pub records: Vec<(i64, String)>,
}

impl Repeated {
    /// The check's result: repeated emails, valid rows rejected, their records.
    pub fn new(emails: u64, rows: u64, records: Vec<(i64, String)>) -> Repeated {
        Repeated {
            emails,
            rows,
            records,
        }
    }
}

/// The staged rows not marked, compared with what is stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Comparison {
    /// Valid rows of subscribers not stored.
    pub inserted: u64,
    /// Valid rows of stored subscribers whose traits differ, or who were removed.
    pub updated: u64,
    /// Valid rows stored as they are (hashes not held, or a repeat).
    pub unchanged: u64,
    /// Rows, valid or not, whose subscriber is present (one row per email).
    pub listed: u64,
}

/// The marked rows that were staged by email, counted after the repeated-email check.
#[derive(Debug, Default, Clone, Copy)]
pub struct MarkedStaged {
    /// All of them: each lists a present subscriber.
    pub all: u64,
    /// Those still valid.
    pub valid: u64,
}

impl Comparison {
    /// From SQL's counts (`inserted, updated, unchanged, listed`).
    pub fn of(counts: (i64, i64, i64, i64)) -> Comparison {
        let (inserted, updated, unchanged, listed) = counts;
        Comparison {
            inserted: count(inserted),
            updated: count(updated),
            unchanged: count(unchanged),
            listed: count(listed),
        }
    }
}

impl MarkedStaged {
    /// From SQL's counts (`all, valid`).
    pub fn of((all, valid): (i64, i64)) -> MarkedStaged {
        MarkedStaged {
            all: count(all),
            valid: count(valid),
        }
    }
}

/// A count as SQL gives it (a signed integer).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// What the apply's statements stamp on the rows they write.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// The run (`first_seen_run`, `changed_run`, `removed_run`).
    pub run_id: i64,
    /// Whether the statements record their changes in the feed (not on the connector's
    /// first applied run, its baseline).
    pub record: bool,
    /// `updated_at`.
    pub now: DateTime<Utc>,
}

/// What was stored for the connector when the run began, as the statements that write
/// new and changed subscribers need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Began {
    /// Nothing: every valid row is new.
    Nothing,
    /// Subscribers whose hashes were not held: every row was staged in full.
    NotHeld,
    /// Subscribers whose hashes were held: only new and changed rows were staged in full.
    Held,
}

/// What the statements that write new and changed subscribers did, each counted.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
}

/// The temporary tables of one run on a connection of their own: the staged rows, the
/// repeated emails, the unlisted hash prefixes. Every method is one step of
/// [`super::Staging`], which decides when each runs and checks what it counted.
pub trait Tables: Send + Sized {
    /// The connection the tables live on.
    type Session: Session;
    /// Whether a first load writes its rows as it reads them ([`Tables::write_directly`]).
    const WRITES_DIRECTLY: bool = false;

    /// Stages a valid row in full (after [`Tables::write_directly`], writes it into the
    /// traits).
    fn full(&mut self, row: Row) -> impl Future<Output = Result<()>> + Send;

    /// A first load (nothing stored, nothing to record), on a backend that
    /// [`Tables::WRITES_DIRECTLY`]: from here the valid rows go into the traits as they
    /// come, stamped with `stamp`, inside the run's transaction, begun now; the
    /// repeated-email check takes back the row written of an email that repeats.
    fn write_directly(&mut self, stamp: Stamp) -> impl Future<Output = Result<()>> + Send {
        let _ = stamp;
        async { Ok(()) }
    }

    /// Stages a row by record and email only.
    fn by_email(
        &mut self,
        record: u64,
        email: &str,
        kind: ByEmail,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Writes what is buffered: every row is in.
    fn flush(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Stages, as [`ByEmail::Marked`], the rows marked in `held` of these emails (every
    /// present subscriber with `None`); how many.
    fn stage_marked(
        &mut self,
        held: &HeldHashes,
        emails: Option<&[String]>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Finds the emails staged more than once (among the candidates, or all), rejects
    /// their valid rows, and keeps one staged row per email (the first record).
    fn reject_repeats(
        &mut self,
        check: &RepeatCheck,
    ) -> impl Future<Output = Result<Repeated>> + Send;

    /// Begins the run's transaction: from here until commit or drop the connector's
    /// traits are held for writing, so what is applied is what was planned.
    fn begin(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Compares the staged rows not marked with what is stored (`began`: which rows
    /// were staged); with a `listing`, also lists there the stored hash of every present
    /// subscriber they name.
    fn compare(
        &mut self,
        began: Began,
        listing: Option<&mut dyn Listing>,
    ) -> impl Future<Output = Result<Comparison>> + Send;

    /// Counts the marked rows staged, after the repeated-email check.
    fn count_marked(&mut self) -> impl Future<Output = Result<MarkedStaged>> + Send;

    /// Keeps the unlisted held hashes' prefixes for [`Tables::remove_unlisted`].
    fn keep_unlisted(
        &mut self,
        prefixes: impl Iterator<Item = String> + Send,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether every one of the `present` subscribers is named by a staged row, as a
    /// fact about sets the tables can check cheaply (`false`: cannot tell). Asked when
    /// no hashes were held and the plan counted no removal: a removal statement would
    /// read every present subscriber to find none.
    fn all_named(&mut self, present: u64) -> impl Future<Output = Result<bool>> + Send {
        let _ = present;
        async { Ok(false) }
    }

    /// Marks as removed the present subscribers no staged row lists (only those whose
    /// hash prefix was kept, with `unlisted_only`); how many.
    fn remove_unlisted(
        &mut self,
        stamp: Stamp,
        unlisted_only: bool,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Inserts new subscribers and updates changed ones.
    fn write_changes(
        &mut self,
        stamp: Stamp,
        began: Began,
    ) -> impl Future<Output = Result<Written>> + Send;

    /// The connection, once every row is in: the run's ledger row is closed on it.
    fn session(&mut self) -> impl Future<Output = Result<&mut Self::Session>> + Send;

    /// Commits the run's transaction and closes the connection.
    fn commit(self) -> impl Future<Output = Result<()>> + Send;

    /// Rolls back whatever was written and closes the connection.
    fn discard(self) -> impl Future<Output = ()> + Send;
}

/// The statement plumbing of a backend's [`Session`]: every value bound as itself but
/// instants, which `$instant` turns into what the backend keeps.
macro_rules! sqlx_session {
    ($instant:expr) => {
        async fn execute(
            &mut self,
            sql: &str,
            params: &[$crate::store::backend::Param<'_>],
        ) -> Result<u64, sqlx::Error> {
            Ok(bound!(sql, params, $instant)
                .execute(self)
                .await?
                .rows_affected())
        }

        async fn fetch_all(
            &mut self,
            sql: &str,
            params: &[$crate::store::backend::Param<'_>],
        ) -> Result<Vec<Self::Row>, sqlx::Error> {
            bound!(sql, params, $instant).fetch_all(self).await
        }

        async fn fetch_optional(
            &mut self,
            sql: &str,
            params: &[$crate::store::backend::Param<'_>],
        ) -> Result<Option<Self::Row>, sqlx::Error> {
            bound!(sql, params, $instant).fetch_optional(self).await
        }
    };
}

/// A query with its parameters bound (see [`sqlx_session!`]).
macro_rules! bound {
    ($sql:expr, $params:expr, $instant:expr) => {
        $params
            .iter()
            .fold(sqlx::query($sql), |query, param| match *param {
                $crate::store::backend::Param::Text(text) => query.bind(text),
                $crate::store::backend::Param::Int(n) => query.bind(n),
                $crate::store::backend::Param::Instant(t) => query.bind(($instant)(t)),
            })
    };
}

pub(super) use {bound, sqlx_session};

/// The trait store and run ledger on one backend.
pub struct Store<B: Backend> {
    pub(in crate::store) pool: sqlx::Pool<B::Db>,
    pub(in crate::store) backend: B,
    pub(in crate::store) tuning: Tuning,
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

impl<B: Backend> Store<B> {
    /// The store on `pool`, once its embedded migrations have run on it (the migrator
    /// takes a lock: replicas starting together migrate once).
    pub(in crate::store) async fn migrated(
        pool: sqlx::Pool<B::Db>,
        migrator: &sqlx::migrate::Migrator,
        backend: B,
        tuning: Tuning,
        url: &str,
    ) -> Result<Store<B>>
    where
        <B::Db as sqlx::Database>::Connection: sqlx::migrate::Migrate,
    {
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: crate::redact::redact_url(url),
                source,
            })?;
        Ok(Store {
            pool,
            backend,
            tuning,
        })
    }
}

/// A result row of a backend's connections.
pub type RowOf<B> = <<<B as Backend>::Db as sqlx::Database>::Connection as Session>::Row;

/// The ledger side's statements: each on a connection of the pool, for its length.
impl<B: Backend> Store<B> {
    /// A connection of the pool, a [`Session`] for as long as it is held.
    async fn session(&self) -> Result<sqlx::pool::PoolConnection<B::Db>> {
        Ok(self.pool.acquire().await?)
    }

    /// The first row a query gives, decoded.
    pub(in crate::store) async fn read_one<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: impl Fn(&RowOf<B>) -> Result<T>,
    ) -> Result<Option<T>> {
        let row = self.session().await?.fetch_optional(sql, params).await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every row a query gives, decoded.
    pub(in crate::store) async fn read_all<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: impl Fn(&RowOf<B>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = self.session().await?.fetch_all(sql, params).await?;
        rows.iter().map(decode).collect()
    }

    /// Runs a statement; its rows affected.
    pub(in crate::store) async fn write(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.session().await?.execute(sql, params).await?)
    }
}
