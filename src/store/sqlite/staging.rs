//! SQLite's tables of one run: temporary tables on a private connection, filled
//! through SQLite's own API ([`raw`]).
//!
//! `cleeng_staging` takes valid rows in full; `cleeng_seen` the record and email of
//! rejected rows and of marked rows that are staged (`marked`). A first load writes its
//! valid rows straight into the traits instead ([`super::direct`]): only those put aside
//! are staged.

use super::direct::{Direct, Link, Writer, drop_expiry_index};
use super::staged::{ORDERED, SEEN, order_by_email, raw, stage_marked, write_batch};
use crate::export::Row;
use crate::store::backend::Dialect;
use crate::store::backend::{
    Began, ByEmail, Comparison, MarkedStaged, Repeated, Session as _, Stamp, Tables, Written,
};
use crate::store::changes;
use crate::store::error::{Result, StoreError};
use crate::store::ledger::REJECTION_CAP;
use crate::store::rows::timestamp;
use crate::store::staging;
use crate::store::staging::emails::StagedEmails;
use crate::store::staging::held::{HeldHashes, Listing};
use crate::store::staging::repeats::RepeatCheck;
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

/// Valid rows written at a time (the connection's handle is held, and the thread
/// kept, for a millisecond or two).
const STAGING_BATCH: usize = 1_024;

/// Rows written at a time by record and email only.
const SEEN_BATCH: usize = 4_096;

/// Every staged email with its record and validity: both tables.
const STAGED: &str = "(SELECT record, email, valid FROM cleeng_staging
                       UNION ALL SELECT record, email, valid FROM cleeng_seen)";

/// The staged rows of these ids (JSON arrays: `?2` of `cleeng_staging`, `?3` of
/// `cleeng_seen`), as [`STAGED`].
const STAGED_OF_IDS: &str = "(SELECT record, email, valid FROM cleeng_staging
                               WHERE rowid IN (SELECT value FROM json_each(?2))
                             UNION ALL SELECT record, email, valid FROM cleeng_seen
                               WHERE rowid IN (SELECT value FROM json_each(?3)))";

/// The removal's condition on the held hashes no row marked.
const UNLISTED: &str =
    "AND lower(substr(t.row_hash, 1, 24)) IN (SELECT prefix FROM cleeng_unlisted)";

/// The temporary tables of one SQLite run.
pub struct SqliteTables {
    conn: Link,
    /// The connector whose export this is.
    connector: String,
    /// Valid rows to stage in full.
    full: Vec<Row>,
    /// Rows to stage by record and email: `(record, email, marked)`; a marked row is
    /// valid, a rejected one is not.
    seen: Vec<(u64, String, bool)>,
    /// Whether the run's transaction is open.
    in_transaction: bool,
    /// Whether the apply has written to the database file (its WAL grew).
    wrote: bool,
    /// Whether the email indexes of both tables exist.
    indexed: bool,
    /// Each staged row's id by its email, for the repeated-email check.
    emails: StagedEmails,
    /// A first load writing into the traits: see [`super::direct`].
    direct: Option<Direct>,
    /// Where the comparison and the writes read staged rows: [`ORDERED`] or `cleeng_staging`.
    rows: &'static str,
}

