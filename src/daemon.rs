//! The daemon: the scheduler's loop, the runs it and the admin API start (one per
//! connector at a time, a bounded number at once), and the shutdown that lets them
//! finish within a grace period or rolls them back.

use crate::clock::Clock;
use crate::config::{Connector, Settings};
use crate::progress::Silent;
use crate::run::Trigger;
use crate::schedule::{CLAIM_LEASE, CLAIM_RENEWAL, Due, Scheduler, Timetable};
use crate::source::AnySource;
use crate::store::{Backend, SlotClaim, Store, StoreError};
use crate::sync::{Job, OpenRun, RunOptions};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

/// Why a run could not be started now.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No connector of that id is configured.
    #[error("no connector {0:?} is configured")]
    UnknownConnector(String),
    /// A run of the connector is in flight.
    #[error("a run of connector {0:?} is in flight; try again when it has finished")]
    Busy(String),
    /// The daemon is stopping and takes no more work.
    #[error("the daemon is shutting down and starts no more runs")]
    ShuttingDown,
    /// The run's ledger row could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One configured connector and what its runs need.
struct Feed {
    settings: Connector,
    source: AnySource,
    /// Held for the length of a run: one run per connector at a time.
    busy: Arc<Mutex<()>>,
}

/// The daemon's shared state: what runs, and what may still start.
pub struct Daemon<B: Backend> {
    store: Arc<Store<B>>,
    feeds: BTreeMap<String, Feed>,
    /// Bounds the runs of different connectors in flight at once.
    permits: Semaphore,
    clock: Arc<dyn Clock>,
    /// Every run in flight; closed when the daemon stops taking work.
    runs: TaskTracker,
    /// Fired when the shutdown grace period is over: runs still going roll back.
    abort: CancellationToken,
    /// When the scheduler last looked at the clock (Unix seconds); 0 before it did.
    heartbeat: AtomicI64,
    scheduler: Scheduler,
}

impl<B: Backend> Daemon<B> {
    /// A daemon for these settings, with the sources of its connectors built.
    pub fn new(
        settings: &Settings,
        store: Arc<Store<B>>,
        sources: Vec<AnySource>,
        clock: Arc<dyn Clock>,
        holder: String,
    ) -> Daemon<B> {
        let feeds: BTreeMap<String, Feed> = settings
            .connectors
            .iter()
            .cloned()
            .zip(sources)
            .map(|(settings, source)| {
                let feed = Feed {
                    settings,
                    source,
                    busy: Arc::new(Mutex::new(())),
                };
                (feed.settings.id.clone(), feed)
            })
            .collect();
        let scheduler = Scheduler::new(
            Timetable::new(&settings.schedule),
            feeds.keys().cloned().collect(),
            holder,
        );
        Daemon {
            store,
            feeds,
            permits: Semaphore::new(settings.daemon.max_concurrent_runs),
            clock,
            runs: TaskTracker::new(),
            abort: CancellationToken::new(),
            heartbeat: AtomicI64::new(0),
            scheduler,
        }
    }

    /// The trait store.
    pub fn store(&self) -> &Store<B> {
        &self.store
    }

    /// The configured connectors, by id.
    pub fn connectors(&self) -> impl Iterator<Item = &Connector> {
        self.feeds.values().map(|feed| &feed.settings)
    }

    /// When the schedule runs.
    pub fn timetable(&self) -> &Timetable {
        self.scheduler.timetable()
    }

    /// The daemon's clock's now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Today in the zone of the connector, if it is configured.
    pub fn today(&self, id: &str) -> Option<chrono::NaiveDate> {
        let feed = self.feeds.get(id)?;
        Some(feed.settings.today(self.clock.now()))
    }

    /// Whether the scheduler looked at the clock recently and the daemon takes work.
    pub fn scheduler_alive(&self) -> bool {
        let last = self.heartbeat.load(Ordering::Relaxed);
        let limit = 2 * crate::schedule::MAX_SLEEP.as_secs() as i64 + 30;
        !self.runs.is_closed() && last > 0 && self.clock.now().timestamp() - last <= limit
    }

