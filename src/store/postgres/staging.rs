//! PostgreSQL's tables of one run: a temporary table on a private connection, filled
//! by one COPY that a task of its own feeds ([`super::stream`]), so that the server
//! ingests one chunk while the next is parsed.
//!
//! `cleeng_staging` takes every staged row: valid rows in full, rejected and marked
//! rows by record and email (`marked`: the row's subscriber is stored as it is).
//!
//! A first load COPYs its rows straight into the traits instead, in the run's
//! transaction ([`Tables::write_directly`], [`super::direct`]): staging five million
//! rows and copying them in took 40 s of a 42 s first load. What it puts aside for the
//! repeated-email check is staged afterwards, by a second COPY into staging.

use super::copy::{copy_lines, push_text, push_traits};
use super::stream::Session;
use crate::export::Row;
use crate::store::backend::Dialect;
use crate::store::backend::{
    Began, ByEmail, Comparison, MarkedStaged, Repeated, Session as _, Stamp, Tables, Written,
};
use crate::store::changes;
use crate::store::error::Result;
use crate::store::ledger::REJECTION_CAP;
use crate::store::staging::held::{HeldHashes, Listing};
use crate::store::staging::repeats::RepeatCheck;
use futures::TryStreamExt;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgPool};

/// Bytes of CSV gathered before they are handed to the COPY task.
const COPY_CHUNK: usize = 256 * 1024;
/// Hash prefixes or marked rows sent to the server per statement.
const MARKS_CHUNK: usize = 50_000;

/// The columns COPY fills, in the order rows are encoded.
const STAGING_COLUMNS: &str = "record, email, valid, offer_id, expiry_date, status, \
    payment_method_id, external_id, external_properties, season_index, coupon_code, \
    campaign_name, coupon_uses, extra, row_hash, offer_country, marked";

/// The COPY into staging.
fn staging_copy() -> String {
    format!("COPY cleeng_staging ({STAGING_COLUMNS}) FROM STDIN WITH (FORMAT csv)")
}

/// The removal's condition on the held hashes no row marked.
const UNLISTED: &str = "AND lower(left(t.row_hash, 24)) IN (SELECT prefix FROM cleeng_unlisted)";

/// The temporary tables of one PostgreSQL run.
pub struct PgTables {
    /// The connector whose export this is.
    connector: String,
    /// Rows encoded as CSV, waiting to be handed to the COPY task.
    csv: Vec<u8>,
    /// The session: with the COPY task while rows stream, here once they are in.
    conn: Session,
    /// For reads beside the staging session (the marked rows' emails).
    pool: PgPool,
    /// A first load writing into the traits: see [`super::direct`].
    direct: Option<super::direct::Direct>,
}

