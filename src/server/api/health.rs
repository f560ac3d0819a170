//! Liveness, readiness and the metrics.

use crate::server::state::Api;
use crate::store::Backend;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Liveness: the process answers.
#[utoipa::path(get, tag = "process", path = "/healthz", responses((status = 200, description = "Alive", body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and the scheduler is alive.
#[utoipa::path(get, tag = "process", path = "/readyz", responses(
    (status = 200, description = "Ready", body = Object),
    (status = 503, description = "The store or the scheduler is not", body = Object)))]
pub async fn readyz<B: Backend>(State(api): State<Api<B>>) -> Response {
    let store = api.daemon.store().ping().await;
    let scheduler = api.daemon.scheduler_alive();
    let body = json!({
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
        "scheduler": if scheduler { "ok" } else { "not running" },
    });
    let status = if store.is_ok() && scheduler {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics, text format.
#[utoipa::path(get, tag = "process", path = "/metrics", responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
pub async fn metrics<B: Backend>(State(api): State<Api<B>>) -> Response {
    api.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        api.metrics.render(),
    )
        .into_response()
}
