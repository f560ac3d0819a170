//! The subscribers a refresh read from Cleeng after the export was written (see
//! "Subscribers refreshed after the export was written" in `area.rs`): an export row of
//! one of them that differs is taken as saying what is stored, and one the snapshot
//! omits is listed as if it said so, so that every path counts them unchanged, and they
//! are counted `superseded` instead.

use crate::export::Row;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The subscribers a refresh read after the export was written, as rows that say what
/// is stored for them.
#[derive(Default)]
pub(super) struct Newer {
    /// When the export was written; `None`: no refresh is newer (nothing to forget).
    pub(super) written_at: Option<DateTime<Utc>>,
    /// By email: the stored row, whether the export named the subscriber, and whether
    /// it said something else (superseded).
    pub(super) rows: HashMap<String, (Row, bool, bool)>,
    /// The export's last record so far: the rows of omitted subscribers come after it
    /// (a mark keeps a record number of 32 bits, as an export's are).
    pub(super) last_record: u64,
}

impl Newer {
    /// The row to stage for this export row: the stored one when a newer refresh holds
    /// the subscriber and the export says something else.
    pub(super) fn keep(&mut self, row: Row) -> Row {
        self.last_record = self.last_record.max(row.record);
        match self.rows.get_mut(row.email()) {
            Some((stored, named, superseded)) => {
                *named = true;
                if stored.row_hash == row.row_hash {
                    row
                } else {
                    *superseded = true;
                    stored.clone().at_record(row.record)
                }
            }
            None => row,
        }
    }

    /// Notes that the export names the subscriber (in a rejected record).
    pub(super) fn named(&mut self, record: u64, email: &str) {
        self.last_record = self.last_record.max(record);
        if let Some((_, named, _)) = self.rows.get_mut(email) {
            *named = true;
        }
    }

    /// The stored rows of the subscribers the export omits, now superseded.
    pub(super) fn omitted(&mut self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .rows
            .values_mut()
            .filter(|(_, named, _)| !named)
            .map(|(row, named, superseded)| {
                (*named, *superseded) = (true, true);
                row.clone()
            })
            .collect();
        rows.sort_by(|a, b| a.email().cmp(b.email()));
        rows.into_iter()
            .enumerate()
            .map(|(i, row)| row.at_record(self.last_record + 1 + i as u64))
            .collect()
    }

    /// How many subscribers the export would have changed or removed.
    pub(super) fn superseded(&self) -> u64 {
        self.rows.values().filter(|(_, _, s)| *s).count() as u64
    }
}
