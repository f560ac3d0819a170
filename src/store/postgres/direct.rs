//! A first load on PostgreSQL: the valid rows COPYed straight into the traits, in the
//! run's transaction (begun before the first row), where staging them all and copying
//! them in with `INSERT ... SELECT` took 40 s of a 42 s 5M first load.
//!
//! A unique violation would end the COPY, so the rows of an email the filter may have
//! seen before never reach it (`staging::direct` puts them aside and stages them once
//! this COPY has ended); the repeated-email check then takes back the row written of
//! each repeated email ([`take_back`]). Nothing else was stored for the connector (its
//! lock keeps other writers out), so each email has at most that one row.
//!
//! Into a traits table with no row at all (of any connector) the primary key and the
//! expiry index are dropped in the transaction and built again from their own
//! definitions just before the COMMIT ([`rebuild_indexes`]): one sort each instead of
//! an entry at a random place per row. In turns, a 5M first load took 37.0 and 39.2 s
//! against 46.3 and 44.1 s for the expiry index alone; the key then took a further 5%
//! off (farm-bench, 4 pairs: wall ratio 0.948). A run that fails or is killed rolls the
//! drops back with everything else. While the load runs, the table is locked (`DROP
//! INDEX` takes it whole): a reader of the traits waits for the first load to end.
//! Nothing of the load looks a row up by its key but [`take_back`], which then scans
//! the rows written, and only when an email repeats.
//!
//! Once the drops hold the table whole and it is still empty, it is truncated in the
//! transaction so that the COPY may take its rows `FREEZE`: frozen, hint bits and
//! visibility map set, where otherwise the next night's read of the held hashes (the
//! first read of every row) would write every page again, and a later anti-wraparound
//! vacuum would once more. 5M first load, farm-bench 3 pairs: wall ratio 0.926; the 5M
//! changed night after it, three in turns: 20.3 / 20.3 / 20.5 s against 20.8 / 20.5 /
//! 20.8 s.

use super::copy::{push_number, push_text, push_traits};
use super::stream::Session;
use crate::export::Row;
use crate::store::backend::Stamp;
use crate::store::error::{Result, StoreError};
use crate::store::rows::timestamp;
use sqlx::Executor as _;
use sqlx::postgres::PgConnection;

/// The columns the COPY into the traits fills, in the order [`Direct::encode`] writes.
const TRAITS_COLUMNS: &str = "connector, email, offer_id, expiry_date, status, \
    payment_method_id, external_id, external_properties, season_index, coupon_code, \
    campaign_name, coupon_uses, extra, row_hash, offer_country, first_seen_run, \
    changed_run, updated_at";

/// A first load's state on the tables.
pub struct Direct {
    stamp: Stamp,
    /// Whether the COPY into the traits still runs (rows put aside come after it).
    pub into_traits: bool,
    /// Rows the COPY wrote, once it ended.
    pub written: u64,
    /// Of those, the rows of repeated emails deleted again.
    pub undone: u64,
    /// The connector as a CSV field, written first on every line.
    connector: Vec<u8>,
    /// The run's stamp as the last CSV fields of every line, with the line's end.
    stamped: Vec<u8>,
    /// The statements that build again what the load dropped (the primary key, then
    /// the expiry index), before the COMMIT.
    rebuild: Vec<String>,
}

impl Direct {
    /// Appends a row as a line of the COPY into the traits.
    pub fn encode(&self, row: &Row, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.connector);
        push_text(out, Some(row.email()));
        push_traits(out, row);
        out.extend_from_slice(&self.stamped);
    }
}

