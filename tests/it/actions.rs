//! The billing actions end to end, against the Cleeng stand-in: the requests Cleeng
//! receives, the answers and exit codes, the ledger, the lookups, the refusals, the
//! retries, idempotency, a killed process, and the token kept out of every output.

use crate::common::{Env, Output, csv};
use crate::daemon_harness::{Daemon, TOKEN as SERVER_TOKEN};
use crate::standin::{self, Fault, StandIn, TOKEN};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The subscribers of the export, and who they are at Cleeng.
pub(crate) fn export() -> String {
    let row = |email: &str, offer: &str, expiry: &str, status: &str, external: &str| {
        format!("{email},{offer},{expiry},{status},1,{external},,,,,")
    };
    csv([
        // Found by external id.
        row(
            "ann@example.com",
            "S000000001_PL",
            "2099-01-01",
            "stopped",
            "ext-ann",
        ),
        row(
            "bob@example.com",
            "S000000002_PL",
            "2099-01-01",
            "active",
            "ext-bob",
        ),
        // Found by customer, then offer.
        row(
            "cid@example.com",
            "S000000003_DE",
            "2099-01-01",
            "active",
            "",
        ),
        // A country the plan has no offer for.
        row(
            "dan@example.com",
            "S000000004_US",
            "2099-01-01",
            "active",
            "",
        ),
        // Expired (the connector accepts past dates).
        row(
            "eve@example.com",
            "S000000005_PL",
            "2000-01-01",
            "stopped",
            "ext-eve",
        ),
        // Not at Cleeng.
        row(
            "fay@example.com",
            "S000000006_PL",
            "2099-01-01",
            "active",
            "ext-fay",
        ),
        // Two subscriptions of one customer to the same offer.
        row(
            "gus@example.com",
            "S000000007_PL",
            "2099-01-01",
            "active",
            "",
        ),
        // Bought in an app: switches are not supported.
        row(
            "hal@example.com",
            "S000000008_PL",
            "2099-01-01",
            "active",
            "ext-hal",
        ),
    ])
}

pub(crate) fn cleeng() -> StandIn {
    let cleeng = StandIn::start();
    let with = |id, email: &str, offer: &str, external: Option<&str>| {
        let mut s = standin::subscription(id, email, offer);
        s.external_id = external.map(str::to_string);
        s
    };
    let mut ann = with(1, "ann@example.com", "S000000001_PL", Some("ext-ann"));
    ann.status = "stopped".into();
    let mut gus2 = with(71, "gus@example.com", "S000000007_PL", None);
    gus2.customer_id = 700;
    let mut hal = with(8, "hal@example.com", "S000000008_PL", Some("ext-hal"));
    hal.gateway = "apple".into();
    cleeng
        .subscription(ann)
        .subscription(with(2, "bob@example.com", "S000000002_PL", Some("ext-bob")))
        .subscription(with(3, "cid@example.com", "S000000003_DE", None))
        .subscription(with(70, "gus@example.com", "S000000007_PL", None))
        .subscription(gus2)
        .subscription(hal)
        .allow_switch("S000000002_PL", "S100000001_PL")
        .allow_switch("S000000003_DE", "S100000002_DE");
    cleeng
}

/// A store with the export applied, a stand-in, and a config pointing at both.
pub(crate) struct Setup {
    pub(crate) env: Env,
    pub(crate) cleeng: StandIn,
    pub(crate) config: PathBuf,
}

pub(crate) fn setup() -> Setup {
    setup_with(cleeng(), "2s", 3)
}

fn setup_with(cleeng: StandIn, timeout: &str, attempts: u32) -> Setup {
    setup_extra(cleeng, timeout, attempts, "")
}

/// [`setup_with`], with more lines for the `[connector.cleeng]` section (or sections
/// after it).
pub(crate) fn setup_extra(cleeng: StandIn, timeout: &str, attempts: u32, extra: &str) -> Setup {
    let env = Env::new();
    env.write("exports/2026-11-01.csv", export());
    let cron = crate::daemon::cron_twelve_hours_away();
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            r#"
[schedule]
cron = "{cron}"
[server]
listen = "127.0.0.1:0"
[[connector]]
id = "default"
source = "{exports}"
[connector.validation]
past_expiry = "accept"
[connector.offers]
premium = {{ PL = "S100000001_PL", DE = "S100000002_DE" }}
[connector.cleeng]
api_url = "{api}"
timeout = "{timeout}"
max_attempts = {attempts}
confirm_after = "50ms"
{extra}
"#,
            extra = extra,
            exports = env.path("exports").display(),
            api = cleeng.api_url,
        ),
    );
    let setup = Setup {
        env,
        cleeng,
        config,
    };
    let out = setup.cli(&["sync", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["outcome"], "applied", "{out:?}");
    setup
}

