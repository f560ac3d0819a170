//! The status page's markup. maud escapes every value it is given, so a message or an
//! object key from the ledger can never become markup.

use super::actions::actions_table;
use super::chart::{self, count};
use super::page::{Alarm, ConnectorStatus, Overview, RunPage, Viewer};
use super::parts::{
    CSS, badge, duration, instant, layout, listed, local, percent, relative, sentence, shorten, utc,
};
use crate::config::Destination;
use crate::event::InboxSummary;
use crate::run::{Outcome, RunRecord};
use crate::store::DeliveryState;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The front page.
pub(super) fn overview(page: &Overview<'_>) -> Markup {
    layout(
        "cleeng-sync status",
        page.now,
        page.unlock,
        "/",
        html! {
            @if page.connectors.is_empty() {
                p { "No connector is configured." }
            }
            @for connector in &page.connectors {
                (connector_card(connector, page))
            }
            (listed("runs", "Recent runs", page.runs.is_empty(), "No run yet.",
                runs_table(&page.runs, page.now)))
            (listed("actions", "Billing actions", page.actions.is_empty(), "No billing action yet.",
                actions_table(&page.actions, page.viewer, page.now)))
        },
    )
}

/// The connector's webhook inbox: queued, the oldest's age, the last event, failures.
fn inbox_line(inbox: &InboxSummary, now: DateTime<Utc>) -> Markup {
    html! {
        @if inbox.queued == 0 {
            "nothing queued"
        } @else {
            strong { (inbox.queued) " queued" }
            @if let Some(oldest) = &inbox.oldest_queued_at {
                ", the oldest received " (instant(oldest, now))
            }
        }
        br; small {
            "last event "
            @match &inbox.last_received_at {
                Some(at) => (instant(at, now)),
                None => span.muted { "never: no delivery yet" },
            }
            " · "
            @if inbox.failed_last_day > 0 {
                strong.bad { (inbox.failed_last_day) " failed in the last 24 h" }
                " (" code { "cleeng-sync events --status failed" } ")"
            } @else {
                "no failure in the last 24 h"
            }
        }
    }
}

/// A change feed destination: caught up, pending, retrying or stopped.
fn destination_line(
    d: &Destination,
    state: Option<&DeliveryState>,
    page: &Overview<'_>,
    connector: &str,
) -> Markup {
    html! {
        code { (d.name) } " → " small { (d.shown_url()) } br;
        @match state {
            None => span.muted { "not started yet" },
            Some(s) => {
                @if let Some(at) = &s.stopped_at {
                    strong.bad { "stopped " (instant(at, page.now)) }
                    ": it refused a batch; once fixed, "
                    code { "cleeng-sync deliver resume " (d.name) " --connector " (connector) }
                } @else if s.failures > 0 {
                    strong.bad { (s.failures) " failed attempts" }
                    @if let Some(at) = &s.retry_at { ", next " (instant(at, page.now)) }
                } @else if let Some(since) = &s.pending_since {
                    "pending since " (instant(since, page.now))
                } @else {
                    "caught up"
                }
                br; small {
                    (s.delivered) " delivered, the last "
                    @match &s.delivered_at {
                        Some(at) => (instant(at, page.now)),
                        None => "never",
                    }
                    @if page.viewer == Viewer::Operator {
                        @if let Some(error) = &s.last_error { " · " (error) }
                    }
                }
            }
        }
    }
}

