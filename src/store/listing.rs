//! The listing of subscribers to act on: present ones by expiry date, then email, a
//! page at a time, read along the index `subscription_traits_by_expiry` (connector and
//! expiry date, present rows only; SQLite's entries end with the email, PostgreSQL sorts
//! a page's days by email). A page goes on from a key, the last row's
//! (expiry date, email), never from an offset: a run applied between two pages neither
//! repeats nor skips the subscribers it did not change.

use super::backend::{Backend, Param, Sql};
use super::reads::{StoredTraits, stored_traits};
use super::rows::Columns;
use crate::store::backend::Store;
use crate::store::error::Result;
use crate::store::error::StoreError;
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SubscriberPage {
    /// The subscribers, by expiry date, then email.
    pub subscribers: Vec<StoredTraits>,
    /// The token of the next page; `null` on the last.
    pub next: Option<String>,
}

impl<B: Backend> Store<B> {
    /// A page of the connector's present subscribers that the query selects.
    pub async fn subscribers(&self, query: &SubscriberQuery) -> Result<SubscriberPage> {
        let limit = query.limit.max(1);
        // One more than the page: whether there is a next one.
        let (sql, params) = listing::<B>(query, limit.saturating_add(1));
        let mut subscribers = self
            .read_all(&sql, &bind(&params), stored_traits::<B>)
            .await?;
        let more = subscribers.len() > limit as usize;
        subscribers.truncate(limit as usize);
        let next = match subscribers.last().filter(|_| more) {
            Some(last) => {
                let expiry_date = NaiveDate::parse_from_str(&last.expiry_date, "%Y-%m-%d")
                    .map_err(|_| {
                        StoreError::Bug(format!(
                            "a stored expiry date is not YYYY-MM-DD: {:?}",
                            last.expiry_date
                        ))
                    })?;
                let cursor = Cursor {
                    expiry_date,
                    email: last.email.clone(),
                };
                Some(cursor.encode())
            }
            None => None,
        };
        Ok(SubscriberPage { subscribers, next })
    }

    /// The database's plan for the listing's query (`EXPLAIN`), one line per step: for
    /// a test, or an operator, to see that a page comes from the index.
    pub async fn subscribers_plan(&self, query: &SubscriberQuery) -> Result<String> {
        let (sql, params) = listing::<B>(query, query.limit.max(1).saturating_add(1));
        let (explain, column) = B::SQL.explain;
        let lines = self
            .read_all(&format!("{explain}{sql}"), &bind(&params), |row| {
                Ok(row.text(column)?)
            })
            .await?;
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

/// A statement written a condition at a time, its values numbered as they come.
struct Statement {
    sql: &'static Sql,
    text: String,
    values: Vec<Value>,
}

impl Statement {
    /// The next value's placeholder.
    fn value(&mut self, value: Value) -> String {
        self.values.push(value);
        (self.sql.marker)(self.values.len())
    }

    /// The next value's placeholder, a date.
    fn date(&mut self, date: NaiveDate) -> String {
        self.values.push(Value::Text(date.to_string()));
        (self.sql.date_marker)(self.values.len())
    }

    fn and(&mut self, condition: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let _ = write!(self.text, " AND {condition}");
    }
}

/// The statement of a query, with only the filters it has: a condition such as
/// `? IS NULL OR expiry_date >= ?` would keep the database from reading the index.
fn listing<B: Backend>(query: &SubscriberQuery, fetch: u32) -> (String, Vec<Value>) {
    let mut s = Statement {
        sql: B::SQL,
        text: String::new(),
        values: Vec::new(),
    };
    let connector = s.value(Value::Text(query.connector.clone()));
    s.text = format!(
        "SELECT * FROM subscription_traits_with_plan WHERE connector = {connector} \
         AND removed_run IS NULL"
    );
    if let Some((from, to)) = query.expiring {
        let (from, to) = (s.date(from), s.date(to));
        s.and(format_args!(
            "expiry_date >= {from} AND expiry_date <= {to}"
        ));
    }
    for (column, wanted) in [
        ("status", &query.status),
        ("offer_plan", &query.plan),
        ("offer_country", &query.country),
    ] {
        if let Some(wanted) = wanted {
            let value = s.value(Value::Text(wanted.clone()));
            s.and(format_args!("{column} = {value}"));
        }
    }
    if let Some(after) = &query.after {
        // The range on the day alone as well: it is what the index is read by.
        let (day, again) = (s.date(after.expiry_date), s.date(after.expiry_date));
        let email = s.value(Value::Text(after.email.clone()));
        s.and(format_args!(
            "expiry_date >= {day} AND (expiry_date, email) > ({again}, {email})"
        ));
    }
    let limit = s.value(Value::Int(i64::from(fetch)));
    s.text
        .push_str(&format!(" ORDER BY expiry_date, email LIMIT {limit}"));
    (s.text, s.values)
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
