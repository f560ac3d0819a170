//! The metrics the daemon exposes on `/metrics`: their names, and one function per
//! thing that happens. Without an installed recorder (the `sync` command) they cost
//! nothing.
//!
//! Every series the alerts and the dashboard read exists from the start at zero
//! ([`register`]): a counter that appears only with its first increment makes
//! `increase()` miss that increment, and a dashboard panel stays empty rather than
//! showing 0.

use crate::action::{ActionKind, ActionStatus};
use crate::change::DeliveryOutcome;
use crate::event::{EventStatus, WebhookOutcome};
use crate::live::{LiveSource, RefreshOutcome};
use crate::run::{Outcome, RunReport, WarningCode};
use chrono::{DateTime, Utc};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Runs by connector and outcome.
pub const RUNS_TOTAL: &str = "cleeng_sync_runs_total";
/// Rows by connector and kind (read, valid, rejected, inserted, updated, unchanged, removed,
/// superseded).
pub const ROWS_TOTAL: &str = "cleeng_sync_rows_total";
/// Warnings on valid rows by connector and code (`offer_id_pattern`, `unmapped_offer`,
/// `expiry_within_buffer`).
pub const WARNINGS_TOTAL: &str = "cleeng_sync_warnings_total";
/// Run duration by connector.
pub const RUN_DURATION: &str = "cleeng_sync_run_duration_seconds";
/// When a run of the connector last succeeded (exit 0: applied, unchanged, no export, dry run).
pub const LAST_SUCCESS: &str = "cleeng_sync_last_success_timestamp_seconds";
/// When the connector's next scheduled run is due.
pub const NEXT_RUN: &str = "cleeng_sync_next_run_timestamp_seconds";
/// S3 requests retried after a failed attempt (throttling, 5xx, a reset), by operation.
pub const S3_RETRIES: &str = "cleeng_sync_s3_retries_total";
/// Downloads resumed after the body was cut mid-way.
pub const DOWNLOAD_RESUMES: &str = "cleeng_sync_download_resumes_total";

/// Billing actions by connector, action and status (`succeeded`, `refused`, `failed`,
/// `unknown`; `dry_run` for checks only).
pub const ACTIONS_TOTAL: &str = "cleeng_sync_actions_total";
/// How long an action took, lookups and retries included, by action.
pub const ACTION_DURATION: &str = "cleeng_sync_action_duration_seconds";
/// Actions left `pending` by a stopped process and turned `unknown` at a start.
pub const ACTIONS_ABANDONED: &str = "cleeng_sync_actions_abandoned_total";
/// Requests to Cleeng's API tried again (refused connection, 429, 503; lookups also
/// after a timeout or a 5xx), by endpoint.
pub const CLEENG_RETRIES: &str = "cleeng_sync_cleeng_retries_total";

/// Refreshes of one subscriber from Cleeng, by connector, trigger (`manual`, `api`,
/// `webhook`, `action`) and outcome.
pub const REFRESHES_TOTAL: &str = "cleeng_sync_refreshes_total";

/// Webhook deliveries answered, by connector and outcome (`accepted`, `redelivered`,
/// `bad_signature`, `malformed`, `too_large`, `wrong_publisher`, `store_unavailable`,
/// `timed_out`; `unknown_connector` without a connector).
pub const WEBHOOKS_TOTAL: &str = "cleeng_sync_webhooks_total";
/// Events waiting in the inbox, by connector.
pub const EVENTS_QUEUED: &str = "cleeng_sync_events_queued";
/// Age of the oldest queued event, by connector (0 with none).
pub const EVENT_LAG: &str = "cleeng_sync_event_lag_seconds";
/// Events that reached a final status, by connector and status.
pub const EVENTS_TOTAL: &str = "cleeng_sync_events_total";

