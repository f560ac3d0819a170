//! The billing actions on the status page: the table of recent ones, and one action's
//! page (what was asked, what Cleeng answered, whether a read from Cleeng confirmed it).

use super::page::{Unlock, Viewer};
use super::parts::{badge, instant, layout, shorten};
use crate::action::{ActionKind, ActionRecord, ActionStatus};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// The page of one action.
pub(super) struct ActionPage {
    pub(super) action: ActionRecord,
    pub(super) viewer: Viewer,
    pub(super) unlock: Unlock,
    pub(super) now: DateTime<Utc>,
}

/// The recent actions, newest first: a table that fits a laptop's width.
pub(super) fn actions_table(
    actions: &[ActionRecord],
    viewer: Viewer,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        div.scroll { table.actions {
            thead { tr {
                th { "Action" } th { "Requested" } th { "Subscriber" } th { "Status" } th { "Message" }
            } }
            tbody {
                @for a in actions {
                    @let answer = &a.answer;
                    tr class=(answer.status.as_str()) data-action=[answer.action_id] {
                        td.id { (action_link(a)) br; small { (answer.action.as_str()) } }
                        td { (instant(&a.requested_at, now)) }
                        td.email { (viewer.email(&answer.email)) br; small { (answer.connector) } }
                        td.status { (badge(answer.status.as_str())) br; (confirmation(a, now)) }
                        td.msg {
                            @if let Some(code) = &answer.code { code { (code) } " " }
                            small { (shorten(answer.message.as_deref().unwrap_or(""), 160)) }
                        }
                    }
                }
            }
        } }
    }
}

fn action_link(a: &ActionRecord) -> Markup {
    match a.answer.action_id {
        Some(id) => html! { a href=(format!("/actions/{id}")) { (id) } },
        None => html! { "—" },
    }
}

/// Whether a read from Cleeng saw the action's effect, in a word or two.
fn confirmation(a: &ActionRecord, now: DateTime<Utc>) -> Markup {
    let answer = &a.answer;
    match (&answer.confirmed_at, answer.status, answer.action) {
        (Some(at), _, _) => html! { small.confirmed { "confirmed " (instant(at, now)) } },
        (None, ActionStatus::Succeeded, ActionKind::ApplyCoupon) => {
            html! { small.muted { "a coupon shows nothing to confirm" } }
        }
        (None, ActionStatus::Succeeded, _) => {
            html! { small.unconfirmed { "not confirmed yet" } }
        }
        (None, ActionStatus::Unknown, _) => {
            html! { small { "look it up at Cleeng; never replay it blindly" } }
        }
        _ => html! {},
    }
}

/// One action's page.
pub(super) fn action_page(page: &ActionPage) -> Markup {
    let a = &page.action;
    let answer = &a.answer;
    let id = answer.action_id.unwrap_or_default();
    layout(
        &format!("Action {id} of {}", answer.connector),
        page.now,
        page.unlock,
        &format!("/actions/{id}"),
        html! {
            p { a href="/#actions" { "← all actions" } }
            h2 { "Action " (id) " · " (answer.action.as_str()) " " (badge(answer.status.as_str())) }
            dl.facts {
                dt { "Connector" } dd { code { (answer.connector) } }
                dt { "Subscriber" } dd.email { (page.viewer.email(&answer.email)) }
                dt { "Asked" } dd { code { (a.params) } " · " (a.trigger.as_str())
                    @if let Some(key) = &a.idempotency_key { " · key " code { (key) } } }
                dt { "Requested" } dd { (instant(&a.requested_at, page.now)) }
                dt { "Finished" } dd { @match &a.finished_at {
                    Some(at) => (instant(at, page.now)),
                    None => "still waiting for Cleeng",
                } }
                dt { "Confirmed" } dd.confirmed { (confirmation(a, page.now)) }
                dt { "Subscription" } dd { (answer.subscription_id.map(|s| s.to_string()).unwrap_or_else(|| "—".into())) }
                dt { "Cleeng" } dd { "HTTP " (a.http_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()))
                    " · " (a.attempts) " requests" }
                @if let Some(code) = &answer.code { dt { "Code" } dd { code { (code) } } }
                @if let Some(message) = &answer.message { dt { "Message" } dd { (message) } }
            }
        },
    )
}
