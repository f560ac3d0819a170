//! The template's considerations checked on every run: localized offers (the map, each
//! subscriber's `offer_country` and `offer_plan`, `unmapped_offer`), the expiry buffer,
//! and the listing of subscribers to act on. Both stores, through the binary (and the
//! library where the day has to be fixed).

use crate::common::*;
use crate::daemon::cron_twelve_hours_away;
use crate::daemon_harness::TOKEN;
use chrono::{DateTime, NaiveDate, Utc};
use cleeng_sync::clock::FixedClock;
use cleeng_sync::config::Connector;
use cleeng_sync::progress::Silent;
use cleeng_sync::run::{RunReport, WarningCode};
use cleeng_sync::source::FolderSource;
use cleeng_sync::store::{Backend, Cursor, Store, SubscriberQuery};
use cleeng_sync::sync::{Job, RunOptions};
use cleeng_sync::with_store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Two plans over three countries; `S200000001_PL` moves plan in [`MOVED`].
const MAP: &str = r#"
[connector.offers]
monthly = { PL = "S100000001_PL", DE = "S100000002_DE" }
annual = { PL = "S200000001_PL", US = "S200000003_US" }
"#;

/// [`MAP`] after `S200000001_PL` moved to a plan of its own.
const MOVED: &str = r#"
[connector.offers]
monthly = { PL = "S100000001_PL", DE = "S100000002_DE" }
annual = { US = "S200000003_US" }
promo = { PL = "S200000001_PL" }
"#;

/// A valid row with only the mandatory fields.
fn sub(email: &str, offer: &str, expiry: &str, status: &str) -> String {
    format!("{email},{offer},{expiry},{status},1,,,,,,")
}

/// Records 2 to 8: four mapped offers, two unmapped ones, one of another shape.
fn three_countries() -> String {
    csv([
        sub("a@example.com", "S100000001_PL", "2099-01-01", "active"),
        sub("b@example.com", "S100000002_DE", "2099-01-02", "active"),
        sub("c@example.com", "S200000001_PL", "2099-01-03", "stopped"),
        sub("d@example.com", "S200000003_US", "2099-01-04", "active"),
        sub("e@example.com", "S999999999_US", "2099-01-05", "active"),
        sub("f@example.com", "S888888888_DE", "2099-01-06", "stopped"),
        sub("g@example.com", "premium", "2099-01-07", "active"),
    ])
}

/// A config file with one folder connector and these extra sections.
fn config(env: &Env, name: &str, exports: &Path, extra: &str) -> PathBuf {
    env.write(
        name,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[schedule]\ncron = \"{}\"\n\
             [[connector]]\nid = \"default\"\nsource = \"{}\"\n\
             [connector.guards]\nmax_rejected_ratio = 1.0\n{extra}",
            cron_twelve_hours_away(),
            exports.display()
        ),
    )
}

/// `--config FILE` and then the arguments.
fn with_config(env: &Env, config: &Path, args: &[&str]) -> Output {
    let config = config.display().to_string();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    env.run(&all)
}

/// `(offer_country, offer_plan)` of a stored subscriber.
async fn placement(env: &Env, email: &str) -> (Option<String>, Option<String>) {
    let t = env.traits(email).await.expect("stored");
    (t.offer_country, t.offer_plan)
}

fn some(pair: (&str, &str)) -> (Option<String>, Option<String>) {
    (Some(pair.0.into()), Some(pair.1.into()))
}

