//! The validated settings, as the rest of the program reads them: one type per section
//! and per adapter (S3, Cleeng), each field explained. Built only by `load.rs`.

use crate::change::ChangeKind;
use crate::export::{DEFAULT_EXPIRY_BUFFER_DAYS, Field, Offers, PastExpiry, Rules, UnmappedOffer};
use crate::run::Mode;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The store used when neither the flags, the environment nor the file name one.
pub const DEFAULT_STORE: &str = "sqlite://cleeng-sync.db";

/// What the command line (and its environment variables) says.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `CLEENG_SYNC_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--store` / `CLEENG_SYNC_STORE`.
    pub store: Option<String>,
    /// `--source` / `CLEENG_SYNC_SOURCE`.
    pub source: Option<String>,
    /// `--connector`: restrict to this connector.
    pub connector: Option<String>,
}

/// The validated settings of one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store URL (`sqlite://...`, `postgres://...`).
    pub store_url: String,
    /// The daemon's schedule.
    pub schedule: Schedule,
    /// The admin server.
    pub server: Server,
    /// How the daemon runs its work.
    pub daemon: Daemon,
    /// The webhook listener; `None`: no listener.
    pub webhooks: Option<Webhooks>,
    /// The connectors this invocation works on (after `--connector`).
    pub connectors: Vec<Connector>,
}

/// When the daemon runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Cron expression (sec min hour dom mon dow), its times read in `timezone`.
    pub cron: cron::Schedule,
    /// The zone of the cron's wall-clock times, and of "today" for expiry dates.
    pub timezone: Tz,
    /// How old a missed scheduled time may be and still run at start-up.
    pub catch_up: Duration,
}

/// The admin HTTP server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Listen address; loopback by default.
    pub listen: SocketAddr,
}

/// `[webhooks]`: the listener Cleeng delivers webhooks to, on its own socket.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Listen address: the only port meant for the internet.
    pub listen: SocketAddr,
    /// The largest body taken; larger ones are answered 413 unread.
    pub max_body: usize,
    /// How long a request may take to arrive in full (a body that never ends: 408).
    pub request_timeout: Duration,
    /// Requests handled at once; more wait for a slot.
    pub max_concurrent: usize,
}

/// Default of `webhooks.max_body`: Cleeng's events are a few hundred bytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// `[connector.webhooks]`: the connector's webhook endpoint and how its inbox is worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorWebhooks {
    /// The environment variable that holds the shared secret (16-64 bytes).
    pub secret_env: String,
    /// The header that carries the HMAC-SHA256 of the body (hex or base64).
    pub signature_header: String,
    /// Events of another `broadcasterId` are refused (403).
    pub publisher_id: Option<i64>,
    /// Events of one subscriber within this make one refresh: an event waits this long
    /// after it arrives, and its subscriber's later events join its refresh.
    pub coalesce: Duration,
    /// Calls to Cleeng for refreshes per second, and the bucket's burst.
    pub max_requests_per_second: u32,
    /// Refreshes of an event, in all, before it ends `failed`.
    pub max_attempts: u32,
    /// A claimed event its worker has not finished by then is taken again.
    pub lease: Duration,
}

impl ConnectorWebhooks {
    /// The settings with `signature_header` and every default.
    pub fn new(signature_header: &str) -> ConnectorWebhooks {
        ConnectorWebhooks {
            secret_env: "CLEENG_SYNC_WEBHOOK_SECRET".into(),
            signature_header: signature_header.to_string(),
            publisher_id: None,
            coalesce: Duration::from_secs(10),
            max_requests_per_second: 5,
            max_attempts: 5,
            lease: Duration::from_secs(60),
        }
    }
}

/// How the daemon runs its work.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Runs of different connectors that may be in flight at once (one per connector).
    pub max_concurrent_runs: usize,
    /// On SIGTERM/SIGINT, how long a run in flight may take to finish before it is
    /// rolled back.
    pub shutdown_grace: Duration,
}

/// One Cleeng export feed and how to apply it.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Connector id, the key of its traits and runs.
    pub id: String,
    /// Source URL.
    pub source: String,
    /// S3 client settings.
    pub s3: S3Settings,
    /// Snapshot or delta.
    pub mode: Mode,
    /// Refusal thresholds.
    pub guards: Guards,
    /// Header labels of this export for template fields.
    pub columns: BTreeMap<Field, String>,
    /// What to do with expiry dates in the past.
    pub past_expiry: PastExpiry,
    /// Plans and their localized offers; empty when none are configured.
    pub offers: Arc<Offers>,
    /// What a row whose offer the map does not list gets.
    pub unmapped_offer: UnmappedOffer,
    /// Days after today an expiry date is warned about; 0: off.
    pub expiry_buffer_days: u32,
    /// The zone "today" is taken in.
    pub timezone: Tz,
    /// How long the download, check and plan of one export may take; past it the run
    /// fails and applies nothing. (Once the apply has begun it is not interrupted: it
    /// is a database transaction, bounded by the database.)
    pub run_timeout: Duration,
    /// Cleeng's Core API, for the billing actions.
    pub cleeng: CleengSettings,
    /// Its webhook endpoint and inbox; `None`: no endpoint (404).
    pub webhooks: Option<ConnectorWebhooks>,
    /// Days the change feed keeps a change (the daemon prunes older ones daily).
    pub changes_retention_days: u32,
    /// `[[connector.deliver]]`: HTTP destinations of the change feed.
    pub deliver: Vec<Destination>,
}

