//! One run of one connector: choose the export, detect change, stream and validate it
//! into staging, check the guards, apply it with the ledger in one transaction.
//!
//! Every run leaves a ledger row and a report, whatever happens; only a store that
//! cannot write its ledger stops a connector's runs, with the reports of those that
//! ended before it ([`Stopped`]).
//!
//! The story, in order: [`Job::begin`] takes the connector's lock and opens the ledger
//! row; `prepare` keeps the offer map and chooses the exports, or ends the run early
//! (one way: `Early`); for each export, `apply_object` skips an object applied
//! before, `read` streams it through the checker into staging (the row loop is
//! `tally.rs`), `decide` stops it or plans it (the guards are `guards.rs`), and
//! `close` ends the run, applying the plan in the ledger row's own transaction.

mod choose;
mod error;
mod guards;
mod open;
mod tally;

pub use open::OpenRun;

use crate::clock::Clock;
use crate::config::Connector;
use crate::export::{ContentDigest, ExportReader};
use crate::progress::Progress;
use crate::run::{ChangeCounts, Mode, ObjectInfo, Outcome, Rejection, RunReport, Trigger};
use crate::source::{ObjectMeta, Source, sort_oldest_first};
use crate::store::{AcceptedObject, Backend, RunLock, RunStart, Staging, Store, StoreError};
use choose::{pending_deltas, same_as};
use error::RunError;
use std::time::Instant;
use tally::Tally;
use tracing::{debug, error, info, warn};

/// How long a run waits for its connector's lock: a refresh holds it for the
/// milliseconds of its write (waited out); another run for its length (busy).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// A long read says how far it got (at debug level) every this many rows.
const LOG_EVERY_ROWS: u64 = 50_000;

/// How this run was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// What started it.
    pub trigger: Trigger,
    /// The local time it was scheduled for (scheduled runs).
    pub scheduled_for: Option<String>,
    /// Compute everything, apply nothing.
    pub dry_run: bool,
    /// Apply even an unchanged export.
    pub force: bool,
    /// Lift the guards for this run.
    pub no_guards: bool,
    /// Apply this object instead of the newest.
    pub object: Option<String>,
}

/// One connector's sync: the things a run works with, borrowed for its length.
pub struct Job<'a, B: Backend, Src> {
    /// The trait store and ledger.
    pub store: &'a Store<B>,
    /// Where the connector's exports are.
    pub source: &'a Src,
    /// The connector's settings.
    pub connector: &'a Connector,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

