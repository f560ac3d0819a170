//! S3 on a bad day, through the fault proxy: throttling, resets, cut and stalled
//! bodies, an endpoint that does not answer. A run either applies the whole export or
//! fails, applies nothing and says why; the next healthy run applies.

use crate::common::*;
use crate::proxy::{Fault, FaultProxy, Rule, Target};
use std::time::{Duration, Instant};

/// A config with one connector on `source` and these `[connector.s3]` and connector
/// settings (TOML lines).
fn config(env: &Env, source: &str, s3: &str, connector: &str) -> String {
    let path = env.write(
        "cleeng-sync.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{source}\"\n{connector}\n[connector.s3]\n{s3}\n"
        ),
    );
    path.display().to_string()
}

/// `sync --json` with the config, through `endpoint`: exit code, report, stderr.
fn sync_via(env: &Env, config: &str, endpoint: &str) -> (i32, serde_json::Value, String) {
    sync_tuned_via(env, config, endpoint, &[])
}

/// [`sync_via`] with these variables set (the store's limits).
fn sync_tuned_via(
    env: &Env,
    config: &str,
    endpoint: &str,
    vars: &[(&str, &str)],
) -> (i32, serde_json::Value, String) {
    let mut command = env.command(&["--config", config, "sync", "--json"]);
    command.env("AWS_ENDPOINT_URL", endpoint);
    command.envs(vars.iter().copied());
    let out = output(command);
    let report = out.json();
    (out.code, report, out.stderr)
}

/// A run through a proxy with `rule` that must fail (exit 1): its report, how long it
/// took, and how many faults the proxy dealt.
fn failed_through(env: &Env, config: &str, rule: Rule) -> (serde_json::Value, Duration, usize) {
    let proxy = FaultProxy::start(&[rule]);
    let started = Instant::now();
    let (code, report, stderr) = sync_via(env, config, &proxy.url());
    let took = started.elapsed();
    assert_eq!(outcome(code, &report), (1, "failed"), "{report}\n{stderr}");
    (report, took, proxy.count(rule.target).1)
}

/// The night after `rows(1..201)`: every coupon changed, and user 500 new.
fn changed_export() -> String {
    let mut changed: Vec<String> = rows(1..201)
        .into_iter()
        .map(|r| r.replace("COUPON", "NEW"))
        .collect();
    changed.push(row(500));
    csv(changed)
}

/// A proxy that cuts every download after `after` bytes.
fn cut_every_time(after: usize) -> FaultProxy {
    FaultProxy::start(&[Rule {
        target: Target::Get,
        fault: Fault::Cut { after },
        times: None,
    }])
}

#[tokio::test]
async fn throttling_and_resets_on_the_first_requests_are_retried_and_logged() {
    let bucket = Bucket::new().await;
    bucket.put("cleeng/2026-01-01.csv", csv(rows(1..51))).await;
    let env = Env::new();
    let config = config(&env, &bucket.url("cleeng/"), "", "");
    let proxy = FaultProxy::start(&[
        Rule {
            target: Target::List,
            fault: Fault::SlowDown,
            times: Some(2),
        },
        Rule {
            target: Target::Get,
            fault: Fault::Reset,
            times: Some(1),
        },
    ]);

    let (code, report, stderr) = sync_via(&env, &config, &proxy.url());
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}\n{stderr}");
    assert_eq!(counts(&report), ([50, 50, 0], [50, 0, 0, 0]));
    assert_eq!(proxy.count(Target::List), (3, 2));
    assert_eq!(proxy.count(Target::Get), (2, 1));
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retrying S3 request"))
        .collect();
    assert_eq!(retries.len(), 3, "{stderr}");
    assert!(retries[0].contains("ListObjectsV2") && retries[0].contains("HTTP 503"));
    assert!(retries[2].contains("GetObject"), "{}", retries[2]);
}

#[tokio::test]
async fn a_body_cut_once_is_resumed_and_cut_every_time_fails_and_applies_nothing() {
    let bucket = Bucket::new().await;
    let first = csv(rows(1..201));
    bucket.put("cleeng/2026-01-01.csv", first.clone()).await;
    let env = Env::new();
    let config = config(&env, &bucket.url("cleeng/"), "resume_attempts = 2", "");

    // Cut once, half-way: resumed from there, the whole export applied.
    let proxy = FaultProxy::start(&[Rule {
        target: Target::Get,
        fault: Fault::Cut {
            after: first.len() / 2,
        },
        times: Some(1),
    }]);
    let (code, report, stderr) = sync_via(&env, &config, &proxy.url());
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}\n{stderr}");
    assert_eq!(counts(&report), ([200, 200, 0], [200, 0, 0, 0]));
    assert_eq!(report["object"]["size"], first.len());
    assert_eq!(proxy.count(Target::Get), (2, 1));
    assert!(stderr.contains("download cut; resuming"), "{stderr}");
    let before = env.traits("user50@example.com").await.expect("stored");

    // A changed export, cut every time: failed, exit 1, nothing of it applied.
    let changed = changed_export();
    bucket.put("cleeng/2026-01-02.csv", changed.clone()).await;
    let proxy = cut_every_time(changed.len() / 3);
    let (code, report, stderr) = sync_via(&env, &config, &proxy.url());
    assert_eq!(outcome(code, &report), (1, "failed"), "{report}\n{stderr}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("after resuming 2 time(s) (connector.s3.resume_attempts)"),
        "{message}"
    );
    assert_eq!(proxy.count(Target::Get), (3, 3));
    assert_eq!(env.traits("user50@example.com").await.unwrap(), before);
    assert_eq!(env.traits("user500@example.com").await, None);
    assert_eq!(env.present().await, 200);

    // The network is back: the next run applies the changed export.
    let (code, report, stderr) = sync_via(&env, &config, LOCALSTACK);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}\n{stderr}");
    assert_eq!(counts(&report).1, [1, 200, 0, 0]);
    let after = env.traits("user50@example.com").await.unwrap();
    assert_eq!(after.coupon_code.as_deref(), Some("NEW50"));
}