/// Batches POSTed to a change feed destination, by connector, destination and outcome
/// (`delivered`, `failed`, `refused`).
pub const DELIVERIES_TOTAL: &str = "cleeng_sync_deliveries_total";
/// Age of the oldest change not yet delivered to a destination (0: caught up), by
/// connector and destination.
pub const DELIVERY_LAG: &str = "cleeng_sync_delivery_lag_seconds";
/// 1 while a destination is stopped (it refused a batch) until it is resumed.
pub const DELIVERY_STOPPED: &str = "cleeng_sync_delivery_stopped";

/// The S3 operations a source sends, as the SDK names them.
const S3_OPERATIONS: [&str; 2] = ["ListObjectsV2", "GetObject"];

/// The Cleeng endpoints the actions call, as the client labels them (ids left out,
/// so that the label set stays small); a test of the client ties them to its paths.
pub const CLEENG_ENDPOINTS: [&str; 4] = [
    "subscriptions",
    "subscription",
    "subscription_switches",
    "entitlements",
];

/// Installs the Prometheus recorder for this process and returns the handle that
/// renders it, with every metric described (`# HELP`).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    // Runs last from under a second (unchanged) to minutes (millions of rows).
    let buckets = [
        0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RUN_DURATION.into()), &buckets)?
        // An action is a few HTTP requests: tens of milliseconds to the timeouts.
        .set_buckets_for_metric(
            Matcher::Full(ACTION_DURATION.into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        )?
        .install_recorder()?;
    describe_counter!(RUNS_TOTAL, "Runs ended, by connector and outcome");
    describe_counter!(ROWS_TOTAL, "Rows of the runs, by connector and kind");
    describe_counter!(
        WARNINGS_TOTAL,
        "Warnings on valid rows, by connector and code"
    );
    describe_histogram!(RUN_DURATION, Unit::Seconds, "How long a run took");
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "When a run of the connector last succeeded (Unix time)"
    );
    describe_gauge!(
        NEXT_RUN,
        Unit::Seconds,
        "When the connector's next scheduled run is due (Unix time)"
    );
    describe_counter!(
        S3_RETRIES,
        "S3 requests tried again after a failed attempt, by operation"
    );
    describe_counter!(
        DOWNLOAD_RESUMES,
        "Downloads resumed after the body was cut mid-way"
    );
    describe_counter!(
        ACTIONS_TOTAL,
        "Billing actions ended, by connector, action and status"
    );
    describe_histogram!(
        ACTION_DURATION,
        Unit::Seconds,
        "How long a billing action took"
    );
    describe_counter!(
        ACTIONS_ABANDONED,
        "Actions a stopped process left pending, turned unknown"
    );
    describe_counter!(
        REFRESHES_TOTAL,
        "Refreshes of one subscriber from Cleeng, by connector, trigger and outcome"
    );
    describe_counter!(
        CLEENG_RETRIES,
        "Requests to Cleeng's API tried again, by endpoint"
    );
    describe_counter!(
        WEBHOOKS_TOTAL,
        "Webhook deliveries answered, by connector and outcome"
    );
    describe_gauge!(EVENTS_QUEUED, "Webhook events waiting, by connector");
    describe_gauge!(
        EVENT_LAG,
        Unit::Seconds,
        "Age of the oldest queued webhook event, by connector"
    );
    describe_counter!(
        EVENTS_TOTAL,
        "Webhook events that reached a final status, by connector and status"
    );
    describe_counter!(
        DELIVERIES_TOTAL,
        "Batches of changes POSTed to a destination, by connector, destination and outcome"
    );
    describe_gauge!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Age of the oldest change not yet delivered to a destination (0: caught up)"
    );
    describe_gauge!(
        DELIVERY_STOPPED,
        "1 while a destination is stopped after refusing a batch, until resumed"
    );
    Ok(handle)
}

