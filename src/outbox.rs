//! The outbox: the daemon's loop that delivers the change feed to each destination of
//! `[[connector.deliver]]` (the steps themselves are [`crate::deliver`]'s).
//!
//! Each destination is polled every `poll` (5 s by default); a full batch is followed by
//! the next at once, a failed one after its backoff. The lag and stopped gauges are set
//! from the store after each look, so that every replica reports the same figures
//! whichever of them delivers. A stop lets the batch on its way end, then gives the
//! destinations back so that a replica takes over without waiting for the lease.

use crate::clock::{Clock, seconds_since};
use crate::deliver::{Courier, Step, Target};
use crate::store::{Backend, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Delivers to every target until `stop` fires.
pub async fn work<B: Backend>(
    courier: Arc<Courier<B>>,
    targets: Vec<Target>,
    store: Arc<Store<B>>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
    let poll = targets
        .iter()
        .map(|t| t.settings.poll)
        .min()
        .unwrap_or(Duration::from_secs(5));
    // The rows first: a destination's cursor starts when it is first seen.
    while let Err(e) = courier.open(&targets).await {
        warn!("cannot record the change feed's destinations, the store failed: {e}; trying again");
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = stop.cancelled() => return,
        }
    }
    let loops: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let looked = Look {
                store: Arc::clone(&store),
                clock: Arc::clone(&clock),
            };
            tokio::spawn(deliver_to(
                Arc::clone(&courier),
                target,
                looked,
                stop.clone(),
            ))
        })
        .collect();
    for one in loops {
        let _ = one.await;
    }
    if let Err(e) = courier.release().await {
        warn!(
            "cannot give the change feed's destinations back: {e}; a replica takes them once the lease passes"
        );
    }
}

/// Delivers to one destination until `stop` fires.
async fn deliver_to<B: Backend>(
    courier: Arc<Courier<B>>,
    target: Target,
    look: Look<B>,
    stop: CancellationToken,
) {
    let (connector, name) = (target.connector.as_str(), target.settings.name.as_str());
    crate::metrics::register_destination(connector, name);
    let poll = target.settings.poll;
    while !stop.is_cancelled() {
        let wait = match courier.step(&target).await {
            Ok(Step::Delivered { full: true, .. } | Step::PassedOver) => Duration::ZERO,
            Ok(Step::Retrying { after }) => after.min(poll),
            Ok(Step::Idle | Step::Delivered { .. } | Step::Stopped) => poll,
            Err(e) => {
                warn!(
                    connector,
                    destination = name,
                    "cannot deliver the change feed, the store failed: {e}; trying again shortly"
                );
                poll
            }
        };
        look.gauges(connector, name).await;
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Reads a destination's state for its gauges.
struct Look<B: Backend> {
    store: Arc<Store<B>>,
    clock: Arc<dyn Clock>,
}

impl<B: Backend> Look<B> {
    async fn gauges(&self, connector: &str, name: &str) {
        let states = match self.store.deliveries(Some(connector)).await {
            Ok(states) => states,
            Err(e) => {
                warn!(
                    connector,
                    destination = name,
                    "cannot read the destination's state: {e}"
                );
                return;
            }
        };
        let Some(state) = states.iter().find(|s| s.destination == name) else {
            return;
        };
        let lag = seconds_since(self.clock.now(), state.pending_since.as_deref());
        crate::metrics::delivery_state(connector, name, lag, state.stopped_at.is_some());
    }
}
