//! The change feed (`subscription_changes`): what an apply and a refresh record, and the
//! keyset pages a consumer reads.
//!
//! A change row keeps the subscriber's ten template fields before and after as raw values
//! (a text array on PostgreSQL, a JSON array on SQLite) and what the store held before
//! (nothing, a removed subscriber, a present one). An apply writes them set-based, in its
//! transaction, before the statements that make the changes: building arrays costs a
//! tenth of building JSON objects (measured on 100,000 rows), and no SQL says again what a
//! kind is. The kinds and the changed fields are computed when a page is read, by the one
//! definition, [`crate::change::change`].
//!
//! Writers of one connector's changes are serialised by its run lock (a run holds it to
//! its commit; a refresh writes under it), so a change's id is never visible after a
//! higher one of its connector: a consumer that keeps the last id it read misses none.

use super::backend::{Backend, Dialect, Param, Session, Store};
use super::reads::Row as Conn;
use super::rows::Columns;
use crate::change::{Before, ChangeKind, ChangePage, ChangeRecord, Cursor, FIELDS, Fields, change};
use crate::store::error::{Result, StoreError};

/// What the store held before a change, as `was` keeps it.
pub const WAS_ABSENT: i64 = 0;
/// A removed subscriber.
pub const WAS_REMOVED: i64 = 1;
/// A present subscriber.
pub const WAS_PRESENT: i64 = 2;

impl Dialect {
    /// Placeholder `n`.
    pub(in crate::store) fn p(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// The ten template fields of a row, as the feed keeps them.
    pub fn fields(self, alias: &str) -> String {
        match self {
            Dialect::Sqlite => {
                let values: Vec<String> = FIELDS.iter().map(|f| format!("{alias}.{f}")).collect();
                format!("json_array({})", values.join(", "))
            }
            Dialect::Postgres => {
                let values: Vec<String> = FIELDS
                    .iter()
                    .map(|f| match *f {
                        "offer_id" | "status" | "external_id" | "coupon_code" | "campaign_name" => {
                            format!("{alias}.{f}")
                        }
                        _ => format!("{alias}.{f}::text"),
                    })
                    .collect();
                format!("ARRAY[{}]", values.join(", "))
            }
        }
    }

    /// A side bound as a JSON array (a refresh's): as the feed keeps it.
    fn bound_fields(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => self.p(n),
            Dialect::Postgres => format!(
                "(SELECT array_agg(v ORDER BY i) FROM jsonb_array_elements_text({}::jsonb)
                    WITH ORDINALITY AS e(v, i))",
                self.p(n)
            ),
        }
    }
}

/// The columns an apply's change rows are inserted into.
pub const CHANGE_COLUMNS: &str = "connector, email, at, run_id, source, was, before, after";

/// Records the changes of staged rows (`s`) against their stored ones (`t`, NULL for a
/// new subscriber) that `condition` selects `from`: the connector, the run and its instant
/// as parameters 1-3.
pub fn staged(d: Dialect, from: &str, condition: &str) -> String {
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, s.email, {p3}, {p2}, 'export',
            CASE WHEN t.email IS NULL THEN {WAS_ABSENT} WHEN t.removed_run IS NOT NULL
                 THEN {WAS_REMOVED} ELSE {WAS_PRESENT} END,
            CASE WHEN t.email IS NULL THEN NULL ELSE {before} END, {after}
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        before = d.fields("t"),
        after = d.fields("s"),
    )
}

/// A compared stored row's fields (`t` beside staged `s`), when the row will be written:
/// kept with the comparison, where the stored row is read anyway.
pub fn before_if_changed(d: Dialect) -> String {
    format!(
        "CASE WHEN s.valid AND t.email IS NOT NULL
                AND (t.row_hash <> s.row_hash OR t.removed_run IS NOT NULL)
            THEN {} END",
        d.fields("t")
    )
}

