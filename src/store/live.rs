//! Live subscriber state: what a refresh from Cleeng's API writes into one subscriber's
//! traits, the few rows a newer refresh keeps from an older export, and the actions a
//! refresh confirmed.
//!
//! A refresh writes one statement, conditioned on the row it read (its hash and whether
//! it was removed): a run that applied meanwhile makes it read again rather than write
//! over what it did not see. One statement is one transaction: a process killed during a
//! refresh leaves the row as it was or as refreshed, never half of it.

use super::backend::Session;
use super::backend::{Backend, Param, Store};
use super::changes;
use super::error::Result;
use super::error::StoreError;
use super::reads::{Row as Conn, StoredTraits};
use super::rows::Columns;
use super::rows::timestamp;
use crate::change::{self, Before, Fields};
use crate::export::{Row, Traits};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// What a refresh writes into a stored subscriber (the other traits stay as the export
/// gave them).
#[derive(Debug, Clone, Copy)]
pub struct LiveWrite<'a> {
    /// The row as the refresh read it: written only if it is still so.
    pub read: &'a StoredTraits,
    /// Offer ID at Cleeng.
    pub offer_id: &'a str,
    /// `active` or `stopped`.
    pub status: &'a str,
    /// Expiry date, in the schedule's zone.
    pub expiry_date: NaiveDate,
    /// The row hash of the traits with these three, as an export row gets it.
    pub row_hash: &'a str,
    /// When Cleeng was read.
    pub live_at: DateTime<Utc>,
    /// What asked for it (`manual`, `api`, `webhook:<id>`, `action:<id>`).
    pub live_source: &'a str,
}

