//! The metrics the daemon exposes on `/metrics`: their names, and one function per
//! thing that happens. Without an installed recorder (the `sync` command) they cost
//! nothing.

use crate::run::{Outcome, RunReport};
use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Runs by connector and outcome.
pub const RUNS_TOTAL: &str = "cleeng_sync_runs_total";
/// Rows by connector and kind (read, valid, rejected, inserted, updated, unchanged, removed).
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

/// Installs the Prometheus recorder for this process and returns the handle that
/// renders it.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    // Runs last from under a second (unchanged) to minutes (millions of rows).
    let buckets = [
        0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RUN_DURATION.into()), &buckets)?
        // An action is a few HTTP requests: tens of milliseconds to the timeouts.
        .set_buckets_for_metric(
            Matcher::Full(ACTION_DURATION.into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        )?
        .install_recorder()
}

/// A run ended.
pub fn run_finished(report: &RunReport, finished_at: DateTime<Utc>) {
    let connector = report.connector.clone();
    counter!(RUNS_TOTAL, "connector" => connector.clone(), "outcome" => report.outcome.as_str())
        .increment(1);
    let (rows, changes) = (report.rows, report.changes);
    for (kind, n) in [
        ("read", rows.read),
        ("valid", rows.valid),
        ("rejected", rows.rejected),
        ("inserted", changes.inserted),
        ("updated", changes.updated),
        ("unchanged", changes.unchanged),
        ("removed", changes.removed),
    ] {
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
    action: crate::cleeng::ActionKind,
    status: crate::cleeng::ActionStatus,
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

/// A request to Cleeng is being tried again.
pub fn cleeng_retry(endpoint: &'static str) {
    counter!(CLEENG_RETRIES, "endpoint" => endpoint).increment(1);
}
