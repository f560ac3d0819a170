//! The embedded store: one SQLite file in WAL mode, one writer at a time.
//!
//! Statements go through sqlx, but for the export's rows on their way into staging:
//! those are written through SQLite's own API on the same connection ([`write_batch`]).

use super::known::{Gather, Known, Mark, Unmarked};
use super::repeats::{RepeatCheck, Repeats};
use super::rows::{self, RunTimes, TypedTraits};
use super::{
    AcceptedObject, Claim, ORPHAN_MESSAGE, Plan, REJECTION_CAP, RunLock, RunStart, SlotClaim,
    Staging, Store, StoreError, StoredTraits, timestamp,
};
use crate::clock::Clock;
use crate::export::{Row, iso_date};
use crate::redact::redact_url;
use crate::run::{ChangeCounts, Mode, Rejection, RunRecord, RunReport};
use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row as _, Sqlite};
use std::str::FromStr;
use std::time::Duration;

/// Valid rows written at a time (the connection's handle is held, and the thread
/// kept, for a millisecond or two).
const STAGING_BATCH: usize = 1_024;

/// Rows written at a time by record and email only.
const SEEN_BATCH: usize = 4_096;

/// How long a statement waits for another process's write lock (another `sync`, the
/// daemon, holding it for the length of an apply) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The SQLite trait store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// For the private connection of each staging area (shared: the options are large).
    options: std::sync::Arc<SqliteConnectOptions>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite://` URL names and runs the
    /// embedded migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let shown = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(SqliteStore {
            pool,
            options: std::sync::Arc::new(options),
        })
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

impl SqliteStore {
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

impl SqliteStore {
    /// The present subscribers' row hashes; `None` for a first load, past the limit, or
    /// for a database that is not a file (no second connection can see it).
    ///
    /// Read on a blocking thread through a read-only connection of SQLite's own API:
    /// handed over row by row through sqlx's worker, a million hashes took 0.85 s, three
    /// times the scan itself.
    async fn known_rows(&self, connector: &str) -> Result<Option<Known>, StoreError> {
        let Some(path) = self.file() else {
            return Ok(None);
        };
        let connector = connector.to_owned();
        let read = tokio::task::spawn_blocking(move || -> Result<_, rusqlite::Error> {
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
            let mut gather = Gather::new();
            while let Some(row) = rows.next()? {
                // A hash that is not text (not ours) counts as present, never matches.
                if !gather.add(row.get_ref(0)?.as_bytes().unwrap_or_default()) {
                    break;
                }
            }
            Ok(gather.finish())
        })
        .await;
        match read {
            Ok(known) => known.map_err(StoreError::Read),
            Err(e) => Err(StoreError::Staging(format!(
                "reading the stored row hashes stopped: {e}"
            ))),
        }
    }

    /// The database file, unless the store is in memory.
    fn file(&self) -> Option<std::path::PathBuf> {
        let db = self.options.get_filename();
        if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
            return None;
        }
        Some(db.to_path_buf())
    }
}

impl Store for SqliteStore {
    type Staging = SqliteStaging;
    type Lock = SqliteConnectorLock;

