//! The daemon's claims on scheduled times (`schedule_claims`): durable, so that a
//! restart or a second replica never runs a time twice.

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::store::backend::Store;
use crate::store::error::Result;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The result of claiming a scheduled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This daemon holds the claim: it runs the time.
    Won,
    /// The time ran, or runs under another live daemon.
    Taken,
}

/// A daemon's claim on one scheduled time of one connector.
#[derive(Debug, Clone, Copy)]
pub struct SlotClaim<'a> {
    /// Connector id.
    pub connector: &'a str,
    /// The scheduled local time, as the ledger names it (`scheduled_for`).
    pub slot: &'a str,
    /// The daemon that claims it.
    pub holder: &'a str,
}

impl<'a> SlotClaim<'a> {
    /// The claim as the first three parameters of a statement.
    fn params(self) -> [Param<'a>; 3] {
        [
            Param::Text(Some(self.connector)),
            Param::Text(Some(self.slot)),
            Param::Text(Some(self.holder)),
        ]
    }
}

impl<B: Backend> Store<B> {
    /// Claims a scheduled time for its holder, for `lease`. A claim that is done, or
    /// held by another daemon whose lease runs, is [`Claim::Taken`]; an expired one is
    /// taken over, and the run its holder left `running` is closed as failed.
    pub async fn claim_slot(
        &self,
        claim: SlotClaim<'_>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Claim> {
        let lease_until =
            now + chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
        let [connector, slot, holder] = claim.params();
        let mut conn = self.pool.acquire().await?;
        // One statement: two daemons claiming at once are serialised by the row (or,
        // in SQLite, the write lock), and exactly one of them sees its name come back.
        let winner = conn
            .fetch_optional(
                B::SQL.claim,
                &[
                    connector,
                    slot,
                    holder,
                    Param::Instant(now),
                    Param::Instant(lease_until),
                ],
            )
            .await?
            .map(|row| row.text("holder"))
            .transpose()?;
        if winner.as_deref() != Some(claim.holder) {
            return Ok(Claim::Taken);
        }
        // Runs left `running` by a daemon that died, for this time (taken over) or an
        // older one whose claim lapsed: they never committed.
        conn.execute(
            B::SQL.claim_orphans,
            &[connector, slot, Param::Instant(now)],
        )
        .await?;
        Ok(Claim::Won)
    }

    /// Extends a claim its holder has; `false` if it lost it.
    pub async fn renew_claim(&self, claim: SlotClaim<'_>, until: DateTime<Utc>) -> Result<bool> {
        let [connector, slot, holder] = claim.params();
        let renewed = self
            .write(
                B::SQL.renew_claim,
                &[connector, slot, holder, Param::Instant(until)],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Marks the claimed time as run, whatever the outcome: it never runs again.
    pub async fn settle_claim(&self, claim: SlotClaim<'_>) -> Result<()> {
        self.write(B::SQL.settle_claim, &claim.params()).await?;
        Ok(())
    }

    /// Gives a claim back without running the time (shutdown), so that another
    /// daemon, or this one restarted, runs it.
    pub async fn release_claim(&self, claim: SlotClaim<'_>) -> Result<()> {
        self.write(B::SQL.release_claim, &claim.params()).await?;
        Ok(())
    }
}