#[tokio::test]
async fn every_subscriber_has_the_country_and_plan_of_its_offer() {
    let env = Env::new();
    env.write("exports/2026-01-01.csv", three_countries());
    let exports = env.path("exports");
    let warn = config(&env, "warn.toml", &exports, MAP);

    let out = with_config(&env, &warn, &["sync", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    assert_eq!(counts(&report), ([7, 7, 0], [7, 0, 0, 0]), "{report}");
    assert_eq!(
        report["warnings"],
        json!({"offer_id_pattern": 1, "unmapped_offer": 3})
    );
    for (email, country, plan) in [
        ("a", Some("PL"), Some("monthly")),
        ("b", Some("DE"), Some("monthly")),
        ("c", Some("PL"), Some("annual")),
        ("d", Some("US"), Some("annual")),
        ("e", Some("US"), None),
        ("f", Some("DE"), None),
        ("g", None, None),
    ] {
        let stored = placement(&env, &format!("{email}@example.com")).await;
        let expected = (country.map(String::from), plan.map(String::from));
        assert_eq!(stored, expected, "{email}");
    }

    // The ledger keeps the counts; validate names the records.
    let runs = with_config(&env, &warn, &["runs", "--json"]).json();
    assert_eq!(runs[0]["warnings"], report["warnings"]);
    let file = exports.join("2026-01-01.csv").display().to_string();
    let validated = with_config(&env, &warn, &["validate", &file, "--json"]).json();
    let warned: Vec<(u64, String)> = validated["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| {
            (
                w["record"].as_u64().unwrap(),
                w["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (6, "unmapped_offer"),
        (7, "unmapped_offer"),
        (8, "offer_id_pattern"),
        (8, "unmapped_offer"),
    ];
    assert_eq!(warned, expected.map(|(r, c)| (r, c.to_string())));
    let text = with_config(&env, &warn, &["validate", &file]);
    assert!(
        text.stdout
            .contains("record 7: offer_id warning unmapped_offer: offer ID \"S888888888_DE\""),
        "{text:?}"
    );

    // `check` reads the head of the export and names the offers the map lacks.
    let checked = with_config(&env, &warn, &["check"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(
        checked.stdout.contains(
            "warning: 3 offer(s) of the first 7 rows are in no plan of the offer map: \
             S888888888_DE (1 rows), S999999999_US (1 rows), premium (1 rows)"
        ),
        "{checked:?}"
    );
}

#[tokio::test]
async fn rejecting_unmapped_offers_keeps_what_was_stored() {
    let env = Env::new();
    let exports = env.path("exports");
    // First e@ has a mapped offer; the next export moves it to an unmapped one.
    let before = three_countries()
        .replace("S999999999_US", "S200000003_US")
        .replace("S888888888_DE,", "S100000002_DE,")
        .replace("premium", "S100000001_PL");
    env.write("exports/2026-01-01.csv", before);
    let reject = config(
        &env,
        "reject.toml",
        &exports,
        &format!("[connector.validation]\nunmapped_offer = \"reject\"\n{MAP}"),
    );
    let out = with_config(&env, &reject, &["sync", "--json"]);
    assert_eq!(counts(&out.json()), ([7, 7, 0], [7, 0, 0, 0]), "{out:?}");
    let stored_before = env.traits("e@example.com").await.expect("stored");

    std::fs::remove_dir_all(&exports).expect("clear the folder");
    env.write("exports/2026-01-02.csv", three_countries());
    let out = with_config(&env, &reject, &["sync", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    // Three rows rejected, nothing removed, nothing else changed.
    assert_eq!(counts(&report), ([7, 4, 3], [0, 0, 4, 0]), "{report}");
    assert_eq!(report["warnings"], json!({}));
    let rejections = env.rejections(report["run_id"].as_i64().unwrap()).await;
    let rejected: Vec<(u64, &str, &str)> = rejections
        .iter()
        .map(|r| (r.record, r.column.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [6, 7, 8].map(|r| (r, "offer_id", "unmapped_offer"))
    );
    assert_eq!(env.traits("e@example.com").await, Some(stored_before));
    assert_eq!(env.present().await, 7);
}

#[tokio::test]
async fn a_changed_map_is_seen_at_the_next_run_with_the_same_export() {
    let env = Env::new();
    env.write("exports/2026-01-01.csv", three_countries());
    let exports = env.path("exports");
    let first = config(&env, "first.toml", &exports, MAP);
    assert_eq!(with_config(&env, &first, &["sync", "--json"]).code, 0);
    assert_eq!(
        placement(&env, "c@example.com").await,
        some(("PL", "annual"))
    );
    let row_hash = env.traits("c@example.com").await.unwrap().row_hash;

    let moved = config(&env, "moved.toml", &exports, MOVED);
    let out = with_config(&env, &moved, &["sync", "--json"]);
    assert_eq!(outcome(out.code, &out.json()), (0, "unchanged"), "{out:?}");
    let traits = env.traits("c@example.com").await.unwrap();
    assert_eq!(
        (traits.offer_country, traits.offer_plan),
        some(("PL", "promo"))
    );
    assert_eq!(traits.row_hash, row_hash, "the row itself is not rewritten");
    assert_eq!(
        placement(&env, "a@example.com").await,
        some(("PL", "monthly"))
    );

    // Without a map, no plan; countries stay (they are the offer IDs').
    let none = config(&env, "none.toml", &exports, "");
    assert_eq!(with_config(&env, &none, &["sync", "--json"]).code, 0);
    assert_eq!(
        placement(&env, "c@example.com").await,
        (Some("PL".into()), None)
    );
}

/// Noon of 2026-06-01 in Los Angeles: the day every date rule of these tests reads.
fn june_first() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T19:00:00Z")
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Records 2 to 6: expiring today, tomorrow, on the buffer's last day, a day past it,
/// and far ahead.
fn around_the_buffer() -> String {
    csv([
        sub("today@example.com", "S100000001_PL", "2026-06-01", "active"),
        sub(
            "tomorrow@example.com",
            "S100000001_PL",
            "2026-06-02",
            "stopped",
        ),
        sub("last@example.com", "S100000001_PL", "2026-06-04", "active"),
        sub("past@example.com", "S100000001_PL", "2026-06-05", "active"),
        sub("later@example.com", "S100000001_PL", "2099-01-01", "active"),
    ])
}

async fn run_on<B: Backend>(store: &Store<B>, dir: &Path, connector: &Connector) -> RunReport {
    let job = Job {
        store,
        source: &FolderSource::new(dir),
        connector,
        clock: &FixedClock(june_first()),
        progress: &Silent,
    };
    let options = RunOptions {
        force: true,
        ..RunOptions::default()
    };
    let mut reports = job.run(&options).await.expect("ledger writable");
    reports.remove(0)
}

#[tokio::test]
async fn the_expiry_buffer_warns_from_today_to_its_last_day() {
    let env = Env::new();
    env.write("exports/2026-06-01.csv", around_the_buffer());
    let dir = env.path("exports");
    let mut connector = Connector::new(
        "default",
        &dir.display().to_string(),
        chrono_tz::America::Los_Angeles,
    );
    let (on, off) = with_store!(env.store().await, store => {
        let on = run_on(&store, &dir, &connector).await;
        connector.expiry_buffer_days = 0;
        let off = run_on(&store, &dir, &connector).await;
        (on, off)
    });
    assert_eq!(on.rows.valid, 5, "{on:?}");
    assert_eq!(
        on.warnings.get(WarningCode::ExpiryWithinBuffer),
        3,
        "{on:?}"
    );
    assert!(off.warnings.is_empty(), "{off:?}");
    assert_eq!(env.present().await, 5, "warned rows are stored");
    let runs = env.runs(2).await;
    assert_eq!(
        runs[1].report.warnings, on.warnings,
        "the ledger keeps them"
    );

    // validate with the same day names the records; `0d` in the config turns it off.
    let file = dir.join("2026-06-01.csv").display().to_string();
    let out = env.run(&["validate", &file, "--today", "2026-06-01", "--json"]);
    let report = out.json();
    let warned: Vec<(u64, &str)> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| (w["record"].as_u64().unwrap(), w["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        warned,
        [2, 3, 4].map(|r| (r, "expiry_within_buffer")),
        "{report}"
    );
    let off = config(
        &env,
        "off.toml",
        &dir,
        "[connector.validation]\nexpiry_buffer = \"0d\"\n",
    );
    let out = with_config(
        &env,
        &off,
        &["validate", &file, "--today", "2026-06-01", "--json"],
    );
    assert_eq!(out.json()["warnings"], json!([]), "{out:?}");
}

/// Forty subscribers over twelve days of June 2026: every other one stopped, offers
/// of both plans and three countries.
fn listing_export(skip: &[u32], moved: &[u32]) -> String {
    let offers = [
        "S100000001_PL",
        "S100000002_DE",
        "S200000001_PL",
        "S200000003_US",
    ];
    csv((0..40u32).filter(|i| !skip.contains(i)).map(|i| {
        let day = if moved.contains(&i) { 28 } else { 1 + i % 12 };
        sub(
            &format!("s{i:02}@example.com"),
            offers[(i % 4) as usize],
            &format!("2026-06-{day:02}"),
            if i % 2 == 1 { "stopped" } else { "active" },
        )
    }))
}

/// `subscribers` pages with this config, from `after`, until there are no more.
fn every_page(
    env: &Env,
    config: &Path,
    filters: &[&str],
    mut after: Option<String>,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let mut args = vec![
            "subscribers",
            "--today",
            "2026-06-01",
            "--limit",
            "2",
            "--json",
        ];
        args.extend_from_slice(filters);
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let out = with_config(env, config, &args);
        assert_eq!(out.code, 0, "{out:?}");
        let page = out.json();
        pages.push(emails(&page));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return pages,
        }
    }
}

fn emails(page: &Value) -> Vec<String> {
    page["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .map(|s| s["email"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_listing_pages_by_expiry_and_email_from_a_key() {
    let env = Env::new();
    let exports = env.path("exports");
    env.write("exports/2026-01-01.csv", listing_export(&[], &[]));
    // The dates are June 2026 whatever today is: accepted, and read against --today.
    let cfg = config(
        &env,
        "cleeng-sync.toml",
        &exports,
        &format!("[connector.validation]\npast_expiry = \"accept\"\n{MAP}"),
    );
    assert_eq!(with_config(&env, &cfg, &["sync", "--json"]).code, 0);

    // Expiring 2026-06-01..=06-08, stopped, plan monthly: i % 4 == 1 (DE, stopped) and
    // i % 12 < 8, by day then email.
    let filters = [
        "--expiring-within",
        "7d",
        "--status",
        "stopped",
        "--plan",
        "monthly",
    ];
    let mut expected: Vec<(u32, String)> = (0..40u32)
        .filter(|i| i % 4 == 1 && i % 12 < 8)
        .map(|i| (1 + i % 12, format!("s{i:02}@example.com")))
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, e)| e).collect();
    assert!(expected.len() >= 5, "{expected:?}");
    let pages = every_page(&env, &cfg, &filters, None);
    assert!(pages.len() >= 3, "{pages:?}");
    assert_eq!(pages.concat(), expected);

    // A first page, then a run that inserts a subscriber before the cursor, removes one
    // after it and moves one out of the window: the rest continues where it stopped.
    let first = with_config(
        &env,
        &cfg,
        &[
            "subscribers",
            "--today",
            "2026-06-01",
            "--limit",
            "2",
            "--json",
        ]
        .into_iter()
        .chain(filters)
        .collect::<Vec<_>>(),
    );
    let first = first.json();
    let seen = emails(&first);
    let cursor = first["next"].as_str().expect("more pages").to_string();
    let removed = expected[3].clone();
    let moved = expected[4].clone();
    let number = |email: &str| email[1..3].parse::<u32>().unwrap();
    let mut next = listing_export(&[number(&removed)], &[number(&moved)]);
    next.push_str(&sub(
        "a0@example.com",
        "S100000002_DE",
        "2026-06-01",
        "stopped",
    ));
    next.push('\n');
    env.write("exports/2026-01-02.csv", next);
    let out = with_config(&env, &cfg, &["sync", "--json"]);
    assert_eq!(counts(&out.json()).1, [1, 1, 38, 1], "{out:?}");
    let rest = every_page(&env, &cfg, &filters, Some(cursor)).concat();
    let unchanged: Vec<String> = expected
        .iter()
        .filter(|e| **e != removed && **e != moved)
        .cloned()
        .collect();
    assert_eq!([seen, rest].concat(), unchanged, "no repeat, no gap");

    // Other filters, and usage errors.
    let country = with_config(
        &env,
        &cfg,
        &["subscribers", "--country", "us", "--limit", "100", "--json"],
    );
    let us = emails(&country.json());
    assert_eq!(us.len(), 10, "{us:?}");
    assert!(us.iter().all(|e| number(e) % 4 == 3), "{us:?}");
    for bad in [
        &["subscribers", "--expiring-within", "soon"][..],
        &["subscribers", "--status", "gone"],
        &["subscribers", "--after", "not-a-cursor"],
    ] {
        let out = with_config(&env, &cfg, bad);
        assert_eq!(out.code, 2, "{bad:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
}

#[tokio::test]
async fn the_expiring_listing_reads_the_index() {
    let env = Env::new();
    let exports = env.path("exports");
    // Enough rows that a scan and a sort would cost more than the index.
    let body = csv((0..3000u32).map(|i| {
        sub(
            &format!("s{i:04}@example.com"),
            "S100000001_PL",
            &format!("2099-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            if i % 5 == 1 { "stopped" } else { "active" },
        )
    }));
    env.write("exports/2026-01-01.csv", body);
    let cfg = config(&env, "cleeng-sync.toml", &exports, MAP);
    assert_eq!(with_config(&env, &cfg, &["sync", "--json"]).code, 0);
    let query = SubscriberQuery {
        connector: "default".into(),
        expiring: Some((
            NaiveDate::from_ymd_opt(2099, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2099, 3, 8).unwrap(),
        )),
        status: Some("stopped".into()),
        plan: Some("monthly".into()),
        limit: 100,
        ..SubscriberQuery::default()
    };
    let plan = with_store!(env.store().await, store => store.subscribers_plan(&query).await)
        .expect("explain");
    assert!(plan.contains("subscription_traits_by_expiry"), "{plan}");
    let page =
        with_store!(env.store().await, store => store.subscribers(&query).await).expect("page");
    assert!(!page.subscribers.is_empty());
    assert!(
        page.subscribers
            .iter()
            .all(|s| s.expiry_date.starts_with("2099-03-0"))
    );

    // A page after a cursor reads the index from the cursor's day on.
    let first = SubscriberQuery {
        limit: 1,
        ..query.clone()
    };
    let next = with_store!(env.store().await, store => store.subscribers(&first).await)
        .expect("page")
        .next
        .expect("more than one");
    let after = SubscriberQuery {
        after: Some(Cursor::decode(&next).expect("a cursor")),
        ..query
    };
    let plan = with_store!(env.store().await, store => store.subscribers_plan(&after).await)
        .expect("explain");
    assert!(plan.contains("subscription_traits_by_expiry"), "{plan}");
}

#[tokio::test]
async fn the_api_lists_subscribers_with_the_token_only() {
    let env = Env::new();
    let exports = env.path("exports");
    env.write("exports/2026-01-01.csv", three_countries());
    let cfg = config(&env, "cleeng-sync.toml", &exports, MAP);
    let mut daemon = env.daemon(&cfg, Some(TOKEN));
    daemon.ready().await;
    let (status, started) = daemon
        .post("/v1/connectors/default/sync", Some(TOKEN))
        .await;
    assert_eq!(status, 202, "{started}");
    let run = daemon
        .finished_run(started["run_id"].as_i64().unwrap())
        .await;
    assert_eq!(
        run["warnings"],
        json!({"offer_id_pattern": 1, "unmapped_offer": 3})
    );

    let path = "/v1/connectors/default/subscribers?status=active&limit=2";
    let (status, body) = daemon.get(path, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = daemon.get(path, Some("wrong")).await;
    assert_eq!(status, 401, "{body}");
    let (status, page) = daemon.get(path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(emails(&page), ["a@example.com", "b@example.com"]);
    assert_eq!(page["subscribers"][0]["offer_plan"], "monthly");
    let next = page["next"].as_str().expect("a next page");
    let (_, page) = daemon
        .get(&format!("{path}&after={next}"), Some(TOKEN))
        .await;
    assert_eq!(emails(&page), ["d@example.com", "e@example.com"]);
    let (_, page) = daemon
        .get(
            "/v1/connectors/default/subscribers?plan=annual",
            Some(TOKEN),
        )
        .await;
    assert_eq!(emails(&page), ["c@example.com", "d@example.com"]);
    assert_eq!(page["next"], Value::Null);
    let (status, body) = daemon
        .get(
            "/v1/connectors/default/subscribers?expiring_within=soon",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = daemon
        .get("/v1/connectors/other/subscribers", Some(TOKEN))
        .await;
    assert_eq!(status, 404);

    let (_, metrics) = daemon.get("/metrics", None).await;
    let metrics = metrics.as_str().expect("text");
    let counted = metrics.lines().find(|l| {
        l.starts_with("cleeng_sync_warnings_total{") && l.contains(r#"code="unmapped_offer""#)
    });
    assert!(
        counted.is_some_and(|l| l.contains(r#"connector="default""#) && l.ends_with(" 3")),
        "{metrics}"
    );
    assert_eq!(daemon.terminate().await, 0);
}

#[tokio::test]
async fn a_bad_offer_map_is_a_usage_error_naming_the_key() {
    let env = Env::new();
    let exports = env.path("exports");
    for (extra, says) in [
        (
            "[connector.offers]\na = { PL = \"S123456789_PL\" }\nb = { PL = \"S123456789_PL\" }\n",
            "offers.b.PL: \"S123456789_PL\" is listed under two plans, \"a\" and \"b\"",
        ),
        (
            "[connector.offers]\na = { Poland = \"S123456789_PL\" }\n",
            "offers.a.Poland",
        ),
        (
            "[connector.offers]\na = { PL = \"premium\" }\n",
            "offers.a.PL",
        ),
        (
            "[connector.validation]\nunmapped_offer = \"reject\"\n",
            "validation.unmapped_offer",
        ),
        (
            "[connector.validation]\nexpiry_buffer = \"2.5d\"\n",
            "validation.expiry_buffer",
        ),
    ] {
        let cfg = config(&env, "bad.toml", &exports, extra);
        for command in ["sync", "check", "daemon"] {
            let out = with_config(&env, &cfg, &[command]);
            assert_eq!(out.code, 2, "{extra} {command}: {out:?}");
            assert!(out.stderr.contains(says), "{extra} {command}: {out:?}");
            assert!(!out.stderr.contains("panicked"), "{out:?}");
        }
    }
}

/// Offer IDs with and without a country, by the rule's every edge.
const OFFER_IDS: [&str; 10] = [
    "S123456789_PL",
    "premium_DE",
    "_US",
    "S1_pl",
    "PL",
    "S1_PLX",
    "S1_P1",
    "é_PL",
    "S1_ÉÉ",
    "A_B_CD",
];

/// Asserts that `o{i}@example.com`'s stored country is that of `offers[i]` by
/// `export::country_of`.
async fn countries_follow_the_rule(env: &Env, offers: &[&str]) {
    for (i, offer) in offers.iter().enumerate() {
        let stored = env
            .traits(&format!("o{i}@example.com"))
            .await
            .expect("stored");
        assert_eq!(
            stored.offer_country.as_deref(),
            cleeng_sync::export::country_of(offer),
            "{offer}"
        );
    }
}

/// Syncs the night `day` whose export gives `o{i}@example.com` the offer `offers[i]`.
fn night_of_offers(env: &Env, day: &str, offers: &[&str]) -> (i32, Value) {
    let body = csv(offers
        .iter()
        .enumerate()
        .map(|(i, offer)| sub(&format!("o{i}@example.com"), offer, "2099-01-01", "active")));
    env.write(&format!("exports/{day}.csv"), body);
    env.sync(&folder(&env.path("exports")), &[])
}

#[tokio::test]
async fn each_store_reads_the_country_as_the_rule_does() {
    let env = Env::new();
    let offers = OFFER_IDS;
    let (code, report) = night_of_offers(&env, "2026-01-01", &offers);
    assert_eq!(code, 0, "{report}");
    countries_follow_the_rule(&env, &offers).await;
    // The next night every subscriber has the offer of the one before: the country
    // follows an update as it does an insert.
    let mut moved = offers.to_vec();
    moved.rotate_left(1);
    let (code, report) = night_of_offers(&env, "2026-01-02", &moved);
    assert_eq!(code, 0, "{report}");
    assert_eq!(counts(&report).1, [0, 10, 0, 0], "{report}");
    countries_follow_the_rule(&env, &moved).await;
}

/// A SQLite store from before migration 0010, whose database computed the country, has
/// every subscriber's country once migrated: the runs write it now, and the migration
/// filled it once.
#[tokio::test]
async fn a_sqlite_store_from_before_the_written_country_keeps_every_country() {
    use sqlx::Connection as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use std::str::FromStr as _;
    let env = Env::sqlite();
    // The schema as it was: the migrations before 0010, as they are in the repository.
    let old = env.path("migrations");
    std::fs::create_dir(&old).expect("a folder");
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(all).expect("the migrations") {
        let path = entry.expect("a migration").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < "0010" {
            std::fs::copy(&path, old.join(&name)).expect("copied");
        }
    }
    let options = SqliteConnectOptions::from_str(&env.store_url())
        .expect("a SQLite URL")
        .create_if_missing(true)
        .foreign_keys(false);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("the old migrations")
        .run(&mut conn)
        .await
        .expect("the old schema");
    for (i, offer) in OFFER_IDS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO subscription_traits (connector, email, offer_id, expiry_date, status,
                payment_method_id, row_hash, first_seen_run, changed_run, updated_at)
             VALUES ('default', ?1, ?2, '2099-01-01', 'active', 1, 'h', 1, 1, '2026-01-01')",
        )
        .bind(format!("o{i}@example.com"))
        .bind(offer)
        .execute(&mut conn)
        .await
        .expect("an old row");
    }
    conn.close().await.expect("closed");
    // Opening the store runs the rest of the migrations.
    countries_follow_the_rule(&env, &OFFER_IDS).await;
}

#[tokio::test]
async fn the_sample_config_maps_every_offer_of_the_sample_export() {
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("samples/cleeng-sync.toml");
    let exports = root.join("samples/exports").display().to_string();
    // The sample's store and folder are relative to the repository; this env's are not.
    let out = with_config(&env, &sample, &["sync", "--source", &exports, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = out.json();
    assert_eq!(counts(&report).0, [40, 39, 1], "{report}");
    assert_eq!(report["warnings"], json!({}), "every offer is in a plan");
    assert_eq!(
        placement(&env, "ann@example.com").await,
        some(("DE", "premium-annual"))
    );
    assert_eq!(
        placement(&env, "bob@example.com").await,
        some(("PL", "premium-monthly"))
    );
}