    async fn lock_connector(
        &self,
        connector: &str,
    ) -> Result<Option<SqliteConnectorLock>, StoreError> {
        let Some(path) = self.lock_path(connector) else {
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
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SqliteConnectorLock { _file: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
        }
    }

    async fn present(&self, connector: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscription_traits WHERE connector = ?1 AND removed_run IS NULL",
        )
        .bind(connector)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn last_accepted(&self, connector: &str) -> Result<Option<AcceptedObject>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT object_key, object_etag, object_sha256 FROM sync_runs
             WHERE connector = ?1 AND outcome IN ('applied', 'unchanged')
               AND object_key IS NOT NULL AND object_etag IS NOT NULL AND object_sha256 IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(connector)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(key, etag, sha256)| AcceptedObject { key, etag, sha256 }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_run(&self, start: &RunStart) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = ?2, message = ?3
             WHERE connector = ?1 AND outcome = 'running'",
        )
        .bind(&start.connector)
        .bind(timestamp(start.started_at))
        .bind(ORPHAN_MESSAGE)
        .execute(&mut *tx)
        .await?;
        let id = sqlx::query_scalar(
            "INSERT INTO sync_runs (connector, \"trigger\", scheduled_for, started_at, outcome)
             VALUES (?1, ?2, ?3, ?4, 'running') RETURNING id",
        )
        .bind(&start.connector)
        .bind(start.trigger.as_str())
        .bind(&start.scheduled_for)
        .bind(timestamp(start.started_at))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn finish_run(
        &self,
        report: &RunReport,
        rejections: &[Rejection],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        close_run(&mut tx, report, rejections, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn abandon_run(
        &self,
        run_id: i64,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = ?2, message = ?3
             WHERE id = ?1 AND outcome = 'running'",
        )
        .bind(run_id)
        .bind(timestamp(now))
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_slot(
        &self,
        claim: SlotClaim<'_>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let lease_until =
            now + chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
        // One statement: two daemons claiming at once are serialised by SQLite's write
        // lock, and exactly one of them sees its name come back.
        let winner: Option<String> = sqlx::query_scalar(
            "INSERT INTO schedule_claims (connector, scheduled_for, holder, claimed_at, lease_until)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (connector, scheduled_for) DO UPDATE SET
                holder = excluded.holder, claimed_at = excluded.claimed_at,
                lease_until = excluded.lease_until
             WHERE schedule_claims.done = 0 AND schedule_claims.lease_until < excluded.claimed_at
             RETURNING holder",
        )
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(claim.holder)
        .bind(timestamp(now))
        .bind(timestamp(lease_until))
        .fetch_optional(&self.pool)
        .await?;
        if winner.as_deref() != Some(claim.holder) {
            return Ok(Claim::Taken);
        }
        // Runs left `running` by a daemon that died, for this time (taken over) or an
        // older one whose claim lapsed: they never committed.
        sqlx::query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = ?3,
                message = 'the daemon running it stopped before it finished; nothing was applied'
             WHERE connector = ?1 AND outcome = 'running' AND scheduled_for IN (
                SELECT scheduled_for FROM schedule_claims
                WHERE connector = ?1 AND (scheduled_for = ?2 OR (done = 0 AND lease_until < ?3)))",
        )
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        Ok(Claim::Won)
    }

    async fn renew_claim(
        &self,
        claim: SlotClaim<'_>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let renewed = on_claim(
            "UPDATE schedule_claims SET lease_until = ?4
             WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3 AND done = 0",
            claim,
        )
        .bind(timestamp(until))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn settle_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        on_claim(
            "UPDATE schedule_claims SET done = 1
             WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3",
            claim,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        on_claim(
            "DELETE FROM schedule_claims
             WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3 AND done = 0",
            claim,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn staging(&self, connector: &str) -> Result<SqliteStaging, StoreError> {
        // A connection of its own: the temporary tables live and die with it, and the
        // pool stays free for the ledger. `cleeng_staging` takes valid rows in full;
        // `cleeng_seen` the record and email of rejected rows (not valid) and of the
        // rows stored unchanged that a check of repeated emails needs (valid).
        //
        // Foreign keys are not enforced on it (PostgreSQL dropped them, migration
        // 0002): every reference it writes is this run's id, and `close_run` fails the
        // apply (rolled back) unless that run is in the ledger. Checked per row, they
        // were a tenth of a first load (two lookups in `sync_runs` per subscriber).
        let mut conn = (*self.options)
            .clone()
            .foreign_keys(false)
            .connect()
            .await?;
        sqlx::query(
            "CREATE TEMP TABLE cleeng_staging (
                record INTEGER NOT NULL, email TEXT NOT NULL, valid INTEGER NOT NULL,
                offer_id TEXT, expiry_date TEXT, status TEXT, payment_method_id INTEGER,
                external_id TEXT, external_properties TEXT, season_index INTEGER,
                coupon_code TEXT, campaign_name TEXT, coupon_uses INTEGER, extra TEXT, row_hash TEXT)",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "CREATE TEMP TABLE cleeng_seen (
                record INTEGER NOT NULL, email TEXT NOT NULL, valid INTEGER NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        let known = self.known_rows(connector).await?;
        // Nothing at all stored for the connector (not even removed subscribers): a
        // first load, whose every valid row is new.
        let first_load = known.is_none()
            && !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM subscription_traits WHERE connector = ?1)",
            )
            .bind(connector)
            .fetch_one(&self.pool)
            .await?;
        Ok(SqliteStaging {
            in_transaction: false,
            conn,
            full: Vec::with_capacity(STAGING_BATCH),
            seen: Vec::new(),
            indexed: false,
            repeats: Repeats::new(),
            valid_rows: 0,
            unchanged_rows: 0,
            unchanged_staged: 0,
            held: known.is_some(),
            known,
            unseen: false,
            first_load,
        })
    }

    async fn runs(
        &self,
        connector: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM sync_runs WHERE ?1 IS NULL OR connector = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(connector)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_record).collect()
    }

    async fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sync_runs WHERE id = ?1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_record).transpose()
    }

    async fn rejections(&self, run_id: i64) -> Result<Vec<Rejection>, StoreError> {
        let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT record, \"column\", reason, value FROM sync_rejections WHERE run_id = ?1 ORDER BY record, rowid",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::rejections(rows))
    }

    async fn traits(
        &self,
        connector: &str,
        email: &str,
    ) -> Result<Option<StoredTraits>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM subscription_traits WHERE connector = ?1 AND email = ?2")
                .bind(connector)
                .bind(email.trim().to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| stored_traits(&r)).transpose()
    }
}

