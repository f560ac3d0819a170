//! The admin HTTP API: health, readiness, metrics, the ledger, manual runs, one
//! subscriber's traits, the listing of subscribers to act on, and the billing actions.
//! Loopback by default; the write endpoints and the listing (personal data, in bulk)
//! need the bearer token, and are disabled without one; one subscriber's traits and the
//! actions' ledger need it when one is configured.
//!
//! Its OpenAPI 3.1 document ([`ApiDoc`], `GET /openapi.json`) is built from the handlers'
//! annotations; [`routes`] names every route the router serves, so that a test can hold
//! the two to each other.

use crate::action::{ActionAnswer, ActionBody, ActionRecord, ActionRequest, ActionTrigger};
use crate::actions::{ActionError, Actions, Ask};
use crate::daemon::{Daemon, StartError};
use crate::redact::mask_email;
use crate::run::{Rejection, RunRecord};
use crate::store::{Backend, StoreError, SubscriberPage, TraitsAndActions};
use crate::subscribers::Listing;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The most runs `GET /v1/runs` returns at once.
const MAX_RUNS: u32 = 1000;

/// The most actions `GET /v1/actions` returns at once.
const MAX_ACTIONS: u32 = 1000;

/// The longest Idempotency-Key taken.
const MAX_KEY_LEN: usize = 255;

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
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The status page's cookie: an HMAC of a fixed label under the token, so that the
    /// cookie shows the page's emails but cannot be replayed as the API's bearer token.
    pub(crate) fn page_cookie(&self) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_bytes());
        hex::encode(ring::hmac::sign(&key, b"cleeng-sync status page v1").as_ref())
    }

    /// Whether a cookie is the page's, in constant time.
    pub(crate) fn page_cookie_matches(&self, presented: &str) -> bool {
        self.page_cookie()
            .as_bytes()
            .ct_eq(presented.trim().as_bytes())
            .into()
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
    /// The billing actions.
    pub actions: Arc<Actions<B>>,
}

impl<B: Backend> Clone for Api<B> {
    fn clone(&self) -> Self {
        Api {
            daemon: Arc::clone(&self.daemon),
            token: self.token.clone(),
            metrics: self.metrics.clone(),
            actions: Arc::clone(&self.actions),
        }
    }
}

/// The routes of the admin API.
pub fn router<B: Backend>(api: Api<B>) -> Router {
    routes::<B>().0.with_state(api)
}

/// The router without its state, and every route it serves as (method, path).
pub fn routes<B: Backend>() -> (Router<Api<B>>, Vec<(Method, &'static str)>) {
    Routes::default()
        .add(Method::GET, "/", crate::status::overview::<B>)
        .add(Method::GET, "/runs/{id}", crate::status::run_page::<B>)
        .add(Method::POST, "/unlock", crate::status::unlock::<B>)
        .add(Method::POST, "/lock", crate::status::lock)
        .add(Method::GET, "/healthz", healthz)
        .add(Method::GET, "/readyz", readyz::<B>)
        .add(Method::GET, "/metrics", metrics::<B>)
        .add(Method::GET, "/openapi.json", openapi)
        .add(Method::GET, "/v1/runs", runs::<B>)
        .add(Method::GET, "/v1/runs/{id}", run::<B>)
        .add(Method::POST, "/v1/connectors/{id}/sync", sync_now::<B>)
        .add(
            Method::GET,
            "/v1/connectors/{id}/traits/{email}",
            traits::<B>,
        )
        .add(
            Method::GET,
            "/v1/connectors/{id}/subscribers",
            subscribers::<B>,
        )
        .add(Method::POST, "/v1/connectors/{id}/actions", act::<B>)
        .add(Method::GET, "/v1/actions", actions::<B>)
        .add(Method::GET, "/v1/actions/{id}", action::<B>)
        .into_parts()
}

/// A router that keeps the list of what it serves.
struct Routes<B: Backend> {
    router: Router<Api<B>>,
    served: Vec<(Method, &'static str)>,
}

impl<B: Backend> Default for Routes<B> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            served: Vec::new(),
        }
    }
}

impl<B: Backend> Routes<B> {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Api<B>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }

    fn into_parts(self) -> (Router<Api<B>>, Vec<(Method, &'static str)>) {
        (self.router, self.served)
    }
}

/// The OpenAPI 3.1 document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cleeng-sync admin API",
        description = "Runs, traits, subscribers and the billing actions of a cleeng-sync daemon.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        crate::status::overview, crate::status::run_page, crate::status::unlock,
        crate::status::lock, healthz, readyz, metrics, openapi, runs, run, sync_now, traits,
        subscribers, act, actions, action
    ),
    components(schemas(ErrorBody, RunStarted, RunDetail)),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// Adds the bearer token's security scheme.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// An error answer.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    /// What went wrong and what to do.
    error: String,
}

/// The answer to a manual run.
#[derive(Serialize, ToSchema)]
struct RunStarted {
    /// The run's ledger id.
    run_id: i64,
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

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and the scheduler is alive.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Object),
    (status = 503, description = "The store or the scheduler is not", body = Object)))]
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

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
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

/// The filters of `GET /v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only this connector's runs.
    connector: Option<String>,
    /// How many, newest first; default 20, at most 1000.
    limit: Option<u32>,
}

/// Recent runs, newest first.
#[utoipa::path(get, path = "/v1/runs", params(RunsQuery), responses(
    (status = 200, description = "Runs, newest first", body = Vec<RunRecord>),
    (status = 503, description = "The store failed", body = ErrorBody)))]
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
#[derive(Serialize, ToSchema)]
struct RunDetail {
    /// The run.
    #[serde(flatten)]
    run: RunRecord,
    /// Its stored rejections (at most 10,000), by record.
    rejections: Vec<Rejection>,
}

