//! The status page: what the person on call opens when a night went wrong. Served by
//! the daemon at `GET /` (every connector, its last run and next one, its webhook inbox,
//! its change feed's destinations, the recent runs and billing actions), `GET /runs/{id}` (one run, its warnings and rejections) and
//! `GET /actions/{id}` (one billing action and its confirmation), as HTML rendered on
//! the server ([`view`], [`actions`], drawn with [`parts`]), with a chart drawn as inline
//! SVG ([`chart`]): no script, nothing fetched from elsewhere, readable on a phone.
//!
//! Emails are personal data: the page shows them unmasked only to a viewer who holds
//! the admin token, sent as `Authorization: Bearer` or through the page's form, which
//! sets a cookie derived from the token (so the cookie cannot call the API). Everyone
//! else, and everyone when no token is configured, sees counts and masked values.

mod actions;
pub mod chart;
pub mod page;
mod parts;
mod view;

pub use page::{Alarm, RejectionGroup, STALE_AFTER, Viewer, alarms, group_rejections};
use page::{ConnectorStatus, Overview, RunPage, Unlock};

use crate::run::Outcome;
use crate::server::state::Api;
use crate::store::{Backend, StoreError};
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;
use maud::Markup;
use serde::Deserialize;
use tracing::warn;

/// Recent runs and actions listed on the front page.
const RECENT: u32 = 20;

/// The cookie the page's form sets.
const COOKIE: &str = "cleeng_sync_page";

/// How long the cookie lasts (the unlock operation's summary says it in words).
const COOKIE_MAX_AGE_S: u32 = 12 * 3600;

/// Who presents what: the bearer token, or the cookie the form set.
fn viewer<B: Backend>(api: &Api<B>, headers: &HeaderMap) -> (Viewer, Unlock) {
    let Some(token) = &api.token else {
        return (Viewer::Anonymous, Unlock::Impossible);
    };
    if crate::server::auth::bearer(headers).is_some_and(|p| token.matches(p)) {
        // A client that sends the header has no use for the form.
        return (Viewer::Operator, Unlock::Impossible);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && token.page_cookie_matches(value));
    if cookie {
        (Viewer::Operator, Unlock::Unlocked)
    } else {
        (Viewer::Anonymous, Unlock::Offered)
    }
}

/// The page's headers: nothing cached (personal data), nothing loaded from elsewhere,
/// never framed.
fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

fn store_failed(e: StoreError) -> Response {
    warn!("status page: the store failed: {e}");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        view::problem(
            "The store failed",
            &format!("{e}. The page shows again once the store answers (see /readyz)."),
        ),
    )
}

/// The status page: every connector, the recent runs and billing actions.
#[utoipa::path(get, tag = "status page", path = "/", security((), ("bearer" = [])), responses(
    (status = 200, description = "The status page (emails unmasked only with the token)", body = String, content_type = "text/html"),
    (status = 503, description = "The store failed", body = String, content_type = "text/html")))]
pub async fn overview<B: Backend>(State(api): State<Api<B>>, headers: HeaderMap) -> Response {
    let (viewer, unlock) = viewer(&api, &headers);
    match gather_overview(&api, viewer, unlock).await {
        Ok(overview) => html(StatusCode::OK, view::overview(&overview)),
        Err(e) => store_failed(e),
    }
}

async fn gather_overview<B: Backend>(
    api: &Api<B>,
    viewer: Viewer,
    unlock: Unlock,
) -> Result<Overview<'_>, StoreError> {
    let daemon = &api.daemon;
    let store = daemon.store();
    let now = daemon.now();
    let timetable = daemon.timetable();
    // One schedule for every connector: the same next run.
    let next = timetable.next_after(now);
    let mut connectors = Vec::new();
    for settings in daemon.connectors() {
        let recent = store
            .runs(Some(&settings.id), chart::RUNS_DRAWN as u32)
            .await?;
        let last_success = store.last_success(&settings.id).await?;
        // A run in flight says nothing yet: the alarms are about the one before it.
        let last_finished = recent.iter().find(|r| r.report.outcome != Outcome::Running);
        let mut states = match settings.deliver.is_empty() {
            true => Vec::new(),
            false => store.deliveries(Some(&settings.id)).await?,
        };
        let destinations = settings
            .deliver
            .iter()
            .map(|d| {
                let state = states.iter().position(|s| s.destination == d.name);
                (d, state.map(|i| states.swap_remove(i)))
            })
            .collect();
        connectors.push(ConnectorStatus {
            settings,
            alarms: alarms(last_finished, last_success.as_ref(), now),
            recent,
            last_applied: store.last_applied(&settings.id).await?,
            next: next.clone(),
            inbox: match settings.webhooks {
                Some(_) => Some(store.inbox(&settings.id, now - TimeDelta::days(1)).await?),
                None => None,
            },
            destinations,
        });
    }
    Ok(Overview {
        now,
        cron: timetable.cron(),
        schedule_zone: timetable.zone(),
        connectors,
        runs: store.runs(None, RECENT).await?,
        actions: api.actions.store().actions(None, None, RECENT).await?,
        viewer,
        unlock,
    })
}