/// The staging area of one SQLite run: temporary tables on a private connection.
pub struct SqliteStaging {
    conn: SqliteConnection,
    /// Valid rows to stage in full.
    full: Vec<Row>,
    /// Rows staged by record and email only: `(record, email, valid)`, rows stored
    /// unchanged that are staged (valid) and rejected rows (not valid).
    seen: Vec<(u64, String, bool)>,
    in_transaction: bool,
    /// Whether the email indexes of both tables exist.
    indexed: bool,
    /// The emails staged, for the check of repeated ones.
    repeats: Repeats,
    /// Valid rows staged.
    valid_rows: u64,
    /// Valid rows found stored unchanged: marked in `known`, not staged.
    unchanged_rows: u64,
    /// Valid rows found stored unchanged but staged (by email): a hash that matched
    /// before, or a marked row staged for the repeated-email check.
    unchanged_staged: u64,
    /// The present subscribers' row hashes, when the connector has any (and not too
    /// many), marked with the rows that matched them; let go once planned.
    known: Option<Known>,
    /// Whether the present subscribers' row hashes were held (so few rows were staged
    /// in full).
    held: bool,
    /// Whether `cleeng_unseen` holds the held hashes no row marked.
    unseen: bool,
    /// Nothing was stored for the connector when the run began.
    first_load: bool,
}

