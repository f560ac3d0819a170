//! The listing of subscribers to act on: present ones by expiry date, then email, a
//! page at a time, read along the index `subscription_traits_by_expiry` (connector and
//! expiry date, present rows only; SQLite's entries end with the email, PostgreSQL sorts
//! a page's days by email). A page goes on from a key, the last row's
//! (expiry date, email), never from an offset: a run applied between two pages neither
//! repeats nor skips the subscribers it did not change.

use super::backend::{Backend, Param, Session};
use super::reads::{StoredTraits, stored_traits};
use super::rows::Columns;
use super::{Store, StoreError};
use chrono::NaiveDate;

/// Which subscribers, and which page of them.
#[derive(Debug, Clone, Default)]
pub struct SubscriberQuery {
    /// The connector.
    pub connector: String,
    /// Expiry dates from the first to the second day, both included.
    pub expiring: Option<(NaiveDate, NaiveDate)>,
    /// `active` or `stopped`.
    pub status: Option<String>,
    /// The plan of the offer map.
    pub plan: Option<String>,
    /// The offer's country.
    pub country: Option<String>,
    /// Go on after this subscriber (the `next` of the page before).
    pub after: Option<Cursor>,
    /// The most subscribers on the page.
    pub limit: u32,
}

/// Where a page ends: the last subscriber's expiry date and email. Written as an opaque
/// token (hex), as `next` and `--after` / `after` carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    expiry_date: NaiveDate,
    email: String,
}

impl Cursor {
    /// The token.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}|{}", self.expiry_date, self.email))
    }

    /// Reads a token back; `None` when it is not one this listing gave.
    pub fn decode(token: &str) -> Option<Cursor> {
        let text = String::from_utf8(hex::decode(token.trim()).ok()?).ok()?;
        let (date, email) = text.split_once('|')?;
        Some(Cursor {
            expiry_date: NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?,
            email: email.to_string(),
        })
    }
}

/// One page of subscribers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubscriberPage {
    /// The subscribers, by expiry date, then email.
    pub subscribers: Vec<StoredTraits>,
    /// The token of the next page; `null` on the last.
    pub next: Option<String>,
}

impl<B: Backend> Store<B> {
    /// A page of the connector's present subscribers that the query selects.
    pub async fn subscribers(&self, query: &SubscriberQuery) -> Result<SubscriberPage, StoreError> {
        let limit = query.limit.max(1);
        let (sql, params) = listing::<B>(query, limit + 1);
        let mut conn = self.pool.acquire().await?;
        let rows = conn.fetch_all(&sql, &bind(&params)).await?;
        let mut subscribers = rows
            .iter()
            .map(stored_traits::<B>)
            .collect::<Result<Vec<_>, _>>()?;
        let more = subscribers.len() > limit as usize;
        subscribers.truncate(limit as usize);
        let next = more
            .then(|| subscribers.last())
            .flatten()
            .and_then(|last| {
                Some(Cursor {
                    expiry_date: NaiveDate::parse_from_str(&last.expiry_date, "%Y-%m-%d").ok()?,
                    email: last.email.clone(),
                })
            })
            .map(|c| c.encode());
        Ok(SubscriberPage { subscribers, next })
    }

    /// The database's plan for the listing's query (`EXPLAIN`), one line per step: for
    /// a test, or an operator, to see that a page comes from the index.
    pub async fn subscribers_plan(&self, query: &SubscriberQuery) -> Result<String, StoreError> {
        let (sql, params) = listing::<B>(query, query.limit.max(1) + 1);
        let (explain, column) = B::SQL.explain;
        let mut conn = self.pool.acquire().await?;
        let rows = conn
            .fetch_all(&format!("{explain}{sql}"), &bind(&params))
            .await?;
        let lines = rows
            .iter()
            .map(|row| row.text(column))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lines.join("\n"))
    }
}

/// A value of the listing's statement.
enum Value {
    Text(String),
    Int(i64),
}

fn bind(values: &[Value]) -> Vec<Param<'_>> {
    values
        .iter()
        .map(|v| match v {
            Value::Text(t) => Param::Text(Some(t)),
            Value::Int(n) => Param::Int(Some(*n)),
        })
        .collect()
}

/// The statement of a query, with only the filters it has: a condition such as
/// `? IS NULL OR expiry_date >= ?` would keep the database from reading the index.
fn listing<B: Backend>(query: &SubscriberQuery, fetch: u32) -> (String, Vec<Value>) {
    let sql = B::SQL;
    let mut values = vec![Value::Text(query.connector.clone())];
    let mut text = String::from("SELECT * FROM subscription_traits_with_plan WHERE connector = ");
    text.push_str(&(sql.marker)(1));
    text.push_str(" AND removed_run IS NULL");
    let mut push = |text: &mut String, condition: &str, value: Value, date: bool| {
        values.push(value);
        let n = values.len();
        let marker = if date {
            (sql.date_marker)(n)
        } else {
            (sql.marker)(n)
        };
        text.push_str(&condition.replace('?', &marker));
    };
    if let Some((from, to)) = query.expiring {
        push(
            &mut text,
            " AND expiry_date >= ?",
            Value::Text(from.to_string()),
            true,
        );
        push(
            &mut text,
            " AND expiry_date <= ?",
            Value::Text(to.to_string()),
            true,
        );
    }
    if let Some(status) = &query.status {
        push(
            &mut text,
            " AND status = ?",
            Value::Text(status.clone()),
            false,
        );
    }
    if let Some(plan) = &query.plan {
        push(
            &mut text,
            " AND offer_plan = ?",
            Value::Text(plan.clone()),
            false,
        );
    }
    if let Some(country) = &query.country {
        push(
            &mut text,
            " AND offer_country = ?",
            Value::Text(country.clone()),
            false,
        );
    }
    if let Some(after) = &query.after {
        // The range on the day alone as well: it is what the index is read by.
        let day = after.expiry_date.to_string();
        push(
            &mut text,
            " AND expiry_date >= ?",
            Value::Text(day.clone()),
            true,
        );
        push(
            &mut text,
            " AND (expiry_date, email) > (?",
            Value::Text(day),
            true,
        );
        push(&mut text, ", ?)", Value::Text(after.email.clone()), false);
    }
    text.push_str(" ORDER BY expiry_date, email LIMIT ");
    push(&mut text, "?", Value::Int(i64::from(fetch)), false);
    (text, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back() {
        let cursor = Cursor {
            expiry_date: NaiveDate::from_ymd_opt(2099, 1, 2).unwrap(),
            email: "a|b@example.com".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in [
            "",
            "zz",
            &hex::encode("2099-13-01|a@b.co"),
            &hex::encode("no bar"),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
