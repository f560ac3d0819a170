//! The status page's markup. maud escapes every value it is given, so a message or an
//! object key from the ledger can never become markup.

use super::chart::{self, count};
use super::page::{Alarm, ConnectorStatus, Overview, RunPage, Unlock, Viewer};
use crate::action::{ActionRecord, ActionStatus};
use crate::run::{Outcome, RunRecord};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// A little CSS: readable on a phone, badges by outcome, banners that stand out.
const CSS: &str = r#"
:root { color-scheme: light dark; --fg: #1d232a; --muted: #5b6670; --line: #d5dbe1;
  --bg: #fff; --card: #f6f8fa; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --info: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa5b1; --line: #30363d;
  --bg: #0d1117; --card: #161b22; --ok: #3fb950; --warn: #d29922; --bad: #f85149; --info: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem; font: 15px/1.45 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline;
  justify-content: space-between; border-bottom: 1px solid var(--line); margin-bottom: 1rem; }
h1 { font-size: 1.4rem; margin: .3rem 0; } h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
a { color: var(--info); } .muted, small { color: var(--muted); }
section.connector { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .8rem 1rem; margin-bottom: 1rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .5rem 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 40rem) { dl.facts { grid-template-columns: 1fr; } dl.facts dd { margin-bottom: .4rem; } }
.banner { border-left: 4px solid var(--bad); background: color-mix(in srgb, var(--bad) 12%, transparent);
  padding: .5rem .8rem; margin: .5rem 0; border-radius: 4px; }
.banner.stale { border-color: var(--warn); background: color-mix(in srgb, var(--warn) 14%, transparent); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: .85em;
  border: 1px solid currentColor; white-space: nowrap; }
.badge.applied, .badge.unchanged, .badge.succeeded, .badge.no_export { color: var(--ok); }
.badge.refused, .badge.unknown, .badge.running, .badge.pending { color: var(--warn); }
.badge.failed { color: var(--bad); } .badge.dry_run { color: var(--info); }
.scroll { overflow-x: auto; } table { border-collapse: collapse; width: 100%; font-size: .92em; }
/* Wide tables scroll sideways on a phone rather than squeeze every cell to a word. */
table.runs td, table.actions td { white-space: nowrap; }
table.runs td.msg, table.actions td.msg { white-space: normal; min-width: 18rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.unknown { background: color-mix(in srgb, var(--warn) 18%, transparent); }
svg.chart { width: 100%; max-width: 44rem; height: auto; display: block; margin-top: .5rem; }
svg.chart text { font-size: 11px; fill: var(--muted); } svg.chart line { stroke: var(--line); }
.series.read rect { fill: #8c959f; } .series.inserted rect { fill: var(--ok); }
.series.updated rect { fill: var(--info); } .series.removed rect { fill: var(--warn); }
.series.rejected rect { fill: var(--bad); }
form.token { display: flex; gap: .4rem; align-items: center; margin: .3rem 0; }
form.token input { padding: .2rem .4rem; max-width: 12rem; }
"#;

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
                actions_table(&page.actions, page.viewer)))
        },
    )
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
                dt { "Last success" }
                dd.last-success {
                    @match &c.last_success {
                        Some(run) => {
                            a href=(format!("/runs/{}", run.report.run_id)) { "run " (run.report.run_id) }
                            " (" (run.report.outcome) ") · "
                            (instant(run.finished_at.as_deref().unwrap_or(&run.started_at), page.now))
                        }
                        None => span.muted { "never" },
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
                th.n { "Read" } th.n { "Ins." } th.n { "Upd." } th.n { "Rem." } th.n { "Rej." }
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
                        td.n { (count(r.rows.rejected)) }
                        td.msg { small { (shorten(r.message.as_deref().unwrap_or(""), 160)) } }
                    }
                }
            }
        } }
    }
}

