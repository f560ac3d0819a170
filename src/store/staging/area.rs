//! The staging of one run, written once for every backend.
//!
//! # How a run finds what changed
//!
//! An export is a full snapshot, and most nights most of its rows equal what is stored.
//! Copying a million rows into the database only to find that nine in ten are the same
//! was most of a run's time, so the store first reads the **held hashes**: the row hash
//! of every present subscriber of the connector, into memory ([`HeldHashes`], 17 bytes a
//! subscriber). A row hash covers the email and every trait, so a row whose hash is held
//! is a subscriber stored with exactly these traits. Such a row is **marked** on its held
//! hash (with its record) and not staged at all. Every other row is **staged**: valid
//! rows in full, rejected rows by record and email (their subscriber is listed, so not
//! removed, but nothing of theirs is applied).
//!
//! Two checks need more than the marks:
//! - **Repeated emails** (every record of an email that occurs twice is rejected): a
//!   filter notes each email as it streams ([`Repeats`]); the marked rows of the few
//!   emails it flags are staged by email before the exact check in the database.
//! - **Removals** (present subscribers the snapshot no longer lists): a marked
//!   subscriber is named by the export; so is every subscriber a staged row matches,
//!   whose held hash the comparison **lists**. The held hashes left neither marked nor
//!   listed are the removals, counted in memory, and that count must equal the formula's
//!   (below). Their prefixes are kept in a temporary table for the removal statement;
//!   when there are none, nobody can be removed and the statement is not run.
//!
//! With more present subscribers than a set holds (past [`Tuning::max_held`]) the
//! hashes are held two parts at a time ([`Passes`]): the rows wait on local disk by the
//! part of their hash, and each part is marked, then listed, as one set would be, with
//! the same counts; when the export alone is past that limit, the hashes are read
//! beside it rather than before it ([`super::beside`]). With passes off
//! ([`Tuning::pass_held`] 0) nothing is held: every row is staged in full and the
//! comparison is the database's. A first load holds nothing either: every valid row is
//! new.
//!
//! # Subscribers refreshed after the export was written
//!
//! An export is a photograph taken when its object was written; a subscriber a refresh
//! read from Cleeng after that is known better than the export knows them. Their stored
//! hashes (read by the partial index on `live_at`: a handful, not every subscriber) are
//! held as [`Newer`]: an export row of one of them that differs is taken as saying what
//! is stored, and one the snapshot omits is listed as if it said so. Through every path
//! below they are then unchanged, neither updated nor removed, and counted `superseded`
//! instead. The run forgets, in its transaction, every refresh the export is newer than.
//!
//! # Counts that are checked
//!
//! The plan counts each kind of change once, by one formula for both backends (see
//! [`Staging::plan`]); the guards are judged on those counts. The apply then runs each
//! statement that can change something and compares its rows affected with the plan: a
//! difference fails the run, which rolls back ([`StoreError::Miscount`]). A statement is
//! left out only when it cannot change anything: nothing stored yet, delta mode (never
//! removes), or a removal whose zero is found twice: by the formula, and by the held
//! hashes (every one marked or listed) or, with none held, by the tables
//! ([`Tables::all_named`]: PostgreSQL counts the distinct stored rows its comparison
//! matched). Never because one count said zero.

use crate::clock::Clock;
use crate::export::{Checked, Row, RowHash};
use crate::run::{ChangeCounts, Mode, Rejection, RunReport};
use crate::store::backend::Store;
use crate::store::backend::{
    Backend, Began, ByEmail, MarkedStaged, Param, Session, Stamp, Tables, Written,
};
use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::ledger::REJECTION_CAP;
use crate::store::staging::beside;
use crate::store::staging::direct::Direct;
use crate::store::staging::gather::{Gather, Gathered};
use crate::store::staging::held::{HeldHashes, Listing, Mark};
use crate::store::staging::marks;
use crate::store::staging::newer::Newer;
use crate::store::staging::passes::Passes;
use crate::store::staging::repeats::{self, RepeatCheck, Repeats};
use crate::store::staging::spill::spill_error;
use crate::store::tuning::{Miscount, Tuning};
use chrono::{DateTime, Utc};

/// What applying the staged export would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Inserted, updated, unchanged and removed subscribers.
    pub changes: ChangeCounts,
    /// Subscribers present before the run.
    pub present: u64,
    /// Valid records rejected because their email occurs more than once.
    pub duplicate_rows: u64,
    /// Every record (valid or not) of a repeated email, oldest first, capped.
    pub duplicates: Vec<Rejection>,
}