impl SqliteStaging {
    /// Writes the rows gathered so far: valid rows in full, the others by record and
    /// email.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.full.is_empty() && self.seen.is_empty() {
            return Ok(());
        }
        raw(&mut self.conn, |db| write_batch(db, &self.full, &self.seen)).await?;
        self.full.clear();
        self.seen.clear();
        Ok(())
    }

    /// The condition that keeps a statement about present subscribers (`t`) to those
    /// no row marked as stored unchanged (all of them when no hashes are held), as
    /// their hash prefixes in `cleeng_unseen`, written the first time. The marked ones
    /// are in the export but not staged: a removal must not take them for absent.
    async fn unmarked(&mut self) -> Result<&'static str, StoreError> {
        const UNSEEN: &str =
            "AND lower(substr(t.row_hash, 1, 24)) IN (SELECT prefix FROM cleeng_unseen)";
        let known = match Unmarked::of(self.unseen, self.held, self.known.as_ref())? {
            Unmarked::NotHeld => return Ok(""),
            Unmarked::Written => return Ok(UNSEEN),
            Unmarked::From(known) => known,
        };
        sqlx::query("CREATE TEMP TABLE cleeng_unseen (prefix TEXT PRIMARY KEY) WITHOUT ROWID")
            .execute(&mut self.conn)
            .await?;
        raw(&mut self.conn, |db| {
            let mut note = db.prepare("INSERT OR IGNORE INTO cleeng_unseen VALUES (?1)")?;
            for prefix in known.unmarked() {
                note.execute([prefix])?;
            }
            Ok(())
        })
        .await?;
        self.unseen = true;
        Ok(UNSEEN)
    }

    /// Indexes both tables by email, for the statements that probe them per
    /// subscriber (repeated emails in bulk, removals). Most runs need neither.
    async fn index(&mut self) -> Result<(), StoreError> {
        if !self.indexed {
            for sql in [
                "CREATE INDEX temp.cleeng_staging_by_email ON cleeng_staging (email)",
                "CREATE INDEX temp.cleeng_seen_by_email ON cleeng_seen (email)",
            ] {
                sqlx::query(sql).execute(&mut self.conn).await?;
            }
            self.indexed = true;
        }
        Ok(())
    }
}

/// Runs `work` on the connection through SQLite's own API, as one transaction unless
/// the connection is in one already.
async fn raw<T>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, StoreError> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: while `handle` lives, sqlx's worker makes no call on the connection
    // (its documented contract). The rusqlite connection borrows the handle without
    // owning it (it is not closed on drop), and it is dropped, with the statements it
    // prepared, before `handle`.
    let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    // Row by row, one transaction for all of them, not one each.
    let done = if db.is_autocommit() {
        let batch = db.unchecked_transaction()?;
        let done = work(&db)?;
        batch.commit()?;
        done
    } else {
        work(&db)?
    };
    drop(db);
    drop(handle);
    Ok(done)
}

/// Stages in `cleeng_seen` the rows stored unchanged (marked, not staged) of the
/// emails of a JSON array, or of every present subscriber with `None`; how many. The
/// stored rows are read as they are written: memory stays flat.
fn stage_marked(
    db: &rusqlite::Connection,
    known: &Known,
    connector: &str,
    emails: Option<&str>,
) -> Result<u64, rusqlite::Error> {
    let among = match emails {
        Some(_) => "AND email IN (SELECT value FROM json_each(?2))",
        None => "",
    };
    let mut stored = db.prepare(&format!(
        "SELECT email, row_hash FROM subscription_traits
         WHERE connector = ?1 AND removed_run IS NULL {among}"
    ))?;
    let mut note =
        db.prepare("INSERT INTO cleeng_seen (record, email, valid) VALUES (?1, ?2, 1)")?;
    let mut rows = match emails {
        Some(emails) => stored.query(rusqlite::params![connector, emails])?,
        None => stored.query(rusqlite::params![connector])?,
    };
    let mut staged = 0;
    while let Some(row) = rows.next()? {
        let hash = row.get_ref(1)?;
        if let Some(record) = hash.as_str().ok().and_then(|hash| known.marked(hash)) {
            note.execute(rusqlite::params![record as i64, row.get_ref(0)?.as_str()?])?;
            staged += 1;
        }
    }
    Ok(staged)
}

