//! The change feed delivered to HTTP destinations, end to end on both stores: receivers
//! on 127.0.0.1 that fail the first three times, answer 500 forever, refuse with a 400,
//! are slow past the timeout, or die mid-batch; a daemon killed with a batch on its way.
//! Each change arrives at least once and in order, signed with the receiver's secret,
//! and a destination's cursor only moves past batches it acknowledged.

use crate::common::{Env, csv, row, written_at};
use crate::daemon_harness::Daemon;
use crate::webhooks::metric;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cleeng_sync::change::Cursor;
use cleeng_sync::deliver::sign::Secret;
use cleeng_sync::store::DeliveryState;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A secret no receiver is configured with: no batch verifies with it.
const STRANGER: &[u8] = b"a-secret-of-nobody-0123456789";

/// How a receiver answers its `n`-th request (from 1).
#[derive(Clone, Copy)]
enum Behaviour {
    /// 500 for the first `k`, then 200.
    FailFirst(u32),
    /// 500 always.
    Broken,
    /// 200 for the first, then 400 until `healed`.
    RefuseSecond,
    /// The first answered 200 only after this long (past the timeout), then at once.
    SlowFirst(Duration),
    /// The first held until `healed`, then 200.
    HangFirst,
}

/// One batch as a receiver got it.
#[derive(Debug, Clone)]
struct Received {
    ids: Vec<i64>,
    /// Its signature verified with the receiver's secret...
    verified: bool,
    /// ...and with a stranger's.
    verified_by_stranger: bool,
    connector: String,
    kinds: Vec<String>,
    /// The timestamp, the signature and the body, as they arrived.
    raw: (String, String, Vec<u8>),
}

/// A receiver on 127.0.0.1.
#[derive(Clone)]
struct Receiver {
    url: String,
    secret: &'static str,
    seen: Arc<Mutex<Vec<Received>>>,
    healed: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(behaviour: Behaviour, secret: &'static str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let receiver = Receiver {
            url: format!("http://127.0.0.1:{port}/changes"),
            secret,
            seen: Arc::default(),
            healed: Arc::default(),
        };
        receiver.serve(listener, behaviour);
        receiver
    }

    /// One that reads a little of its first request, then dies (its socket and its
    /// listener closed) and comes back on the same port a moment later.
    async fn dying_mid_batch(secret: &'static str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let receiver = Receiver {
            url: format!("http://{address}/changes"),
            secret,
            seen: Arc::default(),
            healed: Arc::default(),
        };
        let again = receiver.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.expect("the first batch");
            let mut some = [0u8; 64];
            let _ = socket.read(&mut some).await;
            drop(socket);
            drop(listener);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .expect("bind the same port again");
            again.serve(listener, Behaviour::FailFirst(0));
        });
        receiver
    }

    fn serve(&self, listener: tokio::net::TcpListener, behaviour: Behaviour) {
        let me = self.clone();
        let count = Arc::new(AtomicU32::new(0));
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (me, count) = (me.clone(), Arc::clone(&count));
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                me.record(&headers, &body);
                me.answer(behaviour, n).await
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    fn record(&self, headers: &HeaderMap, body: &[u8]) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (timestamp, signature) = (
            header("x-cleeng-sync-timestamp"),
            header("x-cleeng-sync-signature"),
        );
        let verifies = |secret: &[u8]| {
            Secret::new(secret).is_some_and(|s| s.verify(&timestamp, body, &signature))
        };
        let batch: Value = serde_json::from_slice(body).expect("a JSON batch");
        let changes = batch["changes"].as_array().cloned().unwrap_or_default();
        self.seen.lock().expect("seen").push(Received {
            ids: changes.iter().filter_map(|c| c["id"].as_i64()).collect(),
            verified: verifies(self.secret.as_bytes()),
            verified_by_stranger: verifies(STRANGER),
            connector: batch["connector"].as_str().unwrap_or_default().to_string(),
            kinds: changes
                .iter()
                .flat_map(|c| c["kinds"].as_array().cloned().unwrap_or_default())
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            raw: (timestamp.clone(), signature.clone(), body.to_vec()),
        });
    }

    async fn answer(&self, behaviour: Behaviour, n: u32) -> (StatusCode, &'static str) {
        let status = match behaviour {
            Behaviour::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
            Behaviour::FailFirst(_) => StatusCode::OK,
            Behaviour::Broken => StatusCode::INTERNAL_SERVER_ERROR,
            Behaviour::RefuseSecond if n == 1 || self.healed.load(Ordering::SeqCst) => {
                StatusCode::OK
            }
            Behaviour::RefuseSecond => {
                // A receiver that echoes what it refused.
                return (StatusCode::BAD_REQUEST, "no such user: user1@example.com");
            }
            Behaviour::SlowFirst(wait) => {
                if n == 1 {
                    tokio::time::sleep(wait).await;
                }
                StatusCode::OK
            }
            Behaviour::HangFirst => {
                while n == 1 && !self.healed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                StatusCode::OK
            }
        };
        (status, "")
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("seen").clone()
    }

    /// The ids in the order they first arrived.
    fn firsts(&self) -> Vec<i64> {
        let mut firsts: Vec<i64> = Vec::new();
        for batch in self.seen() {
            for id in batch.ids {
                if !firsts.contains(&id) {
                    firsts.push(id);
                }
            }
        }
        firsts
    }

    /// Every batch signed with this receiver's secret only, from the default connector,
    /// in id order and at most `max` long.
    fn assert_signed_batches(&self, max: usize) {
        for batch in self.seen() {
            assert!(batch.verified, "{}: {batch:?}", self.url);
            assert!(!batch.verified_by_stranger, "{batch:?}");
            assert_eq!(batch.connector, "default");
            assert!(!batch.ids.is_empty() && batch.ids.len() <= max, "{batch:?}");
            assert!(batch.ids.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
        }
    }
}

