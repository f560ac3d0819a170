//! Reading the ledger and the traits back: the columns both stores keep with the same
//! types are read here once; each store passes in the few it types its own way
//! (instants, dates, JSON).

use super::StoredTraits;
use crate::run::{
    ChangeCounts, ObjectInfo, Outcome, Reason, Rejection, RowCounts, RunRecord, RunReport, Trigger,
};
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

/// A result row whose text and integer columns decode the same way in either store.
pub(super) trait Columns {
    /// A text column.
    fn text(&self, name: &str) -> Result<String, sqlx::Error>;
    /// A text column that may be NULL.
    fn maybe_text(&self, name: &str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column.
    fn int(&self, name: &str) -> Result<i64, sqlx::Error>;
    /// An integer column that may be NULL.
    fn maybe_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error>;
}

impl<R, DB> Columns for R
where
    R: Row<Database = DB>,
    DB: Database,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
{
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        self.try_get(name)
    }

    fn maybe_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(name)
    }

    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.try_get(name)
    }

    fn maybe_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(name)
    }
}

/// A run's instants, as the ledger shows them (RFC 3339, UTC).
pub(super) struct RunTimes {
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
}

/// A `sync_runs` row.
pub(super) fn run_record(row: &impl Columns, times: RunTimes) -> Result<RunRecord, sqlx::Error> {
    let count = |name: &str| -> Result<u64, sqlx::Error> { Ok(row.int(name)?.max(0) as u64) };
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
            },
            duration_ms: times.duration_ms,
            message: row.maybe_text("message")?,
        },
        trigger: Trigger::parse(&row.text("trigger")?),
        scheduled_for: row.maybe_text("scheduled_for")?,
        started_at: times.started_at,
        finished_at: times.finished_at,
    })
}

/// The columns of a `subscription_traits` row each store types its own way.
pub(super) struct TypedTraits {
    /// `YYYY-MM-DD`.
    pub expiry_date: String,
    pub external_properties: Option<serde_json::Value>,
    pub extra: Option<serde_json::Value>,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// A `subscription_traits` row.
pub(super) fn stored_traits(
    row: &impl Columns,
    typed: TypedTraits,
) -> Result<StoredTraits, sqlx::Error> {
    Ok(StoredTraits {
        connector: row.text("connector")?,
        email: row.text("email")?,
        offer_id: row.text("offer_id")?,
        expiry_date: typed.expiry_date,
        status: row.text("status")?,
        payment_method_id: row.int("payment_method_id")?,
        external_id: row.maybe_text("external_id")?,
        external_properties: typed.external_properties,
        season_index: row.maybe_int("season_index")?,
        coupon_code: row.maybe_text("coupon_code")?,
        campaign_name: row.maybe_text("campaign_name")?,
        coupon_uses: row.maybe_int("coupon_uses")?,
        extra: typed.extra,
        row_hash: row.text("row_hash")?,
        first_seen_run: row.int("first_seen_run")?,
        changed_run: row.int("changed_run")?,
        removed_run: row.maybe_int("removed_run")?,
        updated_at: typed.updated_at,
    })
}

/// `sync_rejections` rows as `(record, column, reason, value)`. A code this version
/// does not know (written by a newer one) is skipped.
pub(super) fn rejections(rows: Vec<(i64, String, String, Option<String>)>) -> Vec<Rejection> {
    rows.into_iter()
        .filter_map(|(record, column, reason, value)| {
            Some(Rejection {
                record: record as u64,
                column,
                reason: Reason::parse(&reason)?,
                value,
            })
        })
        .collect()
}
