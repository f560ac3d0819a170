//! The change feed, end to end on both stores: each kind from a pair of exports built for
//! it (and changes of several kinds), every stored change held to the pure definition in
//! `change.rs`; what writes none (the baseline, rejected rows, a refused or failed run, a
//! rerun); and a consumer paging while runs and a refresh write.

use crate::common::{Env, csv, written_at};
use cleeng_sync::change::{Before, Cursor, Fields, change};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// One subscriber's cells.
#[derive(Clone)]
struct Cells {
    offer: String,
    expiry: &'static str,
    status: &'static str,
    payment: i64,
    coupon: &'static str,
}

impl Cells {
    fn of(i: u32) -> Cells {
        Cells {
            offer: format!("S{i:09}_PL"),
            expiry: "2099-06-01",
            status: if i == 2 { "stopped" } else { "active" },
            payment: 1,
            coupon: "",
        }
    }

    fn line(&self, i: u32) -> String {
        format!(
            "user{i}@example.com,{},{},{},{},ext-{i},,,{},Winter,",
            self.offer, self.expiry, self.status, self.payment, self.coupon
        )
    }

    /// The fields as the store keeps them (empty cells are null).
    fn fields(&self, i: u32) -> Fields {
        let text = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        Fields([
            json!(self.offer),
            json!(self.expiry),
            json!(self.status),
            json!(self.payment),
            json!(format!("ext-{i}")),
            Value::Null,
            Value::Null,
            text(self.coupon),
            json!("Winter"),
            Value::Null,
        ])
    }
}

/// The subscribers of a night: number -> cells (absent: not in the export).
type Night = BTreeMap<u32, Cells>;

fn export(night: &Night, extra: &[String]) -> String {
    let mut lines: Vec<String> = night.iter().map(|(i, c)| c.line(*i)).collect();
    lines.extend_from_slice(extra);
    csv(lines)
}

/// The first night: subscribers 1-12 and 20-49 (fillers that keep the guards quiet).
fn first_night() -> Night {
    (1..=12).chain(20..50).map(|i| (i, Cells::of(i))).collect()
}

/// The second night: one subscriber per kind, two with several kinds, a rejected row,
/// one left out, one new.
fn second_night() -> (Night, Vec<String>) {
    let mut night = first_night();
    let mut set = |i: u32, change: &dyn Fn(&mut Cells)| {
        if let Some(cells) = night.get_mut(&i) {
            change(cells);
        }
    };
    set(1, &|c| c.status = "stopped");
    set(2, &|c| c.status = "active");
    set(3, &|c| {
        c.offer = "S900000003_PL".into();
        c.expiry = "2099-07-01";
    });
    set(4, &|c| c.expiry = "2099-07-01");
    set(5, &|c| c.expiry = "2099-05-01");
    set(6, &|c| c.coupon = "SAVE10");
    set(7, &|c| c.payment = 2);
    set(8, &|c| {
        c.status = "stopped";
        c.coupon = "BACK";
    });
    set(9, &|c| {
        c.offer = "S900000009_PL".into();
        c.expiry = "2099-05-01";
    });
    night.remove(&10);
    night.remove(&11);
    night.insert(13, Cells::of(13));
    // 10 is rejected: its row stays as it was, and no change is recorded for it.
    let rejected =
        vec!["user10@example.com,S000000010_PL,2099-06-01,paused,1,ext-10,,,,Winter,".to_string()];
    (night, rejected)
}

/// Writes an export into the folder, a minute newer than the one before.
fn night(env: &Env, name: &str, body: String, minute: u64) -> String {
    let path = env.write(&format!("exports/{name}"), body);
    written_at(
        &path,
        SystemTime::now() - Duration::from_secs(3600 - minute * 60),
    );
    env.path("exports").display().to_string()
}

async fn feed(env: &Env) -> Vec<cleeng_sync::change::ChangeRecord> {
    let opened = env.store().await;
    cleeng_sync::with_store!(opened, store => {
        store.changes("default", &[], Cursor::default(), 1000).await.expect("the feed").changes
    })
}