impl<B: Backend> Store<B> {
    /// Writes a refresh into the subscriber's row, present again if it was removed;
    /// `false` when the row is no longer the one read (read it again).
    pub async fn write_live(&self, write: &LiveWrite<'_>) -> Result<bool> {
        let read = write.read;
        let expiry = write.expiry_date.format("%Y-%m-%d").to_string();
        // The write and its change in the feed commit together.
        let mut tx = self.pool.begin().await?;
        let written = tx
            .execute(
                B::SQL.write_live,
                &[
                    Param::Text(Some(&read.connector)),
                    Param::Text(Some(&read.email)),
                    Param::Text(Some(write.offer_id)),
                    Param::Text(Some(write.status)),
                    Param::Text(Some(&expiry)),
                    Param::Text(Some(write.row_hash)),
                    Param::Instant(write.live_at),
                    Param::Text(Some(write.live_source)),
                    Param::Text(Some(&read.row_hash)),
                    Param::Int(Some(read.removed_run.unwrap_or(0))),
                ],
            )
            .await?;
        if written != 1 {
            return Ok(false);
        }
        let before = read.fields();
        let mut after = before.clone();
        after.0[0] = Value::from(write.offer_id);
        after.0[1] = Value::from(expiry.as_str());
        after.0[2] = Value::from(write.status);
        let was = match read.removed_run {
            Some(_) => Before::Removed(&before),
            None => Before::Present(&before),
        };
        if change::change(was, Some(&after), false).is_some() {
            let was = match read.removed_run {
                Some(_) => changes::WAS_REMOVED,
                None => changes::WAS_PRESENT,
            };
            let (old, new) = (
                Value::Array(before.0.to_vec()).to_string(),
                Value::Array(after.0.to_vec()).to_string(),
            );
            tx.execute(
                &changes::insert_one(B::DIALECT),
                &[
                    Param::Text(Some(&read.connector)),
                    Param::Text(Some(&read.email)),
                    Param::Instant(write.live_at),
                    Param::Int(None),
                    Param::Text(Some(write.live_source)),
                    Param::Int(Some(was)),
                    Param::Text(Some(&old)),
                    Param::Text(Some(&new)),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Gives `each` the connector's present subscribers a refresh read after `after`, as
    /// (email, row hash): an export written at `after` is older than what they hold.
    /// Read through the partial index on `live_at` (only the refreshed rows, never every
    /// subscriber), [`Tuning::live_page`](super::Tuning::live_page) at a time, so that the
    /// rows read never pile up.
    pub async fn live_hashes(
        &self,
        connector: &str,
        after: DateTime<Utc>,
        mut each: impl FnMut(String, String) -> Result<()>,
    ) -> Result<()> {
        let size = self.tuning.live_page.max(1);
        // The cursor's instant as the store gave it back, compared as the store keeps it
        // (SQLite's text, not a text formatted again).
        let mut cursor = (timestamp(after), String::new());
        loop {
            let params = live_page(connector, after, &cursor, size);
            let page = self
                .read_all(B::SQL.live_after, &params, |row| {
                    let at = <Conn<B>>::instant(row, "live_at")?.unwrap_or_default();
                    Ok((row.text("email")?, row.text("row_hash")?, at))
                })
                .await?;
            let full = page.len() == size as usize;
            let before = cursor.clone();
            for (email, hash, at) in page {
                cursor = (at, email.clone());
                each(email, hash)?;
            }
            if !full {
                return Ok(());
            }
            if cursor == before {
                return Err(StoreError::Bug(format!(
                    "the refreshed subscribers' pages do not advance past {cursor:?}"
                )));
            }
        }
    }

    /// The database's plan for [`Store::live_hashes`] (`EXPLAIN`), one line per step: for
    /// a test, or an operator, to see that the next export reads only refreshed rows.
    pub async fn live_after_plan(&self, connector: &str, after: DateTime<Utc>) -> Result<String> {
        let (explain, column) = B::SQL.explain;
        let lines = self
            .read_all(
                &format!("{explain}{}", B::SQL.live_after),
                &live_page(connector, after, &(timestamp(after), String::new()), 1),
                |row| Ok(row.text(column)?),
            )
            .await?;
        Ok(lines.join("\n"))
    }

    /// Sets when a refresh saw the action's effect; `false` if it was confirmed before.
    pub async fn confirm_action(&self, id: i64, at: DateTime<Utc>) -> Result<bool> {
        let changed = self
            .write(
                B::SQL.confirm_action,
                &[Param::Int(Some(id)), Param::Instant(at)],
            )
            .await?;
        Ok(changed == 1)
    }
}

/// The parameters of a page of [`Store::live_hashes`] after `cursor` (live_at, email).
fn live_page<'a>(
    connector: &'a str,
    after: DateTime<Utc>,
    cursor: &'a (String, String),
    size: u32,
) -> [Param<'a>; 5] {
    [
        Param::Text(Some(connector)),
        Param::Instant(after),
        Param::Text(Some(&cursor.0)),
        Param::Text(Some(&cursor.1)),
        Param::Int(Some(i64::from(size))),
    ]
}

impl StoredTraits {
    /// The template fields as a change shows them.
    pub fn fields(&self) -> Fields {
        let text = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
        Fields([
            Value::from(self.offer_id.as_str()),
            Value::from(self.expiry_date.as_str()),
            Value::from(self.status.as_str()),
            Value::from(self.payment_method_id),
            text(&self.external_id),
            self.external_properties.clone().unwrap_or(Value::Null),
            self.season_index.map_or(Value::Null, Value::from),
            text(&self.coupon_code),
            text(&self.campaign_name),
            self.coupon_uses.map_or(Value::Null, Value::from),
        ])
    }

    /// The subscriber as the row an export would have for them, at `record`, with an
    /// offer, status and expiry date of `live` instead of the stored ones when given.
    /// `None` when the stored status or date is not one an export row can have.
    pub fn as_row(&self, record: u64, live: Option<(&str, &str, NaiveDate)>) -> Option<Row> {
        let expiry = NaiveDate::parse_from_str(&self.expiry_date, "%Y-%m-%d").ok()?;
        let (offer_id, status, expiry_date) =
            live.unwrap_or((&self.offer_id, &self.status, expiry));
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(serde_json::Value::to_string);
        let (properties, extra) = (json(&self.external_properties), json(&self.extra));
        Row::of_traits(
            record,
            &Traits {
                email: &self.email,
                offer_id,
                expiry_date,
                status,
                payment_method_id: self.payment_method_id,
                external_id: self.external_id.as_deref(),
                external_properties: properties.as_deref(),
                season_index: self.season_index,
                coupon_code: self.coupon_code.as_deref(),
                campaign_name: self.campaign_name.as_deref(),
                coupon_uses: self.coupon_uses,
                extra: extra.as_deref(),
            },
        )
    }
}
