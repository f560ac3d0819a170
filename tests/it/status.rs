//! The status page as the person on call sees it: the daemon's `GET /` and a run's
//! page, over HTTP and in headless Chromium, with and without the admin token.

use crate::browser::Browser;
use crate::common::{Env, csv, rows};
use crate::daemon::cron_twelve_hours_away;
use crate::daemon_harness::{Daemon, TOKEN};
use chrono::{TimeDelta, Utc};
use cleeng_sync::action::{ActionBody, ActionRequest, ActionStatus, ActionTrigger};
use cleeng_sync::store::{ActionEnd, Begun, NewAction};
use cleeng_sync::with_store;
use std::path::PathBuf;

/// The refused night's rejected subscribers: an impossible expiry date each.
fn late(i: u32) -> String {
    format!("late{i}@example.com,S000000001_PL,2099-02-30,active,1,,,,,,")
}

/// A ledger of three runs, oldest first: applied, failed (the folder was gone), and
/// refused (20 of 70 rows rejected); then a billing action whose answer was lost, a
/// switch that succeeded and was confirmed, and a coupon that succeeded. Returns the
/// config and the refused run's id.
async fn three_nights(env: &Env) -> (PathBuf, i64) {
    let exports = env.path("exports");
    env.write("exports/cleeng-2026-11-20.csv", csv(rows(0..50)));
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            r#"
[schedule]
cron = "{}"
timezone = "America/Los_Angeles"
[server]
listen = "127.0.0.1:0"
[[connector]]
id = "default"
source = "{}"
"#,
            cron_twelve_hours_away(),
            exports.display()
        ),
    );
    let config_arg = config.display().to_string();
    let sync = |extra: &[&str]| {
        let mut args = vec!["--config", &config_arg, "sync", "--json"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        out.json()
    };
    assert_eq!(sync(&[])["outcome"], "applied");
    let gone = env.path("gone").display().to_string();
    assert_eq!(sync(&["--source", &gone])["outcome"], "failed");
    let mut night = rows(0..50);
    night.extend((0..20).map(late));
    env.write("exports/cleeng-2026-11-21.csv", csv(night));
    let refused = sync(&[]);
    assert_eq!(refused["outcome"], "refused", "{refused}");

    with_store!(env.store().await, store => {
        let now = Utc::now();
        let lost = "the request was sent and its answer was lost (timed out after 10s); Cleeng \
            may or may not have applied it: check the subscription in the Cleeng dashboard \
            before anything else, and never replay it blindly";
        for (email, status, body) in [
            ("user3@example.com", ActionStatus::Unknown,
                serde_json::json!({"action": "apply_coupon", "coupon_code": "WINTER"})),
            ("user4-with-a-rather-long-address@subscribers.example.com", ActionStatus::Succeeded,
                serde_json::json!({"action": "switch_subscription", "to_offer_id": "S100000001_PL"})),
            ("user5@example.com", ActionStatus::Succeeded,
                serde_json::json!({"action": "apply_coupon", "coupon_code": "WINTER"})),
        ] {
            let mut body = body;
            body["email"] = serde_json::json!(email);
            let body: ActionBody = serde_json::from_value(body).expect("an action body");
            let request = ActionRequest::new("default", body).expect("a request");
            let new = NewAction {
                request: &request,
                key: None,
                trigger: ActionTrigger::Api,
                owner: "test",
                lease_until: now + TimeDelta::minutes(5),
                now,
            };
            let Begun::New(id) = store.begin_action(&new).await.expect("begin") else {
                panic!("a new action");
            };
            let end = ActionEnd {
                status,
                http_status: None,
                code: (status == ActionStatus::Unknown).then(|| "answer_lost".to_string()),
                message: Some(if status == ActionStatus::Unknown { lost } else { "Cleeng applied it (HTTP 200)" }.to_string()),
                subscription_id: Some(7),
                attempts: 1,
                at: now,
            };
            assert!(store.finish_action(id, "test", &end).await.expect("finish"));
            if email.starts_with("user4") {
                assert!(store.confirm_action(id, now).await.expect("confirm"));
            }
        }
    });
    (config, refused["run_id"].as_i64().expect("run_id"))
}

async fn started(env: &Env) -> (Daemon, i64) {
    let (config, refused) = three_nights(env).await;
    let daemon = env.daemon(&config, Some(TOKEN));
    daemon.ready().await;
    (daemon, refused)
}

