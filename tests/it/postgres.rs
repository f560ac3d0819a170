//! What only PostgreSQL promises: one run per connector across processes, and replicas
//! that share the schedule. These tests always use PostgreSQL, in either pass.

use crate::common::{Env, csv, folder, rows};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test]
async fn two_syncs_of_one_connector_started_together_apply_once() {
    let env = Env::postgres();
    env.write("exports/cleeng.csv", csv(rows(0..40_000)));
    let source = folder(&env.path("exports"));
    let start = || {
        env.command(&["sync", "--source", &source, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sync")
    };
    let (first, second) = (start(), start());
    let mut outputs: Vec<_> = [first, second]
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait"))
        .collect();
    outputs.sort_by_key(|o| o.status.code());
    let (winner, loser) = (&outputs[0], &outputs[1]);

    assert_eq!(winner.status.code(), Some(0), "{winner:?}");
    let report: Value = serde_json::from_slice(&winner.stdout).expect("JSON report");
    assert_eq!(report["outcome"], "applied");
    assert_eq!(loser.status.code(), Some(1), "{loser:?}");
    assert!(loser.stdout.is_empty(), "{loser:?}");
    let message = String::from_utf8_lossy(&loser.stderr);
    assert!(
        message.contains("another run of connector \"default\" is in flight"),
        "{message}"
    );

    // One run's result: one ledger row, every subscriber once.
    let runs = env.run(&["runs", "--json"]).json();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["outcome"], "applied");
    assert_eq!(env.present().await, 40_000);
}

#[tokio::test]
async fn a_replica_killed_during_its_run_leaves_the_next_scheduled_time_to_the_other() {
    let env = Env::postgres();
    env.write("exports/cleeng.csv", csv(rows(0..60_000)));
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[schedule]\ncron = \"*/4 * * * * *\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [[connector]]\nid = \"default\"\nsource = \"{}\"\n",
            env.path("exports").display()
        ),
    );
    let mut replicas = [env.daemon(&config, None), env.daemon(&config, None)];

    // Whichever replica starts the first scheduled run is killed while it runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(i) = replicas
            .iter()
            .position(|d| d.logs().contains("run started"))
        {
            break i;
        }
        assert!(Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    replicas[holder].kill9();
    let survivor = &mut replicas[1 - holder];

    // The survivor runs a later scheduled time and applies the export in full.
    let deadline = Instant::now() + Duration::from_secs(90);
    let runs = loop {
        let runs = env.run(&["runs", "--json", "--limit", "100"]).json();
        let applied = runs
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["outcome"] == "applied");
        if applied {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "never applied: {runs}\n{}",
            survivor.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(survivor.terminate().await, 0);
    assert_eq!(env.present().await, 60_000);

    let runs = runs.as_array().expect("array");
    let mut times: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["scheduled_for"].as_str())
        .collect();
    let total = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), total, "a scheduled time ran twice: {runs:?}");
}

#[test]
fn an_unreachable_server_or_unknown_role_is_a_clear_error_without_the_password() {
    let env = Env::sqlite();
    for (url, expected) in [
        (
            "postgres://app:hunter2@127.0.0.1:1/traits",
            "cannot open the store postgres://app:***@127.0.0.1:1/traits",
        ),
        (
            "postgres://nobody:hunter2@127.0.0.1:5432/postgres",
            "role \"nobody\" does not exist",
        ),
    ] {
        let out = env.run(&["runs", "--store", url]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(expected), "{}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }
}
