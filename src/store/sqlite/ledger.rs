//! SQLite's dialect of the ledger, claim and read statements (instants as RFC 3339
//! text, booleans as 0/1), and how values are bound and read on its connections.

use crate::run::Rejection;
use crate::store::backend::{Session, Sql, bound, sqlx_session};
use crate::store::rows::{Kept, timestamp};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row as _, Sqlite};

impl Session for SqliteConnection {
    type Row = SqliteRow;

    sqlx_session!(timestamp);

    async fn insert_rejections(
        &mut self,
        run_id: i64,
        rejections: &[Rejection],
    ) -> Result<(), sqlx::Error> {
        // SQLite binds at most 32766 values a statement: 6 a row, 1000 rows at a time.
        for chunk in rejections.chunks(1_000) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO sync_rejections (run_id, record, \"column\", reason, value, email) ",
            );
            insert.push_values(chunk, |mut b, r| {
                b.push_bind(run_id)
                    .push_bind(r.record as i64)
                    .push_bind(&r.column)
                    .push_bind(r.reason.as_str())
                    .push_bind(&r.value)
                    .push_bind(&r.email);
            });
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    fn instant(row: &SqliteRow, name: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(name)
    }

    fn date(row: &SqliteRow, name: &str) -> Result<String, sqlx::Error> {
        row.try_get(name)
    }

    fn json(row: &SqliteRow, name: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
        // JSON is kept as text.
        let text: Option<String> = row.try_get(name)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn side(row: &SqliteRow, name: &str) -> Result<Option<Kept>, sqlx::Error> {
        use serde_json::Value;
        let text = |v: Value| match v {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        };
        Ok(match Self::json(row, name)? {
            Some(Value::Array(values)) => Some(Kept::All(values.into_iter().map(text).collect())),
            Some(Value::Object(fields)) => Some(Kept::Changed(
                fields.into_iter().map(|(k, v)| (k, text(v))).collect(),
            )),
            _ => None,
        })
    }
}

/// The statements.
pub(super) const SQL: &Sql = &Sql {
    close_orphans: "UPDATE sync_runs SET outcome = 'failed', finished_at = ?2, message = ?3
         WHERE connector = ?1 AND outcome = 'running'",
    open_run: "INSERT INTO sync_runs (connector, \"trigger\", scheduled_for, started_at, outcome)
         VALUES (?1, ?2, ?3, ?4, 'running') RETURNING id",
    close_run: "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, object_key = ?4,
            object_etag = ?5, object_sha256 = ?6, rows_read = ?7, rows_valid = ?8,
            rows_rejected = ?9, inserted = ?10, updated = ?11, unchanged = ?12, removed = ?13,
            message = ?14, warnings = ?15, superseded = ?16
         WHERE id = ?1",
    abandon_run: "UPDATE sync_runs SET outcome = 'failed', finished_at = ?2, message = ?3
         WHERE id = ?1 AND outcome = 'running'",
    last_accepted: "SELECT object_key, object_etag, object_sha256 FROM sync_runs
         WHERE connector = ?1 AND outcome IN ('applied', 'unchanged')
           AND object_key IS NOT NULL AND object_etag IS NOT NULL AND object_sha256 IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    runs: "SELECT * FROM sync_runs WHERE ?1 IS NULL OR connector = ?1 ORDER BY id DESC LIMIT ?2",
    last_success: "SELECT * FROM sync_runs
         WHERE connector = ?1 AND outcome IN ('applied', 'unchanged', 'no_export', 'dry_run')
         ORDER BY id DESC LIMIT 1",
    last_applied: "SELECT * FROM sync_runs WHERE connector = ?1 AND outcome = 'applied'
         ORDER BY id DESC LIMIT 1",
    run: "SELECT * FROM sync_runs WHERE id = ?1",
    rejections: "SELECT record, \"column\", reason, value, email FROM sync_rejections
         WHERE run_id = ?1 ORDER BY record, rowid",
    traits: "SELECT * FROM subscription_traits_with_plan WHERE connector = ?1 AND email = ?2",
    present: "SELECT COUNT(*) AS n FROM subscription_traits
         WHERE connector = ?1 AND removed_run IS NULL",
    anything_stored: "SELECT EXISTS (SELECT 1 FROM subscription_traits WHERE connector = ?1) AS n",
    claim: "INSERT INTO schedule_claims (connector, scheduled_for, holder, claimed_at, lease_until)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (connector, scheduled_for) DO UPDATE SET
            holder = excluded.holder, claimed_at = excluded.claimed_at,
            lease_until = excluded.lease_until
         WHERE schedule_claims.done = 0 AND schedule_claims.lease_until < excluded.claimed_at
         RETURNING holder",
    claim_orphans: "UPDATE sync_runs SET outcome = 'failed', finished_at = ?3,
            message = 'the daemon running it stopped before it finished; nothing was applied'
         WHERE connector = ?1 AND outcome = 'running' AND scheduled_for IN (
            SELECT scheduled_for FROM schedule_claims
            WHERE connector = ?1 AND (scheduled_for = ?2 OR (done = 0 AND lease_until < ?3)))",
    renew_claim: "UPDATE schedule_claims SET lease_until = ?4
         WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3 AND done = 0",
    settle_claim: "UPDATE schedule_claims SET done = 1
         WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3",
    release_claim: "DELETE FROM schedule_claims
         WHERE connector = ?1 AND scheduled_for = ?2 AND holder = ?3 AND done = 0",
    offer_plans: "SELECT offer_id, plan, country FROM offer_plans WHERE connector = ?1
         ORDER BY offer_id",
    forget_offer_plans: "DELETE FROM offer_plans WHERE connector = ?1",
    keep_offer_plan: "INSERT INTO offer_plans (connector, offer_id, plan, country)
         VALUES (?1, ?2, ?3, ?4)",
    begin_action: "INSERT INTO cleeng_actions (connector, email, action, params, idempotency_key,
            request_hash, \"trigger\", status, owner, lease_until, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    action_by_key: "SELECT * FROM cleeng_actions WHERE idempotency_key = ?1",
    action: "SELECT * FROM cleeng_actions WHERE id = ?1",
    actions: "SELECT * FROM cleeng_actions
         WHERE (?1 IS NULL OR connector = ?1) AND (?2 IS NULL OR email = ?2)
         ORDER BY id DESC LIMIT ?3",
    finish_action: "UPDATE cleeng_actions SET status = ?3, http_status = ?4, code = ?5,
            message = ?6, subscription_id = ?7, attempts = ?8, finished_at = ?9
         WHERE id = ?1 AND owner = ?2 AND status IN ('pending', 'unknown')",
    pending_actions: "SELECT id, owner, lease_until FROM cleeng_actions WHERE status = 'pending'",
    abandon_action: "UPDATE cleeng_actions SET status = 'unknown', message = ?2, finished_at = ?3
         WHERE id = ?1 AND status = 'pending'",
    actions_since_export: "SELECT * FROM cleeng_actions
         WHERE connector = ?1 AND email = ?2 AND status = 'succeeded'
           AND confirmed_at IS NULL
           AND finished_at > COALESCE((SELECT MAX(started_at) FROM sync_runs
                WHERE connector = ?1 AND outcome = 'applied'), '')
         ORDER BY id",
    // offer_country by the rule of `export::country_of`, as migration 0010 fills it.
    write_live: "UPDATE subscription_traits SET offer_id = ?3, status = ?4, expiry_date = ?5,
            row_hash = ?6,
            offer_country = CASE WHEN ?3 GLOB '*_[A-Z][A-Z]' THEN substr(?3, -2) END,
            updated_at = CASE WHEN row_hash <> ?6 OR removed_run IS NOT NULL THEN ?7
                ELSE updated_at END,
            removed_run = NULL, live_at = ?7, live_source = ?8
         WHERE connector = ?1 AND email = ?2 AND row_hash = ?9
           AND COALESCE(removed_run, 0) = ?10",
    live_after: "SELECT email, row_hash, live_at FROM subscription_traits
         WHERE connector = ?1 AND live_at IS NOT NULL AND live_at > ?2 AND removed_run IS NULL
           AND (live_at, email) > (?3, ?4)
         ORDER BY live_at, email LIMIT ?5",
    clear_live: "UPDATE subscription_traits SET live_at = NULL, live_source = NULL
         WHERE connector = ?1 AND live_at IS NOT NULL AND removed_run IS NULL
           AND live_at <= ?2",
    confirm_action: "UPDATE cleeng_actions SET confirmed_at = ?2
         WHERE id = ?1 AND status = 'succeeded' AND confirmed_at IS NULL",
    marker: |n| format!("?{n}"),
    date_marker: |n| format!("?{n}"),
    explain: ("EXPLAIN QUERY PLAN ", "detail"),
};