impl SqliteTables {
    /// The tables, on their connection.
    pub(super) async fn create(
        mut conn: SqliteConnection,
        connector: &str,
    ) -> Result<SqliteTables> {
        for sql in [
            "CREATE TEMP TABLE cleeng_staging (
                record INTEGER NOT NULL, email TEXT NOT NULL, valid INTEGER NOT NULL,
                offer_id TEXT, expiry_date TEXT, status TEXT, payment_method_id INTEGER,
                external_id TEXT, external_properties TEXT, season_index INTEGER,
                coupon_code TEXT, campaign_name TEXT, coupon_uses INTEGER, extra TEXT, row_hash TEXT,
                offer_country TEXT)",
            "CREATE TEMP TABLE cleeng_seen (
                record INTEGER NOT NULL, email TEXT NOT NULL, valid INTEGER NOT NULL,
                marked INTEGER NOT NULL)",
        ] {
            sqlx::query(sql).execute(&mut conn).await?;
        }
        Ok(SqliteTables {
            conn: Link::Here(conn),
            connector: connector.to_owned(),
            full: Vec::with_capacity(STAGING_BATCH),
            seen: Vec::new(),
            in_transaction: false,
            wrote: false,
            indexed: false,
            emails: StagedEmails::new(),
            direct: None,
            rows: "cleeng_staging",
        })
    }

    /// Runs a statement with the connector, the run and its instant as `?1`-`?3`.
    async fn stamped(&mut self, sql: &str, stamp: Stamp) -> Result<u64> {
        Ok(sqlx::query(sql)
            .bind(&self.connector)
            .bind(stamp.run_id)
            .bind(timestamp(stamp.now))
            .execute(self.conn.get()?)
            .await?
            .rows_affected())
    }

    /// Indexes both tables by email, for the statements that probe them per
    /// subscriber (repeated emails, removals). Most runs need neither.
    async fn index(&mut self) -> Result<()> {
        if !self.indexed {
            for sql in [
                "CREATE INDEX temp.cleeng_staging_by_email ON cleeng_staging (email)",
                "CREATE INDEX temp.cleeng_seen_by_email ON cleeng_seen (email)",
            ] {
                sqlx::query(sql).execute(self.conn.get()?).await?;
            }
            self.indexed = true;
        }
        Ok(())
    }

    /// Waits for a first load's writer to have inserted the rows it was sent, and takes
    /// its connection back. Nothing to do on any other run.
    async fn stop_writing(&mut self) -> Result<()> {
        let writer = match std::mem::replace(&mut self.conn, Link::Lost) {
            Link::Lent(writer) => writer,
            other => {
                self.conn = other;
                return Ok(());
            }
        };
        let rows = std::mem::take(&mut self.full);
        // Refused when the writer stopped: then its error comes with `finish`.
        let sent = writer.send(rows).await;
        let (conn, written) = writer.finish().await;
        if let Some(conn) = conn {
            self.conn = Link::Here(conn);
        }
        let written = written?;
        if !sent {
            return Err(stopped_without_error());
        }
        if let Some(direct) = self.direct.as_mut() {
            direct.written = written;
        }
        Ok(())
    }
}

impl Tables for SqliteTables {
    type Session = SqliteConnection;
    const WRITES_DIRECTLY: bool = true;

    async fn full(&mut self, row: Row) -> Result<()> {
        self.full.push(row);
        if self.full.len() < STAGING_BATCH {
            return Ok(());
        }
        if let Link::Lent(writer) = &self.conn {
            let rows = std::mem::replace(&mut self.full, Vec::with_capacity(STAGING_BATCH));
            if !writer.send(rows).await {
                // It stopped: its error says why.
                self.stop_writing().await?;
                return Err(stopped_without_error());
            }
            return Ok(());
        }
        self.flush().await
    }

    async fn write_directly(&mut self, stamp: Stamp) -> Result<()> {
        self.begin().await?;
        self.wrote = true;
        let rebuild = drop_expiry_index(self.conn.get()?).await?;
        self.direct = Some(Direct {
            stamp,
            written: 0,
            undone: 0,
            rebuild,
        });
        if let Link::Here(conn) = std::mem::replace(&mut self.conn, Link::Lost) {
            self.conn = Link::Lent(Writer::start(conn, self.connector.clone(), stamp));
        }
        Ok(())
    }

    async fn by_email(&mut self, record: u64, email: &str, kind: ByEmail) -> Result<()> {
        self.seen
            .push((record, email.to_owned(), kind == ByEmail::Marked));
        if self.seen.len() >= SEEN_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // A first load's rows written end here; those put aside are staged after.
        self.stop_writing().await?;
        if self.full.is_empty() && self.seen.is_empty() {
            return Ok(());
        }
        let (full, seen, emails) = (&self.full, &self.seen, &mut self.emails);
        raw(self.conn.get()?, |db| write_batch(db, full, seen, emails)).await?;
        self.full.clear();
        self.seen.clear();
        Ok(())
    }

    async fn stage_marked(&mut self, held: &HeldHashes, emails: Option<&[String]>) -> Result<u64> {
        let emails = emails.map(candidates_json);
        let (connector, noted) = (&self.connector, &mut self.emails);
        raw(self.conn.get()?, |db| {
            stage_marked(db, held, connector, emails.as_deref(), noted)
        })
        .await
    }

