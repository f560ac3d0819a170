//! The status page: what the person on call opens when a night went wrong. Served by
//! the daemon at `GET /` (every connector, its last run and next one, the recent runs
//! and billing actions) and `GET /runs/{id}` (one run, its warnings and rejections),
//! as HTML rendered on the server ([`view`]), with a chart drawn as inline SVG
//! ([`chart`]): no script, nothing fetched from elsewhere, readable on a phone.
//!
//! Emails are personal data: the page shows them unmasked only to a viewer who holds
//! the admin token, sent as `Authorization: Bearer` or through the page's form, which
//! sets a cookie derived from the token (so the cookie cannot call the API). Everyone
//! else, and everyone when no token is configured, sees counts and masked values.

pub mod chart;
mod view;

use crate::action::ActionRecord;
use crate::config::Connector;
use crate::run::{Outcome, Reason, Rejection, RunRecord};
use crate::schedule::Slot;
use crate::server::Api;
use crate::store::{Backend, StoreError};
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use maud::Markup;
use serde::Deserialize;
use tracing::warn;

/// Past this long without a successful run the page warns (as the alert does): a night
/// and a couple of hours of slack.
pub const STALE_AFTER: TimeDelta = TimeDelta::hours(26);

/// Recent runs and actions listed on the front page.
const RECENT: u32 = 20;

/// First records shown per rejection reason on a run's page.
const FIRST_RECORDS: usize = 5;

/// The cookie the page's form sets.
const COOKIE: &str = "cleeng_sync_page";

/// How long the cookie lasts.
const COOKIE_MAX_AGE_S: u32 = 12 * 3600;

/// Who is looking: whether emails may be shown unmasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// Holds the admin token.
    Operator,
    /// Anyone else: counts and masked values only.
    Anonymous,
}

impl Viewer {
    /// An email as this viewer may see it.
    pub fn email(self, email: &str) -> String {
        match self {
            Viewer::Operator => email.to_string(),
            Viewer::Anonymous => crate::redact::mask_email(email),
        }
    }
}

/// What a viewer can do about the token on this page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlock {
    /// No token is configured: emails are never shown.
    Impossible,
    /// The form that asks for the token.
    Offered,
    /// Shown; the form that forgets it.
    Unlocked,
}

/// Why a connector needs a look, shown as a banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// The last run was refused by a guard.
    Refused {
        /// Its run id.
        run_id: i64,
        /// Why.
        message: String,
    },
    /// The last run failed.
    Failed {
        /// Its run id.
        run_id: i64,
        /// Why.
        message: String,
    },
    /// No run succeeded for [`STALE_AFTER`]; `since` is the last one that did.
    Stale {
        /// When the last successful run finished, if one ever did.
        since: Option<DateTime<Utc>>,
    },
}

/// One connector on the front page.
struct ConnectorStatus<'a> {
    settings: &'a Connector,
    /// Its newest runs, newest first (at most [`chart::RUNS_DRAWN`]).
    recent: Vec<RunRecord>,
    last_success: Option<RunRecord>,
    next: Option<Slot>,
    alarms: Vec<Alarm>,
}

/// The front page's content.
struct Overview<'a> {
    now: DateTime<Utc>,
    cron: &'a str,
    schedule_zone: chrono_tz::Tz,
    connectors: Vec<ConnectorStatus<'a>>,
    runs: Vec<RunRecord>,
    actions: Vec<ActionRecord>,
    viewer: Viewer,
    unlock: Unlock,
}

/// A run's page content.
struct RunPage {
    run: RunRecord,
    groups: Vec<RejectionGroup>,
    /// Rejections stored for it (at most [`crate::store::REJECTION_CAP`]).
    stored: usize,
    viewer: Viewer,
    unlock: Unlock,
    now: DateTime<Utc>,
}

/// The rejections of one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionGroup {
    /// The reason.
    pub reason: Reason,
    /// How many stored rejections give it.
    pub count: usize,
    /// The template fields they are about.
    pub columns: Vec<String>,
    /// The first of them, by record.
    pub first: Vec<Rejection>,
}

/// What is wrong with a connector, from its last run and its last successful one.
pub fn alarms(
    last: Option<&RunRecord>,
    last_success: Option<&RunRecord>,
    now: DateTime<Utc>,
) -> Vec<Alarm> {
    let Some(last) = last else {
        // Never ran: nothing is wrong yet, the page says when the first run is due.
        return Vec::new();
    };
    let mut alarms = Vec::new();
    let message = || last.report.message.clone().unwrap_or_default();
    match last.report.outcome {
        Outcome::Refused => alarms.push(Alarm::Refused {
            run_id: last.report.run_id,
            message: message(),
        }),
        Outcome::Failed => alarms.push(Alarm::Failed {
            run_id: last.report.run_id,
            message: message(),
        }),
        _ => {}
    }
    let since = last_success.and_then(RunRecord::finished);
    if since.is_none_or(|since| now - since > STALE_AFTER) {
        alarms.push(Alarm::Stale { since });
    }
    alarms
}