fn connector_card(c: &ConnectorStatus<'_>, page: &Overview<'_>) -> Markup {
    let id = &c.settings.id;
    let last = c.recent.first();
    let guards = c.settings.guards;
    html! {
        section.connector id=(format!("connector-{id}")) data-connector=(id) {
            h2 { "Connector " code { (id) } }
            @for alarm in &c.alarms {
                (banner(alarm, page.now))
            }
            dl.facts {
                dt { "Last run" }
                dd.last-run {
                    @match last {
                        Some(run) => {
                            (badge(run.report.outcome.as_str())) " "
                            a href=(format!("/runs/{}", run.report.run_id)) { "run " (run.report.run_id) }
                            " · " (instant(&run.started_at, page.now))
                            @if let Some(object) = &run.report.object {
                                br; small { "object " code { (object.key) } }
                            }
                            br; small { (counts_line(run)) }
                        }
                        None => span.muted { "none yet" },
                    }
                }
                dt { "Last applied" }
                dd.last-applied {
                    @match &c.last_applied {
                        Some(run) => {
                            a href=(format!("/runs/{}", run.report.run_id)) { "run " (run.report.run_id) }
                            " · " (instant(run.finished_at.as_deref().unwrap_or(&run.started_at), page.now))
                            @if let Some(object) = &run.report.object {
                                br; small { "object " code { (object.key) } }
                            }
                        }
                        None => span.muted { "never: no export was applied yet" },
                    }
                }
                dt { "Next run" }
                dd.next-run {
                    @match &c.next {
                        Some(slot) => {
                            (local(slot.at, c.settings.timezone)) " · "
                            time datetime=(crate::store::timestamp(slot.at)) { (utc(slot.at)) }
                            " " small { "(" (relative(slot.at - page.now)) ")" }
                        }
                        None => span.muted { "never: the schedule names no time in the next 400 days" },
                    }
                }
                dt { "Schedule" }
                dd { code { (page.cron) } " in " (page.schedule_zone.name())
                    " · dates in " (c.settings.timezone.name()) }
                dt { "Guards" }
                dd.guards {
                    "refuse above " (percent(guards.max_rejected_ratio)) " rejected rows or "
                    (percent(guards.max_removed_ratio)) " removed subscribers"
                }
                dt { "Source" }
                dd { code { (c.settings.source) } }
                @if let Some(inbox) = &c.inbox {
                    dt { "Webhooks" }
                    dd.inbox { (inbox_line(inbox, page.now)) }
                }
                @for (d, state) in &c.destinations {
                    dt { "Delivers to" }
                    dd.destination data-destination=(d.name) {
                        (destination_line(d, state.as_ref(), page, id))
                    }
                }
            }
            @if !c.recent.is_empty() {
                @let oldest_first: Vec<RunRecord> = c.recent.iter().rev().cloned().collect();
                (chart::runs_chart(id, &oldest_first))
            }
        }
    }
}

fn banner(alarm: &Alarm, now: DateTime<Utc>) -> Markup {
    match alarm {
        Alarm::Refused { run_id, message } => html! {
            div.banner.refused role="alert" {
                strong { "The last run was refused" } " ("
                a href=(format!("/runs/{run_id}")) { "run " (run_id) }
                "): " (sentence(message)) " Nothing was applied."
            }
        },
        Alarm::Failed { run_id, message } => html! {
            div.banner.failed role="alert" {
                strong { "The last run failed" } " ("
                a href=(format!("/runs/{run_id}")) { "run " (run_id) }
                "): " (sentence(message))
            }
        },
        Alarm::Stale { since } => html! {
            div.banner.stale role="alert" {
                strong { "No successful run for more than 26 hours" }
                @match since {
                    Some(since) => { " (the last one finished " (relative(*since - now)) ")." }
                    None => { " (none ever succeeded)." }
                }
            }
        },
    }
}

fn runs_table(runs: &[RunRecord], now: DateTime<Utc>) -> Markup {
    html! {
        div.scroll { table.runs {
            thead { tr {
                th { "Run" } th { "Connector" } th { "Outcome" } th { "Trigger" } th { "Started" }
                th.n { "Read" } th.n { "Ins." } th.n { "Upd." } th.n { "Rem." }
                th.n title="left as a newer refresh wrote them" { "Sup." } th.n { "Rej." }
                th { "Message" }
            } }
            tbody {
                @for run in runs {
                    @let r = &run.report;
                    tr data-run=(r.run_id) {
                        td { a href=(format!("/runs/{}", r.run_id)) { (r.run_id) } }
                        td { (r.connector) }
                        td { (badge(r.outcome.as_str())) }
                        td { (run.trigger.as_str())
                            @if let Some(slot) = &run.scheduled_for { br; small { (slot) } } }
                        td { (instant(&run.started_at, now)) }
                        td.n { (count(r.rows.read)) } td.n { (count(r.changes.inserted)) }
                        td.n { (count(r.changes.updated)) } td.n { (count(r.changes.removed)) }
                        td.n { (count(r.changes.superseded)) } td.n { (count(r.rows.rejected)) }
                        td.msg { small { (shorten(r.message.as_deref().unwrap_or(""), 160)) } }
                    }
                }
            }
        } }
    }
}