/// Begins the run's transaction on the session (the COPY into staging it came from
/// ended with nothing sent) and starts the COPY into the traits.
pub(super) async fn begin(
    mut conn: PgConnection,
    connector: &str,
    stamp: Stamp,
) -> Result<(Session, Direct)> {
    // Asked before the transaction, so that its first lock on the traits is the drop's:
    // two first loads that each held a read lock would deadlock upgrading them. Rows
    // another connector writes in between are indexed by the rebuild with this load's.
    let dropped: Option<(String, String, String)> = sqlx::query_as(
        "SELECT i.indexdef, k.conname::text, pg_get_constraintdef(k.oid)
         FROM pg_indexes i, pg_constraint k
         WHERE i.schemaname = current_schema() AND i.indexname = $1
           AND k.conrelid = 'subscription_traits'::regclass AND k.contype = 'p'
           AND NOT EXISTS (SELECT 1 FROM subscription_traits)",
    )
    .bind(EXPIRY_INDEX)
    .fetch_optional(&mut conn)
    .await?;
    conn.execute("BEGIN").await?;
    let mut rebuild = Vec::new();
    if let Some((index, key, key_definition)) = dropped {
        conn.execute(format!("DROP INDEX {EXPIRY_INDEX}").as_str())
            .await?;
        conn.execute(format!("ALTER TABLE subscription_traits DROP CONSTRAINT \"{key}\"").as_str())
            .await?;
        // The key first: the index's build then reads a table that is known sound.
        rebuild.push(format!(
            "ALTER TABLE subscription_traits ADD CONSTRAINT \"{key}\" {key_definition}"
        ));
        rebuild.push(index);
    }
    // Still empty now that the drop holds the table whole (no other run can have
    // written since): truncated in this transaction, it takes its rows frozen, with
    // their hint bits and the visibility map set, so that the next night's first read
    // of every row (its held hashes) does not write every page again.
    let freeze = !rebuild.is_empty()
        && sqlx::query_scalar::<_, bool>("SELECT NOT EXISTS (SELECT 1 FROM subscription_traits)")
            .fetch_one(&mut conn)
            .await?;
    if freeze {
        conn.execute("TRUNCATE subscription_traits").await?;
    }
    let options = if freeze {
        "FORMAT csv, FREEZE"
    } else {
        "FORMAT csv"
    };
    let session = Session::copy(
        conn,
        format!("COPY subscription_traits ({TRAITS_COLUMNS}) FROM STDIN WITH ({options})"),
    );
    let mut quoted = Vec::new();
    push_text(&mut quoted, Some(connector));
    quoted.remove(0);
    let mut stamped = Vec::new();
    push_number(&mut stamped, Some(stamp.run_id));
    push_number(&mut stamped, Some(stamp.run_id));
    push_text(&mut stamped, Some(&timestamp(stamp.now)));
    stamped.push(b'\n');
    let direct = Direct {
        stamp,
        into_traits: true,
        written: 0,
        undone: 0,
        connector: quoted,
        stamped,
        rebuild,
    };
    Ok((session, direct))
}

/// The index a first load into an empty table builds after its rows, not as they come.
const EXPIRY_INDEX: &str = "subscription_traits_by_expiry";

/// Builds again what the load dropped: in the run's transaction, before its COMMIT.
pub(super) async fn rebuild_indexes(
    conn: &mut PgConnection,
    direct: Option<&Direct>,
) -> Result<()> {
    for statement in direct.map_or(&[][..], |d| &d.rebuild) {
        conn.execute(statement.as_str()).await?;
    }
    Ok(())
}

/// Deletes the row written of each repeated email (`repeated`: the condition on
/// `email`); how many.
pub(super) async fn take_back(
    conn: &mut PgConnection,
    connector: &str,
    repeated: &str,
) -> Result<u64> {
    Ok(sqlx::query(&format!(
        "DELETE FROM subscription_traits WHERE connector = $1 AND {repeated}"
    ))
    .bind(connector)
    .execute(conn)
    .await?
    .rows_affected())
}

/// A first load's subscribers inserted: those the staged rows' insert wrote
/// (`inserted`), and those written straight in and not taken back.
pub(super) fn inserted(direct: Option<&Direct>, stamp: Stamp, inserted: u64) -> Result<u64> {
    let Some(direct) = direct else {
        return Ok(inserted);
    };
    if direct.into_traits {
        return Err(StoreError::Bug(format!(
            "run {} applied while its first load's COPY into the traits still ran",
            stamp.run_id
        )));
    }
    crate::store::staging::direct::inserted(direct.stamp, stamp, direct.written, direct.undone)
        .map(|written| written + inserted)
}
