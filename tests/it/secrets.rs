//! Secrets never leave the process: not in logs at the most verbose level (every
//! target at trace), not in any command's output, not in the admin API, not in errors.
//! Always on PostgreSQL, whose URL carries a password.

use crate::common::*;
use crate::daemon_harness::TOKEN;
use std::process::Command;

const ACCESS_KEY_ID: &str = "AKIAZZLEAKCANARY0001";
const SECRET_ACCESS_KEY: &str = "SecretAccessKeyLeakCanary0002";
const SESSION_TOKEN: &str = "SessionTokenLeakCanary0003";
const DB_PASSWORD: &str = "DbPasswordLeakCanary0004";

/// The command with every secret configured and every log switched on.
fn loud(env: &Env, args: &[&str]) -> Command {
    let mut command = env.command(args);
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("CLEENG_SYNC_SERVER_TOKEN", TOKEN)
        .env("RUST_LOG", "trace");
    command
}

/// Panics if a subscriber's email is in a log unmasked (it is personal data).
fn assert_no_email(what: &str, logs: &str) {
    if let Some(line) = logs
        .lines()
        .find(|l| l.contains("@example.com") && !l.contains("***@"))
    {
        panic!("{what} shows an email unmasked:\n{line}");
    }
}

/// Panics, naming the secret and the line, if any secret is in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        DB_PASSWORD,
        TOKEN,
    ] {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} shows the secret {secret:?}:\n{line}");
        }
    }
}

#[tokio::test]
async fn no_output_stream_of_any_command_shows_a_secret() {
    let bucket = Bucket::new().await;
    bucket.put("cleeng/2026-01-01.csv", csv(rows(1..21))).await;
    let env = Env::postgres().with_password(DB_PASSWORD);
    let source = bucket.url("cleeng/");
    let missing = format!("s3://{}-missing/", bucket.name);
    let runs: &[&[&str]] = &[
        &["-vv", "sync", "--source", &source, "--json"],
        &[
            "-vv",
            "--log-format",
            "pretty",
            "sync",
            "--source",
            &source,
            "--force",
        ],
        &["-vv", "check", "--source", &source],
        &["-vv", "sync", "--source", &missing, "--json"],
        &["-vv", "check", "--source", &missing],
        &["-vv", "runs"],
        &["-vv", "runs", "--json"],
        &["-vv", "traits", "user7@example.com", "--json"],
        &[
            "-vv",
            "check",
            "--source",
            &source,
            "--store",
            "postgres://app:DbPasswordLeakCanary0004@127.0.0.1:1/x",
        ],
    ];
    let mut applied = false;
    for args in runs {
        let out = output(loud(&env, args));
        let what = format!("`cleeng-sync {}`", args.join(" "));
        assert!(
            out.stderr.lines().count() > 5,
            "{what} logged little:\n{}",
            out.stderr
        );
        assert_no_secret(&format!("{what} stdout"), &out.stdout);
        assert_no_secret(&format!("{what} stderr"), &out.stderr);
        assert_no_email(&format!("{what} stderr"), &out.stderr);
        applied |= out.stdout.contains("\"outcome\":\"applied\"");
    }
    assert!(applied, "the first run applied, so the paths with data ran");
}

#[tokio::test]
async fn the_daemon_shows_no_secret_in_its_logs_or_its_api() {
    let env = Env::postgres().with_password(DB_PASSWORD);
    env.write("exports/a.csv", csv(rows(1..21)));
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [[connector]]\nid = \"default\"\nsource = \"{}\"\n",
            env.path("exports").display()
        ),
    );
    let mut daemon = env.daemon_with(
        &config,
        Some(TOKEN),
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ("RUST_LOG", "trace"),
        ],
    );
    daemon.ready().await;
    let (status, started) = daemon
        .post("/v1/connectors/default/sync", Some(TOKEN))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_i64().expect("run id");
    let run = daemon.finished_run(id).await;
    assert_eq!(run["outcome"], "applied", "{run}");
    for path in [
        "/v1/runs",
        "/metrics",
        "/readyz",
        "/v1/connectors/default/traits/user7@example.com",
    ] {
        let (status, body) = daemon.get(path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_no_secret(path, &body.to_string());
    }
    assert_eq!(daemon.terminate().await, 0);
    let logs = daemon.logs();
    assert!(logs.lines().count() > 20, "trace logs: {logs}");
    assert_no_secret("the daemon's logs", &logs);
    assert_no_email("the daemon's logs", &logs);
}
