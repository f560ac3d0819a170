//! What the status page shows, decided apart from how it is drawn: who is looking,
//! what is wrong with each connector, and a run's rejections grouped by reason.

use crate::action::ActionRecord;
use crate::config::Connector;
use crate::run::{Outcome, Reason, Rejection, RunRecord};
use crate::schedule::Slot;
use chrono::{DateTime, TimeDelta, Utc};

/// Past this long without a successful run the page warns (as the alert does): a night
/// and a couple of hours of slack.
pub const STALE_AFTER: TimeDelta = TimeDelta::hours(26);

/// First records shown per rejection reason on a run's page.
pub(super) const FIRST_RECORDS: usize = 5;

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
pub(super) enum Unlock {
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
pub(super) struct ConnectorStatus<'a> {
    pub(super) settings: &'a Connector,
    /// Its newest runs, newest first (at most [`chart::RUNS_DRAWN`]).
    pub(super) recent: Vec<RunRecord>,
    /// The last run that applied an export.
    pub(super) last_applied: Option<RunRecord>,
    pub(super) next: Option<Slot>,
    pub(super) alarms: Vec<Alarm>,
    /// Its webhook inbox, when it has `[connector.webhooks]`.
    pub(super) inbox: Option<crate::event::InboxSummary>,
    /// Its change feed's destinations, with their state (none: no daemon started with
    /// it yet).
    pub(super) destinations: Vec<(
        &'a crate::config::Destination,
        Option<crate::store::DeliveryState>,
    )>,
}

/// The front page's content.
pub(super) struct Overview<'a> {
    pub(super) now: DateTime<Utc>,
    pub(super) cron: &'a str,
    pub(super) schedule_zone: chrono_tz::Tz,
    pub(super) connectors: Vec<ConnectorStatus<'a>>,
    pub(super) runs: Vec<RunRecord>,
    pub(super) actions: Vec<ActionRecord>,
    pub(super) viewer: Viewer,
    pub(super) unlock: Unlock,
}

/// A run's page content.
pub(super) struct RunPage {
    pub(super) run: RunRecord,
    pub(super) groups: Vec<RejectionGroup>,
    /// Rejections stored for it (at most [`crate::store::REJECTION_CAP`]).
    pub(super) stored: usize,
    pub(super) viewer: Viewer,
    pub(super) unlock: Unlock,
    pub(super) now: DateTime<Utc>,
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
}
