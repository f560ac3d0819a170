//! Typed settings: the TOML file, the environment and the flags, validated once.
//!
//! [`settings`] holds the types the program reads (each adapter's own among them:
//! [`S3Settings`], [`CleengSettings`]), [`file`] the file's format, [`load`] the
//! checks and the translation, [`webhooks`] those of the webhook sections, [`deliver`] the change feed's
//! destinations, [`parse`] the
//! day, duration and name values.

mod deliver;
mod error;
mod file;
mod load;
mod parse;
mod settings;
mod webhooks;

pub use error::ConfigError;
pub use parse::{MAX_DAYS, days};
pub use settings::*;
