//! The day and duration values of the settings and the command line.

use super::error::ConfigError;
use std::time::Duration;

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

/// An environment variable's name, as a setting that names where a secret is kept.
pub(super) fn env_name(key: &str, name: String, what: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        return Ok(name);
    }
    Err(ConfigError::Invalid {
        key: key.into(),
        message: format!(
            "{name:?} is not an environment variable name; name the variable that holds the \
             {what} (the {what} itself never goes in this file)"
        ),
    })
}

pub(super) fn positive(key: &str, text: Option<String>) -> Result<Option<Duration>, ConfigError> {
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

    #[test]
    fn days_are_whole() {
        assert_eq!(days("0d"), Ok(0));
        assert_eq!(days("3d"), Ok(3));
        assert_eq!(days("72h"), Ok(3));
        assert!(days("1d 1h").is_err());
        assert!(days("100000d").is_err());
    }
}
