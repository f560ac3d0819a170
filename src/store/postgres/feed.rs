//! What a PostgreSQL run records in the change feed, on its staging session (see
//! `store/changes.rs` for the statements).

use super::staging::PgTables;
use crate::store::backend::Dialect;
use crate::store::backend::Stamp;
use crate::store::changes;
use crate::store::error::Result;

impl PgTables {
    /// Records the changes of the rows about to be written, when the run records them
    /// (from the comparison's rows, `matched`, or from staging on a first load); how many.
    pub(super) async fn record(&mut self, stamp: Stamp, matched: bool) -> Result<Option<u64>> {
        if !stamp.record {
            return Ok(None);
        }
        let sql = if matched {
            changes::matched(
                Dialect::Postgres,
                "cleeng_matches m JOIN cleeng_staging s ON s.ctid = m.staged",
                "m.valid AND (m.stored IS NULL OR NOT m.same OR NOT m.present)",
            )
        } else {
            // A first load of a connector whose applied runs stored nothing: all new.
            changes::staged(
                Dialect::Postgres,
                "cleeng_staging s LEFT JOIN subscription_traits t ON false",
                "s.valid AND NOT s.marked",
            )
        };
        Ok(Some(self.stamped(&sql, stamp).await?))
    }

    /// Runs a removal (`UPDATE ... WHERE`), recording its changes when the run records
    /// them: one statement, the removed rows as the update returns them being the changes.
    pub(super) async fn remove_recorded(&mut self, removal: &str, stamp: Stamp) -> Result<u64> {
        if !stamp.record {
            return self.stamped(removal, stamp).await;
        }
        let recorded = changes::removals(Dialect::Postgres, "removed t", "true");
        let sql = format!("WITH removed AS ({removal} RETURNING t.*) {recorded}");
        self.stamped(&sql, stamp).await
    }
}
