//! PostgreSQL's dialect of the ledger, claim and read statements (`timestamptz`,
//! booleans), and how values are bound and read on its connections.

use crate::run::Rejection;
use crate::store::backend::{Session, Sql, bound, sqlx_session};
use crate::store::rows::{Kept, timestamp};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

/// The statements.
pub(super) const SQL: &Sql = &Sql {
    close_orphans: "UPDATE sync_runs SET outcome = 'failed', finished_at = $2, message = $3
         WHERE connector = $1 AND outcome = 'running'",
    open_run: "INSERT INTO sync_runs (connector, \"trigger\", scheduled_for, started_at, outcome)
         VALUES ($1, $2, $3, $4, 'running') RETURNING id",
    close_run: "UPDATE sync_runs SET finished_at = $2, outcome = $3, object_key = $4,
            object_etag = $5, object_sha256 = $6, rows_read = $7, rows_valid = $8,
            rows_rejected = $9, inserted = $10, updated = $11, unchanged = $12, removed = $13,
            message = $14, warnings = $15::jsonb, superseded = $16
         WHERE id = $1",
    abandon_run: "UPDATE sync_runs SET outcome = 'failed', finished_at = $2, message = $3
         WHERE id = $1 AND outcome = 'running'",
    last_accepted: "SELECT object_key, object_etag, object_sha256 FROM sync_runs
         WHERE connector = $1 AND outcome IN ('applied', 'unchanged')
           AND object_key IS NOT NULL AND object_etag IS NOT NULL AND object_sha256 IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    runs: "SELECT * FROM sync_runs WHERE $1::text IS NULL OR connector = $1 ORDER BY id DESC LIMIT $2",
    last_success: "SELECT * FROM sync_runs
         WHERE connector = $1 AND outcome IN ('applied', 'unchanged', 'no_export', 'dry_run')
         ORDER BY id DESC LIMIT 1",
    last_applied: "SELECT * FROM sync_runs WHERE connector = $1 AND outcome = 'applied'
         ORDER BY id DESC LIMIT 1",
    run: "SELECT * FROM sync_runs WHERE id = $1",
    rejections: "SELECT record, \"column\", reason, value, email FROM sync_rejections
         WHERE run_id = $1 ORDER BY record, ctid",
    traits: "SELECT * FROM subscription_traits_with_plan WHERE connector = $1 AND email = $2",
    present: "SELECT COUNT(*) AS n FROM subscription_traits
         WHERE connector = $1 AND removed_run IS NULL",
    anything_stored: "SELECT COUNT(*) AS n FROM (
            SELECT 1 FROM subscription_traits WHERE connector = $1 LIMIT 1) AS any_row",
    claim: "INSERT INTO schedule_claims (connector, scheduled_for, holder, claimed_at, lease_until)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (connector, scheduled_for) DO UPDATE SET
            holder = EXCLUDED.holder, claimed_at = EXCLUDED.claimed_at,
            lease_until = EXCLUDED.lease_until
         WHERE NOT schedule_claims.done AND schedule_claims.lease_until < EXCLUDED.claimed_at
         RETURNING holder",
    claim_orphans: "UPDATE sync_runs SET outcome = 'failed', finished_at = $3,
            message = 'the daemon running it stopped before it finished; nothing was applied'
         WHERE connector = $1 AND outcome = 'running' AND scheduled_for IN (
            SELECT scheduled_for FROM schedule_claims
            WHERE connector = $1 AND (scheduled_for = $2 OR (NOT done AND lease_until < $3)))",
    renew_claim: "UPDATE schedule_claims SET lease_until = $4
         WHERE connector = $1 AND scheduled_for = $2 AND holder = $3 AND NOT done",
    settle_claim: "UPDATE schedule_claims SET done = TRUE
         WHERE connector = $1 AND scheduled_for = $2 AND holder = $3",
    release_claim: "DELETE FROM schedule_claims
         WHERE connector = $1 AND scheduled_for = $2 AND holder = $3 AND NOT done",
    offer_plans: "SELECT offer_id, plan, country FROM offer_plans WHERE connector = $1
         ORDER BY offer_id COLLATE \"C\"",
    forget_offer_plans: "DELETE FROM offer_plans WHERE connector = $1",
    keep_offer_plan: "INSERT INTO offer_plans (connector, offer_id, plan, country)
         VALUES ($1, $2, $3, $4)",
    begin_action: "INSERT INTO cleeng_actions (connector, email, action, params, idempotency_key,
            request_hash, \"trigger\", status, owner, lease_until, requested_at)
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, 'pending', $8, $9, $10)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    action_by_key: "SELECT * FROM cleeng_actions WHERE idempotency_key = $1",
    action: "SELECT * FROM cleeng_actions WHERE id = $1",
    actions: "SELECT * FROM cleeng_actions
         WHERE ($1::text IS NULL OR connector = $1) AND ($2::text IS NULL OR email = $2)
         ORDER BY id DESC LIMIT $3",
    finish_action: "UPDATE cleeng_actions SET status = $3, http_status = $4, code = $5,
            message = $6, subscription_id = $7, attempts = $8, finished_at = $9
         WHERE id = $1 AND owner = $2 AND status IN ('pending', 'unknown')",
    pending_actions: "SELECT id, owner, lease_until FROM cleeng_actions WHERE status = 'pending'",
    abandon_action: "UPDATE cleeng_actions SET status = 'unknown', message = $2, finished_at = $3
         WHERE id = $1 AND status = 'pending'",
    actions_since_export: "SELECT * FROM cleeng_actions
         WHERE connector = $1 AND email = $2 AND status = 'succeeded'
           AND confirmed_at IS NULL
           AND finished_at > COALESCE((SELECT MAX(started_at) FROM sync_runs
                WHERE connector = $1 AND outcome = 'applied'), '-infinity'::timestamptz)
         ORDER BY id",
    // offer_country by the rule of `export::country_of`, as migration 0004 fills it.
    write_live: "UPDATE subscription_traits SET offer_id = $3, status = $4,
            expiry_date = $5::date, row_hash = $6,
            offer_country = substring($3 FROM '_([A-Z]{2})$'),
            updated_at = CASE WHEN row_hash <> $6 OR removed_run IS NOT NULL THEN $7
                ELSE updated_at END,
            removed_run = NULL, live_at = $7, live_source = $8
         WHERE connector = $1 AND email = $2 AND row_hash = $9
           AND COALESCE(removed_run, 0) = $10",
    live_after: "SELECT email, row_hash, live_at FROM subscription_traits
         WHERE connector = $1 AND live_at IS NOT NULL AND live_at > $2 AND removed_run IS NULL
           AND (live_at, email) > ($3::timestamptz, $4)
         ORDER BY live_at, email LIMIT $5",
    clear_live: "UPDATE subscription_traits SET live_at = NULL, live_source = NULL
         WHERE connector = $1 AND live_at IS NOT NULL AND removed_run IS NULL
           AND live_at <= $2",
    confirm_action: "UPDATE cleeng_actions SET confirmed_at = $2
         WHERE id = $1 AND status = 'succeeded' AND confirmed_at IS NULL",
    marker: |n| format!("${n}"),
    date_marker: |n| format!("${n}::date"),
    explain: ("EXPLAIN ", "QUERY PLAN"),
};