fn actions_table(actions: &[ActionRecord], viewer: Viewer) -> Markup {
    html! {
        div.scroll { table.actions {
            thead { tr {
                th { "Action" } th { "Requested" } th { "Connector" } th { "What" }
                th { "Subscriber" } th { "Status" } th { "Code" } th { "Message" }
            } }
            tbody {
                @for a in actions {
                    @let answer = &a.answer;
                    tr class=(answer.status.as_str()) data-action=[answer.action_id] {
                        td { (answer.action_id.map(|id| id.to_string()).unwrap_or_default()) }
                        td { small { (a.requested_at) } }
                        td { (answer.connector) }
                        td { (answer.action.as_str()) }
                        td.email { (viewer.email(&answer.email)) }
                        td { (badge(answer.status.as_str()))
                            @if answer.status == ActionStatus::Unknown {
                                br; small { "look it up at Cleeng; never replay it blindly" }
                            } }
                        td { (answer.code.as_deref().unwrap_or("")) }
                        td.msg { small { (shorten(answer.message.as_deref().unwrap_or(""), 160)) } }
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
                    th.n { "updated" } th.n { "unchanged" } th.n { "removed" } } }
                tbody { tr {
                    td.n { (count(r.rows.read)) } td.n { (count(r.rows.valid)) }
                    td.n { (count(r.rows.rejected)) } td.n { (count(r.changes.inserted)) }
                    td.n { (count(r.changes.updated)) } td.n { (count(r.changes.unchanged)) }
                    td.n { (count(r.changes.removed)) }
                } }
            } }
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

fn layout(title: &str, now: DateTime<Utc>, unlock: Unlock, back: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { a href="/" { "cleeng-sync" } }
                    small { "as of " time datetime=(crate::store::timestamp(now)) { (utc(now)) } }
                    @match unlock {
                        Unlock::Offered => form.token method="post" action="/unlock" {
                            input type="hidden" name="back" value=(back);
                            label { small { "Emails are masked. Admin token: " }
                                input type="password" name="token" autocomplete="current-password" required; }
                            button type="submit" { "Show" }
                        },
                        Unlock::Unlocked => form.token method="post" action="/lock" {
                            small { "Showing emails. " } button type="submit" { "Mask them" }
                        },
                        Unlock::Impossible => {},
                    }
                }
                main { (body) }
            }
        }
    }
}

fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge {status}")) data-outcome=(status) { (status) } }
}

/// A section of the front page: its title, then its table, or a line when it has
/// nothing to list.
fn listed(id: &str, title: &str, empty: bool, nothing: &str, table: Markup) -> Markup {
    html! {
        section id=(id) {
            h2 { (title) }
            @if empty {
                p.muted { (nothing) }
            } @else {
                (table)
            }
        }
    }
}

fn counts_line(run: &RunRecord) -> String {
    let r = &run.report;
    format!(
        "read {} · inserted {} · updated {} · removed {} · rejected {}",
        count(r.rows.read),
        count(r.changes.inserted),
        count(r.changes.updated),
        count(r.changes.removed),
        count(r.rows.rejected)
    )
}

/// A ledger instant, in UTC and relative to now.
fn instant(text: &str, now: DateTime<Utc>) -> Markup {
    match crate::run::instant(text) {
        Some(at) => html! {
            time datetime=(text) { (utc(at)) } " " small { "(" (relative(at - now)) ")" }
        },
        None => html! { (text) },
    }
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// "in 3 h", "12 min ago".
fn relative(delta: TimeDelta) -> String {
    let (future, d) = if delta >= TimeDelta::zero() {
        (true, delta)
    } else {
        (false, -delta)
    };
    let text = if d < TimeDelta::minutes(1) {
        return "just now".into();
    } else if d < TimeDelta::hours(1) {
        format!("{} min", d.num_minutes())
    } else if d < TimeDelta::hours(48) {
        format!("{} h", d.num_hours())
    } else {
        format!("{} d", d.num_days())
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 600_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

fn percent(ratio: f64) -> String {
    format!("{}%", (ratio * 1000.0).round() / 10.0)
}

/// A message ending in a full stop, so that the banner's next sentence reads apart.
fn sentence(message: &str) -> String {
    let message = message.trim_end();
    if message.is_empty() || message.ends_with(['.', '!', '?']) {
        message.to_string()
    } else {
        format!("{message}.")
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", crate::redact::truncate_chars(text, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(10_234_567), "10,234,567");
        assert_eq!(relative(TimeDelta::seconds(-20)), "just now");
        assert_eq!(relative(TimeDelta::minutes(-12)), "12 min ago");
        assert_eq!(relative(TimeDelta::hours(12)), "in 12 h");
        assert_eq!(relative(TimeDelta::hours(-72)), "3 d ago");
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(duration(1_234), "1.2 s");
    }

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

    #[test]
    fn the_next_run_is_shown_in_the_zone_with_its_daylight_saving_name() {
        let at = DateTime::parse_from_rfc3339("2026-07-01T08:30:00Z")
            .expect("instant")
            .with_timezone(&Utc);
        assert_eq!(
            local(at, chrono_tz::America::Los_Angeles),
            "2026-07-01 01:30 PDT"
        );
        assert_eq!(utc(at), "2026-07-01 08:30 UTC");
    }
}
