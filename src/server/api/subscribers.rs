//! One subscriber's traits, their refresh from Cleeng, and the listing of subscribers
//! to act on.

use crate::live::{LiveSource, RefreshAnswer};
use crate::redact::mask_email;
use crate::refresh::RefreshError;
use crate::server::auth::{authorize, connector_today};
use crate::server::error::{ApiError, ErrorBody, NeedsToken, NoConnector, StoreFailed, TokenIfSet};
use crate::server::state::Api;
use crate::store::{Backend, SubscriberPage, TraitsAndActions};
use crate::subscribers::Listing;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One subscriber's traits, with the actions that succeeded since their export.
#[utoipa::path(get, tag = "subscribers", path = "/v1/connectors/{id}/traits/{email}",
    params(("id" = String, Path, description = "Connector id"), ("email" = String, Path, description = "Email, any case")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The traits", body = TraitsAndActions),
    TokenIfSet,
    (status = 404, description = "No such connector or subscriber", body = ErrorBody),
    StoreFailed))]
pub async fn traits<B: Backend>(
    State(api): State<Api<B>>,
    Path((connector, email)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, false)?;
    connector_today(&api, &connector)?;
    match api
        .daemon
        .store()
        .traits_and_actions(&connector, &email)
        .await?
    {
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

/// Reads one subscriber from Cleeng's API now and writes what it holds into the traits
/// (offer, status, expiry date, `live_at`); changes nothing at Cleeng.
#[utoipa::path(post, tag = "subscribers", path = "/v1/connectors/{id}/subscribers/{email}/refresh",
    params(("id" = String, Path, description = "Connector id"), ("email" = String, Path, description = "Email, any case")),
    security(("bearer" = [])), responses(
    (status = 200, description = "`updated`, `unchanged` or `no_live_subscription`", body = RefreshAnswer),
    NeedsToken,
    NoConnector,
    (status = 422, description = "`ambiguous_subscription` or `unknown_subscriber`", body = RefreshAnswer),
    (status = 502, description = "`failed`: Cleeng unreachable, busy or refusing the token", body = RefreshAnswer),
    StoreFailed))]
pub async fn refresh<B: Backend>(
    State(api): State<Api<B>>,
    Path((connector, email)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, true)?;
    connector_today(&api, &connector)?;
    let refresher = api.actions.refresher();
    match refresher.refresh(&connector, &email, LiveSource::Api).await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.outcome.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok((status, Json(answer)).into_response())
        }
        Err(e @ RefreshError::UnknownConnector(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(RefreshError::Store(e)) => Err(e.into()),
    }
}

/// A page of the connector's subscribers (`?expiring_within=7d&status=..&plan=..
/// &country=..&limit=..&after=..`): personal data in bulk, so the token is required.
#[utoipa::path(get, tag = "subscribers", path = "/v1/connectors/{id}/subscribers",
    params(("id" = String, Path, description = "Connector id"), Listing),
    security(("bearer" = [])), responses(
    (status = 200, description = "A page, by expiry date then email", body = SubscriberPage),
    (status = 400, description = "A bad filter", body = ErrorBody),
    NeedsToken,
    NoConnector,
    StoreFailed))]
pub async fn subscribers<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    listing: Result<Query<Listing>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<SubscriberPage>, ApiError> {
    // The token first: a caller without it learns nothing, not even what a bad query is.
    authorize(&api, &headers, true)?;
    let Query(listing) = listing.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let today = connector_today(&api, &connector)?;
    let query = listing
        .query(&connector, today)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(api.daemon.store().subscribers(&query).await?))
}
