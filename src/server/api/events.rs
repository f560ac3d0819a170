//! The webhook inbox, newest first: what Cleeng delivered and what became of it.

use crate::event::{EventRecord, EventStatus};
use crate::server::auth::authorize;
use crate::server::error::{ApiError, ErrorBody, NeedsToken, StoreFailed};
use crate::server::state::Api;
use crate::store::Backend;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The most events one answer lists.
const MAX_EVENTS: u32 = 1000;

/// The filters of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this connector's events.
    connector: Option<String>,
    /// Only events in this status.
    status: Option<EventStatus>,
    /// How many, newest first; default 20, at most 1000.
    limit: Option<u32>,
}

/// The events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Events {
    /// Newest first.
    pub events: Vec<EventRecord>,
}

/// The webhook inbox, newest first: emails in bulk, so the token is required.
#[utoipa::path(get, tag = "webhooks", path = "/v1/events", params(EventsQuery),
    security(("bearer" = [])), responses(
    (status = 200, description = "Events, newest first", body = Events),
    (status = 400, description = "A bad filter", body = ErrorBody),
    NeedsToken,
    StoreFailed))]
pub async fn events<B: Backend>(
    State(api): State<Api<B>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Events>, ApiError> {
    authorize(&api, &headers, true)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_EVENTS);
    let events = api
        .daemon
        .store()
        .events(query.connector.as_deref(), query.status, limit)
        .await?;
    Ok(Json(Events { events }))
}
