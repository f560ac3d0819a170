//! Who may ask: the bearer token, and, for a connector's endpoints, whether the
//! connector exists. The one place a handler's preamble is written.

use super::error::ApiError;
use super::state::Api;
use crate::store::Backend;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::NaiveDate;

/// Checks the bearer token. With none configured, `required` endpoints are disabled
/// (403) and the others open.
pub fn authorize<B: Backend>(
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
    match bearer(headers) {
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

/// The bearer token a request presents, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Today in the zone of the connector `id`, or 404 when no connector of that id is
/// configured.
pub fn connector_today<B: Backend>(api: &Api<B>, id: &str) -> Result<NaiveDate, ApiError> {
    api.daemon.today(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector {id:?} is configured"),
        )
    })
}