/// Creates every series of these connectors at zero, and the last success as the
/// ledger knows it (`last_success`, by connector), so that a restart does not make a
/// connector look as if it never succeeded.
pub fn register<'a>(connectors: impl IntoIterator<Item = (&'a str, Option<DateTime<Utc>>)>) {
    for (id, last_success) in connectors {
        let connector = || id.to_string();
        for outcome in [
            Outcome::Applied,
            Outcome::Unchanged,
            Outcome::NoExport,
            Outcome::Refused,
            Outcome::Failed,
            Outcome::DryRun,
        ] {
            counter!(RUNS_TOTAL, "connector" => connector(), "outcome" => outcome.as_str())
                .increment(0);
        }
        for kind in ROW_KINDS {
            counter!(ROWS_TOTAL, "connector" => connector(), "kind" => kind).increment(0);
        }
        for code in WarningCode::ALL {
            counter!(WARNINGS_TOTAL, "connector" => connector(), "code" => code.as_str())
                .increment(0);
        }
        let _ = histogram!(RUN_DURATION, "connector" => connector());
        for action in ActionKind::ALL {
            for status in [
                ActionStatus::Succeeded,
                ActionStatus::Refused,
                ActionStatus::Failed,
                ActionStatus::Unknown,
            ] {
                counter!(ACTIONS_TOTAL, "connector" => connector(), "action" => action.as_str(),
                    "status" => status.as_str())
                .increment(0);
            }
        }
        for outcome in WebhookOutcome::ALL {
            counter!(WEBHOOKS_TOTAL, "connector" => connector(), "outcome" => outcome.as_str())
                .increment(0);
        }
        for status in EventStatus::ALL.into_iter().skip(1) {
            counter!(EVENTS_TOTAL, "connector" => connector(), "status" => status.as_str())
                .increment(0);
        }
        gauge!(EVENTS_QUEUED, "connector" => connector()).set(0.0);
        gauge!(EVENT_LAG, "connector" => connector()).set(0.0);
        for trigger in ["manual", "api", "action", "webhook"] {
            for outcome in RefreshOutcome::ALL {
                counter!(REFRESHES_TOTAL, "connector" => connector(), "trigger" => trigger,
                    "outcome" => outcome.as_str())
                .increment(0);
            }
        }
        if let Some(at) = last_success {
            gauge!(LAST_SUCCESS, "connector" => connector()).set(at.timestamp() as f64);
        }
    }
    for action in ActionKind::ALL {
        let _ = histogram!(ACTION_DURATION, "action" => action.as_str());
    }
    for operation in S3_OPERATIONS {
        counter!(S3_RETRIES, "operation" => operation).increment(0);
    }
    for endpoint in CLEENG_ENDPOINTS {
        counter!(CLEENG_RETRIES, "endpoint" => endpoint).increment(0);
    }
    counter!(WEBHOOKS_TOTAL, "connector" => "", "outcome" => WebhookOutcome::UnknownConnector.as_str())
        .increment(0);
    counter!(DOWNLOAD_RESUMES).increment(0);
    counter!(ACTIONS_ABANDONED).increment(0);
}

/// The kinds of `cleeng_sync_rows_total`.
const ROW_KINDS: [&str; 8] = [
    "read",
    "valid",
    "rejected",
    "inserted",
    "updated",
    "unchanged",
    "removed",
    "superseded",
];

/// A run ended.
pub fn run_finished(report: &RunReport, finished_at: DateTime<Utc>) {
    let connector = report.connector.clone();
    counter!(RUNS_TOTAL, "connector" => connector.clone(), "outcome" => report.outcome.as_str())
        .increment(1);
    let (rows, changes) = (report.rows, report.changes);
    let counts = [
        rows.read,
        rows.valid,
        rows.rejected,
        changes.inserted,
        changes.updated,
        changes.unchanged,
        changes.removed,
        changes.superseded,
    ];
    for (kind, n) in ROW_KINDS.into_iter().zip(counts) {
        counter!(ROWS_TOTAL, "connector" => connector.clone(), "kind" => kind).increment(n);
    }
    for (code, n) in report.warnings.iter() {
        counter!(WARNINGS_TOTAL, "connector" => connector.clone(), "code" => code.as_str())
            .increment(n);
    }
    histogram!(RUN_DURATION, "connector" => connector.clone())
        .record(report.duration_ms as f64 / 1000.0);
    if matches!(
        report.outcome,
        Outcome::Applied | Outcome::Unchanged | Outcome::NoExport | Outcome::DryRun
    ) {
        gauge!(LAST_SUCCESS, "connector" => connector).set(finished_at.timestamp() as f64);
    }
}