/// What the run knows of the connector's stored subscribers. One state at a time: the
/// hashes are held until the plan, then either the prefixes of those no row marked or
/// listed are kept in the tables, or nobody can be removed.
enum Stored {
    /// Nothing was stored for the connector when the run began: every valid row is new.
    Nothing,
    /// Subscribers are stored, their hashes not held: every row is staged in full.
    NotHeld,
    /// The present subscribers' hashes, marked as rows stream in.
    Held(HeldHashes),
    /// Too many hashes to hold at once: they and the rows wait by partition, to be
    /// marked a partition at a time when the run is planned.
    Passes(Passes),
    /// Planned: the prefixes of the held hashes no row marked or listed are in the
    /// tables; only their subscribers can be removed.
    Unlisted,
    /// Planned from held hashes: nobody can be removed (every held hash was marked or
    /// listed, or delta mode).
    NoneRemovable,
}

/// Rows of one export on their way into the store. Dropping it discards them.
pub struct Staging<B: Backend> {
    tables: B::Tables,
    stored: Stored,
    repeats: Repeats,
    connector: String,
    /// Subscribers a refresh read after the export was written.
    newer: Newer,
    /// A first load writing into the traits as it reads: its rows' notes.
    direct: Option<Direct>,
    /// The instant a first load's rows written as it read carry: those staged too.
    written_at: Option<DateTime<Utc>>,
    /// Valid rows added.
    valid: u64,
    /// Valid rows marked and not staged.
    marked: u64,
    /// Valid rows marked and staged by email (the same row twice, or a record number
    /// too large to keep as a mark; the marked rows of emails that may repeat).
    marked_staged: u64,
    /// The plan, once made: the apply checks its statements against it.
    plan: Option<(Mode, Plan)>,
    /// No export of the connector was applied yet: this run is the feed's baseline and
    /// records no change.
    baseline: bool,
    miscount: Option<Miscount>,
}

impl<B: Backend> Store<B> {
    /// A fresh staging area for the connector's export of `export_bytes` (the size of
    /// its object, to size the repeated-email filter; 0 if not known), written at
    /// `written_at` (its LastModified; `None`: as new as any refresh).
    pub async fn staging(
        &self,
        connector: &str,
        export_bytes: u64,
        written_at: Option<DateTime<Utc>>,
    ) -> Result<Staging<B>> {
        let tables = B::tables(self, connector).await?;
        let mut newer = Newer::new(written_at);
        if let Some(after) = written_at {
            self.live_hashes(connector, after, |email, hash| {
                let hash = RowHash::from_hex(&hash).ok_or_else(|| {
                    StoreError::Bug(format!("a stored row hash is not 32 hex digits: {hash:?}"))
                })?;
                newer.insert(email, hash);
                Ok(())
            })
            .await?;
        }
        let Tuning {
            max_candidates,
            miscount,
            ..
        } = self.tuning;
        let baseline = self.last_applied(connector).await?.is_none();
        let stored = self.stored(connector, export_bytes, baseline).await?;
        let present = match &stored {
            Stored::Held(held) => held.present(),
            Stored::Passes(passes) => passes.present(),
            _ => 0,
        };
        let emails = (present as u64).max(export_bytes / beside::ROW_BYTES);
        Ok(Staging {
            tables,
            stored,
            repeats: Repeats::sized(max_candidates, emails),
            connector: connector.to_owned(),
            newer,
            direct: None,
            written_at: None,
            valid: 0,
            marked: 0,
            marked_staged: 0,
            plan: None,
            baseline,
            miscount,
        })
    }
}

impl<B: Backend> Store<B> {
    /// What the run will know of the connector's stored subscribers: their hashes held,
    /// in passes (read beside the export when it alone is past the limit), or neither.
    async fn stored(&self, connector: &str, export_bytes: u64, baseline: bool) -> Result<Stored> {
        let Tuning {
            max_held,
            pass_held,
            read_beside,
            ..
        } = self.tuning;
        let past_limit = export_bytes / beside::ROW_BYTES > max_held;
        if read_beside && past_limit && pass_held > 0 && !baseline {
            let reading = beside::start(self, connector);
            return Ok(Stored::Passes(
                Passes::reading(reading, pass_held).map_err(spill_error)?,
            ));
        }
        let mut gather = Gather::within(max_held, pass_held);
        let read = B::read_hashes(self, connector, &mut gather).await?;
        Ok(match gather.finish()? {
            Gathered::Held(held) if read => Stored::Held(held),
            Gathered::Passes(keys) if read => {
                Stored::Passes(Passes::split(keys, pass_held).map_err(spill_error)?)
            }
            _ => {
                let mut conn = self.pool.acquire().await?;
                let any = crate::store::reads::count(&mut *conn, B::SQL.anything_stored, connector)
                    .await?;
                if any > 0 {
                    Stored::NotHeld
                } else {
                    Stored::Nothing
                }
            }
        })
    }
}

