//! Typed settings: the TOML file, the environment and the flags, validated once.

use crate::export::{DEFAULT_EXPIRY_BUFFER_DAYS, Field, Offers, PastExpiry, Rules, UnmappedOffer};
use crate::run::Mode;
use crate::source::S3Settings;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The store used when neither the flags, the environment nor the file name one.
pub const DEFAULT_STORE: &str = "sqlite://cleeng-sync.db";

/// A configuration that cannot be used. Always a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for our schema (unknown keys included).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of its allowed range or form.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Where, as `section.key`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A command needs a connector and none is configured.
    #[error(
        "no connector configured: pass --source s3://bucket/prefix/ (or a folder), or a config file with a [[connector]]"
    )]
    NoConnector,
    /// `--connector` names a connector the config does not have.
    #[error("no connector {wanted:?} in the configuration; configured: {known}")]
    UnknownConnector {
        /// The id asked for.
        wanted: String,
        /// The ids configured.
        known: String,
    },
}

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
}

impl Default for CleengSettings {
    fn default() -> CleengSettings {
        CleengSettings {
            api_url: "https://api.cleeng.com/3.1".into(),
            token_env: "CLEENG_SYNC_PUBLISHER_TOKEN".into(),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
        }
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

/// The configuration file (TOML). Every field has a default but a connector's source;
/// an unknown key is an error that names it. Secrets never live in this file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// `[store]`: where traits and the ledger live.
    #[serde(default)]
    store: StoreSection,
    /// `[schedule]`: when the daemon runs.
    #[serde(default)]
    schedule: ScheduleSection,
    /// `[server]`: the daemon's admin API.
    #[serde(default)]
    server: ServerSection,
    /// `[daemon]`: how the daemon runs its work.
    #[serde(default)]
    daemon: DaemonSection,
    /// `[[connector]]`: one Cleeng export feed each.
    #[serde(default)]
    connector: Vec<ConnectorSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    /// `sqlite://path.db` (created if missing) or `postgres://user@host/db`; default
    /// `sqlite://cleeng-sync.db`. `--store` and `CLEENG_SYNC_STORE` override it.
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScheduleSection {
    /// Cron expression, `sec min hour dom mon dow`, its times read as local wall-clock
    /// times in `timezone` (DST handled); default `0 30 1 * * *`.
    cron: String,
    /// IANA zone of the cron's times, and of "today" for expiry dates; default
    /// `America/Los_Angeles`.
    timezone: String,
    /// A scheduled time missed while the daemon was down runs at start-up if it is no
    /// older than this; default `12h`.
    catch_up: String,
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
struct ServerSection {
    /// Address of the admin API; default `127.0.0.1:9187` (loopback). Its bearer token
    /// comes from `CLEENG_SYNC_SERVER_TOKEN`, never from this file.
    listen: String,
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
struct DaemonSection {
    /// Runs of different connectors in flight at once (one per connector); default 2.
    max_concurrent_runs: usize,
    /// On SIGTERM or SIGINT, how long a run in flight may take to finish before it is
    /// rolled back; default `60s`.
    shutdown_grace: String,
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
struct ConnectorSection {
    /// The connector's id, the key of its traits and runs; unique.
    id: String,
    /// `s3://bucket/prefix/`, `file:///abs/dir` or a directory path; required (or
    /// `--source`).
    source: Option<String>,
    /// The bucket's AWS region; default from the AWS chain (`AWS_REGION`...).
    region: Option<String>,
    /// A custom S3 endpoint (LocalStack, MinIO), with path-style addressing; default
    /// from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
    endpoint_url: Option<String>,
    /// `snapshot` (default: each export is the whole segment, subscribers it no longer
    /// lists are removed) or `delta` (exports only add or change rows).
    #[serde(default)]
    mode: Mode,
    /// `[connector.guards]`: the refusal thresholds.
    #[serde(default)]
    guards: Guards,
    /// `[connector.columns]`: this export's header labels for template fields
    /// (`email = "Customer Email"`).
    #[serde(default)]
    columns: BTreeMap<String, String>,
    /// `[connector.validation]`: rules beyond the template's.
    #[serde(default)]
    validation: ValidationSection,
    /// `[connector.offers]`: plan -> { COUNTRY = offer ID }, the localized offers of
    /// each plan (`premium-monthly = { PL = "S123456789_PL", DE = "S223456789_DE" }`).
    #[serde(default)]
    offers: BTreeMap<String, BTreeMap<String, String>>,
    /// How long the download, check and plan of one export may take; past it the run
    /// fails and applies nothing; default `1h`.
    run_timeout: Option<String>,
    /// `[connector.s3]`: retries and timeouts of the S3 client.
    #[serde(default)]
    s3: S3Section,
    /// `[connector.cleeng]`: Cleeng's Core API, for the billing actions.
    #[serde(default)]
    cleeng: CleengSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CleengSection {
    /// Core API 3.1 base URL; default `https://api.cleeng.com/3.1` (sandbox:
    /// `https://api.sandbox.cleeng.com/3.1`).
    api_url: Option<String>,
    /// The environment variable holding the publisher token (never this file); default
    /// `CLEENG_SYNC_PUBLISHER_TOKEN`.
    token_env: Option<String>,
    /// Connecting and waiting for one answer; default `10s`.
    timeout: Option<String>,
    /// Attempts of a request Cleeng cannot have applied (refused connection, 429, 503),
    /// the first included; default 3.
    max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Section {
    /// Attempts per request, the first included, with backoff and jitter; default 5.
    max_attempts: Option<u32>,
    /// A body cut mid-way resumes from where it stopped, this many times; default 3.
    resume_attempts: Option<u32>,
    /// A body that delivers nothing this long is cut (and resumed); default `30s`.
    stall_timeout: Option<String>,
    /// Connecting, and waiting for an answer's headers; default `30s`.
    request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidationSection {
    /// `reject` (default: the template's "must not be in the past") or `accept`.
    #[serde(default)]
    past_expiry: PastExpiry,
    /// A row whose offer `[connector.offers]` does not list: `warn` (default: stored,
    /// warning `unmapped_offer`) or `reject` (reason `unmapped_offer`). Only with a map.
    unmapped_offer: Option<UnmappedOffer>,
    /// An expiry date from today to this many days ahead is warned about
    /// (`expiry_within_buffer`): Cleeng charges or terminates on that day. Whole days;
    /// default `3d`, `0d` off.
    expiry_buffer: Option<String>,
}

impl Settings {
    /// Reads the config file (if any), applies the overrides and validates the result.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        Settings::from_parts(file, overrides)
    }

    /// The connector a single-connector command (`traits`, `runs --connector`) means:
    /// the one named by `--connector`, the only one configured, or `default`.
    pub fn connector_id(&self, wanted: Option<&str>) -> String {
        match (wanted, self.connectors.as_slice()) {
            (Some(id), _) => id.to_string(),
            (None, [only]) => only.id.clone(),
            _ => "default".to_string(),
        }
    }

    fn from_parts(file: File, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let timezone: Tz = file
            .schedule
            .timezone
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "schedule.timezone".into(),
                message: format!(
                    "{:?} is not an IANA time zone (e.g. America/Los_Angeles)",
                    file.schedule.timezone
                ),
            })?;
        let cron = cron::Schedule::from_str(&file.schedule.cron).map_err(|e| ConfigError::Invalid {
            key: "schedule.cron".into(),
            message: format!(
                "{:?}: {e}; six fields are expected, seconds first (e.g. \"0 30 1 * * *\" for 01:30 every day)",
                file.schedule.cron
            ),
        })?;
        let catch_up = humantime::parse_duration(&file.schedule.catch_up).map_err(|e| {
            ConfigError::Invalid {
                key: "schedule.catch_up".into(),
                message: format!("{:?}: {e} (e.g. \"12h\", \"90m\")", file.schedule.catch_up),
            }
        })?;
        let listen = file
            .server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "server.listen".into(),
                message: format!(
                    "{:?} is not an address:port (e.g. 127.0.0.1:9187)",
                    file.server.listen
                ),
            })?;
        if file.daemon.max_concurrent_runs == 0 {
            return Err(ConfigError::Invalid {
                key: "daemon.max_concurrent_runs".into(),
                message: "must be at least 1".into(),
            });
        }
        let shutdown_grace =
            humantime::parse_duration(&file.daemon.shutdown_grace).map_err(|e| {
                ConfigError::Invalid {
                    key: "daemon.shutdown_grace".into(),
                    message: format!(
                        "{:?}: {e} (e.g. \"60s\", \"0s\")",
                        file.daemon.shutdown_grace
                    ),
                }
            })?;

        let mut connectors = Vec::new();
        for section in file.connector {
            connectors.push(connector(section, timezone)?);
        }
        for (i, c) in connectors.iter().enumerate() {
            if connectors[..i].iter().any(|o| o.id == c.id) {
                return Err(ConfigError::Invalid {
                    key: "connector.id".into(),
                    message: format!("{:?} is used by two connectors; ids must be unique", c.id),
                });
            }
        }

        if let Some(wanted) = &overrides.connector
            && !connectors.is_empty()
        {
            let known = connectors
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            connectors.retain(|c| &c.id == wanted);
            if connectors.is_empty() {
                return Err(ConfigError::UnknownConnector {
                    wanted: wanted.clone(),
                    known,
                });
            }
        }
        if let Some(source) = &overrides.source {
            match connectors.as_mut_slice() {
                [] => connectors.push(Connector::new(
                    overrides.connector.as_deref().unwrap_or("default"),
                    source,
                    timezone,
                )),
                [only] => only.source = source.clone(),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "--source".into(),
                        message:
                            "the config has several connectors; say which one with --connector"
                                .into(),
                    });
                }
            }
        }
        if let Some(c) = connectors.iter().find(|c| c.source.is_empty()) {
            return Err(ConfigError::Invalid {
                key: format!("connector {:?}: source", c.id),
                message: "missing; set source = \"s3://bucket/prefix/\" or pass --source".into(),
            });
        }

        Ok(Settings {
            store_url: overrides
                .store
                .clone()
                .or(file.store.url)
                .unwrap_or_else(|| DEFAULT_STORE.into()),
            schedule: Schedule {
                cron,
                timezone,
                catch_up,
            },
            server: Server { listen },
            daemon: Daemon {
                max_concurrent_runs: file.daemon.max_concurrent_runs,
                shutdown_grace,
            },
            connectors,
        })
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

fn connector(section: ConnectorSection, timezone: Tz) -> Result<Connector, ConfigError> {
    let id = section.id.trim().to_string();
    let key = |name: &str| format!("connector {id:?}: {name}");
    if id.is_empty() {
        return Err(ConfigError::Invalid {
            key: "connector.id".into(),
            message: "must not be empty".into(),
        });
    }
    for (name, value) in [
        (
            "guards.max_rejected_ratio",
            section.guards.max_rejected_ratio,
        ),
        ("guards.max_removed_ratio", section.guards.max_removed_ratio),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(ConfigError::Invalid {
                key: key(name),
                message: format!("{value} is not a share between 0 and 1"),
            });
        }
    }
    let mut columns = BTreeMap::new();
    for (name, label) in section.columns {
        let field = Field::from_name(&name).ok_or_else(|| ConfigError::Invalid {
            key: key(&format!("columns.{name}")),
            message: format!(
                "unknown field; expected one of {}",
                Field::ALL
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        columns.insert(field, label);
    }
    let mut c = Connector::new(&id, &section.source.unwrap_or_default(), timezone);
    let s3 = section.s3;
    if s3.max_attempts == Some(0) {
        return Err(ConfigError::Invalid {
            key: key("s3.max_attempts"),
            message: "must be at least 1 (the first attempt counts)".into(),
        });
    }
    let defaults = S3Settings::default();
    c.s3 = S3Settings {
        region: section.region,
        endpoint_url: section.endpoint_url,
        max_attempts: s3.max_attempts.unwrap_or(defaults.max_attempts),
        resume_attempts: s3.resume_attempts.unwrap_or(defaults.resume_attempts),
        stall_timeout: positive(&key("s3.stall_timeout"), s3.stall_timeout)?
            .unwrap_or(defaults.stall_timeout),
        request_timeout: positive(&key("s3.request_timeout"), s3.request_timeout)?
            .unwrap_or(defaults.request_timeout),
    };
    if let Some(timeout) = positive(&key("run_timeout"), section.run_timeout)? {
        c.run_timeout = timeout;
    }
    c.cleeng = cleeng(&key, section.cleeng)?;
    c.mode = section.mode;
    c.guards = section.guards;
    c.columns = columns;
    c.past_expiry = section.validation.past_expiry;
    c.offers = Arc::new(
        Offers::new(section.offers).map_err(|e| ConfigError::Invalid {
            key: key(&format!("offers.{}", e.key)),
            message: e.message,
        })?,
    );
    if let Some(unmapped) = section.validation.unmapped_offer {
        if c.offers.is_empty() {
            return Err(ConfigError::Invalid {
                key: key("validation.unmapped_offer"),
                message: "needs a map of offers: add [connector.offers], or remove the setting"
                    .into(),
            });
        }
        c.unmapped_offer = unmapped;
    }
    if let Some(buffer) = &section.validation.expiry_buffer {
        c.expiry_buffer_days = days(buffer).map_err(|message| ConfigError::Invalid {
            key: key("validation.expiry_buffer"),
            message,
        })?;
    }
    Ok(c)
}

fn cleeng(
    key: &dyn Fn(&str) -> String,
    section: CleengSection,
) -> Result<CleengSettings, ConfigError> {
    let defaults = CleengSettings::default();
    let api_url = match section.api_url {
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_string();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::Invalid {
                    key: key("cleeng.api_url"),
                    message: format!(
                        "{url:?} is not an http(s) URL (e.g. \"https://api.sandbox.cleeng.com/3.1\")"
                    ),
                });
            }
            url
        }
        None => defaults.api_url,
    };
    let token_env = match section.token_env {
        Some(name) => {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(ConfigError::Invalid {
                    key: key("cleeng.token_env"),
                    message: format!(
                        "{name:?} is not an environment variable name; name the variable that holds \
                         the token (the token itself never goes in this file)"
                    ),
                });
            }
            name
        }
        None => defaults.token_env,
    };
    if section.max_attempts == Some(0) {
        return Err(ConfigError::Invalid {
            key: key("cleeng.max_attempts"),
            message: "must be at least 1 (the first attempt counts)".into(),
        });
    }
    Ok(CleengSettings {
        api_url,
        token_env,
        timeout: positive(&key("cleeng.timeout"), section.timeout)?.unwrap_or(defaults.timeout),
        max_attempts: section.max_attempts.unwrap_or(defaults.max_attempts),
    })
}

