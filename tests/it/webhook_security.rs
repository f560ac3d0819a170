//! The webhook listener as a front door: what an attacker (or a misconfiguration) sends,
//! and what comes back. Each refusal is answered as the contract says, stores nothing,
//! and leaves the daemon healthy; the admin API and the webhook route never share a
//! port; the secret and a payment token appear in no log line, answer or stored row.

use crate::daemon_harness::TOKEN as SERVER_TOKEN;
use crate::webhooks::{HEADER, OTHER_SECRET, PUBLISHER, QUICK, SECRET, Site, event, sign};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The listener answers on both of its routes, and the admin API on its own.
async fn healthy(site: &Site) {
    let hooks = reqwest::get(format!("{}/healthz", site.hooks))
        .await
        .expect("GET");
    assert_eq!(hooks.status(), 200);
    let (status, _) = site.daemon.get("/healthz", None).await;
    assert_eq!(status, 200);
    let (status, body) = site
        .deliver(&event("subscriptionRenewed", "bob@example.com", 999))
        .await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("accepted")),
        "{body}"
    );
}

/// What a raw socket gets back for bytes sent and a connection left open.
fn raw(address: &str, request: &[u8]) -> (String, Duration) {
    let address = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    // The listener may answer and close before it has read everything: not an error here.
    let _ = stream.write_all(request);
    let mut answer = vec![0; 512];
    let n = stream.read(&mut answer).unwrap_or(0);
    (
        String::from_utf8_lossy(&answer[..n]).into_owned(),
        started.elapsed(),
    )
}

/// What is sent, to which connector, with which headers, and the status expected.
type Case = (
    &'static str,
    &'static str,
    Vec<u8>,
    Vec<(&'static str, String)>,
    u16,
);

#[tokio::test]
async fn every_refused_delivery_is_answered_as_the_contract_says_and_stores_nothing() {
    let site = Site::new(QUICK);
    let body = event("subscriptionRenewed", "ann@example.com", 1);
    let good = sign(SECRET, &body);
    let mut changed = body.clone();
    changed[10] ^= 0x01;
    let of_another = sign(SECRET, &event("subscriptionRenewed", "ann@example.com", 2));
    let cases: Vec<Case> = vec![
        ("no signature", "default", body.clone(), vec![], 401),
        (
            "a wrong signature",
            "default",
            body.clone(),
            vec![(HEADER, "ab".repeat(32))],
            401,
        ),
        (
            "not a signature",
            "default",
            body.clone(),
            vec![(HEADER, "not-hex!".into())],
            401,
        ),
        (
            "another body's",
            "default",
            body.clone(),
            vec![(HEADER, of_another)],
            401,
        ),
        (
            "one byte changed",
            "default",
            changed,
            vec![(HEADER, good.clone())],
            401,
        ),
        (
            "another connector's secret",
            "default",
            body.clone(),
            vec![(HEADER, sign(OTHER_SECRET, &body))],
            401,
        ),
        (
            "the secret as the signature",
            "default",
            body.clone(),
            vec![(HEADER, SECRET.into())],
            401,
        ),
        (
            "in another header",
            "default",
            body.clone(),
            vec![("X-Signature", good.clone())],
            401,
        ),
        (
            "no such connector",
            "nope",
            body.clone(),
            vec![(HEADER, good.clone())],
            404,
        ),
        (
            "over max_body",
            "default",
            vec![b' '; 5000],
            vec![(HEADER, good.clone())],
            413,
        ),
        (
            "signed, not JSON",
            "default",
            b"hello".to_vec(),
            vec![(HEADER, sign(SECRET, b"hello"))],
            400,
        ),
    ];
    for (what, connector, body, headers, expected) in cases {
        let (status, answer) = site.post(connector, &body, &headers).await;
        assert_eq!(status, expected, "{what}: {answer}");
        let text = answer.to_string();
        assert!(
            !text.contains(SECRET) && !text.contains("ann@"),
            "{what}: {text}"
        );
    }
    // Another publisher's event, signed with the right secret.
    let foreign = json!({"broadcasterId": PUBLISHER + 1, "topic": "subscriptionRenewed",
        "data": {"customerEmail": "ann@example.com"}})
    .to_string();
    let (status, _) = site.deliver(foreign.as_bytes()).await;
    assert_eq!(status, 403);
    // A body sent in chunks with no length declared, past the cap.
    let mut chunked = format!(
        "POST /v1/webhooks/cleeng/default HTTP/1.1\r\nHost: x\r\n{HEADER}: {good}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    for _ in 0..10 {
        chunked.push_str(&format!("3e8\r\n{}\r\n", " ".repeat(1000)));
    }
    chunked.push_str("0\r\n\r\n");
    let (answer, _) = raw(&site.hooks, chunked.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A body that never finishes: answered 408 once the request timeout (1s) passes.
    let head = format!(
        "POST /v1/webhooks/cleeng/default HTTP/1.1\r\nHost: x\r\n{HEADER}: {good}\r\n\
         Content-Length: 500\r\n\r\n{{\"broadcasterId\":"
    );
    let (answer, took) = raw(&site.hooks, head.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    assert!(
        site.events().await.is_empty(),
        "a refused delivery was stored"
    );
    // A delivery without the header is logged with the names it came with, never a value:
    // how an operator reads the header's name off a sandbox delivery.
    let logs = site.daemon.logs();
    assert!(
        logs.contains("\"header_names\":\"accept, content-length, host, x-signature\""),
        "{logs}"
    );
    assert_eq!(site.answered("bad_signature").await, 8.0);
    assert_eq!(site.answered("too_large").await, 2.0);
    assert_eq!(site.answered("malformed").await, 1.0);
    assert_eq!(site.answered("wrong_publisher").await, 1.0);
    assert_eq!(site.answered("timed_out").await, 1.0);
    let unknown = site
        .metric(
            "cleeng_sync_webhooks_total",
            &["outcome=\"unknown_connector\""],
        )
        .await;
    assert_eq!(unknown, 1.0);
    healthy(&site).await;
}

/// Bodies that are not Cleeng events: bytes, JSON of other shapes, envelopes with a
/// field of the wrong type.
fn malformed() -> impl Strategy<Value = Vec<u8>> {
    let json_but_not_an_envelope = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        ".*".prop_map(|s| json!(s)),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|v| json!(v)),
        (any::<i64>(), "[a-zA-Z]{1,20}").prop_map(|(b, t)| json!({"broadcasterId": b, "topic": t})),
        (any::<i64>(), "[a-zA-Z]{1,20}", any::<i64>())
            .prop_map(|(b, t, d)| json!({"broadcasterId": b, "topic": t, "data": d})),
        (".*", any::<bool>())
            .prop_map(|(t, d)| json!({"broadcasterId": 1, "topic": t, "data": [d]})),
        "[ -~]{1,30}".prop_map(|b| json!({"broadcasterId": b + "x", "topic": "t", "data": {}})),
    ]
    .prop_map(|v: Value| v.to_string().into_bytes());
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        json_but_not_an_envelope,
        "\\{[ -~]{0,200}".prop_map(String::into_bytes),
    ]
}

