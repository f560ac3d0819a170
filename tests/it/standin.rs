//! A local stand-in for Cleeng's Core API 3.1: the endpoints the billing actions and the
//! refresh use, with their documented answers and errors, and a record of every request
//! it saw.
//! Tests start one per test (port 0, a thread of its own); `examples/cleeng-standin.rs`
//! serves one for people to try the actions against.
//!
//! Faults can be queued: the next requests get a status (429 with `Retry-After`, 503,
//! 500) or no answer at all, and are not applied. Changes can lag: a switch is `pending`
//! at Cleeng first, so a change may show in the listings only some reads later.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The publisher token the stand-in accepts.
pub const TOKEN: &str = "standin-publisher-token-7c1e9a";

/// A request the stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    /// The path under the API (`/subscriptions/7`).
    pub path: String,
    /// The query, decoded, in order.
    pub query: Vec<(String, String)>,
    /// `X-Publisher-Token`, as sent.
    pub token: Option<String>,
    /// The JSON body (`null` without one).
    pub body: Value,
}

impl Seen {
    /// Whether the request asks Cleeng to change something.
    pub fn changes(&self) -> bool {
        self.method != "GET"
    }
}

/// A subscription Cleeng holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: i64,
    pub customer_id: i64,
    pub email: String,
    pub offer_id: String,
    pub status: String,
    pub external_id: Option<String>,
    /// `adyen`, `paypal`... (`apple` is one switches do not support).
    pub gateway: String,
    pub coupon: Option<String>,
    /// `expiresAt`, a Unix time.
    pub expires_at: i64,
}

/// 2099-01-01T12:00:00Z: the first of January 2099 in every zone from UTC-12 to UTC+11.
pub const EXPIRES_2099_01_01: i64 = 4_070_952_000;

/// A change the stand-in accepted and does not show yet.
#[derive(Debug, Clone)]
struct Lagging {
    id: i64,
    offer: Option<String>,
    status: Option<String>,
    /// Reads of `/subscriptions` before it shows.
    reads: u32,
}

/// What the next request gets instead of its answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status (and `Retry-After`, seconds), nothing applied.
    Status(u16, Option<u64>),
    /// No answer, ever (the caller's timeout ends it); nothing applied.
    Hang,
    /// The request is applied, then no answer is sent (the answer is lost).
    ApplyThenHang,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    subscriptions: Vec<Subscription>,
    /// Switches the dashboard allows: (from offer, to offer).
    switches: Vec<(String, String)>,
    faults: VecDeque<Fault>,
    /// Reads of `/subscriptions` a new change waits before it shows.
    lag: u32,
    lagging: Vec<Lagging>,
}

/// A running stand-in.
#[derive(Clone)]
pub struct StandIn {
    /// `http://127.0.0.1:PORT/3.1`: the `api_url` to configure.
    pub api_url: String,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    /// Starts one on a free port of 127.0.0.1, on a thread of its own.
    pub fn start() -> StandIn {
        StandIn::start_on("127.0.0.1:0")
    }

    /// Starts one on this address.
    pub fn start_on(address: &str) -> StandIn {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let listener = std::net::TcpListener::bind(address).expect("bind the stand-in");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let state = Arc::clone(&shared);
                        async move { handle(&state, method, uri, headers, body).await }
                    },
                );
                let _ = axum::serve(listener, app).await;
            });
        });
        StandIn {
            api_url: format!("http://127.0.0.1:{port}/3.1"),
            state,
        }
    }

    /// Adds a subscription (its customer is found by its email).
    pub fn subscription(&self, subscription: Subscription) -> &StandIn {
        self.state
            .lock()
            .expect("state")
            .subscriptions
            .push(subscription);
        self
    }

    /// Allows switches from one offer to another.
    pub fn allow_switch(&self, from: &str, to: &str) -> &StandIn {
        self.state
            .lock()
            .expect("state")
            .switches
            .push((from.into(), to.into()));
        self
    }

    /// Changes from now on show only after this many reads of `/subscriptions` (0: at once).
    pub fn lag(&self, reads: u32) {
        self.state.lock().expect("state").lag = reads;
    }

    /// Shows every lagging change now.
    pub fn settle(&self) {
        let mut s = self.state.lock().expect("state");
        for lagging in std::mem::take(&mut s.lagging) {
            show(&mut s.subscriptions, &lagging);
        }
    }

    /// Changes a subscription, as a subscriber does on Cleeng's own pages.
    pub fn update(&self, id: i64, change: impl FnOnce(&mut Subscription)) {
        let mut s = self.state.lock().expect("state");
        if let Some(sub) = s.subscriptions.iter_mut().find(|x| x.id == id) {
            change(sub);
        }
    }

    /// Queues faults for the next requests.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().expect("state").faults.extend(faults);
    }

    /// Every request seen, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// The requests that asked to change something.
    pub fn changes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::changes).collect()
    }

    /// A subscription as Cleeng holds it now.
    pub fn get(&self, id: i64) -> Option<Subscription> {
        self.state
            .lock()
            .expect("state")
            .subscriptions
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }
}

