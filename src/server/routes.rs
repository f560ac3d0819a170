//! The router, and the OpenAPI 3.1 document of what it serves.

use super::api::subscribers::{self, refresh, subscribers as listing, traits};
use super::api::{actions, changes, events, health, runs};
use super::error::ErrorBody;
use super::state::Api;
use super::status;
use crate::store::Backend;
use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The routes of the admin API.
pub fn router<B: Backend>(api: Api<B>) -> Router {
    routes::<B>().0.with_state(api)
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;

/// The router without its state, and every route it serves as (method, path).
pub fn routes<B: Backend>() -> (Router<Api<B>>, Vec<(Method, &'static str)>) {
    Routes::default()
        .add(GET, "/", status::overview::<B>)
        .add(GET, "/runs/{id}", status::run_page::<B>)
        .add(GET, "/actions/{id}", status::action_page::<B>)
        .add(POST, "/unlock", status::unlock::<B>)
        .add(POST, "/lock", status::lock)
        .add(GET, "/healthz", health::healthz)
        .add(GET, "/readyz", health::readyz::<B>)
        .add(GET, "/metrics", health::metrics::<B>)
        .add(GET, "/openapi.json", openapi)
        .add(GET, "/v1/runs", runs::runs::<B>)
        .add(GET, "/v1/runs/{id}", runs::run::<B>)
        .add(POST, "/v1/connectors/{id}/sync", runs::sync_now::<B>)
        .add(GET, "/v1/connectors/{id}/traits/{email}", traits::<B>)
        .add(GET, "/v1/connectors/{id}/subscribers", listing::<B>)
        .add(GET, "/v1/connectors/{id}/changes", changes::changes::<B>)
        .add(
            POST,
            "/v1/connectors/{id}/subscribers/{email}/refresh",
            refresh::<B>,
        )
        .add(POST, "/v1/connectors/{id}/actions", actions::act::<B>)
        .add(GET, "/v1/actions", actions::actions::<B>)
        .add(GET, "/v1/actions/{id}", actions::action::<B>)
        .add(GET, "/v1/events", events::events::<B>)
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
        status::overview, status::run_page, status::action_page, status::unlock, status::lock, health::healthz,
        health::readyz, health::metrics, openapi, runs::runs, runs::run, runs::sync_now,
        subscribers::traits, subscribers::subscribers, subscribers::refresh, changes::changes,
        actions::act,
        actions::actions,
        actions::action, events::events
    ),
    components(schemas(ErrorBody, runs::RunStarted, runs::RunDetail)),
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

/// This document.
#[utoipa::path(get, tag = "process", path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_speaks_to_its_readers_not_to_rust() {
        let doc = ApiDoc::openapi().to_json().expect("a document");
        // Operations are tagged by what they are about, not by the module they live in,
        // and summaries carry no rustdoc link syntax.
        assert!(!doc.contains("crate::"), "a module path in the document");
        assert!(!doc.contains("[`"), "a rustdoc link in the document");
        let value: serde_json::Value = serde_json::from_str(&doc).expect("JSON");
        let tags: std::collections::BTreeSet<&str> = value["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
            .filter_map(|op| op["tags"][0].as_str())
            .collect();
        assert_eq!(
            tags.into_iter().collect::<Vec<_>>(),
            [
                "billing actions",
                "process",
                "runs",
                "status page",
                "subscribers",
                "webhooks"
            ]
        );
    }
}
