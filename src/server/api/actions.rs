//! The billing actions: one carried out now, and the ledger of them.

use crate::action::{ActionAnswer, ActionBody, ActionRecord, ActionRequest, ActionTrigger};
use crate::actions::{ActionError, Ask};
use crate::server::auth::{authorize, connector_today};
use crate::server::error::{ApiError, ErrorBody, NeedsToken, NoConnector, StoreFailed, TokenIfSet};
use crate::server::state::Api;
use crate::store::Backend;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use tracing::error;
use utoipa::IntoParams;

/// The most actions `GET /v1/actions` returns at once.
const MAX_ACTIONS: u32 = 1000;

/// The longest Idempotency-Key taken.
const MAX_KEY_LEN: usize = 255;

/// The options of `POST /v1/connectors/{id}/actions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActOptions {
    /// Check and resolve only: call nothing that changes Cleeng, record nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Carries out a billing action at Cleeng (`Idempotency-Key`: the same key and body
/// answer the stored result, and call Cleeng at most once).
#[utoipa::path(post, tag = "billing actions", path = "/v1/connectors/{id}/actions", request_body = ActionBody,
    params(("id" = String, Path, description = "Connector id"), ActOptions,
        ("Idempotency-Key" = Option<String>, Header, description = "At most one call to Cleeng per key")),
    security(("bearer" = [])), responses(
    (status = 200, description = "Succeeded (or, dry run, would go ahead)", body = ActionAnswer),
    (status = 400, description = "A malformed request", body = ErrorBody),
    NeedsToken,
    NoConnector,
    (status = 409, description = "Another request of this key is still waiting for Cleeng", body = ActionAnswer),
    (status = 422, description = "Refused, by a check or by Cleeng, with its code", body = ActionAnswer),
    (status = 502, description = "Cleeng failed, was unreachable, or the outcome is unknown", body = ActionAnswer),
    StoreFailed))]
pub async fn act<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    options: Result<Query<ActOptions>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, true)?;
    let Query(options) = options.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    connector_today(&api, &connector)?;
    let key = idempotency_key(&headers)?;
    let request =
        ActionRequest::new(&connector, body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ask = Ask {
        request,
        key,
        trigger: ActionTrigger::Api,
        dry_run: options.dry_run,
    };
    // On a task of its own: a caller who hangs up does not cut an action mid-call.
    let actions = Arc::clone(&api.actions);
    let performed = tokio::spawn(async move {
        let answer = actions.perform(ask).await?;
        // The answer does not wait for the later reads that confirm the action.
        let later = answer.clone();
        tokio::spawn(async move { actions.confirm_later(later).await });
        Ok(answer)
    })
    .await
    .map_err(|e| {
        error!("an action's task ended abnormally: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the action's task failed",
        )
    })?;
    match performed {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok((status, Json(answer)).into_response())
        }
        Err(e @ ActionError::UnknownConnector(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(ActionError::Store(e)) => Err(e.into()),
    }
}

/// The `Idempotency-Key` header, if any: printable ASCII, at most 255 characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "Idempotency-Key: printable ASCII of 1 to {MAX_KEY_LEN} characters expected"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The filters of `GET /v1/actions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionsQuery {
    /// Only this connector's actions.
    connector: Option<String>,
    /// Only this subscriber's (any case).
    email: Option<String>,
    /// How many, newest first; default 20, at most 1000.
    limit: Option<u32>,
}

/// The ledger of the billing actions, newest first.
#[utoipa::path(get, tag = "billing actions", path = "/v1/actions", params(ActionsQuery), security((), ("bearer" = [])), responses(
    (status = 200, description = "Actions, newest first", body = Vec<ActionRecord>),
    (status = 400, description = "A bad filter", body = ErrorBody),
    TokenIfSet,
    StoreFailed))]
pub async fn actions<B: Backend>(
    State(api): State<Api<B>>,
    query: Result<Query<ActionsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Vec<ActionRecord>>, ApiError> {
    authorize(&api, &headers, false)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_ACTIONS);
    let records = api
        .actions
        .store()
        .actions(query.connector.as_deref(), query.email.as_deref(), limit)
        .await?;
    Ok(Json(records))
}

/// One action of the ledger.
#[utoipa::path(get, tag = "billing actions", path = "/v1/actions/{id}", params(("id" = i64, Path, description = "Action id")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The action", body = ActionRecord),
    (status = 400, description = "Not an action id", body = String),
    TokenIfSet,
    (status = 404, description = "No such action", body = ErrorBody),
    StoreFailed))]
pub async fn action<B: Backend>(
    State(api): State<Api<B>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Json<ActionRecord>, ApiError> {
    authorize(&api, &headers, false)?;
    let record = api
        .actions
        .store()
        .action(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no action {id}")))?;
    Ok(Json(record))
}
