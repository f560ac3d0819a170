//! The change feed of a connector: what happened to its subscribers, oldest first, a
//! keyset page at a time.

use crate::change::{ChangeKind, ChangePage, Cursor};
use crate::server::auth::{authorize, connector_today};
use crate::server::error::{ApiError, ErrorBody, NeedsToken, NoConnector, StoreFailed};
use crate::server::state::Api;
use crate::store::Backend;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::IntoParams;

/// The filters of `GET /v1/connectors/{id}/changes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Only changes of any of these kinds, comma-separated (`stopped,switched`).
    kind: Option<String>,
    /// The `next` of the page before; from the oldest retained change without it.
    after: Option<String>,
    /// How many, oldest first; default 100, at most 1000.
    limit: Option<u32>,
}

/// The kinds a comma-separated filter names.
pub fn kinds(text: Option<&str>) -> Result<Vec<ChangeKind>, String> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|k| {
            ChangeKind::parse(k.trim()).ok_or_else(|| {
                let known: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown kind {:?}; expected one of {}",
                    k.trim(),
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// A page of the connector's changes, oldest first: personal data, so the token is
/// required. A consumer that keeps `next` and asks again with it never misses or repeats
/// a change.
#[utoipa::path(get, tag = "subscribers", path = "/v1/connectors/{id}/changes",
    params(("id" = String, Path, description = "Connector id"), ChangesQuery),
    security(("bearer" = [])), responses(
    (status = 200, description = "A page, oldest first, and the cursor of the next", body = ChangePage),
    (status = 400, description = "A bad filter or cursor", body = ErrorBody),
    NeedsToken,
    NoConnector,
    StoreFailed))]
pub async fn changes<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ChangePage>, ApiError> {
    authorize(&api, &headers, true)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    connector_today(&api, &connector)?;
    let kinds = kinds(query.kind.as_deref()).map_err(ApiError::bad_request)?;
    let after = match query.after.as_deref() {
        None => Cursor::default(),
        Some(text) => Cursor::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!("after: {text:?} is not a page's next"))
        })?,
    };
    let limit = query.limit.unwrap_or(100);
    let page = api
        .daemon
        .store()
        .changes(&connector, &kinds, after, limit)
        .await?;
    Ok(Json(page))
}
