//! The pieces every page of the status page is drawn with: the style, the frame, the
//! badges, and instants, counts and durations as people write them.

use super::page::Unlock;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// A little CSS: readable on a phone, badges by outcome, banners that stand out.
pub(super) const CSS: &str = r#"
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
/* Tables fit a laptop's width: numbers, ids and times keep to one line, the rest wraps
   (on a phone they scroll sideways rather than squeeze every cell to a word). */
td.n, td.id, time { white-space: nowrap; } td { overflow-wrap: anywhere; }
td.msg { min-width: 12rem; } small.unconfirmed { color: var(--warn); } small.confirmed { color: var(--ok); }
strong.bad { color: var(--bad); }
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

pub(super) fn layout(
    title: &str,
    now: DateTime<Utc>,
    unlock: Unlock,
    back: &str,
    body: Markup,
) -> Markup {
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

pub(super) fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge {status}")) data-outcome=(status) { (status) } }
}

/// A section of the front page: its title, then its table, or a line when it has
/// nothing to list.
pub(super) fn listed(id: &str, title: &str, empty: bool, nothing: &str, table: Markup) -> Markup {
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

/// A ledger instant, in UTC and relative to now.
pub(super) fn instant(text: &str, now: DateTime<Utc>) -> Markup {
    match crate::run::instant(text) {
        Some(at) => html! {
            time datetime=(text) { (utc(at)) } " " small { "(" (relative(at - now)) ")" }
        },
        None => html! { (text) },
    }
}

pub(super) fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(super) fn local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// "in 3 h", "12 min ago".
pub(super) fn relative(delta: TimeDelta) -> String {
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

pub(super) fn duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 600_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

pub(super) fn percent(ratio: f64) -> String {
    format!("{}%", (ratio * 1000.0).round() / 10.0)
}

/// A message ending in a full stop, so that the banner's next sentence reads apart.
pub(super) fn sentence(message: &str) -> String {
    let message = message.trim_end();
    if message.is_empty() || message.ends_with(['.', '!', '?']) {
        message.to_string()
    } else {
        format!("{message}.")
    }
}

pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", crate::redact::truncate_chars(text, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::status::chart::count;

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
