//! Cleeng's webhooks, end to end: deliveries to a daemon's listener, the inbox, the
//! worker's refreshes against the Cleeng stand-in, and what a kill or a second daemon
//! does to them. The front door's refusals are in `webhook_security.rs`.

use crate::actions::{Setup, cleeng, setup_extra};
use crate::daemon_harness::{Daemon, TOKEN as SERVER_TOKEN};
use crate::standin::{Fault, TOKEN};
use cleeng_sync::server::webhooks::verify::Signer;
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

/// The default connector's shared secret.
pub(crate) const SECRET: &str = "whsec-default-0123456789abcdefABCDEF";
/// The other connector's.
pub(crate) const OTHER_SECRET: &str = "whsec-other-9876543210fedcbaFEDCBA";
/// The header the tests configure.
pub(crate) const HEADER: &str = "X-Cleeng-Signature";
/// The publisher the default connector takes events of.
pub(crate) const PUBLISHER: i64 = 558186818;

/// How the inbox is worked in a test.
#[derive(Clone, Copy)]
pub(crate) struct Work {
    pub(crate) coalesce: &'static str,
    pub(crate) max_attempts: u32,
    pub(crate) lease: &'static str,
}

pub(crate) const QUICK: Work = Work {
    coalesce: "200ms",
    max_attempts: 3,
    lease: "2s",
};

/// A store with the export applied, the stand-in, and a daemon with a webhook listener
/// for two connectors (`default`, `other`).
pub(crate) struct Site {
    pub(crate) s: Setup,
    pub(crate) daemon: Daemon,
    pub(crate) hooks: String,
    http: reqwest::Client,
}

/// Appends the webhook sections to the setup's config: `default`'s endpoint, the
/// listener, and a second connector on the same folder with a secret of its own.
pub(crate) fn with_webhooks(s: &Setup, work: Work) {
    let exports = s.env.path("exports");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.config)
        .expect("the config");
    write!(
        file,
        r#"
[connector.webhooks]
signature_header = "{HEADER}"
publisher_id = {PUBLISHER}
coalesce = "{coalesce}"
max_requests_per_second = 100
max_attempts = {attempts}
lease = "{lease}"

[webhooks]
listen = "127.0.0.1:0"
max_body = "4KiB"
request_timeout = "1s"

[[connector]]
id = "other"
source = "{exports}"
[connector.webhooks]
secret_env = "OTHER_WEBHOOK_SECRET"
signature_header = "{HEADER}"
"#,
        coalesce = work.coalesce,
        attempts = work.max_attempts,
        lease = work.lease,
        exports = exports.display(),
    )
    .expect("append");
}

impl Site {
    pub(crate) fn new(work: Work) -> Site {
        Site::with(setup_extra(cleeng(), "1s", 1, ""), work, &[])
    }

    pub(crate) fn with(s: Setup, work: Work, vars: &[(&str, &str)]) -> Site {
        with_webhooks(&s, work);
        // ann reactivated at Cleeng after the export: her refresh changes her traits.
        s.cleeng.update(1, |sub| sub.status = "active".into());
        let daemon = start(&s, vars);
        let hooks = daemon.hooks.clone().expect("a webhook listener");
        Site {
            s,
            daemon,
            hooks,
            http: reqwest::Client::new(),
        }
    }

