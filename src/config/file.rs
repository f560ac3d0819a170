//! The configuration file's format: a mirror of the TOML, section by section, with
//! the defaults a missing key takes. Read as written; `load.rs` checks and translates.

use super::error::ConfigError;
use super::settings::Guards;
use crate::export::{PastExpiry, UnmappedOffer};
use crate::run::Mode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The configuration file (TOML). Every field has a default but a connector's source;
/// an unknown key is an error that names it. Secrets never live in this file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// `[store]`: where traits and the ledger live.
    #[serde(default)]
    pub(super) store: StoreSection,
    /// `[schedule]`: when the daemon runs.
    #[serde(default)]
    pub(super) schedule: ScheduleSection,
    /// `[server]`: the daemon's admin API.
    #[serde(default)]
    pub(super) server: ServerSection,
    /// `[daemon]`: how the daemon runs its work.
    #[serde(default)]
    pub(super) daemon: DaemonSection,
    /// `[webhooks]`: the listener Cleeng delivers webhooks to.
    #[serde(default)]
    pub(super) webhooks: WebhooksSection,
    /// `[[connector]]`: one Cleeng export feed each.
    #[serde(default)]
    pub(super) connector: Vec<ConnectorSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhooksSection {
    /// Address of the webhook listener, its own socket and the only one meant for the
    /// internet (e.g. `0.0.0.0:9188`); no listener when unset.
    pub(super) listen: Option<String>,
    /// The largest body taken (`64KiB`); a larger one is answered 413 unread.
    pub(super) max_body: Option<String>,
    /// How long a request may take to arrive in full; default `10s`.
    pub(super) request_timeout: Option<String>,
    /// Requests handled at once; more wait for a slot (within the timeout); default 64.
    pub(super) max_concurrent: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreSection {
    /// `sqlite://path.db` (created if missing) or `postgres://user@host/db`; default
    /// `sqlite://cleeng-sync.db`. `--store` and `CLEENG_SYNC_STORE` override it.
    pub(super) url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ScheduleSection {
    /// Cron expression, `sec min hour dom mon dow`, its times read as local wall-clock
    /// times in `timezone` (DST handled); default `0 30 1 * * *`.
    pub(super) cron: String,
    /// IANA zone of the cron's times, and of "today" for expiry dates; default
    /// `America/Los_Angeles`.
    pub(super) timezone: String,
    /// A scheduled time missed while the daemon was down runs at start-up if it is no
    /// older than this; default `12h`.
    pub(super) catch_up: String,
}

impl Default for ScheduleSection {
    fn default() -> ScheduleSection {
        ScheduleSection {
            cron: "0 30 1 * * *".into(),
            timezone: "America/Los_Angeles".into(),
            catch_up: "12h".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerSection {
    /// Address of the admin API; default `127.0.0.1:9187` (loopback). Its bearer token
    /// comes from `CLEENG_SYNC_SERVER_TOKEN`, never from this file.
    pub(super) listen: String,
}

impl Default for ServerSection {
    fn default() -> ServerSection {
        ServerSection {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DaemonSection {
    /// Runs of different connectors in flight at once (one per connector); default 2.
    pub(super) max_concurrent_runs: usize,
    /// On SIGTERM or SIGINT, how long a run in flight may take to finish before it is
    /// rolled back; default `60s`.
    pub(super) shutdown_grace: String,
}

impl Default for DaemonSection {
    fn default() -> DaemonSection {
        DaemonSection {
            max_concurrent_runs: 2,
            shutdown_grace: "60s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorSection {
    /// The connector's id, the key of its traits and runs; unique.
    pub(super) id: String,
    /// `s3://bucket/prefix/`, `file:///abs/dir` or a directory path; required (or
    /// `--source`).
    pub(super) source: Option<String>,
    /// The bucket's AWS region; default from the AWS chain (`AWS_REGION`...).
    pub(super) region: Option<String>,
    /// A custom S3 endpoint (LocalStack, MinIO), with path-style addressing; default
    /// from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
    pub(super) endpoint_url: Option<String>,
    /// `snapshot` (default: each export is the whole segment, subscribers it no longer
    /// lists are removed) or `delta` (exports only add or change rows).
    #[serde(default)]
    pub(super) mode: Mode,
    /// `[connector.guards]`: the refusal thresholds.
    #[serde(default)]
    pub(super) guards: Guards,
    /// `[connector.columns]`: this export's header labels for template fields
    /// (`email = "Customer Email"`).
    #[serde(default)]
    pub(super) columns: BTreeMap<String, String>,
    /// `[connector.validation]`: rules beyond the template's.
    #[serde(default)]
    pub(super) validation: ValidationSection,
    /// `[connector.offers]`: plan -> { COUNTRY = offer ID }, the localized offers of
    /// each plan (`premium-monthly = { PL = "S123456789_PL", DE = "S223456789_DE" }`).
    #[serde(default)]
    pub(super) offers: BTreeMap<String, BTreeMap<String, String>>,
    /// How long the download, check and plan of one export may take; past it the run
    /// fails and applies nothing; default `1h`.
    pub(super) run_timeout: Option<String>,
    /// How long the change feed keeps a change, in whole days; the daemon prunes older
    /// ones once a day; default `90d`.
    pub(super) changes_retention: Option<String>,
    /// `[connector.s3]`: retries and timeouts of the S3 client.
    #[serde(default)]
    pub(super) s3: S3Section,
    /// `[connector.cleeng]`: Cleeng's Core API, for the billing actions.
    #[serde(default)]
    pub(super) cleeng: CleengSection,
    /// `[connector.webhooks]`: this connector's webhook endpoint; none when absent.
    pub(super) webhooks: Option<ConnectorWebhooksSection>,
    /// `[[connector.deliver]]`: HTTP destinations of the change feed.
    #[serde(default)]
    pub(super) deliver: Vec<DeliverSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliverSection {
    /// Unique within the connector (letters, digits, `-`, `_`); required.
    pub(super) name: Option<String>,
    /// Where batches are POSTed, `https://...` (or `http://`); required.
    pub(super) url: Option<String>,
    /// The kinds it receives (`["stopped", "switched"]`); default every change.
    pub(super) kinds: Option<Vec<String>>,
    /// The environment variable holding the secret batches are signed with (at least 16
    /// bytes; never this file); required.
    pub(super) secret_env: Option<String>,
    /// `now` (default: changes written after the daemon first sees the destination) or
    /// `start` (every retained change).
    pub(super) from: Option<String>,
    /// One POST, connecting included; default `10s`.
    pub(super) timeout: Option<String>,
    /// Changes in one batch, 1-500; default 500.
    pub(super) max_batch: Option<u32>,
    /// How often the feed is read for new changes; default `5s`.
    pub(super) poll: Option<String>,
    /// How long a process holds the destination, renewed while a batch is on its way;
    /// after a kill, the batch is sent again once it passes; default `60s`.
    pub(super) lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorWebhooksSection {
    /// The environment variable holding the `sharedSecret` given to Cleeng (16-64
    /// bytes; never this file); default `CLEENG_SYNC_WEBHOOK_SECRET`.
    pub(super) secret_env: Option<String>,
    /// The request header that carries the HMAC; required (Cleeng's published pages do
    /// not name it: confirm it in the sandbox).
    pub(super) signature_header: Option<String>,
    /// Refuse (403) events of another `broadcasterId`.
    pub(super) publisher_id: Option<i64>,
    /// Events of one subscriber within this make one refresh; default `10s`.
    pub(super) coalesce: Option<String>,
    /// Calls to Cleeng's API for refreshes per second (a token bucket, its burst the
    /// same number); default 5.
    pub(super) max_requests_per_second: Option<u32>,
    /// Refreshes of an event, in all, before it is `failed`; default 5.
    pub(super) max_attempts: Option<u32>,
    /// A claimed event not finished by then is taken again; default `60s`.
    pub(super) lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CleengSection {
    /// Core API 3.1 base URL; default `https://api.cleeng.com/3.1` (sandbox:
    /// `https://api.sandbox.cleeng.com/3.1`).
    pub(super) api_url: Option<String>,
    /// The environment variable holding the publisher token (never this file); default
    /// `CLEENG_SYNC_PUBLISHER_TOKEN`.
    pub(super) token_env: Option<String>,
    /// Connecting and waiting for one answer; default `10s`.
    pub(super) timeout: Option<String>,
    /// Attempts of a request Cleeng cannot have applied (refused connection, 429, 503),
    /// the first included; default 3.
    pub(super) max_attempts: Option<u32>,
    /// After a switch or reactivate, how long before the subscriber is read again when
    /// the read at once does not show the effect yet; default `5s`.
    pub(super) confirm_after: Option<String>,
    /// Reads of the subscriber to confirm an action, the one at once included; default 3.
    pub(super) confirm_reads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3Section {
    /// Attempts per request, the first included, with backoff and jitter; default 5.
    pub(super) max_attempts: Option<u32>,
    /// A body cut mid-way resumes from where it stopped, this many times; default 3.
    pub(super) resume_attempts: Option<u32>,
    /// A body that delivers nothing this long is cut (and resumed); default `30s`.
    pub(super) stall_timeout: Option<String>,
    /// Connecting, and waiting for an answer's headers; default `30s`.
    pub(super) request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidationSection {
    /// `reject` (default: the template's "must not be in the past") or `accept`.
    #[serde(default)]
    pub(super) past_expiry: PastExpiry,
    /// A row whose offer `[connector.offers]` does not list: `warn` (default: stored,
    /// warning `unmapped_offer`) or `reject` (reason `unmapped_offer`). Only with a map.
    pub(super) unmapped_offer: Option<UnmappedOffer>,
    /// An expiry date from today to this many days ahead is warned about
    /// (`expiry_within_buffer`): Cleeng charges or terminates on that day. Whole days;
    /// default `3d`, `0d` off.
    pub(super) expiry_buffer: Option<String>,
}

pub(super) fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}
