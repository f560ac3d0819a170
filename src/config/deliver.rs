//! `[[connector.deliver]]`: the change feed's HTTP destinations, checked and translated.

use super::error::ConfigError;
use super::file::DeliverSection;
use super::parse::{env_name, positive};
use super::settings::{Destination, MAX_BATCH};
use crate::change::ChangeKind;

/// A name's longest form: it is a metric label and a command-line argument.
const MAX_NAME: usize = 64;

/// The connector's destinations, each checked, their names unique.
pub(super) fn destinations(
    key: &dyn Fn(&str) -> String,
    sections: Vec<DeliverSection>,
) -> Result<Vec<Destination>, ConfigError> {
    let mut destinations: Vec<Destination> = Vec::new();
    for (i, section) in sections.into_iter().enumerate() {
        let at = |name: &str| key(&format!("deliver[{i}].{name}"));
        let destination = destination(&at, section)?;
        if destinations.iter().any(|d| d.name == destination.name) {
            return Err(ConfigError::Invalid {
                key: at("name"),
                message: format!(
                    "{:?} names two destinations: each keeps its own cursor by name",
                    destination.name
                ),
            });
        }
        destinations.push(destination);
    }
    Ok(destinations)
}

fn destination(
    at: &dyn Fn(&str) -> String,
    section: DeliverSection,
) -> Result<Destination, ConfigError> {
    let invalid = |name: &str, message: String| ConfigError::Invalid {
        key: at(name),
        message,
    };
    let name = section.name.unwrap_or_default();
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(invalid(
            "name",
            format!("{name:?}: required, 1-{MAX_NAME} letters, digits, '-' or '_' (e.g. \"crm\")"),
        ));
    }
    let url = section.url.unwrap_or_default().trim().to_string();
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if host.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
        return Err(invalid(
            "url",
            format!("{url:?}: required, an http(s) URL (e.g. \"https://crm.example.com/hooks\")"),
        ));
    }
    let Some(secret_env) = section.secret_env else {
        return Err(invalid(
            "secret_env",
            "required: the environment variable holding the secret its batches are signed \
             with (at least 16 bytes)"
                .into(),
        ));
    };
    let mut d = Destination::new(
        &name,
        &url,
        &env_name(&at("secret_env"), secret_env, "signing secret")?,
    );
    if let Some(kinds) = section.kinds {
        d.kinds = kinds_of(&kinds).map_err(|message| invalid("kinds", message))?;
    }
    d.from_start = match section.from.as_deref() {
        None | Some("now") => false,
        Some("start") => true,
        Some(other) => {
            return Err(invalid(
                "from",
                format!(
                    "{other:?}: \"now\" (changes from now on) or \"start\" (every retained change)"
                ),
            ));
        }
    };
    if let Some(max) = section.max_batch {
        if !(1..=MAX_BATCH).contains(&max) {
            return Err(invalid(
                "max_batch",
                format!("{max}: from 1 to {MAX_BATCH}"),
            ));
        }
        d.max_batch = max;
    }
    for (name, text, value) in [
        ("timeout", section.timeout, &mut d.timeout),
        ("poll", section.poll, &mut d.poll),
        ("lease", section.lease, &mut d.lease),
    ] {
        if let Some(duration) = positive(&at(name), text)? {
            *value = duration;
        }
    }
    if d.lease <= d.timeout {
        return Err(invalid(
            "lease",
            format!(
                "must be longer than the timeout ({}): a batch on its way keeps the destination",
                humantime::format_duration(d.timeout)
            ),
        ));
    }
    Ok(d)
}

/// Kinds by name: at least one, each known, each once.
fn kinds_of(names: &[String]) -> Result<Vec<ChangeKind>, String> {
    let known = || {
        ChangeKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!(
            "names no kind, so nothing would be delivered; leave it out for every change, \
             or name some of {}",
            known()
        ));
    }
    let mut kinds = Vec::new();
    for name in names {
        let kind = ChangeKind::parse(name)
            .ok_or_else(|| format!("{name:?} is not a kind of change; one of {}", known()))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, url: &str) -> DeliverSection {
        DeliverSection {
            name: Some(name.into()),
            url: Some(url.into()),
            secret_env: Some("CRM_SECRET".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_destination_takes_its_defaults_and_its_kinds() {
        let key = |name: &str| name.to_string();
        let mut s = section("crm", "https://crm.example.com/in");
        s.kinds = Some(vec!["stopped".into(), "switched".into(), "stopped".into()]);
        s.from = Some("start".into());
        let d = destinations(&key, vec![s]).expect("valid").remove(0);
        assert_eq!(d.kinds, [ChangeKind::Stopped, ChangeKind::Switched]);
        assert!(d.from_start);
        assert_eq!(
            (d.max_batch, d.poll.as_secs(), d.timeout.as_secs()),
            (500, 5, 10)
        );
    }

    #[test]
    fn every_bad_destination_is_refused_with_its_key() {
        let key = |name: &str| format!("connector.x.{name}");
        let refused = |s: DeliverSection, what: &str| {
            let e = destinations(&key, vec![s]).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        };
        refused(section("", "https://a.b"), "deliver[0].name");
        refused(section("a b", "https://a.b"), "deliver[0].name");
        refused(section("crm", "ftp://a.b"), "deliver[0].url");
        refused(section("crm", "https://"), "deliver[0].url");
        let mut s = section("crm", "https://a.b");
        s.kinds = Some(vec!["moved".into()]);
        refused(s, "deliver[0].kinds");
        let mut s = section("crm", "https://a.b");
        s.kinds = Some(Vec::new());
        refused(s, "deliver[0].kinds");
        let mut s = section("crm", "https://a.b");
        s.secret_env = None;
        refused(s, "deliver[0].secret_env");
        let mut s = section("crm", "https://a.b");
        s.from = Some("yesterday".into());
        refused(s, "deliver[0].from");
        let mut s = section("crm", "https://a.b");
        s.max_batch = Some(501);
        refused(s, "deliver[0].max_batch");
        let mut s = section("crm", "https://a.b");
        s.lease = Some("5s".into());
        refused(s, "deliver[0].lease");
        let twice = vec![section("crm", "https://a.b"), section("crm", "https://c.d")];
        let e = destinations(&key, twice)
            .expect_err("a name twice")
            .to_string();
        assert!(e.contains("deliver[1].name"), "{e}");
    }
}
