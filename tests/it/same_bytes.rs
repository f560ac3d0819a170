//! A record whose bytes are those of a stored row is judged on a later night exactly as
//! the full path judges it, whichever way the store finds what changed: the hashes held
//! in one set, in passes, or not held at all (every row staged and compared by the
//! database), as [`every_other_path`] lists them. Issue 32 asked this of any path that
//! skips work for unchanged rows: a date that has since passed is rejected and one that
//! has entered the expiry buffer is warned about, and neither a reordered header nor
//! what the template ignores (case of the status or the email, white space in a trimmed
//! cell) makes a row changed. Both stores, through the library.

use crate::common::*;
use crate::plans::{comparable, every_other_path, run_export_on, stored, tuned};
use chrono::{DateTime, NaiveDate, Utc};
use cleeng_sync::run::{ChangeCounts, Outcome, RunReport, WarningCode};
use cleeng_sync::store::{StoredTraits, Tuning};
use cleeng_sync::sync::RunOptions;
use cleeng_sync::with_store;

/// The first night. Every date below is this day plus some days, so the test reads the
/// same whatever the calendar says.
fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).expect("a date")
}

/// Noon in Los Angeles (the connector's zone) `days` after the first night.
fn noon_after(days: u64) -> DateTime<Utc> {
    let day = first_day() + chrono::Days::new(days);
    day.and_hms_opt(19, 0, 0).expect("a time").and_utc()
}

/// Subscriber `i`'s row expiring `days` after the first night.
fn expiring(i: u32, days: u64) -> String {
    let far = format!("2099-{:02}-{:02}", 1 + i % 12, 1 + i % 28);
    let date = first_day() + chrono::Days::new(days);
    row(i).replacen(&far, &date.format("%Y-%m-%d").to_string(), 1)
}

/// The first night's rows: 1 expires on day 4, 2 on day 11, the others far ahead.
fn night_rows() -> Vec<String> {
    (1..41)
        .map(|i| match i {
            1 => expiring(1, 4),
            2 => expiring(2, 11),
            _ => row(i),
        })
        .collect()
}

/// The same records with the header's columns in reverse order, subscriber 3's status
/// and 4's email in other cases, and 5's campaign padded with spaces: what the
/// template reads as the same traits.
fn reordered_and_recased() -> String {
    let reversed = |line: &str| line.rsplit(',').collect::<Vec<_>>().join(",");
    let mut out = reversed(HEADER);
    out.push('\n');
    for (i, line) in (1..).zip(night_rows()) {
        let line = match i {
            3 => line.replace(",stopped,", ",STOPPED,"),
            4 => line.replace("user4@example.com", "User4@EXAMPLE.com"),
            5 => line.replace(",Campaign 5,", ",  Campaign 5 ,"),
            _ => line,
        };
        out.push_str(&reversed(&line));
        out.push('\n');
    }
    out
}

/// Three nights through a store with these limits: the first load on day 0; a week
/// later the same bytes and one new subscriber (so that the export's content differs);
/// the same day, the same records reordered and recased.
async fn nights(tuning: Tuning) -> (Vec<RunReport>, Vec<StoredTraits>) {
    let env = Env::new();
    let opened = tuned(&env, tuning).await;
    let reports = with_store!(opened, store => {
        let first = csv(night_rows());
        let later = csv(night_rows().into_iter().chain([row(41)]));
        let third = reordered_and_recased();
        let (options, day, week) = (RunOptions::default(), noon_after(0), noon_after(8));
        vec![
            run_export_on(&store, &env, "1.csv", first, &options, day).await,
            run_export_on(&store, &env, "2.csv", later, &options, week).await,
            run_export_on(&store, &env, "3.csv", third, &options, week).await,
        ]
    });
    let reports = reports.into_iter().map(comparable).collect();
    (reports, stored(&env).await)
}

#[tokio::test]
async fn unchanged_bytes_are_judged_on_the_day_they_are_read_on_every_path() {
    let (usual, usual_traits) = nights(Tuning::default()).await;
    let outcomes: Vec<Outcome> = usual.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Applied; 3], "{usual:#?}");
    let counts = |inserted, unchanged| ChangeCounts {
        inserted,
        updated: 0,
        unchanged,
        removed: 0,
        ..ChangeCounts::default()
    };
    assert_eq!(usual[0].changes, counts(40, 0), "{:#?}", usual[0]);
    assert!(usual[0].warnings.is_empty(), "{:#?}", usual[0]);
    // A week later 1's date has passed: its unchanged bytes are rejected, and it stays
    // stored as it was (a subscriber seen only in rejected rows is not removed). 2's
    // date is now within the buffer: warned about, and unchanged.
    for night in &usual[1..] {
        assert_eq!(night.rows.rejected, 1, "{night:#?}");
        assert_eq!(
            night.warnings.get(WarningCode::ExpiryWithinBuffer),
            1,
            "{night:#?}"
        );
    }
    assert_eq!(usual[1].changes, counts(1, 39), "{:#?}", usual[1]);
    // The reordered, recased export is the same traits: nothing changed, nothing
    // removed (41 left out: removed, and nobody else).
    assert_eq!(
        usual[2].changes,
        ChangeCounts {
            removed: 1,
            ..counts(0, 39)
        },
        "{:#?}",
        usual[2]
    );
    let one = usual_traits
        .iter()
        .find(|t| t.email == "user1@example.com")
        .expect("1 stored");
    assert_eq!(
        (one.expiry_date.as_str(), one.removed_run),
        ("2026-06-05", None)
    );
    assert!(
        usual_traits
            .iter()
            .filter(|t| t.email != "user41@example.com")
            .all(|t| t.changed_run == usual[0].run_id),
        "only 41 changed after the first night: {usual_traits:#?}"
    );

    for tuning in every_other_path() {
        let (reports, traits) = nights(tuning).await;
        assert_eq!(reports, usual, "{tuning:?}");
        assert_eq!(traits, usual_traits, "{tuning:?}");
    }
}
