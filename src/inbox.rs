//! The inbox worker: the daemon's loop that turns queued webhook events into refreshes.
//!
//! Per connector with an endpoint, oldest first: an event is due once its coalescing
//! window has passed (`coalesce` after it was received); the worker claims it with every
//! other queued event of its subscriber under a lease, makes one refresh for all of them
//! (`webhook:<id of the oldest>`), and gives each the refresh's status: `updated` ->
//! `applied`, `unchanged` -> `unchanged`, `no_live_subscription`, `ambiguous_subscription`
//! and `unknown_subscriber` -> `skipped` (the outcome in `message`). A refresh that fails
//! is tried again after a backoff (1 s, doubling, plus up to 10% jitter) until the event
//! has had `max_attempts`, then it is `failed`. A refresh that failed only because a
//! nightly run held the traits past its wait is tried again after that wait without the
//! attempt counting: a run of millions of rows takes minutes.
//!
//! Calls to Cleeng go through a token bucket per connector (`max_requests_per_second`, its
//! burst the same number); a refresh that needed several requests is charged for each,
//! and Cleeng's 429 is honoured by the client (`Retry-After`) before a refresh fails.
//!
//! Replicas on PostgreSQL share the inbox: the claim skips what another worker holds, and
//! the lease is renewed while the refresh runs, so that no event is refreshed by two at
//! once. A stop (SIGTERM) lets the refresh in flight end and claims nothing more: queued
//! events stay queued. A process killed mid-refresh leaves its events claimed until their
//! lease passes; then another worker, or this one restarted, takes them again.

use crate::actions::Actions;
use crate::clock::{Clock, backoff, jitter, later, seconds_since};
use crate::config::{Connector, ConnectorWebhooks};
use crate::event::EventStatus;
use crate::live::{LiveSource, RefreshAnswer, RefreshOutcome};
use crate::redact::mask_email;
use crate::store::{Backend, ClaimedEvent, Store, StoreError};
use chrono::TimeDelta;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often an idle worker looks for due events.
const POLL: Duration = Duration::from_millis(250);
/// How often the queue's gauges are read while idle.
const GAUGES_EVERY: Duration = Duration::from_secs(2);

/// The inbox worker of the connectors that have webhooks.
pub struct Inbox<B: Backend> {
    store: Arc<Store<B>>,
    actions: Arc<Actions<B>>,
    clock: Arc<dyn Clock>,
    /// This process, as the events it claims name it (with the claim's number).
    owner: String,
    /// Claims made: each claim's owner is unique, so that its events end in one statement.
    claims: AtomicU64,
    connectors: Vec<(String, ConnectorWebhooks)>,
}

