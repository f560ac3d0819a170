//! The subscribers a refresh read from Cleeng after the export was written (see
//! "Subscribers refreshed after the export was written" in `area.rs`): an export row of
//! one of them that differs is taken as saying what is stored, and one the snapshot
//! omits is listed as if it said so, so that every path counts them unchanged, and they
//! are counted `superseded` instead.
//!
//! Only each one's stored row hash is held (some 100 bytes a subscriber), not their
//! traits: a row that carries the stored hash is, on every path, a subscriber stored as
//! they are (marked on a held hash, or compared equal by hash in the database), and such
//! a row is never written. So a superseded row keeps the export's fields but takes the
//! stored hash, and an omitted subscriber is a row of their email and stored hash alone.

use crate::export::{Row, RowHash};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// One refreshed subscriber, as the export is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refreshed {
    /// Their stored row hash.
    hash: RowHash,
    /// Whether the export names them (in a valid or a rejected record).
    named: bool,
    /// Whether the export would have changed or removed them.
    superseded: bool,
}

/// The subscribers a refresh read after the export was written, by email.
#[derive(Default)]
pub(super) struct Newer {
    /// When the export was written; `None`: no refresh is newer (nothing to forget).
    pub(super) written_at: Option<DateTime<Utc>>,
    rows: HashMap<String, Refreshed>,
    /// The export's last record so far: the rows of omitted subscribers come after it
    /// (a mark keeps a record number of 32 bits, as an export's are).
    last_record: u64,
}

impl Newer {
    /// Nobody refreshed yet; the export written at `written_at`.
    pub(super) fn new(written_at: Option<DateTime<Utc>>) -> Newer {
        Newer {
            written_at,
            rows: HashMap::new(),
            last_record: 1,
        }
    }

    /// A subscriber refreshed after the export was written, with their stored hash.
    pub(super) fn insert(&mut self, email: String, hash: RowHash) {
        let refreshed = Refreshed {
            hash,
            named: false,
            superseded: false,
        };
        self.rows.insert(email, refreshed);
    }

    /// The row to stage for this export row: with the stored hash when a newer refresh
    /// holds the subscriber and the export says something else.
    pub(super) fn keep(&mut self, mut row: Row) -> Row {
        self.last_record = self.last_record.max(row.record);
        if let Some(refreshed) = self.rows.get_mut(row.email()) {
            refreshed.named = true;
            if refreshed.hash != row.row_hash {
                refreshed.superseded = true;
                row.row_hash = refreshed.hash;
            }
        }
        row
    }

    /// Notes that the export names the subscriber (in a rejected record).
    pub(super) fn named(&mut self, record: u64, email: &str) {
        self.last_record = self.last_record.max(record);
        if let Some(refreshed) = self.rows.get_mut(email) {
            refreshed.named = true;
        }
    }

    /// Rows of the subscribers the export omits, now superseded: each their email and
    /// stored hash, after the export's last record.
    pub(super) fn omitted(&mut self) -> Vec<Row> {
        let mut omitted: Vec<(&String, &mut Refreshed)> =
            self.rows.iter_mut().filter(|(_, r)| !r.named).collect();
        omitted.sort_by(|a, b| a.0.cmp(b.0));
        let first = self.last_record + 1;
        omitted
            .into_iter()
            .enumerate()
            .map(|(i, (email, refreshed))| {
                (refreshed.named, refreshed.superseded) = (true, true);
                Row::stored_as(first + i as u64, email, refreshed.hash)
            })
            .collect()
    }

    /// How many subscribers the export would have changed or removed.
    pub(super) fn superseded(&self) -> u64 {
        self.rows.values().filter(|r| r.superseded).count() as u64
    }
}