/// What the definition says of subscriber `i` between two nights.
fn expected(i: u32, before: &Night, after: &Night, removed_before: bool) -> Option<Value> {
    let (b, a) = (
        before.get(&i).map(|c| c.fields(i)),
        after.get(&i).map(|c| c.fields(i)),
    );
    let was = match (&b, removed_before) {
        (Some(f), true) => Before::Removed(f),
        (Some(f), false) => Before::Present(f),
        (None, _) => Before::Absent,
    };
    change(was, a.as_ref(), false)
        .map(|c| json!({"kinds": c.kinds, "before": c.before, "after": c.after}))
}

fn shown(c: &cleeng_sync::change::ChangeRecord) -> Value {
    json!({"kinds": c.kinds, "before": c.before, "after": c.after})
}

#[tokio::test]
async fn each_kind_is_recorded_as_the_definition_says_and_only_for_applied_changes() {
    let env = Env::new();
    let first = first_night();
    let folder = night(&env, "1.csv", export(&first, &[]), 0);
    let (code, report) = env.sync(&folder, &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (0, &json!("applied")),
        "{report}"
    );
    assert!(
        feed(&env).await.is_empty(),
        "the first applied run is the baseline"
    );

    let (second, rejected) = second_night();
    let mut with_rejected = second.clone();
    // The rejected subscriber is still stored as on the first night.
    with_rejected.insert(10, Cells::of(10));
    night(&env, "2.csv", export(&second, &rejected), 1);
    let (code, report) = env.sync(&folder, &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (0, &json!("applied")),
        "{report}"
    );
    let run = report["run_id"].as_i64();
    let changes = feed(&env).await;
    let mut by_email: BTreeMap<String, Value> = BTreeMap::new();
    for c in &changes {
        assert_eq!((c.run_id, c.source.as_str()), (run, "export"), "{c:?}");
        assert!(
            by_email.insert(c.email.clone(), shown(c)).is_none(),
            "one change each"
        );
    }
    for i in (1..=13).chain(20..50) {
        let email = format!("user{i}@example.com");
        let want = if i == 10 {
            None
        } else {
            expected(i, &first, &second, false)
        };
        assert_eq!(by_email.get(&email), want.as_ref(), "{email}");
    }
    let kinds: Vec<Vec<String>> = changes.iter().map(|c| c.kinds.clone()).collect();
    for kind in [
        "new",
        "removed",
        "stopped",
        "reactivated",
        "switched",
        "renewed",
        "expiry_moved",
        "coupon_applied",
        "updated",
    ] {
        assert!(
            kinds.iter().any(|k| k.iter().any(|x| x == kind)),
            "no {kind}: {kinds:?}"
        );
    }
    assert_eq!(changes.len(), 11, "{kinds:?}");

    // 11 comes back: returned, with every field.
    let mut third = with_rejected.clone();
    third.insert(11, Cells::of(11));
    night(&env, "3.csv", export(&third, &[]), 2);
    let (code, report) = env.sync(&folder, &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (0, &json!("applied")),
        "{report}"
    );
    let after_third = feed(&env).await;
    let returned: Vec<_> = after_third.iter().skip(changes.len()).collect();
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(
        shown(returned[0]),
        expected(11, &first, &third, true).expect("a change")
    );
    assert_eq!(returned[0].kinds, ["returned"]);

    // A rerun of the same export, also forced, writes none.
    let (code, report) = env.sync(&folder, &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (0, &json!("unchanged")),
        "{report}"
    );
    let (code, report) = env.sync(&folder, &["--force"]);
    assert_eq!(
        (code, &report["outcome"]),
        (0, &json!("applied")),
        "{report}"
    );
    // A refused run writes none: 20 of 43 left out.
    let mut fourth = third.clone();
    for i in 20..40 {
        fourth.remove(&i);
    }
    night(&env, "4.csv", export(&fourth, &[]), 3);
    let (code, report) = env.sync(&folder, &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (3, &json!("refused")),
        "{report}"
    );
    assert_eq!(
        feed(&env).await.len(),
        after_third.len(),
        "nothing recorded"
    );
}

