//! The webhook sections, `[webhooks]` and `[connector.webhooks]`, checked and translated.

use super::error::ConfigError;
use super::file::{ConnectorWebhooksSection, WebhooksSection};
use super::parse::{env_name, positive};
use super::settings::{ConnectorWebhooks, DEFAULT_MAX_BODY, Webhooks};
use std::time::Duration;

/// The largest `max_body` taken: the listener holds a body in memory until it is verified.
const MAX_MAX_BODY: usize = 16 * 1024 * 1024;

/// `[webhooks]`: `None` when it names no listen address.
pub(super) fn listener(section: WebhooksSection) -> Result<Option<Webhooks>, ConfigError> {
    let Some(listen) = section.listen else {
        return Ok(None);
    };
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: format!("webhooks.{key}"),
        message,
    };
    let listen = listen.parse().map_err(|_| {
        invalid(
            "listen",
            format!("{listen:?} is not an address:port (e.g. 0.0.0.0:9188)"),
        )
    })?;
    let max_body = match section.max_body {
        Some(text) => bytes(&text).ok_or_else(|| {
            invalid(
                "max_body",
                format!("{text:?} is not a size between 1KiB and 16MiB (e.g. \"64KiB\")"),
            )
        })?,
        None => DEFAULT_MAX_BODY,
    };
    if section.max_concurrent == Some(0) {
        return Err(invalid("max_concurrent", "must be at least 1".into()));
    }
    Ok(Some(Webhooks {
        listen,
        max_body,
        request_timeout: positive("webhooks.request_timeout", section.request_timeout)?
            .unwrap_or(Duration::from_secs(10)),
        max_concurrent: section.max_concurrent.unwrap_or(64),
    }))
}

/// A size as `64KiB`, `1MiB`, `65536` (bytes), within the bounds the listener takes.
fn bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1024,
        "MiB" | "MB" | "M" => 1024 * 1024,
        _ => return None,
    };
    let n = number.parse::<usize>().ok()?.checked_mul(scale)?;
    (1024..=MAX_MAX_BODY).contains(&n).then_some(n)
}

/// `[connector.webhooks]`.
pub(super) fn connector(
    key: &dyn Fn(&str) -> String,
    section: ConnectorWebhooksSection,
) -> Result<ConnectorWebhooks, ConfigError> {
    let header = section.signature_header.unwrap_or_default();
    let header = header.trim();
    let token = !header.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(ConfigError::Invalid {
            key: key("webhooks.signature_header"),
            message: "required: the name of the header that carries Cleeng's HMAC \
                      (its published pages do not name it: see the README, \"Webhooks\", for how \
                      to read it off a delivery in the sandbox)"
                .into(),
        });
    }
    let mut settings = ConnectorWebhooks::new(&header.to_ascii_lowercase());
    if let Some(name) = section.secret_env {
        settings.secret_env = env_name(&key("webhooks.secret_env"), name, "shared secret")?;
    }
    for (name, value) in [
        ("max_requests_per_second", section.max_requests_per_second),
        ("max_attempts", section.max_attempts),
    ] {
        if value == Some(0) {
            return Err(ConfigError::Invalid {
                key: key(&format!("webhooks.{name}")),
                message: "must be at least 1".into(),
            });
        }
    }
    settings.publisher_id = section.publisher_id;
    if let Some(coalesce) = positive(&key("webhooks.coalesce"), section.coalesce)? {
        settings.coalesce = coalesce;
    }
    if let Some(lease) = positive(&key("webhooks.lease"), section.lease)? {
        settings.lease = lease;
    }
    settings.max_requests_per_second = section
        .max_requests_per_second
        .unwrap_or(settings.max_requests_per_second);
    settings.max_attempts = section.max_attempts.unwrap_or(settings.max_attempts);
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_within_bounds() {
        assert_eq!(bytes("64KiB"), Some(65536));
        assert_eq!(bytes("1MiB"), Some(1 << 20));
        assert_eq!(bytes("2048"), Some(2048));
        assert_eq!(bytes("12"), None);
        assert_eq!(bytes("1GiB"), None);
        assert_eq!(bytes("lots"), None);
    }

    #[test]
    fn the_signature_header_is_required_and_a_header_name() {
        let key = |name: &str| name.to_string();
        for header in [None, Some(""), Some("X Sig"), Some("x-sig:")] {
            let section = ConnectorWebhooksSection {
                signature_header: header.map(str::to_string),
                ..Default::default()
            };
            assert!(connector(&key, section).is_err(), "{header:?} taken");
        }
        let section = ConnectorWebhooksSection {
            signature_header: Some("X-Cleeng-Signature".into()),
            max_requests_per_second: Some(2),
            coalesce: Some("1s".into()),
            ..Default::default()
        };
        let settings = connector(&key, section).expect("valid");
        assert_eq!(settings.signature_header, "x-cleeng-signature");
        assert_eq!(settings.max_requests_per_second, 2);
        assert_eq!(settings.coalesce, Duration::from_secs(1));
        assert_eq!(settings.max_attempts, 5);
    }
}