/// Records the changes of staged rows (`s`) whose comparison (`m`: `stored`, `present`,
/// and `before` from [`before_if_changed`]) `condition` selects `from`.
pub fn matched(d: Dialect, from: &str, condition: &str) -> String {
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, s.email, {p3}, {p2}, 'export',
            CASE WHEN m.stored IS NULL THEN {WAS_ABSENT} WHEN NOT m.present THEN {WAS_REMOVED}
                 ELSE {WAS_PRESENT} END,
            m.before, {after}
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        after = d.fields("s"),
    )
}

/// Records as removed the stored rows (`t`) that `condition` selects `from`.
pub fn removals(d: Dialect, from: &str, condition: &str) -> String {
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, t.email, {p3}, {p2}, 'export', {WAS_PRESENT}, {before}, NULL
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        before = d.fields("t"),
    )
}

/// One change, with parameters: `1` connector, `2` email, `3` at, `4` run id, `5` source,
/// `6` was, `7` before, `8` after (JSON arrays as text, or NULL).
pub fn insert_one(d: Dialect) -> String {
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
        d.p(1),
        d.p(2),
        d.p(3),
        d.p(4),
        d.p(5),
        d.p(6),
        d.bound_fields(7),
        d.bound_fields(8)
    )
}

/// Rows of a connector's feed after an id, oldest first: `1` connector, `2` the id,
/// `3` how many.
fn rows_after(d: Dialect) -> String {
    format!(
        "SELECT * FROM subscription_changes WHERE connector = {} AND id > {}
         ORDER BY id LIMIT {}",
        d.p(1),
        d.p(2),
        d.p(3)
    )
}

/// Deletes the connector's changes before an instant among its oldest: `1` connector,
/// `2` the instant, `3` how many at most. Each found by the feed's key, (connector, id).
fn prune(d: Dialect) -> String {
    format!(
        "DELETE FROM subscription_changes
         WHERE connector = {p1}
           AND id IN (SELECT id FROM subscription_changes WHERE connector = {p1}
                      ORDER BY id LIMIT {p3})
           AND at < {p2}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
    )
}

/// Checks that the feed recorded one change per row written (when it records).
pub fn recorded_all(recorded: Option<u64>, written: u64) -> Result<()> {
    match recorded {
        Some(recorded) if recorded != written => Err(StoreError::Bug(format!(
            "the change feed recorded {recorded} changes for {written} rows written"
        ))),
        _ => Ok(()),
    }
}

/// The most changes one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Rows read at a time while a page with a kind filter fills.
const SCAN: u32 = 1000;

impl<B: Backend> Store<B> {
    /// Deletes, of the connector's `batch` oldest changes, those written before `before`;
    /// how many (fewer than `batch`: nothing older is left at the front of the feed).
    pub async fn prune_changes(
        &self,
        connector: &str,
        before: chrono::DateTime<chrono::Utc>,
        batch: u32,
    ) -> Result<u64> {
        let params = [
            Param::Text(Some(connector)),
            Param::Instant(before),
            Param::Int(Some(i64::from(batch))),
        ];
        self.write(&prune(B::DIALECT), &params).await
    }

    /// A page of the connector's changes after `after`, oldest first, of any of `kinds`
    /// (all when none).
    pub async fn changes(
        &self,
        connector: &str,
        kinds: &[ChangeKind],
        after: Cursor,
        limit: u32,
    ) -> Result<ChangePage> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let mut changes = Vec::new();
        let mut next = after;
        // With a filter, rows are read past the page's size until it is full; `next` is
        // the last row looked at, so that what the filter left out is not read again.
        loop {
            let batch = if kinds.is_empty() { limit as u32 } else { SCAN };
            let params = [
                Param::Text(Some(connector)),
                Param::Int(Some(next.0)),
                Param::Int(Some(i64::from(batch))),
            ];
            let rows = self
                .read_all(&rows_after(B::DIALECT), &params, change_record::<B>)
                .await?;
            let read = rows.len();
            for record in rows {
                next = Cursor(record.id);
                let wanted = kinds.is_empty()
                    || record
                        .kinds
                        .iter()
                        .any(|k| kinds.iter().any(|w| w.as_str() == k));
                if wanted {
                    changes.push(record);
                    if changes.len() == limit {
                        return Ok(ChangePage {
                            changes,
                            next: next.to_string(),
                        });
                    }
                }
            }
            if read < batch as usize {
                return Ok(ChangePage {
                    changes,
                    next: next.to_string(),
                });
            }
        }
    }
}

