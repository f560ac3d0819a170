//! What is due when: the daemon's decisions, driven by an injected clock over real
//! claims in a SQLite store, across the 2026 DST changes in Los Angeles.

use crate::common::Env;
use chrono::{DateTime, TimeDelta, Utc};
use cleeng_sync::config::Schedule;
use cleeng_sync::run::Trigger;
use cleeng_sync::schedule::{CLAIM_LEASE, Scheduler, Timetable};
use cleeng_sync::store::{Backend, RunStart, SlotClaim, Store};
use std::str::FromStr;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn scheduler(cron: &str, catch_up: &str, holder: &str) -> Scheduler {
    let timetable = Timetable::new(&Schedule {
        cron: cron::Schedule::from_str(cron).expect("cron"),
        timezone: chrono_tz::America::Los_Angeles,
        catch_up: humantime::parse_duration(catch_up).expect("duration"),
    });
    Scheduler::new(timetable, vec!["default".into()], holder.into())
}

/// Drives a daemon's loop from `from` to `until` as it would run: look at the clock,
/// run (here: settle at once) what it won, sleep to the next check. Returns each run
/// as (scheduled local time, instant it ran).
async fn drive<B: Backend>(
    store: &Store<B>,
    scheduler: &Scheduler,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>)> {
    let mut ran = Vec::new();
    let mut now = from;
    while now <= until {
        for due in scheduler.tick(store, now).await.expect("tick") {
            let label = due.slot.label();
            settle(store, scheduler, &due.connector, &label).await;
            ran.push((label, now));
        }
        let next = scheduler.timetable().next_check(now);
        assert!(next > now, "the loop must move forward from {now}");
        now = next;
    }
    ran
}

async fn settle<B: Backend>(store: &Store<B>, scheduler: &Scheduler, connector: &str, slot: &str) {
    let claim = SlotClaim {
        connector,
        slot,
        holder: scheduler.holder(),
    };
    store.settle_claim(claim).await.expect("settle");
}

/// [`drive`] over a fresh store.
async fn drive_fresh(cron: &str, from: &str, until: &str) -> Vec<(String, DateTime<Utc>)> {
    let env = Env::new();
    cleeng_sync::with_store!(env.store().await, store => {
        drive(&store, &scheduler(cron, "12h", "a"), utc(from), utc(until)).await
    })
}

fn runs(list: &[(&str, &str)]) -> Vec<(String, DateTime<Utc>)> {
    list.iter().map(|(l, t)| (l.to_string(), utc(t))).collect()
}

#[tokio::test]
async fn fall_back_runs_the_repeated_time_once() {
    // 2026-11-01: 01:00-02:00 happens twice in Los Angeles (PDT, then PST).
    let ran = drive_fresh(
        "0 30 1 * * *",
        "2026-10-31T23:00:00-07:00",
        "2026-11-01T05:00:00-08:00",
    )
    .await;
    assert_eq!(
        ran,
        runs(&[(
            "2026-11-01T01:30:00 America/Los_Angeles",
            "2026-11-01T01:30:00-07:00"
        )])
    );
}

#[tokio::test]
async fn spring_forward_runs_a_skipped_time_once_when_the_clocks_move() {
    // 2026-03-08: 02:00-03:00 does not exist in Los Angeles; 02:30 runs at 03:00 PDT.
    let ran = drive_fresh(
        "0 30 2 * * *",
        "2026-03-07T23:00:00-08:00",
        "2026-03-08T06:00:00-07:00",
    )
    .await;
    assert_eq!(
        ran,
        runs(&[(
            "2026-03-08T02:30:00 America/Los_Angeles",
            "2026-03-08T03:00:00-07:00"
        )])
    );
}

#[tokio::test]
async fn an_ordinary_day_runs_once_and_a_restarted_daemon_does_not_run_again() {
    let env = Env::new();
    cleeng_sync::with_store!(env.store().await, store => {
        let first = scheduler("0 30 1 * * *", "12h", "a");
        let ran = drive(
            &store,
            &first,
            utc("2026-11-21T00:00:00-08:00"),
            utc("2026-11-21T03:00:00-08:00"),
        )
        .await;
        assert_eq!(
            ran,
            runs(&[(
                "2026-11-21T01:30:00 America/Los_Angeles",
                "2026-11-21T01:30:00-08:00"
            )])
        );

        // Restarted at 01:40, well within catch-up: the claim says 01:30 ran.
        let restarted = scheduler("0 30 1 * * *", "12h", "b");
        let ran = drive(
            &store,
            &restarted,
            utc("2026-11-21T01:40:00-08:00"),
            utc("2026-11-21T12:00:00-08:00"),
        )
        .await;
        assert_eq!(ran, []);
    })
}