impl<B: Backend> Staging<B> {
    /// On a first load (nothing stored, the feed's baseline), has the backend write the
    /// valid rows, stamped with `run_id` and `now`, into the traits as they come
    /// ([`Tables::write_directly`], [`Direct`]). Any other run stages as before.
    pub async fn write_directly(&mut self, run_id: i64, now: DateTime<Utc>) -> Result<()> {
        let first_load = matches!(self.stored, Stored::Nothing) && self.baseline;
        if !B::Tables::WRITES_DIRECTLY || !first_load || self.valid > 0 {
            return Ok(());
        }
        let direct = match Direct::new() {
            Ok(direct) => direct,
            Err(e) => {
                // The notes need a file: without one the load is staged, only slower.
                tracing::warn!(error = %e, "a first load is staged, not written as it is read");
                return Ok(());
            }
        };
        let stamp = Stamp {
            run_id,
            now,
            record: false,
        };
        self.tables.write_directly(stamp).await?;
        (self.direct, self.written_at) = (Some(direct), Some(now));
        Ok(())
    }

    /// Asks for the memory that staging these rows will read ([`super::cache`]): called
    /// a little ahead of [`Staging::add_valid`], so that their lookups overlap.
    pub fn prefetch(&self, rows: &[Checked]) {
        let valid = || {
            rows.iter().filter_map(|checked| match checked {
                Checked::Valid(row, _) => Some(row),
                Checked::Rejected { .. } => None,
            })
        };
        if let Stored::Held(held) = &self.stored {
            held.prefetch(valid().map(|row| &row.row_hash));
        }
        for row in valid() {
            self.repeats.prefetch(row.email());
        }
    }

    /// Stages a valid row, or marks it if its subscriber is stored as it is.
    pub async fn add_valid(&mut self, row: Row) -> Result<()> {
        let row = self.newer.keep(row);
        self.valid += 1;
        let may_repeat = self.repeats.note(row.email());
        let mark = match &mut self.stored {
            Stored::Held(held) => held.mark(&row.row_hash, row.record),
            // Marked in its pass, when the run is planned.
            Stored::Passes(passes) => return passes.hold(&row),
            _ => Mark::New,
        };
        match mark {
            Mark::First => {
                self.marked += 1;
                Ok(())
            }
            Mark::Again => {
                self.marked_staged += 1;
                self.tables
                    .by_email(row.record, row.email(), ByEmail::Marked)
                    .await
            }
            Mark::New => match &mut self.direct {
                Some(direct) if may_repeat => direct.put_aside(&row),
                Some(direct) => {
                    direct.note(row.record, true, row.email())?;
                    self.tables.full(row).await
                }
                None => self.tables.full(row).await,
            },
        }
    }

    /// Notes the email of a rejected record: its subscriber is not absent.
    pub async fn add_rejected(&mut self, record: u64, email: String) -> Result<()> {
        self.newer.named(record, &email);
        self.repeats.note(&email);
        match &mut self.direct {
            // Staged by email, if it may repeat, once the rows written are in.
            Some(direct) => direct.note(record, false, &email),
            None => {
                self.tables
                    .by_email(record, &email, ByEmail::Rejected)
                    .await
            }
        }
    }

