//! The marks of the rows kept for passes ([`super::passes`]): each pass's rows read
//! back and marked on its stored keys, exactly as a held set marks them as they
//! stream ([`super::area`]).
//!
//! [`AT_ONCE`] passes are marked at once, each on a blocking thread of its own, and what
//! they find to stage comes back to the run's task, the one that holds the tables: a
//! pass's work (loading its keys, reading its rows back, a lookup per row) is the same
//! wherever it runs, and no pass reads what another writes. A pass's rows reach the
//! staging in the export's order, interleaved with those of the pass beside it.

use crate::export::Row;
use crate::store::backend::{ByEmail, Tables};
use crate::store::error::{Result, StoreError};
use crate::store::staging::held::Mark;
use crate::store::staging::passes::{AT_ONCE, PassFiles, Passes, unmarked};
use crate::store::staging::repeats::RepeatCheck;
use crate::store::staging::spill::Spill;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// Rows of a pass read ahead of their marks, so that their lookups overlap.
const AHEAD: usize = 128;

/// Rows to stage sent back at once, and how many such batches may wait: with one being
/// filled on each thread and one being staged, some seven batches of rows (about 2 MB)
/// in flight at most.
const BATCH: usize = 512;
const QUEUED: usize = 4;

/// What a pass found for the tables.
enum Staged {
    /// A row whose hash is not stored: staged in full.
    Full(Row),
    /// A marked row of an email that may repeat: staged by its record and email.
    Marked(Row),
}

/// What one thread's passes leave behind.
#[derive(Default)]
struct Passed {
    /// Rows marked and not staged.
    marked: u64,
    /// Per pass, the keys no row marked.
    unmarked: Vec<(usize, Spill)>,
}

/// Marks the rows kept for passes, [`AT_ONCE`] passes at a time, as a held set marks
/// them as they stream ([`super::Staging`]); stages the rest in `tables`, and the marked
/// rows of emails that may repeat (`check`). Counts the rows marked, and those marked
/// and staged by email.
pub async fn mark(
    passes: &mut Passes,
    tables: &mut impl Tables,
    check: &RepeatCheck,
    marked: &mut u64,
    marked_staged: &mut u64,
) -> Result<()> {
    passes.keys_read().await?;
    let candidates: Option<Arc<HashSet<String>>> = match check {
        RepeatCheck::None => Some(Arc::default()),
        RepeatCheck::Only(emails) => Some(Arc::new(emails.iter().cloned().collect())),
        RepeatCheck::All => None,
    };
    // Dealt out in turn: the passes are of even size, so the threads' shares are too.
    let mut shares: Vec<Vec<(usize, PassFiles)>> = (0..AT_ONCE).map(|_| Vec::new()).collect();
    for p in 0..passes.parts() {
        shares[p % AT_ONCE].push((p, passes.take(p)?));
    }
    let (sender, mut found) = mpsc::channel(QUEUED);
    let threads: Vec<AbortOnDropHandle<Result<Passed>>> = shares
        .into_iter()
        .map(|share| {
            let (sender, candidates) = (sender.clone(), candidates.clone());
            AbortOnDropHandle::new(tokio::task::spawn_blocking(move || {
                mark_share(share, candidates.as_deref(), &sender)
            }))
        })
        .collect();
    drop(sender);

    let staged = stage(&mut found, tables, marked_staged).await;
    // A failed staging ends the threads: their next send finds nobody.
    drop(found);
    let mut failed = staged.err();
    for thread in threads {
        let passed = thread.await.map_err(|e| {
            StoreError::Interrupted(format!("marking the rows held for passes stopped: {e}"))
        });
        match passed.and_then(|passed| passed) {
            Ok(passed) if failed.is_none() => {
                *marked += passed.marked;
                for (p, keys) in passed.unmarked {
                    passes.passed(p, keys)?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Stages what the passes found, until every thread is done.
async fn stage(
    found: &mut mpsc::Receiver<Vec<Staged>>,
    tables: &mut impl Tables,
    marked_staged: &mut u64,
) -> Result<()> {
    while let Some(batch) = found.recv().await {
        for staged in batch {
            match staged {
                Staged::Full(row) => tables.full(row).await?,
                Staged::Marked(row) => {
                    *marked_staged += 1;
                    tables
                        .by_email(row.record, row.email(), ByEmail::Marked)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Marks the rows of these passes, one after the other, sending what is to be staged.
fn mark_share(
    share: Vec<(usize, PassFiles)>,
    candidates: Option<&HashSet<String>>,
    sender: &mpsc::Sender<Vec<Staged>>,
) -> Result<Passed> {
    let mut passed = Passed::default();
    let mut out = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(AHEAD);
    for (p, files) in share {
        let (mut held, mut rows) = files.load()?;
        loop {
            while batch.len() < AHEAD
                && let Some(row) = rows.next_row()?
            {
                batch.push(row);
            }
            if batch.is_empty() {
                break;
            }
            // A pass's set is as large as a held one, read at random: its lookups are
            // asked for a batch ahead, as when rows are marked as they stream.
            held.prefetch(batch.iter().map(|row| &row.row_hash));
            for row in batch.drain(..) {
                let may_repeat = candidates.is_none_or(|c| c.contains(row.email()));
                match held.mark(&row.row_hash, row.record) {
                    Mark::First if !may_repeat => passed.marked += 1,
                    Mark::First | Mark::Again => out.push(Staged::Marked(row)),
                    Mark::New => out.push(Staged::Full(row)),
                }
                if out.len() == BATCH {
                    send(sender, &mut out)?;
                }
            }
        }
        passed.unmarked.push((p, unmarked(&held)?));
    }
    send(sender, &mut out)?;
    Ok(passed)
}

/// Sends the rows found so far, waiting while the tables catch up.
fn send(sender: &mpsc::Sender<Vec<Staged>>, out: &mut Vec<Staged>) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let batch = std::mem::replace(out, Vec::with_capacity(BATCH));
    sender.blocking_send(batch).map_err(|_| {
        StoreError::Interrupted("the rows held for passes were no longer staged".into())
    })
}