#[tokio::test]
async fn catch_up_runs_the_latest_missed_time_once_and_not_an_older_one() {
    let env = Env::new();
    cleeng_sync::with_store!(env.store().await, store => {
        // Down at 01:30, started at 05:00: 01:30 runs at start-up, once.
        let daemon = scheduler("0 30 1 * * *", "12h", "a");
        let ran = drive(
            &store,
            &daemon,
            utc("2026-11-21T05:00:00-08:00"),
            utc("2026-11-21T08:00:00-08:00"),
        )
        .await;
        assert_eq!(
            ran,
            runs(&[(
                "2026-11-21T01:30:00 America/Los_Angeles",
                "2026-11-21T05:00:00-08:00"
            )])
        );

        // Started at 14:00, 12 h 30 min after 01:30: too old; the next night runs.
        let ran = drive_fresh(
            "0 30 1 * * *",
            "2026-11-21T14:00:00-08:00",
            "2026-11-22T02:00:00-08:00",
        )
        .await;
        assert_eq!(
            ran,
            runs(&[(
                "2026-11-22T01:30:00 America/Los_Angeles",
                "2026-11-22T01:30:00-08:00"
            )])
        );
    })
}

#[tokio::test]
async fn two_daemons_on_one_store_run_each_time_once_between_them() {
    let env = Env::new();
    cleeng_sync::with_store!(env.store().await, store => {
        let a = scheduler("0 * * * * *", "12h", "a");
        let b = scheduler("0 * * * * *", "12h", "b");
        let mut ran = Vec::new();
        let mut now = utc("2026-11-21T01:00:00-08:00");
        for _ in 0..30 {
            let (da, db) = tokio::join!(a.tick(&store, now), b.tick(&store, now));
            for (daemon, due) in [(&a, da.expect("tick a")), (&b, db.expect("tick b"))] {
                for due in due {
                    let label = due.slot.label();
                    settle(&store, daemon, &due.connector, &label).await;
                    ran.push(label);
                }
            }
            now += TimeDelta::minutes(1);
        }
        let mut distinct = ran.clone();
        distinct.dedup();
        assert_eq!(ran.len(), 30, "{ran:?}");
        assert_eq!(distinct, ran, "a time ran twice");
    })
}

#[tokio::test]
async fn a_claim_left_by_a_dead_daemon_is_taken_over_after_its_lease() {
    let env = Env::new();
    cleeng_sync::with_store!(env.store().await, store => {
        let at = utc("2026-11-21T01:30:00-08:00");
        let dead = scheduler("0 30 1 * * *", "12h", "dead");
        let due = dead.tick(&store, at).await.expect("tick");
        assert_eq!(due.len(), 1);
        // It started the run, then died: no settle, no renewal.
        let run_id = store
            .begin_run(&RunStart {
                connector: "default".into(),
                trigger: Trigger::Schedule,
                scheduled_for: Some(due[0].slot.label()),
                started_at: at,
            })
            .await
            .expect("begin");

        let other = scheduler("0 30 1 * * *", "12h", "other");
        let lease = TimeDelta::from_std(CLAIM_LEASE).expect("lease");
        let within_lease = other
            .tick(&store, at + lease - TimeDelta::seconds(1))
            .await
            .expect("tick");
        assert_eq!(within_lease, []);
        let after_lease = other
            .tick(&store, at + lease + TimeDelta::seconds(1))
            .await
            .expect("tick");
        assert_eq!(after_lease.len(), 1, "the expired claim is taken over");

        let abandoned = store.run(run_id).await.expect("run").expect("stored");
        assert_eq!(abandoned.report.outcome.as_str(), "failed");
        assert!(
            abandoned
                .report
                .message
                .as_deref()
                .is_some_and(|m| m.contains("stopped before it finished")),
            "{abandoned:?}"
        );
    })
}