/// Every email-looking word of a page that is not masked (`u***@example.com`).
fn unmasked_emails(page: &str) -> Vec<String> {
    page.split(|c: char| c.is_whitespace() || "<>\"'(),;".contains(c))
        .filter(|word| word.contains("@example.com") && !word.contains("***@"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn without_the_token_the_page_shows_counts_and_masked_emails_only() {
    let env = Env::new();
    let (daemon, refused) = started(&env).await;

    let (status, page) = daemon.get_text("/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-connector="default""#), "{page}");
    assert!(page.contains("The last run was refused"), "{page}");
    assert!(page.contains("max_rejected_ratio"), "{page}");
    assert!(page.contains(r#"data-outcome="failed""#), "{page}");
    assert!(page.contains(r#"<tr class="unknown""#), "{page}");
    assert!(
        page.contains("u***@example.com"),
        "the actions, masked: {page}"
    );
    assert_eq!(unmasked_emails(&page), Vec::<String>::new());

    let (status, run) = daemon.get_text(&format!("/runs/{refused}"), None).await;
    assert_eq!(status, 200);
    assert!(run.contains(r#"data-reason="invalid_date""#), "{run}");
    assert!(run.contains("l***@example.com"), "{run}");
    assert_eq!(unmasked_emails(&run), Vec::<String>::new());

    // A wrong token changes nothing; the form's POST says so and sets nothing.
    let (_, wrong) = daemon
        .get_text(&format!("/runs/{refused}"), Some("not-the-token"))
        .await;
    assert_eq!(unmasked_emails(&wrong), Vec::<String>::new());
    let answer = daemon
        .post_form("/unlock", &[("token", "not-the-token"), ("back", "/")])
        .await;
    assert_eq!(answer.status(), 401);
    assert!(answer.headers().get("set-cookie").is_none());

    assert_eq!(daemon.get_text("/runs/999999", None).await.0, 404);
}

#[tokio::test]
async fn with_the_token_the_run_page_shows_whose_rows_were_rejected() {
    let env = Env::new();
    let (daemon, refused) = started(&env).await;
    let path = format!("/runs/{refused}");

    let (_, run) = daemon.get_text(&path, Some(TOKEN)).await;
    let shown = unmasked_emails(&run);
    let expected: Vec<String> = (0..5).map(|i| format!("late{i}@example.com")).collect();
    assert_eq!(
        shown, expected,
        "the first five records of the group: {run}"
    );
    let (_, front) = daemon.get_text("/", Some(TOKEN)).await;
    assert!(front.contains("user3@example.com"), "{front}");

    // The form: the right token sets a cookie that shows them, and is not the token.
    let answer = daemon
        .post_form("/unlock", &[("token", TOKEN), ("back", path.as_str())])
        .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], path.as_str());
    let cookie = answer.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let (_, with_cookie) = daemon.get_with(&path, &[("cookie", &pair)]).await;
    assert_eq!(unmasked_emails(&with_cookie), expected);

    // The cookie's value opens nothing of the API.
    let value = pair.split_once('=').map(|(_, v)| v).unwrap_or_default();
    let (status, _) = daemon
        .get("/v1/connectors/default/subscribers", Some(value))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_page_renders_in_chromium_with_its_banner_chart_and_groups() {
    let env = Env::new();
    let (daemon, refused) = started(&env).await;
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let browser = Browser::start().await;

    browser.open(&format!("{}/", daemon.base)).await;
    let card = "section.connector[data-connector=default]";
    assert!(
        browser
            .text(&format!("{card} h2"))
            .await
            .contains("default")
    );
    assert_eq!(
        browser
            .text(&format!("{card} .last-run [data-outcome]"))
            .await,
        "refused"
    );
    let banner = browser.text(&format!("{card} .banner.refused")).await;
    assert!(banner.contains("The last run was refused"), "{banner}");
    let next = browser.text(&format!("{card} .next-run")).await;
    assert!(next.contains("UTC") && next.contains("(in "), "{next}");
    assert!(next.contains("PST") || next.contains("PDT"), "{next}");
    // Three runs drawn in each of the five strips.
    assert_eq!(
        browser
            .all(&format!("{card} svg.chart g.series"))
            .await
            .len(),
        5
    );
    assert_eq!(
        browser.all(&format!("{card} svg.chart rect")).await.len(),
        5 * 3
    );
    let outcomes = browser.texts("table.runs [data-outcome]").await;
    assert_eq!(outcomes, ["refused", "failed", "applied"]);
    assert_eq!(browser.all("table.actions tr.unknown").await.len(), 1);
    for email in browser.texts("table.actions td.email").await {
        assert!(email.contains("***@"), "{email}");
    }
    // The last applied export, not the last run that exited 0.
    let applied = browser.text(&format!("{card} .last-applied")).await;
    assert!(applied.starts_with("run 1 "), "{applied}");
    // Confirmation and times as the runs' are written, newest action first.
    let statuses = browser.texts("table.actions td.status").await;
    assert!(
        statuses[0].contains("a coupon shows nothing"),
        "{statuses:?}"
    );
    assert!(
        statuses[1].contains("confirmed") && statuses[1].contains("UTC"),
        "{statuses:?}"
    );
    for requested in browser.texts("table.actions tbody td:nth-child(2)").await {
        assert!(
            requested.contains(" UTC")
                && (requested.contains("ago") || requested.contains("just now")),
            "{requested}"
        );
    }
    // Nothing scrolls sideways on a laptop's screen.
    browser.resize(1280, 1000).await;
    browser.open(&format!("{}/", daemon.base)).await;
    let overflow = browser
        .script(
            "return [...document.querySelectorAll('.scroll')].map(e => e.scrollWidth - e.clientWidth)\
             .concat([document.documentElement.scrollWidth - document.documentElement.clientWidth])",
        )
        .await;
    let overflow: Vec<i64> = serde_json::from_value(overflow).expect("widths");
    assert!(
        overflow.len() >= 3 && overflow.iter().all(|o| *o <= 0),
        "{overflow:?}"
    );
    browser.screenshot(&target.join("status-page.png")).await;
    // An action's id leads to its page.
    browser
        .click("table.actions tbody tr:nth-child(2) td.id a")
        .await;
    let title = browser.text("main h2").await;
    assert!(title.contains("switch_subscription"), "{title}");
    assert!(browser.text("dd.confirmed").await.contains("confirmed"));

    browser
        .open(&format!("{}/runs/{refused}", daemon.base))
        .await;
    let group = "section.rejections[data-reason=invalid_date]";
    assert!(browser.text(&format!("{group} h3")).await.contains("20"));
    let masked = browser.texts(&format!("{group} td.email")).await;
    assert_eq!(masked.len(), 5);
    assert!(masked.iter().all(|e| e.starts_with("l***@")), "{masked:?}");
    browser
        .screenshot(&target.join("status-run-page.png"))
        .await;

    // The token typed into the page's form shows the emails, and only to this browser.
    browser
        .type_into("form.token input[name=token]", TOKEN)
        .await;
    browser.click("form.token button").await;
    browser.wait_for_text("form.token", "Showing emails").await;
    assert!(browser.url().await.ends_with(&format!("/runs/{refused}")));
    let shown = browser.texts(&format!("{group} td.email")).await;
    assert_eq!(shown[0], "late0@example.com", "{shown:?}");
    browser.click("form.token button").await;
    browser
        .wait_for_text("form.token", "Emails are masked")
        .await;
    browser.close().await;
}

/// The metric names a file's queries use: every `cleeng_sync_...` word in it.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cleeng_sync_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

#[tokio::test]
async fn the_alerts_and_the_dashboard_query_only_metrics_the_daemon_exports() {
    let env = Env::new();
    let (config, _) = three_nights(&env).await;
    // A change feed destination (nothing listens there): its series exist from the start.
    let mut text = std::fs::read_to_string(&config).expect("the config");
    text.push_str(
        "\n[[connector.deliver]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/in\"\n\
         secret_env = \"CRM_SECRET\"\n",
    );
    std::fs::write(&config, text).expect("write the config");
    let daemon = env.daemon_with(
        &config,
        Some(TOKEN),
        &[("CRM_SECRET", "crm-secret-0123456789abcdef")],
    );
    daemon.ready().await;
    let (status, body) = daemon
        .post("/v1/connectors/default/sync", Some(TOKEN))
        .await;
    assert_eq!(status, 202, "{body}");
    let run = daemon
        .finished_run(body["run_id"].as_i64().expect("run_id"))
        .await;
    assert_eq!(run["outcome"], "refused", "{run}");
    let (status, metrics) = daemon.get_text("/metrics", None).await;
    assert_eq!(status, 200);
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for file in ["prometheus/alerts.yml", "grafana/cleeng-sync.json"] {
        let text = std::fs::read_to_string(root.join(file)).expect("read the file");
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{file} uses {used:?}");
        let missing: Vec<&String> = used
            .iter()
            .filter(|name| !exported.contains(name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} queries {missing:?}, which /metrics does not export:\n{metrics}"
        );
    }
    // The counters exist before anything happened, and the last success survived
    // the restart: the ledger's applied run is in it though this daemon only refused.
    assert!(
        metrics.contains(r#"cleeng_sync_actions_abandoned_total 0"#),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with(r#"cleeng_sync_last_success_timestamp_seconds{connector="default"}"#)),
        "{metrics}"
    );
}
