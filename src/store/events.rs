//! The webhook inbox (`cleeng_events`): deliveries committed by the listener, claimed by
//! the daemons' workers under a lease, ended with their refresh's status. A redelivery is
//! recognised by its body's SHA-256 (unique per connector). On PostgreSQL replicas share
//! the inbox: a claim skips rows another worker has locked (`FOR UPDATE SKIP LOCKED`) and
//! takes only events whose lease is free, so that no event is refreshed twice at once; a
//! worker killed mid-refresh leaves its events to be taken again once the lease passes.

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::event::{EventRecord, EventStatus, InboxSummary};
use crate::store::backend::Store;
use crate::store::error::{Result, StoreError};
use chrono::{DateTime, Utc};

use super::reads::Row as Conn;

type Row<B> = <Conn<B> as Session>::Row;

/// A delivery to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Connector id.
    pub connector: &'a str,
    /// Cleeng's topic.
    pub topic: &'a str,
    /// SHA-256 of the raw body, hex.
    pub body_sha256: &'a str,
    /// Now.
    pub received_at: DateTime<Utc>,
    /// Whom it names.
    pub email: Option<&'a str>,
    /// `data.customerId`.
    pub customer_id: Option<i64>,
    /// `data.subscriptionId`.
    pub subscription_id: Option<i64>,
    /// Why there is nothing to refresh, for an event that names nobody: it is stored
    /// `skipped` at once.
    pub skipped: Option<&'a str>,
    /// When its refresh is due (the coalescing window's end).
    pub due: DateTime<Utc>,
}

/// What queuing a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new event, by id.
    New(i64),
    /// The body was delivered before: its event.
    Redelivery(i64),
}

/// An event a worker claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEvent {
    /// Its id.
    pub id: i64,
    /// Whom it names.
    pub email: Option<String>,
    /// Refreshes tried for it, this one included.
    pub attempts: u32,
}

impl<B: Backend> Store<B> {
    /// Queues a delivery, or finds the event of the same body.
    pub async fn enqueue_event(&self, new: &NewEvent<'_>) -> Result<Enqueued> {
        let status = match new.skipped {
            Some(_) => EventStatus::Skipped,
            None => EventStatus::Queued,
        };
        let inserted = self
            .read_one(
                B::EVENTS.enqueue,
                &[
                    Param::Text(Some(new.connector)),
                    Param::Text(Some(new.topic)),
                    Param::Text(Some(new.body_sha256)),
                    Param::Instant(new.received_at),
                    Param::Text(new.email),
                    Param::Int(new.customer_id),
                    Param::Int(new.subscription_id),
                    Param::Text(Some(status.as_str())),
                    Param::Text(new.skipped),
                    Param::Instant(new.due),
                ],
                |row| Ok(row.int("id")?),
            )
            .await?;
        if let Some(id) = inserted {
            return Ok(Enqueued::New(id));
        }
        let params = [
            Param::Text(Some(new.connector)),
            Param::Text(Some(new.body_sha256)),
        ];
        let id = self
            .read_one(B::EVENTS.by_body, &params, |row| Ok(row.int("id")?))
            .await?
            .ok_or_else(|| StoreError::Bug("a delivered body's event vanished".into()))?;
        Ok(Enqueued::Redelivery(id))
    }

    /// Claims the oldest due event of the connector with its subscriber's other queued
    /// events (empty: nothing is due).
    pub async fn claim_events(
        &self,
        connector: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedEvent>> {
        let params = [
            Param::Text(Some(connector)),
            Param::Instant(now),
            Param::Text(Some(owner)),
            Param::Instant(lease_until),
        ];
        let mut claimed = self
            .read_all(B::EVENTS.claim, &params, |row| {
                Ok(ClaimedEvent {
                    id: row.int("id")?,
                    email: row.maybe_text("email")?,
                    attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .await?;
        claimed.sort_by_key(|event| event.id);
        Ok(claimed)
    }

    /// Ends the events a claim still holds (`owner`: the claim's, unique to it) in one
    /// statement; how many. Fewer than claimed: the lease of some passed and another
    /// worker took them.
    pub async fn finish_events(
        &self,
        owner: &str,
        status: EventStatus,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let params = [
            Param::Text(Some(owner)),
            Param::Text(Some(status.as_str())),
            Param::Text(message),
            Param::Instant(now),
        ];
        self.write(B::EVENTS.finish, &params).await
    }

    /// Gives a claimed event back to be tried again from `not_before`; with `uncounted`,
    /// the attempt it just had does not count.
    pub async fn retry_event(
        &self,
        id: i64,
        owner: &str,
        not_before: DateTime<Utc>,
        message: &str,
        uncounted: bool,
    ) -> Result<bool> {
        let params = [
            Param::Int(Some(id)),
            Param::Text(Some(owner)),
            Param::Instant(not_before),
            Param::Text(Some(message)),
            Param::Int(Some(i64::from(uncounted))),
        ];
        Ok(self.write(B::EVENTS.retry, &params).await? == 1)
    }

    /// Extends the lease of the events a claim still holds; how many.
    pub async fn renew_events(&self, owner: &str, until: DateTime<Utc>) -> Result<u64> {
        let params = [Param::Text(Some(owner)), Param::Instant(until)];
        self.write(B::EVENTS.renew, &params).await
    }

    /// Recent events, newest first, of a connector and a status when given.
    pub async fn events(
        &self,
        connector: Option<&str>,
        status: Option<EventStatus>,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let params = [
            Param::Text(connector),
            Param::Text(status.map(EventStatus::as_str)),
            Param::Int(Some(i64::from(limit))),
        ];
        self.read_all(B::EVENTS.list, &params, event_record::<B>)
            .await
    }

    /// The connector's inbox at a glance; failures counted since `since`.
    pub async fn inbox(&self, connector: &str, since: DateTime<Utc>) -> Result<InboxSummary> {
        let params = [Param::Text(Some(connector)), Param::Instant(since)];
        let summary = self
            .read_one(B::EVENTS.summary, &params, |row| {
                Ok(InboxSummary {
                    queued: u64::try_from(row.int("queued")?).unwrap_or(0),
                    oldest_queued_at: <Conn<B>>::instant(row, "oldest")?,
                    last_received_at: <Conn<B>>::instant(row, "last")?,
                    failed_last_day: u64::try_from(row.int("failed")?).unwrap_or(0),
                })
            })
            .await?;
        Ok(summary.unwrap_or_default())
    }
}

fn event_record<B: Backend>(row: &Row<B>) -> Result<EventRecord> {
    let status = row.text("status")?;
    Ok(EventRecord {
        id: row.int("id")?,
        connector: row.text("connector")?,
        topic: row.text("topic")?,
        received_at: <Conn<B>>::instant(row, "received_at")?.unwrap_or_default(),
        email: row.maybe_text("email")?,
        customer_id: row.maybe_int("customer_id")?,
        subscription_id: row.maybe_int("subscription_id")?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Bug(format!("unknown event status {status:?} stored")))?,
        attempts: row.int("attempts")?,
        message: row.maybe_text("message")?,
        processed_at: <Conn<B>>::instant(row, "processed_at")?,
    })
}
