//! One delivery, in the order the contract sets: the connector's endpoint (404), the
//! size (413, known before the body is read when it is declared), the body within the
//! request timeout (408), the signature over the raw bytes (401), the envelope (400), the
//! publisher (403), and the inbox (200 once committed or found as a redelivery; 503 when
//! the store cannot take it, so that Cleeng delivers again). Each answer is counted by
//! outcome; no log line holds the body or the secret.

use super::state::{Endpoint, Listener};
use super::verify::Refusal;
use crate::event::{Delivery, WebhookOutcome};
use crate::redact::mask_email;
use crate::store::{Backend, Enqueued, NewEvent};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use tracing::{debug, error, warn};

/// How long the inbox may take to commit a delivery before the answer is 503.
const STORE_WAIT: Duration = Duration::from_secs(5);

/// `POST /v1/webhooks/cleeng/{connector}`.
pub async fn receive<B: Backend>(
    State(listener): State<Listener<B>>,
    Path(connector): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) = listener.endpoints.get(&connector) else {
        crate::metrics::webhook_answered(None, WebhookOutcome::UnknownConnector);
        return answer(WebhookOutcome::UnknownConnector, None);
    };
    let (outcome, event) = take(&listener, &connector, endpoint, &headers, body).await;
    crate::metrics::webhook_answered(Some(&connector), outcome);
    answer(outcome, event)
}

/// The delivery's outcome, and its event when it is in the inbox.
async fn take<B: Backend>(
    listener: &Listener<B>,
    connector: &str,
    endpoint: &Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> (WebhookOutcome, Option<i64>) {
    let limits = &listener.limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        warn!(
            connector,
            declared, "a webhook delivery over max_body was refused unread"
        );
        return (WebhookOutcome::TooLarge, None);
    }
    let body = match tokio::time::timeout(limits.request_timeout, read(body, limits.max_body)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(outcome)) => {
            warn!(
                connector,
                outcome = outcome.as_str(),
                "a webhook delivery's body was refused"
            );
            return (outcome, None);
        }
        Err(_) => {
            warn!(
                connector,
                timeout_s = limits.request_timeout.as_secs_f64(),
                "a webhook delivery's body did not arrive within the request timeout"
            );
            return (WebhookOutcome::TimedOut, None);
        }
    };
    if let Err(why) = endpoint.signer.verify(headers, &body) {
        // The names the request came with (never their values): where Cleeng's pages are
        // silent on the signature's header, a refused sandbox delivery shows it.
        let names = (why == Refusal::Missing).then(|| header_names(headers));
        warn!(
            connector,
            reason = %why,
            header_names = names.as_deref(),
            "a webhook delivery was refused, its signature does not verify: a rotated secret, \
             another signature_header, or a probe; nothing was stored"
        );
        return (WebhookOutcome::BadSignature, None);
    }
    let delivery = match Delivery::parse(&body) {
        Ok(delivery) => delivery,
        Err(why) => {
            warn!(connector, "a signed webhook delivery was refused: {why}");
            return (WebhookOutcome::Malformed, None);
        }
    };
    if let Some(expected) = endpoint.publisher_id
        && delivery.broadcaster_id != Some(expected)
    {
        warn!(
            connector,
            broadcaster_id = delivery.broadcaster_id,
            expected,
            "a signed webhook delivery of another publisher was refused"
        );
        return (WebhookOutcome::WrongPublisher, None);
    }
    enqueue(listener, connector, endpoint, &delivery, &body).await
}

/// The request's header names, for the log: at most 24, each cut to 40 characters.
fn header_names(headers: &HeaderMap) -> String {
    let mut names: Vec<String> = headers
        .keys()
        .take(24)
        .map(|name| name.as_str().chars().take(40).collect())
        .collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// The body, at most `max` bytes; a longer one stops being read at once.
async fn read(body: Body, max: usize) -> Result<Vec<u8>, WebhookOutcome> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| WebhookOutcome::Malformed)?;
        if bytes.len() + chunk.len() > max {
            return Err(WebhookOutcome::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn enqueue<B: Backend>(
    listener: &Listener<B>,
    connector: &str,
    endpoint: &Endpoint,
    delivery: &Delivery,
    body: &[u8],
) -> (WebhookOutcome, Option<i64>) {
    let received_at = listener.clock.now();
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let sha = hex::encode(digest.as_ref());
    let skipped = delivery.names_nobody();
    let new = NewEvent {
        connector,
        topic: &delivery.topic,
        body_sha256: &sha,
        received_at,
        email: delivery.email.as_deref(),
        customer_id: delivery.customer_id,
        subscription_id: delivery.subscription_id,
        skipped: skipped.as_deref(),
        due: received_at + chrono::TimeDelta::from_std(endpoint.coalesce).unwrap_or_default(),
    };
    match tokio::time::timeout(STORE_WAIT, listener.store.enqueue_event(&new)).await {
        Ok(Ok(Enqueued::New(id))) => {
            debug!(connector, event_id = id, topic = %delivery.topic,
                email = %delivery.email.as_deref().map(mask_email).unwrap_or_default(),
                "webhook event queued");
            (WebhookOutcome::Accepted, Some(id))
        }
        Ok(Ok(Enqueued::Redelivery(id))) => {
            debug!(
                connector,
                event_id = id,
                "webhook event delivered again; it is queued once"
            );
            (WebhookOutcome::Redelivered, Some(id))
        }
        Ok(Err(e)) => {
            error!(
                connector,
                "a webhook delivery could not be queued, the store failed: {e}; answered 503, \
                 Cleeng delivers it again"
            );
            (WebhookOutcome::StoreUnavailable, None)
        }
        Err(_) => {
            error!(
                connector,
                wait_s = STORE_WAIT.as_secs(),
                "a webhook delivery could not be queued in time; answered 503, Cleeng delivers \
                 it again"
            );
            (WebhookOutcome::StoreUnavailable, None)
        }
    }
}

/// The answer: the status of the outcome, and a body that names only the outcome (and
/// the event, once it is in the inbox).
fn answer(outcome: WebhookOutcome, event: Option<i64>) -> Response {
    let status =
        StatusCode::from_u16(outcome.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match event {
        Some(id) => json!({"outcome": outcome.as_str(), "event_id": id}),
        None => json!({"outcome": outcome.as_str()}),
    };
    (status, Json(body)).into_response()
}
