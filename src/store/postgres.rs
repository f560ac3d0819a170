//! The production store: PostgreSQL, shared by every replica. Rows stream into a
//! temporary table with COPY and are merged with set-based statements in the run's
//! transaction; an advisory lock per connector keeps one run of it at a time across
//! processes.

use super::known::{Gather, Known, Mark, Unmarked};
use super::repeats::{RepeatCheck, Repeats};
use super::rows::{self, RunTimes, TypedTraits};
use super::{
    AcceptedObject, Claim, ORPHAN_MESSAGE, Plan, REJECTION_CAP, RunLock, RunStart, SlotClaim,
    Staging, Store, StoreError, StoredTraits,
};
use crate::clock::Clock;
use crate::export::{Row, iso_date};
use crate::redact::redact_url;
use crate::run::{ChangeCounts, Mode, Rejection, RunRecord, RunReport};
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;
use sqlx::{Connection, Row as _};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// Bytes of CSV gathered before they are handed to the COPY task.
const COPY_CHUNK: usize = 256 * 1024;
/// Chunks waiting for the COPY task: bounded, so memory stays flat when the server is
/// slower than the parser.
const COPY_CHUNKS_AHEAD: usize = 4;

/// Hash prefixes or marked rows sent to the server per statement, when removals or
/// repeated emails need them.
const MARKS_CHUNK: usize = 50_000;

/// The columns COPY fills, in the order rows are encoded.
const STAGING_COLUMNS: &str = "record, email, valid, offer_id, expiry_date, status, \
    payment_method_id, external_id, external_properties, season_index, coupon_code, \
    campaign_name, coupon_uses, extra, row_hash, known";

/// The PostgreSQL trait store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

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

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names (`sslmode` and the other
    /// libpq parameters honoured) and runs the embedded migrations.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
            url: shown.clone(),
            source,
        })?;
        // One connection first, so that an unreachable server or a refused login is
        // reported as such at once, not as a pool timeout.
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        // The migrator takes an advisory lock: replicas starting together migrate once.
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(PostgresStore { pool })
    }
}

impl PostgresStore {
    /// The present subscribers' row hashes, as COPY text; `None` for a first load or
    /// past the limit. Streamed as rows through sqlx, a million took 0.95 s.
    async fn known_rows(&self, connector: &str) -> Result<Option<Known>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        // COPY takes no parameters: the connector reaches it as a session setting
        // rather than spliced into the statement.
        sqlx::query("SELECT set_config('cleeng_sync.connector', $1, false)")
            .bind(connector)
            .execute(&mut *conn)
            .await?;
        let mut gather = Gather::new();
        {
            let mut chunks = conn
                .copy_out_raw(
                    "COPY (SELECT row_hash FROM subscription_traits
                     WHERE connector = current_setting('cleeng_sync.connector')
                       AND removed_run IS NULL) TO STDOUT",
                )
                .await?;
            // A line may straddle two chunks: its start waits here.
            let mut partial = Vec::new();
            'read: while let Some(chunk) = chunks.try_next().await? {
                let mut rest: &[u8] = &chunk;
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    let line = if partial.is_empty() {
                        &rest[..end]
                    } else {
                        partial.extend_from_slice(&rest[..end]);
                        &partial[..]
                    };
                    let more = gather.add(line);
                    partial.clear();
                    rest = &rest[end + 1..];
                    if !more {
                        break 'read;
                    }
                }
                partial.extend_from_slice(rest);
            }
        }
        // A COPY left unread mid-way leaves the connection unusable: not back to the pool.
        if gather.over_limit() {
            conn.detach();
        }
        Ok(gather.finish())
    }
}

impl Store for PostgresStore {
    type Staging = PgStaging;
    type Lock = PgConnectorLock;