impl<B: Backend, Src: Source> Job<'_, B, Src> {
    /// Runs the connector once: one run in snapshot mode, one per new export in delta
    /// mode (stopping at the first that is not applied).
    pub async fn run(&self, options: &RunOptions) -> Result<Vec<RunReport>, Stopped> {
        let run = self.begin(options).await.map_err(|error| Stopped {
            reports: Vec::new(),
            error,
            unclosed: None,
        })?;
        self.run_begun(run, options).await
    }

    /// Opens the ledger row of a run, so that its id is known before it goes on
    /// (the admin API answers with it).
    /// The connector's run lock is taken first: if another run holds it, nothing is
    /// written and the answer is [`StoreError::Busy`].
    pub async fn begin(&self, options: &RunOptions) -> Result<OpenRun<B::Lock>, StoreError> {
        let lock = self
            .store
            .lock_connector_within(&self.connector.id, LOCK_PATIENCE)
            .await?
            .ok_or_else(|| StoreError::Busy(self.connector.id.clone()))?;
        let mut run = OpenRun {
            id: 0,
            connector: self.connector.id.clone(),
            started: Instant::now(),
            lock,
        };
        self.open_ledger_row(&mut run, options).await?;
        Ok(run)
    }

    /// [`Job::run`] for a run whose ledger row [`Job::begin`] opened. The connector's
    /// lock is held until every export of this run is done.
    pub async fn run_begun(
        &self,
        mut run: OpenRun<B::Lock>,
        options: &RunOptions,
    ) -> Result<Vec<RunReport>, Stopped> {
        let mut reports = Vec::new();
        let done = self.each_export(&mut run, options, &mut reports).await;
        run.lock.release().await;
        match done {
            Ok(()) => Ok(reports),
            Err(error) => {
                // The ledger row the store failed on, unless it was closed (its report
                // is the last) or never opened (the next delta's could not be).
                let unclosed = (reports.last().map(|r| r.run_id) != Some(run.id)).then_some(run.id);
                Err(Stopped {
                    reports,
                    error,
                    unclosed,
                })
            }
        }
    }

    /// Gives the run a ledger row of its own.
    async fn open_ledger_row(
        &self,
        run: &mut OpenRun<B::Lock>,
        options: &RunOptions,
    ) -> Result<(), StoreError> {
        run.started = Instant::now();
        run.id = self
            .store
            .begin_run(&RunStart {
                connector: self.connector.id.clone(),
                trigger: options.trigger,
                scheduled_for: options.scheduled_for.clone(),
                started_at: self.clock.now(),
            })
            .await?;
        debug!(connector = %self.connector.id, run_id = run.id, "run started");
        Ok(())
    }

    /// The story of a run: choose the exports, then each one from download to commit,
    /// each with its report (and, after the first, its own ledger row).
    async fn each_export(
        &self,
        run: &mut OpenRun<B::Lock>,
        options: &RunOptions,
        reports: &mut Vec<RunReport>,
    ) -> Result<(), StoreError> {
        let (objects, mut last) = match self.prepare(options).await {
            Ok(chosen) => chosen,
            Err(Early { outcome, message }) => {
                let report = run.report(outcome, Some(message));
                reports.push(self.close(run, report, Ending::Record(&[])).await?);
                return Ok(());
            }
        };
        for (i, object) in objects.iter().enumerate() {
            if i > 0 {
                self.open_ledger_row(run, options).await?;
            }
            let report = self
                .apply_object(run, object, last.as_ref(), options)
                .await?;
            let outcome = report.outcome;
            if let (Outcome::Applied | Outcome::Unchanged, Some(sha256)) = (
                outcome,
                report.object.as_ref().and_then(|o| o.sha256.clone()),
            ) {
                last = Some(AcceptedObject {
                    key: object.key.clone(),
                    etag: object.etag.clone(),
                    sha256,
                });
            }
            reports.push(report);
            if !matches!(
                outcome,
                Outcome::Applied | Outcome::Unchanged | Outcome::DryRun
            ) {
                break;
            }
        }
        Ok(())
    }

    /// What comes before any export: the offer map kept, the exports chosen (with the
    /// last accepted one to compare with); or why the run ends before reading any.
    async fn prepare(
        &self,
        options: &RunOptions,
    ) -> Result<(Vec<ObjectMeta>, Option<AcceptedObject>), Early> {
        // The map is configuration, not export: kept current by every run that writes,
        // so that `offer_plan` follows it even when no new export comes.
        if !options.dry_run
            && let Err(e) = self
                .store
                .keep_offers(&self.connector.id, &self.connector.offers)
                .await
        {
            return Err(Early::failed(format!(
                "the offer map could not be stored, nothing was applied: {e}"
            )));
        }
        self.choose(options).await
    }

    /// Which exports this run looks at, and the last accepted one to compare with; or,
    /// when there is none to read, how the run ends.
    async fn choose(&self, options: &RunOptions) -> Chosen {
        let mut objects = self.source.list().await?;
        sort_oldest_first(&mut objects);
        let last = self.store.last_accepted(&self.connector.id).await?;
        if let Some(key) = &options.object {
            let object = objects.into_iter().find(|o| &o.key == key).ok_or_else(|| {
                RunError::NoSuchObject {
                    key: key.clone(),
                    location: self.source.location(),
                }
            })?;
            return Ok((vec![object], last));
        }
        let Some(newest) = objects.last().cloned() else {
            return Err(Early {
                outcome: Outcome::NoExport,
                message: format!("no .csv or .csv.gz export under {}", self.source.location()),
            });
        };
        let chosen = match self.connector.mode {
            Mode::Snapshot => vec![newest],
            Mode::Delta => match pending_deltas(objects, last.as_ref()) {
                // --force with nothing new re-applies the newest, as in snapshot mode.
                pending if pending.is_empty() && options.force => vec![newest],
                pending => pending,
            },
        };
        if chosen.is_empty() {
            return Err(Early {
                outcome: Outcome::Unchanged,
                message: "every export was applied already".into(),
            });
        }
        Ok((chosen, last))
    }

    /// One export, from download to commit.
    async fn apply_object(
        &self,
        run: &OpenRun<B::Lock>,
        object: &ObjectMeta,
        last: Option<&AcceptedObject>,
        options: &RunOptions,
    ) -> Result<RunReport, StoreError> {
        let mut info = ObjectInfo {
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: Some(object.size),
            sha256: None,
        };
        let last = last.filter(|_| !options.force);
        // The same object as last time: not even downloaded.
        if let Some(last) = last.filter(|last| same_as(last, object, None)) {
            info.sha256 = Some(last.sha256.clone());
            let mut report = run.report(
                Outcome::Unchanged,
                Some("the newest export was applied already".into()),
            );
            report.object = Some(info);
            return self.close(run, report, Ending::Record(&[])).await;
        }
        let mut tally = Tally::default();
        let limit = self.connector.run_timeout;
        let attempt = tokio::time::timeout(
            limit,
            self.read_and_decide(run.id, object, last, options, &mut info, &mut tally),
        )
        .await
        .unwrap_or_else(|_| {
            Err(RunError::TimedOut {
                key: object.key.clone(),
                limit: humantime::format_duration(limit).to_string(),
            })
        });
        // However the read ended, the bar goes (it started inside).
        self.progress.finish();
        let (outcome, message, changes, staging) = Decision::parts(attempt);
        let mut report = run.report(outcome, message);
        report.object = Some(info);
        report.rows = tally.rows;
        report.warnings = tally.warnings;
        report.changes = changes;
        // A failed run keeps no rejections: its rows were not all read.
        if outcome == Outcome::Failed {
            tally.rejections.clear();
        }
        let ending = match staging {
            Some(staging) => Ending::Apply {
                staging,
                rejections: &tally.rejections,
            },
            None => Ending::Record(&tally.rejections),
        };
        self.close(run, report, ending).await
    }

    /// Reads the export into staging, then decides what to do with it (returning early discards it).
    async fn read_and_decide(
        &self,
        run_id: i64,
        object: &ObjectMeta,
        last: Option<&AcceptedObject>,
        options: &RunOptions,
        info: &mut ObjectInfo,
        tally: &mut Tally,
    ) -> Result<Decision<B>, RunError> {
        let (staging, digest) = self.read(run_id, object, tally).await?;
        info.sha256 = Some(digest.sha256.clone());
        self.decide(staging, object, &digest, last, options, tally)
            .await
    }

    /// Streams the export through the checker into staging (a first load: the traits); its digest.
    async fn read(
        &self,
        run_id: i64,
        object: &ObjectMeta,
        tally: &mut Tally,
    ) -> Result<(Staging<B>, ContentDigest), RunError> {
        let connector = self.connector;
        let rules = connector.rules(self.clock.now());
        let body = self.source.open(object).await?;
        self.progress.start(&object.key, object.size);
        let mut batches = ExportReader::open(body, object.is_gzip(), &connector.columns, rules)
            .await?
            .read_ahead();
        let mut staging = self
            .store
            .staging(&connector.id, object.size, Some(object.last_modified))
            .await?;
        staging.write_directly(run_id, self.clock.now()).await?;
        debug!(connector = %connector.id, object = %object.key, size = object.size, "reading");
        while let Some(batch) = batches.next().await? {
            let before = tally.rows.read;
            tally.take(batch.records, &mut staging).await?;
            self.progress.advance(batch.body_bytes, tally.rows.read);
            if before / LOG_EVERY_ROWS != tally.rows.read / LOG_EVERY_ROWS {
                debug!(connector = %connector.id, rows = tally.rows.read, "reading");
            }
        }
        let digest = batches.finish().await?;
        if digest.body_bytes != object.size {
            return Err(RunError::Truncated {
                key: object.key.clone(),
                got: digest.body_bytes,
                expected: object.size,
            });
        }
        if !tally.warnings.is_empty() {
            warn!(connector = %connector.id, warnings = %tally.warnings, "valid rows with warnings; `cleeng-sync validate` lists them");
        }
        Ok((staging, digest))
    }

    /// What to do with an export read whole: nothing (the content applied last, an
    /// empty snapshot, a guard's refusal, a dry run), or apply its plan.
    async fn decide(
        &self,
        mut staging: Staging<B>,
        object: &ObjectMeta,
        digest: &ContentDigest,
        last: Option<&AcceptedObject>,
        options: &RunOptions,
        tally: &mut Tally,
    ) -> Result<Decision<B>, RunError> {
        let connector = self.connector;
        let stop = if let Some(last) = last.filter(|l| same_as(l, object, Some(&digest.sha256))) {
            Some((
                Outcome::Unchanged,
                format!("same content as {}, applied already", last.key),
            ))
        } else if connector.mode == Mode::Snapshot && tally.rows.read == 0 {
            let why = "empty export: a header and no rows; a snapshot with no subscribers is never applied";
            Some((Outcome::Refused, why.to_string()))
        } else {
            None
        };
        if let Some((outcome, message)) = stop {
            staging.discard().await;
            return Ok(Decision::stop(
                outcome,
                Some(message),
                ChangeCounts::default(),
            ));
        }
        debug!(connector = %connector.id, rows = tally.rows.read, "export read; planning");
        let plan = staging.plan(connector.mode).await?;
        tally.rows.valid -= plan.duplicate_rows;
        tally.rows.rejected += plan.duplicate_rows;
        tally.keep(plan.duplicates);
        tally.rejections.sort_by_key(|r| r.record);
        let changes = plan.changes;
        let refusal = (!options.no_guards)
            .then(|| guards::refusal(&connector.guards, tally.rows, changes, plan.present))
            .flatten();
        if let Some(message) = refusal {
            staging.discard().await;
            return Ok(Decision::stop(Outcome::Refused, Some(message), changes));
        }
        if options.dry_run {
            staging.discard().await;
            return Ok(Decision::stop(Outcome::DryRun, None, changes));
        }
        Ok(Decision::Apply {
            staging: Box::new(staging),
            changes,
        })
    }

    /// Ends a run, the one way every run ends: its ledger row closed (in the apply's
    /// own transaction when it applies), its outcome logged and counted. An apply that
    /// fails rolls back and is recorded as a failed run that changed nothing, its plan
    /// kept as `planned`.
    async fn close(
        &self,
        run: &OpenRun<B::Lock>,
        mut report: RunReport,
        ending: Ending<'_, B>,
    ) -> Result<RunReport, StoreError> {
        let rejections = match ending {
            Ending::Record(rejections) => rejections,
            Ending::Apply {
                staging,
                rejections,
            } => {
                debug!(connector = %self.connector.id, run_id = report.run_id, "applying");
                match staging.apply(&report, rejections, self.clock).await {
                    Ok(()) => {
                        // The ledger's duration is its finished_at less started_at; the
                        // report's is measured here, the apply included.
                        report.duration_ms = run.elapsed_ms();
                        self.announce(&report);
                        return Ok(report);
                    }
                    Err(e) => {
                        let planned = std::mem::take(&mut report.changes);
                        report.outcome = Outcome::Failed;
                        report.message = Some(format!(
                            "applying failed and was rolled back, nothing changed \
                             (planned: {} inserted, {} updated, {} unchanged, {} removed): {e}",
                            planned.inserted, planned.updated, planned.unchanged, planned.removed
                        ));
                        report.planned = Some(planned);
                        if e.is_bug() {
                            error!(connector = %self.connector.id, run_id = report.run_id, "{e}");
                        }
                        rejections
                    }
                }
            }
        };
        report.duration_ms = run.elapsed_ms();
        self.store
            .close_run(&report, rejections, self.clock.now())
            .await?;
        self.announce(&report);
        Ok(report)
    }

    /// Says how a run ended, in the logs and the metrics.
    fn announce(&self, report: &RunReport) {
        crate::metrics::run_finished(report, self.clock.now());
        let key = report
            .object
            .as_ref()
            .map(|o| o.key.as_str())
            .unwrap_or("-");
        let message = report.message.as_deref().unwrap_or("");
        match report.outcome {
            Outcome::Failed | Outcome::Refused => warn!(
                connector = %report.connector, run_id = report.run_id, outcome = %report.outcome, object = key,
                "run {}: {message}", report.outcome
            ),
            _ => info!(
                connector = %report.connector, run_id = report.run_id, outcome = %report.outcome, object = key,
                read = report.rows.read, rejected = report.rows.rejected,
                inserted = report.changes.inserted, updated = report.changes.updated,
                removed = report.changes.removed, duration_ms = report.duration_ms,
                "run {}", report.outcome
            ),
        }
    }
}

