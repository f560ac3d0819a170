//! The guards: checked before anything is written, on the counts alone, so that a
//! broken export is refused rather than applied. Pure, tested without a store.

use crate::config::Guards;
use crate::run::{ChangeCounts, RowCounts};

/// Why the guards refuse a run with these counts, or `None` when they let it through.
/// `present` is how many subscribers were present before it.
pub fn refusal(
    guards: &Guards,
    rows: RowCounts,
    changes: ChangeCounts,
    present: u64,
) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(read: u64, rejected: u64) -> RowCounts {
        RowCounts {
            read,
            valid: read - rejected,
            rejected,
        }
    }

    fn removed(removed: u64) -> ChangeCounts {
        ChangeCounts {
            removed,
            ..ChangeCounts::default()
        }
    }

    #[test]
    fn each_limit_refuses_only_past_itself() {
        let guards = Guards::default();
        assert_eq!(
            refusal(&guards, rows(100, 5), removed(10), 100),
            None,
            "at both limits"
        );
        let rejected = refusal(&guards, rows(100, 6), removed(0), 100).expect("refused");
        assert!(
            rejected.starts_with("refused by max_rejected_ratio: 6 of 100 rows"),
            "{rejected}"
        );
        let gone = refusal(&guards, rows(100, 0), removed(11), 100).expect("refused");
        assert!(
            gone.starts_with("refused by max_removed_ratio: the snapshot removes 11 of 100"),
            "{gone}"
        );
    }

    #[test]
    fn nothing_read_or_nothing_present_is_no_share() {
        let guards = Guards::default();
        assert_eq!(refusal(&guards, rows(0, 0), removed(0), 0), None);
        assert_eq!(
            refusal(&guards, rows(10, 0), removed(5), 0),
            None,
            "a first load removes nobody"
        );
    }
}
