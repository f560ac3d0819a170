//! From the file, the environment and the flags to [`Settings`]: every value checked
//! once, with an error that names its key and says what is allowed.

use super::error::ConfigError;
use super::file::*;
use super::parse::days;
use super::parse::{env_name, positive};
use super::settings::*;
use crate::export::{Field, Offers};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

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

        let connectors = connectors(file.connector, overrides, timezone)?;

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
            webhooks: super::webhooks::listener(file.webhooks)?,
            daemon: Daemon {
                max_concurrent_runs: file.daemon.max_concurrent_runs,
                shutdown_grace,
            },
            connectors,
        })
    }
}

/// The connectors of the file, checked, with the flags' `--connector` and `--source`
/// applied to them.
fn connectors(
    sections: Vec<ConnectorSection>,
    overrides: &Overrides,
    timezone: Tz,
) -> Result<Vec<Connector>, ConfigError> {
    let mut connectors = Vec::new();
    for section in sections {
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
                    message: "the config has several connectors; say which one with --connector"
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
    Ok(connectors)
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
    if let Some(retention) = &section.changes_retention {
        c.changes_retention_days = retention_days(&key("changes_retention"), retention)?;
    }
    c.cleeng = cleeng(&key, section.cleeng)?;
    c.webhooks = section
        .webhooks
        .map(|w| super::webhooks::connector(&key, w))
        .transpose()?;
    c.deliver = super::deliver::destinations(&key, section.deliver)?;
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

/// `changes_retention`: whole days, at least one.
fn retention_days(key: &str, text: &str) -> Result<u32, ConfigError> {
    days(text)
        .ok()
        .filter(|d| *d > 0)
        .ok_or_else(|| ConfigError::Invalid {
            key: key.into(),
            message: format!("{text:?} is not a whole number of days from 1d (e.g. \"90d\")"),
        })
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
        Some(name) => env_name(&key("cleeng.token_env"), name, "token")?,
        None => defaults.token_env,
    };
    if section.max_attempts == Some(0) {
        return Err(ConfigError::Invalid {
            key: key("cleeng.max_attempts"),
            message: "must be at least 1 (the first attempt counts)".into(),
        });
    }
    if section.confirm_reads == Some(0) {
        return Err(ConfigError::Invalid {
            key: key("cleeng.confirm_reads"),
            message: "must be at least 1 (the read at once counts)".into(),
        });
    }
    Ok(CleengSettings {
        api_url,
        token_env,
        timeout: positive(&key("cleeng.timeout"), section.timeout)?.unwrap_or(defaults.timeout),
        max_attempts: section.max_attempts.unwrap_or(defaults.max_attempts),
        confirm_after: positive(&key("cleeng.confirm_after"), section.confirm_after)?
            .unwrap_or(defaults.confirm_after),
        confirm_reads: section.confirm_reads.unwrap_or(defaults.confirm_reads),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::UnmappedOffer;
    use crate::run::Mode;
    use std::time::Duration;

    fn parse(text: &str, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Settings::from_parts(file, overrides)
    }

    /// Why a file is refused, with no flags.
    fn refused(text: &str) -> ConfigError {
        parse(text, &Overrides::default()).unwrap_err()
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
        let err = refused("[store]\nurl = \"sqlite://x.db\"\npasword = \"x\"\n");
        assert!(err.to_string().contains("pasword"), "{err}");
        let err = refused(
            "[[connector]]\nid = \"a\"\nsource = \"/x\"\n[connector.columns]\nmail = \"E\"\n",
        );
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
        let err = refused(
            "[[connector]]\nid = \"a\"\nsource = \"/x\"\n[connector.guards]\nmax_removed_ratio = 2.0\n",
        );
        assert!(err.to_string().contains("max_removed_ratio"), "{err}");
        let err = refused("[schedule]\ntimezone = \"Mars/Olympus\"\n");
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
}
