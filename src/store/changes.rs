//! The change feed (`subscription_changes`): what an apply and a refresh record, and the
//! keyset pages a consumer reads.
//!
//! A change row keeps the subscriber's template fields before and after as raw values
//! and what the store held before (nothing, a removed subscriber, a present one). An
//! apply writes them set-based, in its transaction, before the statements that make the
//! changes, and no SQL says again what a kind is: the kinds and the fields shown are
//! computed when a page is read, by the one definition, [`crate::change::change`].
//! - PostgreSQL keeps all ten fields on each side, a text array: building arrays costs a
//!   tenth of building JSON objects (measured on 100,000 rows).
//! - SQLite keeps a present subscriber's change from a run as a JSON object of the fields
//!   that differ, on each side: 45% of the bytes of both sides in full on the harness's
//!   changed night, which SQLite writes twice (the run's WAL, then the file). A side in
//!   full is a JSON array: a new, returned or removed subscriber's, a refresh's, and
//!   every change written before.
//!
//! Writers of one connector's changes are serialised by its run lock (a run holds it to
//! its commit; a refresh writes under it), so a change's id is never visible after a
//! higher one of its connector: a consumer that keeps the last id it read misses none.

use super::backend::{Backend, Dialect, Param, Session, Store};
use super::reads::Row as Conn;
use super::rows::{Columns, Kept};
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

/// On SQLite, the fields of `of` that differ from those of `other`, as a JSON object's
/// text: concatenated, as `json_object` cannot leave a key out. Values are quoted as
/// `json_array` quotes them, so that either form reads back alike.
fn changed_fields(of: &str, other: &str) -> String {
    let pairs: Vec<String> = FIELDS
        .iter()
        .map(|f| {
            format!(
                "CASE WHEN {of}.{f} IS NOT {other}.{f} THEN ',\"{f}\":' || json_quote({of}.{f})
                 ELSE '' END"
            )
        })
        .collect();
    format!("'{{' || substr({}, 2) || '}}'", pairs.join(" || "))
}

