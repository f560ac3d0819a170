//! The webhook benchmark: how many deliveries a second the listener accepts and commits,
//! with their latency (p50, p99), beside a floor (the same inserts sent straight to the
//! store through the library, no HTTP, no signature), and how many Cleeng lookups the
//! worker makes for N events of M subscribers. `bench/webhooks.sh` runs it on both stores
//! and writes `bench/RESULTS-webhooks.md`.
//!
//! ```sh
//! cargo run --release --example webhook-bench -- --binary target/release/cleeng-sync \
//!     --store sqlite:///tmp/hooks.db [--events 20000] [--subscribers 200] [--concurrency 32]
//! ```

#[path = "../tests/it/standin.rs"]
mod standin;

use cleeng_sync::server::webhooks::verify::Signer;
use cleeng_sync::store::{NewEvent, open};
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-webhook-secret-0123456789abcdef";
const HEADER: &str = "x-cleeng-signature";

struct Args {
    binary: String,
    store: String,
    events: u32,
    subscribers: u32,
    concurrency: usize,
}

fn args() -> Args {
    let mut args = Args {
        binary: "target/release/cleeng-sync".into(),
        store: String::new(),
        events: 20_000,
        subscribers: 200,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--binary" => args.binary = value,
            "--store" => args.store = value,
            "--events" => args.events = value.parse().unwrap_or(args.events),
            "--subscribers" => args.subscribers = value.parse().unwrap_or(args.subscribers),
            "--concurrency" => args.concurrency = value.parse().unwrap_or(args.concurrency),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.store.is_empty(), "--store URL is required");
    args
}