/// A run's page.
pub(super) fn run_page(page: &RunPage) -> Markup {
    let run = &page.run;
    let r = &run.report;
    let back = format!("/runs/{}", r.run_id);
    layout(
        &format!("Run {} of {}", r.run_id, r.connector),
        page.now,
        page.unlock,
        &back,
        html! {
            p { a href="/" { "← all connectors" } }
            h2 { "Run " (r.run_id) " of " code { (r.connector) } " " (badge(r.outcome.as_str())) }
            @if let Some(message) = &r.message {
                @let alarm = matches!(r.outcome, Outcome::Refused | Outcome::Failed);
                p class=(if alarm { "banner message" } else { "message" }) { (message) }
            }
            dl.facts {
                dt { "Trigger" } dd { (run.trigger.as_str()) }
                dt { "Scheduled for" } dd.scheduled-for { (run.scheduled_for.as_deref().unwrap_or("—")) }
                dt { "Started" } dd { (instant(&run.started_at, page.now)) }
                dt { "Finished" } dd { @match &run.finished_at {
                    Some(at) => { (instant(at, page.now)) " · took " (duration(r.duration_ms)) }
                    None => "still running",
                } }
                @if let Some(object) = &r.object {
                    dt { "Object" } dd { code { (object.key) } }
                    dt { "ETag" } dd { code { (object.etag) } }
                    @if let Some(sha) = &object.sha256 { dt { "SHA-256" } dd { code { (sha) } } }
                }
            }
            h3 { "Counts" }
            div.scroll { table.counts {
                thead { tr { th.n { "read" } th.n { "valid" } th.n { "rejected" } th.n { "inserted" }
                    th.n { "updated" } th.n { "unchanged" } th.n { "removed" }
                    th.n { "superseded" } } }
                tbody { tr {
                    td.n { (count(r.rows.read)) } td.n { (count(r.rows.valid)) }
                    td.n { (count(r.rows.rejected)) } td.n { (count(r.changes.inserted)) }
                    td.n { (count(r.changes.updated)) } td.n { (count(r.changes.unchanged)) }
                    td.n { (count(r.changes.removed)) } td.n.superseded { (count(r.changes.superseded)) }
                } }
            } }
            @if r.changes.superseded > 0 {
                p.muted { (count(r.changes.superseded)) " subscribers were read from Cleeng after this \
                    export was written: it left them as those reads wrote them." }
            }
            @if matches!(r.outcome, Outcome::Refused | Outcome::DryRun) {
                p.muted { "The changes are those the run would have made: nothing was applied." }
            }
            h3 { "Warnings" }
            @if r.warnings.is_empty() {
                p.muted { "None." }
            } @else {
                table.warnings { tbody {
                    @for (code, n) in r.warnings.iter() {
                        tr data-code=(code.as_str()) { td { code { (code.as_str()) } } td.n { (count(n)) } }
                    }
                } }
            }
            h3 { "Rejections" }
            @if page.groups.is_empty() {
                p.muted { "None." }
            } @else {
                @if (page.stored as u64) < r.rows.rejected {
                    p.muted { "The first " (count(page.stored as u64)) " of " (count(r.rows.rejected))
                        " rejections are kept; the groups count those." }
                }
                @for group in &page.groups {
                    section.rejections data-reason=(group.reason.as_str()) {
                        h3 { code { (group.reason.as_str()) } " · " (count(group.count as u64))
                            " · " small { (group.columns.join(", ")) } }
                        div.scroll { table {
                            thead { tr { th.n { "Record" } th { "Field" } th { "Value" } th { "Subscriber" } } }
                            tbody {
                                @for rejection in &group.first {
                                    tr {
                                        td.n { (rejection.record) }
                                        td { (rejection.column) }
                                        td { code { (rejection.value.as_deref().unwrap_or("")) } }
                                        td.email { (rejection.email.as_deref().map(|e| page.viewer.email(e)).unwrap_or_default()) }
                                    }
                                }
                            }
                        } }
                        @if group.count > group.first.len() {
                            p.muted { small { "and " (count((group.count - group.first.len()) as u64))
                                " more: " code { "GET /v1/runs/" (r.run_id) } " lists them all." } }
                        }
                    }
                }
            }
        },
    )
}

/// A page that says what went wrong.
pub(super) fn problem(title: &str, detail: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cleeng-sync" } style { (PreEscaped(CSS)) } }
            body { h1 { (title) } p { (detail) } p { a href="/" { "← status" } } }
        }
    }
}

fn counts_line(run: &RunRecord) -> String {
    let r = &run.report;
    let superseded = match r.changes.superseded {
        0 => String::new(),
        n => format!(" · superseded {}", count(n)),
    };
    format!(
        "read {} · inserted {} · updated {} · removed {}{superseded} · rejected {}",
        count(r.rows.read),
        count(r.changes.inserted),
        count(r.changes.updated),
        count(r.changes.removed),
        count(r.rows.rejected)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::status::page::{Unlock, Viewer};

    #[test]
    fn text_from_the_ledger_never_becomes_markup() {
        use crate::run::{RunRecord, RunReport, Trigger};
        let hostile = "<script>alert(1)</script>";
        let page = RunPage {
            run: RunRecord {
                report: RunReport {
                    message: Some(hostile.into()),
                    ..RunReport::empty(1, "default", Outcome::Failed)
                },
                trigger: Trigger::Api,
                scheduled_for: Some(hostile.into()),
                started_at: "2026-03-01T09:30:00Z".into(),
                finished_at: None,
            },
            groups: Vec::new(),
            stored: 0,
            viewer: Viewer::Anonymous,
            unlock: Unlock::Offered,
            now: Utc::now(),
        };
        let html = run_page(&page).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }
}