    /// Starts a run of a connector now (the admin API); returns its ledger id once its
    /// row is written, while the run goes on.
    pub async fn start_now(self: &Arc<Self>, connector: &str) -> Result<i64, StartError> {
        let feed = self
            .feeds
            .get(connector)
            .ok_or_else(|| StartError::UnknownConnector(connector.to_string()))?;
        let guard = feed
            .busy
            .clone()
            .try_lock_owned()
            .map_err(|_| StartError::Busy(connector.to_string()))?;
        if self.runs.is_closed() {
            return Err(StartError::ShuttingDown);
        }
        let options = RunOptions {
            trigger: Trigger::Api,
            ..RunOptions::default()
        };
        let run = self.job(feed).begin(&options).await?;
        let id = run.id();
        let this = Arc::clone(self);
        let connector = connector.to_string();
        self.runs.spawn(async move {
            if let Some(feed) = this.feeds.get(&connector) {
                this.execute(feed, run, &options, guard).await;
            }
        });
        Ok(id)
    }

    /// Starts the run of a slot whose claim this daemon won, keeping the claim alive
    /// while it waits for its connector and runs.
    fn start_scheduled(self: &Arc<Self>, due: Due) {
        let this = Arc::clone(self);
        self.runs.spawn(async move {
            let Some(feed) = this.feeds.get(&due.connector) else {
                return;
            };
            let label = due.slot.label();
            let work = async {
                let guard = tokio::select! {
                    guard = feed.busy.clone().lock_owned() => guard,
                    () = this.abort.cancelled() => return false,
                };
                let options = RunOptions {
                    trigger: Trigger::Schedule,
                    scheduled_for: Some(label.clone()),
                    ..RunOptions::default()
                };
                match this.job(feed).begin(&options).await {
                    Ok(run) => this.execute(feed, run, &options, guard).await,
                    Err(e) => {
                        // Busy (a run of it elsewhere) or a store failure: the claim is
                        // released and the next look at the clock tries again.
                        warn!(connector = %due.connector, scheduled_for = %label,
                            "the scheduled run cannot start: {e}; it is tried again within a minute");
                        false
                    }
                }
            };
            let claim = SlotClaim {
                connector: &due.connector,
                slot: &label,
                holder: this.scheduler.holder(),
            };
            let ran = tokio::select! {
                ran = work => ran,
                () = this.renew_claim(claim) => false,
            };
            let settled = if ran {
                this.store.settle_claim(claim).await
            } else {
                this.store.release_claim(claim).await
            };
            if let Err(e) = settled {
                warn!(connector = %due.connector, scheduled_for = %label,
                    "cannot record the end of the scheduled run's claim: {e}; its lease expires in {} s",
                    CLAIM_LEASE.as_secs());
            }
        });
    }

