//! What a PostgreSQL run records in the change feed, on its staging session (see
//! `store/changes.rs` for the statements).

use super::staging::PgTables;
use crate::store::backend::Dialect;
use crate::store::backend::Stamp;
use crate::store::changes;
use crate::store::error::Result;

impl PgTables {
    /// Records the changes of the staged rows `condition` selects `from`, when the run
    /// records them; how many.
    pub(super) async fn record(
        &mut self,
        stamp: Stamp,
        from: &str,
        condition: &str,
    ) -> Result<Option<u64>> {
        if !stamp.record {
            return Ok(None);
        }
        let sql = changes::staged(Dialect::Postgres, from, condition);
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
