//! One run of one connector: choose the export, detect change, stream and validate it
//! into staging, check the guards, apply it with the ledger in one transaction.
//!
//! Every run leaves a ledger row, whatever happens; only a store that cannot write
//! its ledger makes a run return an error instead of a report.

use crate::clock::Clock;
use crate::config::Connector;
use crate::export::{Checked, ExportError, ExportReader};
use crate::progress::Progress;
use crate::run::{
    ChangeCounts, Mode, ObjectInfo, Outcome, Rejection, RowCounts, RunReport, Trigger,
};
use crate::source::{ObjectMeta, Source, SourceError, sort_oldest_first};
use crate::store::{AcceptedObject, REJECTION_CAP, RunLock, RunStart, Staging, Store, StoreError};
use std::time::Instant;
use tracing::{debug, info, warn};

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
pub struct Job<'a, S, Src> {
    /// The trait store and ledger.
    pub store: &'a S,
    /// Where the connector's exports are.
    pub source: &'a Src,
    /// The connector's settings.
    pub connector: &'a Connector,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

impl<S: Store, Src: Source> Job<'_, S, Src> {
    /// Runs the connector once: one run in snapshot mode, one per new export in delta
    /// mode (stopping at the first that is not applied).
    pub async fn run(&self, options: &RunOptions) -> Result<Vec<RunReport>, StoreError> {
        let run = self.begin(options).await?;
        self.run_begun(run, options).await
    }

    /// Opens the ledger row of a run, so that its id is known before it goes on
    /// (the admin API answers with it).
    /// The connector's run lock is taken first: if another run holds it, nothing is
    /// written and the answer is [`StoreError::Busy`].
    pub async fn begin(&self, options: &RunOptions) -> Result<OpenRun<S::Lock>, StoreError> {
        let lock = self
            .store
            .lock_connector(&self.connector.id)
            .await?
            .ok_or_else(|| StoreError::Busy(self.connector.id.clone()))?;
        let started_at = self.clock.now();
        let id = self
            .store
            .begin_run(&RunStart {
                connector: self.connector.id.clone(),
                trigger: options.trigger,
                scheduled_for: options.scheduled_for.clone(),
                started_at,
            })
            .await?;
        debug!(connector = %self.connector.id, run_id = id, "run started");
        Ok(OpenRun {
            id,
            connector: self.connector.id.clone(),
            started: Instant::now(),
            lock,
        })
    }

    /// [`Job::run`] for a run whose ledger row [`Job::begin`] opened.
    pub async fn run_begun(
        &self,
        run: OpenRun<S::Lock>,
        options: &RunOptions,
    ) -> Result<Vec<RunReport>, StoreError> {
        let chosen = match self.choose(options).await {
            Ok(chosen) => chosen,
            Err(e) => {
                return Ok(vec![
                    self.finish(run, Outcome::Failed, Some(e.to_string()), &[])
                        .await?,
                ]);
            }
        };
        let (objects, last) = match chosen {
            Chosen::Nothing { outcome, message } => {
                return Ok(vec![self.finish(run, outcome, Some(message), &[]).await?]);
            }
            Chosen::Objects(objects, last) => (objects, last),
        };
        let mut reports = Vec::new();
        let mut last = last;
        // The first export uses the run opened above; each further one (delta) its own.
        let mut first = Some(run);
        for object in &objects {
            let run = match first.take() {
                Some(run) => run,
                None => self.begin(options).await?,
            };
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
        Ok(reports)
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
        run: OpenRun<S::Lock>,
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
        if let Some(last) =
            last.filter(|l| !options.force && l.key == object.key && l.etag == object.etag)
        {
            info.sha256 = Some(last.sha256.clone());
            let mut report = run.report(
                Outcome::Unchanged,
                Some("the newest export was applied already".into()),
            );
            report.object = Some(info);
            return self.close(run, report, &[]).await;
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
        let (outcome, message, changes) = match attempt {
            Ok(Decision::Apply { staging, changes }) => {
                let mut report = run.report(Outcome::Applied, None);
                report.object = Some(info.clone());
                report.rows = tally.rows;
                report.changes = changes;
                debug!(connector = %self.connector.id, run_id = report.run_id, "applying");
                let applied = staging
                    .apply(self.connector.mode, &report, &tally.rejections, self.clock)
                    .await;
                match applied {
                    Ok(()) => {
                        // The ledger's duration is its finished_at less started_at; the
                        // report's is measured here, the apply included.
                        report.duration_ms = run.elapsed_ms();
                        self.finished(&report);
                        run.lock.release().await;
                        return Ok(report);
                    }
                    Err(e) => (
                        Outcome::Failed,
                        Some(format!(
                            "applying failed and was rolled back, nothing changed: {e}"
                        )),
                        changes,
                    ),
                }
            }
            Ok(Decision::Stop {
                outcome,
                message,
                changes,
            }) => (outcome, message, changes),
            Err(e) => (
                Outcome::Failed,
                Some(e.to_string()),
                ChangeCounts::default(),
            ),
        };
        let mut report = run.report(outcome, message);
        report.object = Some(info);
        report.rows = tally.rows;
        report.changes = changes;
        // A failed run keeps no rejections: its rows were not all read.
        let rejections = if outcome == Outcome::Failed {
            Vec::new()
        } else {
            std::mem::take(&mut tally.rejections)
        };
        self.close(run, report, &rejections).await
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
    ) -> Result<Decision<S::Staging>, RunError> {
        let connector = self.connector;
        let rules = connector.rules(self.clock.now());
        let body = self.source.open(object).await?;
        self.progress.start(&object.key, object.size);
        let mut batches = ExportReader::open(body, object.is_gzip(), &connector.columns, rules)
            .await?
            .read_ahead();
        let mut staging = self.store.staging(&connector.id).await?;
        debug!(connector = %connector.id, object = %object.key, size = object.size, "reading");
        let mut warnings = 0u64;
        while let Some(batch) = batches.next().await? {
            let before = tally.rows.read;
            for checked in batch.records {
                tally.rows.read += 1;
                match checked {
                    Checked::Valid(row, warning) => {
                        tally.rows.valid += 1;
                        warnings += u64::from(warning.is_some());
                        staging.add_valid(row).await?;
                    }
                    Checked::Rejected { email, rejections } => {
                        tally.rows.rejected += 1;
                        let record = rejections.first().map_or(0, |r| r.record);
                        tally.keep(rejections);
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
        if warnings > 0 {
            warn!(connector = %connector.id, warnings, "offer IDs that do not follow the pattern S123456789_PL");
        }

        if let Some(last) = last.filter(|l| !options.force && l.sha256 == digest.sha256) {
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
        let plan = staging.plan(&connector.id, connector.mode).await?;
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
        Ok(Decision::Apply { staging, changes })
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

    async fn finish(
        &self,
        run: OpenRun<S::Lock>,
        outcome: Outcome,
        message: Option<String>,
        rejections: &[Rejection],
    ) -> Result<RunReport, StoreError> {
        let report = run.report(outcome, message);
        self.close(run, report, rejections).await
    }

    async fn close(
        &self,
        run: OpenRun<S::Lock>,
        mut report: RunReport,
        rejections: &[Rejection],
    ) -> Result<RunReport, StoreError> {
        report.duration_ms = run.elapsed_ms();
        self.store
            .finish_run(&report, rejections, self.clock.now())
            .await?;
        self.finished(&report);
        run.lock.release().await;
        Ok(report)
    }

    /// Says how a run ended, in the logs and the metrics.
    fn finished(&self, report: &RunReport) {
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

enum Decision<St> {
    Apply {
        staging: St,
        changes: ChangeCounts,
    },
    Stop {
        outcome: Outcome,
        message: Option<String>,
        changes: ChangeCounts,
    },
}

impl<St> Decision<St> {
    fn stop(outcome: Outcome, message: String) -> Decision<St> {
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
}

impl Tally {
    fn keep(&mut self, rejections: impl IntoIterator<Item = Rejection>) {
        let room = REJECTION_CAP.saturating_sub(self.rejections.len());
        self.rejections.extend(rejections.into_iter().take(room));
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
            run_id: self.id,
            connector: self.connector.clone(),
            outcome,
            object: None,
            rows: RowCounts::default(),
            changes: ChangeCounts::default(),
            duration_ms: self.elapsed_ms(),
            message,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
