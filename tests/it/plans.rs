//! The store checks its plan against what its statements did, and the paths a large
//! connector takes (row hashes held in passes or not at all, the repeated-email check
//! over every row) give the same results as the usual ones. Both stores, through the library, with the
//! store's limits and its miscount hook set.

use crate::common::*;
use chrono::{DateTime, Utc};
use cleeng_sync::change::Cursor;
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
    run_export_on(store, env, name, body, options, noon()).await
}

/// [`run_export`] on the day `clock` says.
pub(crate) async fn run_export_on<B: Backend>(
    store: &Store<B>,
    env: &Env,
    name: &str,
    body: String,
    options: &RunOptions,
    clock: DateTime<Utc>,
) -> RunReport {
    let _ = std::fs::remove_dir_all(env.path("exports"));
    env.write(&format!("exports/{name}"), body);
    run_folder_on(store, env, options, clock).await
}

/// Runs the connector once on the export folder as it is.
async fn run_folder<B: Backend>(store: &Store<B>, env: &Env, options: &RunOptions) -> RunReport {
    run_folder_on(store, env, options, noon()).await
}

/// [`run_folder`] on the day `clock` says.
async fn run_folder_on<B: Backend>(
    store: &Store<B>,
    env: &Env,
    options: &RunOptions,
    clock: DateTime<Utc>,
) -> RunReport {
    let dir = env.path("exports");
    let connector = Connector::new(
        "default",
        &dir.display().to_string(),
        chrono_tz::America::Los_Angeles,
    );
    let job = Job {
        store,
        source: &FolderSource::new(&dir),
        connector: &connector,
        clock: &FixedClock(clock),
        progress: &Silent,
    };
    let mut reports = job.run(options).await.expect("ledger writable");
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

/// A report as two paths that should agree give it: timing, and a folder's ETag (its
/// file's modification time), differ.
pub(crate) fn comparable(mut report: RunReport) -> RunReport {
    report.duration_ms = 0;
    if let Some(object) = &mut report.object {
        object.etag.clear();
    }
    report
}

/// The store of this env, with these limits.
pub(crate) async fn tuned(env: &Env, tuning: Tuning) -> cleeng_sync::store::Opened {
    cleeng_sync::store::open_tuned(&env.store_url(), tuning)
        .await
        .expect("open store")
}

/// Every stored subscriber among users 0..100 (the removed ones too).
pub(crate) async fn stored(env: &Env) -> Vec<StoredTraits> {
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
        let feed = with_store!(env.store().await, store =>
            store.changes("default", &[], Cursor::default(), 100).await.expect("the feed"));
        assert!(
            feed.changes.is_empty(),
            "{kind}: a failed run records no change"
        );
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
    let reports = reports.into_iter().map(comparable).collect();
    (reports, stored(&env).await)
}

/// Every other way the store finds what changed, with limits small enough for a test's
/// few rows: hashes in passes (read beside the export or before it), every email checked
/// for repeats, and nothing held. Each must give the default path's results.
pub(crate) fn every_other_path() -> Vec<Tuning> {
    vec![
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
        // Each of those reads the hashes beside the export, which alone is past the
        // limit: here they are read before it, as when only the stored ones are.
        Tuning {
            max_held: 10,
            pass_held: 7,
            read_beside: false,
            ..Tuning::default()
        },
        Tuning {
            max_held: 0,
            pass_held: 7,
            max_candidates: 0,
            read_beside: false,
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
    ]
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

    for tuning in every_other_path() {
        let (reports, traits) = nights(tuning).await;
        assert_eq!(reports, usual, "{tuning:?}");
        assert_eq!(traits, usual_traits, "{tuning:?}");
    }
}

/// Writes what a refresh would: the subscriber's status flipped at Cleeng (or as is).
async fn refreshed<B: Backend>(store: &Store<B>, i: u32, flip: bool, at: DateTime<Utc>) {
    let email = format!("user{i}@example.com");
    let read = store
        .traits("default", &email)
        .await
        .expect("read")
        .expect("stored");
    let status = match (flip, read.status.as_str()) {
        (true, "active") => "stopped",
        (true, _) => "active",
        (false, status) => status,
    };
    let expiry = chrono::NaiveDate::parse_from_str(&read.expiry_date, "%Y-%m-%d").expect("date");
    let row = read
        .as_row(0, Some((&read.offer_id, status, expiry)))
        .expect("a row");
    let hash = row.row_hash.hex();
    let written = store
        .write_live(&cleeng_sync::store::LiveWrite {
            read: &read,
            offer_id: &read.offer_id,
            status,
            expiry_date: expiry,
            row_hash: hash.as_str(),
            live_at: at,
            live_source: "manual",
        })
        .await
        .expect("write");
    assert!(written);
}

/// One export, its file written at `at`, run once.
async fn run_export_at<B: Backend>(
    store: &Store<B>,
    env: &Env,
    body: String,
    at: DateTime<Utc>,
) -> RunReport {
    let _ = std::fs::remove_dir_all(env.path("exports"));
    let path = env.write("exports/night.csv", body);
    written_at(&path, at.into());
    comparable(run_folder(store, env, &RunOptions::default()).await)
}

/// A first load; refreshes of 3 and 9 (flipped) and 5 (as is) at noon; an export
/// written an hour before them (3 and 4 changed, 9 left out); one written an hour after.
async fn refreshed_nights(tuning: Tuning) -> (Vec<RunReport>, Vec<StoredTraits>) {
    let env = Env::new();
    let hour = chrono::TimeDelta::hours(1);
    let opened = tuned(&env, tuning).await;
    let reports = with_store!(opened, store => {
        let mut reports = Vec::new();
        let first = csv(rows(1..41));
        reports.push(run_export_at(&store, &env, first.clone(), noon() - hour * 2).await);
        for (i, flip) in [(3, true), (5, false), (9, true)] {
            refreshed(&store, i, flip, noon()).await;
        }
        let older: Vec<String> = (1..41)
            .filter(|&i| i != 9)
            .map(|i| match i {
                3 | 4 => row(i).replace("COUPON", "NEW"),
                _ => row(i),
            })
            .collect();
        reports.push(run_export_at(&store, &env, csv(older), noon() - hour).await);
        reports.push(run_export_at(&store, &env, first, noon() + hour).await);
        reports
    });
    (reports, stored(&env).await)
}

#[tokio::test]
async fn an_older_export_leaves_refreshed_subscribers_alike_on_every_path() {
    let (usual, usual_traits) = refreshed_nights(Tuning::default()).await;
    let changes = |r: &RunReport| {
        let c = r.changes;
        [c.inserted, c.updated, c.unchanged, c.removed, c.superseded]
    };
    // 3 changed and 9 left out by the older export: superseded; 4 updated.
    assert_eq!(changes(&usual[1]), [0, 1, 37, 0, 2], "{:#?}", usual[1]);
    // The newer export applies to all: 3 and 9 back to the export's, 4 back.
    assert_eq!(changes(&usual[2]), [0, 3, 37, 0, 0], "{:#?}", usual[2]);
    assert!(usual_traits.iter().all(|t| t.live_at.is_none()));
    for tuning in [
        Tuning {
            max_held: 10,
            ..Tuning::default()
        },
        // The refreshed subscribers read a page of one, then of two, at a time.
        Tuning {
            live_page: 1,
            ..Tuning::default()
        },
        Tuning {
            live_page: 2,
            max_held: 0,
            pass_held: 7,
            max_candidates: 0,
            ..Tuning::default()
        },
        Tuning {
            max_held: 10,
            read_beside: false,
            ..Tuning::default()
        },
        Tuning {
            max_held: 0,
            pass_held: 0,
            ..Tuning::default()
        },
    ] {
        let (reports, traits) = refreshed_nights(tuning).await;
        assert_eq!(reports, usual, "{tuning:?}");
        assert_eq!(traits, usual_traits, "{tuning:?}");
    }
}

#[tokio::test]
async fn the_next_export_reads_only_the_refreshed_rows_through_their_index() {
    let env = Env::new();
    let opened = tuned(&env, Tuning::default()).await;
    with_store!(opened, store => {
        let hour = chrono::TimeDelta::hours(1);
        run_export_at(&store, &env, csv(rows(0..3000)), noon() - hour).await;
        refreshed(&store, 7, true, noon()).await;
        if on_postgres() {
            // As autovacuum does after a load: the planner judges by the table's statistics.
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&env.store_url()).await.expect("connect");
            sqlx::query("ANALYZE subscription_traits").execute(&mut conn).await.expect("analyze");
        }
        let plan = store.live_after_plan("default", noon() - hour).await.expect("explain");
        assert!(plan.contains("subscription_traits_live"), "{plan}");
        let mut live = Vec::new();
        store
            .live_hashes("default", noon() - hour, |email, hash| {
                live.push((email, hash));
                Ok(())
            })
            .await
            .expect("read");
        let seven = store.traits("default", "user7@example.com").await.expect("read");
        assert_eq!(live, [("user7@example.com".to_string(), seven.expect("stored").row_hash)]);
        let mut later = 0;
        store
            .live_hashes("default", noon(), |_, _| {
                later += 1;
                Ok(())
            })
            .await
            .expect("read");
        assert_eq!(later, 0);
    });
}