/// A side as the feed keeps it, in template order, as the JSON values a change shows.
fn side(texts: Option<Vec<Option<String>>>) -> Result<Option<Fields>> {
    let Some(texts) = texts else {
        return Ok(None);
    };
    if texts.len() != FIELDS.len() {
        return Err(StoreError::Bug(format!(
            "a change side of {} values, not {}",
            texts.len(),
            FIELDS.len()
        )));
    }
    let values: Vec<serde_json::Value> = FIELDS
        .iter()
        .zip(texts)
        .map(|(field, text)| {
            let Some(text) = text else {
                return Ok(serde_json::Value::Null);
            };
            Ok(match *field {
                "payment_method_id" | "season_index" | "coupon_uses" => text
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .map_err(|_| StoreError::Bug(format!("a change's {field} is {text:?}")))?,
                "external_properties" => serde_json::from_str(&text)
                    .map_err(|_| StoreError::Bug("a change's external properties".into()))?,
                _ => serde_json::Value::String(text),
            })
        })
        .collect::<Result<_>>()?;
    let values: [serde_json::Value; 10] = values
        .try_into()
        .map_err(|_| StoreError::Bug("a change side of another length".into()))?;
    Ok(Some(Fields(values)))
}

fn change_record<B: Backend>(row: &<Conn<B> as Session>::Row) -> Result<ChangeRecord> {
    let id = row.int("id")?;
    let (before, after) = (
        side(<Conn<B>>::texts(row, "before")?)?,
        side(<Conn<B>>::texts(row, "after")?)?,
    );
    let was = match (row.int("was")?, &before) {
        (WAS_REMOVED, Some(fields)) => Before::Removed(fields),
        (WAS_PRESENT, Some(fields)) => Before::Present(fields),
        _ => Before::Absent,
    };
    // A row is recorded only when the row hash changed: with every template field
    // alike, what changed is what the template does not know.
    let shown = change(was, after.as_ref(), true)
        .ok_or_else(|| StoreError::Bug(format!("change {id} records no change")))?;
    Ok(ChangeRecord {
        id,
        connector: row.text("connector")?,
        email: row.text("email")?,
        at: <Conn<B>>::instant(row, "at")?.unwrap_or_default(),
        run_id: row.maybe_int("run_id")?,
        source: row.text("source")?,
        kinds: shown.kinds.iter().map(|k| k.as_str().to_string()).collect(),
        before: shown.before,
        after: shown.after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_keeps_every_field_once_in_template_order() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let kept = dialect.fields("t");
            let mut at = 0;
            for field in FIELDS {
                let found = kept[at..].find(&format!("t.{field}")).expect(field);
                at += found + 1;
            }
        }
        assert!(
            Dialect::Postgres
                .fields("s")
                .contains("s.expiry_date::text")
        );
    }

    #[test]
    fn a_side_reads_back_as_the_values_a_change_shows() {
        let texts = vec![
            Some("S1_PL".to_string()),
            Some("2099-01-01".into()),
            Some("active".into()),
            Some("3".into()),
            None,
            Some("{\"tier\": \"gold\"}".into()),
            Some("2".into()),
            None,
            Some("Winter".into()),
            Some("0".into()),
        ];
        let fields = side(Some(texts)).expect("valid").expect("a side");
        assert_eq!(
            fields.all(),
            serde_json::json!({"offer_id": "S1_PL", "expiry_date": "2099-01-01",
                "status": "active", "payment_method_id": 3, "external_id": null,
                "external_properties": {"tier": "gold"}, "season_index": 2,
                "coupon_code": null, "campaign_name": "Winter", "coupon_uses": 0})
        );
        assert_eq!(side(None).expect("valid"), None);
        let letters = vec![Some("x".to_string()); 10];
        assert!(
            side(Some(letters)).is_err(),
            "a payment method that is no number"
        );
        for len in [5, 11] {
            assert!(
                side(Some(vec![None; len])).is_err(),
                "a side of {len} values"
            );
        }
    }
}