/// The connector's next scheduled run is due at `at`.
pub fn next_run(connector: &str, at: DateTime<Utc>) {
    gauge!(NEXT_RUN, "connector" => connector.to_string()).set(at.timestamp() as f64);
}

/// An S3 request is being tried again.
pub fn s3_retry(operation: &str) {
    counter!(S3_RETRIES, "operation" => operation.to_string()).increment(1);
}

/// A download cut mid-way is being resumed.
pub fn download_resumed() {
    counter!(DOWNLOAD_RESUMES).increment(1);
}

/// An action ended.
pub fn action_finished(
    connector: &str,
    action: ActionKind,
    status: ActionStatus,
    took: std::time::Duration,
) {
    counter!(ACTIONS_TOTAL, "connector" => connector.to_string(), "action" => action.as_str(),
        "status" => status.as_str())
    .increment(1);
    histogram!(ACTION_DURATION, "action" => action.as_str()).record(took.as_secs_f64());
}

/// A pending action of a stopped process was turned `unknown`.
pub fn action_abandoned() {
    counter!(ACTIONS_ABANDONED).increment(1);
}

/// A refresh ended.
pub fn refresh_finished(connector: &str, source: LiveSource, outcome: RefreshOutcome) {
    counter!(REFRESHES_TOTAL, "connector" => connector.to_string(), "trigger" => source.trigger(),
        "outcome" => outcome.as_str())
    .increment(1);
}

/// A request to Cleeng is being tried again.
pub fn cleeng_retry(endpoint: &'static str) {
    counter!(CLEENG_RETRIES, "endpoint" => endpoint).increment(1);
}

/// A webhook delivery was answered; `None` for a path of no configured connector.
pub fn webhook_answered(connector: Option<&str>, outcome: WebhookOutcome) {
    let connector = connector.unwrap_or_default().to_string();
    counter!(WEBHOOKS_TOTAL, "connector" => connector, "outcome" => outcome.as_str()).increment(1);
}

/// The connector's inbox: events waiting, and the age of the oldest.
pub fn inbox(connector: &str, queued: u64, lag_seconds: f64) {
    gauge!(EVENTS_QUEUED, "connector" => connector.to_string()).set(queued as f64);
    gauge!(EVENT_LAG, "connector" => connector.to_string()).set(lag_seconds);
}

/// Webhook events reached a final status.
pub fn events_ended(connector: &str, status: EventStatus, n: u64) {
    counter!(EVENTS_TOTAL, "connector" => connector.to_string(), "status" => status.as_str())
        .increment(n);
}

/// Creates a destination's series at zero.
pub fn register_destination(connector: &str, destination: &str) {
    for outcome in DeliveryOutcome::ALL {
        counter!(DELIVERIES_TOTAL, "connector" => connector.to_string(),
            "destination" => destination.to_string(), "outcome" => outcome.as_str())
        .increment(0);
    }
    delivery_state(connector, destination, 0.0, false);
}

/// A batch was POSTed to a destination.
pub fn delivery_attempted(connector: &str, destination: &str, outcome: DeliveryOutcome) {
    counter!(DELIVERIES_TOTAL, "connector" => connector.to_string(),
        "destination" => destination.to_string(), "outcome" => outcome.as_str())
    .increment(1);
}

/// A destination's lag and whether it is stopped, as the store has them.
pub fn delivery_state(connector: &str, destination: &str, lag_seconds: f64, stopped: bool) {
    let labels = [
        ("connector", connector.to_string()),
        ("destination", destination.to_string()),
    ];
    gauge!(DELIVERY_LAG, &labels).set(lag_seconds);
    gauge!(DELIVERY_STOPPED, &labels).set(if stopped { 1.0 } else { 0.0 });
}
