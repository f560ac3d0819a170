//! The admin HTTP API: health, readiness, metrics, the ledger, manual runs, one
//! subscriber's traits and the listing of subscribers to act on. Loopback by default;
//! the write endpoint and the listing (personal data, in bulk) need the bearer token,
//! and are disabled without one; one subscriber's traits need it when one is configured.

use crate::daemon::{Daemon, StartError};
use crate::redact::mask_email;
use crate::run::{Rejection, RunRecord};
use crate::store::{Backend, StoreError, SubscriberPage};
use crate::subscribers::Listing;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The most runs `GET /v1/runs` returns at once.
const MAX_RUNS: u32 = 1000;

/// The bearer token of the admin API. Never printed.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// The token from `CLEENG_SYNC_SERVER_TOKEN`'s value; empty means none.
    pub fn new(value: Option<String>) -> Option<Token> {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| Token(v.into()))
    }

    /// Compares in constant time, so that the answer's timing tells nothing of the token.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What the handlers share.
pub struct Api<B: Backend> {
    /// The daemon: its store, its connectors, its runs.
    pub daemon: Arc<Daemon<B>>,
    /// The bearer token; `None` disables `POST`.
    pub token: Option<Token>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl<B: Backend> Clone for Api<B> {
    fn clone(&self) -> Self {
        Api {
            daemon: Arc::clone(&self.daemon),
            token: self.token.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The routes of the admin API.
pub fn router<B: Backend>(api: Api<B>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/v1/runs", get(runs::<B>))
        .route("/v1/runs/{id}", get(run::<B>))
        .route("/v1/connectors/{id}/sync", post(sync_now::<B>))
        .route("/v1/connectors/{id}/traits/{email}", get(traits::<B>))
        .route("/v1/connectors/{id}/subscribers", get(subscribers::<B>))
        .with_state(api)
}

/// Serves the API on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        warn!("admin API: the store failed: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store failed: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks the bearer token. With none configured, `required` endpoints are disabled
/// (403) and the others open.
fn authorize<B: Backend>(
    api: &Api<B>,
    headers: &HeaderMap,
    required: bool,
) -> Result<(), ApiError> {
    let Some(token) = &api.token else {
        if required {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this endpoint is disabled: set CLEENG_SYNC_SERVER_TOKEN for the daemon to enable it",
            ));
        }
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <CLEENG_SYNC_SERVER_TOKEN>",
        )),
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz<B: Backend>(State(api): State<Api<B>>) -> Response {
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

async fn metrics<B: Backend>(State(api): State<Api<B>>) -> Response {
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

#[derive(Debug, Deserialize)]
struct RunsQuery {
    connector: Option<String>,
    limit: Option<u32>,
}

async fn runs<B: Backend>(
    State(api): State<Api<B>>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_RUNS);
    let runs = api
        .daemon
        .store()
        .runs(query.connector.as_deref(), limit)
        .await?;
    Ok(Json(runs))
}

/// A run with its stored rejections.
#[derive(Serialize)]
struct RunDetail {
    #[serde(flatten)]
    run: RunRecord,
    rejections: Vec<Rejection>,
}

async fn run<B: Backend>(
    State(api): State<Api<B>>,
    Path(id): Path<i64>,
) -> Result<Json<RunDetail>, ApiError> {
    let store = api.daemon.store();
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    let rejections = store.rejections(id).await?;
    Ok(Json(RunDetail { run, rejections }))
}

async fn sync_now<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, true)?;
    match api.daemon.start_now(&connector).await {
        Ok(run_id) => Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))).into_response()),
        Err(e @ StartError::UnknownConnector(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ (StartError::Busy(_) | StartError::Store(StoreError::Busy(_)))) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e @ StartError::ShuttingDown) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(StartError::Store(e)) => Err(e.into()),
    }
}

async fn traits<B: Backend>(
    State(api): State<Api<B>>,
    Path((connector, email)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, false)?;
    if !api.daemon.has_connector(&connector) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} is configured"),
        ));
    }
    match api.daemon.store().traits(&connector, &email).await? {
        Some(traits) => Ok(Json(traits).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no traits stored for {} in connector {connector:?}",
                mask_email(&email)
            ),
        )),
    }
}

/// A page of the connector's subscribers (`?expiring_within=7d&status=..&plan=..
/// &country=..&limit=..&after=..`): personal data in bulk, so the token is required.
async fn subscribers<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    listing: Result<Query<Listing>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<SubscriberPage>, ApiError> {
    // The token first: a caller without it learns nothing, not even what a bad query is.
    authorize(&api, &headers, true)?;
    let Query(listing) =
        listing.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let Some(today) = api.daemon.today(&connector) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} is configured"),
        ));
    };
    let query = listing
        .query(&connector, today)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(api.daemon.store().subscribers(&query).await?))
}