/// A run's stored rejections grouped by reason, the largest group first, each with its
/// first [`FIRST_RECORDS`] records.
pub fn group_rejections(rejections: Vec<Rejection>) -> Vec<RejectionGroup> {
    let mut groups: Vec<RejectionGroup> = Vec::new();
    for rejection in rejections {
        let group = match groups.iter_mut().find(|g| g.reason == rejection.reason) {
            Some(group) => group,
            None => {
                groups.push(RejectionGroup {
                    reason: rejection.reason,
                    count: 0,
                    columns: Vec::new(),
                    first: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        group.count += 1;
        if !group.columns.contains(&rejection.column) {
            group.columns.push(rejection.column.clone());
        }
        if group.first.len() < FIRST_RECORDS {
            group.first.push(rejection);
        }
    }
    for group in &mut groups {
        group.first.sort_by_key(|r| r.record);
    }
    // Stable: equal counts keep the order their first record came in.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// Who presents what: the bearer token, or the cookie the form set.
fn viewer<B: Backend>(api: &Api<B>, headers: &HeaderMap) -> (Viewer, Unlock) {
    let Some(token) = &api.token else {
        return (Viewer::Anonymous, Unlock::Impossible);
    };
    if crate::server::bearer(headers).is_some_and(|p| token.matches(p)) {
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
#[utoipa::path(get, path = "/", security((), ("bearer" = [])), responses(
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
        connectors.push(ConnectorStatus {
            settings,
            alarms: alarms(last_finished, last_success.as_ref(), now),
            recent,
            last_success,
            next: next.clone(),
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
#[utoipa::path(get, path = "/runs/{id}", params(("id" = i64, Path, description = "Run id")),
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
/// that shows emails for [`COOKIE_MAX_AGE_S`].
#[utoipa::path(post, path = "/unlock", request_body(content = String, content_type = "application/x-www-form-urlencoded",
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
#[utoipa::path(post, path = "/lock", responses(
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
    use crate::run::{RunReport, Trigger};

    fn run(id: i64, outcome: Outcome, finished_at: &str) -> RunRecord {
        RunRecord {
            report: RunReport {
                message: Some(format!("run {id}")),
                ..RunReport::empty(id, "default", outcome)
            },
            trigger: Trigger::Schedule,
            scheduled_for: None,
            started_at: finished_at.into(),
            finished_at: Some(finished_at.into()),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        crate::run::instant(text).expect("an instant")
    }

    #[test]
    fn a_refused_last_run_after_a_recent_success_raises_one_alarm() {
        let ok = run(1, Outcome::Applied, "2026-03-01T09:30:00Z");
        let refused = run(2, Outcome::Refused, "2026-03-02T09:30:00Z");
        let alarms = alarms(Some(&refused), Some(&ok), at("2026-03-02T10:00:00Z"));
        assert_eq!(
            alarms,
            [Alarm::Refused {
                run_id: 2,
                message: "run 2".into()
            }]
        );
    }

    #[test]
    fn no_success_for_26_hours_is_an_alarm_even_after_a_good_looking_run() {
        let ok = run(1, Outcome::Applied, "2026-03-01T09:30:00Z");
        let fine = alarms(Some(&ok), Some(&ok), at("2026-03-02T11:30:00Z"));
        assert_eq!(fine, []);
        let stale = alarms(Some(&ok), Some(&ok), at("2026-03-02T11:30:01Z"));
        assert_eq!(
            stale,
            [Alarm::Stale {
                since: Some(at("2026-03-01T09:30:00Z"))
            }]
        );
    }

    #[test]
    fn a_connector_that_only_ever_failed_is_stale_and_failed() {
        let failed = run(3, Outcome::Failed, "2026-03-02T09:30:00Z");
        let alarms = alarms(Some(&failed), None, at("2026-03-02T09:31:00Z"));
        assert_eq!(alarms.len(), 2, "{alarms:?}");
        assert!(matches!(alarms[0], Alarm::Failed { run_id: 3, .. }));
        assert_eq!(alarms[1], Alarm::Stale { since: None });
        assert_eq!(super::alarms(None, None, at("2026-03-02T09:31:00Z")), []);
    }

    fn rejection(record: u64, reason: Reason, column: &str) -> Rejection {
        Rejection {
            record,
            column: column.into(),
            reason,
            value: None,
            email: None,
        }
    }

    #[test]
    fn rejections_are_grouped_by_reason_largest_first_with_their_first_records() {
        let mut rejections = vec![rejection(2, Reason::InvalidDate, "expiry_date")];
        rejections.extend((3..12).map(|r| rejection(r, Reason::MissingValue, "status")));
        rejections.push(rejection(12, Reason::MissingValue, "offer_id"));
        let groups = group_rejections(rejections);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].reason, Reason::MissingValue);
        assert_eq!(groups[0].count, 10);
        assert_eq!(groups[0].columns, ["status", "offer_id"]);
        let first: Vec<u64> = groups[0].first.iter().map(|r| r.record).collect();
        assert_eq!(first, [3, 4, 5, 6, 7]);
        assert_eq!(
            (groups[1].reason, groups[1].count),
            (Reason::InvalidDate, 1)
        );
    }

    #[test]
    fn the_unlock_form_only_sends_back_to_a_page_of_this_server() {
        assert_eq!(back_to("/runs/12"), "/runs/12");
        for outside in ["https://evil.example/", "//evil.example/", "/\\evil", ""] {
            assert_eq!(back_to(outside), "/", "{outside}");
        }
    }
}
