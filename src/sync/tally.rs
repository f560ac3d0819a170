//! The row loop of a run: each checked record counted, its warnings and its first
//! rejections kept, and handed to staging. No decision is taken here.

use crate::export::Checked;
use crate::run::{Rejection, RowCounts, WarningCounts};
use crate::store::{Backend, REJECTION_CAP, Staging, StoreError};

/// How many rows ahead the memory their staging reads is asked for: some six hundred
/// cache lines, within the core's own cache.
const AHEAD: usize = 128;

/// Counts and the first rejections of the export being read.
#[derive(Default)]
pub struct Tally {
    /// Records read, valid and rejected.
    pub rows: RowCounts,
    /// The first rejections, at most [`REJECTION_CAP`].
    pub rejections: Vec<Rejection>,
    /// Warnings of valid rows, by code.
    pub warnings: WarningCounts,
}

impl Tally {
    /// Counts a batch of checked records and stages them: a valid row to be compared,
    /// a rejected record's readable email so that its subscriber is not taken as
    /// removed.
    pub async fn take<B: Backend>(
        &mut self,
        records: Vec<Checked>,
        staging: &mut Staging<B>,
    ) -> Result<(), StoreError> {
        let mut records = records.into_iter();
        staging.prefetch(
            records
                .as_slice()
                .get(..AHEAD)
                .unwrap_or(records.as_slice()),
        );
        for taken in 0.. {
            if taken % AHEAD == 0 {
                let next = records.as_slice().get(AHEAD..).unwrap_or_default();
                staging.prefetch(&next[..next.len().min(AHEAD)]);
            }
            let Some(checked) = records.next() else { break };
            self.rows.read += 1;
            match checked {
                Checked::Valid(row, warned) => {
                    self.rows.valid += 1;
                    for code in warned.codes() {
                        self.warnings.add(code, 1);
                    }
                    staging.add_valid(row).await?;
                }
                Checked::Rejected { email, rejections } => {
                    self.rows.rejected += 1;
                    let record = rejections.first().map_or(0, |r| r.record);
                    self.keep_of(rejections, email.as_deref());
                    if let Some(email) = email {
                        staging.add_rejected(record, email).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps rejections while there is room.
    pub fn keep(&mut self, rejections: impl IntoIterator<Item = Rejection>) {
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