impl Setup {
    /// The binary with this config and the publisher token, as an operator runs it.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_token(args, Some(TOKEN))
    }

    pub(crate) fn cli_with_token(&self, args: &[&str], token: Option<&str>) -> Output {
        self.cli_with(args, token, &[])
    }

    pub(crate) fn cli_with(
        &self,
        args: &[&str],
        token: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Output {
        let config = self.config.display().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        let mut command = self.env.command(&all);
        if let Some(token) = token {
            command.env("CLEENG_SYNC_PUBLISHER_TOKEN", token);
        }
        command.envs(vars.iter().copied());
        crate::common::output(command)
    }

    /// `action ... --json`: the exit code and the answer.
    pub(crate) fn act(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["action"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.cli(&all);
        (out.code, out.json())
    }

    pub(crate) fn daemon(&self) -> Daemon {
        self.env.daemon_with(
            &self.config,
            Some(SERVER_TOKEN),
            &[("CLEENG_SYNC_PUBLISHER_TOKEN", TOKEN)],
        )
    }

    /// The changing requests Cleeng saw: (method, path, body).
    pub(crate) fn changes(&self) -> Vec<(String, String, Value)> {
        self.cleeng
            .changes()
            .into_iter()
            .map(|s| (s.method, s.path, s.body))
            .collect()
    }

    pub(crate) fn ledger(&self) -> Vec<Value> {
        let out = self.cli(&["actions", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        out.json().as_array().expect("a list").clone()
    }
}

fn change(method: &str, path: &str, body: Value) -> (String, String, Value) {
    (method.to_string(), path.to_string(), body)
}

#[test]
fn each_action_from_the_cli_sends_the_documented_request_and_is_recorded() {
    let s = setup();
    let (code, switch) = s.act(&[
        "switch",
        "Bob@Example.com",
        "--to-plan",
        "premium",
        "--direction",
        "upgrade",
    ]);
    assert_eq!(
        (code, &switch["status"]),
        (0, &json!("succeeded")),
        "{switch}"
    );
    assert_eq!(switch["subscription_id"], 2);
    assert_eq!(switch["action"], "switch_subscription");
    assert_eq!(switch["email"], "bob@example.com");
    let (code, coupon) = s.act(&["coupon", "bob@example.com", "SAVE10"]);
    assert_eq!(
        (code, &coupon["status"]),
        (0, &json!("succeeded")),
        "{coupon}"
    );
    let (code, reactivate) = s.act(&["reactivate", "ann@example.com"]);
    assert_eq!(
        (code, &reactivate["status"]),
        (0, &json!("succeeded")),
        "{reactivate}"
    );

    assert_eq!(
        s.changes(),
        vec![
            change(
                "POST",
                "/subscription_switches",
                json!({"subscriptionId": 2, "toOfferId": "S100000001_PL", "switchDirection": "upgrade"})
            ),
            change("PATCH", "/subscriptions/2", json!({"couponCode": "SAVE10"})),
            change("PATCH", "/subscriptions/1", json!({"status": "active"})),
        ]
    );
    let seen = s.cleeng.seen();
    assert!(
        seen.iter().all(|r| r.token.as_deref() == Some(TOKEN)),
        "{seen:?}"
    );
    // bob and ann were found by their stored external ids, and read back after the
    // switch and the reactivate (a coupon has no effect to confirm).
    let lookups: Vec<_> = seen
        .iter()
        .filter(|r| !r.changes())
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        lookups.len(),
        5,
        "a lookup an action, a read a switch or reactivate: {lookups:?}"
    );
    assert!(
        lookups
            .iter()
            .all(|q| q.len() == 1 && q[0].0 == "externalId"),
        "{lookups:?}"
    );
    assert_eq!(s.cleeng.get(1).unwrap().status, "active");
    assert_eq!(s.cleeng.get(2).unwrap().coupon.as_deref(), Some("SAVE10"));

    let ledger = s.ledger();
    let statuses: Vec<_> = ledger
        .iter()
        .map(|a| {
            (
                a["action"].clone(),
                a["status"].clone(),
                a["trigger"].clone(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (
                json!("reactivate_subscription"),
                json!("succeeded"),
                json!("cli")
            ),
            (json!("apply_coupon"), json!("succeeded"), json!("cli")),
            (
                json!("switch_subscription"),
                json!("succeeded"),
                json!("cli")
            ),
        ]
    );
    assert_eq!(
        ledger[2]["params"],
        json!({"to_plan": "premium", "direction": "upgrade"})
    );
    assert_eq!(ledger[2]["action_id"], switch["action_id"]);

    // The switch was read back from Cleeng and confirmed; the coupon, which shows
    // nothing, stays pending beside the traits.
    assert!(switch["confirmed_at"].is_string(), "{switch}");
    assert!(reactivate["confirmed_at"].is_string(), "{reactivate}");
    assert_eq!(coupon["confirmed_at"], Value::Null);
    let out = s.cli(&["traits", "bob@example.com", "--json"]);
    let traits = out.json();
    assert_eq!(traits["offer_id"], "S100000001_PL");
    assert_eq!(
        traits["live_source"],
        json!(format!("action:{}", switch["action_id"]))
    );
    let pending: Vec<_> = traits["pending_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].clone())
        .collect();
    assert_eq!(pending, vec![json!("apply_coupon")]);
    assert_eq!(
        traits["pending_actions"][0]["params"],
        json!({"coupon_code": "SAVE10"})
    );
    // The export was written before the reads: it leaves bob and ann as read.
    let out = s.cli(&["sync", "--force", "--json"]);
    let report = out.json();
    assert_eq!(report["outcome"], "applied", "{out:?}");
    assert_eq!(report["changes"]["superseded"], 2, "{report}");
    let traits = s.cli(&["traits", "bob@example.com", "--json"]).json();
    assert_eq!(traits["offer_id"], "S100000001_PL");
    assert_eq!(traits["pending_actions"], json!([]));
}

#[tokio::test]
async fn each_action_from_the_api_answers_as_the_cli_does_and_is_listed() {
    let s = setup();
    let daemon = s.daemon();
    daemon.ready().await;
    let path = "/v1/connectors/default/actions";
    let bodies = [
        json!({"action": "switch_subscription", "email": "cid@example.com", "to_plan": "premium"}),
        json!({"action": "apply_coupon", "email": "bob@example.com", "coupon_code": "SAVE10"}),
        json!({"action": "reactivate_subscription", "email": "ann@example.com"}),
    ];
    let mut ids = Vec::new();
    for body in &bodies {
        let (status, answer) = daemon.post_json(path, Some(SERVER_TOKEN), &[], body).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("succeeded")),
            "{answer}"
        );
        assert_eq!(answer["action"], body["action"]);
        ids.push(answer["action_id"].as_i64().unwrap());
    }
    assert_eq!(
        s.changes(),
        vec![
            change(
                "POST",
                "/subscription_switches",
                json!({"subscriptionId": 3, "toOfferId": "S100000002_DE", "switchDirection": "unspecified"})
            ),
            change("PATCH", "/subscriptions/2", json!({"couponCode": "SAVE10"})),
            change("PATCH", "/subscriptions/1", json!({"status": "active"})),
        ]
    );
    // cid has no external id: the customer by email, then the subscription to the offer.
    let seen = s.cleeng.seen();
    assert_eq!(seen[0].path, "/entitlements");
    assert_eq!(
        seen[0].query,
        [
            ("customerEmail", "cid@example.com"),
            ("offset", "0"),
            ("limit", "100")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    );
    assert_eq!(
        seen[1].query,
        [
            ("customerId", "30"),
            ("offerId", "S000000003_DE"),
            ("status[]", "active"),
            ("status[]", "stopped")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    );

    let (status, listed) = daemon
        .get("/v1/actions?email=BOB@example.com", Some(SERVER_TOKEN))
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["trigger"], "api");
    let (status, one) = daemon
        .get(&format!("/v1/actions/{}", ids[2]), Some(SERVER_TOKEN))
        .await;
    assert_eq!(
        (status, &one["action"]),
        (200, &json!("reactivate_subscription")),
        "{one}"
    );
    let (status, traits) = daemon
        .get(
            "/v1/connectors/default/traits/cid@example.com",
            Some(SERVER_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{traits}");
    // The switch was read back at once: confirmed, no longer pending, in the traits.
    assert_eq!(traits["pending_actions"], json!([]), "{traits}");
    assert_eq!(traits["offer_id"], "S100000002_DE");
    assert_eq!(traits["live_source"], json!(format!("action:{}", ids[0])));
    let (_, switch) = daemon
        .get(&format!("/v1/actions/{}", ids[0]), Some(SERVER_TOKEN))
        .await;
    assert!(switch["confirmed_at"].is_string(), "{switch}");
    let (_, traits) = daemon
        .get(
            "/v1/connectors/default/traits/bob@example.com",
            Some(SERVER_TOKEN),
        )
        .await;
    assert_eq!(traits["pending_actions"][0]["action_id"], ids[1]);
    assert_eq!(
        traits["pending_actions"][0]["params"],
        json!({"coupon_code": "SAVE10"})
    );

    // Without the token nothing is asked of Cleeng.
    let before = s.cleeng.seen().len();
    let (status, _) = daemon.post_json(path, None, &[], &bodies[1]).await;
    assert_eq!(status, 401);
    let (status, _) = daemon.get("/v1/actions", None).await;
    assert_eq!(status, 401);
    let (status, bad) = daemon
        .post_json(
            path,
            Some(SERVER_TOKEN),
            &[],
            &json!({"action": "apply_coupon", "email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = daemon
        .post_json(
            "/v1/connectors/nope/actions",
            Some(SERVER_TOKEN),
            &[],
            &bodies[1],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.cleeng.seen().len(), before);
}

#[test]
fn the_subscription_is_found_by_each_route_and_none_or_two_are_refused() {
    let s = setup();
    // An explicit id: no lookup at all.
    let (code, answer) = s.act(&[
        "coupon",
        "cid@example.com",
        "SAVE5",
        "--subscription-id",
        "3",
    ]);
    assert_eq!(
        (code, &answer["subscription_id"]),
        (0, &json!(3)),
        "{answer}"
    );
    assert_eq!(s.cleeng.seen().len(), 1);

    // A stored external id that Cleeng does not know.
    let (code, answer) = s.act(&["coupon", "fay@example.com", "SAVE5"]);
    assert_eq!(
        (code, &answer["status"], &answer["code"]),
        (3, &json!("refused"), &json!("subscription_not_found")),
        "{answer}"
    );
    // Two subscriptions of the customer to the stored offer.
    let (code, answer) = s.act(&["coupon", "gus@example.com", "SAVE5"]);
    assert_eq!(
        (code, &answer["code"]),
        (3, &json!("ambiguous_subscription")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("subscription_id"),
        "{answer}"
    );
    // Neither was asked to change anything.
    assert_eq!(s.changes().len(), 1);
    // Both are in the ledger.
    let ledger = s.ledger();
    assert_eq!(ledger[0]["status"], "refused");
    assert_eq!(ledger[1]["code"], "subscription_not_found");
}

#[test]
fn every_local_refusal_has_its_code_and_calls_nothing() {
    let s = setup();
    for (args, wanted) in [
        (
            vec!["reactivate", "nobody@example.com"],
            "unknown_subscriber",
        ),
        (vec!["reactivate", "bob@example.com"], "already_active"),
        (vec!["reactivate", "eve@example.com"], "expired"),
        (
            vec!["switch", "bob@example.com", "--to-offer", "S000000002_PL"],
            "same_offer",
        ),
        (
            vec!["switch", "dan@example.com", "--to-plan", "premium"],
            "no_localized_offer",
        ),
        (
            vec!["switch", "bob@example.com", "--to-plan", "gold"],
            "no_localized_offer",
        ),
    ] {
        let (code, answer) = s.act(&args);
        assert_eq!(
            (code, &answer["status"], &answer["code"]),
            (3, &json!("refused"), &json!(wanted)),
            "{args:?}: {answer}"
        );
    }
    assert_eq!(s.cleeng.seen(), vec![], "Cleeng was not even asked");
    // A dry run checks and resolves, and changes nothing.
    let (code, answer) = s.act(&[
        "switch",
        "bob@example.com",
        "--to-plan",
        "premium",
        "--dry-run",
    ]);
    assert_eq!(
        (code, &answer["status"], &answer["subscription_id"]),
        (0, &json!("dry_run"), &json!(2)),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("S100000001_PL"),
        "{answer}"
    );
    assert!(s.changes().is_empty());
    let (code, answer) = s.act(&["reactivate", "bob@example.com", "--dry-run"]);
    assert_eq!((code, &answer["code"]), (3, &json!("already_active")));
    assert_eq!(s.ledger().len(), 6, "dry runs are not recorded");
}

#[tokio::test]
async fn cleengs_refusals_come_back_with_its_codes_and_a_refused_token_is_named_not_shown() {
    let s = setup();
    // Not allowed in the dashboard.
    let (code, answer) = s.act(&["switch", "bob@example.com", "--to-offer", "S100000002_DE"]);
    assert_eq!(
        (code, &answer["code"]),
        (3, &json!("SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS")),
        "{answer}"
    );
    // Bought through a gateway switches do not support.
    let (code, answer) = s.act(&["switch", "hal@example.com", "--to-plan", "premium"]);
    assert_eq!(
        (code, &answer["code"]),
        (3, &json!("PAYMENT_GATEWAY_NOT_SUPPORTED")),
        "{answer}"
    );
    // A validation error, its code read from errors[0].
    let daemon = s.daemon();
    daemon.ready().await;
    let (status, answer) = daemon
        .post_json("/v1/connectors/default/actions", Some(SERVER_TOKEN), &[], &json!({"action": "apply_coupon", "email": "bob@example.com", "coupon_code": "EXPIRED10"}))
        .await;
    assert_eq!(
        (status, &answer["status"], &answer["code"]),
        (422, &json!("refused"), &json!("VALIDATION_ERROR")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("Coupon code is not valid"),
        "{answer}"
    );

    // A token Cleeng does not accept.
    let wrong = "wrong-token-5d2b8e";
    let out = s.cli_with_token(
        &["action", "coupon", "bob@example.com", "SAVE10", "--json"],
        Some(wrong),
    );
    assert_eq!(out.code, 1, "{out:?}");
    let answer = out.json();
    assert_eq!(
        (&answer["status"], &answer["code"]),
        (&json!("failed"), &json!("token_refused")),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("refused the publisher token")
            && message.contains("CLEENG_SYNC_PUBLISHER_TOKEN"),
        "{message}"
    );
    assert!(
        !out.stdout.contains(wrong) && !out.stderr.contains(wrong),
        "{out:?}"
    );
    // No token at all: said, and Cleeng not called.
    let before = s.cleeng.seen().len();
    let out = s.cli_with_token(
        &["action", "coupon", "bob@example.com", "SAVE10", "--json"],
        None,
    );
    assert_eq!(
        (out.code, &out.json()["code"]),
        (1, &json!("token_missing")),
        "{out:?}"
    );
    assert_eq!(s.cleeng.seen().len(), before);
    drop(daemon);
}

#[test]
fn busy_answers_and_refused_connections_are_retried_lost_answers_never_are() {
    let s = setup();
    // 429 with Retry-After, then 503: the third attempt succeeds (an explicit id, so
    // that the faults meet the PATCH).
    s.cleeng
        .fail_next([Fault::Status(429, Some(1)), Fault::Status(503, None)]);
    let started = Instant::now();
    let (code, answer) = s.act(&[
        "coupon",
        "bob@example.com",
        "SAVE10",
        "--subscription-id",
        "2",
    ]);
    assert_eq!(
        (code, &answer["status"]),
        (0, &json!("succeeded")),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(s.changes().len(), 3);
    assert_eq!(s.ledger()[0]["attempts"], 3);

    // A 500 after the PATCH was sent: not repeated, unknown.
    s.cleeng.fail_next([Fault::Status(500, None)]);
    let (code, answer) = s.act(&[
        "coupon",
        "bob@example.com",
        "SAVE20",
        "--subscription-id",
        "2",
    ]);
    assert_eq!(
        (code, &answer["status"], &answer["code"]),
        (1, &json!("unknown"), &json!("answer_lost")),
        "{answer}"
    );
    assert_eq!(s.changes().len(), 4, "sent exactly once");

    // A timeout after the request was sent (applied, answer lost): not repeated, unknown.
    s.cleeng.fail_next([Fault::ApplyThenHang]);
    let (code, answer) = s.act(&["reactivate", "ann@example.com", "--subscription-id", "1"]);
    assert_eq!(
        (code, &answer["status"]),
        (1, &json!("unknown")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("may or may not"),
        "{answer}"
    );
    assert_eq!(s.changes().len(), 5, "sent exactly once");
    assert_eq!(
        s.cleeng.get(1).unwrap().status,
        "active",
        "Cleeng did apply it"
    );

    // A lookup (GET) that times out is simply tried again.
    s.cleeng.fail_next([Fault::Hang]);
    let (code, answer) = s.act(&["coupon", "bob@example.com", "SAVE30"]);
    assert_eq!(
        (code, &answer["status"]),
        (0, &json!("succeeded")),
        "{answer}"
    );

    let ledger = s.ledger();
    assert_eq!(ledger[1]["status"], "unknown");
    assert_eq!(ledger[2]["http_status"], 500);
}

#[test]
fn a_refused_connection_is_retried_and_ends_failed_with_nothing_sent() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = StandIn::start();
    let s = setup_with(closed, "2s", 3);
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&s.cleeng.api_url, &format!("http://127.0.0.1:{port}/3.1"));
    std::fs::write(&s.config, config).unwrap();
    let (code, answer) = s.act(&[
        "coupon",
        "bob@example.com",
        "SAVE10",
        "--subscription-id",
        "2",
    ]);
    assert_eq!(
        (code, &answer["status"], &answer["code"]),
        (1, &json!("failed"), &json!("cleeng_unreachable")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("3 attempt"),
        "{answer}"
    );
    assert_eq!(s.ledger()[0]["attempts"], 3);
}

#[tokio::test]
async fn one_idempotency_key_calls_cleeng_once_at_once_and_across_a_restart() {
    let s = setup();
    let daemon = s.daemon();
    daemon.ready().await;
    let path = "/v1/connectors/default/actions";
    // An explicit id, so that the fault meets the PATCH.
    let body = json!({"action": "apply_coupon", "email": "bob@example.com", "coupon_code": "SAVE10", "subscription_id": 2});
    let key = [("Idempotency-Key", "order-7731")];
    // The first one's PATCH waits a little, so that the second arrives meanwhile.
    s.cleeng.fail_next([Fault::Status(429, Some(1))]);
    let (a, b) = tokio::join!(
        daemon.post_json(path, Some(SERVER_TOKEN), &key, &body),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            daemon
                .post_json(path, Some(SERVER_TOKEN), &key, &body)
                .await
        }
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(a, b, "the same answer");
    let patches = |s: &Setup| {
        s.changes()
            .into_iter()
            .filter(|c| c.2 == json!({"couponCode": "SAVE10"}))
            .count()
    };
    assert_eq!(patches(&s), 2, "one action: its 429 and its retry");
    drop(daemon);

    let daemon = s.daemon();
    daemon.ready().await;
    let again = daemon
        .post_json(path, Some(SERVER_TOKEN), &key, &body)
        .await;
    assert_eq!(again, a);
    assert_eq!(patches(&s), 2);
    // The same key with another request.
    let other = json!({"action": "apply_coupon", "email": "bob@example.com", "coupon_code": "SAVE20", "subscription_id": 2});
    let (status, answer) = daemon
        .post_json(path, Some(SERVER_TOKEN), &key, &other)
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (422, &json!("idempotency_key_reused")),
        "{answer}"
    );
    assert_eq!(s.changes().len(), 2);
    // From the command line too.
    let (code, answer) = s.act(&[
        "coupon",
        "bob@example.com",
        "SAVE10",
        "--subscription-id",
        "2",
        "--idempotency-key",
        "order-7731",
    ]);
    assert_eq!((code, &answer["action_id"]), (0, &a.1["action_id"]));
    assert_eq!(s.ledger().len(), 1);
}

#[test]
fn an_action_killed_while_it_waits_for_cleeng_is_unknown_at_the_next_start() {
    let s = setup_with(cleeng(), "60s", 3);
    s.cleeng.fail_next([Fault::Hang]);
    let config = s.config.display().to_string();
    let mut command = s.env.command(&[
        "--config",
        &config,
        "action",
        "coupon",
        "bob@example.com",
        "SAVE10",
        "--subscription-id",
        "2",
    ]);
    command.env("CLEENG_SYNC_PUBLISHER_TOKEN", TOKEN);
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.changes().is_empty() {
        assert!(Instant::now() < deadline, "the PATCH never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let ledger = s.ledger();
    assert_eq!(ledger[0]["status"], "unknown", "{ledger:?}");
    assert!(
        ledger[0]["message"]
            .as_str()
            .unwrap()
            .contains("stopped before Cleeng answered")
    );
    // Nothing was repeated, by that start or by later ones.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.changes().len(), 1);
    assert_eq!(s.ledger()[0]["status"], "unknown");
}

#[tokio::test]
async fn the_publisher_token_never_appears_in_output_logs_the_api_or_the_store() {
    let s = setup();
    // Every crate at every level, the HTTP client's included.
    let trace = [("RUST_LOG", "trace")];
    let mut outputs = Vec::new();
    for args in [
        vec!["-vv", "action", "coupon", "bob@example.com", "SAVE10"],
        vec![
            "-vv",
            "--log-format",
            "json",
            "action",
            "switch",
            "bob@example.com",
            "--to-offer",
            "S100000002_DE",
            "--json",
        ],
        vec!["-vv", "action", "reactivate", "fay@example.com"],
        vec!["-vv", "actions"],
        vec!["-vv", "check"],
    ] {
        outputs.push(s.cli_with(&args, Some(TOKEN), &trace));
    }
    s.cleeng
        .fail_next([Fault::Status(503, None), Fault::Status(500, None)]);
    outputs.push(s.cli_with(
        &[
            "-vv",
            "action",
            "coupon",
            "bob@example.com",
            "SAVE20",
            "--subscription-id",
            "2",
        ],
        Some(TOKEN),
        &trace,
    ));
    let check = &outputs[4];
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains("publisher token in CLEENG_SYNC_PUBLISHER_TOKEN is accepted"),
        "{check:?}"
    );
    let daemon = s.env.daemon_with(
        &s.config,
        Some(SERVER_TOKEN),
        &[("CLEENG_SYNC_PUBLISHER_TOKEN", TOKEN), trace[0]],
    );
    daemon.ready().await;
    let body =
        json!({"action": "apply_coupon", "email": "bob@example.com", "coupon_code": "SAVE30"});
    let (status, _) = daemon
        .post_json(
            "/v1/connectors/default/actions",
            Some(SERVER_TOKEN),
            &[],
            &body,
        )
        .await;
    assert_eq!(status, 200);
    let (_, actions) = daemon.get_text("/v1/actions", Some(SERVER_TOKEN)).await;
    let logs = daemon.logs();
    drop(daemon);
    for out in &outputs {
        assert!(
            !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
            "{out:?}"
        );
    }
    assert!(
        outputs[1].stderr.contains("\"level\":\"TRACE\""),
        "the logs were verbose: {:?}",
        outputs[1]
    );
    assert!(
        !actions.contains(TOKEN) && actions.contains("apply_coupon"),
        "{actions}"
    );
    assert!(!logs.contains(TOKEN));
    assert!(!s.env.store_dump().await.contains(TOKEN));
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let s = setup();
    let daemon = s.daemon();
    daemon.ready().await;
    let (status, text) = daemon.get_text("/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openapi.json");
    std::fs::write(&target, &text).expect("write target/openapi.json");
    crate::common::validate_openapi(&target);

    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let (_, served) = cleeng_sync::server::routes::<cleeng_sync::store::Sqlite>();
    let mut served: Vec<(String, String)> = served
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(
        documented, served,
        "the document lists exactly the routes served"
    );

    // Each route answers one of the statuses its operation documents.
    for (method, path) in &documented {
        let concrete = path
            .replace(
                "{id}",
                if path.starts_with("/v1/connectors") {
                    "default"
                } else {
                    "1"
                },
            )
            .replace("{email}", "bob@example.com");
        let status = daemon
            .status_of(method, &concrete, Some(SERVER_TOKEN))
            .await;
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {concrete} answered {status}, not documented: {responses}"
        );
    }
}
