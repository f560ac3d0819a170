//! The store checks its plan against what its statements did, and the paths a large
//! connector takes (row hashes held in passes or not at all, the repeated-email check
//! over every row) give the same results as the usual ones. Both stores, through the library, with the
//! store's limits and its miscount hook set.

use crate::common::*;
use chrono::{DateTime, Utc};
use cleeng_sync::clock::FixedClock;
use cleeng_sync::config::Connector;
use cleeng_sync::progress::Silent;
use cleeng_sync::run::{ChangeCounts, Outcome, RunReport};
use cleeng_sync::source::FolderSource;
use cleeng_sync::store::{Backend, Miscount, Store, StoredTraits, Tuning};
use cleeng_sync::sync::{Job, RunOptions};
use cleeng_sync::with_store;

/// A fixed instant, so that `updated_at` is the same whichever path stored a row.
fn noon() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Replaces the export folder's content with one export and runs the connector once.
async fn run_export<B: Backend>(
    store: &Store<B>,
    env: &Env,
    name: &str,
    body: String,
    options: &RunOptions,
) -> RunReport {
    let dir = env.path("exports");
    let _ = std::fs::remove_dir_all(&dir);
    env.write(&format!("exports/{name}"), body);
    let connector = Connector::new(
        "default",
        &dir.display().to_string(),
        chrono_tz::America::Los_Angeles,
    );
    let job = Job {
        store,
        source: &FolderSource::new(&dir),
        connector: &connector,
        clock: &FixedClock(noon()),
        progress: &Silent,
    };
    let mut reports = job.run(options).await.expect("ledger writable");
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

/// The store of this env, with these limits.
async fn tuned(env: &Env, tuning: Tuning) -> cleeng_sync::store::Opened {
    cleeng_sync::store::open_tuned(&env.store_url(), tuning)
        .await
        .expect("open store")
}

/// Every stored subscriber among users 0..100 (the removed ones too).
async fn stored(env: &Env) -> Vec<StoredTraits> {
    with_store!(env.store().await, store => {
        let mut all = Vec::new();
        for i in 0..100 {
            let email = format!("user{i}@example.com");
            if let Some(t) = store.traits("default", &email).await.expect("read traits") {
                all.push(t);
            }
        }
        all
    })
}

/// Subscribers 1..=20 stored; the next export inserts 100, changes 5 and removes 20.
fn seed_and_change() -> (String, String) {
    let next: Vec<String> = (1..20)
        .map(|i| {
            if i == 5 {
                row(i).replace("COUPON", "NEW")
            } else {
                row(i)
            }
        })
        .chain([row(100)])
        .collect();
    (csv(rows(1..21)), csv(next))
}

#[tokio::test]
async fn a_plan_its_statements_do_not_match_fails_the_run_and_applies_nothing() {
    for (miscount, kind) in [
        (Miscount::Inserted, "inserted"),
        (Miscount::Updated, "updated"),
        (Miscount::Removed, "removed"),
    ] {
        let env = Env::new();
        let (seed, next) = seed_and_change();
        let plain = tuned(&env, Tuning::default()).await;
        let first = with_store!(plain, store =>
            run_export(&store, &env, "a.csv", seed, &RunOptions::default()).await);
        assert_eq!(first.outcome, Outcome::Applied, "{first:?}");
        let before = stored(&env).await;

        let wrong = tuned(
            &env,
            Tuning {
                miscount: Some(miscount),
                ..Tuning::default()
            },
        )
        .await;
        let report = with_store!(wrong, store =>
            run_export(&store, &env, "b.csv", next, &RunOptions::default()).await);
        assert_eq!(report.outcome, Outcome::Failed, "{kind}: {report:?}");
        let message = report.message.clone().unwrap_or_default();
        assert!(
            message.contains("rolled back")
                && message.contains("the plan counted")
                && message.contains(kind),
            "{kind}: {message}"
        );
        assert_eq!(
            report.changes,
            ChangeCounts::default(),
            "{kind}: nothing changed, so no change is reported as made"
        );
        let planned = report.planned.expect("the plan kept as planned");
        assert_eq!(
            (planned.inserted, planned.updated, planned.removed),
            match miscount {
                Miscount::Inserted => (2, 1, 1),
                Miscount::Updated => (1, 2, 1),
                Miscount::Removed => (1, 1, 2),
            },
            "{kind}"
        );
        assert_eq!(stored(&env).await, before, "{kind}: nothing applied");
        let ledger = env.runs(1).await;
        assert_eq!(ledger[0].report.outcome, Outcome::Failed);
        assert_eq!(ledger[0].report.changes, ChangeCounts::default(), "{kind}");
        assert_eq!(
            ledger[0].report.message.as_deref(),
            Some(message.as_str()),
            "{kind}"
        );
    }
}

/// A failed apply leaves no grown WAL behind in a process that keeps the store open.
#[tokio::test]
async fn a_failed_apply_gives_the_wal_back() {
    let env = Env::sqlite();
    let wrong = tuned(
        &env,
        Tuning {
            miscount: Some(Miscount::Inserted),
            ..Tuning::default()
        },
    )
    .await;
    let store = match wrong {
        cleeng_sync::store::Opened::Sqlite(store) => store,
        cleeng_sync::store::Opened::Postgres(_) => unreachable!("a SQLite env"),
    };
    // Some 20 MB of rows: far more than SQLite's page cache, so the apply spills its
    // pages into the WAL before it fails.
    let report = run_export(
        &store,
        &env,
        "big.csv",
        csv(rows(1..80_001)),
        &RunOptions::default(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(store.present("default").await.expect("count"), 0);
    let wal = std::fs::metadata(env.path("traits.db-wal")).map_or(0, |m| m.len());
    assert!(
        wal < 64 * 1024,
        "the WAL kept {wal} bytes after the rollback"
    );
}

/// Runs the same nights through a store with these limits; every report and every
/// stored subscriber.
async fn nights(tuning: Tuning) -> (Vec<RunReport>, Vec<StoredTraits>) {
    let env = Env::new();
    let forced = RunOptions {
        no_guards: true,
        ..RunOptions::default()
    };
    let broken_date = |i: u32| row(i).replace("2099-", "1999-");
    // 1: a first load, with a rejected-only subscriber (50).
    let first = csv(rows(1..41).into_iter().chain([broken_date(50)]));
    // 2: 3..=6 changed, 7 twice with the same traits, 8 twice with others, 9 rejected
    // (present: not removed), 60 rejected only, 1 gone, 70 new.
    let mut second: Vec<String> = (2..41)
        .map(|i| match i {
            3..=6 => row(i).replace("COUPON", "NEW"),
            9 => broken_date(9),
            _ => row(i),
        })
        .collect();
    second.extend([
        row(7),
        row(8).replace("Campaign", "Other"),
        broken_date(60),
        row(70),
    ]);
    // 3: 1 back, 7 and 8 once again, 9 valid again.
    let third = csv(rows(1..41).into_iter().chain([row(70)]));
    // 4: most subscribers gone: refused by max_removed_ratio.
    let fourth = csv(rows(1..11));

    let opened = tuned(&env, tuning).await;
    let reports = with_store!(opened, store => {
        let mut reports = Vec::new();
        reports.push(run_export(&store, &env, "1.csv", first, &RunOptions::default()).await);
        reports.push(run_export(&store, &env, "2.csv", csv(second), &forced).await);
        reports.push(run_export(&store, &env, "3.csv", third, &RunOptions::default()).await);
        reports.push(run_export(&store, &env, "4.csv", fourth, &RunOptions::default()).await);
        reports
    });
    let reports = reports
        .into_iter()
        .map(|mut r| {
            // Timing, and a folder's ETag (its file's modification time), differ.
            r.duration_ms = 0;
            if let Some(object) = &mut r.object {
                object.etag.clear();
            }
            r
        })
        .collect();
    (reports, stored(&env).await)
}

#[tokio::test]
async fn hashes_in_passes_or_not_held_and_repeats_checked_over_every_row_give_the_same_results() {
    let (usual, usual_traits) = nights(Tuning::default()).await;
    let outcomes: Vec<Outcome> = usual.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Refused
        ],
        "{usual:#?}"
    );
    let changes = |r: &RunReport| {
        let c = r.changes;
        [c.inserted, c.updated, c.unchanged, c.removed]
    };
    // Night 2: 70 new; 3..=6 changed; 7 and 8 rejected as repeated; 1 removed.
    assert_eq!(changes(&usual[1]), [1, 4, 32, 1], "{:#?}", usual[1]);
    assert_eq!(usual[1].rows.rejected, 6, "{:#?}", usual[1]);
    // Night 3: 1 back (updated), 3..=6 back to their first traits.
    assert_eq!(changes(&usual[2]), [0, 5, 36, 0], "{:#?}", usual[2]);

    for tuning in [
        // Past the held set's limit, in passes: two (the fewest), and six of 7 hashes.
        Tuning {
            max_held: 10,
            ..Tuning::default()
        },
        Tuning {
            max_held: 10,
            pass_held: 7,
            ..Tuning::default()
        },
        // In passes, and every email checked for repeats.
        Tuning {
            max_held: 0,
            pass_held: 7,
            max_candidates: 0,
            ..Tuning::default()
        },
        // Passes off: nothing held, every row staged.
        Tuning {
            max_held: 0,
            pass_held: 0,
            ..Tuning::default()
        },
        Tuning {
            max_held: 10,
            pass_held: 0,
            ..Tuning::default()
        },
        Tuning {
            max_candidates: 0,
            ..Tuning::default()
        },
        Tuning {
            max_held: 0,
            pass_held: 0,
            max_candidates: 0,
            ..Tuning::default()
        },
    ] {
        let (reports, traits) = nights(tuning).await;
        assert_eq!(reports, usual, "{tuning:?}");
        assert_eq!(traits, usual_traits, "{tuning:?}");
    }
}
