//! Where each destination of the change feed is (`change_deliveries`): its cursor (the
//! last change acknowledged), its failures and backoff, whether it is stopped, and which
//! process delivers to it now.
//!
//! One process at a time delivers to a destination, under a lease it renews while a
//! batch is on its way, so that replicas on PostgreSQL never send batches out of order;
//! a process killed mid-delivery leaves the lease to pass, and the batch is sent again
//! (at least once). The cursor only moves forward, and only by the lease's holder.

use super::backend::{Backend, Dialect, Param, Session, Store};
use super::reads::Row as Conn;
use super::rows::Columns;
use crate::store::error::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A destination as the store keeps it, for the status page and `deliver status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryState {
    /// Connector id.
    pub connector: String,
    /// The destination's name.
    pub destination: String,
    /// The last change id acknowledged or passed over.
    pub cursor: i64,
    /// When the daemon first saw it.
    pub created_at: String,
    /// The last acknowledged batch.
    pub delivered_at: Option<String>,
    /// Changes acknowledged in all.
    pub delivered: i64,
    /// Failed attempts since the last acknowledged batch.
    pub failures: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// The next attempt, not before.
    pub retry_at: Option<String>,
    /// When it refused a batch; nothing is sent until it is resumed.
    pub stopped_at: Option<String>,
    /// When the oldest change past the cursor was written (none: caught up).
    pub pending_since: Option<String>,
}

/// A destination a process holds: where to deliver from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDelivery {
    /// The last change id acknowledged.
    pub cursor: i64,
    /// Failed attempts of the batch at the cursor so far.
    pub failures: u32,
}

impl Dialect {
    /// A nullable text parameter, typed (PostgreSQL cannot type `$1 IS NULL` alone).
    fn maybe_text(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => self.p(n),
            Dialect::Postgres => format!("{}::text", self.p(n)),
        }
    }
}

/// The row of a destination first seen: `1` connector, `2` destination, `3` now, `4` 1
/// to start at the oldest retained change, 0 to start after the newest.
fn open(d: Dialect) -> String {
    format!(
        "INSERT INTO change_deliveries (connector, destination, cursor, created_at)
         SELECT {p1}, {p2},
            CASE WHEN {p4} = 1 THEN 0 ELSE COALESCE(
                (SELECT MAX(id) FROM subscription_changes WHERE connector = {p1}), 0) END,
            {p3}
         ON CONFLICT (connector, destination) DO NOTHING",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        p4 = d.p(4),
    )
}

/// Takes a destination that is due (not stopped, past its backoff) and free (or already
/// this owner's): `1` connector, `2` destination, `3` owner, `4` now, `5` lease end.
fn claim(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET owner = {p3}, lease_until = {p5}
         WHERE connector = {p1} AND destination = {p2} AND stopped_at IS NULL
           AND (retry_at IS NULL OR retry_at <= {p4})
           AND (owner IS NULL OR owner = {p3} OR lease_until < {p4})
         RETURNING cursor, failures",
        p1 = d.p(1),
        p2 = d.p(2),
        p3 = d.p(3),
        p4 = d.p(4),
        p5 = d.p(5),
    )
}

/// The WHERE of a statement by the lease's holder: `1` connector, `2` destination,
/// `3` owner.
fn held(d: Dialect) -> String {
    format!(
        "connector = {} AND destination = {} AND owner = {}",
        d.p(1),
        d.p(2),
        d.p(3)
    )
}

/// Moves the cursor past an acknowledged batch: `4` the new cursor, `5` how many
/// changes it held, `6` now.
fn acknowledge(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET cursor = {p4}, delivered = delivered + {p5},
            delivered_at = CASE WHEN {p5} > 0 THEN {p6} ELSE delivered_at END,
            failures = 0, retry_at = NULL, last_error = NULL
         WHERE {held} AND cursor < {p4}",
        held = held(d),
        p4 = d.p(4),
        p5 = d.p(5),
        p6 = d.p(6),
    )
}

/// A failed attempt: `4` what failed, `5` the next attempt (or, stopping, now), `6` 1
/// to stop the destination.
fn fail(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET failures = failures + 1, last_error = {p4},
            retry_at = CASE WHEN {p6} = 1 THEN NULL ELSE {p5} END,
            stopped_at = CASE WHEN {p6} = 1 THEN {p5} END, owner = NULL, lease_until = NULL
         WHERE {held}",
        held = held(d),
        p4 = d.p(4),
        p5 = d.p(5),
        p6 = d.p(6),
    )
}

/// Extends a held lease: `4` its new end.
fn renew(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET lease_until = {} WHERE {}",
        d.p(4),
        held(d)
    )
}

/// Gives back every destination an owner holds: `1` owner.
fn release(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET owner = NULL, lease_until = NULL WHERE owner = {}",
        d.p(1)
    )
}

/// Lets a stopped destination be delivered to again: `1` connector, `2` destination.
fn resume(d: Dialect) -> String {
    format!(
        "UPDATE change_deliveries SET stopped_at = NULL, failures = 0, retry_at = NULL
         WHERE connector = {} AND destination = {}",
        d.p(1),
        d.p(2)
    )
}

/// Every destination (of a connector, `1`, when given), with when its oldest pending
/// change was written.
fn list(d: Dialect) -> String {
    format!(
        "SELECT c.*, (SELECT f.at FROM subscription_changes f
                      WHERE f.connector = c.connector AND f.id > c.cursor
                      ORDER BY f.id LIMIT 1) AS pending_since
         FROM change_deliveries c
         WHERE ({p1} IS NULL OR c.connector = {p1})
         ORDER BY c.connector, c.destination",
        p1 = d.maybe_text(1),
    )
}

/// A destination as a process holds it: connector, destination, owner (host:pid:start).
pub type DeliveryKey<'a> = (&'a str, &'a str, &'a str);

/// The key as the statements' parameters `1`-`3`.
fn key_params<'a>((connector, destination, owner): DeliveryKey<'a>) -> [Param<'a>; 3] {
    [
        Param::Text(Some(connector)),
        Param::Text(Some(destination)),
        Param::Text(Some(owner)),
    ]
}

impl<B: Backend> Store<B> {
    /// Keeps a row for a destination from the first time it is seen: its cursor after
    /// the newest change, or before the oldest retained one (`from_start`). A row
    /// already there is left as it is.
    pub async fn open_delivery(
        &self,
        connector: &str,
        destination: &str,
        from_start: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let params = [
            Param::Text(Some(connector)),
            Param::Text(Some(destination)),
            Param::Instant(now),
            Param::Int(Some(i64::from(from_start))),
        ];
        self.write(&open(B::DIALECT), &params).await.map(drop)
    }

    /// Takes the destination for `owner` until `lease_until` when it is due and no other
    /// process holds it; `None`: stopped, backing off, or held elsewhere.
    pub async fn claim_delivery(
        &self,
        key: DeliveryKey<'_>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<HeldDelivery>> {
        let [connector, destination, owner] = key_params(key);
        let params = [
            connector,
            destination,
            owner,
            Param::Instant(now),
            Param::Instant(lease_until),
        ];
        self.read_one(&claim(B::DIALECT), &params, |row| {
            Ok(HeldDelivery {
                cursor: row.int("cursor")?,
                failures: u32::try_from(row.int("failures")?).unwrap_or(u32::MAX),
            })
        })
        .await
    }

    /// Moves the cursor to `cursor` past an acknowledged batch of `count` changes (0: a
    /// stretch of other kinds passed over); `false` when the lease was lost meanwhile.
    pub async fn acknowledge_delivery(
        &self,
        key: DeliveryKey<'_>,
        cursor: i64,
        count: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let [connector, destination, owner] = key_params(key);
        let params = [
            connector,
            destination,
            owner,
            Param::Int(Some(cursor)),
            Param::Int(Some(i64::try_from(count).unwrap_or(i64::MAX))),
            Param::Instant(now),
        ];
        Ok(self.write(&acknowledge(B::DIALECT), &params).await? == 1)
    }

    /// Records a failed attempt and gives the lease back: tried again from `at`, or,
    /// with `stop`, stopped at `at` until resumed.
    pub async fn fail_delivery(
        &self,
        key: DeliveryKey<'_>,
        error: &str,
        at: DateTime<Utc>,
        stop: bool,
    ) -> Result<bool> {
        let [connector, destination, owner] = key_params(key);
        let params = [
            connector,
            destination,
            owner,
            Param::Text(Some(error)),
            Param::Instant(at),
            Param::Int(Some(i64::from(stop))),
        ];
        Ok(self.write(&fail(B::DIALECT), &params).await? == 1)
    }

    /// Extends the lease while a batch is on its way; `false` when it was lost.
    pub async fn renew_delivery(&self, key: DeliveryKey<'_>, until: DateTime<Utc>) -> Result<bool> {
        let [connector, destination, owner] = key_params(key);
        let params = [connector, destination, owner, Param::Instant(until)];
        Ok(self.write(&renew(B::DIALECT), &params).await? == 1)
    }

    /// Gives back what `owner` holds (a stop), so that a replica takes over at once.
    pub async fn release_deliveries(&self, owner: &str) -> Result<u64> {
        self.write(&release(B::DIALECT), &[Param::Text(Some(owner))])
            .await
    }

    /// Lets a stopped destination be delivered to again, from its cursor; `false` when
    /// the store has no such destination (a daemon never saw it).
    pub async fn resume_delivery(&self, connector: &str, destination: &str) -> Result<bool> {
        let params = [Param::Text(Some(connector)), Param::Text(Some(destination))];
        Ok(self.write(&resume(B::DIALECT), &params).await? == 1)
    }

    /// Every destination the store keeps, of one connector when given.
    pub async fn deliveries(&self, connector: Option<&str>) -> Result<Vec<DeliveryState>> {
        self.read_all(&list(B::DIALECT), &[Param::Text(connector)], |row| {
            Ok(DeliveryState {
                connector: row.text("connector")?,
                destination: row.text("destination")?,
                cursor: row.int("cursor")?,
                created_at: <Conn<B>>::instant(row, "created_at")?.unwrap_or_default(),
                delivered_at: <Conn<B>>::instant(row, "delivered_at")?,
                delivered: row.int("delivered")?,
                failures: row.int("failures")?,
                last_error: row.maybe_text("last_error")?,
                retry_at: <Conn<B>>::instant(row, "retry_at")?,
                stopped_at: <Conn<B>>::instant(row, "stopped_at")?,
                pending_since: <Conn<B>>::instant(row, "pending_since")?,
            })
        })
        .await
    }
}
