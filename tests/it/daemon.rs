//! `cleeng-sync daemon` as it is deployed: the binary, a config file, HTTP, signals.

use crate::common::{Env, csv, rows};
use crate::daemon_harness::TOKEN;
use chrono::{TimeDelta, Timelike, Utc};
use chrono_tz::America::Los_Angeles;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SYNC: &str = "/v1/connectors/default/sync";

/// A daily cron at the local time twelve hours from now: it is never due while a
/// test runs, whatever the date, and it gives the daemon a next run.
pub(crate) fn cron_twelve_hours_away() -> String {
    let at = (Utc::now() + TimeDelta::hours(12)).with_timezone(&Los_Angeles);
    format!("0 {} {} * * *", at.minute(), at.hour())
}

/// A config with one folder connector; the store comes from the env.
fn config(env: &Env, exports: &Path, cron: &str, grace: &str) -> PathBuf {
    env.write(
        "cleeng-sync.toml",
        format!(
            r#"
[schedule]
cron = "{cron}"
timezone = "America/Los_Angeles"
[server]
listen = "127.0.0.1:0"
[daemon]
shutdown_grace = "{grace}"
[[connector]]
id = "default"
source = "{}"
"#,
            exports.display()
        ),
    )
}

/// An export of `n` subscribers in the env's `exports/` folder.
fn exports(env: &Env, n: u32) -> PathBuf {
    env.write("exports/cleeng-2026-11-21.csv", csv(rows(0..n)));
    env.path("exports")
}

#[tokio::test]
async fn a_run_requested_over_http_is_applied_and_reported() {
    let env = Env::new();
    let exports = exports(&env, 30_000);
    let daemon = env.daemon(
        &config(&env, &exports, &cron_twelve_hours_away(), "60s"),
        Some(TOKEN),
    );
    assert_eq!(daemon.get("/healthz", None).await.0, 200);
    daemon.ready().await;

    for token in [None, Some("wrong-token")] {
        let (status, body) = daemon.post(SYNC, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    assert_eq!(daemon.get("/v1/runs", None).await.1, Value::Array(vec![]));

    let (status, body) = daemon.post(SYNC, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_i64().expect("run_id");
    // 30,000 rows take a while: a second request finds the first in flight.
    let (status, body) = daemon.post(SYNC, Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        daemon.post("/v1/connectors/nope/sync", Some(TOKEN)).await.0,
        404
    );

    let run = daemon.finished_run(run_id).await;
    assert_eq!(run["outcome"], "applied", "{run}");
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["rows"]["read"], 30_000);
    assert_eq!(run["changes"]["inserted"], 30_000);
    assert_eq!(run["rejections"], Value::Array(vec![]));
    let (_, runs) = daemon.get("/v1/runs", None).await;
    let listed: Vec<(i64, &str)> = runs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["run_id"].as_i64().unwrap_or(0),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(listed, [(run_id, "applied")]);

    let path = "/v1/connectors/default/traits/User7@Example.com";
    assert_eq!(daemon.get(path, None).await.0, 401);
    let (status, traits) = daemon.get(path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{traits}");
    assert_eq!(traits["offer_id"], "S000000007_PL");
    assert_eq!(traits["first_seen_run"], run_id);
    let (status, body) = daemon
        .get(
            "/v1/connectors/default/traits/nobody@example.com",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| !e.contains("nobody@")),
        "{body}"
    );

    // The run counter by outcome, and the next scheduled run, about 12 h away.
    // The ledger commits just before the run is counted, and the metrics of a run are
    // written one after another: wait for the last of them.
    let applied = r#"cleeng_sync_last_success_timestamp_seconds{connector="default"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = daemon.get("/metrics", None).await;
        assert_eq!(status, 200);
        let metrics = metrics.as_str().expect("text").to_string();
        if metrics.contains(applied) {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {applied} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = metrics.as_str();
    assert!(
        metrics.contains(r#"cleeng_sync_runs_total{connector="default",outcome="applied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cleeng_sync_rows_total{connector="default",kind="inserted"} 30000"#),
        "{metrics}"
    );
    let next = metric(
        metrics,
        r#"cleeng_sync_next_run_timestamp_seconds{connector="default"}"#,
    );
    let in_hours = (next - Utc::now().timestamp() as f64) / 3600.0;
    assert!((10.0..14.0).contains(&in_hours), "next run in {in_hours} h");
    assert!(
        metric(
            metrics,
            r#"cleeng_sync_last_success_timestamp_seconds{connector="default"}"#
        ) > 0.0
    );
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn without_a_token_runs_cannot_be_requested() {
    let env = Env::new();
    let exports = exports(&env, 10);
    let daemon = env.daemon(
        &config(&env, &exports, &cron_twelve_hours_away(), "60s"),
        None,
    );
    let (status, body) = daemon.post(SYNC, Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("CLEENG_SYNC_SERVER_TOKEN"))
    );
    assert_eq!(daemon.get("/v1/runs", None).await.1, Value::Array(vec![]));
}

#[tokio::test]
async fn sigterm_lets_a_run_in_flight_finish_within_the_grace_period() {
    let env = Env::new();
    let exports = exports(&env, 40_000);
    let mut daemon = env.daemon(
        &config(&env, &exports, &cron_twelve_hours_away(), "5m"),
        Some(TOKEN),
    );
    let (status, body) = daemon.post(SYNC, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.terminate().await, 0, "{}", daemon.logs());

    let runs = env.run(&["runs", "--json"]).json();
    assert_eq!(runs[0]["outcome"], "applied", "{runs}");
    assert_eq!(env.present().await, 40_000);
}

#[tokio::test]
async fn sigterm_after_the_grace_period_rolls_the_run_back_and_the_next_run_applies() {
    let env = Env::new();
    let exports = exports(&env, 60_000);
    let mut daemon = env.daemon(
        &config(&env, &exports, &cron_twelve_hours_away(), "0s"),
        Some(TOKEN),
    );
    let (status, body) = daemon.post(SYNC, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(daemon.terminate().await, 0, "{}", daemon.logs());

    // Either untouched (rolled back) or, on a machine fast enough to finish first,
    // fully applied; never in between, and the ledger says which.
    let runs = env.run(&["runs", "--json"]).json();
    let stored = env.present().await;
    match runs[0]["outcome"].as_str() {
        Some("failed") => {
            assert_eq!(stored, 0, "{runs}");
            assert!(
                runs[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("shutdown")),
                "{runs}"
            );
        }
        Some("applied") => assert_eq!(stored, 60_000),
        _ => panic!("unexpected ledger: {runs}"),
    }

    let (code, report) = env.sync(&crate::common::folder(&exports), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(env.present().await, 60_000);
}

#[tokio::test]
async fn two_daemons_on_one_store_never_run_a_scheduled_time_twice() {
    let env = Env::new();
    let exports = exports(&env, 10);
    // Every second: both daemons wake at the same instants and race for each time.
    let config = config(&env, &exports, "* * * * * *", "10s");
    let mut first = env.daemon(&config, None);
    let mut second = env.daemon(&config, None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(first.terminate().await, 0, "{}", first.logs());
    assert_eq!(second.terminate().await, 0, "{}", second.logs());

    let runs = env.run(&["runs", "--json", "--limit", "1000"]).json();
    let mut times: Vec<&str> = runs
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .map(|r| r["scheduled_for"].as_str().expect("scheduled_for"))
        .collect();
    assert!(times.len() >= 3, "{runs}");
    let ran = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), ran, "a scheduled time ran twice: {runs}");
}
