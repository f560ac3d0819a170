//! One run of one connector: choose the export, detect change, stream and validate it
//! into staging, check the guards, apply it with the ledger in one transaction.
//!
//! Every run leaves a ledger row and a report, whatever happens; only a store that
//! cannot write its ledger stops a connector's runs, with the reports of those that
//! ended before it ([`Stopped`]).

use crate::clock::Clock;
use crate::config::Connector;
use crate::export::{Checked, ExportError, ExportReader};
use crate::progress::Progress;
use crate::run::{
    ChangeCounts, Mode, ObjectInfo, Outcome, Rejection, RowCounts, RunReport, Trigger,
    WarningCounts,
};
use crate::source::{ObjectMeta, Source, SourceError, sort_oldest_first};
use crate::store::{
    AcceptedObject, Backend, REJECTION_CAP, RunLock, RunStart, Staging, Store, StoreError,
};
use std::time::Instant;
use tracing::{debug, error, info, warn};

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

/// What stops a run; each becomes the `message` of a `failed` run.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; nothing was applied")]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no export {key:?} under {location}; check the key, or omit --object to take the newest"
    )]
    NoSuchObject { key: String, location: String },
    #[error(
        "the download of {key} ended after {got} of {expected} bytes; nothing was applied, the next run retries"
    )]
    Truncated {
        key: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "reading and checking {key} took longer than run_timeout ({limit}); nothing was applied: \
         check the network to the source, or raise connector.run_timeout for very large exports"
    )]
    TimedOut { key: String, limit: String },
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
            .lock_connector(&self.connector.id)
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
        // The map is configuration, not export: kept current by every run that writes,
        // so that `offer_plan` follows it even when no new export comes.
        if !options.dry_run
            && let Err(e) = self
                .store
                .keep_offers(&self.connector.id, &self.connector.offers)
                .await
        {
            let message = format!("the offer map could not be stored, nothing was applied: {e}");
            let report = run.report(Outcome::Failed, Some(message));
            reports.push(self.close(run, report, Ending::Record(&[])).await?);
            return Ok(());
        }
        let (objects, mut last) = match self.choose(options).await {
            Ok(Chosen::Objects(objects, last)) => (objects, last),
            Ok(Chosen::Nothing { outcome, message }) => {
                let report = run.report(outcome, Some(message));
                reports.push(self.close(run, report, Ending::Record(&[])).await?);
                return Ok(());
            }
            Err(e) => {
                let report = run.report(Outcome::Failed, Some(e.to_string()));
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

    /// Which exports this run looks at, and the last accepted one to compare with.
    async fn choose(&self, options: &RunOptions) -> Result<Chosen, RunError> {
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
            return Ok(Chosen::Objects(vec![object], last));
        }
        let Some(newest) = objects.last().cloned() else {
            return Ok(Chosen::Nothing {
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
            return Ok(Chosen::Nothing {
                outcome: Outcome::Unchanged,
                message: "every export was applied already".into(),
            });
        }
        Ok(Chosen::Objects(chosen, last))
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
            self.stream_and_decide(object, last, options, &mut info, &mut tally),
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
        let (outcome, message, changes, staging) = match attempt {
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
        };
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

    /// Streams the export into staging, then decides what to do with it. Dropping the
    /// staging area on any early return discards it.
    async fn stream_and_decide(
        &self,
        object: &ObjectMeta,
        last: Option<&AcceptedObject>,
        options: &RunOptions,
        info: &mut ObjectInfo,
        tally: &mut Tally,
    ) -> Result<Decision<B>, RunError> {
        let connector = self.connector;
        let rules = connector.rules(self.clock.now());
        let body = self.source.open(object).await?;
        self.progress.start(&object.key, object.size);
        let mut batches = ExportReader::open(body, object.is_gzip(), &connector.columns, rules)
            .await?
            .read_ahead();
        let mut staging = self.store.staging(&connector.id, object.size).await?;
        debug!(connector = %connector.id, object = %object.key, size = object.size, "reading");
        while let Some(batch) = batches.next().await? {
            let before = tally.rows.read;
            for checked in batch.records {
                tally.rows.read += 1;
                match checked {
                    Checked::Valid(row, warned) => {
                        tally.rows.valid += 1;
                        for code in warned.codes() {
                            tally.warnings.add(code, 1);
                        }
                        staging.add_valid(row).await?;
                    }
                    Checked::Rejected { email, rejections } => {
                        tally.rows.rejected += 1;
                        let record = rejections.first().map_or(0, |r| r.record);
                        tally.keep_of(rejections, email.as_deref());
                        if let Some(email) = email {
                            staging.add_rejected(record, email).await?;
                        }
                    }
                }
            }
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
        info.sha256 = Some(digest.sha256.clone());
        if !tally.warnings.is_empty() {
            warn!(connector = %connector.id, warnings = %tally.warnings, "valid rows with warnings; `cleeng-sync validate` lists them");
        }

        // Another object with the content applied last: nothing to do.
        if let Some(last) = last.filter(|last| same_as(last, object, Some(&digest.sha256))) {
            staging.discard().await;
            return Ok(Decision::stop(
                Outcome::Unchanged,
                format!("same content as {}, applied already", last.key),
            ));
        }
        if connector.mode == Mode::Snapshot && tally.rows.read == 0 {
            staging.discard().await;
            return Ok(Decision::stop(
                Outcome::Refused,
                "empty export: a header and no rows; a snapshot with no subscribers is never applied".into(),
            ));
        }

        debug!(connector = %connector.id, rows = tally.rows.read, "export read; planning");
        let plan = staging.plan(connector.mode).await?;
        tally.rows.valid -= plan.duplicate_rows;
        tally.rows.rejected += plan.duplicate_rows;
        tally.keep(plan.duplicates);
        tally.rejections.sort_by_key(|r| r.record);
        let changes = plan.changes;

        if !options.no_guards
            && let Some(message) = self.guard(tally.rows, changes, plan.present)
        {
            staging.discard().await;
            return Ok(Decision::Stop {
                outcome: Outcome::Refused,
                message: Some(message),
                changes,
            });
        }
        if options.dry_run {
            staging.discard().await;
            return Ok(Decision::Stop {
                outcome: Outcome::DryRun,
                message: None,
                changes,
            });
        }
        Ok(Decision::Apply {
            staging: Box::new(staging),
            changes,
        })
    }

    /// The guards, checked before anything is written: a refusal message, or `None`.
    fn guard(&self, rows: RowCounts, changes: ChangeCounts, present: u64) -> Option<String> {
        let guards = self.connector.guards;
        let share = |part: u64, whole: u64| part as f64 / whole as f64;
        if rows.read > 0 && share(rows.rejected, rows.read) > guards.max_rejected_ratio {
            return Some(format!(
                "refused by max_rejected_ratio: {} of {} rows rejected ({:.1}%), above the limit of {:.1}%; \
                 see `cleeng-sync runs` for the reasons, fix the export, or run with --no-guards",
                rows.rejected,
                rows.read,
                100.0 * share(rows.rejected, rows.read),
                100.0 * guards.max_rejected_ratio
            ));
        }
        if present > 0 && share(changes.removed, present) > guards.max_removed_ratio {
            return Some(format!(
                "refused by max_removed_ratio: the snapshot removes {} of {} present subscribers ({:.1}%), \
                 above the limit of {:.1}%; check the export is complete, or run with --no-guards",
                changes.removed,
                present,
                100.0 * share(changes.removed, present),
                100.0 * guards.max_removed_ratio
            ));
        }
        None
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

/// Change detection, in one place: whether an object is the export applied last. The
/// same key and ETag is the same object, known before downloading; once the content is
/// read (`sha256`), the same content under another key or ETag is the same export.
fn same_as(last: &AcceptedObject, object: &ObjectMeta, sha256: Option<&str>) -> bool {
    match sha256 {
        None => last.key == object.key && last.etag == object.etag,
        Some(sha256) => last.sha256 == sha256,
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

/// Delta mode: the exports after the last accepted one, oldest first. If that one is
/// no longer listed, keys sorting after its key (Cleeng names exports by date).
fn pending_deltas(sorted: Vec<ObjectMeta>, last: Option<&AcceptedObject>) -> Vec<ObjectMeta> {
    let Some(last) = last else { return sorted };
    match sorted.iter().position(|o| o.key == last.key) {
        Some(i) => sorted.into_iter().skip(i + 1).collect(),
        None => sorted.into_iter().filter(|o| o.key > last.key).collect(),
    }
}

enum Chosen {
    Nothing { outcome: Outcome, message: String },
    Objects(Vec<ObjectMeta>, Option<AcceptedObject>),
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

impl<B: Backend> Decision<B> {
    fn stop(outcome: Outcome, message: String) -> Decision<B> {
        Decision::Stop {
            outcome,
            message: Some(message),
            changes: ChangeCounts::default(),
        }
    }
}

/// Counts and the first rejections of the export being read.
#[derive(Default)]
struct Tally {
    rows: RowCounts,
    rejections: Vec<Rejection>,
    warnings: WarningCounts,
}

impl Tally {
    fn keep(&mut self, rejections: impl IntoIterator<Item = Rejection>) {
        let room = REJECTION_CAP.saturating_sub(self.rejections.len());
        self.rejections.extend(rejections.into_iter().take(room));
    }

    /// Keeps a record's rejections with its subscriber's email, copied only into those
    /// kept: past the cap a bad export costs no copy a row.
    fn keep_of(&mut self, rejections: Vec<Rejection>, email: Option<&str>) {
        let room = REJECTION_CAP.saturating_sub(self.rejections.len());
        self.rejections.extend(
            rejections
                .into_iter()
                .take(room)
                .map(|rejection| Rejection {
                    email: email.map(str::to_string),
                    ..rejection
                }),
        );
    }
}

/// A run whose ledger row is open, holding its connector's run lock until it is closed.
pub struct OpenRun<L> {
    id: i64,
    connector: String,
    started: Instant,
    lock: L,
}

impl<L> OpenRun<L> {
    /// The run's ledger id.
    pub fn id(&self) -> i64 {
        self.id
    }

    fn report(&self, outcome: Outcome, message: Option<String>) -> RunReport {
        RunReport {
            duration_ms: self.elapsed_ms(),
            message,
            ..RunReport::empty(self.id, &self.connector, outcome)
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