    async fn reject_repeats(&mut self, check: &RepeatCheck) -> Result<Repeated> {
        // A first load's rows put aside are staged by now, some still in the buffer.
        self.flush().await?;
        // Checked exactly among the candidates the filter noted (a JSON array, unpacked
        // by SQLite), or among every email when it noted too many.
        // With each email's first record: that row is the one kept.
        sqlx::query(
            "CREATE TEMP TABLE cleeng_repeated (email TEXT PRIMARY KEY, first INTEGER NOT NULL)",
        )
        .execute(self.conn.get()?)
        .await?;
        let emails = match check {
            RepeatCheck::None => return Ok(Repeated::default()),
            RepeatCheck::Only(candidates) => {
                // The candidates' rows by their ids where they were noted: not a read
                // of every staged row.
                let ids = self.emails.find(candidates)?;
                let from = if ids.is_some() { STAGED_OF_IDS } else { STAGED };
                let sql = format!(
                    "INSERT INTO cleeng_repeated
                     SELECT email, MIN(record) FROM {from}
                     WHERE email IN (SELECT value FROM json_each(?1))
                     GROUP BY email HAVING COUNT(*) > 1"
                );
                let mut query = sqlx::query(&sql).bind(candidates_json(candidates));
                if let Some(ids) = ids {
                    let (seen, full): (Vec<u64>, Vec<u64>) =
                        ids.into_iter().partition(|id| id & SEEN != 0);
                    let seen: Vec<u64> = seen.into_iter().map(|id| id & !SEEN).collect();
                    query = query
                        .bind(serde_json::to_string(&full).unwrap_or_default())
                        .bind(serde_json::to_string(&seen).unwrap_or_default());
                }
                query.execute(self.conn.get()?).await?.rows_affected()
            }
            RepeatCheck::All => sqlx::query(&format!(
                "INSERT INTO cleeng_repeated
                 SELECT email, MIN(record) FROM {STAGED} GROUP BY email HAVING COUNT(*) > 1"
            ))
            .execute(self.conn.get()?)
            .await?
            .rows_affected(),
        };
        if emails == 0 {
            return Ok(Repeated::default());
        }
        self.index().await?;
        const REPEATED: &str = "email IN (SELECT email FROM cleeng_repeated)";
        if self.direct.is_some() {
            // The row written of each repeated email: nothing else of the connector was
            // stored (its lock keeps other writers out), so it is the only one.
            let undone = sqlx::query(&format!(
                "DELETE FROM subscription_traits WHERE connector = ?1 AND {REPEATED}"
            ))
            .bind(&self.connector)
            .execute(self.conn.get()?)
            .await?
            .rows_affected();
            if let Some(direct) = self.direct.as_mut() {
                direct.undone = undone;
            }
        }
        let records = sqlx::query_as(&format!(
            "SELECT record, email FROM {STAGED} WHERE {REPEATED} ORDER BY record LIMIT {REJECTION_CAP}"
        ))
        .fetch_all(self.conn.get()?)
        .await?;
        let mut rows = 0;
        for table in ["cleeng_staging", "cleeng_seen"] {
            rows += sqlx::query(&format!(
                "UPDATE {table} SET valid = 0 WHERE valid = 1 AND {REPEATED}"
            ))
            .execute(self.conn.get()?)
            .await?
            .rows_affected();
        }
        // One staged row per email from here on (the first record, not valid): it
        // still says its subscriber is listed.
        for table in ["cleeng_staging", "cleeng_seen"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE {REPEATED} AND record > (
                    SELECT r.first FROM cleeng_repeated r WHERE r.email = {table}.email)"
            ))
            .execute(self.conn.get()?)
            .await?;
        }
        Ok(Repeated::new(emails, rows, records))
    }

    async fn begin(&mut self) -> Result<()> {
        self.flush().await?;
        if self.in_transaction {
            // A first load's, begun before its first row.
            return Ok(());
        }
        // The write lock, held from here to the apply, so that no other writer changes
        // what the counts (and the guards) were computed on.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(self.conn.get()?)
            .await?;
        self.in_transaction = true;
        Ok(())
    }

    /// One pass over the staged rows joined with the traits, counted here (through
    /// SQLite's own API, rows are cheap to step through): the stored hashes listed in
    /// the same pass, not by a second join.
    async fn compare(
        &mut self,
        began: Began,
        mut listing: Option<&mut dyn Listing>,
    ) -> Result<Comparison> {
        let rows = if began == Began::Held {
            ORDERED
        } else {
            self.rows
        };
        let connector = &self.connector;
        let compared = raw(self.conn.get()?, |db| {
            if rows == ORDERED {
                order_by_email(db)?;
            }
            let mut counts = Comparison::default();
            // The new rows are noted by their rowid as they are met: the insert then
            // takes them without probing the traits again for every staged row (2.6 s
            // for the 500,000 changed rows of a 5M night, none of them new).
            db.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS cleeng_new (id INTEGER PRIMARY KEY);
                 DELETE FROM cleeng_new;",
            )?;
            let mut note_new = db.prepare("INSERT INTO cleeng_new (id) VALUES (?1)")?;
            let mut staged = db.prepare(&format!(
                "SELECT s.valid = 1, t.email IS NOT NULL, t.removed_run IS NULL,
                        t.row_hash = s.row_hash, t.row_hash, s.rowid
                 FROM {rows} s
                 LEFT JOIN subscription_traits t ON t.connector = ?1 AND t.email = s.email"
            ))?;
            let mut rows = staged.query([connector])?;
            while let Some(row) = rows.next()? {
                let (valid, stored): (bool, bool) = (row.get(0)?, row.get(1)?);
                let present = stored && row.get::<_, bool>(2)?;
                let same = stored && row.get::<_, bool>(3)?;
                match (valid, stored) {
                    (true, false) => {
                        counts.inserted += 1;
                        note_new.execute([row.get::<_, i64>(5)?])?;
                    }
                    (true, true) if same && present => counts.unchanged += 1,
                    (true, true) => counts.updated += 1,
                    (false, _) => {}
                }
                if present {
                    counts.listed += 1;
                    if let Some(listing) = listing.as_deref_mut() {
                        listing.list(row.get_ref(4)?.as_bytes().unwrap_or_default());
                    }
                }
            }
            // Rejected rows name subscribers too.
            let mut rejected = db.prepare(
                "SELECT t.row_hash FROM cleeng_seen s
                 JOIN subscription_traits t
                   ON t.connector = ?1 AND t.email = s.email AND t.removed_run IS NULL
                 WHERE s.marked = 0",
            )?;
            let mut rows = rejected.query([connector])?;
            while let Some(row) = rows.next()? {
                counts.listed += 1;
                if let Some(listing) = listing.as_deref_mut() {
                    listing.list(row.get_ref(0)?.as_bytes().unwrap_or_default());
                }
            }
            Ok(counts)
        })
        .await?;
        self.rows = rows;
        Ok(compared)
    }

    async fn count_marked(&mut self) -> Result<MarkedStaged> {
        let counts = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(valid), 0) FROM cleeng_seen WHERE marked = 1",
        )
        .fetch_one(self.conn.get()?)
        .await?;
        Ok(MarkedStaged::of(counts))
    }

    async fn keep_unlisted(&mut self, prefixes: impl Iterator<Item = String> + Send) -> Result<()> {
        sqlx::query("CREATE TEMP TABLE cleeng_unlisted (prefix TEXT PRIMARY KEY) WITHOUT ROWID")
            .execute(self.conn.get()?)
            .await?;
        raw(self.conn.get()?, |db| {
            let mut keep = db.prepare("INSERT OR IGNORE INTO cleeng_unlisted VALUES (?1)")?;
            for prefix in prefixes {
                keep.execute([prefix])?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_unlisted(&mut self, stamp: Stamp, unlisted_only: bool) -> Result<u64> {
        self.index().await?;
        self.wrote = true;
        let unlisted = if unlisted_only { UNLISTED } else { "" };
        let removable = format!(
            "t.connector = ?1 AND t.removed_run IS NULL {unlisted}
               AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)
               AND NOT EXISTS (SELECT 1 FROM cleeng_seen s WHERE s.email = t.email)"
        );
        // The removed rows' changes first, read by the same condition in the same
        // transaction: SQLite's UPDATE cannot feed an INSERT. `OR FAIL`: see
        // `write_changes`.
        let recorded = if stamp.record {
            let sql = changes::removals(Dialect::Sqlite, "subscription_traits t", &removable);
            Some(self.stamped(&sql, stamp).await?)
        } else {
            None
        };
        let removed = self
            .stamped(
                &format!(
                    "UPDATE OR FAIL subscription_traits AS t SET removed_run = ?2, updated_at = ?3
                     WHERE {removable}"
                ),
                stamp,
            )
            .await?;
        changes::recorded_all(recorded, removed)?;
        Ok(removed)
    }

    async fn write_changes(&mut self, stamp: Stamp, began: Began) -> Result<Written> {
        self.wrote = true;
        // In email order when hashes were held ([`ORDERED`]); sorting a whole export
        // (every row staged) would cost more than the ordered walk saves.
        let rows = self.rows;
        // The changes first, of exactly the rows the statements below write.
        let recorded = if stamp.record {
            let sql = changes::staged(
                Dialect::Sqlite,
                &format!(
                    "{rows} s LEFT JOIN subscription_traits t
                        ON t.connector = ?1 AND t.email = s.email"
                ),
                "s.valid = 1 AND (t.email IS NULL OR t.row_hash <> s.row_hash
                    OR t.removed_run IS NOT NULL)",
            );
            Some(self.stamped(&sql, stamp).await?)
        } else {
            None
        };
        // `OR FAIL`, not an upsert's default `ABORT`: inside a transaction, a statement
        // that may abort half-way keeps a statement journal of every page it changes
        // (214 MB for the 100,000 updates of a 1M night), and a failure rolls the whole
        // run back anyway. Rows staged as they are stored are left alone.
        let updated = if began == Began::Nothing {
            0
        } else {
            self.stamped(
                &format!(
                    "UPDATE OR FAIL subscription_traits AS t SET
                        offer_id = s.offer_id, expiry_date = s.expiry_date, status = s.status,
                        payment_method_id = s.payment_method_id, external_id = s.external_id,
                        external_properties = s.external_properties,
                        season_index = s.season_index, coupon_code = s.coupon_code,
                        campaign_name = s.campaign_name, coupon_uses = s.coupon_uses,
                        extra = s.extra, row_hash = s.row_hash, offer_country = s.offer_country,
                        changed_run = ?2, removed_run = NULL, updated_at = ?3
                     FROM {rows} s
                     WHERE s.valid = 1 AND t.connector = ?1 AND t.email = s.email
                       AND (t.row_hash <> s.row_hash OR t.removed_run IS NOT NULL)"
                ),
                stamp,
            )
            .await?
        };
        // The new rows are those the comparison noted (none is compared on a first load).
        let new = if began == Began::Nothing {
            ""
        } else {
            "AND s.rowid IN (SELECT id FROM cleeng_new)"
        };
        // Into a table with no row at all, the expiry index is built after the rows:
        // one sort, not an entry at a random place per row.
        let dropped = if let Some(direct) = self.direct.as_mut() {
            direct.rebuild.take()
        } else if began == Began::Nothing {
            drop_expiry_index(self.conn.get()?).await?
        } else {
            None
        };
        let inserted = self
            .stamped(
                &format!(
                    "INSERT OR FAIL INTO subscription_traits (connector, email, offer_id,
                        expiry_date, status, payment_method_id, external_id,
                        external_properties, season_index, coupon_code, campaign_name,
                        coupon_uses, extra, row_hash, offer_country, first_seen_run,
                        changed_run, removed_run, updated_at)
                     SELECT ?1, email, offer_id, expiry_date, status, payment_method_id,
                        external_id, external_properties, season_index, coupon_code,
                        campaign_name, coupon_uses, extra, row_hash, offer_country, ?2, ?2,
                        NULL, ?3
                     FROM {rows} s WHERE valid = 1 {new}"
                ),
                stamp,
            )
            .await?;
        if let Some(definition) = dropped {
            sqlx::query(&definition).execute(self.conn.get()?).await?;
        }
        changes::recorded_all(recorded, inserted + updated)?;
        let inserted = match &self.direct {
            Some(direct) => {
                inserted
                    + staging::direct::inserted(direct.stamp, stamp, direct.written, direct.undone)?
            }
            None => inserted,
        };
        Ok(Written { inserted, updated })
    }

    async fn session(&mut self) -> Result<&mut SqliteConnection> {
        self.conn.get()
    }

    async fn commit(mut self) -> Result<()> {
        self.conn.get()?.execute("COMMIT", &[]).await?;
        if let Link::Here(conn) = self.conn {
            conn.close().await?;
        }
        Ok(())
    }

    async fn discard(mut self) {
        // A first load's writer gives its connection back once the rows sent are in
        // (or it failed); closing the connection without that would not wait for it.
        let _ = self.stop_writing().await;
        let Link::Here(mut conn) = self.conn else {
            return;
        };
        if self.in_transaction {
            // Closing the connection rolls back too; saying so releases the lock now.
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
        }
        if self.wrote {
            // A rolled-back apply leaves its pages in the WAL, which keeps its size
            // until a checkpoint resets it: a failed million-row apply would hold
            // hundreds of megabytes of disk in a long-running daemon.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
            {
                tracing::debug!(error = %e, "the WAL was not checkpointed after a failed apply");
            }
        }
        let _ = conn.close().await;
    }
}

/// A first load's writer that stopped taking rows with no error to say why: rows would
/// be lost, so the run fails.
fn stopped_without_error() -> StoreError {
    StoreError::Bug("a first load's writer stopped taking rows without an error".into())
}

/// The emails a repeated-email check is to read, as the JSON array SQLite's
/// `json_each` unpacks.
fn candidates_json(candidates: &[String]) -> String {
    serde_json::to_string(candidates).unwrap_or_default()
}
