//! Live subscriber state, end to end against the Cleeng stand-in: a refresh's outcomes,
//! requests and stored columns; actions confirmed by reading back; the checks that use
//! what is known now; and the next export, which never undoes a newer refresh.

use crate::actions::{Setup, cleeng, setup, setup_extra};
use crate::common::written_at;
use crate::daemon_harness::TOKEN as SERVER_TOKEN;
use crate::standin::{Fault, Seen};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

impl Setup {
    /// `refresh EMAIL --json`: the exit code and the answer.
    fn refresh(&self, email: &str) -> (i32, Value) {
        let out = self.cli(&["refresh", email, "--json"]);
        (out.code, out.json())
    }

    fn traits(&self, email: &str) -> Value {
        let out = self.cli(&["traits", email, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        out.json()
    }

    /// Writes an export into the folder, as written at `at`.
    fn export_at(&self, name: &str, body: String, at: SystemTime) {
        let path = self.env.write(&format!("exports/{name}"), body);
        written_at(&path, at);
    }

    fn sync(&self, extra: &[&str]) -> Value {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        out.json()
    }
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(3600 * n)
}

/// The bundled export of `actions.rs` with some rows replaced (by email) or left out.
fn export_with(replace: &[(&str, &str)], omit: &[&str]) -> String {
    let base = crate::actions::export();
    let mut lines = base.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let mut out = vec![header];
    for line in lines {
        let email = line.split(',').next().unwrap_or_default();
        if omit.contains(&email) {
            continue;
        }
        match replace.iter().find(|(e, _)| *e == email) {
            Some((_, row)) => out.push((*row).to_string()),
            None => out.push(line.to_string()),
        }
    }
    out.join("\n") + "\n"
}

fn gets(seen: &[Seen]) -> Vec<(String, Vec<(String, String)>)> {
    seen.iter()
        .map(|s| {
            assert_eq!(s.method, "GET", "a refresh sends only GETs: {s:?}");
            (s.path.clone(), s.query.clone())
        })
        .collect()
}

fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_refresh_reads_cleeng_with_gets_only_and_writes_the_offer_status_and_expiry() {
    let s = setup();
    let before = s.traits("ann@example.com");
    // ann reactivated on Cleeng's own pages this morning.
    s.cleeng.update(1, |x| x.status = "active".into());
    let (code, ann) = s.refresh("Ann@Example.com");
    assert_eq!((code, &ann["outcome"]), (0, &json!("updated")), "{ann}");
    assert_eq!(ann["changes"], json!({"status": ["stopped", "active"]}));
    assert_eq!(ann["subscription_id"], 1);
    let after = s.traits("ann@example.com");
    assert_eq!(after["status"], "active");
    assert_eq!(after["live_at"], ann["live_at"]);
    assert_eq!(after["live_source"], "manual");
    assert_ne!(after["row_hash"], before["row_hash"]);
    for same in [
        "offer_id",
        "expiry_date",
        "payment_method_id",
        "external_id",
        "changed_run",
    ] {
        assert_eq!(after[same], before[same], "{same}");
    }

    // Nothing changed at Cleeng: unchanged, and known as of now.
    let (code, bob) = s.refresh("bob@example.com");
    assert_eq!((code, &bob["outcome"]), (0, &json!("unchanged")), "{bob}");
    assert_eq!(bob["changes"], json!({}));
    let bob_traits = s.traits("bob@example.com");
    assert!(bob_traits["live_at"].is_string());

    // No external id: the customer by email, then their live subscriptions of any offer.
    let from = s.cleeng.seen().len();
    let (code, cid) = s.refresh("cid@example.com");
    assert_eq!((code, &cid["outcome"]), (0, &json!("unchanged")), "{cid}");
    assert_eq!(
        gets(&s.cleeng.seen()[from..]),
        vec![
            (
                "/entitlements".to_string(),
                query(&[
                    ("customerEmail", "cid@example.com"),
                    ("offset", "0"),
                    ("limit", "100")
                ])
            ),
            (
                "/subscriptions".to_string(),
                query(&[
                    ("customerId", "30"),
                    ("status[]", "active"),
                    ("status[]", "stopped")
                ])
            ),
        ]
    );

    // fay's external id and dan's email are not at Cleeng: nothing live, nothing written.
    for email in ["fay@example.com", "dan@example.com"] {
        let (code, none) = s.refresh(email);
        assert_eq!(
            (code, &none["outcome"]),
            (0, &json!("no_live_subscription")),
            "{none}"
        );
        assert_eq!(s.traits(email)["live_at"], Value::Null);
    }
    // gus has two subscriptions to the stored offer.
    let (code, gus) = s.refresh("gus@example.com");
    assert_eq!(
        (code, &gus["outcome"]),
        (3, &json!("ambiguous_subscription")),
        "{gus}"
    );
    let (code, zed) = s.refresh("zed@example.com");
    assert_eq!(
        (code, &zed["outcome"]),
        (3, &json!("unknown_subscriber")),
        "{zed}"
    );

    // Cleeng down: tried max_attempts times, failed, nothing written.
    s.cleeng
        .fail_next(std::iter::repeat_n(Fault::Status(503, None), 3));
    let (code, down) = s.refresh("hal@example.com");
    assert_eq!((code, &down["outcome"]), (1, &json!("failed")), "{down}");
    assert_eq!(s.traits("hal@example.com")["live_at"], Value::Null);

    gets(&s.cleeng.seen());
    assert!(s.cleeng.changes().is_empty());
}

#[test]
fn an_expiry_at_three_in_the_morning_utc_is_stored_as_the_day_before_in_los_angeles() {
    let s = setup();
    let at = chrono::DateTime::parse_from_rfc3339("2031-03-04T03:00:00Z")
        .unwrap()
        .timestamp();
    s.cleeng.update(3, |x| x.expires_at = at);
    let (code, cid) = s.refresh("cid@example.com");
    assert_eq!((code, &cid["outcome"]), (0, &json!("updated")), "{cid}");
    assert_eq!(
        cid["changes"],
        json!({"expiry_date": ["2099-01-01", "2031-03-03"]})
    );
    assert_eq!(s.traits("cid@example.com")["expiry_date"], "2031-03-03");
}

#[test]
fn a_refreshed_offer_takes_its_country_with_it() {
    let s = setup();
    assert_eq!(s.traits("cid@example.com")["offer_country"], "DE");
    for (offer, country) in [("S000000003_US", json!("US")), ("premium", Value::Null)] {
        s.cleeng.update(3, |x| x.offer_id = offer.into());
        let (code, cid) = s.refresh("cid@example.com");
        assert_eq!((code, &cid["outcome"]), (0, &json!("updated")), "{cid}");
        let traits = s.traits("cid@example.com");
        assert_eq!(traits["offer_id"], offer);
        assert_eq!(traits["offer_country"], country, "{traits}");
    }
}

#[test]
fn an_export_row_that_says_what_a_refresh_wrote_is_unchanged_and_clears_live_at() {
    let s = setup();
    s.cleeng.update(1, |x| x.status = "active".into());
    s.cleeng.update(3, |x| x.offer_id = "S100000002_DE".into());
    assert_eq!(s.refresh("ann@example.com").1["outcome"], "updated");
    assert_eq!(s.refresh("cid@example.com").1["outcome"], "updated");
    // The next night's export, written after the refreshes, says the same of both.
    let ann = "ann@example.com,S000000001_PL,2099-01-01,active,1,ext-ann,,,,,";
    let cid = "cid@example.com,S100000002_DE,2099-01-01,active,1,,,,,,";
    s.export_at(
        "2026-11-02.csv",
        export_with(&[("ann@example.com", ann), ("cid@example.com", cid)], &[]),
        SystemTime::now() + hours(1),
    );
    let report = s.sync(&[]);
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(
        report["changes"],
        json!({"inserted": 0, "updated": 0, "unchanged": 8, "removed": 0, "superseded": 0}),
        "the refreshed hashes are those of the export rows"
    );
    for email in ["ann@example.com", "cid@example.com"] {
        let traits = s.traits(email);
        assert_eq!(traits["live_at"], Value::Null, "{traits}");
        assert_eq!(traits["live_source"], Value::Null, "{traits}");
    }
}

#[test]
fn an_export_older_than_a_refresh_neither_updates_nor_removes_that_subscriber() {
    // Leaving one of eight out would be refused as a removal above 10%.
    let s = setup_extra(
        cleeng(),
        "2s",
        3,
        "[connector.guards]\nmax_removed_ratio = 0.1",
    );
    written_at(
        &s.env.path("exports/2026-11-01.csv"),
        SystemTime::now() - hours(3),
    );
    s.cleeng.update(1, |x| x.status = "active".into());
    let (_, ann) = s.refresh("ann@example.com");
    assert_eq!(ann["outcome"], "updated", "{ann}");
    assert_eq!(s.refresh("bob@example.com").1["outcome"], "unchanged");
    let ann_before = s.traits("ann@example.com");

    // Written before the refreshes: ann still stopped, bob left out, cid's card changed.
    let cid = "cid@example.com,S000000003_DE,2099-01-01,active,2,,,,,,";
    s.export_at(
        "2026-11-02.csv",
        export_with(&[("cid@example.com", cid)], &["bob@example.com"]),
        SystemTime::now() - hours(1),
    );
    let expected =
        json!({"inserted": 0, "updated": 1, "unchanged": 5, "removed": 0, "superseded": 2});
    let dry = s.sync(&["--dry-run"]);
    assert_eq!(dry["outcome"], "dry_run", "{dry}");
    assert_eq!(dry["changes"], expected, "{dry}");
    let report = s.sync(&[]);
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(report["changes"], expected, "{report}");
    assert_eq!(s.traits("ann@example.com"), ann_before);
    let bob = s.traits("bob@example.com");
    assert_eq!(bob["removed_run"], Value::Null, "{bob}");
    assert!(bob["live_at"].is_string());
    assert_eq!(s.traits("cid@example.com")["payment_method_id"], 2);
    let runs = s.cli(&["runs", "--json"]).json();
    assert_eq!(runs[0]["changes"]["superseded"], 2, "{runs}");

    // Written after them: applied as always, the refreshes forgotten.
    s.export_at(
        "2026-11-03.csv",
        export_with(&[("cid@example.com", cid)], &[]),
        SystemTime::now() + hours(1),
    );
    let report = s.sync(&[]);
    assert_eq!(
        report["changes"],
        json!({"inserted": 0, "updated": 1, "unchanged": 7, "removed": 0, "superseded": 0}),
        "{report}"
    );
    let ann = s.traits("ann@example.com");
    assert_eq!(ann["status"], "stopped");
    assert_eq!(
        (&ann["live_at"], &ann["live_source"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(s.traits("bob@example.com")["live_at"], Value::Null);
}

#[test]
fn a_refresh_killed_while_cleeng_answers_leaves_the_row_as_it_was() {
    let s = setup();
    let before = s.traits("ann@example.com");
    s.cleeng.update(1, |x| x.status = "active".into());
    s.cleeng.fail_next([Fault::Hang]);
    let config = s.config.display().to_string();
    let mut child = s
        .env
        .command(&["--config", &config, "refresh", "ann@example.com"])
        .env("CLEENG_SYNC_PUBLISHER_TOKEN", crate::standin::TOKEN)
        .spawn()
        .expect("start a refresh");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.cleeng.seen().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never asked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(s.traits("ann@example.com"), before);
    let (_, ann) = s.refresh("ann@example.com");
    assert_eq!(ann["outcome"], "updated", "{ann}");
}

#[test]
fn a_switch_that_shows_on_the_second_read_is_confirmed_then() {
    let s = setup();
    // Cleeng shows the switch one read after it accepted it (pending first).
    s.cleeng.lag(1);
    let (code, switch) = s.act(&["switch", "bob@example.com", "--to-plan", "premium"]);
    assert_eq!(
        (code, &switch["status"]),
        (0, &json!("succeeded")),
        "{switch}"
    );
    assert!(switch["confirmed_at"].is_string(), "{switch}");
    let reads = s.cleeng.seen().iter().filter(|r| r.method == "GET").count();
    assert_eq!(reads, 3, "the lookup, a read at once, a read later");
    let listed = s.ledger();
    assert_eq!(listed[0]["confirmed_at"], switch["confirmed_at"]);
    let traits = s.traits("bob@example.com");
    assert_eq!(traits["offer_id"], "S100000001_PL");
    assert_eq!(traits["pending_actions"], json!([]));

    // A coupon shows nothing: never read back, never confirmed, listed as pending.
    let (code, coupon) = s.act(&["coupon", "bob@example.com", "SAVE10"]);
    assert_eq!(
        (code, &coupon["confirmed_at"]),
        (0, &Value::Null),
        "{coupon}"
    );
    let traits = s.traits("bob@example.com");
    assert_eq!(traits["pending_actions"][0]["action"], "apply_coupon");
}

#[test]
fn a_second_reactivate_is_refused_while_the_first_is_unconfirmed_and_once_it_shows() {
    let s = setup();
    // Cleeng does not show the reactivate within the reads that confirm it.
    s.cleeng.lag(100);
    let (code, first) = s.act(&["reactivate", "ann@example.com"]);
    assert_eq!(
        (code, &first["status"]),
        (0, &json!("succeeded")),
        "{first}"
    );
    assert_eq!(first["confirmed_at"], Value::Null, "{first}");
    let id = first["action_id"].as_i64().unwrap();

    let (code, second) = s.act(&["reactivate", "ann@example.com"]);
    assert_eq!(
        (code, &second["code"]),
        (3, &json!("already_requested")),
        "{second}"
    );
    let message = second["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("action {id}")), "{message}");

    // Now it shows: the next read confirms it, and the refreshed status refuses another.
    s.cleeng.settle();
    let (_, read) = s.refresh("ann@example.com");
    assert_eq!(read["confirmed_actions"], json!([id]), "{read}");
    assert!(s.ledger()[1]["confirmed_at"].is_string());
    assert_eq!(s.traits("ann@example.com")["pending_actions"], json!([]));
    let (code, third) = s.act(&["reactivate", "ann@example.com"]);
    assert_eq!(
        (code, &third["code"]),
        (3, &json!("already_active")),
        "{third}"
    );
    let patches: Vec<_> = s.changes().into_iter().map(|(m, p, _)| (m, p)).collect();
    assert_eq!(
        patches,
        vec![("PATCH".to_string(), "/subscriptions/1".to_string())]
    );
}

#[test]
fn an_unconfirmed_switch_refuses_another_unless_it_carries_its_own_key() {
    let s = setup();
    s.cleeng.lag(100);
    let (_, first) = s.act(&["switch", "bob@example.com", "--to-plan", "premium"]);
    assert_eq!(first["status"], "succeeded", "{first}");
    let (code, again) = s.act(&["switch", "bob@example.com", "--to-plan", "premium"]);
    assert_eq!(
        (code, &again["code"]),
        (3, &json!("already_requested")),
        "{again}"
    );
    let (code, keyed) = s.act(&[
        "switch",
        "bob@example.com",
        "--to-plan",
        "premium",
        "--idempotency-key",
        "retry-1",
    ]);
    assert_eq!(
        (code, &keyed["status"]),
        (0, &json!("succeeded")),
        "{keyed}"
    );
    assert_eq!(s.changes().len(), 2);
}

#[tokio::test]
async fn the_refresh_endpoint_answers_as_the_cli_does() {
    let s = setup();
    let daemon = s.daemon();
    daemon.ready().await;
    s.cleeng.update(1, |x| x.status = "active".into());
    let path = |email: &str| format!("/v1/connectors/default/subscribers/{email}/refresh");
    let (status, _) = daemon.post(&path("ann@example.com"), None).await;
    assert_eq!(status, 401);
    assert!(
        s.cleeng.seen().is_empty(),
        "nothing asked without the token"
    );
    let (status, ann) = daemon
        .post(&path("ANN@example.com"), Some(SERVER_TOKEN))
        .await;
    assert_eq!((status, &ann["outcome"]), (200, &json!("updated")), "{ann}");
    assert_eq!(ann["email"], "ann@example.com");
    let (_, traits) = daemon
        .get(
            "/v1/connectors/default/traits/ann@example.com",
            Some(SERVER_TOKEN),
        )
        .await;
    assert_eq!(traits["live_source"], "api");
    assert_eq!(traits["status"], "active");
    let (status, gus) = daemon
        .post(&path("gus@example.com"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(
        (status, &gus["outcome"]),
        (422, &json!("ambiguous_subscription"))
    );
    let (status, _) = daemon
        .post(&path("zed@example.com"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 422);
    s.cleeng
        .fail_next(std::iter::repeat_n(Fault::Status(503, None), 3));
    let (status, down) = daemon
        .post(&path("bob@example.com"), Some(SERVER_TOKEN))
        .await;
    assert_eq!(
        (status, &down["outcome"]),
        (502, &json!("failed")),
        "{down}"
    );
    let (status, _) = daemon
        .post(
            "/v1/connectors/nope/subscribers/ann@example.com/refresh",
            Some(SERVER_TOKEN),
        )
        .await;
    assert_eq!(status, 404);
    let (_, metrics) = daemon.get_text("/metrics", None).await;
    let updated = metrics
        .lines()
        .find(|l| {
            l.starts_with("cleeng_sync_refreshes_total")
                && l.contains("trigger=\"api\"")
                && l.contains("outcome=\"updated\"")
        })
        .unwrap_or_default();
    assert!(updated.ends_with(" 1"), "{updated}");
    assert!(s.cleeng.changes().is_empty());
}

#[test]
fn a_removed_subscriber_with_a_live_subscription_is_present_again() {
    let s = setup();
    written_at(
        &s.env.path("exports/2026-11-01.csv"),
        SystemTime::now() - hours(3),
    );
    s.export_at(
        "2026-11-02.csv",
        export_with(&[], &["bob@example.com"]),
        SystemTime::now() - hours(2),
    );
    let report = s.sync(&["--no-guards"]);
    assert_eq!(report["changes"]["removed"], 1, "{report}");
    let run = report["run_id"].as_i64().unwrap();
    assert_eq!(s.traits("bob@example.com")["removed_run"], run);

    let (code, bob) = s.refresh("bob@example.com");
    assert_eq!((code, &bob["outcome"]), (0, &json!("updated")), "{bob}");
    assert_eq!(bob["changes"], json!({"removed_run": [run, null]}));
    let traits = s.traits("bob@example.com");
    assert_eq!(traits["removed_run"], Value::Null, "{traits}");
    assert_eq!(traits["live_source"], "manual");
}

#[tokio::test]
async fn a_refresh_waits_for_a_run_of_its_connector_before_it_writes() {
    use cleeng_sync::store::RunLock as _;
    let s = setup();
    s.cleeng.update(1, |x| x.status = "active".into());
    let config = s.config.display().to_string();
    cleeng_sync::with_store!(s.env.store().await, store => {
        // A run holds the connector's lock: the refresh reads Cleeng, then waits.
        let lock = store.lock_connector("default").await.expect("lock").expect("free");
        let mut command = s.env.command(&["--config", &config, "refresh", "ann@example.com", "--json"]);
        command.env("CLEENG_SYNC_PUBLISHER_TOKEN", crate::standin::TOKEN);
        let child = tokio::task::spawn_blocking(move || crate::common::output(command));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while s.cleeng.seen().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the refresh never read Cleeng");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.traits("ann@example.com")["status"], "stopped", "written under a run");
        lock.release().await;
        let out = child.await.expect("the refresh");
        assert_eq!((out.code, &out.json()["outcome"]), (0, &json!("updated")), "{out:?}");
    });
    assert_eq!(s.traits("ann@example.com")["status"], "active");
}