    async fn lock_connector(&self, connector: &str) -> Result<Option<PgConnectorLock>, StoreError> {
        let mut session = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('cleeng-sync'), hashtext($1))",
        )
        .bind(connector)
        .fetch_one(&mut session)
        .await?;
        Ok(locked.then_some(PgConnectorLock { session }))
    }

    async fn last_accepted(&self, connector: &str) -> Result<Option<AcceptedObject>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT object_key, object_etag, object_sha256 FROM sync_runs
             WHERE connector = $1 AND outcome IN ('applied', 'unchanged')
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
            "UPDATE sync_runs SET outcome = 'failed', finished_at = $2, message = $3
             WHERE connector = $1 AND outcome = 'running'",
        )
        .bind(&start.connector)
        .bind(start.started_at)
        .bind(ORPHAN_MESSAGE)
        .execute(&mut *tx)
        .await?;
        let id = sqlx::query_scalar(
            "INSERT INTO sync_runs (connector, \"trigger\", scheduled_for, started_at, outcome)
             VALUES ($1, $2, $3, $4, 'running') RETURNING id",
        )
        .bind(&start.connector)
        .bind(start.trigger.as_str())
        .bind(&start.scheduled_for)
        .bind(start.started_at)
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
            "UPDATE sync_runs SET outcome = 'failed', finished_at = $2, message = $3
             WHERE id = $1 AND outcome = 'running'",
        )
        .bind(run_id)
        .bind(now)
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
        // Two daemons inserting at once: the second waits for the first's row, then
        // finds it held and gets nothing back.
        let winner: Option<String> = sqlx::query_scalar(
            "INSERT INTO schedule_claims (connector, scheduled_for, holder, claimed_at, lease_until)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connector, scheduled_for) DO UPDATE SET
                holder = EXCLUDED.holder, claimed_at = EXCLUDED.claimed_at,
                lease_until = EXCLUDED.lease_until
             WHERE NOT schedule_claims.done AND schedule_claims.lease_until < EXCLUDED.claimed_at
             RETURNING holder",
        )
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(claim.holder)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.pool)
        .await?;
        if winner.as_deref() != Some(claim.holder) {
            return Ok(Claim::Taken);
        }
        // Runs left `running` by a daemon that died, for this time (taken over) or an
        // older one whose claim lapsed: they never committed.
        sqlx::query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = $3,
                message = 'the daemon running it stopped before it finished; nothing was applied'
             WHERE connector = $1 AND outcome = 'running' AND scheduled_for IN (
                SELECT scheduled_for FROM schedule_claims
                WHERE connector = $1 AND (scheduled_for = $2 OR (NOT done AND lease_until < $3)))",
        )
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(now)
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
            "UPDATE schedule_claims SET lease_until = $4
             WHERE connector = $1 AND scheduled_for = $2 AND holder = $3 AND NOT done",
            claim,
        )
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn settle_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        on_claim(
            "UPDATE schedule_claims SET done = TRUE
             WHERE connector = $1 AND scheduled_for = $2 AND holder = $3",
            claim,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_claim(&self, claim: SlotClaim<'_>) -> Result<(), StoreError> {
        on_claim(
            "DELETE FROM schedule_claims
             WHERE connector = $1 AND scheduled_for = $2 AND holder = $3 AND NOT done",
            claim,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn staging(&self, connector: &str) -> Result<PgStaging, StoreError> {
        // A connection of its own, closed (and its temporary table gone) when the
        // staging area is dropped.
        let mut conn = self.pool.acquire().await?.detach();
        // The joins and aggregates over a whole export run in memory, not in batches
        // spilled to disk; for this session only.
        sqlx::query("SET work_mem = '64MB'")
            .execute(&mut conn)
            .await?;
        // `known`: the row is stored, present, with these traits (only its email and
        // record are staged, for the repeated-email check; most such rows are only
        // marked in the held hashes, see `Known::mark`).
        sqlx::query(
            "CREATE TEMP TABLE cleeng_staging (
                record BIGINT NOT NULL, email TEXT NOT NULL, valid BOOLEAN NOT NULL,
                offer_id TEXT, expiry_date DATE, status TEXT, payment_method_id BIGINT,
                external_id TEXT, external_properties JSONB, season_index BIGINT,
                coupon_code TEXT, campaign_name TEXT, coupon_uses BIGINT, extra JSONB, row_hash TEXT,
                known BOOLEAN NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        let known = self.known_rows(connector).await?;
        // Nothing at all stored for the connector (not even removed subscribers): a
        // first load, whose every valid row is new.
        let first_load = known.is_none()
            && !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM subscription_traits WHERE connector = $1)",
            )
            .bind(connector)
            .fetch_one(&self.pool)
            .await?;
        Ok(PgStaging::new(conn, self.pool.clone(), known, first_load))
    }

    async fn present(&self, connector: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM subscription_traits WHERE connector = $1 AND removed_run IS NULL",
        )
        .bind(connector)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn runs(
        &self,
        connector: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM sync_runs WHERE $1::text IS NULL OR connector = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(connector)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_record).collect()
    }

    async fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sync_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_record).transpose()
    }

    async fn rejections(&self, run_id: i64) -> Result<Vec<Rejection>, StoreError> {
        let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT record, \"column\", reason, value FROM sync_rejections WHERE run_id = $1 ORDER BY record, ctid",
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
            sqlx::query("SELECT * FROM subscription_traits WHERE connector = $1 AND email = $2")
                .bind(connector)
                .bind(email.trim().to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| stored_traits(&r)).transpose()
    }
}