/// Subscriber `i`'s row with its status flipped (active <-> stopped).
fn flipped(i: u32) -> String {
    let line = row(i);
    if line.contains(",active,") {
        line.replacen(",active,", ",stopped,", 1)
    } else {
        line.replacen(",stopped,", ",active,", 1)
    }
}

/// The export of a night: subscribers 1-40, the first `flips` of them flipped.
fn night(env: &Env, n: u64, flips: u32) -> String {
    let rows = (1..=40).map(|i| if i <= flips { flipped(i) } else { row(i) });
    let path = env.write(&format!("exports/night-{n}.csv"), csv(rows));
    written_at(
        &path,
        SystemTime::now() - Duration::from_secs(3600 - n * 60),
    );
    env.path("exports").display().to_string()
}

/// A baseline night and a night of 12 changes; the folder.
fn twelve_changes(env: &Env) -> String {
    let folder = night(env, 1, 0);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    night(env, 2, 12);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    folder
}

async fn feed(env: &Env) -> Vec<i64> {
    let opened = env.store().await;
    cleeng_sync::with_store!(opened, store => {
        store.changes("default", &[], Cursor::default(), 1000).await.expect("the feed")
    })
    .changes
    .iter()
    .map(|c| c.id)
    .collect()
}

async fn states(env: &Env) -> Vec<DeliveryState> {
    let opened = env.store().await;
    cleeng_sync::with_store!(opened, store => store.deliveries(Some("default")).await.expect("states"))
}

async fn state(env: &Env, name: &str) -> DeliveryState {
    states(env)
        .await
        .into_iter()
        .find(|s| s.destination == name)
        .unwrap_or_else(|| panic!("no state of {name}"))
}

/// One `[[connector.deliver]]` section.
fn destination(name: &str, receiver: &Receiver, env_var: &str, more: &str) -> String {
    format!(
        "\n[[connector.deliver]]\nname = \"{name}\"\nurl = \"{}\"\nsecret_env = \"{env_var}\"\n\
         max_batch = 5\npoll = \"200ms\"\ntimeout = \"1s\"\nlease = \"3s\"\n{more}\n",
        receiver.url
    )
}

