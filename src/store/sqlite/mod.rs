//! The embedded store: one SQLite file in WAL mode, one writer at a time.
//!
//! Statements go through sqlx, but for the bulk of a run's rows: the stored row hashes
//! are read, and the export's rows written into staging (a first load's straight into
//! the traits, `direct.rs`), through SQLite's own API (rusqlite) on a connection sqlx
//! opened (`staging.rs`).

mod direct;
mod events;
mod ledger;
mod staged;
mod staging;

use super::backend::{Backend, RunLock, Sql};
use crate::store::backend::Store;
use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::staging::gather::Gather;
use crate::store::tuning::Tuning;
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use staging::SqliteTables;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The embedded schema of the SQLite store.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// What to check when the store will not open.
const CHECK_WHEN_IT_WILL_NOT_OPEN: &str =
    "check that the file's folder exists and is writable (the file itself is created if missing)";

/// How long a statement waits for another process's write lock (another `sync`, the
/// daemon, holding it for the length of an apply) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The page size of a new store's file, in bytes.
const PAGE_SIZE: u32 = 8192;

/// The SQLite backend.
#[derive(Clone)]
pub struct Sqlite {
    /// For the private connection of each run's tables (shared: the options are large).
    options: Arc<SqliteConnectOptions>,
}

impl Sqlite {
    /// Opens (creating if missing) the database a `sqlite://` URL names and runs the
    /// embedded migrations.
    pub async fn open(url: &str, tuning: Tuning) -> Result<Store<Sqlite>> {
        let failed = StoreError::opening(url, CHECK_WHEN_IT_WILL_NOT_OPEN);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(&failed)?
            .create_if_missing(true)
            // Set before the file's first write, so only a new store takes it (an
            // existing one keeps its pages until a VACUUM out of WAL mode: see
            // docs/store.md). With 8 KiB pages instead of 4 a 10%-changed night took
            // 7-11% less time and a first load 8-13% less (bench/RESULTS-speed.md):
            // half the pages to find, read, split and log for the same rows.
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(&failed)?;
        let backend = Sqlite {
            options: Arc::new(options),
        };
        Store::migrated(pool, &MIGRATIONS, backend, tuning, url).await
    }

    /// The database file, unless the store is in memory.
    fn file(&self) -> Option<std::path::PathBuf> {
        let db = self.options.get_filename();
        if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
            return None;
        }
        Some(db.to_path_buf())
    }

    /// The lock file of a connector: its id as is when it is a plain name, else in hex.
    fn lock_path(&self, connector: &str) -> Option<std::path::PathBuf> {
        let db = self.file()?;
        let plain = connector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        let name = if plain {
            connector.to_string()
        } else {
            hex::encode(connector)
        };
        let mut path = db.as_os_str().to_owned();
        path.push(format!(".{name}.lock"));
        Some(path.into())
    }
}

/// The run lock of one connector: an exclusive lock on a file next to the database
/// (`traits.db.default.lock`), so that a `sync` and a daemon on the same file never run
/// the connector at once. The operating system releases it when the process dies, so a
/// killed run never blocks the next one.
pub struct SqliteConnectorLock {
    /// `None` for an in-memory database, which no other process can open.
    _file: Option<std::fs::File>,
}

impl RunLock for SqliteConnectorLock {
    async fn release(self) {
        // Closing the file releases the lock.
        drop(self);
    }
}

impl Backend for Sqlite {
    const SQL: &'static Sql = ledger::SQL;
    const EVENTS: &'static crate::store::EventSql = events::EVENTS;
    const DIALECT: super::backend::Dialect = super::backend::Dialect::Sqlite;

    type Db = sqlx::Sqlite;
    type Lock = SqliteConnectorLock;
    type Tables = SqliteTables;

    async fn lock(store: &Store<Sqlite>, connector: &str) -> Result<Option<SqliteConnectorLock>> {
        let Some(path) = store.backend.lock_path(connector) else {
            return Ok(Some(SqliteConnectorLock { _file: None }));
        };
        let failed = |source| StoreError::LockFile {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(&failed)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SqliteConnectorLock { _file: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }

    /// Read on a blocking thread through a read-only connection of SQLite's own API:
    /// handed over row by row through sqlx's worker, a million hashes took 0.85 s, three
    /// times the scan itself. A database that is not a file cannot be opened twice.
    async fn read_hashes(
        store: &Store<Sqlite>,
        connector: &str,
        gather: &mut Gather,
    ) -> Result<bool> {
        let Some(path) = store.backend.file() else {
            return Ok(false);
        };
        let connector = connector.to_owned();
        let mut filled = std::mem::replace(gather, Gather::within(0, 0));
        let read = tokio::task::spawn_blocking(move || -> Result<Gather, rusqlite::Error> {
            use rusqlite::OpenFlags;
            let db = rusqlite::Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            db.busy_timeout(BUSY_TIMEOUT)?;
            let mut hashes = db.prepare(
                "SELECT row_hash FROM subscription_traits
                 WHERE connector = ?1 AND removed_run IS NULL",
            )?;
            let mut rows = hashes.query([&connector])?;
            while let Some(row) = rows.next()? {
                // A hash that is not text (not ours) counts as present, never matches.
                if !filled.add(row.get_ref(0)?.as_bytes().unwrap_or_default()) {
                    break;
                }
            }
            Ok(filled)
        })
        .await
        .map_err(|e| {
            StoreError::Interrupted(format!("reading the stored row hashes stopped: {e}"))
        })?;
        *gather = read.map_err(StoreError::Read)?;
        Ok(true)
    }

    async fn tables(store: &Store<Sqlite>, connector: &str) -> Result<SqliteTables> {
        // Foreign keys are not enforced on the tables' connection (PostgreSQL dropped
        // them, migration 0002): every reference it writes is this run's id, and closing
        // the run's ledger row fails the apply (rolled back) unless that run is in the
        // ledger. Checked per row, they were a tenth of a first load (two lookups in
        // `sync_runs` per subscriber).
        // Its page cache is 6 MiB (SQLite's default is 2): a first load writes the expiry
        // index in date order, not email order, and with 2 MiB the index pages are
        // evicted and read back over and over (three times the time of the insert). Only
        // this connection, closed after the run, holds that much. With 8 KiB pages, 6 MiB
        // was as fast as 8 and peaked 3 MiB lower (a 1M changed night at 60 MiB).
        let conn = (*store.backend.options)
            .clone()
            .foreign_keys(false)
            .pragma("cache_size", "-6144")
            .connect()
            .await?;
        SqliteTables::create(conn, connector).await
    }
}