/// The staging area of one PostgreSQL run: a temporary table on a private connection,
/// filled by one COPY that a task of its own feeds, so that the server ingests one
/// chunk while the next is parsed.
pub struct PgStaging {
    /// Rows encoded as CSV, waiting to be handed to the COPY task.
    csv: Vec<u8>,
    /// The session: with the COPY task while rows stream, here once they are in.
    conn: Session,
    /// Whether `plan` began the run's transaction.
    in_transaction: bool,
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
    /// Whether the present subscribers' row hashes were held.
    held: bool,
    /// Whether `cleeng_unseen` holds the held hashes no row marked.
    unseen: bool,
    /// For reads beside the staging session (the marked rows' emails).
    pool: PgPool,
    /// Nothing was stored for the connector when the run began.
    first_load: bool,
}

/// Where the staging session is.
enum Session {
    /// Rows are streaming: chunks go to the task that owns the session and its COPY.
    Copying {
        chunks: mpsc::Sender<Vec<u8>>,
        task: AbortOnDropHandle<Result<PgConnection, StoreError>>,
    },
    /// The COPY is finished: statements run on the session.
    Ready(PgConnection),
    /// The COPY task failed (its error was returned once).
    Lost,
}

impl PgStaging {
    fn new(conn: PgConnection, pool: PgPool, known: Option<Known>, first_load: bool) -> PgStaging {
        let (chunks, mut incoming) = mpsc::channel::<Vec<u8>>(COPY_CHUNKS_AHEAD);
        let task = tokio::spawn(async move {
            let mut conn = conn;
            let mut copy = conn
                .copy_in_raw(&format!(
                    "COPY cleeng_staging ({STAGING_COLUMNS}) FROM STDIN WITH (FORMAT csv)"
                ))
                .await?;
            while let Some(chunk) = incoming.recv().await {
                if let Err(e) = copy.send(chunk).await {
                    // Ends the COPY before the session is dropped with it.
                    let _ = copy.abort("the staging stream failed").await;
                    return Err(e.into());
                }
            }
            copy.finish().await?;
            Ok(conn)
        });
        PgStaging {
            csv: Vec::with_capacity(COPY_CHUNK + 4096),
            conn: Session::Copying {
                chunks,
                task: AbortOnDropHandle::new(task),
            },
            in_transaction: false,
            repeats: Repeats::new(),
            valid_rows: 0,
            unchanged_rows: 0,
            unchanged_staged: 0,
            held: known.is_some(),
            known,
            unseen: false,
            pool,
            first_load,
        }
    }

    /// Hands the encoded rows to the COPY task once a chunk is full.
    async fn queued(&mut self) -> Result<(), StoreError> {
        if self.csv.len() >= COPY_CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), StoreError> {
        let chunk = std::mem::replace(&mut self.csv, Vec::with_capacity(COPY_CHUNK + 4096));
        let sent = match &self.conn {
            Session::Copying { chunks, .. } => chunks.send(chunk).await.is_ok(),
            Session::Ready(_) | Session::Lost => false,
        };
        if sent {
            return Ok(());
        }
        // The task stopped taking chunks: it failed; its error says why.
        self.conn.ready().await.map(|_| ())
    }
}