fn config(env: &Env, folder: &str, destinations: &[String]) -> std::path::PathBuf {
    env.write(
        "cleeng-sync.toml",
        format!(
            "[schedule]\ncron = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [[connector]]\nid = \"default\"\nsource = \"{folder}\"\n{}",
            crate::daemon::cron_twelve_hours_away(),
            destinations.concat()
        ),
    )
}

/// Waits until `done` holds, or fails with what `show` says.
async fn until(what: &str, daemon: &Daemon, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} never happened; the daemon's logs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Receivers answer on this runtime while the test blocks on the binary: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_each_receiver_at_least_once_in_order_whatever_it_does() {
    let env = Env::new();
    let folder = twelve_changes(&env);
    let all = feed(&env).await;
    assert_eq!(all.len(), 12);
    let flaky = Receiver::start(Behaviour::FailFirst(3), "flaky-secret-0123456789").await;
    let broken = Receiver::start(Behaviour::Broken, "broken-secret-0123456789").await;
    let refuser = Receiver::start(Behaviour::RefuseSecond, "refuser-secret-012345678").await;
    let slow = Receiver::start(
        Behaviour::SlowFirst(Duration::from_millis(2500)),
        "slow-secret-0123456789ab",
    )
    .await;
    let dying = Receiver::dying_mid_batch("dying-secret-0123456789a").await;
    let later = Receiver::start(Behaviour::FailFirst(0), "later-secret-0123456789a").await;
    let start = "from = \"start\"";
    let config = config(
        &env,
        &folder,
        &[
            destination("flaky", &flaky, "FLAKY_SECRET", start),
            destination("broken", &broken, "BROKEN_SECRET", start),
            destination("refuser", &refuser, "REFUSER_SECRET", start),
            destination("slow", &slow, "SLOW_SECRET", start),
            destination("dying", &dying, "DYING_SECRET", start),
            // From now (the default), and only one kind.
            destination("later", &later, "LATER_SECRET", "kinds = [\"stopped\"]"),
        ],
    );
    let daemon = env.daemon_with(
        &config,
        None,
        &[
            ("FLAKY_SECRET", flaky.secret),
            ("BROKEN_SECRET", broken.secret),
            ("REFUSER_SECRET", refuser.secret),
            ("SLOW_SECRET", slow.secret),
            ("DYING_SECRET", dying.secret),
            ("LATER_SECRET", later.secret),
        ],
    );
    for receiver in [&flaky, &slow, &dying] {
        until("every change delivered", &daemon, async || {
            receiver.firsts() == all
        })
        .await;
        receiver.assert_signed_batches(5);
    }
    assert_eq!(flaky.seen().len(), 6, "three refused, then three batches");
    // The refuser took the first batch and refused the second: stopped, its cursor
    // past the first batch only.
    until("the refuser stopped", &daemon, async || {
        state(&env, "refuser").await.stopped_at.is_some()
    })
    .await;
    let stopped = state(&env, "refuser").await;
    assert_eq!(stopped.cursor, all[4], "{stopped:?}");
    assert_eq!(stopped.delivered, 5);
    let error = stopped.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("400"), "{stopped:?}");
    assert!(
        error.contains("u***@example.com") && !error.contains("user1@"),
        "what a receiver echoes is masked: {stopped:?}"
    );
    assert!(!daemon.logs().contains("user1@example.com"), "nor logged");
    let refuser_labels = ["connector=\"default\"", "destination=\"refuser\""];
    until("the stopped gauge", &daemon, async || {
        metric(&daemon, "cleeng_sync_delivery_stopped", &refuser_labels).await == 1.0
    })
    .await;
    let refused = [refuser_labels[0], refuser_labels[1], "outcome=\"refused\""];
    assert_eq!(
        metric(&daemon, "cleeng_sync_deliveries_total", &refused).await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        refuser.seen().len(),
        2,
        "nothing sent to a stopped destination"
    );
    let status = env.run(&[
        "--config",
        &config.display().to_string(),
        "deliver",
        "status",
    ]);
    assert!(status.stdout.contains("STOPPED"), "{status:?}");
    let (_, page) = daemon.get_text("/", None).await;
    let card = page
        .split("data-destination=\"refuser\"")
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .unwrap_or_else(|| panic!("no refuser on the status page: {page}"));
    assert!(card.contains("stopped"), "{card}");
    assert!(
        card.contains("cleeng-sync deliver resume refuser"),
        "{card}"
    );
    // The stored error's own words, not "400": the card's timestamps may hold those digits.
    assert!(
        !card.contains("no such user") && !card.contains("example.com"),
        "the error is for the operator only: {card}"
    );

    // Resumed once it is fixed: the refused batch first, then the rest.
    refuser.healed.store(true, Ordering::SeqCst);
    let resumed = env.run(&[
        "--config",
        &config.display().to_string(),
        "deliver",
        "resume",
        "refuser",
    ]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    until("the refuser caught up", &daemon, async || {
        refuser.firsts() == all
    })
    .await;
    refuser.assert_signed_batches(5);
    assert_eq!(
        refuser.seen()[1].ids,
        refuser.seen()[2].ids,
        "the refused batch again"
    );

    // The broken one has acknowledged nothing: its cursor has not moved.
    let broken_state = state(&env, "broken").await;
    assert_eq!(broken_state.cursor, 0, "{broken_state:?}");
    assert!(broken_state.failures >= 3, "{broken_state:?}");
    assert!(
        broken.seen().iter().all(|b| b.ids == all[..5]),
        "the first batch again"
    );
    let broken_labels = ["connector=\"default\"", "destination=\"broken\""];
    let failed = [broken_labels[0], broken_labels[1], "outcome=\"failed\""];
    assert!(metric(&daemon, "cleeng_sync_deliveries_total", &failed).await >= 3.0);
    assert!(metric(&daemon, "cleeng_sync_delivery_lag_seconds", &broken_labels).await > 0.0);

    // `later` started after the existing changes; a night written by another process
    // reaches it, of its kind only.
    assert!(later.seen().is_empty());
    night(&env, 3, 15);
    assert_eq!(env.sync(&folder, &[]).0, 0);
    let all = feed(&env).await;
    assert_eq!(all.len(), 15);
    until("the new night delivered", &daemon, async || {
        !later.seen().is_empty()
    })
    .await;
    until("the new night delivered", &daemon, async || {
        flaky.firsts() == all
    })
    .await;
    later.assert_signed_batches(5);
    let got = later.seen();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].kinds,
        ["stopped"],
        "user14 stopped; 13 and 15 reactivated"
    );
    assert_eq!(state(&env, "later").await.cursor, all[14]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_with_a_batch_on_its_way_loses_nothing() {
    let env = Env::new();
    let folder = twelve_changes(&env);
    let all = feed(&env).await;
    let hanging = Receiver::start(Behaviour::HangFirst, "hanging-secret-012345678").await;
    let mut section = destination("crm", &hanging, "CRM_SECRET", "from = \"start\"");
    section = section.replace("timeout = \"1s\"", "timeout = \"2s\"");
    let config = config(&env, &folder, &[section]);
    let vars = [("CRM_SECRET", hanging.secret)];
    let mut first = env.daemon_with(&config, None, &vars);
    until("the first batch on its way", &first, async || {
        !hanging.seen().is_empty()
    })
    .await;
    first.kill9();
    let held = state(&env, "crm").await;
    assert_eq!(held.cursor, 0, "nothing acknowledged: {held:?}");
    hanging.healed.store(true, Ordering::SeqCst);
    let second = env.daemon_with(&config, None, &vars);
    until("every change delivered", &second, async || {
        hanging.firsts() == all
    })
    .await;
    hanging.assert_signed_batches(5);
    let (timestamp, signature, body) = hanging.seen()[1].raw.clone();
    let docs_check = |secret: &str| python_verifies(secret, &timestamp, &signature, &body);
    assert!(
        docs_check(hanging.secret),
        "the docs' example verifies a delivery"
    );
    assert!(
        !docs_check("hanging-secret-012345679"),
        "and refuses another secret's"
    );
    assert_eq!(
        hanging.seen()[0].ids,
        hanging.seen()[1].ids,
        "the killed batch again"
    );
    until("the cursor at the end", &second, async || {
        state(&env, "crm").await.cursor == all[11]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_store_send_each_batch_once_in_order() {
    let env = Env::new();
    let folder = twelve_changes(&env);
    let all = feed(&env).await;
    let receiver = Receiver::start(Behaviour::FailFirst(0), "shared-secret-0123456789").await;
    let config = config(
        &env,
        &folder,
        &[destination(
            "crm",
            &receiver,
            "CRM_SECRET",
            "from = \"start\"",
        )],
    );
    let vars = [("CRM_SECRET", receiver.secret)];
    let (first, second) = (
        env.daemon_with(&config, None, &vars),
        env.daemon_with(&config, None, &vars),
    );
    until("every change delivered", &first, async || {
        receiver.firsts() == all
    })
    .await;
    // Both poll every 200 ms: without the lease both would send the first batch.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sent: Vec<i64> = receiver.seen().into_iter().flat_map(|b| b.ids).collect();
    assert_eq!(sent, all, "each change once, in order; {}", second.logs());
    assert_eq!(state(&env, "crm").await.cursor, all[11]);
}

#[test]
fn a_bad_destination_is_refused_with_its_key_and_an_unknown_one_is_not_resumed() {
    let env = Env::new();
    let folder = night(&env, 1, 0);
    let receiver_url = "http://127.0.0.1:9/changes";
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{folder}\"\n\
             [[connector.deliver]]\nname = \"crm\"\nurl = \"{receiver_url}\"\nsecret_env = \"CRM_SECRET\"\n\
             kinds = [\"stoped\"]\n"
        ),
    );
    let out = env.run(&[
        "--config",
        &config.display().to_string(),
        "deliver",
        "status",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("deliver[0].kinds"), "{out:?}");
    assert!(
        out.stderr.contains("stopped"),
        "the kinds are listed: {out:?}"
    );
    let resume = env.run(&["deliver", "resume", "crm"]);
    assert_eq!(resume.code, 2, "no such destination: {resume:?}");
}

#[test]
fn check_says_whether_each_destination_has_its_secret_and_prints_none() {
    let env = Env::new();
    let folder = night(&env, 1, 0);
    let config = env.write(
        "cleeng-sync.toml",
        format!(
            "[[connector]]\nid = \"default\"\nsource = \"{folder}\"\n\
             [[connector.deliver]]\nname = \"crm\"\nurl = \"https://crm.example.com/in?key=k1\"\n\
             secret_env = \"CRM_SECRET\"\n\
             [[connector.deliver]]\nname = \"dwh\"\nurl = \"https://dwh.example.com/in\"\n\
             secret_env = \"DWH_SECRET\"\n"
        ),
    );
    let mut command = env.command(&["--config", &config.display().to_string(), "check"]);
    command
        .env("CRM_SECRET", "crm-secret-0123456789abcdef")
        .env("DWH_SECRET", "tiny-1");
    let out = crate::common::output(command);
    assert!(
        out.stdout.contains(
            "deliver crm: ok, batches to https://crm.example.com/in are signed with the secret in CRM_SECRET"
        ),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("deliver dwh: FAILED: DWH_SECRET is unset or shorter than 16 bytes"),
        "{out:?}"
    );
    assert_eq!(out.code, 1, "{out:?}");
    for secret in ["crm-secret-0123456789abcdef", "tiny-1", "key=k1"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{out:?}"
        );
    }
}

/// Runs the Python example of `docs/changes.md` ("Verifying a delivery") on a delivery.
fn python_verifies(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/changes.md"),
    )
    .expect("docs/changes.md");
    let example = docs
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a Python example in docs/changes.md");
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::write(dir.path().join("body"), body).expect("write the body");
    let script = format!(
        "{example}\nimport sys\nheaders = {{\"X-Cleeng-Sync-Timestamp\": sys.argv[2], \
         \"X-Cleeng-Sync-Signature\": sys.argv[3]}}\n\
         body = open(sys.argv[4], \"rb\").read()\n\
         sys.exit(0 if verified(sys.argv[1].encode(), headers, body) else 1)\n"
    );
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([secret, timestamp, signature])
        .arg(dir.path().join("body"))
        .status()
        .expect("python3");
    status.success()
}