/// A subscription with the usual defaults: customer `id * 10`, Adyen, active.
pub fn subscription(id: i64, email: &str, offer: &str) -> Subscription {
    Subscription {
        id,
        customer_id: id * 10,
        email: email.into(),
        offer_id: offer.into(),
        status: "active".into(),
        external_id: None,
        gateway: "adyen".into(),
        coupon: None,
        expires_at: EXPIRES_2099_01_01,
    }
}

fn show(subscriptions: &mut [Subscription], lagging: &Lagging) {
    if let Some(sub) = subscriptions.iter_mut().find(|x| x.id == lagging.id) {
        if let Some(offer) = &lagging.offer {
            sub.offer_id.clone_from(offer);
        }
        if let Some(status) = &lagging.status {
            sub.status.clone_from(status);
        }
    }
}

/// Applies a change, or keeps it lagging.
fn change(s: &mut State, id: i64, offer: Option<&str>, status: Option<&str>) {
    let lagging = Lagging {
        id,
        offer: offer.map(str::to_string),
        status: status.map(str::to_string),
        reads: s.lag,
    };
    if s.lag == 0 {
        show(&mut s.subscriptions, &lagging);
    } else {
        s.lagging.push(lagging);
    }
}

fn answer(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

/// A documented error: `{"code": .., "message": ..}` or, for validation, `errors[]`.
fn error(status: u16, code: &str, message: &str) -> Response {
    if code == "VALIDATION_ERROR" {
        answer(
            status,
            json!({"errors": [{"code": code, "message": message}]}),
        )
    } else {
        answer(status, json!({"code": code, "message": message}))
    }
}

fn resource(s: &Subscription) -> Value {
    json!({
        "subscriptionId": s.id,
        "customerId": s.customer_id,
        "offerId": s.offer_id,
        "status": s.status,
        "externalId": s.external_id,
        "paymentGateway": s.gateway,
        "expiresAt": s.expires_at,
    })
}

async fn handle(
    state: &Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/3.1")
        .unwrap_or(uri.path())
        .to_string();
    let query: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let token = headers
        .get("x-publisher-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = {
        let mut s = state.lock().expect("state");
        s.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            token: token.clone(),
            body: body_json.clone(),
        });
        s.faults.pop_front()
    };
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            let mut response = answer(
                status,
                json!({"code": "FAULT", "message": "stand-in fault"}),
            );
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().expect("header"));
            }
            return response;
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return answer(500, Value::Null);
        }
        Some(Fault::ApplyThenHang) => {
            let _ = route(state, &method, &path, &query, &body_json);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return answer(500, Value::Null);
        }
        None => {}
    }
    if token.as_deref() != Some(TOKEN) {
        return error(401, "UNAUTHORIZED", "Invalid or missing publisher token");
    }
    route(state, &method, &path, &query, &body_json)
}