    /// Rejects repeated emails and computes the change. From here until
    /// [`Staging::apply`] or [`Staging::discard`] the store is held for writing, so
    /// that what is applied is exactly what was planned.
    ///
    /// One formula for every backend: the staged rows keep one row per email, so
    /// `removed = present - listed`, where `listed` counts the present subscribers the
    /// export names: staged rows that match one, marked rows staged, and marked rows.
    pub async fn plan(&mut self, mode: Mode) -> Result<Plan> {
        if mode == Mode::Snapshot {
            for row in self.newer.omitted() {
                self.add_valid(row).await?;
            }
        }
        let check = self.repeats.finish();
        // Rows held for passes are staged before the staging is flushed: PostgreSQL's
        // stream of rows ends there.
        self.passes(&check).await?;
        self.tables.flush().await?;
        // Marked rows were not staged: those of an email that may repeat are staged
        // now, so that the check sees every record of it.
        if let Stored::Held(held) = &self.stored {
            let emails = match &check {
                RepeatCheck::None => None,
                RepeatCheck::Only(candidates) => Some(Some(candidates.as_slice())),
                RepeatCheck::All => Some(None),
            };
            if let Some(emails) = emails {
                let staged = self.tables.stage_marked(held, emails).await?;
                self.marked = self.marked.checked_sub(staged).ok_or_else(|| {
                    StoreError::Bug(format!(
                        "{staged} marked rows staged again, of {} marked",
                        self.marked
                    ))
                })?;
                self.marked_staged += staged;
            }
        }
        if let Some(direct) = self.direct.take() {
            direct.stage(&mut self.tables, &check).await?;
        }
        let repeated = match check {
            RepeatCheck::None => Default::default(),
            check => self.tables.reject_repeats(&check).await?,
        };
        let duplicates = repeats::rejections(repeated.records.into_iter().take(REJECTION_CAP));
        self.tables.begin().await?;
        // The refreshes this export is newer than are forgotten in the run's transaction
        // (a dry run or a refusal rolls it back), before the comparison, which PostgreSQL
        // answers with the row ids the apply writes to, and before the removals, while
        // their subscribers are present (the partial index holds present ones).
        if let Some(written_at) = self.newer.written_at {
            let params = [
                Param::Text(Some(&self.connector)),
                Param::Instant(written_at),
            ];
            let session = self.tables.session().await?;
            session.execute(B::SQL.clear_live, &params).await?;
        }

        let mut plan = if let Stored::Nothing = self.stored {
            Plan {
                changes: ChangeCounts {
                    inserted: self.valid.saturating_sub(repeated.rows),
                    ..ChangeCounts::default()
                },
                ..Plan::default()
            }
        } else {
            self.compare(mode, repeated.emails).await?
        };
        let superseded = self.newer.superseded();
        plan.changes.superseded = superseded;
        plan.changes.unchanged = plan.changes.unchanged.saturating_sub(superseded);
        plan.duplicate_rows = repeated.rows;
        plan.duplicates = duplicates;
        match self.miscount {
            Some(Miscount::Inserted) => plan.changes.inserted += 1,
            Some(Miscount::Updated) => plan.changes.updated += 1,
            Some(Miscount::Removed) => plan.changes.removed += 1,
            None => {}
        }

        // The held hashes are let go here, before the heaviest statements (26 MB at a
        // million and a half subscribers); what the removal needs of them is kept first.
        if let Stored::Held(_) | Stored::Passes(_) = self.stored {
            let removable = mode == Mode::Snapshot;
            match std::mem::replace(&mut self.stored, Stored::NoneRemovable) {
                Stored::Held(held) if removable && held.unlisted_count() > 0 => {
                    self.tables.keep_unlisted(held.unlisted()).await?;
                    self.stored = Stored::Unlisted;
                }
                Stored::Passes(mut passes) if removable && passes.unlisted_count() > 0 => {
                    let mut failed = None;
                    let unlisted = passes.unlisted(&mut failed)?;
                    self.tables.keep_unlisted(unlisted).await?;
                    if let Some(e) = failed {
                        return Err(spill_error(e));
                    }
                    self.stored = Stored::Unlisted;
                }
                _ => {}
            }
        }
        self.plan = Some((mode, plan.clone()));
        Ok(plan)
    }

    /// Marks the rows held for passes ([`marks::mark`]); nothing to do unless the
    /// hashes are held in passes.
    async fn passes(&mut self, check: &RepeatCheck) -> Result<()> {
        let Staging {
            stored: Stored::Passes(passes),
            tables,
            marked,
            marked_staged,
            ..
        } = self
        else {
            return Ok(());
        };
        marks::mark(passes, tables, check, marked, marked_staged).await
    }