/// A connector's runs stopped by a store that failed: the reports of the runs that
/// ended before it, and why the next could not go on.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Stopped {
    /// The runs that ended, in order; each is in the ledger.
    pub reports: Vec<RunReport>,
    /// What the store said.
    #[source]
    pub error: StoreError,
    /// The run whose ledger row was left `running`, if one was.
    pub unclosed: Option<i64>,
}

/// The exports a run reads, with the last accepted one; or how it ends without any.
type Chosen = Result<(Vec<ObjectMeta>, Option<AcceptedObject>), Early>;

/// A run that ends before it reads an export: the one way to end early.
struct Early {
    outcome: Outcome,
    message: String,
}

impl Early {
    fn failed(message: String) -> Early {
        Early {
            outcome: Outcome::Failed,
            message,
        }
    }
}

/// A source, store or export that fails before any export is read ends the run `failed`.
impl<E: Into<RunError>> From<E> for Early {
    fn from(e: E) -> Early {
        Early::failed(e.into().to_string())
    }
}

/// How a run ends: recording its ledger row, or applying the staged export together
/// with it.
enum Ending<'a, B: Backend> {
    Record(&'a [Rejection]),
    Apply {
        staging: Box<Staging<B>>,
        rejections: &'a [Rejection],
    },
}

enum Decision<B: Backend> {
    Apply {
        staging: Box<Staging<B>>,
        changes: ChangeCounts,
    },
    Stop {
        outcome: Outcome,
        message: Option<String>,
        changes: ChangeCounts,
    },
}

/// A decision's parts as the run's report takes them; a run that could not decide
/// failed.
type Parts<B> = (
    Outcome,
    Option<String>,
    ChangeCounts,
    Option<Box<Staging<B>>>,
);

impl<B: Backend> Decision<B> {
    fn stop(outcome: Outcome, message: Option<String>, changes: ChangeCounts) -> Decision<B> {
        Decision::Stop {
            outcome,
            message,
            changes,
        }
    }

    fn parts(decided: Result<Decision<B>, RunError>) -> Parts<B> {
        match decided {
            Ok(Decision::Apply { staging, changes }) => {
                (Outcome::Applied, None, changes, Some(staging))
            }
            Ok(Decision::Stop {
                outcome,
                message,
                changes,
            }) => (outcome, message, changes, None),
            Err(e) => (
                Outcome::Failed,
                Some(e.to_string()),
                ChangeCounts::default(),
                None,
            ),
        }
    }
}
