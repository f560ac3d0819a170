//! The webhook listener: the only socket meant for the internet, serving Cleeng's
//! deliveries (`POST /v1/webhooks/cleeng/{connector}`) and `GET /healthz`, nothing else.
//! The admin API never serves the webhook route, and this listener never serves the
//! admin API.
//!
//! A front door: every request is bounded before it reaches the handler's work (a slot of
//! [`crate::config::Webhooks::max_concurrent`], the request timeout, the body cap), the
//! signature is verified over the raw bytes before anything is parsed ([`verify`]), only
//! the fields the inbox lists are kept, and the answer never waits for Cleeng's API: the
//! daemon's inbox worker makes the refresh ([`receive`]). What the handlers share, the
//! endpoints among it, is [`state`].

pub mod receive;
pub mod state;
pub mod verify;

pub use state::{Endpoint, Listener, NoEndpoint, endpoints};

use crate::event::WebhookOutcome;
use crate::store::Backend;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// The listener's routes, every request bounded by one shared concurrency limit.
pub fn router<B: Backend>(listener: Listener<B>) -> Router {
    let slots = listener.limits.max_concurrent;
    Router::new()
        .route(
            "/v1/webhooks/cleeng/{connector}",
            post(receive::receive::<B>),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(slots))
        .with_state(listener)
}

/// The listener answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Anything else: 404, counted without a connector (never a label from the request).
async fn not_found() -> StatusCode {
    crate::metrics::webhook_answered(None, WebhookOutcome::UnknownConnector);
    StatusCode::NOT_FOUND
}