#[tokio::test]
async fn the_changes_command_pages_and_filters_the_feed() {
    let env = Env::new();
    let folder = night(&env, "1.csv", export(&first_night(), &[]), 0);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    let (second, rejected) = second_night();
    night(&env, "2.csv", export(&second, &rejected), 1);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    let mut seen = Vec::new();
    let mut after = String::from("0");
    loop {
        let out = env.run(&["changes", "--limit", "4", "--after", &after, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let page = out.json();
        let changes = page["changes"].as_array().cloned().unwrap_or_default();
        let next = page["next"]
            .as_str()
            .expect("next is never null")
            .to_string();
        if changes.is_empty() {
            assert_eq!(
                next, after,
                "past the last change, next is where to poll from"
            );
            break;
        }
        assert!(changes.len() <= 4);
        seen.extend(changes.iter().filter_map(|c| c["id"].as_i64()));
        after = next;
    }
    assert_eq!(seen.len(), 11);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let stopped = env.run(&["changes", "--kind", "stopped", "--json"]).json();
    let emails: Vec<&str> = stopped["changes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["email"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(emails, ["user1@example.com", "user8@example.com"]);
    let text = env.run(&["changes", "--kind", "switched"]);
    assert!(
        text.stdout
            .contains("offer_id: \"S000000003_PL\" -> \"S900000003_PL\""),
        "{text:?}"
    );
    let bad = env.run(&["changes", "--kind", "moved"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    let bad = env.run(&["changes", "--after", "abc"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

// Two workers: the writers block one on the binary while the consumer pages on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paging_by_seven_while_runs_and_a_refresh_write_misses_and_repeats_nothing() {
    let s = crate::actions::setup();
    // ann reactivated at Cleeng: her refresh records a change.
    s.cleeng.update(1, |sub| sub.status = "active".into());
    written_at(
        &s.env.path("exports/2026-11-01.csv"),
        SystemTime::now() - Duration::from_secs(3600),
    );
    let base = crate::actions::export();
    let more = |n: u32, status: &str| -> Vec<String> {
        (100..100 + n)
            .map(|i| format!("user{i}@example.com,S{i:09}_PL,2099-06-01,{status},1,,,,,,"))
            .collect()
    };
    let with = |rows: Vec<String>| {
        let mut body = base.clone();
        for row in rows {
            body.push_str(&row);
            body.push('\n');
        }
        body
    };
    let store = s.env.store().await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let done = std::sync::Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = Cursor::default();
            let mut quiet = 0;
            while quiet < 2 {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = cleeng_sync::with_store!(&store, store =>
                    store.changes("default", &[], after, 7).await.expect("a page"));
                if page.changes.is_empty() && finished {
                    quiet += 1;
                }
                seen.extend(page.changes.iter().map(|c| c.id));
                after = Cursor::parse(&page.next).expect("a cursor");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let writers = {
        let (second, third) = (with(more(60, "active")), with(more(60, "stopped")));
        let s = &s;
        async move {
            let path = s.env.write("exports/2026-11-02.csv", second);
            written_at(&path, SystemTime::now() - Duration::from_secs(120));
            assert_eq!(s.cli(&["sync", "--json"]).code, 0);
            let refresh = s.cli(&["refresh", "ann@example.com", "--json"]);
            assert_eq!(refresh.json()["outcome"], "updated", "{refresh:?}");
            let path = s.env.write("exports/2026-11-03.csv", third);
            written_at(&path, SystemTime::now() - Duration::from_secs(60));
            assert_eq!(s.cli(&["sync", "--json"]).code, 0);
        }
    };
    writers.await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = consumer.await.expect("the consumer");
    let all: Vec<i64> = cleeng_sync::with_store!(s.env.store().await, store =>
        store.changes("default", &[], Cursor::default(), 1000).await.expect("the feed"))
    .changes
    .iter()
    .map(|c| c.id)
    .collect();
    assert_eq!(all.len(), 121, "60 new, ann's refresh, 60 stopped");
    assert_eq!(seen, all, "the consumer saw every change once, in order");
}

#[tokio::test]
async fn the_changes_endpoint_pages_with_the_token_only() {
    use crate::daemon_harness::TOKEN as SERVER_TOKEN;
    let s = crate::actions::setup();
    s.cleeng.update(1, |sub| sub.status = "active".into());
    assert_eq!(s.cli(&["refresh", "ann@example.com"]).code, 0);
    assert_eq!(s.cli(&["refresh", "bob@example.com"]).code, 0);
    let daemon = s.daemon();
    let path = "/v1/connectors/default/changes";
    let (status, _) = daemon.get(path, None).await;
    assert_eq!(status, 401);
    let (status, page) = daemon
        .get(&format!("{path}?limit=1"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["changes"][0]["email"], "ann@example.com", "{page}");
    assert_eq!(page["changes"][0]["kinds"], json!(["reactivated"]));
    assert_eq!(page["changes"][0]["source"], "manual");
    assert_eq!(page["changes"][0]["run_id"], Value::Null);
    assert_eq!(page["changes"][0]["before"], json!({"status": "stopped"}));
    let next = page["next"].as_str().expect("next");
    let (_, rest) = daemon
        .get(
            &format!("{path}?after={next}&kind=reactivated,switched"),
            Some(SERVER_TOKEN),
        )
        .await;
    assert_eq!(
        rest["changes"],
        json!([]),
        "bob's refresh changed nothing: {rest}"
    );
    assert_eq!(rest["next"], next);
    let (status, _) = daemon
        .get(&format!("{path}?kind=moved"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 400);
    let (status, _) = daemon
        .get(&format!("{path}?after=x"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 400);
    let (status, _) = daemon
        .get("/v1/connectors/nope/changes", Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 404);
}

/// Moves every change recorded so far `days` into the past.
async fn backdate(env: &Env, days: i64) {
    use sqlx::Connection;
    let at = chrono::Utc::now() - chrono::TimeDelta::days(days);
    let url = env.store_url();
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        let text = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        sqlx::query("UPDATE subscription_changes SET at = ?1")
            .bind(text)
            .execute(&mut conn)
            .await
            .expect("backdate");
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query("UPDATE subscription_changes SET at = $1")
            .bind(at)
            .execute(&mut conn)
            .await
            .expect("backdate");
    }
}

#[tokio::test]
async fn the_daemon_prunes_the_changes_older_than_the_retention_and_keeps_the_rest() {
    let env = Env::new();
    let first = first_night();
    let folder = night(&env, "1.csv", export(&first, &[]), 0);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    let (second, rejected) = second_night();
    night(&env, "2.csv", export(&second, &rejected), 1);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    backdate(&env, 40).await;
    // A newer night: 11 returns.
    let mut third = second.clone();
    third.insert(10, Cells::of(10));
    third.insert(11, Cells::of(11));
    night(&env, "3.csv", export(&third, &[]), 2);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    assert_eq!(feed(&env).await.len(), 12);
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[schedule]\ncron = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [[connector]]\nid = \"default\"\nsource = \"{folder}\"\nchanges_retention = \"30d\"\n",
            crate::daemon::cron_twelve_hours_away()
        ),
    );
    let _daemon = env.daemon(&config, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let kept = feed(&env).await;
        if kept.len() == 1 {
            assert_eq!(kept[0].email, "user11@example.com");
            assert_eq!(kept[0].kinds, ["returned"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never pruned: {}",
            kept.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = env.run(&["--config", &config.display().to_string(), "changes"]);
    assert_eq!(refused.code, 0, "{refused:?}");
    let bad = env.write(
        "bad.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{folder}\"\nchanges_retention = \"0d\"\n"
        ),
    );
    let out = env.run(&["--config", &bad.display().to_string(), "changes"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("changes_retention"), "{out:?}");
}
