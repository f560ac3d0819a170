//! Reading the ledger and the traits back, for `runs`, `traits`, the admin API and
//! `check`.

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::run::{
    ChangeCounts, ObjectInfo, Outcome, Reason, Rejection, RowCounts, RunRecord, RunReport, Trigger,
    WarningCounts,
};
use crate::store::backend::Store;
use crate::store::error::Result;
use serde::Serialize;

/// One subscriber's stored traits.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredTraits {
    /// Connector id.
    pub connector: String,
    /// Email (lower case).
    pub email: String,
    /// Offer ID.
    pub offer_id: String,
    /// The offer's country, its ID's suffix (`PL` in `S123456789_PL`); `null` without one.
    pub offer_country: Option<String>,
    /// The plan whose offer map lists the offer; `null` when none does.
    pub offer_plan: Option<String>,
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
    /// When a refresh last read the subscriber from Cleeng (RFC 3339, UTC): the offer,
    /// status and expiry date are known as of then. `null` for a row as the export left it.
    pub live_at: Option<String>,
    /// What asked for that refresh: `manual`, `api`, `webhook:<event id>`,
    /// `action:<action id>`; `null` with `live_at`.
    pub live_source: Option<String>,
}

impl<B: Backend> Store<B> {
    /// Answers when the store can be reached (readiness).
    pub async fn ping(&self) -> Result<()> {
        self.write("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Recent runs, newest first.
    pub async fn runs(&self, connector: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        self.read_all(
            B::SQL.runs,
            &[Param::Text(connector), Param::Int(Some(i64::from(limit)))],
            run_record::<B>,
        )
        .await
    }

    /// The connector's last run that succeeded: applied, unchanged, no export or a dry
    /// run (what `cleeng_sync_last_success_timestamp_seconds` tells).
    pub async fn last_success(&self, connector: &str) -> Result<Option<RunRecord>> {
        self.read_one(
            B::SQL.last_success,
            &[Param::Text(Some(connector))],
            run_record::<B>,
        )
        .await
    }

    /// The connector's last run that applied an export.
    pub async fn last_applied(&self, connector: &str) -> Result<Option<RunRecord>> {
        self.read_one(
            B::SQL.last_applied,
            &[Param::Text(Some(connector))],
            run_record::<B>,
        )
        .await
    }

    /// One run.
    pub async fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        self.read_one(B::SQL.run, &[Param::Int(Some(run_id))], run_record::<B>)
            .await
    }

    /// The stored rejections of a run, by record. A code this version does not know
    /// (written by a newer one) is skipped.
    pub async fn rejections(&self, run_id: i64) -> Result<Vec<Rejection>> {
        let params = [Param::Int(Some(run_id))];
        let rejections = self.read_all(B::SQL.rejections, &params, |row| {
            let Some(reason) = Reason::parse(&row.text("reason")?) else {
                return Ok(None);
            };
            Ok(Some(Rejection {
                record: row.int("record")?.max(0) as u64,
                column: row.text("column")?,
                reason,
                value: row.maybe_text("value")?,
                email: row.maybe_text("email")?,
            }))
        });
        Ok(rejections.await?.into_iter().flatten().collect())
    }

    /// One subscriber's traits.
    pub async fn traits(&self, connector: &str, email: &str) -> Result<Option<StoredTraits>> {
        let email = email.trim().to_lowercase();
        self.read_one(
            B::SQL.traits,
            &[Param::Text(Some(connector)), Param::Text(Some(&email))],
            stored_traits::<B>,
        )
        .await
    }

    /// How many subscribers of the connector are present (not removed).
    pub async fn present(&self, connector: &str) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        count(&mut *conn, B::SQL.present, connector).await
    }
}

/// A count (`n`) of one connector's rows.
pub(super) async fn count<S: Session>(session: &mut S, sql: &str, connector: &str) -> Result<u64> {
    let row = session
        .fetch_optional(sql, &[Param::Text(Some(connector))])
        .await?;
    Ok(match row {
        Some(row) => row.int("n")?.max(0) as u64,
        None => 0,
    })
}

pub(super) type Row<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// A `sync_runs` row.
fn run_record<B: Backend>(row: &<Row<B> as Session>::Row) -> Result<RunRecord> {
    let count = |name: &str| -> Result<u64, sqlx::Error> { Ok(row.int(name)?.max(0) as u64) };
    let started_at = <Row<B>>::instant(row, "started_at")?.unwrap_or_default();
    let finished_at = <Row<B>>::instant(row, "finished_at")?;
    let duration_ms = finished_at
        .as_deref()
        .and_then(|f| {
            let start = chrono::DateTime::parse_from_rfc3339(&started_at).ok()?;
            let end = chrono::DateTime::parse_from_rfc3339(f).ok()?;
            u64::try_from((end - start).num_milliseconds()).ok()
        })
        .unwrap_or(0);
    let object = match row.maybe_text("object_key")? {
        Some(key) => Some(ObjectInfo {
            key,
            etag: row.maybe_text("object_etag")?.unwrap_or_default(),
            size: None,
            sha256: row.maybe_text("object_sha256")?,
        }),
        None => None,
    };
    Ok(RunRecord {
        report: RunReport {
            run_id: row.int("id")?,
            connector: row.text("connector")?,
            outcome: Outcome::parse(&row.text("outcome")?),
            object,
            rows: RowCounts {
                read: count("rows_read")?,
                valid: count("rows_valid")?,
                rejected: count("rows_rejected")?,
            },
            changes: ChangeCounts {
                inserted: count("inserted")?,
                updated: count("updated")?,
                unchanged: count("unchanged")?,
                removed: count("removed")?,
                superseded: count("superseded")?,
            },
            planned: None,
            warnings: <Row<B>>::json(row, "warnings")?
                .map(|json| WarningCounts::from_json(&json))
                .unwrap_or_default(),
            duration_ms,
            message: row.maybe_text("message")?,
        },
        trigger: Trigger::parse(&row.text("trigger")?),
        scheduled_for: row.maybe_text("scheduled_for")?,
        started_at,
        finished_at,
    })
}

/// A `subscription_traits` row.
pub(super) fn stored_traits<B: Backend>(row: &<Row<B> as Session>::Row) -> Result<StoredTraits> {
    Ok(StoredTraits {
        connector: row.text("connector")?,
        email: row.text("email")?,
        offer_id: row.text("offer_id")?,
        offer_country: row.maybe_text("offer_country")?,
        offer_plan: row.maybe_text("offer_plan")?,
        expiry_date: <Row<B>>::date(row, "expiry_date")?,
        status: row.text("status")?,
        payment_method_id: row.int("payment_method_id")?,
        external_id: row.maybe_text("external_id")?,
        external_properties: <Row<B>>::json(row, "external_properties")?,
        season_index: row.maybe_int("season_index")?,
        coupon_code: row.maybe_text("coupon_code")?,
        campaign_name: row.maybe_text("campaign_name")?,
        coupon_uses: row.maybe_int("coupon_uses")?,
        extra: <Row<B>>::json(row, "extra")?,
        row_hash: row.text("row_hash")?,
        first_seen_run: row.int("first_seen_run")?,
        changed_run: row.int("changed_run")?,
        removed_run: row.maybe_int("removed_run")?,
        updated_at: <Row<B>>::instant(row, "updated_at")?.unwrap_or_default(),
        live_at: <Row<B>>::instant(row, "live_at")?,
        live_source: row.maybe_text("live_source")?,
    })
}
