//! The production store: PostgreSQL, shared by every replica. Rows stream into a
//! temporary table with COPY and are merged with set-based statements in the run's
//! transaction (`staging.rs`); an advisory lock per connector keeps one run of it at a
//! time across processes.

mod copy;
mod direct;
mod events;
mod feed;
mod ledger;
mod staging;
mod stream;

use super::backend::{Backend, RunLock, Sql};
use crate::store::backend::Store;
use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::staging::gather::Gather;
use crate::store::tuning::Tuning;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use staging::PgTables;
use std::str::FromStr;
use std::time::Duration;

/// The embedded schema of the PostgreSQL store.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// What to check when the store will not open.
const CHECK_WHEN_IT_WILL_NOT_OPEN: &str =
    "check the URL (host, port, user, database, sslmode) and that the server accepts connections";

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct Postgres;

/// The advisory lock of one connector, held by a connection of its own: it is released
/// when the run ends, or when the process dies and its session closes.
pub struct PgConnectorLock {
    session: PgConnection,
}

impl RunLock for PgConnectorLock {
    async fn release(self) {
        // Closing the session ends it on the server, and the lock with it, before this
        // returns; a failure leaves the server to notice the closed socket.
        let _ = self.session.close().await;
    }
}

impl Postgres {
    /// Connects to the database a `postgres://` URL names (`sslmode` and the other
    /// libpq parameters honoured) and runs the embedded migrations.
    pub async fn open(url: &str, tuning: Tuning) -> Result<Store<Postgres>> {
        let failed = StoreError::opening(url, CHECK_WHEN_IT_WILL_NOT_OPEN);
        let options = PgConnectOptions::from_str(url).map_err(&failed)?;
        // One connection first, so that an unreachable server or a refused login is
        // reported as such at once, not as a pool timeout.
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(&failed)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(&failed)?;
        // The migrator takes an advisory lock: replicas starting together migrate once.
        Store::migrated(pool, &MIGRATIONS, Postgres, tuning, url).await
    }
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    type Lock = PgConnectorLock;
    type Tables = PgTables;

    const SQL: &'static Sql = ledger::SQL;
    const EVENTS: &'static crate::store::EventSql = events::EVENTS;
    const DIALECT: super::backend::Dialect = super::backend::Dialect::Postgres;

    async fn lock(store: &Store<Postgres>, connector: &str) -> Result<Option<PgConnectorLock>> {
        let mut session = store.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('cleeng-sync'), hashtext($1))",
        )
        .bind(connector)
        .fetch_one(&mut session)
        .await?;
        Ok(locked.then_some(PgConnectorLock { session }))
    }

    /// As COPY text: streamed as rows through sqlx, a million took 0.95 s.
    async fn read_hashes(
        store: &Store<Postgres>,
        connector: &str,
        gather: &mut Gather,
    ) -> Result<bool> {
        let mut conn = store.pool.acquire().await?;
        // COPY takes no parameters: the connector reaches it as a session setting
        // rather than spliced into the statement.
        sqlx::query("SELECT set_config('cleeng_sync.connector', $1, false)")
            .bind(connector)
            .execute(&mut *conn)
            .await?;
        let whole = copy::copy_lines(
            &mut conn,
            "COPY (SELECT row_hash FROM subscription_traits
             WHERE connector = current_setting('cleeng_sync.connector')
               AND removed_run IS NULL) TO STDOUT",
            |line| gather.add(line),
        )
        .await?;
        // A COPY left unread mid-way leaves the connection unusable: not back to the pool.
        if !whole {
            conn.detach();
        }
        Ok(true)
    }

    async fn tables(store: &Store<Postgres>, connector: &str) -> Result<PgTables> {
        // A connection of its own, closed (and its temporary tables gone) when the
        // staging area is dropped.
        let conn = store.pool.acquire().await?.detach();
        PgTables::create(conn, store.pool.clone(), connector).await
    }
}