    /// Keeps a claim alive; never returns.
    async fn renew_claim(&self, claim: SlotClaim<'_>) {
        let (connector, label) = (claim.connector, claim.slot);
        loop {
            tokio::time::sleep(CLAIM_RENEWAL).await;
            let until = self.clock.now() + TimeDelta::from_std(CLAIM_LEASE).unwrap_or_default();
            match self.store.renew_claim(claim, until).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        connector,
                        scheduled_for = label,
                        "the claim on this scheduled run was taken over"
                    )
                }
                Err(e) => warn!(
                    connector,
                    scheduled_for = label,
                    "cannot renew the claim: {e}"
                ),
            }
        }
    }

    /// Runs an opened run to its end, or rolls it back if the shutdown's grace period
    /// ends first. Returns whether it ran to its end.
    async fn execute(
        &self,
        feed: &Feed,
        run: OpenRun<B::Lock>,
        options: &RunOptions,
        _busy: OwnedMutexGuard<()>,
    ) -> bool {
        let id = run.id();
        let span = info_span!("run", connector = %feed.settings.id, run_id = id, trigger = options.trigger.as_str());
        async {
            let _permit = tokio::select! {
                permit = self.permits.acquire() => permit,
                () = self.abort.cancelled() => {
                    self.abandon(id, "the daemon stopped before the run could start; nothing was applied").await;
                    return false;
                }
            };
            info!("run started");
            let job = self.job(feed);
            tokio::select! {
                result = job.run_begun(run, options) => {
                    if let Err(stopped) = result {
                        error!(runs_ended = stopped.reports.len(), "the run stopped, the store failed: {}", stopped.error);
                        if let Some(unclosed) = stopped.unclosed {
                            self.abandon(unclosed, &format!("the store failed: {}; nothing was applied", stopped.error)).await;
                        }
                    }
                    true
                }
                () = self.abort.cancelled() => {
                    warn!("shutdown grace period over: the run is rolled back");
                    self.abandon(id, "stopped by the daemon's shutdown before it finished; nothing was applied, the next run applies the export").await;
                    false
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn abandon(&self, run_id: i64, message: &str) {
        if let Err(e) = self
            .store
            .abandon_run(run_id, message, self.clock.now())
            .await
        {
            warn!(
                run_id,
                "cannot close the ledger row of the stopped run: {e}"
            );
        }
    }

    fn job<'a>(&'a self, feed: &'a Feed) -> Job<'a, B, AnySource> {
        Job {
            store: &self.store,
            source: &feed.source,
            connector: &feed.settings,
            clock: &*self.clock,
            progress: &Silent,
        }
    }

    /// The scheduler's loop: looks at the clock at every slot and at least once a
    /// minute, starts what is due, until `stop` fires.
    pub async fn schedule(self: Arc<Self>, stop: CancellationToken) {
        let timetable = self.scheduler.timetable().clone();
        loop {
            let now = self.clock.now();
            match self.scheduler.tick(&*self.store, now).await {
                Ok(due) => {
                    for due in due {
                        info!(connector = %due.connector, scheduled_for = %due.slot.label(), "scheduled run due");
                        self.start_scheduled(due);
                    }
                }
                Err(e) => warn!(
                    "cannot claim the scheduled runs, the store failed: {e}; trying again within a minute"
                ),
            }
            self.heartbeat.store(now.timestamp(), Ordering::Relaxed);
            if let Some(next) = timetable.next_after(now) {
                for id in self.feeds.keys() {
                    crate::metrics::next_run(id, next.at);
                }
            }
            let wait = until(timetable.next_check(now), self.clock.now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Stops taking work and waits for the runs in flight; those still going after
    /// `grace` are rolled back.
    pub async fn drain(&self, grace: Duration) {
        self.runs.close();
        if self.runs.is_empty() {
            return;
        }
        info!(
            runs = self.runs.len(),
            grace_s = grace.as_secs(),
            "waiting for the runs in flight"
        );
        if tokio::time::timeout(grace, self.runs.wait()).await.is_err() {
            self.abort.cancel();
            self.runs.wait().await;
        }
    }
}

fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default()
}

/// Runs the daemon until `shutdown` completes: the scheduler, and `serve` (the admin
/// server, which must stop when its token fires). Then drains the runs in flight.
pub async fn run<B: Backend>(
    daemon: Arc<Daemon<B>>,
    grace: Duration,
    serve: impl FnOnce(CancellationToken) -> tokio::task::JoinHandle<()>,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let scheduler = tokio::spawn(Arc::clone(&daemon).schedule(stop.clone()));
    let server = serve(stop.clone());
    shutdown.await;
    info!(
        "shutting down: no new runs; runs in flight get {} s to finish",
        grace.as_secs()
    );
    stop.cancel();
    // The scheduler first, so that no scheduled run starts once the runs are drained.
    let _ = scheduler.await;
    daemon.drain(grace).await;
    let _ = server.await;
    info!("stopped");
}
