//! A first load on SQLite: the valid rows inserted straight into the traits, in the
//! run's transaction (begun before the first row), by a thread of their own.
//!
//! Staged, a first load wrote every row twice: into a temporary table on the thread
//! that takes the parsed rows, then into the traits with one `INSERT ... SELECT` after
//! the read. The first write kept that thread busy (it bounded the read), the second
//! ran alone on one core, and the temporary table spilled a second copy of the export
//! to disk. Written once, on a thread that does nothing else, the insert overlaps the
//! parse: a 5M first load took 15.4-15.6 s against 20.9-21.9 s, three in turns.
//! Inserting on the same thread as the rows are taken gained nothing (third session of
//! issue 32): the bound is the thread, not the statement.
//!
//! The writer borrows the tables' connection for the read: nothing else runs on it
//! until the rows are in ([`Writer::finish`]). What the repeated-email check needs is
//! kept as on PostgreSQL ([`crate::store::staging::direct`]): a row whose email may
//! repeat is put aside and staged; the check takes back the row written of each
//! repeated email. The insert is `OR FAIL`: a second row of one email would be a bug,
//! and fails the run rather than losing a row.
//!
//! Into a traits table with no row at all, the expiry index is dropped in the
//! transaction before the first row and built from its definition after the last
//! (`staging.rs`), as a staged first load did.

use super::staged::{bind_row, on_handle};
use crate::export::Row;
use crate::store::backend::Stamp;
use crate::store::error::{Result, StoreError};
use crate::store::rows::timestamp;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches queued ahead of the writer: enough to ride out a slow page write, little
/// memory (a batch is some 1,000 rows).
const QUEUED: usize = 4;

/// A first load's state on the tables.
pub(super) struct Direct {
    /// The run whose first load this is.
    pub stamp: Stamp,
    /// Rows the writer inserted, once it ended.
    pub written: u64,
    /// Of those, the rows of repeated emails deleted again.
    pub undone: u64,
    /// The expiry index's definition, when the load dropped it (the table was empty):
    /// built again after the rows.
    pub rebuild: Option<String>,
}

/// The thread inserting a first load's rows, with the connection it borrowed.
pub(super) struct Writer {
    rows: mpsc::Sender<Vec<Row>>,
    done: JoinHandle<(SqliteConnection, Result<u64>)>,
}

impl Writer {
    /// Starts inserting the rows it is sent into `connector`'s traits, stamped with
    /// `stamp`, on `conn` (in the run's transaction).
    pub fn start(conn: SqliteConnection, connector: String, stamp: Stamp) -> Writer {
        let (rows, mut queue) = mpsc::channel::<Vec<Row>>(QUEUED);
        let runtime = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let written = runtime
                .block_on(conn.lock_handle())
                .map_err(StoreError::from)
                .and_then(|mut handle| {
                    on_handle(&mut handle, |db| {
                        insert_all(db, &mut queue, &connector, stamp)
                    })
                });
            (conn, written)
        });
        Writer { rows, done }
    }

    /// Hands the writer a batch; false when it has stopped (its error comes with
    /// [`Writer::finish`]).
    pub async fn send(&self, rows: Vec<Row>) -> bool {
        self.rows.send(rows).await.is_ok()
    }

    /// Waits for the rows sent to be in: the connection back (none if the writer
    /// died), and how many rows it inserted.
    pub async fn finish(self) -> (Option<SqliteConnection>, Result<u64>) {
        drop(self.rows);
        match self.done.await {
            Ok((conn, written)) => (Some(conn), written),
            Err(e) => (
                None,
                Err(StoreError::Bug(format!(
                    "the thread inserting a first load's rows ended abnormally: {e}"
                ))),
            ),
        }
    }
}

/// Inserts every batch the queue holds until its sender is dropped.
fn insert_all(
    db: &rusqlite::Connection,
    queue: &mut mpsc::Receiver<Vec<Row>>,
    connector: &str,
    stamp: Stamp,
) -> Result<u64, rusqlite::Error> {
    let mut insert = db.prepare(
        "INSERT OR FAIL INTO subscription_traits (connector, email, offer_id, expiry_date,
            status, payment_method_id, external_id, external_properties, season_index,
            coupon_code, campaign_name, coupon_uses, extra, row_hash, offer_country,
            first_seen_run, changed_run, removed_run, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16,
            NULL, ?17)",
    )?;
    // The same for every row: a statement keeps its bindings from one row to the next.
    insert.raw_bind_parameter(1, connector)?;
    insert.raw_bind_parameter(16, stamp.run_id)?;
    insert.raw_bind_parameter(17, timestamp(stamp.now))?;
    let mut written = 0;
    while let Some(rows) = queue.blocking_recv() {
        for row in &rows {
            bind_row(&mut insert, 2, row)?;
            written += insert.raw_execute()? as u64;
        }
    }
    Ok(written)
}

/// The tables' connection: here, or lent to a first load's writer for the read.
pub(super) enum Link {
    Here(SqliteConnection),
    Lent(Writer),
    /// The writer died with it (a bug): SQLite rolled the transaction back as the
    /// connection closed.
    Lost,
}

impl Link {
    /// The connection, here once the rows a first load writes are in.
    pub fn get(&mut self) -> Result<&mut SqliteConnection> {
        match self {
            Link::Here(conn) => Ok(conn),
            Link::Lent(_) => Err(StoreError::Bug(
                "a statement on the run's tables while a first load's writer held their \
                 connection"
                    .into(),
            )),
            Link::Lost => Err(StoreError::Bug(
                "the run's tables lost their connection with a first load's writer".into(),
            )),
        }
    }
}

/// The index a first load into an empty table builds after its rows, not as they come.
const EXPIRY_INDEX: &str = "subscription_traits_by_expiry";

/// Drops the expiry index, in the run's transaction, if the traits hold no row at all
/// (of any connector); its definition, to build it again after the rows. The run holds
/// the write lock: no other writer adds a row in between, and a failed or killed run
/// rolls the drop back.
pub(super) async fn drop_expiry_index(conn: &mut SqliteConnection) -> Result<Option<String>> {
    let definition: Option<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1
           AND NOT EXISTS (SELECT 1 FROM subscription_traits)",
    )
    .bind(EXPIRY_INDEX)
    .fetch_optional(&mut *conn)
    .await?;
    if definition.is_some() {
        sqlx::query(&format!("DROP INDEX {EXPIRY_INDEX}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(definition)
}