/// One run, with its rejections.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = i64, Path, description = "Run id")), responses(
    (status = 200, description = "The run", body = RunDetail),
    (status = 400, description = "Not a run id", body = String),
    (status = 404, description = "No such run", body = ErrorBody),
    (status = 503, description = "The store failed", body = ErrorBody)))]
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

/// Starts a run of the connector now.
#[utoipa::path(post, path = "/v1/connectors/{id}/sync", params(("id" = String, Path, description = "Connector id")),
    security(("bearer" = [])), responses(
    (status = 202, description = "Started", body = RunStarted),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 403, description = "No token configured: disabled", body = ErrorBody),
    (status = 404, description = "No such connector", body = ErrorBody),
    (status = 409, description = "A run of it is in flight", body = ErrorBody),
    (status = 503, description = "Shutting down, or the store failed", body = ErrorBody)))]
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

/// One subscriber's traits, with the actions that succeeded since their export.
#[utoipa::path(get, path = "/v1/connectors/{id}/traits/{email}",
    params(("id" = String, Path, description = "Connector id"), ("email" = String, Path, description = "Email, any case")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The traits", body = TraitsAndActions),
    (status = 401, description = "A token is configured: missing or wrong", body = ErrorBody),
    (status = 404, description = "No such connector or subscriber", body = ErrorBody),
    (status = 503, description = "The store failed", body = ErrorBody)))]
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

/// A page of the connector's subscribers (`?expiring_within=7d&status=..&plan=..
/// &country=..&limit=..&after=..`): personal data in bulk, so the token is required.
#[utoipa::path(get, path = "/v1/connectors/{id}/subscribers",
    params(("id" = String, Path, description = "Connector id"), Listing),
    security(("bearer" = [])), responses(
    (status = 200, description = "A page, by expiry date then email", body = SubscriberPage),
    (status = 400, description = "A bad filter", body = ErrorBody),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 403, description = "No token configured: disabled", body = ErrorBody),
    (status = 404, description = "No such connector", body = ErrorBody),
    (status = 503, description = "The store failed", body = ErrorBody)))]
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.clone(),
    )
        .into_response()
}

/// The options of `POST /v1/connectors/{id}/actions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ActOptions {
    /// Check and resolve only: call nothing that changes Cleeng, record nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Carries out a billing action at Cleeng (`Idempotency-Key`: the same key and body
/// answer the stored result, and call Cleeng at most once).
#[utoipa::path(post, path = "/v1/connectors/{id}/actions", request_body = ActionBody,
    params(("id" = String, Path, description = "Connector id"), ActOptions,
        ("Idempotency-Key" = Option<String>, Header, description = "At most one call to Cleeng per key")),
    security(("bearer" = [])), responses(
    (status = 200, description = "Succeeded (or, dry run, would go ahead)", body = ActionAnswer),
    (status = 400, description = "A malformed request", body = ErrorBody),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 403, description = "No token configured: disabled", body = ErrorBody),
    (status = 404, description = "No such connector", body = ErrorBody),
    (status = 409, description = "Another request of this key is still waiting for Cleeng", body = ActionAnswer),
    (status = 422, description = "Refused, by a check or by Cleeng, with its code", body = ActionAnswer),
    (status = 502, description = "Cleeng failed, was unreachable, or the outcome is unknown", body = ActionAnswer),
    (status = 503, description = "The store failed", body = ErrorBody)))]
async fn act<B: Backend>(
    State(api): State<Api<B>>,
    Path(connector): Path<String>,
    options: Result<Query<ActOptions>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api, &headers, true)?;
    let Query(options) =
        options.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if !api.actions.has_connector(&connector) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} is configured"),
        ));
    }
    let key = idempotency_key(&headers)?;
    let request = ActionRequest::new(&connector, body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let ask = Ask {
        request,
        key,
        trigger: ActionTrigger::Api,
        dry_run: options.dry_run,
    };
    // On a task of its own: a caller who hangs up does not cut an action mid-call.
    let actions = Arc::clone(&api.actions);
    let performed = tokio::spawn(async move { actions.perform(ask).await })
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
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key: printable ASCII of 1 to {MAX_KEY_LEN} characters expected"),
        )
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
struct ActionsQuery {
    /// Only this connector's actions.
    connector: Option<String>,
    /// Only this subscriber's (any case).
    email: Option<String>,
    /// How many, newest first; default 20, at most 1000.
    limit: Option<u32>,
}

/// The ledger of the billing actions, newest first.
#[utoipa::path(get, path = "/v1/actions", params(ActionsQuery), security((), ("bearer" = [])), responses(
    (status = 200, description = "Actions, newest first", body = Vec<ActionRecord>),
    (status = 400, description = "A bad filter", body = ErrorBody),
    (status = 401, description = "A token is configured: missing or wrong", body = ErrorBody),
    (status = 503, description = "The store failed", body = ErrorBody)))]
async fn actions<B: Backend>(
    State(api): State<Api<B>>,
    query: Result<Query<ActionsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Vec<ActionRecord>>, ApiError> {
    authorize(&api, &headers, false)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_ACTIONS);
    let records = api
        .actions
        .store()
        .actions(query.connector.as_deref(), query.email.as_deref(), limit)
        .await?;
    Ok(Json(records))
}

/// One action of the ledger.
#[utoipa::path(get, path = "/v1/actions/{id}", params(("id" = i64, Path, description = "Action id")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The action", body = ActionRecord),
    (status = 400, description = "Not an action id", body = String),
    (status = 401, description = "A token is configured: missing or wrong", body = ErrorBody),
    (status = 404, description = "No such action", body = ErrorBody),
    (status = 503, description = "The store failed", body = ErrorBody)))]
async fn action<B: Backend>(
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
