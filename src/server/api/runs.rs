//! The ledger's runs, and a run started now.

use crate::daemon::StartError;
use crate::run::{Rejection, RunRecord};
use crate::server::auth::authorize;
use crate::server::error::{ApiError, ErrorBody, NeedsToken, NoConnector, StoreFailed};
use crate::server::state::Api;
use crate::store::{Backend, StoreError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// The most runs `GET /v1/runs` returns at once.
const MAX_RUNS: u32 = 1000;

/// The answer to a manual run.
#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    /// The run's ledger id.
    run_id: i64,
}

/// The filters of `GET /v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this connector's runs.
    connector: Option<String>,
    /// How many, newest first; default 20, at most 1000.
    limit: Option<u32>,
}

/// Recent runs, newest first.
#[utoipa::path(get, tag = "runs", path = "/v1/runs", params(RunsQuery), responses(
    (status = 200, description = "Runs, newest first", body = Vec<RunRecord>),
    StoreFailed))]
pub async fn runs<B: Backend>(
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
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    run: RunRecord,
    /// Its stored rejections (at most 10,000), by record.
    rejections: Vec<Rejection>,
}

/// One run, with its rejections.
#[utoipa::path(get, tag = "runs", path = "/v1/runs/{id}", params(("id" = i64, Path, description = "Run id")), responses(
    (status = 200, description = "The run", body = RunDetail),
    (status = 400, description = "Not a run id", body = String),
    (status = 404, description = "No such run", body = ErrorBody),
    StoreFailed))]
pub async fn run<B: Backend>(
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

/// Starts a run of the connector now.
#[utoipa::path(post, tag = "runs", path = "/v1/connectors/{id}/sync", params(("id" = String, Path, description = "Connector id")),
    security(("bearer" = [])), responses(
    (status = 202, description = "Started", body = RunStarted),
    NeedsToken,
    NoConnector,
    (status = 409, description = "A run of it is in flight", body = ErrorBody),
    (status = 503, description = "Shutting down, or the store failed", body = ErrorBody)))]
pub async fn sync_now<B: Backend>(
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