/// Inserts a batch of rows, one prepared statement stepped per row. Through sqlx a
/// batch was a multi-row INSERT: every bound value copied (an allocation each) and a
/// statement journal kept, 7-8 us a row here, more than parsing it. SQLite's own API
/// (rusqlite, on the connection sqlx opened) does neither.
fn write_batch(
    db: &rusqlite::Connection,
    full: &[Row],
    seen: &[(u64, String, bool)],
) -> Result<(), rusqlite::Error> {
    let mut note =
        db.prepare("INSERT INTO cleeng_seen (record, email, valid) VALUES (?1, ?2, ?3)")?;
    for (record, email, valid) in seen {
        note.execute(rusqlite::params![*record as i64, email, valid])?;
    }
    let mut insert = db.prepare(
        "INSERT INTO cleeng_staging (record, email, valid, offer_id, expiry_date, status,
            payment_method_id, external_id, external_properties, season_index, coupon_code,
            campaign_name, coupon_uses, extra, row_hash)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for row in full {
        let (date, hash) = (iso_date(row.expiry_date), row.row_hash.hex());
        insert.execute(rusqlite::params![
            row.record as i64,
            row.email(),
            row.offer_id(),
            std::str::from_utf8(&date).unwrap_or_default(),
            row.status,
            row.payment_method_id,
            row.external_id(),
            row.external_properties(),
            row.season_index,
            row.coupon_code(),
            row.campaign_name(),
            row.coupon_uses,
            row.extra(),
            hash.as_str(),
        ])?;
    }
    Ok(())
}

/// The emails a repeated-email check is to read, as the JSON array SQLite's
/// `json_each` unpacks.
fn candidates_json(candidates: &[String]) -> String {
    serde_json::to_string(candidates).unwrap_or_default()
}

/// Every staged email with its record and validity: both tables.
const STAGED: &str = "(SELECT record, email, valid FROM cleeng_staging
                       UNION ALL SELECT record, email, valid FROM cleeng_seen)";