/// Past the held set's limit by its export alone, a run reads the stored hashes beside
/// the export. Cut every time, it fails with that read started on a task of its own,
/// applies nothing and leaves nothing in the way of the next run.
#[tokio::test]
async fn a_body_cut_while_the_hashes_are_read_beside_it_fails_and_applies_nothing() {
    let bucket = Bucket::new().await;
    bucket.put("cleeng/2026-01-01.csv", csv(rows(1..201))).await;
    let env = Env::new();
    let config = config(&env, &bucket.url("cleeng/"), "resume_attempts = 0", "");
    // 200 rows of some 110 bytes: past a limit of 50 by the export's size.
    let tuned = [
        ("CLEENG_SYNC_MAX_HELD", "50"),
        ("CLEENG_SYNC_PASS_HELD", "70"),
    ];
    let (code, report, stderr) = sync_tuned_via(&env, &config, LOCALSTACK, &tuned);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}\n{stderr}");
    let before = env.traits("user50@example.com").await.expect("stored");

    let changed = changed_export();
    bucket.put("cleeng/2026-01-02.csv", changed.clone()).await;
    let proxy = cut_every_time(changed.len() / 2);
    let (code, report, stderr) = sync_tuned_via(&env, &config, &proxy.url(), &tuned);
    assert_eq!(outcome(code, &report), (1, "failed"), "{report}\n{stderr}");
    assert_eq!(env.traits("user50@example.com").await, Some(before));
    assert_eq!(env.traits("user500@example.com").await, None);

    let (code, report, stderr) = sync_tuned_via(&env, &config, LOCALSTACK, &tuned);
    assert_eq!(outcome(code, &report), (0, "applied"), "{report}\n{stderr}");
    assert_eq!(counts(&report).1, [1, 200, 0, 0]);
    let after = env.traits("user50@example.com").await.expect("stored");
    assert_eq!(after.coupon_code.as_deref(), Some("NEW50"));
}

#[tokio::test]
async fn a_stalled_body_fails_the_run_within_the_configured_bound() {
    let bucket = Bucket::new().await;
    bucket.put("cleeng/2026-01-01.csv", csv(rows(1..201))).await;
    let env = Env::new();
    let stall = Rule {
        target: Target::Get,
        fault: Fault::Stall { after: 100 },
        times: None,
    };

    // The stall detector cuts the body after stall_timeout; resumed once, it stalls
    // again, and the run fails.
    let config_a = config(
        &env,
        &bucket.url("cleeng/"),
        "stall_timeout = \"1s\"\nresume_attempts = 1",
        "run_timeout = \"20s\"",
    );
    let (report, took, faults) = failed_through(&env, &config_a, stall);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(faults, 2, "the first request and one resumption");
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains("after resuming 1 time(s)"),
        "{report}"
    );

    // A stall the detector would wait out is bounded by run_timeout.
    let config_b = config(
        &env,
        &bucket.url("cleeng/"),
        "stall_timeout = \"1h\"",
        "run_timeout = \"2s\"",
    );
    let (report, took, _) = failed_through(&env, &config_b, stall);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains("run_timeout (2s)"),
        "{report}"
    );
    assert_eq!(env.present().await, 0, "nothing applied");
    let runs = env.runs(10).await;
    assert!(
        runs.iter().all(|r| r.report.outcome.as_str() == "failed"),
        "{runs:?}"
    );
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_or_store_fails_with_which_and_where() {
    let env = Env::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = config(
        &env,
        "s3://cleeng-exports/cleeng/",
        "max_attempts = 2\nrequest_timeout = \"2s\"",
        "",
    );
    let (code, report, stderr) = sync_via(&env, &config, &format!("http://127.0.0.1:{closed}"));
    assert_eq!(outcome(code, &report), (1, "failed"), "{report}\n{stderr}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("cannot list s3://cleeng-exports/cleeng/"),
        "{message}"
    );
    assert!(message.contains("onnection refused"), "{message}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = env.run(&[
        "sync",
        "--source",
        &folder(env.dir.path()),
        "--store",
        "sqlite:///nonexistent/folder/traits.db",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot open the store sqlite:///nonexistent/folder/traits.db"),
        "{}",
        out.stderr
    );
    // SQLite's own advice, not a server's.
    assert!(
        out.stderr.contains("check that the file's folder exists")
            && !out.stderr.contains("sslmode"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}
