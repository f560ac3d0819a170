//! The rows a SQLite run stages, written through SQLite's own API on the run's
//! connection ([`super::staging`]), each noted by its id and email for the
//! repeated-email check ([`StagedEmails`]).

use crate::export::{Row, country_of, iso_date};
use crate::store::error::Result;
use crate::store::staging::emails::StagedEmails;
use crate::store::staging::held::HeldHashes;
use rusqlite::ToSql;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};

/// The bit of a noted id that says the row is in `cleeng_seen`, not `cleeng_staging`
/// (SQLite's row ids are positive 63-bit integers).
pub(super) const SEEN: u64 = 1 << 63;

/// The rows staged in full, copied in the traits' key order ([`order_by_email`]).
pub(super) const ORDERED: &str = "cleeng_ordered";

/// Copies the rows staged in full into [`ORDERED`], sorted by email, for the comparison
/// and the writes to read in the traits' key order.
///
/// Held hashes leave only the new and changed rows staged, in the export's order or, in
/// passes, pass after pass: in no order the traits know. Each statement then probes the
/// traits at random, and the update dirties a page of its own for nearly every row,
/// evicted from the 6 MiB page cache and written to the WAL again and again; in email
/// order each page is read and written once. Measured (bench data, folder source, in
/// turns): a 10M night's UPDATE of its million changed rows took 11.8-14.5 s against
/// 17.3-20.7 s and the whole night 42.3 s against 49.8-50.5 s; 5M, 15.9-16.8 s against
/// 17.8-23.5 s; 1M with the export shuffled, its apply 2.1-2.4 s against 2.9-3.6 s.
pub(super) fn order_by_email(db: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    db.execute_batch(&format!(
        "CREATE TEMP TABLE {ORDERED} AS SELECT * FROM cleeng_staging ORDER BY email"
    ))
}

/// Stages in `cleeng_seen` the marked rows of the emails of a JSON array, or of every
/// present subscriber with `None`; how many. The stored rows are read as they are
/// written: memory stays flat.
pub(super) fn stage_marked(
    db: &rusqlite::Connection,
    held: &HeldHashes,
    connector: &str,
    emails: Option<&str>,
    noted: &mut StagedEmails,
) -> Result<u64, rusqlite::Error> {
    if emails.is_none() {
        // Every present subscriber: the check reads every staged row anyway.
        noted.forget();
    }
    let among = match emails {
        Some(_) => "AND email IN (SELECT value FROM json_each(?2))",
        None => "",
    };
    let mut stored = db.prepare(&format!(
        "SELECT email, row_hash FROM subscription_traits
         WHERE connector = ?1 AND removed_run IS NULL {among}"
    ))?;
    let mut note =
        db.prepare("INSERT INTO cleeng_seen (record, email, valid, marked) VALUES (?1, ?2, 1, 1)")?;
    let mut rows = match emails {
        Some(emails) => stored.query(rusqlite::params![connector, emails])?,
        None => stored.query(rusqlite::params![connector])?,
    };
    let mut staged = 0;
    while let Some(row) = rows.next()? {
        let hash = row.get_ref(1)?;
        if let Some(record) = hash.as_str().ok().and_then(|hash| held.marked(hash)) {
            let email = row.get_ref(0)?.as_str()?;
            note.execute(rusqlite::params![record as i64, email])?;
            noted.note(email, SEEN | db.last_insert_rowid() as u64);
            staged += 1;
        }
    }
    Ok(staged)
}

/// Inserts a batch of rows, one prepared statement stepped per row. Through sqlx a
/// batch was a multi-row INSERT: every bound value copied (an allocation each) and a
/// statement journal kept, 7-8 us a row here, more than parsing it. SQLite's own API
/// (rusqlite, on the connection sqlx opened) does neither.
pub(super) fn write_batch(
    db: &rusqlite::Connection,
    full: &[Row],
    seen: &[(u64, String, bool)],
    noted: &mut StagedEmails,
) -> Result<(), rusqlite::Error> {
    let mut note = db.prepare(
        "INSERT INTO cleeng_seen (record, email, valid, marked) VALUES (?1, ?2, ?3, ?3)",
    )?;
    for (record, email, marked) in seen {
        note.execute(rusqlite::params![*record as i64, email, marked])?;
        noted.note(email, SEEN | db.last_insert_rowid() as u64);
    }
    let mut insert = db.prepare(
        "INSERT INTO cleeng_staging (record, email, valid, offer_id, expiry_date, status,
            payment_method_id, external_id, external_properties, season_index, coupon_code,
            campaign_name, coupon_uses, extra, row_hash, offer_country)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    for row in full {
        insert.raw_bind_parameter(1, row.record as i64)?;
        bind_row(&mut insert, 2, row)?;
        insert.raw_execute()?;
        noted.note(row.email(), db.last_insert_rowid() as u64);
    }
    Ok(())
}

/// Binds a row's email and traits from parameter `first` on, in the traits' column
/// order (email, offer_id, expiry_date, status, payment_method_id, external_id,
/// external_properties, season_index, coupon_code, campaign_name, coupon_uses, extra,
/// row_hash, offer_country): the staging insert and a first load's insert into the
/// traits take them alike.
pub(super) fn bind_row(
    insert: &mut rusqlite::Statement<'_>,
    first: usize,
    row: &Row,
) -> Result<(), rusqlite::Error> {
    let (date, hash) = (iso_date(row.expiry_date), row.row_hash.hex());
    let date = std::str::from_utf8(&date).unwrap_or_default();
    for (at, value) in [
        &row.email() as &dyn ToSql,
        &row.offer_id(),
        &date,
        &row.status,
        &row.payment_method_id,
        &row.external_id(),
        &row.external_properties(),
        &row.season_index,
        &row.coupon_code(),
        &row.campaign_name(),
        &row.coupon_uses,
        &row.extra(),
        &hash.as_str(),
        &country_of(row.offer_id()),
    ]
    .into_iter()
    .enumerate()
    {
        insert.raw_bind_parameter(first + at, value)?;
    }
    Ok(())
}

/// Runs `work` on the connection through SQLite's own API, as one transaction unless
/// the connection is in one already.
pub(super) async fn raw<T>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T> {
    let mut handle = conn.lock_handle().await?;
    on_handle(&mut handle, |db| {
        // Row by row, one transaction for all of them, not one each.
        if db.is_autocommit() {
            let batch = db.unchecked_transaction()?;
            let done = work(db)?;
            batch.commit()?;
            Ok(done)
        } else {
            work(db)
        }
    })
}

/// Runs `work` through SQLite's own API on the connection `handle` locks.
pub(super) fn on_handle<T>(
    handle: &mut LockedSqliteHandle<'_>,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T> {
    // SAFETY: while `handle` lives, sqlx's worker makes no call on the connection
    // (its documented contract). The rusqlite connection borrows the handle without
    // owning it (it is not closed on drop), and it is dropped, with the statements it
    // prepared, before this function returns.
    let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    let done = work(&db);
    drop(db);
    Ok(done?)
}
