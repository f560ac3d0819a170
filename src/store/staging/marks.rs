//! The marks of the rows kept for passes ([`super::passes`]): each pass's rows read
//! back and marked on its stored keys, exactly as a held set marks them as they
//! stream ([`super::area`]).

use crate::store::backend::{ByEmail, Tables};
use crate::store::error::Result;
use crate::store::staging::held::Mark;
use crate::store::staging::passes::Passes;
use crate::store::staging::repeats::RepeatCheck;

/// Rows of a pass read ahead of their marks, so that their lookups overlap.
const AHEAD: usize = 128;

/// Marks the rows kept for passes, a pass at a time, as a held set marks them as they
/// stream ([`super::Staging`]); stages the rest in `tables`, and the marked rows of
/// emails that may repeat (`check`). Counts the rows marked, and those marked and
/// staged by email.
pub async fn mark(
    passes: &mut Passes,
    tables: &mut impl Tables,
    check: &RepeatCheck,
    marked: &mut u64,
    marked_staged: &mut u64,
) -> Result<()> {
    passes.keys_read().await?;
    let candidates: Option<std::collections::HashSet<&str>> = match check {
        RepeatCheck::None => Some(Default::default()),
        RepeatCheck::Only(emails) => Some(emails.iter().map(String::as_str).collect()),
        RepeatCheck::All => None,
    };
    let mut batch = Vec::with_capacity(AHEAD);
    for p in 0..passes.parts() {
        let (mut held, mut rows) = passes.pass(p)?;
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
                let may_repeat = candidates.as_ref().is_none_or(|c| c.contains(row.email()));
                match held.mark(&row.row_hash, row.record) {
                    Mark::First if !may_repeat => *marked += 1,
                    Mark::First | Mark::Again => {
                        *marked_staged += 1;
                        tables
                            .by_email(row.record, row.email(), ByEmail::Marked)
                            .await?;
                    }
                    Mark::New => tables.full(row).await?,
                }
            }
        }
        passes.passed(p, &held)?;
    }
    Ok(())
}