/// One run: its counts, message, warnings and rejections.
#[utoipa::path(get, tag = "status page", path = "/runs/{id}", params(("id" = i64, Path, description = "Run id")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The run's page (emails unmasked only with the token)", body = String, content_type = "text/html"),
    (status = 400, description = "Not a run id", body = String),
    (status = 404, description = "No such run", body = String, content_type = "text/html"),
    (status = 503, description = "The store failed", body = String, content_type = "text/html")))]
pub async fn run_page<B: Backend>(
    State(api): State<Api<B>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let (viewer, unlock) = viewer(&api, &headers);
    let store = api.daemon.store();
    let run = match store.run(id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                view::problem(
                    &format!("No run {id}"),
                    "The ledger holds no run of that id.",
                ),
            );
        }
        Err(e) => return store_failed(e),
    };
    let rejections = match store.rejections(id).await {
        Ok(rejections) => rejections,
        Err(e) => return store_failed(e),
    };
    let page = RunPage {
        run,
        stored: rejections.len(),
        groups: group_rejections(rejections),
        viewer,
        unlock,
        now: api.daemon.now(),
    };
    html(StatusCode::OK, view::run_page(&page))
}

/// One billing action: what was asked, Cleeng's answer, and its confirmation.
#[utoipa::path(get, tag = "status page", path = "/actions/{id}", params(("id" = i64, Path, description = "Action id")),
    security((), ("bearer" = [])), responses(
    (status = 200, description = "The action's page (emails unmasked only with the token)", body = String, content_type = "text/html"),
    (status = 400, description = "Not an action id", body = String),
    (status = 404, description = "No such action", body = String, content_type = "text/html"),
    (status = 503, description = "The store failed", body = String, content_type = "text/html")))]
pub async fn action_page<B: Backend>(
    State(api): State<Api<B>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let (viewer, unlock) = viewer(&api, &headers);
    match api.actions.store().action(id).await {
        Ok(Some(action)) => {
            let page = actions::ActionPage {
                action,
                viewer,
                unlock,
                now: api.daemon.now(),
            };
            html(StatusCode::OK, actions::action_page(&page))
        }
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            view::problem(
                &format!("No action {id}"),
                "The ledger holds no billing action of that id.",
            ),
        ),
        Err(e) => store_failed(e),
    }
}

/// The form of the page's unlock button.
#[derive(Deserialize)]
pub struct UnlockForm {
    token: String,
    /// The page to go back to.
    #[serde(default)]
    back: String,
}

/// A local page to go back to: a path of this server, never another site.
fn back_to(back: &str) -> &str {
    let local = back.starts_with('/') && !back.starts_with("//") && !back.contains('\\');
    if local { back } else { "/" }
}

/// Checks the admin token typed into the page and, when it is right, sets the cookie
/// that shows emails for 12 hours.
#[utoipa::path(post, tag = "status page", path = "/unlock", request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "token=<CLEENG_SYNC_SERVER_TOKEN>&back=<path>"), responses(
    (status = 303, description = "Right: the cookie is set, back to the page"),
    (status = 400, description = "Not the page's form", body = String, content_type = "text/html"),
    (status = 401, description = "Wrong token", body = String, content_type = "text/html"),
    (status = 403, description = "No token configured: emails are never shown", body = String, content_type = "text/html")))]
pub async fn unlock<B: Backend>(
    State(api): State<Api<B>>,
    form: Result<Form<UnlockForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            view::problem(
                "Not the page's form",
                "POST /unlock takes the status page's form: token=<CLEENG_SYNC_SERVER_TOKEN>.",
            ),
        );
    };
    let Some(token) = &api.token else {
        return html(
            StatusCode::FORBIDDEN,
            view::problem(
                "No token is configured",
                "Set CLEENG_SYNC_SERVER_TOKEN for the daemon: without it the page never shows emails.",
            ),
        );
    };
    if !token.matches(form.token.trim()) {
        return html(
            StatusCode::UNAUTHORIZED,
            view::problem(
                "Wrong token",
                "That is not the daemon's CLEENG_SYNC_SERVER_TOKEN. Go back and try again.",
            ),
        );
    }
    // HttpOnly: no script reads it; SameSite=Strict: no other site sends it. Not
    // Secure: the admin port is plain HTTP on loopback or behind the cluster's proxy.
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict",
        token.page_cookie()
    );
    redirect(back_to(&form.back), &cookie)
}

/// Forgets the cookie: emails masked again.
#[utoipa::path(post, tag = "status page", path = "/lock", responses(
    (status = 303, description = "The cookie is cleared, back to the page")))]
pub async fn lock() -> Response {
    redirect(
        "/",
        &format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    )
}

fn redirect(to: &str, cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(to) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unlock_form_only_sends_back_to_a_page_of_this_server() {
        assert_eq!(back_to("/runs/12"), "/runs/12");
        for outside in ["https://evil.example/", "//evil.example/", "/\\evil", ""] {
            assert_eq!(back_to(outside), "/", "{outside}");
        }
    }
}
