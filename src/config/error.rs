//! What can be wrong with a configuration.

use std::path::PathBuf;

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