impl Session for PgConnection {
    type Row = PgRow;

    sqlx_session!(|t: DateTime<Utc>| t);

    async fn insert_rejections(
        &mut self,
        run_id: i64,
        rejections: &[Rejection],
    ) -> Result<(), sqlx::Error> {
        // One statement for all of them: arrays, unnested.
        sqlx::query(
            "INSERT INTO sync_rejections (run_id, record, \"column\", reason, value, email)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
        )
        .bind(run_id)
        .bind(column(rejections, |r| r.record as i64))
        .bind(column(rejections, |r| r.column.as_str()))
        .bind(column(rejections, |r| r.reason.as_str()))
        .bind(column(rejections, |r| r.value.as_deref()))
        .bind(column(rejections, |r| r.email.as_deref()))
        .execute(self)
        .await?;
        Ok(())
    }

    fn instant(row: &PgRow, name: &str) -> Result<Option<String>, sqlx::Error> {
        Ok(row
            .try_get::<Option<DateTime<Utc>>, _>(name)?
            .map(timestamp))
    }

    fn date(row: &PgRow, name: &str) -> Result<String, sqlx::Error> {
        Ok(row
            .try_get::<NaiveDate, _>(name)?
            .format("%Y-%m-%d")
            .to_string())
    }

    fn json(row: &PgRow, name: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
        row.try_get(name)
    }

    fn side(row: &PgRow, name: &str) -> Result<Option<Kept>, sqlx::Error> {
        Ok(row.try_get::<Option<_>, _>(name)?.map(Kept::All))
    }
}

/// One field of every rejection, as the array an `UNNEST` reads.
fn column<'r, T>(rejections: &'r [Rejection], field: impl Fn(&'r Rejection) -> T) -> Vec<T> {
    rejections.iter().map(field).collect()
}