#[test]
fn a_thousand_malformed_bodies_are_refused_and_the_daemon_stays_healthy() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let site = Site::new(QUICK);
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let sent = std::cell::Cell::new(0u32);
    runner
        .run(&malformed(), |body| {
            sent.set(sent.get() + 1);
            // Half signed (the envelope is refused: 400), half not (the signature: 401).
            let signed = sent.get().is_multiple_of(2);
            let headers = if signed {
                vec![(HEADER, sign(SECRET, &body))]
            } else {
                vec![(HEADER, "00".repeat(32))]
            };
            let (status, answer) = runtime.block_on(site.post("default", &body, &headers));
            let expected = if signed { 400 } else { 401 };
            prop_assert_eq!(
                status,
                expected,
                "{:?}: {}",
                String::from_utf8_lossy(&body),
                answer
            );
            Ok(())
        })
        .expect("every malformed body refused");
    assert!(sent.get() >= 1000, "{} bodies sent", sent.get());
    runtime.block_on(async {
        assert!(
            site.events().await.is_empty(),
            "a malformed body was stored"
        );
        healthy(&site).await;
    });
}

#[tokio::test]
async fn the_admin_api_and_the_webhook_route_never_share_a_port() {
    let site = Site::new(QUICK);
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/events"),
        ("POST", "/v1/connectors/default/sync"),
        ("GET", "/v1/connectors/default/traits/ann@example.com"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let status = http
            .request(method.clone(), format!("{}{path}", site.hooks))
            .bearer_auth(SERVER_TOKEN)
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, 404, "{method} {path} on the webhook port");
    }
    let body = event("subscriptionRenewed", "ann@example.com", 1);
    let status = http
        .post(format!("{}/v1/webhooks/cleeng/default", site.daemon.base))
        .header(HEADER, sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("POST")
        .status();
    assert_eq!(status, 404, "the webhook route on the admin port");
    assert!(site.events().await.is_empty());
}

#[tokio::test]
async fn the_secret_and_a_payment_token_appear_in_no_log_answer_or_row() {
    const CARD_TOKEN: &str = "tok_card_4111_secret_77";
    let s = crate::actions::setup_extra(crate::actions::cleeng(), "1s", 1, "");
    let site = Site::with(s, QUICK, &[("RUST_LOG", "trace")]);
    let payment =
        json!({"broadcasterId": PUBLISHER, "topic": "subscriptionReadyForPaymentAuthorisation",
        "data": {"subscriptionId": "2", "customerId": 20, "customerEmail": "bob@example.com",
            "paymentDetailsId": 665665665, "token": CARD_TOKEN}})
        .to_string();
    let mut answers = Vec::new();
    answers.push(site.deliver(payment.as_bytes()).await);
    answers.push(
        site.post("default", payment.as_bytes(), &[(HEADER, SECRET.into())])
            .await,
    );
    answers.push(site.post("default", payment.as_bytes(), &[]).await);
    let events = site.settled(1).await;
    let listed = site.s.cli(&["events", "--json"]);
    let dump = site.s.env.store_dump().await;
    let logs = site.daemon.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("\"level\":\"TRACE\""),
        "trace logs on"
    );
    for (what, text) in [
        ("the logs", logs),
        ("the answers", format!("{answers:?}")),
        ("the events listed", format!("{events:?}{}", listed.stdout)),
        ("the store", dump),
    ] {
        assert!(!text.contains(SECRET), "the secret is in {what}");
        assert!(!text.contains(CARD_TOKEN), "the card token is in {what}");
    }
}
