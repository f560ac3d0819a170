//! The change feed (`subscription_changes`): what an apply and a refresh record, and the
//! keyset pages a consumer reads.
//!
//! An apply records its changes set-based, in its transaction, before the statements that
//! make them: every statement reads a stored row (`t`) beside its staged one (`s`) and
//! writes one change row, its kinds and fields computed by SQL that says in each dialect
//! what [`crate::change::change`] says in Rust (the tests hold each store's rows to it).
//! Writers of one connector's changes are serialised by its run lock (a run holds it to
//! its commit; a refresh writes under it), so a change's id is never visible after a
//! higher one of its connector: a consumer that keeps the last id it read misses none.

use super::backend::{Backend, Dialect, Param, Session, Store};
use super::reads::Row as Conn;
use super::rows::Columns;
use crate::change::{ChangeKind, ChangePage, ChangeRecord, Cursor, FIELDS};
use crate::store::error::{Result, StoreError};

impl Dialect {
    /// `a` and `b` differ, NULLs compared as values.
    fn differs(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{a} IS NOT {b}"),
            Dialect::Postgres => format!("{a} IS DISTINCT FROM {b}"),
        }
    }

    /// A field of a row as the JSON value a change shows.
    fn value(self, alias: &str, field: &str) -> String {
        match (self, field) {
            (Dialect::Sqlite, "external_properties") => format!("json({alias}.{field})"),
            (Dialect::Postgres, "expiry_date") => {
                format!("to_char({alias}.{field}, 'YYYY-MM-DD')")
            }
            _ => format!("{alias}.{field}"),
        }
    }

    fn object(self) -> &'static str {
        match self {
            Dialect::Sqlite => "json_object",
            Dialect::Postgres => "jsonb_build_object",
        }
    }

    /// Every template field of a row, as an object.
    pub fn all(self, alias: &str) -> String {
        let pairs: Vec<String> = FIELDS
            .iter()
            .map(|f| format!("'{f}', {}", self.value(alias, f)))
            .collect();
        format!("{}({})", self.object(), pairs.join(", "))
    }

    /// The fields of `alias` that differ between `t` (before) and `s` (after).
    pub fn changed(self, alias: &str) -> String {
        let all = self.all(alias);
        match self {
            Dialect::Sqlite => {
                // json_remove of a key that is not there changes nothing.
                let paths: Vec<String> = FIELDS
                    .iter()
                    .map(|f| {
                        format!(
                            "CASE WHEN {} THEN '$.\"-\"' ELSE '$.{f}' END",
                            self.differs(&format!("t.{f}"), &format!("s.{f}"))
                        )
                    })
                    .collect();
                format!("json_remove({all}, {})", paths.join(", "))
            }
            Dialect::Postgres => {
                let same: Vec<String> = FIELDS
                    .iter()
                    .map(|f| {
                        format!(
                            "CASE WHEN {} THEN NULL ELSE '{f}' END",
                            self.differs(&format!("t.{f}"), &format!("s.{f}"))
                        )
                    })
                    .collect();
                format!(
                    "({all} - array_remove(ARRAY[{}]::text[], NULL))",
                    same.join(", ")
                )
            }
        }
    }

    /// The kinds of a change from a present `t` to `s`, as a JSON array.
    pub fn kinds(self) -> String {
        let d = |f: &str| self.differs(&format!("t.{f}"), &format!("s.{f}"));
        let coupon = "COALESCE(s.coupon_code, '') <> ''";
        let transition = "(t.status = 'active' AND s.status = 'stopped')
            OR (t.status = 'stopped' AND s.status = 'active')";
        let others: Vec<String> = [
            "payment_method_id",
            "external_id",
            "external_properties",
            "season_index",
            "campaign_name",
            "coupon_uses",
        ]
        .iter()
        .map(|f| d(f))
        .collect();
        let any_field: Vec<String> = FIELDS.iter().map(|f| d(f)).collect();
        let kinds = [
            (
                "stopped",
                "t.status = 'active' AND s.status = 'stopped'".to_string(),
            ),
            (
                "reactivated",
                "t.status = 'stopped' AND s.status = 'active'".to_string(),
            ),
            ("switched", d("offer_id")),
            (
                "renewed",
                "t.offer_id = s.offer_id AND s.expiry_date > t.expiry_date".to_string(),
            ),
            ("expiry_moved", "s.expiry_date < t.expiry_date".to_string()),
            (
                "coupon_applied",
                format!("{} AND {coupon}", d("coupon_code")),
            ),
            (
                "updated",
                format!(
                    "({status} AND NOT ({transition})) OR ({coupon_changed} AND NOT {coupon}) \
                     OR {others} OR NOT ({any})",
                    status = d("status"),
                    coupon_changed = d("coupon_code"),
                    others = others.join(" OR "),
                    any = any_field.join(" OR "),
                ),
            ),
        ];
        let pieces: Vec<String> = kinds
            .iter()
            .map(|(kind, when)| format!("CASE WHEN {when} THEN '\"{kind}\",' ELSE '' END"))
            .collect();
        let list = format!("'[' || rtrim({}, ',') || ']'", pieces.join(" || "));
        match self {
            Dialect::Sqlite => list,
            Dialect::Postgres => format!("({list})::jsonb"),
        }
    }

    /// A JSON array of one kind.
    pub fn one(self, kind: &str) -> String {
        match self {
            Dialect::Sqlite => format!("'[\"{kind}\"]'"),
            Dialect::Postgres => format!("'[\"{kind}\"]'::jsonb"),
        }
    }
}