fn route(
    state: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &Value,
) -> Response {
    let mut s = state.lock().expect("state");
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (method.as_str(), path) {
        ("GET", "/subscriptions") => {
            for lagging in std::mem::take(&mut s.lagging) {
                if lagging.reads == 0 {
                    show(&mut s.subscriptions, &lagging);
                } else {
                    s.lagging.push(Lagging {
                        reads: lagging.reads - 1,
                        ..lagging
                    });
                }
            }
            let statuses: Vec<&str> = query
                .iter()
                .filter(|(k, _)| k == "status[]")
                .map(|(_, v)| v.as_str())
                .collect();
            let items: Vec<Value> = match (param("externalId"), param("customerId")) {
                (Some(external), _) => s
                    .subscriptions
                    .iter()
                    .filter(|x| x.external_id.as_deref() == Some(external))
                    .map(resource)
                    .collect(),
                (None, Some(customer)) => s
                    .subscriptions
                    .iter()
                    .filter(|x| x.customer_id.to_string() == customer)
                    .filter(|x| param("offerId").is_none_or(|o| o == x.offer_id))
                    .filter(|x| statuses.is_empty() || statuses.contains(&x.status.as_str()))
                    .map(resource)
                    .collect(),
                // No filter: Cleeng answers an empty list.
                (None, None) => Vec::new(),
            };
            answer(200, json!({"items": items}))
        }
        ("GET", "/entitlements") => {
            let Some(email) = param("customerEmail") else {
                return error(
                    422,
                    "VALIDATION_ERROR",
                    "customerId or customerEmail is required",
                );
            };
            let items: Vec<Value> = s
                .subscriptions
                .iter()
                .filter(|x| x.email == email)
                .map(|x| json!({"customerId": x.customer_id, "offerId": x.offer_id, "accessGranted": true}))
                .collect();
            answer(200, json!({"items": items}))
        }
        ("POST", "/subscription_switches") => {
            let (Some(id), Some(to), Some(direction)) = (
                body["subscriptionId"].as_i64(),
                body["toOfferId"].as_str(),
                body["switchDirection"].as_str(),
            ) else {
                return error(
                    422,
                    "VALIDATION_ERROR",
                    "subscriptionId, toOfferId and switchDirection are required",
                );
            };
            if !["upgrade", "downgrade", "unspecified"].contains(&direction) {
                return error(
                    422,
                    "VALIDATION_ERROR",
                    "switchDirection: upgrade, downgrade or unspecified",
                );
            }
            let allowed = s.switches.clone();
            let Some(sub) = s.subscriptions.iter_mut().find(|x| x.id == id) else {
                return error(404, "NOT_FOUND", "Subscription not found");
            };
            if sub.gateway == "apple" {
                return error(
                    422,
                    "PAYMENT_GATEWAY_NOT_SUPPORTED",
                    "The customer's subscription was purchased with a payment gateway that is not supported by switch functionality",
                );
            }
            if !allowed
                .iter()
                .any(|(from, t)| *from == sub.offer_id && t == to)
            {
                return error(
                    422,
                    "SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS",
                    "Subscription switch between the two given offers was not defined as possible in the dashboard",
                );
            }
            change(&mut s, id, Some(to), None);
            answer(
                200,
                json!({"id": format!("SW{id}"), "status": "pending", "subscriptionId": id, "toOfferId": to}),
            )
        }
        ("PATCH", p) if p.starts_with("/subscriptions/") => {
            let Ok(id) = p["/subscriptions/".len()..].parse::<i64>() else {
                return error(404, "NOT_FOUND", "Subscription not found");
            };
            let fields = body.as_object().map_or(0, |o| o.len());
            if fields != 1 {
                return error(
                    422,
                    "VALIDATION_ERROR",
                    "You can only use one parameter: expiresAt, couponCode or status",
                );
            }
            let Some(sub) = s.subscriptions.iter_mut().find(|x| x.id == id) else {
                return error(404, "NOT_FOUND", "Subscription not found");
            };
            if let Some(code) = body["couponCode"].as_str() {
                if code.starts_with("EXPIRED") {
                    return error(422, "VALIDATION_ERROR", "Coupon code is not valid");
                }
                sub.coupon = Some(code.to_string());
            } else if let Some(status) = body["status"].as_str() {
                let status = status.to_string();
                change(&mut s, id, None, Some(&status));
            } else {
                return error(422, "VALIDATION_ERROR", "Unsupported parameter");
            }
            let shown = s.subscriptions.iter().find(|x| x.id == id).map(resource);
            answer(200, shown.unwrap_or(Value::Null))
        }
        _ => error(404, "NOT_FOUND", "No such endpoint"),
    }
}
