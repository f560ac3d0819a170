//! Change delivery: the change feed POSTed to each `[[connector.deliver]]` destination in
//! signed batches, at least once and in order (DESIGN.md, "The change feed").
//!
//! A step takes the destination under a lease (one process at a time, so that batches
//! never overtake each other), reads at most `max_batch` changes of its kinds past its
//! cursor, POSTs them signed ([`sign`]) and moves the cursor past them only once the
//! receiver answered 2xx ([`post`]). A failure is tried again after a backoff (1 s,
//! doubling, at most 5 minutes, with jitter); a 4xx other than 408/429 stops the
//! destination until `cleeng-sync deliver resume`. A process killed with a batch on its
//! way has not moved the cursor: the batch is sent again once the lease passes. A run of
//! changes of other kinds moves the cursor without a POST.
//!
//! The changes are read from the store, not handed over by the writer: whichever process
//! applied them (a `sync` command, another replica's run, a refresh), the feed's order is
//! the order delivered.

mod post;
pub mod sign;

use crate::change::{ChangeRecord, Cursor, DeliveryOutcome};
use crate::clock::{Clock, jitter, later};
use crate::config::{Connector, Destination};
use crate::store::{Backend, DeliveryKey, Store, StoreError};
use serde::Serialize;
use sign::Secret;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A destination ready to be delivered to: its connector, its settings, its secret.
#[derive(Debug, Clone)]
pub struct Target {
    /// Connector id.
    pub connector: String,
    /// `[[connector.deliver]]`.
    pub settings: Destination,
    secret: Secret,
}

impl Target {
    /// The destinations of these connectors whose secret `env` holds, and for each of
    /// the others, `(connector, destination, why)`.
    pub fn all(
        connectors: &[Connector],
        env: impl Fn(&str) -> Option<String>,
    ) -> (Vec<Target>, Vec<(String, String, String)>) {
        let (mut targets, mut missing) = (Vec::new(), Vec::new());
        for connector in connectors {
            for settings in &connector.deliver {
                let name = settings.secret_env.as_str();
                let secret = env(name).unwrap_or_default();
                match Secret::new(secret.as_bytes()) {
                    Some(secret) => targets.push(Target {
                        connector: connector.id.clone(),
                        settings: settings.clone(),
                        secret,
                    }),
                    None => missing.push((
                        connector.id.clone(),
                        settings.name.clone(),
                        format!(
                            "{name} is unset or shorter than {} bytes: nothing is delivered to \
                             it until it holds the destination's signing secret",
                            sign::MIN_SECRET
                        ),
                    )),
                }
            }
        }
        (targets, missing)
    }

    fn key<'a>(&'a self, owner: &'a str) -> DeliveryKey<'a> {
        (&self.connector, &self.settings.name, owner)
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send now: caught up, stopped, backing off, or held by another process.
    Idle,
    /// A batch was acknowledged; `full`: more may be waiting.
    Delivered {
        /// Changes in it.
        changes: usize,
        /// It held `max_batch` changes.
        full: bool,
    },
    /// Changes of other kinds were passed over.
    PassedOver,
    /// The batch failed; tried again after `after`.
    Retrying {
        /// The backoff.
        after: Duration,
    },
    /// The destination refused the batch: stopped until resumed.
    Stopped,
}

/// The body of a batch.
#[derive(Serialize)]
struct Body<'a> {
    connector: &'a str,
    changes: &'a [ChangeRecord],
}

/// Delivers batches for this process.
pub struct Courier<B: Backend> {
    store: Arc<Store<B>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// This process, as the leases it takes name it.
    owner: String,
}