/// Records the changes of staged rows (`s`) against their stored ones (`t`, NULL for a
/// new subscriber) that `condition` selects `from`: the connector, the run and its instant
/// as parameters 1-3.
pub fn staged(d: Dialect, from: &str, condition: &str) -> String {
    let (before, after) = match d {
        Dialect::Sqlite => (
            format!(
                "CASE WHEN t.email IS NULL THEN NULL WHEN t.removed_run IS NOT NULL THEN {}
                      ELSE {} END",
                d.fields("t"),
                changed_fields("t", "s")
            ),
            format!(
                "CASE WHEN t.email IS NULL OR t.removed_run IS NOT NULL THEN {} ELSE {} END",
                d.fields("s"),
                changed_fields("s", "t")
            ),
        ),
        Dialect::Postgres => (
            format!(
                "CASE WHEN t.email IS NULL THEN NULL ELSE {} END",
                d.fields("t")
            ),
            d.fields("s"),
        ),
    };
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, s.email, {p3}, {p2}, 'export',
            CASE WHEN t.email IS NULL THEN {WAS_ABSENT} WHEN t.removed_run IS NOT NULL
                 THEN {WAS_REMOVED} ELSE {WAS_PRESENT} END,
            {before}, {after}
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
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

/// A field's kept text as the JSON value a change shows.
fn value(field: &str, text: Option<String>) -> Result<serde_json::Value> {
    let Some(text) = text else {
        return Ok(serde_json::Value::Null);
    };
    Ok(match field {
        "payment_method_id" | "season_index" | "coupon_uses" => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .map_err(|_| StoreError::Bug(format!("a change's {field} is {text:?}")))?,
        "external_properties" => serde_json::from_str(&text)
            .map_err(|_| StoreError::Bug("a change's external properties".into()))?,
        _ => serde_json::Value::String(text),
    })
}

/// A side as the feed keeps it, as the JSON values a change shows, in template order (a
/// field left out of a side of the changed fields reads as null).
fn side(kept: Option<Kept>) -> Result<Option<Fields>> {
    let mut values: [serde_json::Value; 10] = Default::default();
    match kept {
        None => return Ok(None),
        Some(Kept::All(texts)) => {
            if texts.len() != FIELDS.len() {
                return Err(StoreError::Bug(format!(
                    "a change side of {} values, not {}",
                    texts.len(),
                    FIELDS.len()
                )));
            }
            for ((slot, field), text) in values.iter_mut().zip(FIELDS).zip(texts) {
                *slot = value(field, text)?;
            }
        }
        Some(Kept::Changed(pairs)) => {
            for (name, text) in pairs {
                let i = FIELDS
                    .iter()
                    .position(|f| *f == name)
                    .ok_or_else(|| StoreError::Bug(format!("a change's field {name:?}")))?;
                values[i] = value(FIELDS[i], text)?;
            }
        }
    }
    Ok(Some(Fields(values)))
}

fn change_record<B: Backend>(row: &<Conn<B> as Session>::Row) -> Result<ChangeRecord> {
    let id = row.int("id")?;
    let (before, after) = (
        <Conn<B>>::side(row, "before")?,
        <Conn<B>>::side(row, "after")?,
    );
    let was = row.int("was")?;
    // Sides of the changed fields only come in pairs, of a present subscriber: a field
    // left out on both reads as null on both, unchanged.
    let changed_only = |kept: &Option<Kept>| matches!(kept, Some(Kept::Changed(_)));
    match (changed_only(&before), changed_only(&after)) {
        (false, false) => {}
        (true, true) if was == WAS_PRESENT => {}
        _ => {
            return Err(StoreError::Bug(format!(
                "change {id} keeps only the changed fields, but not on both sides of a present subscriber"
            )));
        }
    }
    let (before, after) = (side(before)?, side(after)?);
    let was = match (was, &before) {
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
        let fields = side(Some(Kept::All(texts)))
            .expect("valid")
            .expect("a side");
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
            side(Some(Kept::All(letters))).is_err(),
            "a payment method that is no number"
        );
        for len in [5, 11] {
            assert!(
                side(Some(Kept::All(vec![None; len]))).is_err(),
                "a side of {len} values"
            );
        }
    }

    #[test]
    fn a_side_of_the_changed_fields_reads_the_others_as_null() {
        let kept = Kept::Changed(vec![
            ("status".into(), Some("stopped".into())),
            ("coupon_uses".into(), Some("2".into())),
            ("coupon_code".into(), None),
        ]);
        let fields = side(Some(kept)).expect("valid").expect("a side");
        let mut expected: [serde_json::Value; 10] = Default::default();
        expected[2] = "stopped".into();
        expected[9] = 2.into();
        assert_eq!(fields, Fields(expected));
        let unknown = Kept::Changed(vec![("plan".into(), Some("gold".into()))]);
        assert!(side(Some(unknown)).is_err(), "a field the template lacks");
    }

    /// SQLite's object of changed fields, evaluated by SQLite on a pair of rows.
    #[test]
    fn sqlite_keeps_exactly_the_fields_that_differ() {
        let db = rusqlite::Connection::open_in_memory().expect("in memory");
        let columns = FIELDS.join(", ");
        db.execute_batch(&format!(
            "CREATE TABLE t ({columns}); CREATE TABLE s ({columns});
             INSERT INTO t VALUES ('S1_PL', '2099-01-01', 'active', 3, NULL,
                 '{{\"tier\": \"gold\"}}', 2, 'CODE1', 'Winter', 0);
             INSERT INTO s VALUES ('S1_PL', '2099-02-01', 'active', 4, 'ext-1',
                 '{{\"tier\": \"gold\"}}', 2, NULL, 'Winter', 0);"
        ))
        .expect("tables");
        let read = |of: &str, other: &str| -> serde_json::Value {
            let sql = format!("SELECT {} FROM t, s", changed_fields(of, other));
            let text: String = db.query_row(&sql, [], |r| r.get(0)).expect("a row");
            serde_json::from_str(&text).expect("a JSON object")
        };
        assert_eq!(
            read("t", "s"),
            serde_json::json!({"expiry_date": "2099-01-01", "payment_method_id": 3,
                "external_id": null, "coupon_code": "CODE1"})
        );
        assert_eq!(
            read("s", "t"),
            serde_json::json!({"expiry_date": "2099-02-01", "payment_method_id": 4,
                "external_id": "ext-1", "coupon_code": null})
        );
        assert_eq!(read("t", "t"), serde_json::json!({}));
    }
}