/// Latencies, sorted, and the wall time they took.
struct Timing {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Timing {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

fn body(n: u32, subscribers: u32) -> Vec<u8> {
    json!({"broadcasterId": 558186818, "topic": "subscriptionRenewed",
        "data": {"customerEmail": format!("user{}@example.com", n % subscribers),
            "customerId": 10, "subscriptionId": "1", "transactionId": format!("T{n}")}})
    .to_string()
    .into_bytes()
}

/// Starts the daemon and returns it with its webhook listener's address.
fn daemon(args: &Args, config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(&args.binary)
        .args([
            "--config",
            &config.display().to_string(),
            "--log-format",
            "json",
            "daemon",
        ])
        .env("CLEENG_SYNC_STORE", &args.store)
        .env("CLEENG_SYNC_WEBHOOK_SECRET", SECRET)
        .env("CLEENG_SYNC_PUBLISHER_TOKEN", standin::TOKEN)
        .env(
            "RUST_LOG",
            "warn,cleeng_sync=warn,cleeng_sync::commands=info",
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut hooks = None;
    for line in lines.by_ref().map_while(Result::ok) {
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(address) = event["webhook_address"].as_str() {
            hooks = Some(format!("http://{address}"));
        }
        if event["address"].is_string() {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, hooks.expect("the daemon's webhook listener"))
}

async fn listener(args: &Args, hooks: &str) -> Timing {
    let signer = Signer::new(SECRET.as_bytes(), HEADER, "bench").expect("secret");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");
    let url = format!("{hooks}/v1/webhooks/cleeng/default");
    timed(args, |n| {
        let body = body(n, args.subscribers);
        let signature = signer.sign_hex(&body);
        let (http, url) = (&http, &url);
        async move {
            let response = http
                .post(url)
                .header(HEADER, signature)
                .body(body)
                .send()
                .await
                .expect("POST");
            assert_eq!(response.status(), 200, "a delivery was refused");
            let _ = response.bytes().await;
        }
    })
    .await
}

/// Runs `one(n)` for every event, `concurrency` at a time, timing each (what `one` does
/// before it returns its future is not timed) and the whole.
async fn timed<F, Fut>(args: &Args, one: F) -> Timing
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..args.events)
        .map(|n| {
            let work = one(n);
            async move {
                let sent = Instant::now();
                work.await;
                sent.elapsed()
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    latencies.sort();
    Timing { latencies, wall }
}

async fn floor(args: &Args) -> Timing {
    let opened = open(&args.store).await.expect("the store");
    cleeng_sync::with_store!(opened, store => {
        timed(args, |n| {
                let body = body(n, args.subscribers);
                let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &body));
                let email = format!("user{}@example.com", n % args.subscribers);
                let store = &store;
                async move {
                    let now = chrono::Utc::now();
                    store
                        .enqueue_event(&NewEvent {
                            connector: "floor",
                            topic: "subscriptionRenewed",
                            body_sha256: &sha,
                            received_at: now,
                            email: Some(&email),
                            customer_id: Some(10),
                            subscription_id: Some(1),
                            skipped: None,
                            due: now,
                        })
                        .await
                        .expect("an insert");
                }
            })
            .await
    })
}

/// Waits until the daemon's worker has ended every event; the lookups Cleeng saw.
async fn lookups(args: &Args, cleeng: &standin::StandIn) -> (usize, Duration) {
    let opened = open(&args.store).await.expect("the store");
    let started = Instant::now();
    cleeng_sync::with_store!(opened, store => loop {
        let since = chrono::Utc::now() - chrono::TimeDelta::days(1);
        let inbox = store.inbox("default", since).await.expect("the inbox");
        if inbox.queued == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the inbox never emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    (cleeng.seen().len(), started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("a folder");
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports");
    let cleeng = standin::StandIn::start();
    let mut csv = String::from("email,offer_id,expiry_date,status,payment_method_id,external_id\n");
    for i in 0..args.subscribers {
        csv.push_str(&format!(
            "user{i}@example.com,S{i:09}_PL,2099-01-01,active,1,ext-{i}\n"
        ));
        let mut sub = standin::subscription(
            i64::from(i) + 1,
            &format!("user{i}@example.com"),
            &format!("S{i:09}_PL"),
        );
        sub.external_id = Some(format!("ext-{i}"));
        cleeng.subscription(sub);
    }
    std::fs::write(exports.join("export.csv"), csv).expect("the export");
    let config = dir.path().join("bench.toml");
    let mut file = std::fs::File::create(&config).expect("config");
    write!(
        file,
        r#"[schedule]
cron = "0 0 0 1 1 *"
catch_up = "1s"
[server]
listen = "127.0.0.1:0"
[webhooks]
listen = "127.0.0.1:0"
max_concurrent = 256
[[connector]]
id = "default"
source = "{exports}"
[connector.cleeng]
api_url = "{api}"
[connector.webhooks]
signature_header = "{HEADER}"
coalesce = "1s"
max_requests_per_second = 200
"#,
        exports = exports.display(),
        api = cleeng.api_url,
    )
    .expect("write the config");
    drop(file);
    let synced = Command::new(&args.binary)
        .args(["--config", &config.display().to_string(), "sync", "--json"])
        .env("CLEENG_SYNC_STORE", &args.store)
        .output()
        .expect("sync");
    assert!(synced.status.success(), "{synced:?}");

    let (mut child, hooks) = daemon(&args, &config);
    let accepted = listener(&args, &hooks).await;
    let (lookups, drained) = lookups(&args, &cleeng).await;
    let _ = child.kill();
    let _ = child.wait();
    let floor = floor(&args).await;

    let store = if args.store.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    println!(
        "| {store} | listener | {:.0} | {:.1} | {:.1} | {} events, {} at once |",
        accepted.per_second(),
        accepted.quantile(0.5),
        accepted.quantile(0.99),
        args.events,
        args.concurrency
    );
    println!(
        "| {store} | floor (straight inserts) | {:.0} | {:.1} | {:.1} | the same inserts through the library |",
        floor.per_second(),
        floor.quantile(0.5),
        floor.quantile(0.99),
    );
    println!(
        "| {store} | lookups | {lookups} | | | for {} events of {} subscribers (coalesce 1 s), inbox emptied {:.1} s after the last delivery |",
        args.events,
        args.subscribers,
        drained.as_secs_f64()
    );
}
