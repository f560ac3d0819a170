//! The error answer of the API: a status and `{"error": "..."}` that says what to do.

use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tracing::warn;
use utoipa::{IntoResponses, ToSchema};

/// An error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
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

impl ApiError {
    /// A request this API cannot read (a malformed query or body), as axum explains it.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The answers of an endpoint that needs the token: 401 and 403 (none configured).
#[derive(IntoResponses)]
pub enum NeedsToken {
    /// The token is missing or wrong.
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Wrong(ErrorBody),
    /// No token is configured: the endpoint is disabled.
    #[response(status = 403, description = "No token configured: disabled")]
    Disabled(ErrorBody),
}

/// The answer of an endpoint that needs the token only when one is configured.
#[derive(IntoResponses)]
#[response(status = 401, description = "A token is configured: missing or wrong")]
pub struct TokenIfSet(pub ErrorBody);

/// The answer to a connector id that is not configured.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such connector")]
pub struct NoConnector(pub ErrorBody);

/// The answer when the store failed.
#[derive(IntoResponses)]
#[response(status = 503, description = "The store failed")]
pub struct StoreFailed(pub ErrorBody);