impl<B: Backend> Inbox<B> {
    /// The worker of these connectors' inboxes (those with `[connector.webhooks]`).
    pub fn new(
        connectors: &[Connector],
        store: Arc<Store<B>>,
        actions: Arc<Actions<B>>,
        clock: Arc<dyn Clock>,
        owner: String,
    ) -> Inbox<B> {
        let connectors = connectors
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.webhooks.clone()?)))
            .collect();
        Inbox {
            store,
            actions,
            clock,
            owner,
            claims: AtomicU64::new(0),
            connectors,
        }
    }

    /// Works every connector's inbox until `stop` fires; the refreshes in flight end first.
    pub async fn work(self: Arc<Self>, stop: CancellationToken) {
        let workers: Vec<_> = (0..self.connectors.len())
            .map(|i| tokio::spawn(Arc::clone(&self).work_connector(i, stop.clone())))
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    async fn work_connector(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let (connector, settings) = &self.connectors[index];
        let mut bucket = Bucket::new(settings.max_requests_per_second);
        let mut gauges_read: Option<Instant> = None;
        while !stop.is_cancelled() {
            match self.step(connector, settings, &mut bucket).await {
                Ok(true) => {
                    gauges_read = None;
                    continue;
                }
                Ok(false) => {}
                Err(e) => warn!(
                    connector,
                    "the inbox cannot be worked, the store failed: {e}; trying again shortly"
                ),
            }
            if gauges_read.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
                self.gauges(connector).await;
                gauges_read = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Claims and refreshes one subscriber's due events; `false` when none is due.
    async fn step(
        &self,
        connector: &str,
        settings: &ConnectorWebhooks,
        bucket: &mut Bucket,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let claim = format!(
            "{}#{}",
            self.owner,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let claimed = self
            .store
            .claim_events(connector, &claim, now, later(now, settings.lease))
            .await?;
        let Some(first) = claimed.first() else {
            return Ok(false);
        };
        let Some(email) = claimed.iter().find_map(|e| e.email.clone()) else {
            let why = "names no subscriber: the event carries no customerEmail to refresh";
            self.settle(connector, &claim, &claimed, EventStatus::Skipped, Some(why))
                .await?;
            return Ok(true);
        };
        bucket.take(1).await;
        let source = LiveSource::Webhook(first.id);
        let refresh = self.actions.refresher().refresh(connector, &email, source);
        let result = tokio::select! {
            result = refresh => result,
            () = self.keep_lease(&claim, settings.lease) => unreachable!("renews forever"),
        };
        let answer = match result {
            Ok(answer) => {
                bucket.take(answer.requests.saturating_sub(1)).await;
                answer
            }
            Err(e) => failed_answer(connector, &email, e.to_string()),
        };
        info!(connector, email = %mask_email(&email), events = claimed.len(),
            first_event = first.id, outcome = answer.outcome.as_str(), "inbox: refreshed");
        match ending(&answer) {
            Some((status, message)) => {
                self.settle(connector, &claim, &claimed, status, message.as_deref())
                    .await?
            }
            None => {
                self.retry(connector, settings, &claim, &claimed, &answer)
                    .await?
            }
        }
        Ok(true)
    }

    /// Ends every event the claim still holds with one status.
    async fn settle(
        &self,
        connector: &str,
        claim: &str,
        claimed: &[ClaimedEvent],
        status: EventStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let ended = self
            .store
            .finish_events(claim, status, message, now)
            .await?;
        let held = claimed.len() as u64;
        if ended < held {
            warn!(
                connector,
                lost = held - ended,
                "the lease of some events passed before their refresh ended; another worker has them"
            );
        }
        crate::metrics::events_ended(connector, status, ended);
        Ok(())
    }

    /// A failed refresh: each event is tried again after its backoff, or ends `failed`
    /// once it has had `max_attempts`.
    async fn retry(
        &self,
        connector: &str,
        settings: &ConnectorWebhooks,
        claim: &str,
        claimed: &[ClaimedEvent],
        answer: &RefreshAnswer,
    ) -> Result<(), StoreError> {
        let message = answer.message.as_deref().unwrap_or("the refresh failed");
        let mut spent = Vec::new();
        let now = self.clock.now();
        // Those tried again leave the claim first; what it still holds then is spent.
        for event in claimed {
            match next_try(answer, event.attempts, settings.max_attempts, jitter()) {
                NextTry::Spent => spent.push(event.clone()),
                NextTry::After { wait, uncounted } => {
                    let message = format!("attempt {} failed: {message}", event.attempts);
                    self.store
                        .retry_event(event.id, claim, later(now, wait), &message, uncounted)
                        .await?;
                }
            }
        }
        if !spent.is_empty() {
            let failed = format!("failed after {} attempts: {message}", settings.max_attempts);
            self.settle(connector, claim, &spent, EventStatus::Failed, Some(&failed))
                .await?;
        }
        Ok(())
    }

    /// Renews the claim's lease while its refresh runs; never returns.
    async fn keep_lease(&self, claim: &str, lease: Duration) {
        loop {
            tokio::time::sleep(lease / 3).await;
            let until = later(self.clock.now(), lease);
            if let Err(e) = self.store.renew_events(claim, until).await {
                warn!(
                    claim,
                    "cannot renew the lease of the events in refresh: {e}"
                );
            }
        }
    }

    /// Sets the queue's gauges from the store.
    async fn gauges(&self, connector: &str) {
        let now = self.clock.now();
        match self.store.inbox(connector, now - TimeDelta::days(1)).await {
            Ok(summary) => {
                let lag = seconds_since(now, summary.oldest_queued_at.as_deref());
                crate::metrics::inbox(connector, summary.queued, lag);
            }
            Err(e) => warn!(connector, "cannot read the inbox's size: {e}"),
        }
    }
}

/// The final status a refresh gives its events, or `None`: try again.
fn ending(answer: &RefreshAnswer) -> Option<(EventStatus, Option<String>)> {
    let outcome = answer.outcome;
    let said = |m: &Option<String>| match m {
        Some(m) => format!("{}: {m}", outcome.as_str()),
        None => outcome.as_str().to_string(),
    };
    match outcome {
        RefreshOutcome::Updated => Some((EventStatus::Applied, None)),
        RefreshOutcome::Unchanged => Some((EventStatus::Unchanged, None)),
        RefreshOutcome::NoLiveSubscription
        | RefreshOutcome::AmbiguousSubscription
        | RefreshOutcome::UnknownSubscriber => {
            Some((EventStatus::Skipped, Some(said(&answer.message))))
        }
        RefreshOutcome::Failed => None,
    }
}

/// What becomes of an event whose refresh failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NextTry {
    /// It had its attempts: `failed`.
    Spent,
    /// Tried again after `wait`; `uncounted`: the attempt it had does not count.
    After { wait: Duration, uncounted: bool },
}

/// A refresh that failed only because a nightly run held the traits is tried again once
/// the run may have ended, whatever the attempts (a run of millions of rows takes
/// minutes); any other failure is tried again after its backoff, until `max_attempts`.
fn next_try(answer: &RefreshAnswer, attempts: u32, max_attempts: u32, jitter: f64) -> NextTry {
    if answer.run_in_flight {
        return NextTry::After {
            wait: crate::refresh::RUN_WAIT,
            uncounted: true,
        };
    }
    if attempts >= max_attempts {
        return NextTry::Spent;
    }
    NextTry::After {
        wait: backoff(attempts, jitter),
        uncounted: false,
    }
}

/// The answer of a refresh that could not be taken up (the store failed).
fn failed_answer(connector: &str, email: &str, message: String) -> RefreshAnswer {
    RefreshAnswer {
        connector: connector.to_string(),
        email: email.to_string(),
        outcome: RefreshOutcome::Failed,
        changes: Default::default(),
        subscription_id: None,
        live_at: None,
        confirmed_actions: Vec::new(),
        message: Some(message),
        requests: 0,
        run_in_flight: false,
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` held. Its debt (a refresh that
/// needed more requests than it took) is paid by waiting before the next.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens, waiting until the first of them is there.
    async fn take(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.refill();
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.refill();
        }
        self.tokens -= f64::from(n);
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_lets_its_burst_through_then_its_rate() {
        let mut bucket = Bucket::new(5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take(1).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            bucket.take(1).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1_990) && took <= Duration::from_millis(2_010),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_of_three_requests_is_charged_three_tokens() {
        let mut bucket = Bucket::new(2);
        let start = Instant::now();
        bucket.take(1).await;
        bucket.take(2).await; // the other two requests of that refresh
        bucket.take(1).await; // waits for the debt and one token
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1_010),
            "{took:?}"
        );
    }

    fn answer(outcome: RefreshOutcome) -> RefreshAnswer {
        let mut answer = failed_answer("c", "a@b.c", "why".into());
        answer.outcome = outcome;
        answer
    }

    #[test]
    fn a_refresh_that_met_a_nightly_run_is_tried_again_without_counting() {
        let mut failed = answer(RefreshOutcome::Failed);
        assert_eq!(next_try(&failed, 5, 5, 0.0), NextTry::Spent);
        assert_eq!(
            next_try(&failed, 2, 5, 0.0),
            NextTry::After {
                wait: Duration::from_secs(2),
                uncounted: false
            }
        );
        failed.run_in_flight = true;
        assert_eq!(
            next_try(&failed, 5, 5, 0.0),
            NextTry::After {
                wait: crate::refresh::RUN_WAIT,
                uncounted: true
            }
        );
    }

    #[test]
    fn an_event_ends_as_its_refresh_did() {
        let status = |o| ending(&answer(o)).map(|(s, _)| s);
        assert_eq!(status(RefreshOutcome::Updated), Some(EventStatus::Applied));
        assert_eq!(
            status(RefreshOutcome::Unchanged),
            Some(EventStatus::Unchanged)
        );
        for skipped in [
            RefreshOutcome::NoLiveSubscription,
            RefreshOutcome::AmbiguousSubscription,
            RefreshOutcome::UnknownSubscriber,
        ] {
            let (status, message) = ending(&answer(skipped)).expect("final");
            assert_eq!(status, EventStatus::Skipped);
            assert_eq!(message, Some(format!("{}: why", skipped.as_str())));
        }
        assert_eq!(status(RefreshOutcome::Failed), None);
    }
}