/// The columns an apply's change rows are inserted into.
pub const CHANGE_COLUMNS: &str = "connector, email, at, run_id, source, kinds, before, after";

impl Dialect {
    /// Placeholder `n`.
    fn p(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// Records the changes of staged rows (`s`) against their stored ones (`t`, NULL for a
/// new subscriber) that `condition` selects `from`: the connector, the run and its instant
/// as parameters 1-3.
pub fn staged(d: Dialect, from: &str, condition: &str) -> String {
    let whole = "t.email IS NULL OR t.removed_run IS NOT NULL";
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, s.email, {p3}, {p2}, 'export',
            CASE WHEN t.email IS NULL THEN {new} WHEN t.removed_run IS NOT NULL THEN {returned}
                 ELSE {kinds} END,
            CASE WHEN {whole} THEN NULL ELSE {before} END,
            CASE WHEN {whole} THEN {all} ELSE {after} END
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        new = d.one("new"),
        returned = d.one("returned"),
        kinds = d.kinds(),
        before = d.changed("t"),
        after = d.changed("s"),
        all = d.all("s"),
    )
}

/// Records as `removed` the stored rows (`t`) that `condition` selects `from`.
pub fn removals(d: Dialect, from: &str, condition: &str) -> String {
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         SELECT {p1}, t.email, {p3}, {p2}, 'export', {removed}, {all}, NULL
         FROM {from} WHERE {condition}",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        removed = d.one("removed"),
        all = d.all("t"),
    )
}

/// One change, with parameters: `1` connector, `2` email, `3` at, `4` run id, `5` source,
/// `6` kinds, `7` before, `8` after (JSON as text).
pub fn insert_one(d: Dialect) -> String {
    let json = |n: u8| match d {
        Dialect::Sqlite => d.p(n),
        Dialect::Postgres => format!("{}::jsonb", d.p(n)),
    };
    format!(
        "INSERT INTO subscription_changes ({CHANGE_COLUMNS})
         VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
        d.p(1),
        d.p(2),
        d.p(3),
        d.p(4),
        d.p(5),
        json(6),
        json(7),
        json(8)
    )
}

/// A page of a connector's changes after a cursor, of any of `kinds` (all when none):
/// `1` connector, `2` the cursor's id, then one pattern per kind, then the page size.
pub fn page(d: Dialect, kinds: usize) -> String {
    let text = match d {
        Dialect::Sqlite => "kinds",
        Dialect::Postgres => "kinds::text",
    };
    let filter = if kinds == 0 {
        String::new()
    } else {
        let any: Vec<String> = (0..kinds)
            .map(|i| format!("{text} LIKE {}", d.p(3 + i as u8)))
            .collect();
        format!("AND ({})", any.join(" OR "))
    };
    format!(
        "SELECT * FROM subscription_changes WHERE connector = {} AND id > {} {filter}
         ORDER BY id LIMIT {}",
        d.p(1),
        d.p(2),
        d.p(3 + kinds as u8)
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

impl<B: Backend> Store<B> {
    /// A page of the connector's changes after `after`, oldest first, of any of `kinds`.
    pub async fn changes(
        &self,
        connector: &str,
        kinds: &[ChangeKind],
        after: Cursor,
        limit: u32,
    ) -> Result<ChangePage> {
        let patterns: Vec<String> = kinds
            .iter()
            .map(|k| format!("%\"{}\"%", k.as_str()))
            .collect();
        let mut params = vec![Param::Text(Some(connector)), Param::Int(Some(after.0))];
        params.extend(patterns.iter().map(|p| Param::Text(Some(p))));
        params.push(Param::Int(Some(i64::from(limit.clamp(1, MAX_PAGE)))));
        let changes = self
            .read_all(&page(B::DIALECT, kinds.len()), &params, change_record::<B>)
            .await?;
        let next = changes.last().map_or(after, |c| Cursor(c.id)).to_string();
        Ok(ChangePage { changes, next })
    }
}

fn change_record<B: Backend>(row: &<Conn<B> as Session>::Row) -> Result<ChangeRecord> {
    let kinds = match <Conn<B>>::json(row, "kinds")? {
        Some(serde_json::Value::Array(kinds)) => kinds
            .into_iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        other => return Err(StoreError::Bug(format!("a change's kinds are {other:?}"))),
    };
    Ok(ChangeRecord {
        id: row.int("id")?,
        connector: row.text("connector")?,
        email: row.text("email")?,
        at: <Conn<B>>::instant(row, "at")?.unwrap_or_default(),
        run_id: row.maybe_int("run_id")?,
        source: row.text("source")?,
        kinds,
        before: <Conn<B>>::json(row, "before")?.unwrap_or_default(),
        after: <Conn<B>>::json(row, "after")?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_names_every_field_once_in_an_object() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let all = dialect.all("t");
            for field in FIELDS {
                assert_eq!(all.matches(&format!("'{field}'")).count(), 1, "{all}");
            }
        }
        assert!(Dialect::Postgres.all("s").contains("to_char(s.expiry_date"));
        assert!(
            Dialect::Sqlite
                .all("s")
                .contains("json(s.external_properties)")
        );
    }
}