/// `[connector.cleeng]`: where the billing actions call Cleeng, and with what token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleengSettings {
    /// The Core API 3.1 base URL, without a trailing slash.
    pub api_url: String,
    /// The environment variable that holds the publisher (Broadcaster) token.
    pub token_env: String,
    /// Connecting and waiting for one answer.
    pub timeout: Duration,
    /// Attempts of one request, the first included; only requests Cleeng cannot have
    /// applied are tried again.
    pub max_attempts: u32,
    /// After a succeeded switch or reactivate whose effect the refresh at once does not
    /// show yet (a switch is `pending` at Cleeng first): how long before reading again.
    pub confirm_after: Duration,
    /// Reads of the subscriber to confirm an action, the one at once included.
    pub confirm_reads: u32,
}

impl Default for CleengSettings {
    fn default() -> CleengSettings {
        CleengSettings {
            api_url: "https://api.cleeng.com/3.1".into(),
            token_env: "CLEENG_SYNC_PUBLISHER_TOKEN".into(),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            confirm_after: Duration::from_secs(5),
            confirm_reads: 3,
        }
    }
}

/// `[[connector.deliver]]`: an HTTP destination the daemon POSTs the connector's changes
/// to, in signed batches, at least once and in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Unique within the connector: the key of its cursor in the store.
    pub name: String,
    /// Where batches are POSTed (`http` or `https`).
    pub url: String,
    /// The kinds it receives; empty: every change.
    pub kinds: Vec<ChangeKind>,
    /// The environment variable holding the signing secret (at least 16 bytes).
    pub secret_env: String,
    /// Starts from every retained change (`from = "start"`), not from the changes
    /// written after the daemon first saw it (`"now"`).
    pub from_start: bool,
    /// One POST, connecting included: past it the batch failed.
    pub timeout: Duration,
    /// Changes in one batch, at most [`MAX_BATCH`].
    pub max_batch: u32,
    /// How often the feed is read for new changes.
    pub poll: Duration,
    /// A process delivering to it holds it this long, renewed while a batch is on its
    /// way; a killed process's batch is sent again once it passes.
    pub lease: Duration,
}

/// The most changes a batch holds.
pub const MAX_BATCH: u32 = 500;

impl Destination {
    /// A destination of every kind with its defaults.
    pub fn new(name: &str, url: &str, secret_env: &str) -> Destination {
        Destination {
            name: name.to_string(),
            url: url.to_string(),
            kinds: Vec::new(),
            secret_env: secret_env.to_string(),
            from_start: false,
            timeout: Duration::from_secs(10),
            max_batch: MAX_BATCH,
            poll: Duration::from_secs(5),
            lease: Duration::from_secs(60),
        }
    }

    /// The URL as it may be printed: without its query or fragment, which may carry a
    /// token.
    pub fn shown_url(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or_default()
    }
}

/// Default of `connector.run_timeout`: a million rows take seconds; an hour means
/// something is stuck.
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);

impl Connector {
    /// A snapshot connector on `source` with every other setting at its default.
    pub fn new(id: &str, source: &str, timezone: Tz) -> Connector {
        Connector {
            id: id.to_string(),
            source: source.to_string(),
            s3: S3Settings::default(),
            mode: Mode::Snapshot,
            guards: Guards::default(),
            columns: BTreeMap::new(),
            past_expiry: PastExpiry::Reject,
            offers: Arc::default(),
            unmapped_offer: UnmappedOffer::Warn,
            expiry_buffer_days: DEFAULT_EXPIRY_BUFFER_DAYS,
            timezone,
            run_timeout: DEFAULT_RUN_TIMEOUT,
            cleeng: CleengSettings::default(),
            webhooks: None,
            changes_retention_days: 90,
            deliver: Vec::new(),
        }
    }

    /// Today in the connector's zone, at `now`.
    pub fn today(&self, now: DateTime<Utc>) -> chrono::NaiveDate {
        now.with_timezone(&self.timezone).date_naive()
    }

    /// The validation rules of this connector at `now`: "today" is taken in its zone.
    pub fn rules(&self, now: DateTime<Utc>) -> Rules {
        Rules {
            today: self.today(now),
            past_expiry: self.past_expiry,
            expiry_buffer_days: self.expiry_buffer_days,
            offers: Arc::clone(&self.offers),
            unmapped_offer: self.unmapped_offer,
        }
    }
}

/// The safety guards of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guards {
    /// Refuse the run when more than this share of rows is rejected; default 0.05.
    pub max_rejected_ratio: f64,
    /// Refuse a snapshot that removes more than this share of present subscribers;
    /// default 0.10.
    pub max_removed_ratio: f64,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            max_rejected_ratio: 0.05,
            max_removed_ratio: 0.10,
        }
    }
}

/// Settings an S3 source needs besides its URL: where it is, and how hard to try.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// AWS region; the standard chain's when `None`, else us-west-2.
    pub region: Option<String>,
    /// Custom endpoint (LocalStack); path-style addressing is used with it.
    pub endpoint_url: Option<String>,
    /// Attempts per request (the first included), in the SDK's standard retry mode:
    /// throttling, 5xx answers, resets and timeouts are retried with exponential
    /// backoff and jitter.
    pub max_attempts: u32,
    /// How often a download whose body is cut mid-way (after the SDK has handed it
    /// over, so it no longer retries) is resumed from where it stopped.
    pub resume_attempts: u32,
    /// A download that receives nothing for this long is cut, then resumed. Long
    /// enough that a slow store does not abort a healthy download.
    pub stall_timeout: Duration,
    /// Connecting, and waiting for an answer's headers, per attempt.
    pub request_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            region: None,
            endpoint_url: None,
            max_attempts: 5,
            resume_attempts: 3,
            stall_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}
