//! The run ledger (`sync_runs`, `sync_rejections`): a run's row is opened before it
//! reads anything and closed however it ends, by [`Store::close_run`] or, for a run
//! that applies, inside the apply's transaction ([`close_on`]).

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::run::{Rejection, RunReport, Trigger};
use crate::store::backend::Store;
use crate::store::error::Result;
use crate::store::error::StoreError;
use chrono::{DateTime, Utc};

/// At most this many rejections are stored per run; the counts stay exact.
pub const REJECTION_CAP: usize = 10_000;

/// The message of a run whose process died before it finished.
const ORPHAN_MESSAGE: &str = "the process running it stopped before it finished (killed or crashed); \
     nothing was applied; the next run applies the export";

/// The start of a run, as the ledger records it.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Connector id.
    pub connector: String,
    /// What started it.
    pub trigger: Trigger,
    /// Local wall-clock time it was scheduled for, scheduled runs only.
    pub scheduled_for: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// The object of the last run that applied (or found unchanged) an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedObject {
    /// Object key.
    pub key: String,
    /// Its ETag.
    pub etag: String,
    /// SHA-256 of its content.
    pub sha256: String,
}

impl<B: Backend> Store<B> {
    /// Takes the connector's run lock, or `None` if another run holds it.
    pub async fn lock_connector(&self, connector: &str) -> Result<Option<B::Lock>> {
        B::lock(self, connector).await
    }

    /// [`Store::lock_connector`], tried again while another holds it, for up to
    /// `patience`; `None` past it.
    pub async fn lock_connector_within(
        &self,
        connector: &str,
        patience: std::time::Duration,
    ) -> Result<Option<B::Lock>> {
        let deadline = tokio::time::Instant::now() + patience;
        let pause = (patience / 10).min(std::time::Duration::from_millis(100));
        loop {
            if let Some(lock) = self.lock_connector(connector).await? {
                return Ok(Some(lock));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Opens the ledger row of a run (outcome `running`) and returns its id.
    ///
    /// The caller holds the connector's lock ([`Store::lock_connector`]), so a run of
    /// the connector still marked `running` belongs to a process that died (killed,
    /// crashed, its machine gone): it is closed as `failed` first. Its rows never
    /// committed: a run commits its changes and its ledger row together.
    pub async fn begin_run(&self, start: &RunStart) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let connector = Param::Text(Some(&start.connector));
        let now = Param::Instant(start.started_at);
        tx.execute(
            B::SQL.close_orphans,
            &[connector, now, Param::Text(Some(ORPHAN_MESSAGE))],
        )
        .await?;
        let row = tx
            .fetch_optional(
                B::SQL.open_run,
                &[
                    connector,
                    Param::Text(Some(start.trigger.as_str())),
                    Param::Text(start.scheduled_for.as_deref()),
                    now,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Bug("opening a run returned no id".into()))?;
        let id = row.int("id")?;
        tx.commit().await?;
        Ok(id)
    }

    /// Closes the ledger row of a run that applies nothing, with its rejections.
    pub async fn close_run(
        &self,
        report: &RunReport,
        rejections: &[Rejection],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        close_on(&mut *tx, report, rejections, now, B::SQL.close_run).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a run that stopped before it finished (shutdown, a dead daemon) as
    /// `failed`, unless it has finished meanwhile; its staged rows never committed.
    pub async fn abandon_run(&self, run_id: i64, message: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(
            B::SQL.abandon_run,
            &[
                Param::Int(Some(run_id)),
                Param::Instant(now),
                Param::Text(Some(message)),
            ],
        )
        .await?;
        Ok(())
    }

    /// The object of the connector's last run that applied or confirmed an export.
    pub async fn last_accepted(&self, connector: &str) -> Result<Option<AcceptedObject>> {
        self.read_one(
            B::SQL.last_accepted,
            &[Param::Text(Some(connector))],
            |row| {
                Ok(AcceptedObject {
                    key: row.text("object_key")?,
                    etag: row.text("object_etag")?,
                    sha256: row.text("object_sha256")?,
                })
            },
        )
        .await
    }
}

/// Writes the end of a run into its ledger row, with its (capped) rejections, on the
/// session of the transaction it belongs to.
pub(super) async fn close_on<S: Session>(
    session: &mut S,
    report: &RunReport,
    rejections: &[Rejection],
    now: DateTime<Utc>,
    sql: &str,
) -> Result<()> {
    let object = report.object.as_ref();
    let warnings = report.warnings.to_json();
    let count = |n: u64| Param::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)));
    let closed = session
        .execute(
            sql,
            &[
                Param::Int(Some(report.run_id)),
                Param::Instant(now),
                Param::Text(Some(report.outcome.as_str())),
                Param::Text(object.map(|o| o.key.as_str())),
                Param::Text(object.map(|o| o.etag.as_str())),
                Param::Text(object.and_then(|o| o.sha256.as_deref())),
                count(report.rows.read),
                count(report.rows.valid),
                count(report.rows.rejected),
                count(report.changes.inserted),
                count(report.changes.updated),
                count(report.changes.unchanged),
                count(report.changes.removed),
                Param::Text(report.message.as_deref()),
                Param::Text(Some(&warnings)),
                count(report.changes.superseded),
            ],
        )
        .await?;
    // Every row a run writes refers to its ledger row, and neither store checks the
    // references one by one (PostgreSQL's were dropped, migration 0002; SQLite's
    // staging does not enforce them): an apply for a run that is not there rolls back.
    if closed != 1 {
        return Err(StoreError::Bug(format!(
            "run {} is not in the ledger (sync_runs)",
            report.run_id
        )));
    }
    let kept = &rejections[..rejections.len().min(REJECTION_CAP)];
    if !kept.is_empty() {
        session.insert_rejections(report.run_id, kept).await?;
    }
    Ok(())
}
