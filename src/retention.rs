//! The change feed's retention: once a day (and at start) the daemon deletes each
//! connector's changes older than its `changes_retention`, a small batch at a time, so
//! that neither the feed nor the traits are held for long, and a consumer reading pages
//! meanwhile is never blocked.

use crate::clock::Clock;
use crate::config::Connector;
use crate::store::{Backend, Store};
use chrono::TimeDelta;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Changes deleted by one statement.
pub const BATCH: u32 = 5_000;
/// The pause between two batches: other writers get the store in between.
const BREATHE: Duration = Duration::from_millis(50);
/// How often the feed is pruned.
const EVERY: Duration = Duration::from_secs(24 * 3600);

/// Prunes every connector's feed now and then once a day, until `stop` fires.
pub async fn prune_daily<B: Backend>(
    store: Arc<Store<B>>,
    connectors: Vec<Connector>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    loop {
        for connector in &connectors {
            let days = i64::from(connector.changes_retention_days);
            let before = clock.now() - TimeDelta::days(days);
            match prune(&store, &connector.id, before, &stop).await {
                Ok(0) => {}
                Ok(deleted) => info!(connector = %connector.id, deleted, retention_days = days,
                    "change feed pruned"),
                Err(e) => warn!(connector = %connector.id,
                    "cannot prune the change feed: {e}; trying again tomorrow"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Deletes the connector's changes written before `before`, batch by batch; how many.
async fn prune<B: Backend>(
    store: &Store<B>,
    connector: &str,
    before: chrono::DateTime<chrono::Utc>,
    stop: &CancellationToken,
) -> Result<u64, crate::store::StoreError> {
    let mut deleted = 0;
    loop {
        let batch = store.prune_changes(connector, before, BATCH).await?;
        deleted += batch;
        if batch < u64::from(BATCH) || stop.is_cancelled() {
            return Ok(deleted);
        }
        tokio::time::sleep(BREATHE).await;
    }
}