/// The most days a buffer or a listing's window may span: ten years.
pub const MAX_DAYS: u32 = 3650;

/// A whole number of days written as a duration (`"3d"`, `"0d"`, `"72h"`), as the
/// expiry buffer and the listing's `expiring within` take it.
pub fn days(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e} (e.g. \"3d\", \"0d\" for none)"))?;
    let seconds = duration.as_secs();
    if seconds % 86_400 != 0 || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?} is not a whole number of days (e.g. \"3d\", \"7d\")"
        ));
    }
    u32::try_from(seconds / 86_400)
        .ok()
        .filter(|d| *d <= MAX_DAYS)
        .ok_or_else(|| format!("{text:?} is more than {MAX_DAYS} days"))
}

/// A duration setting that, when given, must be above zero.
fn positive(key: &str, text: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    match humantime::parse_duration(&text) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        Ok(_) => Err(ConfigError::Invalid {
            key: key.into(),
            message: "must be above zero".into(),
        }),
        Err(e) => Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("{text:?}: {e} (e.g. \"30s\", \"1h\")"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Settings::from_parts(file, overrides)
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let s = parse("", &Overrides::default()).unwrap();
        assert_eq!(s.store_url, DEFAULT_STORE);
        assert_eq!(s.schedule.timezone, chrono_tz::America::Los_Angeles);
        assert_eq!(s.schedule.catch_up, Duration::from_secs(12 * 3600));
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:9187");
        assert!(s.connectors.is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(
            "[store]\nurl = \"sqlite://x.db\"\npasword = \"x\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pasword"), "{err}");
        let err = parse(
            "[[connector]]\nid = \"a\"\nsource = \"/x\"\n[connector.columns]\nmail = \"E\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("columns.mail"), "{err}");
    }

    #[test]
    fn source_flag_implies_a_default_connector() {
        let o = Overrides {
            source: Some("s3://b/p/".into()),
            ..Overrides::default()
        };
        let s = parse("", &o).unwrap();
        assert_eq!(s.connectors.len(), 1);
        assert_eq!(s.connectors[0].id, "default");
        assert_eq!(s.connectors[0].guards, Guards::default());
    }

    #[test]
    fn connector_selection_and_overrides() {
        let text = r#"
            [store]
            url = "sqlite://file.db"
            [[connector]]
            id = "eu"
            source = "s3://b/eu/"
            mode = "delta"
            [connector.guards]
            max_rejected_ratio = 0.5
            [connector.columns]
            email = "Customer Email"
            [[connector]]
            id = "us"
            source = "s3://b/us/"
        "#;
        let o = Overrides {
            connector: Some("eu".into()),
            store: Some("sqlite://flag.db".into()),
            ..Overrides::default()
        };
        let s = parse(text, &o).unwrap();
        assert_eq!(s.store_url, "sqlite://flag.db");
        assert_eq!(s.connectors.len(), 1);
        assert_eq!(s.connectors[0].mode, Mode::Delta);
        assert_eq!(s.connectors[0].guards.max_rejected_ratio, 0.5);
        assert_eq!(s.connectors[0].guards.max_removed_ratio, 0.10);
        assert_eq!(
            s.connectors[0]
                .columns
                .get(&Field::Email)
                .map(String::as_str),
            Some("Customer Email")
        );

        let o = Overrides {
            connector: Some("asia".into()),
            ..Overrides::default()
        };
        let err = parse(text, &o).unwrap_err();
        assert!(err.to_string().contains("eu, us"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = parse("[[connector]]\nid = \"a\"\nsource = \"/x\"\n[connector.guards]\nmax_removed_ratio = 2.0\n", &Overrides::default())
            .unwrap_err();
        assert!(err.to_string().contains("max_removed_ratio"), "{err}");
        let err = parse(
            "[schedule]\ntimezone = \"Mars/Olympus\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("schedule.timezone"), "{err}");
    }

    #[test]
    fn retry_and_timeout_settings_are_read_and_checked() {
        let base = "[[connector]]\nid = \"a\"\nsource = \"/x\"\n";
        let s = parse(base, &Overrides::default()).unwrap();
        let c = &s.connectors[0];
        assert_eq!(
            (c.s3.max_attempts, c.s3.resume_attempts, c.run_timeout),
            (5, 3, Duration::from_secs(3600))
        );
        let s = parse(
            &format!(
                "{base}run_timeout = \"10m\"\n[connector.s3]\nmax_attempts = 2\n\
                 resume_attempts = 0\nstall_timeout = \"5s\"\nrequest_timeout = \"3s\"\n"
            ),
            &Overrides::default(),
        )
        .unwrap();
        let c = &s.connectors[0];
        assert_eq!(c.run_timeout, Duration::from_secs(600));
        assert_eq!((c.s3.max_attempts, c.s3.resume_attempts), (2, 0));
        assert_eq!(
            (c.s3.stall_timeout, c.s3.request_timeout),
            (Duration::from_secs(5), Duration::from_secs(3))
        );
        for (bad, key) in [
            ("[connector.s3]\nmax_attempts = 0\n", "s3.max_attempts"),
            (
                "[connector.s3]\nstall_timeout = \"0s\"\n",
                "s3.stall_timeout",
            ),
            ("run_timeout = \"soon\"\n", "run_timeout"),
            ("[connector.s3]\nretries = 3\n", "retries"),
        ] {
            let err = parse(&format!("{base}{bad}"), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    const CONNECTOR: &str = "[[connector]]\nid = \"c\"\nsource = \"/tmp/x\"\n";

    #[test]
    fn the_offer_map_and_the_buffer_are_read() {
        let text = format!(
            "{CONNECTOR}[connector.validation]\nunmapped_offer = \"reject\"\nexpiry_buffer = \"7d\"\n\
             [connector.offers]\npremium-monthly = {{ PL = \"S123456789_PL\", DE = \"S223456789_DE\" }}\n"
        );
        let s = parse(&text, &Overrides::default()).unwrap();
        let c = &s.connectors[0];
        assert_eq!(c.offers.plan_of("S223456789_DE"), Some("premium-monthly"));
        assert_eq!(c.unmapped_offer, UnmappedOffer::Reject);
        assert_eq!(c.expiry_buffer_days, 7);
        let defaults = parse(CONNECTOR, &Overrides::default()).unwrap();
        let c = &defaults.connectors[0];
        assert!(c.offers.is_empty());
        assert_eq!(
            (c.expiry_buffer_days, c.unmapped_offer),
            (3, UnmappedOffer::Warn)
        );
    }

    #[test]
    fn a_bad_offer_map_names_the_key() {
        for (bad, key) in [
            (
                "[connector.offers]\na = { PL = \"S123456789_PL\" }\nb = { PL = \"S123456789_PL\" }\n",
                "offers.b.PL",
            ),
            (
                "[connector.offers]\na = { pl = \"S123456789_PL\" }\n",
                "offers.a.pl",
            ),
            (
                "[connector.offers]\na = { PL = \"premium\" }\n",
                "offers.a.PL",
            ),
            // Shown by the parser with its line: `a = { PL = 7 }`.
            ("[connector.offers]\na = { PL = 7 }\n", "PL = 7"),
            (
                "[connector.validation]\nunmapped_offer = \"reject\"\n",
                "unmapped_offer",
            ),
            (
                "[connector.validation]\nunmapped_offer = \"drop\"\n",
                "unmapped_offer",
            ),
            (
                "[connector.validation]\nexpiry_buffer = \"36h\"\n",
                "expiry_buffer",
            ),
            (
                "[connector.validation]\nexpiry_buffer = \"soon\"\n",
                "expiry_buffer",
            ),
        ] {
            let err = parse(&format!("{CONNECTOR}{bad}"), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn days_are_whole() {
        assert_eq!(days("0d"), Ok(0));
        assert_eq!(days("3d"), Ok(3));
        assert_eq!(days("72h"), Ok(3));
        assert!(days("1d 1h").is_err());
        assert!(days("100000d").is_err());
    }
}