impl Staging for SqliteStaging {
    async fn add_valid(&mut self, row: Row) -> Result<(), StoreError> {
        self.valid_rows += 1;
        self.repeats.note(row.email());
        let mark = match &mut self.known {
            Some(known) => known.mark(&row.row_hash, row.record),
            None => Mark::New,
        };
        match mark {
            // Stored as it is: the mark says so, nothing is written.
            Mark::First => self.unchanged_rows += 1,
            Mark::Again => {
                self.unchanged_staged += 1;
                self.seen.push((row.record, row.email().to_owned(), true));
            }
            Mark::New => self.full.push(row),
        }
        if self.full.len() >= STAGING_BATCH || self.seen.len() >= SEEN_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn add_rejected(&mut self, record: u64, email: String) -> Result<(), StoreError> {
        self.repeats.note(&email);
        self.seen.push((record, email, false));
        if self.seen.len() >= SEEN_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn plan(&mut self, connector: &str, mode: Mode) -> Result<Plan, StoreError> {
        self.flush().await?;
        let repeats = self.repeats.finish();
        // Rows stored unchanged were marked, not staged: those of an email that may
        // repeat are staged now, so that the check below sees every record of it.
        if let Some(known) = &self.known {
            let emails = match &repeats {
                RepeatCheck::None => None,
                RepeatCheck::Only(candidates) => Some(Some(candidates_json(candidates))),
                RepeatCheck::All => Some(None),
            };
            if let Some(emails) = emails {
                let staged = raw(&mut self.conn, |db| {
                    stage_marked(db, known, connector, emails.as_deref())
                })
                .await?;
                self.unchanged_rows -= staged;
                self.unchanged_staged += staged;
            }
        }

        // Repeated emails, checked exactly among the candidates the filter noted (a
        // JSON array, unpacked by SQLite), or all of them when it noted too many.
        sqlx::query("CREATE TEMP TABLE cleeng_repeated (email TEXT PRIMARY KEY)")
            .execute(&mut self.conn)
            .await?;
        let repeated = match &repeats {
            RepeatCheck::None => 0,
            RepeatCheck::Only(candidates) => sqlx::query(&format!(
                "INSERT INTO cleeng_repeated
                 SELECT email FROM {STAGED}
                 WHERE email IN (SELECT value FROM json_each(?1))
                 GROUP BY email HAVING COUNT(*) > 1"
            ))
            .bind(candidates_json(candidates))
            .execute(&mut self.conn)
            .await?
            .rows_affected(),
            RepeatCheck::All => sqlx::query(&format!(
                "INSERT INTO cleeng_repeated
                 SELECT email FROM {STAGED} GROUP BY email HAVING COUNT(*) > 1"
            ))
            .execute(&mut self.conn)
            .await?
            .rows_affected(),
        };
        let (mut duplicate_rows, mut duplicates) = (0, Vec::new());
        if repeated > 0 {
            const REPEATED: &str = "email IN (SELECT email FROM cleeng_repeated)";
            duplicates = sqlx::query_as(&format!(
                "SELECT record, email FROM {STAGED} WHERE {REPEATED} ORDER BY record LIMIT {REJECTION_CAP}"
            ))
            .fetch_all(&mut self.conn)
            .await?;
            for table in ["cleeng_staging", "cleeng_seen"] {
                duplicate_rows += sqlx::query(&format!(
                    "UPDATE {table} SET valid = 0 WHERE valid = 1 AND {REPEATED}"
                ))
                .execute(&mut self.conn)
                .await?
                .rows_affected();
            }
        }

        // Hold the write lock from here to the apply, so that no other writer changes
        // what the counts (and the guards) were computed on.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await?;
        self.in_transaction = true;
        if self.first_load {
            // Every valid row is new, but those of a repeated email.
            let inserted = self.valid_rows.saturating_sub(duplicate_rows);
            return Ok(Plan {
                changes: ChangeCounts {
                    inserted,
                    ..ChangeCounts::default()
                },
                present: 0,
                duplicate_rows,
                duplicates: super::duplicate_rejections(duplicates),
            });
        }
        // The rows staged in full, compared with what is stored; `matched`: those
        // whose subscriber is present now.
        let (inserted, updated, unchanged_full, matched): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                COALESCE(SUM(s.valid = 1 AND t.email IS NULL), 0),
                COALESCE(SUM(s.valid = 1 AND t.email IS NOT NULL
                    AND (t.row_hash <> s.row_hash OR t.removed_run IS NOT NULL)), 0),
                COALESCE(SUM(s.valid = 1 AND t.row_hash = s.row_hash AND t.removed_run IS NULL), 0),
                COALESCE(SUM(t.email IS NOT NULL AND t.removed_run IS NULL), 0)
             FROM cleeng_staging s
             LEFT JOIN subscription_traits t ON t.connector = ?1 AND t.email = s.email",
        )
        .bind(connector)
        .fetch_one(&mut self.conn)
        .await?;
        // Rows stored unchanged: present by construction, counted while streaming.
        // Those staged (for the repeated-email check) are valid unless it found their
        // email repeated. Rejected rows whose subscriber is present keep it from being
        // taken as removed.
        let known: i64 = self.unchanged_rows as i64
            + if repeated == 0 {
                self.unchanged_staged as i64
            } else {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cleeng_seen WHERE valid = 1")
                    .fetch_one(&mut self.conn)
                    .await?
            };
        let rejected_matched: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cleeng_seen s
             WHERE s.valid = 0 AND EXISTS (
                SELECT 1 FROM subscription_traits t
                WHERE t.connector = ?1 AND t.email = s.email AND t.removed_run IS NULL)",
        )
        .bind(connector)
        .fetch_one(&mut self.conn)
        .await?;
        let present = match &self.known {
            Some(known) => known.present() as i64,
            None => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM subscription_traits
                 WHERE connector = ?1 AND removed_run IS NULL",
                )
                .bind(connector)
                .fetch_one(&mut self.conn)
                .await?
            }
        };
        // Every staged email is distinct unless some repeat: then the present
        // subscribers not staged are the present ones less those matched. With repeats
        // (rare), they are counted one by one.
        let removed = match mode {
            Mode::Delta => 0,
            Mode::Snapshot if repeated == 0 => present - matched - known - rejected_matched,
            Mode::Snapshot => {
                self.index().await?;
                let unmarked = self.unmarked().await?;
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM subscription_traits t
                     WHERE t.connector = ?1 AND t.removed_run IS NULL {unmarked}
                       AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)
                       AND NOT EXISTS (SELECT 1 FROM cleeng_seen s WHERE s.email = t.email)"
                ))
                .bind(connector)
                .fetch_one(&mut self.conn)
                .await?
            }
        };
        // What the apply needs of the held hashes is in `cleeng_unseen` from here: the
        // set is let go before its statements run (26 MB at a million and a half
        // subscribers).
        if mode == Mode::Snapshot && removed > 0 {
            self.unmarked().await?;
        }
        self.known = None;
        Ok(Plan {
            changes: ChangeCounts {
                inserted: inserted as u64,
                updated: updated as u64,
                unchanged: (unchanged_full + known) as u64,
                removed: removed.max(0) as u64,
            },
            present: present as u64,
            duplicate_rows,
            duplicates: super::duplicate_rejections(duplicates),
        })
    }

    async fn apply(
        mut self,
        mode: Mode,
        report: &RunReport,
        rejections: &[Rejection],
        clock: &dyn Clock,
    ) -> Result<(), StoreError> {
        if !self.in_transaction {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await?;
        }
        let now_text = timestamp(clock.now());
        // The plan counted each kind of change: a statement with nothing to do is
        // skipped. Removals first: they concern the subscribers present before this run.
        let changes = report.changes;
        if mode == Mode::Snapshot && changes.removed > 0 {
            self.index().await?;
            let unmarked = self.unmarked().await?;
            sqlx::query(&format!(
                "UPDATE subscription_traits AS t SET removed_run = ?2, updated_at = ?3
                 WHERE t.connector = ?1 AND t.removed_run IS NULL {unmarked}
                   AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)
                   AND NOT EXISTS (SELECT 1 FROM cleeng_seen s WHERE s.email = t.email)"
            ))
            .bind(&report.connector)
            .bind(report.run_id)
            .bind(&now_text)
            .execute(&mut self.conn)
            .await?;
        }
        let conn = &mut self.conn;
        // New and changed subscribers in one pass over staging, in email order when
        // it pays: the traits' key is then walked front to back rather than probed at
        // random, and a changed night touches each page once. Rows stored as they are
        // were never staged in full when the row hashes were held; otherwise the
        // conflict clause's condition skips them.
        if changes.inserted + changes.updated > 0 {
            // Sorted only when few rows are staged in full (the row hashes were held):
            // sorting a whole export (a first load, or more than two million present)
            // costs more than the ordered walk saves.
            let order = if self.held { "ORDER BY email" } else { "" };
            sqlx::query(&format!(
                "INSERT INTO subscription_traits (connector, email, offer_id, expiry_date, status,
                    payment_method_id, external_id, external_properties, season_index, coupon_code,
                    campaign_name, coupon_uses, extra, row_hash, first_seen_run, changed_run, removed_run, updated_at)
                 SELECT ?1, email, offer_id, expiry_date, status, payment_method_id, external_id,
                    external_properties, season_index, coupon_code, campaign_name, coupon_uses, extra,
                    row_hash, ?2, ?2, NULL, ?3
                 FROM cleeng_staging WHERE valid = 1 {order}
                 ON CONFLICT (connector, email) DO UPDATE SET
                    offer_id = excluded.offer_id, expiry_date = excluded.expiry_date,
                    status = excluded.status, payment_method_id = excluded.payment_method_id,
                    external_id = excluded.external_id,
                    external_properties = excluded.external_properties,
                    season_index = excluded.season_index, coupon_code = excluded.coupon_code,
                    campaign_name = excluded.campaign_name, coupon_uses = excluded.coupon_uses,
                    extra = excluded.extra, row_hash = excluded.row_hash,
                    changed_run = excluded.changed_run, removed_run = NULL,
                    updated_at = excluded.updated_at
                 WHERE subscription_traits.row_hash <> excluded.row_hash
                    OR subscription_traits.removed_run IS NOT NULL"
            ))
            .bind(&report.connector)
            .bind(report.run_id)
            .bind(&now_text)
            .execute(&mut *conn)
            .await?;
        }
        close_run(conn, report, rejections, clock.now()).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        self.conn.close().await?;
        Ok(())
    }

    async fn discard(mut self) {
        if self.in_transaction {
            // Closing the connection rolls back too; saying so releases the lock now.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        let _ = self.conn.close().await;
    }
}