    /// The plan of a run on stored subscribers: the tables' comparison, the marks, and
    /// the one formula for removals (checked against the held hashes when there are).
    async fn compare(&mut self, mode: Mode, repeated_emails: u64) -> Result<Plan> {
        // With held hashes, the subscribers the staged rows name are listed on
        // them: the ones left neither marked nor listed are the removals, found a
        // second way (the formula below must agree).
        let began = self.began();
        let listing: Option<&mut dyn Listing> = match (&mut self.stored, mode) {
            (Stored::Held(held), Mode::Snapshot) => Some(held),
            (Stored::Passes(passes), Mode::Snapshot) => Some(passes),
            _ => None,
        };
        let compared = self.tables.compare(began, listing).await?;
        let unlisted = match (&mut self.stored, mode) {
            (Stored::Held(held), Mode::Snapshot) => Some(held.unlisted_count()),
            (Stored::Passes(passes), Mode::Snapshot) => Some(passes.settle()?),
            _ => None,
        };
        let marked_staged = if repeated_emails == 0 {
            MarkedStaged {
                all: self.marked_staged,
                valid: self.marked_staged,
            }
        } else {
            self.tables.count_marked().await?
        };
        let present = match &self.stored {
            Stored::Held(held) => held.present() as u64,
            Stored::Passes(passes) => passes.present() as u64,
            _ => {
                let session = self.tables.session().await?;
                crate::store::reads::count(session, B::SQL.present, &self.connector).await?
            }
        };
        let listed = compared.listed + marked_staged.all + self.marked;
        let removed = match mode {
            Mode::Delta => 0,
            Mode::Snapshot => present.checked_sub(listed).ok_or_else(|| {
                StoreError::Bug(format!(
                    "the export lists {listed} present subscribers, of {present} present"
                ))
            })?,
        };
        if let Some(unlisted) = unlisted
            && unlisted != removed
        {
            return Err(StoreError::Bug(format!(
                "the plan counted {removed} removed, but {unlisted} held hashes are neither marked nor listed"
            )));
        }
        Ok(Plan {
            changes: ChangeCounts {
                inserted: compared.inserted,
                updated: compared.updated,
                unchanged: compared.unchanged + self.marked + marked_staged.valid,
                removed,
                superseded: 0,
            },
            present,
            ..Plan::default()
        })
    }

    /// Applies the planned change and closes the run's ledger row, in one transaction,
    /// checking every statement's rows affected against the plan. The clock stamps
    /// `updated_at` before the change (a first load's, as it began writing) and
    /// `finished_at` after it.
    pub async fn apply(
        mut self,
        report: &RunReport,
        rejections: &[Rejection],
        clock: &dyn Clock,
    ) -> Result<()> {
        match self.write(report, rejections, clock).await {
            Ok(()) => self.tables.commit().await,
            Err(e) => {
                self.tables.discard().await;
                Err(e)
            }
        }
    }

    /// The statements of [`Staging::apply`], each checked; the caller commits.
    async fn write(
        &mut self,
        report: &RunReport,
        rejections: &[Rejection],
        clock: &dyn Clock,
    ) -> Result<()> {
        let Some((mode, plan)) = self.plan.take() else {
            return Err(StoreError::Bug("an apply without a plan".into()));
        };
        let stamp = Stamp {
            run_id: report.run_id,
            now: self.written_at.unwrap_or_else(|| clock.now()),
            record: !self.baseline,
        };
        let planned = plan.changes;
        // Removals first: they concern the subscribers present before this run.
        let removal = match (&self.stored, mode) {
            (Stored::NotHeld, Mode::Snapshot)
                if planned.removed == 0 && self.tables.all_named(plan.present).await? =>
            {
                None
            }
            (Stored::NotHeld, Mode::Snapshot) => Some(false),
            (Stored::Unlisted, Mode::Snapshot) => Some(true),
            (Stored::Held(_) | Stored::Passes(_), _) => {
                return Err(StoreError::Bug("the held hashes outlived the plan".into()));
            }
            _ => None,
        };
        let removed = match removal {
            Some(unlisted_only) => self.tables.remove_unlisted(stamp, unlisted_only).await?,
            None => 0,
        };
        checked("removed", planned.removed, removed)?;
        let Written { inserted, updated } = self.tables.write_changes(stamp, self.began()).await?;
        checked("inserted", planned.inserted, inserted)?;
        checked("updated", planned.updated, updated)?;
        let session = self.tables.session().await?;
        crate::store::ledger::close_on(session, report, rejections, clock.now(), B::SQL.close_run)
            .await
    }

    /// What was stored when the run began, as the tables' statements need to know it.
    fn began(&self) -> Began {
        match self.stored {
            Stored::Nothing => Began::Nothing,
            Stored::NotHeld => Began::NotHeld,
            Stored::Held(_) | Stored::Passes(_) | Stored::Unlisted | Stored::NoneRemovable => {
                Began::Held
            }
        }
    }

    /// Gives up: nothing staged reaches the store.
    pub async fn discard(self) {
        self.tables.discard().await;
    }
}

/// Fails unless a statement did what the plan said.
fn checked(kind: &'static str, planned: u64, done: u64) -> Result<()> {
    if planned == done {
        return Ok(());
    }
    Err(StoreError::Miscount {
        kind,
        planned,
        done,
    })
}
