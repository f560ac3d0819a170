//! A result row's text and integer columns, read the same way in either store; the
//! few columns each types its own way (instants, dates, JSON) are the backend's
//! [`super::backend::Session`]'s to read.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

/// A result row whose text and integer columns decode the same way in either store.
pub trait Columns {
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

/// The ledger's text form of an instant.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A change's side as the feed keeps it: values as text (numbers and objects as their
/// JSON text, `None` for an empty field).
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    /// All ten template fields, in template order.
    All(Vec<Option<String>>),
    /// Only the fields that differ from the other side, by name (SQLite's run writes a
    /// present subscriber's change so: a field left out did not change).
    Changed(Vec<(String, Option<String>)>),
}