impl PgTables {
    /// The table, on its connection, with the COPY into it started.
    pub(super) async fn create(
        mut conn: PgConnection,
        pool: PgPool,
        connector: &str,
    ) -> Result<PgTables> {
        // For this session only: the joins and aggregates over a whole export run in
        // memory, not in batches spilled to disk; and no JIT, whose compilation of the
        // update of the changed rows (costed past the inlining and optimising
        // thresholds) took 0.25 s of a 1M changed night, for expressions run once a row.
        for sql in ["SET work_mem = '64MB'", "SET jit = off"] {
            sqlx::query(sql).execute(&mut conn).await?;
        }
        sqlx::query(
            "CREATE TEMP TABLE cleeng_staging (
                record BIGINT NOT NULL, email TEXT NOT NULL, valid BOOLEAN NOT NULL,
                offer_id TEXT, expiry_date DATE, status TEXT, payment_method_id BIGINT,
                external_id TEXT, external_properties JSONB, season_index BIGINT,
                coupon_code TEXT, campaign_name TEXT, coupon_uses BIGINT, extra JSONB, row_hash TEXT,
                offer_country TEXT, marked BOOLEAN NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        Ok(PgTables {
            connector: connector.to_owned(),
            csv: Vec::with_capacity(COPY_CHUNK + 4096),
            conn: Session::copy(conn, staging_copy()),
            pool,
            direct: None,
        })
    }

    /// Runs a statement that writes the connector's traits with the run's stamp (`$1`
    /// connector, `$2` run, `$3` now); its rows affected.
    pub(super) async fn stamped(&mut self, sql: &str, stamp: Stamp) -> Result<u64> {
        let conn = self.conn.ready().await?;
        Ok(sqlx::query(sql)
            .bind(&self.connector)
            .bind(stamp.run_id)
            .bind(stamp.now)
            .execute(&mut *conn)
            .await?
            .rows_affected())
    }

    /// Hands the encoded rows to the COPY task once a chunk is full.
    async fn queued(&mut self) -> Result<()> {
        if self.csv.len() >= COPY_CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<()> {
        let chunk = std::mem::replace(&mut self.csv, Vec::with_capacity(COPY_CHUNK + 4096));
        if let Session::Ready(_) = self.conn
            && self.direct.as_ref().is_some_and(|d| !d.into_traits)
        {
            // A first load's rows put aside, after the rows written: a second COPY.
            let conn = self.conn.take().await?;
            self.conn = Session::copy(conn, staging_copy());
        }
        if self.conn.send(chunk).await? {
            return Ok(());
        }
        // The task stopped taking chunks: it failed; its error says why.
        self.conn.ready().await.map(|_| ())
    }
}

impl Tables for PgTables {
    type Session = PgConnection;
    const WRITES_DIRECTLY: bool = true;

    async fn full(&mut self, row: Row) -> Result<()> {
        if let Some(direct) = self.direct.as_ref().filter(|d| d.into_traits) {
            direct.encode(&row, &mut self.csv);
            return self.queued().await;
        }
        let out = &mut self.csv;
        out.extend_from_slice(itoa::Buffer::new().format(row.record).as_bytes());
        push_text(out, Some(row.email()));
        out.extend_from_slice(b",t");
        push_traits(out, &row);
        out.extend_from_slice(b",f\n");
        self.queued().await
    }

    async fn by_email(&mut self, record: u64, email: &str, kind: ByEmail) -> Result<()> {
        let out = &mut self.csv;
        out.extend_from_slice(itoa::Buffer::new().format(record).as_bytes());
        push_text(out, Some(email));
        out.extend_from_slice(match kind {
            // Valid, every trait NULL, marked.
            ByEmail::Marked => b",t,,,,,,,,,,,,,,t\n",
            // Not valid, every trait NULL, not marked.
            ByEmail::Rejected => b",f,,,,,,,,,,,,,,f\n",
        });
        self.queued().await
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.csv.is_empty() {
            self.send().await?;
        }
        let copied = self.conn.finish().await?;
        if let Some(direct) = self.direct.as_mut().filter(|d| d.into_traits) {
            direct.written = copied;
            direct.into_traits = false;
        }
        Ok(())
    }

    async fn write_directly(&mut self, stamp: Stamp) -> Result<()> {
        // The COPY into staging started with the tables, nothing sent to it yet.
        let conn = self.conn.take().await?;
        let (session, direct) = super::direct::begin(conn, &self.connector, stamp).await?;
        (self.conn, self.direct) = (session, Some(direct));
        Ok(())
    }

    /// The stored hashes are read beside the staging session, a chunk of marked rows
    /// staged at a time, so memory stays flat.
    async fn stage_marked(&mut self, held: &HeldHashes, emails: Option<&[String]>) -> Result<u64> {
        let conn = self.conn.ready().await?;
        // Candidates by the primary key only: with `removed_run IS NULL` (the expiry index's
        // predicate) an unanalyzed table had every row read, 0.4 s at 1M; a removed row is
        // never marked anyway. Two statements: `$2 IS NULL OR ...` plans use no index.
        let sql = match emails {
            Some(_) => {
                "SELECT email, row_hash FROM subscription_traits
                 WHERE connector = $1 AND email = ANY($2)"
            }
            None => {
                "SELECT email, row_hash FROM subscription_traits
                 WHERE connector = $1 AND removed_run IS NULL"
            }
        };
        let mut query = sqlx::query_as::<_, (String, String)>(sql).bind(&self.connector);
        if let Some(emails) = emails {
            query = query.bind(emails);
        }
        let mut stored = query.fetch(&self.pool);
        let (mut records, mut found, mut staged) = (Vec::new(), Vec::new(), 0);
        loop {
            let next = stored.try_next().await?;
            if let Some((email, hash)) = &next
                && let Some(record) = held.marked(hash)
            {
                records.push(record as i64);
                found.push(email.clone());
            }
            if records.len() >= MARKS_CHUNK || (next.is_none() && !records.is_empty()) {
                sqlx::query(
                    "INSERT INTO cleeng_staging (record, email, valid, marked)
                     SELECT record, email, TRUE, TRUE FROM UNNEST($1::bigint[], $2::text[]) AS m(record, email)",
                )
                .bind(&records)
                .bind(&found)
                .execute(&mut *conn)
                .await?;
                staged += records.len() as u64;
                records.clear();
                found.clear();
            }
            if next.is_none() {
                return Ok(staged);
            }
        }
    }

    async fn reject_repeats(&mut self, check: &RepeatCheck) -> Result<Repeated> {
        let conn = self.conn.ready().await?;
        let emails = match check {
            RepeatCheck::None => return Ok(Repeated::default()),
            RepeatCheck::Only(candidates) => sqlx::query(
                "CREATE TEMP TABLE cleeng_repeated AS
                 SELECT email FROM cleeng_staging WHERE email = ANY($1)
                 GROUP BY email HAVING COUNT(*) > 1",
            )
            .bind(candidates)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            RepeatCheck::All => sqlx::query(
                "CREATE TEMP TABLE cleeng_repeated AS
                 SELECT email FROM cleeng_staging GROUP BY email HAVING COUNT(*) > 1",
            )
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        };
        if emails == 0 {
            return Ok(Repeated::default());
        }
        const REPEATED: &str = "email IN (SELECT email FROM cleeng_repeated)";
        if let Some(direct) = &mut self.direct {
            direct.undone = super::direct::take_back(conn, &self.connector, REPEATED).await?;
        }
        let records = sqlx::query_as(&format!(
            "SELECT record, email FROM cleeng_staging WHERE {REPEATED} ORDER BY record LIMIT {REJECTION_CAP}"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let rows = sqlx::query(&format!(
            "UPDATE cleeng_staging SET valid = FALSE WHERE valid AND {REPEATED}"
        ))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        // One staged row per email from here on (the first record, not valid): it
        // still says its subscriber is listed.
        sqlx::query(&format!(
            "DELETE FROM cleeng_staging s WHERE {REPEATED} AND EXISTS (
                SELECT 1 FROM cleeng_staging k WHERE k.email = s.email AND k.record < s.record)"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(Repeated::new(emails, rows, records))
    }

    async fn begin(&mut self) -> Result<()> {
        if self.direct.is_some() {
            // A first load's, begun before its first row.
            return Ok(());
        }
        // The connector's advisory lock, held for the whole run, keeps other writers of
        // this connector out until it commits.
        self.conn.ready().await?.execute("BEGIN", &[]).await?;
        Ok(())
    }

    async fn compare(
        &mut self,
        began: Began,
        listing: Option<&mut dyn Listing>,
    ) -> Result<Comparison> {
        let conn = self.conn.ready().await?;
        // Temporary tables are never analysed by autovacuum: without this the planner
        // guesses their size and may pick nested loops over a million rows. No index:
        // the comparison is a hash join, and the statements after it read the rows it
        // found by row id.
        sqlx::query("ANALYZE cleeng_staging (email, valid, marked)")
            .execute(&mut *conn)
            .await?;
        // The rows not marked (new, changed, rejected), compared with what is stored,
        // once: each with where it is (staging's and the trait's row ids, stable until
        // this transaction ends) and what the counts need. The update of the changed
        // rows goes straight to them by row id instead of joining staging with the
        // whole table again.
        sqlx::query(
            "CREATE TEMP TABLE cleeng_matches (
                staged TID NOT NULL, stored TID, valid BOOLEAN NOT NULL,
                same BOOLEAN, present BOOLEAN, stored_hash TEXT, before TEXT[])",
        )
        .execute(&mut *conn)
        .await?;
        // With held hashes, the stored hash of each subscriber named, to be listed.
        let stored_hash = if listing.is_some() {
            "left(t.row_hash, 24)"
        } else {
            "NULL"
        };
        // With held hashes only the changed rows are staged: each is looked up by the
        // traits' key, in email order, so the key and the table are walked front to back.
        // A hash join reads every trait instead: 5.9 s for 500,000 changed rows of 5M.
        // With none held every row is staged, and the hash join is the cheaper.
        let probed = began == Began::Held;
        if probed {
            for sql in [
                "SET LOCAL enable_hashjoin = off",
                "SET LOCAL enable_mergejoin = off",
            ] {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
        }
        let order = if probed { "ORDER BY email" } else { "" };
        // A changed row's stored fields, for the change feed: read here, where the trait
        // is read anyway, rather than fetched again by row id when the change is recorded.
        let before = changes::before_if_changed(Dialect::Postgres);
        sqlx::query(&format!(
            "INSERT INTO cleeng_matches
             SELECT s.id, t.ctid, s.valid, t.row_hash = s.row_hash,
                    t.email IS NOT NULL AND t.removed_run IS NULL, {stored_hash}, {before}
             FROM (SELECT ctid AS id, email, valid, row_hash FROM cleeng_staging
                   WHERE NOT marked {order}) s
             LEFT JOIN subscription_traits t ON t.connector = $1 AND t.email = s.email"
        ))
        .bind(&self.connector)
        .execute(&mut *conn)
        .await?;
        if probed {
            for sql in ["RESET enable_hashjoin", "RESET enable_mergejoin"] {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
        }
        let counts = sqlx::query_as(
            "SELECT
                COUNT(*) FILTER (WHERE valid AND stored IS NULL),
                COUNT(*) FILTER (WHERE valid AND stored IS NOT NULL AND (NOT same OR NOT present)),
                COUNT(*) FILTER (WHERE valid AND same AND present),
                COUNT(*) FILTER (WHERE present)
             FROM cleeng_matches",
        )
        .fetch_one(&mut *conn)
        .await?;
        if let Some(listing) = listing {
            // As COPY text, for the same reason as the held hashes themselves.
            copy_lines(
                conn,
                "COPY (SELECT stored_hash FROM cleeng_matches WHERE present) TO STDOUT",
                |line| {
                    listing.list(line);
                    true
                },
            )
            .await?;
        }
        Ok(Comparison::of(counts))
    }

    async fn count_marked(&mut self) -> Result<MarkedStaged> {
        let conn = self.conn.ready().await?;
        let counts = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE valid) FROM cleeng_staging WHERE marked",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(MarkedStaged::of(counts))
    }

    async fn keep_unlisted(&mut self, prefixes: impl Iterator<Item = String> + Send) -> Result<()> {
        let conn = self.conn.ready().await?;
        sqlx::query("CREATE TEMP TABLE cleeng_unlisted (prefix TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let mut prefixes = prefixes.peekable();
        while prefixes.peek().is_some() {
            let chunk: Vec<String> = prefixes.by_ref().take(MARKS_CHUNK).collect();
            sqlx::query("INSERT INTO cleeng_unlisted SELECT UNNEST($1::text[])")
                .bind(&chunk)
                .execute(&mut *conn)
                .await?;
        }
        // Indexed: the traits' statistics may say the connector has a handful of rows
        // (autovacuum not yet past after a first load), and the planner then probes
        // this table once per subscriber; a scan each was 30 s for 60,000 subscribers.
        for sql in [
            "CREATE INDEX ON cleeng_unlisted (prefix)",
            "ANALYZE cleeng_unlisted",
        ] {
            sqlx::query(sql).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The comparison matched distinct stored rows, all present: as many as there are
    /// present subscribers means every one of them. A count over the comparison, where
    /// the removal statement would index staging and probe it once per subscriber
    /// (18 s of a 5M-row night).
    async fn all_named(&mut self, present: u64) -> Result<bool> {
        let conn = self.conn.ready().await?;
        let named: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT stored) FROM cleeng_matches WHERE present")
                .fetch_one(&mut *conn)
                .await?;
        Ok(u64::try_from(named).is_ok_and(|named| named == present))
    }

    async fn remove_unlisted(&mut self, stamp: Stamp, unlisted_only: bool) -> Result<u64> {
        let conn = self.conn.ready().await?;
        // Before the inserts: the table's statistics still describe the subscribers
        // present before this run. The index on staging keeps the anti-join a probe per
        // subscriber whatever the planner believes of the tables.
        sqlx::query("CREATE INDEX ON cleeng_staging (email)")
            .execute(&mut *conn)
            .await?;
        let unlisted = if unlisted_only { UNLISTED } else { "" };
        let removal = format!(
            "UPDATE subscription_traits t SET removed_run = $2, updated_at = $3
             WHERE t.connector = $1 AND t.removed_run IS NULL {unlisted}
               AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)"
        );
        self.remove_recorded(&removal, stamp).await
    }

    async fn write_changes(&mut self, stamp: Stamp, began: Began) -> Result<Written> {
        let conn = self.conn.ready().await?;
        // No ON CONFLICT: the connector's lock keeps other writers out, and a conflict
        // would mean a bug, to be rolled back, not merged.
        let insert = |from: &str| {
            format!(
                "INSERT INTO subscription_traits (connector, email, offer_id, expiry_date, status,
                    payment_method_id, external_id, external_properties, season_index, coupon_code,
                    campaign_name, coupon_uses, extra, row_hash, offer_country, first_seen_run,
                    changed_run, removed_run, updated_at)
                 SELECT $1, s.email, s.offer_id, s.expiry_date, s.status, s.payment_method_id,
                    s.external_id, s.external_properties, s.season_index, s.coupon_code,
                    s.campaign_name, s.coupon_uses, s.extra, s.row_hash, s.offer_country, $2, $2,
                    NULL, $3
                 {from}"
            )
        };
        if began == Began::Nothing {
            // A first load: nothing stored to compare with or update (and the planner,
            // told nothing of staging, might probe the growing table once a row).
            let recorded = self.record(stamp, false).await?;
            let inserted = self
                .stamped(
                    &insert("FROM cleeng_staging s WHERE s.valid AND NOT s.marked"),
                    stamp,
                )
                .await?;
            changes::recorded_all(recorded, inserted)?;
            let inserted = super::direct::inserted(self.direct.as_ref(), stamp, inserted)?;
            return Ok(Written {
                inserted,
                updated: 0,
            });
        }
        // Only what changed is written: unchanged subscribers are not even locked. Both
        // statements go by the row ids the comparison found, a row fetched per change
        // (a night with nothing new reads no trait at all). The changed rows are updated
        // in the order they are stored, so that the table and its indexes are walked
        // front to back once: in staging's order (by pass, past the held set's limit)
        // the update of 500,000 of 5M subscribers took 20 s, sweeping the heap once per
        // pass. Given statistics, the
        // planner prefers hashing those ids against a scan of every trait, twice the
        // time; joins by hash or merge are off for these two statements.
        for sql in [
            "SET LOCAL enable_hashjoin = off",
            "SET LOCAL enable_mergejoin = off",
        ] {
            sqlx::query(sql).execute(&mut *conn).await?;
        }
        let recorded = self.record(stamp, true).await?;
        let conn = self.conn.ready().await?;
        let updated = sqlx::query(
            "UPDATE subscription_traits t SET
                offer_id = s.offer_id, expiry_date = s.expiry_date, status = s.status,
                payment_method_id = s.payment_method_id, external_id = s.external_id,
                external_properties = s.external_properties, season_index = s.season_index,
                coupon_code = s.coupon_code, campaign_name = s.campaign_name,
                coupon_uses = s.coupon_uses, extra = s.extra, row_hash = s.row_hash,
                offer_country = s.offer_country, changed_run = $1, removed_run = NULL,
                updated_at = $2
             FROM (SELECT staged, stored FROM cleeng_matches
                   WHERE valid AND stored IS NOT NULL AND (NOT same OR NOT present)
                   ORDER BY stored) m,
                  cleeng_staging s
             WHERE s.ctid = m.staged AND t.ctid = m.stored",
        )
        .bind(stamp.run_id)
        .bind(stamp.now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let inserted = self
            .stamped(
                &insert(
                    "FROM cleeng_matches m JOIN cleeng_staging s ON s.ctid = m.staged
                     WHERE m.valid AND m.stored IS NULL",
                ),
                stamp,
            )
            .await?;
        let conn = self.conn.ready().await?;
        for sql in ["RESET enable_hashjoin", "RESET enable_mergejoin"] {
            sqlx::query(sql).execute(&mut *conn).await?;
        }
        changes::recorded_all(recorded, inserted + updated)?;
        Ok(Written { inserted, updated })
    }

    async fn session(&mut self) -> Result<&mut PgConnection> {
        self.conn.ready().await
    }

    async fn commit(mut self) -> Result<()> {
        let conn = self.conn.ready().await?;
        super::direct::rebuild_indexes(conn, self.direct.as_ref()).await?;
        conn.execute("COMMIT", &[]).await?;
        if let Session::Ready(conn) = self.conn {
            conn.close().await?;
        }
        Ok(())
    }

    async fn discard(self) {
        // Closing the session rolls back its transaction and drops the tables; a COPY
        // still streaming is aborted with its task.
        if let Session::Ready(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}
