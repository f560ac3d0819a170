//! The status page's chart of a connector's recent runs, drawn on the server as inline
//! SVG: no script, no image request, readable offline.
//!
//! One strip of bars per kind of count (read, inserted, updated, removed, rejected),
//! each scaled to its own largest value: a night that removes 40 subscribers out of a
//! million still shows, where one shared scale would flatten everything but `read`.

use crate::run::RunRecord;
use maud::{Markup, html};

/// A count of a run.
type CountOf = fn(&RunRecord) -> u64;

/// The kinds of count drawn, by their name (also their CSS class).
const SERIES: [(&str, CountOf); 5] = [
    ("read", |r| r.report.rows.read),
    ("inserted", |r| r.report.changes.inserted),
    ("updated", |r| r.report.changes.updated),
    ("removed", |r| r.report.changes.removed),
    ("rejected", |r| r.report.rows.rejected),
];

/// The most runs drawn.
pub const RUNS_DRAWN: usize = 30;

const LABEL_WIDTH: f64 = 78.0;
const BAR_SLOT: f64 = 16.0;
const STRIP_HEIGHT: f64 = 30.0;
const STRIP_GAP: f64 = 8.0;

/// The chart of `runs`, oldest on the left; at most [`RUNS_DRAWN`] of the newest are
/// drawn. Every bar carries a tooltip with its run and value.
pub fn runs_chart(connector: &str, runs: &[RunRecord]) -> Markup {
    let runs = &runs[runs.len().saturating_sub(RUNS_DRAWN)..];
    let width = LABEL_WIDTH + BAR_SLOT * RUNS_DRAWN as f64 + 60.0;
    let height = (STRIP_HEIGHT + STRIP_GAP) * SERIES.len() as f64;
    let label = format!(
        "Rows read, inserted, updated, removed and rejected over the last {} runs of {connector}",
        runs.len()
    );
    html! {
        svg.chart viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            @for (i, (kind, value)) in SERIES.iter().enumerate() {
                @let top = i as f64 * (STRIP_HEIGHT + STRIP_GAP);
                @let values: Vec<u64> = runs.iter().map(value).collect();
                @let max = values.iter().copied().max().unwrap_or(0);
                g class=(format!("series {kind}")) data-kind=(kind) {
                    text x="0" y=(top + STRIP_HEIGHT / 2.0 + 4.0) { (kind) }
                    line x1=(LABEL_WIDTH) x2=(LABEL_WIDTH + BAR_SLOT * RUNS_DRAWN as f64)
                        y1=(top + STRIP_HEIGHT) y2=(top + STRIP_HEIGHT) {}
                    @for (j, (run, n)) in runs.iter().zip(&values).enumerate() {
                        @let h = bar_height(*n, max);
                        rect x=(LABEL_WIDTH + BAR_SLOT * j as f64 + 2.0) y=(top + STRIP_HEIGHT - h)
                            width=(BAR_SLOT - 4.0) height=(h) {
                            title { (format!("run {}: {n} {kind}", run.report.run_id)) }
                        }
                    }
                    text.max x=(LABEL_WIDTH + BAR_SLOT * RUNS_DRAWN as f64 + 6.0)
                        y=(top + 11.0) { "max " (count(max)) }
                }
            }
        }
    }
}

/// A bar's height: in proportion to the strip's largest value, and at least a sliver
/// for any non-zero count so that "a few" never reads as "none".
fn bar_height(n: u64, max: u64) -> f64 {
    if n == 0 || max == 0 {
        return 0.0;
    }
    (STRIP_HEIGHT * n as f64 / max as f64).max(1.5)
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{ChangeCounts, Outcome, RowCounts, RunReport, Trigger};

    fn run(id: i64, read: u64, removed: u64) -> RunRecord {
        RunRecord {
            report: RunReport {
                rows: RowCounts {
                    read,
                    valid: read,
                    rejected: 0,
                },
                changes: ChangeCounts {
                    removed,
                    ..ChangeCounts::default()
                },
                ..RunReport::empty(id, "default", Outcome::Applied)
            },
            trigger: Trigger::Schedule,
            scheduled_for: None,
            started_at: String::new(),
            finished_at: None,
        }
    }

    #[test]
    fn each_kind_is_scaled_to_its_own_largest_count() {
        let runs = [run(1, 1_000_000, 40), run(2, 500_000, 0)];
        let svg = runs_chart("default", &runs).into_string();
        // `read` and `removed` each reach the full strip at their own maximum.
        assert_eq!(svg.matches(r#"height="30""#).count(), 2, "{svg}");
        assert!(
            svg.contains(r#"height="15""#),
            "half the largest read: {svg}"
        );
        assert!(svg.contains("<title>run 1: 40 removed</title>"), "{svg}");
        assert!(svg.contains("<title>run 2: 0 removed</title>"), "{svg}");
    }

    #[test]
    fn only_the_newest_runs_are_drawn() {
        let runs: Vec<RunRecord> = (1..=45).map(|id| run(id, 10, 0)).collect();
        let svg = runs_chart("default", &runs).into_string();
        assert!(!svg.contains("run 15:"), "{svg}");
        assert!(svg.contains("run 16: 10 read"), "{svg}");
        assert!(svg.contains("run 45: 10 read"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 5 * RUNS_DRAWN);
    }

    #[test]
    fn a_small_count_is_never_drawn_as_none() {
        assert_eq!(bar_height(0, 1_000_000), 0.0);
        assert!(bar_height(1, 1_000_000) >= 1.5);
        assert_eq!(bar_height(5, 0), 0.0);
    }
}