    /// POSTs a body to a connector's endpoint with these headers.
    pub(crate) async fn post(
        &self,
        connector: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/cleeng/{connector}", self.hooks))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Delivers a body to `default`, signed as Cleeng signs it.
    pub(crate) async fn deliver(&self, body: &[u8]) -> (u16, Value) {
        self.post("default", body, &[(HEADER, sign(SECRET, body))])
            .await
    }

    /// The inbox as `GET /v1/events` lists it, oldest first.
    pub(crate) async fn events(&self) -> Vec<Value> {
        let (status, body) = self
            .daemon
            .get("/v1/events?limit=1000", Some(SERVER_TOKEN))
            .await;
        assert_eq!(status, 200, "{body}");
        let mut events = body["events"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// Waits until `n` events are in the inbox and none is queued; returns them.
    pub(crate) async fn settled(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.events().await;
            if events.len() >= n && events.iter().all(|e| e["status"] != "queued") {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "the inbox never settled: {events:#?}\n{}",
                self.daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `cleeng_sync_webhooks_total` of `default` for an outcome.
    pub(crate) async fn answered(&self, outcome: &str) -> f64 {
        let outcome = format!("outcome=\"{outcome}\"");
        self.metric(
            "cleeng_sync_webhooks_total",
            &["connector=\"default\"", &outcome],
        )
        .await
    }

    /// The sum of a metric's series whose line holds every one of `labels`.
    pub(crate) async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric(&self.daemon, name, labels).await
    }
}

/// Starts the daemon of a setup with webhooks, with both secrets and the Cleeng token.
pub(crate) fn start(s: &Setup, vars: &[(&str, &str)]) -> Daemon {
    let mut all = vec![
        ("CLEENG_SYNC_PUBLISHER_TOKEN", TOKEN),
        ("CLEENG_SYNC_WEBHOOK_SECRET", SECRET),
        ("OTHER_WEBHOOK_SECRET", OTHER_SECRET),
    ];
    all.extend_from_slice(vars);
    s.env.daemon_with(&s.config, Some(SERVER_TOKEN), &all)
}

pub(crate) async fn metric(daemon: &Daemon, name: &str, labels: &[&str]) -> f64 {
    let (_, text) = daemon.get_text("/metrics", None).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The hex HMAC-SHA256 of a body under a secret.
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    Signer::new(secret.as_bytes(), HEADER, "test")
        .expect("a valid secret")
        .sign_hex(body)
}

/// An event's body, as Cleeng sends it; `n` tells otherwise equal events apart.
pub(crate) fn event(topic: &str, email: &str, n: u32) -> Vec<u8> {
    json!({
        "broadcasterId": PUBLISHER,
        "topic": topic,
        "data": {"customerEmail": email, "customerId": 10, "subscriptionId": "1", "n": n}
    })
    .to_string()
    .into_bytes()
}

fn statuses(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["email"].as_str().unwrap_or("-").to_string(),
                e["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_delivery_is_refreshed_by_the_worker_and_a_redelivery_is_one_row_and_one_refresh() {
    let site = Site::new(QUICK);
    let body = event("subscriptionRenewed", "ann@example.com", 1);
    let (status, first) = site.deliver(&body).await;
    assert_eq!(
        (status, &first["outcome"]),
        (200, &json!("accepted")),
        "{first}"
    );
    let (status, again) = site.deliver(&body).await;
    assert_eq!((status, &again["outcome"]), (200, &json!("redelivered")));
    assert_eq!(again["event_id"], first["event_id"]);
    let events = site.settled(1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    // ann is active at Cleeng and stopped in the export.
    assert_eq!(
        (&e["status"], &e["topic"], &e["attempts"]),
        (&json!("applied"), &json!("subscriptionRenewed"), &json!(1)),
        "{e}"
    );
    assert_eq!(
        (&e["customer_id"], &e["subscription_id"]),
        (&json!(10), &json!(1))
    );
    assert!(e["processed_at"].is_string());
    let traits = site.s.cli(&["traits", "ann@example.com", "--json"]).json();
    assert_eq!(traits["status"], "active");
    assert_eq!(traits["live_source"], format!("webhook:{}", e["id"]));
    let refreshes = site
        .metric("cleeng_sync_refreshes_total", &["trigger=\"webhook\""])
        .await;
    assert_eq!(refreshes, 1.0);
    assert_eq!(site.answered("accepted").await, 1.0);
    assert_eq!(site.answered("redelivered").await, 1.0);
}

#[tokio::test]
async fn two_hundred_events_of_twenty_subscribers_within_the_window_make_at_most_twenty_refreshes()
{
    let site = Site::new(Work {
        coalesce: "3s",
        ..QUICK
    });
    let known = ["ann", "bob", "cid", "dan", "eve", "fay", "gus", "hal"];
    let emails: Vec<String> = (0..20)
        .map(|i| match known.get(i) {
            Some(name) => format!("{name}@example.com"),
            None => format!("nobody{i}@example.com"),
        })
        .collect();
    let sends = (0..200u32).map(|n| {
        let body = event("subscriptionRenewed", &emails[n as usize % 20], n);
        let site = &site;
        async move { site.deliver(&body).await.0 }
    });
    let started = Instant::now();
    let answers = futures::future::join_all(sends).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the deliveries took longer than the window: {:?}",
        started.elapsed()
    );
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let events = site.settled(200).await;
    assert_eq!(events.len(), 200);
    let refreshes = site
        .metric("cleeng_sync_refreshes_total", &["trigger=\"webhook\""])
        .await;
    assert!(
        refreshes <= 20.0,
        "{refreshes} refreshes for 20 subscribers"
    );
    assert!(
        refreshes >= 20.0,
        "every subscriber is refreshed: {refreshes}"
    );
    for (email, status) in statuses(&events) {
        let expected = match email.as_str() {
            // Stored, and not at Cleeng (no_live_subscription), or not stored at all.
            "dan@example.com" | "eve@example.com" | "fay@example.com" => "skipped",
            e if e.starts_with("nobody") => "skipped",
            // ann's export says stopped, Cleeng active; gus has two subscriptions.
            "ann@example.com" => "applied",
            _ => continue,
        };
        assert_eq!(status, expected, "{email}");
    }
}

#[tokio::test]
async fn events_out_of_order_leave_the_traits_as_cleengs_api_says_last() {
    let site = Site::new(QUICK);
    // Cleeng: ann switched, then stopped. The deliveries arrive the other way round.
    site.s.cleeng.update(1, |sub| {
        sub.offer_id = "S100000001_PL".into();
        sub.status = "stopped".into();
    });
    let stopped = event("subscriptionTerminated", "ann@example.com", 2);
    let switched = event("subscriptionSwitched", "ann@example.com", 1);
    assert_eq!(site.deliver(&stopped).await.0, 200);
    assert_eq!(site.deliver(&switched).await.0, 200);
    site.settled(2).await;
    let traits = site.s.cli(&["traits", "ann@example.com", "--json"]).json();
    assert_eq!(
        (&traits["offer_id"], &traits["status"]),
        (&json!("S100000001_PL"), &json!("stopped")),
        "{traits}"
    );
    // A late redelivery of the first event changes nothing: Cleeng is read, not the event.
    site.s.cleeng.update(1, |sub| sub.status = "active".into());
    assert_eq!(
        site.deliver(&event("subscriptionSwitched", "ann@example.com", 0))
            .await
            .0,
        200
    );
    site.settled(3).await;
    let traits = site.s.cli(&["traits", "ann@example.com", "--json"]).json();
    assert_eq!(traits["status"], "active", "{traits}");
}

#[tokio::test]
async fn an_unknown_subscriber_and_an_offer_topic_are_skipped_with_the_reason() {
    let site = Site::new(QUICK);
    assert_eq!(
        site.deliver(&event("customerRegistered", "new@example.com", 1))
            .await
            .0,
        200
    );
    let offer = json!({"broadcasterId": PUBLISHER, "topic": "offerUpdated",
        "data": {"offerId": "S100000001_PL"}})
    .to_string();
    assert_eq!(site.deliver(offer.as_bytes()).await.0, 200);
    let events = site.settled(2).await;
    assert_eq!(events[0]["status"], "skipped");
    let unknown = events[0]["message"].as_str().unwrap_or_default();
    assert!(unknown.starts_with("unknown_subscriber: "), "{unknown}");
    assert_eq!(events[1]["status"], "skipped");
    let nobody = events[1]["message"].as_str().unwrap_or_default();
    assert!(
        nobody.contains("offerUpdated") && nobody.contains("customerEmail"),
        "{nobody}"
    );
    assert_eq!(
        events[1]["attempts"], 0,
        "an event that names nobody is never refreshed"
    );
    assert!(
        !site
            .s
            .cleeng
            .seen()
            .iter()
            .any(|s| s.query.iter().any(|(_, v)| v.contains("new@example.com"))),
        "an unknown subscriber is not looked up at Cleeng"
    );
}

#[tokio::test]
async fn cleeng_down_is_retried_with_backoff_then_the_event_is_failed() {
    let site = Site::new(Work {
        max_attempts: 2,
        ..QUICK
    });
    site.s
        .cleeng
        .fail_next(std::iter::repeat_n(Fault::Status(503, None), 10));
    let started = Instant::now();
    assert_eq!(
        site.deliver(&event("subscriptionRenewed", "bob@example.com", 1))
            .await
            .0,
        200
    );
    let events = site.settled(1).await;
    let e = &events[0];
    assert_eq!(
        (&e["status"], &e["attempts"]),
        (&json!("failed"), &json!(2)),
        "{e}"
    );
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("failed after 2 attempts: "),
        "{message}"
    );
    // The second attempt waited for the backoff of about a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let failed = site
        .metric(
            "cleeng_sync_refreshes_total",
            &["trigger=\"webhook\"", "outcome=\"failed\""],
        )
        .await;
    assert_eq!(failed, 2.0);
    let ended = site
        .metric("cleeng_sync_events_total", &["status=\"failed\""])
        .await;
    assert_eq!(ended, 1.0);
    let (_, page) = site.daemon.get_text("/", Some(SERVER_TOKEN)).await;
    assert!(page.contains("1 failed in the last 24 h"), "{page}");
}

#[tokio::test]
async fn the_status_page_and_the_gauges_show_what_waits() {
    let site = Site::new(Work {
        coalesce: "60s",
        ..QUICK
    });
    let (_, page) = site.daemon.get_text("/", None).await;
    assert!(
        page.contains("nothing queued") && page.contains("no delivery yet"),
        "{page}"
    );
    for n in 0..2 {
        let body = event("subscriptionRenewed", "ann@example.com", n);
        assert_eq!(site.deliver(&body).await.0, 200);
    }
    let (_, page) = site.daemon.get_text("/", None).await;
    assert!(page.contains("2 queued"), "{page}");
    assert!(page.contains("no failure in the last 24 h"), "{page}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = site
            .metric("cleeng_sync_events_queued", &["connector=\"default\""])
            .await;
        let lag = site
            .metric("cleeng_sync_event_lag_seconds", &["connector=\"default\""])
            .await;
        if queued == 2.0 && lag > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "queued {queued}, lag {lag}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn kill_9_with_events_queued_and_a_refresh_in_flight_loses_no_event() {
    let mut site = Site::new(QUICK);
    // The first refresh's request hangs: it is in flight when the daemon is killed.
    site.s.cleeng.fail_next([Fault::Hang]);
    let emails = ["ann", "bob", "cid", "hal"];
    for (n, name) in emails.iter().enumerate() {
        let body = event(
            "subscriptionRenewed",
            &format!("{name}@example.com"),
            n as u32,
        );
        assert_eq!(site.deliver(&body).await.0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while site.s.cleeng.seen().is_empty() {
        assert!(Instant::now() < deadline, "no refresh started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    site.daemon.kill9();
    let daemon = start(&site.s, &[]);
    site.hooks = daemon.hooks.clone().expect("a webhook listener");
    site.daemon = daemon;
    let events = site.settled(4).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    for e in &events {
        let status = e["status"].as_str().unwrap_or_default();
        assert!(["applied", "unchanged"].contains(&status), "{e}");
    }
    // The killed refresh's event was claimed twice; the others once.
    let attempts: Vec<i64> = events
        .iter()
        .filter_map(|e| e["attempts"].as_i64())
        .collect();
    assert_eq!(attempts, [2, 1, 1, 1], "{events:#?}");
}

#[tokio::test]
async fn two_daemons_on_one_store_never_refresh_the_same_event_twice() {
    let site = Site::new(QUICK);
    let second = start(&site.s, &[]);
    let hooks2 = second.hooks.clone().expect("a webhook listener");
    let names = ["ann", "bob", "cid", "dan", "eve", "fay", "gus", "hal"];
    for round in 0..5u32 {
        for (i, name) in names.iter().enumerate() {
            let body = event(
                "subscriptionRenewed",
                &format!("{name}@example.com"),
                round * 10 + i as u32,
            );
            let signature = sign(SECRET, &body);
            // Half the deliveries go to each daemon, as a load balancer would send them.
            let hooks = if i % 2 == 0 { &site.hooks } else { &hooks2 };
            let status = reqwest::Client::new()
                .post(format!("{hooks}/v1/webhooks/cleeng/default"))
                .header(HEADER, signature)
                .body(body)
                .send()
                .await
                .expect("POST")
                .status();
            assert_eq!(status, 200);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let events = site.settled(40).await;
    assert!(
        events.iter().all(|e| e["attempts"] == 1),
        "an event was claimed twice: {events:#?}"
    );
    let first = metric(
        &site.daemon,
        "cleeng_sync_refreshes_total",
        &["trigger=\"webhook\""],
    )
    .await;
    let other = metric(
        &second,
        "cleeng_sync_refreshes_total",
        &["trigger=\"webhook\""],
    )
    .await;
    assert!(
        first + other <= 40.0,
        "{first} + {other} refreshes of 40 events"
    );
    let sources: Vec<String> = names
        .iter()
        .map(|n| {
            site.s
                .cli(&["traits", &format!("{n}@example.com"), "--json"])
                .json()
        })
        .filter_map(|t| t["live_source"].as_str().map(str::to_string))
        .collect();
    assert!(!sources.is_empty(), "no refresh wrote");
}

#[tokio::test]
async fn the_events_command_lists_the_inbox_by_status() {
    let site = Site::new(QUICK);
    assert_eq!(
        site.deliver(&event("subscriptionRenewed", "ann@example.com", 1))
            .await
            .0,
        200
    );
    let offer = br#"{"broadcasterId":558186818,"topic":"offerUpdated","data":{}}"#;
    assert_eq!(site.deliver(offer).await.0, 200);
    site.settled(2).await;
    let out = site.s.cli(&["events", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let listed = out.json();
    assert_eq!(
        listed["events"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["events"][0]["topic"], "offerUpdated", "newest first");
    let skipped = site
        .s
        .cli(&["events", "--status", "skipped", "--json"])
        .json();
    assert_eq!(skipped["events"].as_array().map(Vec::len), Some(1));
    let text = site.s.cli(&["events"]);
    assert!(
        text.stdout.contains("subscriptionRenewed") && text.stdout.contains("applied"),
        "{text:?}"
    );
    let bad = site.s.cli(&["events", "--status", "done"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn the_deploy_configs_with_webhooks_load() {
    let env = crate::common::Env::sqlite();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let configmap = std::fs::read_to_string(root.join("k8s/configmap.yaml")).expect("configmap");
    let (_, embedded) = configmap
        .split_once("cleeng-sync.toml: |\n")
        .expect("the embedded file");
    let unindented: String = embedded
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n")
        .collect();
    let from_configmap = env.write("configmap.toml", unindented);
    for config in [
        root.join("systemd/cleeng-sync.toml"),
        root.join("compose/cleeng-sync.toml"),
        from_configmap,
    ] {
        let path = config.display().to_string();
        let out = env.run(&["--config", &path, "events", "--json"]);
        assert_eq!(out.code, 0, "{path}: {out:?}");
    }
}

#[tokio::test]
async fn sigterm_leaves_queued_events_queued_for_the_next_start() {
    let mut site = Site::new(Work {
        coalesce: "60s",
        ..QUICK
    });
    for n in 0..3 {
        let body = event("subscriptionRenewed", "bob@example.com", n);
        assert_eq!(site.deliver(&body).await.0, 200);
    }
    assert_eq!(site.daemon.terminate().await, 0);
    let out = site.s.cli(&["events", "--json"]).json();
    let events = out["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 3, "{out}");
    for e in &events {
        assert_eq!(
            (&e["status"], &e["attempts"]),
            (&json!("queued"), &json!(0)),
            "{e}"
        );
    }
    assert!(site.s.cleeng.seen().is_empty(), "nothing was refreshed");
}

#[test]
fn check_says_whether_each_endpoint_can_take_deliveries() {
    let s = setup_extra(cleeng(), "1s", 1, "");
    with_webhooks(&s, QUICK);
    let vars = [("OTHER_WEBHOOK_SECRET", "too short")];
    let out = s.cli_with(
        &["check"],
        Some(TOKEN),
        &[("CLEENG_SYNC_WEBHOOK_SECRET", SECRET), vars[0]],
    );
    assert!(
        out.stdout
            .contains("webhooks: ok, POST http://127.0.0.1:0/v1/webhooks/cleeng/default")
            && out.stdout.contains("header x-cleeng-signature"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("webhooks: FAILED: the shared secret in OTHER_WEBHOOK_SECRET is 9 bytes"),
        "{out:?}"
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        !out.stdout.contains(SECRET) && !out.stdout.contains("too short"),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_429_from_cleeng_is_waited_out_and_the_event_applied_on_its_first_attempt() {
    // The client tries a 429 again after its Retry-After: the refresh succeeds, so the
    // event's one attempt is enough.
    let s = setup_extra(cleeng(), "2s", 3, "");
    let site = Site::with(s, QUICK, &[]);
    site.s.cleeng.fail_next([Fault::Status(429, Some(1))]);
    let started = Instant::now();
    assert_eq!(
        site.deliver(&event("subscriptionRenewed", "ann@example.com", 1))
            .await
            .0,
        200
    );
    let events = site.settled(1).await;
    assert_eq!(
        (&events[0]["status"], &events[0]["attempts"]),
        (&json!("applied"), &json!(1)),
        "{events:#?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let retried = site.metric("cleeng_sync_cleeng_retries_total", &[]).await;
    assert_eq!(retried, 1.0);
}

#[tokio::test]
async fn a_store_that_cannot_take_a_delivery_answers_503_and_cleeng_delivers_again() {
    use sqlx::Connection;
    let site = Site::new(QUICK);
    let body = event("subscriptionRenewed", "ann@example.com", 1);
    // Another session holds the inbox: the insert waits past the listener's 5 s.
    let url = site.s.env.store_url();
    let held: Box<dyn std::any::Any> = if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("lock");
        Box::new(conn)
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin");
        sqlx::query("LOCK TABLE cleeng_events IN ACCESS EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .expect("lock");
        Box::new(conn)
    };
    let started = Instant::now();
    let (status, answer) = site.deliver(&body).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (503, &json!("store_unavailable")),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    // Cleeng delivers the same body again: taken once the store answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = site.deliver(&body).await;
        if status == 200 {
            assert_eq!(answer["outcome"], "accepted", "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(site.answered("store_unavailable").await, 1.0);
    let (status, _) = site.daemon.get("/healthz", None).await;
    assert_eq!(status, 200);
}