impl<B: Backend> Courier<B> {
    /// A courier for this process (`owner`: host:pid:start).
    pub fn new(
        store: Arc<Store<B>>,
        clock: Arc<dyn Clock>,
        owner: String,
    ) -> Result<Courier<B>, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect is an answer to look at, never a reason to send the batch elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cleeng-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Courier {
            store,
            clock,
            http,
            owner,
        })
    }

    /// Keeps the store's row of each target (its cursor starts now, or at the start).
    pub async fn open(&self, targets: &[Target]) -> Result<(), StoreError> {
        for target in targets {
            let (connector, settings) = (&target.connector, &target.settings);
            self.store
                .open_delivery(
                    connector,
                    &settings.name,
                    settings.from_start,
                    self.clock.now(),
                )
                .await?;
        }
        Ok(())
    }

    /// Gives back every destination this process holds (on stop).
    pub async fn release(&self) -> Result<u64, StoreError> {
        self.store.release_deliveries(&self.owner).await
    }

    /// Sends the next batch of a destination, if one is due.
    pub async fn step(&self, target: &Target) -> Result<Step, StoreError> {
        let (settings, key) = (&target.settings, target.key(&self.owner));
        let now = self.clock.now();
        let lease_end = later(now, settings.lease);
        let Some(held) = self.store.claim_delivery(key, now, lease_end).await? else {
            return Ok(Step::Idle);
        };
        // With a kind filter, a page may read far past the cursor: the lease is kept.
        let read = self.store.changes(
            &target.connector,
            &settings.kinds,
            Cursor(held.cursor),
            settings.max_batch,
        );
        let page = tokio::select! {
            page = read => page?,
            () = self.keep_lease(target) => unreachable!("renews forever"),
        };
        let next = Cursor::parse(&page.next)
            .ok_or_else(|| StoreError::Bug(format!("a page's next {:?}", page.next)))?;
        if page.changes.is_empty() {
            if next.0 > held.cursor {
                self.store.acknowledge_delivery(key, next.0, 0, now).await?;
                return Ok(Step::PassedOver);
            }
            return Ok(Step::Idle);
        }
        let body = serde_json::to_vec(&Body {
            connector: &target.connector,
            changes: &page.changes,
        })
        .map_err(|e| StoreError::Bug(format!("a batch as JSON: {e}")))?;
        let timestamp = now.timestamp();
        let batch = post::Batch {
            url: &settings.url,
            timestamp,
            signature: target.secret.sign(timestamp, &body),
            body,
        };
        let answer = tokio::select! {
            answer = post::send(&self.http, batch, settings.timeout) => answer,
            () = self.keep_lease(target) => unreachable!("renews forever"),
        };
        let changes = page.changes.len();
        self.settle(target, held.failures, answer, next, changes)
            .await
    }

    /// Records what became of a batch of `changes` ending at `next`.
    async fn settle(
        &self,
        target: &Target,
        failures: u32,
        answer: post::Answer,
        next: Cursor,
        changes: usize,
    ) -> Result<Step, StoreError> {
        let (connector, name) = (target.connector.as_str(), target.settings.name.as_str());
        let key = target.key(&self.owner);
        let now = self.clock.now();
        let (outcome, step) = match answer {
            post::Answer::Acknowledged => {
                if !self
                    .store
                    .acknowledge_delivery(key, next.0, changes as u64, now)
                    .await?
                {
                    warn!(
                        connector,
                        destination = name,
                        "the lease passed while the batch was on its way: another process sends it again"
                    );
                }
                info!(
                    connector,
                    destination = name,
                    changes,
                    cursor = next.0,
                    "changes delivered"
                );
                let full = changes >= target.settings.max_batch as usize;
                (
                    DeliveryOutcome::Delivered,
                    Step::Delivered { changes, full },
                )
            }
            post::Answer::Retry { why, after } => {
                let wait = backoff(failures + 1, jitter()).max(after.unwrap_or_default());
                let wait = wait.min(MAX_BACKOFF);
                warn!(
                    connector,
                    destination = name,
                    attempt = failures + 1,
                    retry_in_ms = wait.as_millis() as u64,
                    "a batch was not delivered: {why}"
                );
                self.store
                    .fail_delivery(key, &why, later(now, wait), false)
                    .await?;
                (DeliveryOutcome::Failed, Step::Retrying { after: wait })
            }
            post::Answer::Refused { why } => {
                warn!(
                    connector,
                    destination = name,
                    "the destination refused a batch and is stopped until `cleeng-sync deliver \
                     resume {name} --connector {connector}`: {why}"
                );
                self.store.fail_delivery(key, &why, now, true).await?;
                (DeliveryOutcome::Refused, Step::Stopped)
            }
        };
        crate::metrics::delivery_attempted(connector, name, outcome);
        Ok(step)
    }

    /// Renews the lease while a batch is on its way; never returns.
    async fn keep_lease(&self, target: &Target) {
        let lease = target.settings.lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            let until = later(self.clock.now(), lease);
            if let Err(e) = self
                .store
                .renew_delivery(target.key(&self.owner), until)
                .await
            {
                warn!(destination = %target.settings.name, "cannot renew the delivery's lease: {e}");
            }
        }
    }
}

/// The wait after the `failures`-th failed attempt in a row: the clock's backoff, at most
/// [`MAX_BACKOFF`].
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    crate::clock::backoff(failures, jitter).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(4_400));
        assert_eq!(backoff(9, 0.0), Duration::from_secs(256));
        assert_eq!(backoff(9, 1.0), Duration::from_millis(281_600));
        assert_eq!(backoff(10, 0.0), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, 0.5), MAX_BACKOFF);
    }

    #[test]
    fn a_destination_without_its_secret_is_named_and_left_out() {
        let mut connector = Connector::new("default", "/x", chrono_tz::UTC);
        connector.deliver = vec![
            Destination::new("crm", "https://crm.example.com", "CRM_SECRET"),
            Destination::new("dwh", "https://dwh.example.com", "DWH_SECRET"),
        ];
        let env = |name: &str| (name == "CRM_SECRET").then(|| "0123456789abcdef".to_string());
        let (targets, missing) = Target::all(&[connector], env);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].settings.name, "crm");
        assert_eq!(missing.len(), 1);
        assert_eq!(
            (missing[0].0.as_str(), missing[0].1.as_str()),
            ("default", "dwh")
        );
        assert!(missing[0].2.contains("DWH_SECRET"), "{missing:?}");
    }
}