impl PgStaging {
    /// The condition that keeps a statement about present subscribers to those no row
    /// marked as stored unchanged (all of them when no hashes are held), as their hash
    /// prefixes in `cleeng_unseen`, loaded the first time. The marked ones are in the
    /// export but not staged: a removal must not take them for absent.
    async fn unmarked(&mut self) -> Result<&'static str, StoreError> {
        const UNSEEN: &str =
            "AND lower(left(t.row_hash, 24)) IN (SELECT prefix FROM cleeng_unseen)";
        let known = match Unmarked::of(self.unseen, self.held, self.known.as_ref())? {
            Unmarked::NotHeld => return Ok(""),
            Unmarked::Written => return Ok(UNSEEN),
            Unmarked::From(known) => known,
        };
        let conn = self.conn.ready().await?;
        sqlx::query("CREATE TEMP TABLE cleeng_unseen (prefix TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let mut prefixes = known.unmarked().peekable();
        while prefixes.peek().is_some() {
            let chunk: Vec<String> = prefixes.by_ref().take(MARKS_CHUNK).collect();
            sqlx::query("INSERT INTO cleeng_unseen SELECT UNNEST($1::text[])")
                .bind(&chunk)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("ANALYZE cleeng_unseen")
            .execute(&mut *conn)
            .await?;
        self.unseen = true;
        Ok(UNSEEN)
    }
}

/// Stages the rows stored unchanged (marked, not staged) of these emails, or of every
/// present subscriber with `None`; how many. The stored hashes are read beside the
/// staging session, a chunk of marked rows staged at a time, so memory stays flat.
async fn stage_marked(
    conn: &mut PgConnection,
    pool: &PgPool,
    known: &Known,
    connector: &str,
    emails: Option<&[String]>,
) -> Result<u64, StoreError> {
    let mut stored = sqlx::query_as::<_, (String, String)>(
        "SELECT email, row_hash FROM subscription_traits
         WHERE connector = $1 AND removed_run IS NULL AND ($2::text[] IS NULL OR email = ANY($2))",
    )
    .bind(connector)
    .bind(emails)
    .fetch(pool);
    let (mut records, mut found, mut staged) = (Vec::new(), Vec::new(), 0);
    loop {
        let next = stored.try_next().await?;
        if let Some((email, hash)) = &next
            && let Some(record) = known.marked(hash)
        {
            records.push(record as i64);
            found.push(email.clone());
        }
        if records.len() >= MARKS_CHUNK || (next.is_none() && !records.is_empty()) {
            sqlx::query(
                "INSERT INTO cleeng_staging (record, email, valid, known)
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

impl Session {
    /// The session, once every row is in the staging table.
    async fn ready(&mut self) -> Result<&mut PgConnection, StoreError> {
        // Left `Lost` if the COPY task failed: its error is returned once, here.
        *self = match std::mem::replace(self, Session::Lost) {
            Session::Copying { chunks, task } => {
                // No more chunks: the task finishes the COPY and gives the session back.
                drop(chunks);
                let finished = task.await.map_err(|e| {
                    StoreError::Staging(format!("the COPY into the staging table stopped: {e}"))
                })?;
                Session::Ready(finished?)
            }
            other => other,
        };
        match self {
            Session::Ready(conn) => Ok(conn),
            Session::Copying { .. } | Session::Lost => Err(StoreError::Staging(
                "the COPY into the staging table failed earlier in this run".into(),
            )),
        }
    }
}

impl Staging for PgStaging {
    async fn add_valid(&mut self, row: Row) -> Result<(), StoreError> {
        self.valid_rows += 1;
        self.repeats.note(row.email());
        let mark = match &mut self.known {
            Some(known) => known.mark(&row.row_hash, row.record),
            None => Mark::New,
        };
        if mark == Mark::First {
            // Stored as it is: the mark says so, nothing goes to the server.
            self.unchanged_rows += 1;
            return Ok(());
        }
        let out = &mut self.csv;
        out.extend_from_slice(itoa::Buffer::new().format(row.record).as_bytes());
        push_text(out, Some(row.email()));
        if mark == Mark::Again {
            self.unchanged_staged += 1;
            // valid, every trait NULL, known.
            out.extend_from_slice(b",t,,,,,,,,,,,,,t\n");
            return self.queued().await;
        }
        out.extend_from_slice(b",t");
        push_text(out, Some(row.offer_id()));
        out.push(b',');
        out.extend_from_slice(&iso_date(row.expiry_date));
        push_text(out, Some(row.status));
        push_number(out, row.payment_method_id);
        push_text(out, row.external_id());
        push_text(out, row.external_properties());
        push_optional_number(out, row.season_index);
        push_text(out, row.coupon_code());
        push_text(out, row.campaign_name());
        push_optional_number(out, row.coupon_uses);
        push_text(out, row.extra());
        push_text(out, Some(row.row_hash.hex().as_str()));
        out.extend_from_slice(b",f\n");
        self.queued().await
    }

    async fn add_rejected(&mut self, record: u64, email: String) -> Result<(), StoreError> {
        self.repeats.note(&email);
        let out = &mut self.csv;
        out.extend_from_slice(itoa::Buffer::new().format(record).as_bytes());
        push_text(out, Some(&email));
        // Not valid, every trait NULL, not known.
        out.extend_from_slice(b",f,,,,,,,,,,,,,f\n");
        self.queued().await
    }

    async fn plan(&mut self, connector: &str, mode: Mode) -> Result<Plan, StoreError> {
        if !self.csv.is_empty() {
            self.send().await?;
        }
        let conn = self.conn.ready().await?;
        let repeats = self.repeats.finish();
        // Rows stored unchanged were marked, not staged: those of an email that may
        // repeat are staged now, so that the check below sees every record of it.
        if let Some(known) = &self.known {
            let emails = match &repeats {
                RepeatCheck::None => None,
                RepeatCheck::Only(candidates) => Some(Some(candidates.as_slice())),
                RepeatCheck::All => Some(None),
            };
            if let Some(emails) = emails {
                let staged = stage_marked(conn, &self.pool, known, connector, emails).await?;
                self.unchanged_rows -= staged;
                self.unchanged_staged += staged;
            }
        }
        // Temporary tables are never analysed by autovacuum: without this the planner
        // guesses their size and may pick nested loops over a million rows. No index:
        // the comparison below is a hash join, and the statements after it read the
        // rows it found by row id. A first load joins nothing.
        if !self.first_load {
            sqlx::query("ANALYZE cleeng_staging (email, valid, known)")
                .execute(&mut *conn)
                .await?;
        }

        // Repeated emails, checked exactly among the candidates the filter noted.
        const REPEATED_AMONG: &str = "CREATE TEMP TABLE cleeng_repeated AS
             SELECT email FROM cleeng_staging WHERE email = ANY($1)
             GROUP BY email HAVING COUNT(*) > 1";
        let repeated = match &repeats {
            RepeatCheck::None => 0,
            RepeatCheck::Only(candidates) => sqlx::query(REPEATED_AMONG)
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
        let (mut duplicate_rows, mut duplicates) = (0, Vec::new());
        if repeated > 0 {
            const REPEATED: &str = "email IN (SELECT email FROM cleeng_repeated)";
            duplicates = sqlx::query_as(&format!(
                "SELECT record, email FROM cleeng_staging WHERE {REPEATED} ORDER BY record LIMIT {REJECTION_CAP}"
            ))
            .fetch_all(&mut *conn)
            .await?;
            duplicate_rows = sqlx::query(&format!(
                "UPDATE cleeng_staging SET valid = FALSE WHERE valid AND {REPEATED}"
            ))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            // One row per email from here on, so that the count below can join on
            // email; the row kept (invalid) still says its subscriber is not absent.
            sqlx::query(&format!(
                "DELETE FROM cleeng_staging s WHERE {REPEATED} AND EXISTS (
                    SELECT 1 FROM cleeng_staging k WHERE k.email = s.email AND k.record < s.record)"
            ))
            .execute(&mut *conn)
            .await?;
        }

        // The run's transaction starts here; the connector's advisory lock, held for
        // the whole run, keeps other writers of this connector out until it commits.
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        if self.first_load {
            // Every valid row is new, but those of a repeated email.
            let inserted = self.valid_rows.saturating_sub(duplicate_rows);
            self.in_transaction = true;
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
        // The rows not stored as they are (new, changed, rejected), compared with
        // what is stored, once: each with where it is (staging's and the trait's row
        // ids, stable until this transaction ends) and what the counts need. The
        // update of the changed rows goes straight to them by row id instead of
        // joining staging with the whole table again.
        sqlx::query(
            "CREATE TEMP TABLE cleeng_matches (
                staged TID NOT NULL, stored TID, valid BOOLEAN NOT NULL,
                same BOOLEAN, present BOOLEAN)",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO cleeng_matches
             SELECT s.ctid, t.ctid, s.valid, t.row_hash = s.row_hash,
                    t.email IS NOT NULL AND t.removed_run IS NULL
             FROM cleeng_staging s
             LEFT JOIN subscription_traits t ON t.connector = $1 AND t.email = s.email
             WHERE NOT s.known",
        )
        .bind(connector)
        .execute(&mut *conn)
        .await?;
        // `matched`: rows whose subscriber is present now.
        let (inserted, updated, unchanged_full, matched): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                    COUNT(*) FILTER (WHERE valid AND stored IS NULL),
                    COUNT(*) FILTER (WHERE valid AND stored IS NOT NULL
                        AND (NOT same OR NOT present)),
                    COUNT(*) FILTER (WHERE valid AND same AND present),
                    COUNT(*) FILTER (WHERE present)
                 FROM cleeng_matches",
        )
        .fetch_one(&mut *conn)
        .await?;
        // Rows stored unchanged: present by construction, counted while streaming.
        // Those staged (for the repeated-email check) are valid unless it found their
        // email repeated.
        let known: i64 = self.unchanged_rows as i64
            + if repeated == 0 {
                self.unchanged_staged as i64
            } else {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM cleeng_staging WHERE known AND valid",
                )
                .fetch_one(&mut *conn)
                .await?
            };
        let present = match &self.known {
            Some(set) => set.present() as i64,
            None => sqlx::query_scalar(
                "SELECT COUNT(*) FROM subscription_traits WHERE connector = $1 AND removed_run IS NULL",
            )
            .bind(connector)
            .fetch_one(&mut *conn)
            .await?,
        };
        // Every staged email is distinct unless some repeat: then the present
        // subscribers not staged are the present ones less those matched. With repeats
        // (rare), they are counted one by one.
        let removed: i64 = match mode {
            Mode::Delta => 0,
            Mode::Snapshot if repeated == 0 => present - matched - known,
            Mode::Snapshot => {
                let unmarked = self.unmarked().await?;
                let conn = self.conn.ready().await?;
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM subscription_traits t
                     WHERE t.connector = $1 AND t.removed_run IS NULL {unmarked}
                       AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)"
                ))
                .bind(connector)
                .fetch_one(&mut *conn)
                .await?
            }
        };
        let unchanged = unchanged_full + known;
        self.in_transaction = true;
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
                unchanged: unchanged as u64,
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
        let in_transaction = self.in_transaction;
        let conn = self.conn.ready().await?;
        if !in_transaction {
            sqlx::query("BEGIN").execute(&mut *conn).await?;
        }
        let changes = report.changes;
        let removing = mode == Mode::Snapshot && changes.removed > 0;
        let unmarked = if removing { self.unmarked().await? } else { "" };
        let conn = self.conn.ready().await?;
        let now = clock.now();
        // Removals first: they concern the subscribers present before this run only, and
        // the table's statistics still describe them. The index on staging keeps the
        // anti-join a probe per subscriber whatever the planner believes of the tables.
        // The plan counted each kind of change: a statement with nothing to do is skipped.
        if removing {
            sqlx::query("CREATE INDEX ON cleeng_staging (email)")
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!(
                "UPDATE subscription_traits t SET removed_run = $2, updated_at = $3
                 WHERE t.connector = $1 AND t.removed_run IS NULL {unmarked}
                   AND NOT EXISTS (SELECT 1 FROM cleeng_staging s WHERE s.email = t.email)"
            ))
            .bind(&report.connector)
            .bind(report.run_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        // Only what changed is written: unchanged subscribers are not even locked.
        // By the row ids the plan found: a row fetched per change. Given statistics,
        // the planner prefers hashing those ids against a scan of every trait, twice
        // the time; joins by hash or merge are off for this statement alone.
        if changes.updated > 0 {
            for sql in [
                "SET LOCAL enable_hashjoin = off",
                "SET LOCAL enable_mergejoin = off",
            ] {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            sqlx::query(
                "UPDATE subscription_traits t SET
                offer_id = s.offer_id, expiry_date = s.expiry_date, status = s.status,
                payment_method_id = s.payment_method_id, external_id = s.external_id,
                external_properties = s.external_properties, season_index = s.season_index,
                coupon_code = s.coupon_code, campaign_name = s.campaign_name,
                coupon_uses = s.coupon_uses, extra = s.extra, row_hash = s.row_hash,
                changed_run = $1, removed_run = NULL, updated_at = $2
             FROM cleeng_matches m, cleeng_staging s
             WHERE m.valid AND m.stored IS NOT NULL AND (NOT m.same OR NOT m.present)
               AND s.ctid = m.staged AND t.ctid = m.stored",
            )
            .bind(report.run_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            for sql in ["RESET enable_hashjoin", "RESET enable_mergejoin"] {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
        }
        // No ON CONFLICT: the connector's lock keeps other writers out, and a conflict
        // would mean a bug, to be rolled back, not merged. A first load has nothing
        // stored to leave out (and the planner, told nothing of staging, might probe the
        // growing table once a row).
        if changes.inserted > 0 {
            let stored = if self.first_load {
                ""
            } else {
                "AND NOT EXISTS (SELECT 1 FROM subscription_traits t
                                 WHERE t.connector = $1 AND t.email = s.email)"
            };
            sqlx::query(&format!(
            "INSERT INTO subscription_traits (connector, email, offer_id, expiry_date, status,
                payment_method_id, external_id, external_properties, season_index, coupon_code,
                campaign_name, coupon_uses, extra, row_hash, first_seen_run, changed_run, removed_run, updated_at)
             SELECT $1, email, offer_id, expiry_date, status, payment_method_id, external_id,
                external_properties, season_index, coupon_code, campaign_name, coupon_uses, extra,
                row_hash, $2, $2, NULL, $3
             FROM cleeng_staging s
             WHERE s.valid AND NOT s.known {stored}"
        ))
        .bind(&report.connector)
        .bind(report.run_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        }
        close_run(conn, report, rejections, clock.now()).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        if let Session::Ready(conn) = self.conn {
            conn.close().await?;
        }
        Ok(())
    }

    async fn discard(self) {
        // Closing the session rolls back its transaction and drops the table; a COPY
        // still streaming is aborted with its task.
        if let Session::Ready(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// A statement about one claim: `$1` connector, `$2` scheduled time, `$3` holder.
fn on_claim<'q>(sql: &'q str, claim: SlotClaim<'q>) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(claim.connector)
        .bind(claim.slot)
        .bind(claim.holder)
}

/// Appends `,` and an integer.
fn push_number(out: &mut Vec<u8>, n: i64) {
    out.push(b',');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `,` and an integer, or nothing (NULL).
fn push_optional_number(out: &mut Vec<u8>, n: Option<i64>) {
    out.push(b',');
    if let Some(n) = n {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// Appends `,` and a quoted CSV field, or nothing (NULL: COPY's CSV format reads an
/// unquoted empty field as NULL and a quoted one as the empty string).
fn push_text(out: &mut Vec<u8>, text: Option<&str>) {
    out.push(b',');
    let Some(text) = text else { return };
    out.push(b'"');
    for &b in text.as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Writes the end of a run into its ledger row, with its (capped) rejections.
async fn close_run(
    conn: &mut PgConnection,
    report: &RunReport,
    rejections: &[Rejection],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let object = report.object.as_ref();
    let closed = sqlx::query(
        "UPDATE sync_runs SET finished_at = $2, outcome = $3, object_key = $4, object_etag = $5,
            object_sha256 = $6, rows_read = $7, rows_valid = $8, rows_rejected = $9,
            inserted = $10, updated = $11, unchanged = $12, removed = $13, message = $14
         WHERE id = $1",
    )
    .bind(report.run_id)
    .bind(now)
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
    let kept = &rejections[..rejections.len().min(REJECTION_CAP)];
    if !kept.is_empty() {
        // One statement for all of them: arrays, unnested.
        sqlx::query(
            "INSERT INTO sync_rejections (run_id, record, \"column\", reason, value)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(report.run_id)
        .bind(kept.iter().map(|r| r.record as i64).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.column.clone()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.value.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn run_record(row: &PgRow) -> Result<RunRecord, StoreError> {
    let started_at: DateTime<Utc> = row.try_get("started_at")?;
    let finished_at: Option<DateTime<Utc>> = row.try_get("finished_at")?;
    let times = RunTimes {
        started_at: super::timestamp(started_at),
        finished_at: finished_at.map(super::timestamp),
        duration_ms: finished_at
            .and_then(|f| u64::try_from((f - started_at).num_milliseconds()).ok())
            .unwrap_or(0),
    };
    Ok(rows::run_record(row, times)?)
}

fn stored_traits(row: &PgRow) -> Result<StoredTraits, StoreError> {
    let typed = TypedTraits {
        expiry_date: row
            .try_get::<NaiveDate, _>("expiry_date")?
            .format("%Y-%m-%d")
            .to_string(),
        external_properties: row.try_get("external_properties")?,
        extra: row.try_get("extra")?,
        updated_at: super::timestamp(row.try_get("updated_at")?),
    };
    Ok(rows::stored_traits(row, typed)?)
}