/// A statement about one claim: `?1` connector, `?2` scheduled time, `?3` holder.
fn on_claim<'q>(sql: &'q str, claim: SlotClaim<'q>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    sqlx::query(sql)
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(claim.holder)
}

/// Writes the end of a run into its ledger row, with its (capped) rejections.
async fn close_run(
    conn: &mut SqliteConnection,
    report: &RunReport,
    rejections: &[Rejection],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let object = report.object.as_ref();
    let closed = sqlx::query(
        "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, object_key = ?4, object_etag = ?5,
            object_sha256 = ?6, rows_read = ?7, rows_valid = ?8, rows_rejected = ?9,
            inserted = ?10, updated = ?11, unchanged = ?12, removed = ?13, message = ?14
         WHERE id = ?1",
    )
    .bind(report.run_id)
    .bind(timestamp(now))
    .bind(report.outcome.as_str())
    .bind(object.map(|o| o.key.as_str()))
    .bind(object.map(|o| o.etag.as_str()))
    .bind(object.and_then(|o| o.sha256.as_deref()))
    .bind(report.rows.read as i64)
    .bind(report.rows.valid as i64)
    .bind(report.rows.rejected as i64)
    .bind(report.changes.inserted as i64)
    .bind(report.changes.updated as i64)
    .bind(report.changes.unchanged as i64)
    .bind(report.changes.removed as i64)
    .bind(&report.message)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    super::closed(report.run_id, closed)?;
    for chunk in rejections[..rejections.len().min(REJECTION_CAP)].chunks(1_000) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO sync_rejections (run_id, record, \"column\", reason, value) ",
        );
        insert.push_values(chunk, |mut b, r| {
            b.push_bind(report.run_id)
                .push_bind(r.record as i64)
                .push_bind(&r.column)
                .push_bind(r.reason.as_str())
                .push_bind(&r.value);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

fn run_record(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let started_at: String = row.try_get("started_at")?;
    let finished_at: Option<String> = row.try_get("finished_at")?;
    let duration_ms = finished_at
        .as_deref()
        .and_then(|f| {
            let start = DateTime::parse_from_rfc3339(&started_at).ok()?;
            let end = DateTime::parse_from_rfc3339(f).ok()?;
            u64::try_from((end - start).num_milliseconds()).ok()
        })
        .unwrap_or(0);
    let times = RunTimes {
        started_at,
        finished_at,
        duration_ms,
    };
    Ok(rows::run_record(row, times)?)
}

fn stored_traits(row: &SqliteRow) -> Result<StoredTraits, StoreError> {
    // JSON is kept as text in SQLite.
    let json = |name: &str| -> Result<Option<serde_json::Value>, sqlx::Error> {
        let text: Option<String> = row.try_get(name)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let typed = TypedTraits {
        expiry_date: row.try_get("expiry_date")?,
        external_properties: json("external_properties")?,
        extra: json("extra")?,
        updated_at: row.try_get("updated_at")?,
    };
    Ok(rows::stored_traits(row, typed)?)
}
