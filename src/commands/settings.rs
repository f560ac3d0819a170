//! From the command line to settings and a source: the one way every command loads them.

use crate::cli::Target;
use crate::config::{ConfigError, Connector, Overrides, Settings};
use crate::source::AnySource;
use std::path::PathBuf;

/// The settings of the config file (if any) with the flags of `target` over them.
pub(super) fn load(
    config: &Option<PathBuf>,
    target: &Target,
    source: Option<String>,
) -> Result<Settings, ConfigError> {
    Settings::load(&Overrides {
        config: config.clone(),
        store: target.store.clone(),
        source,
        connector: target.connector.clone(),
    })
}

/// The source of a connector; a URL it cannot use is a configuration error.
pub(super) async fn source(connector: &Connector) -> Result<AnySource, ConfigError> {
    AnySource::from_url(&connector.source, &connector.s3)
        .await
        .map_err(|e| ConfigError::Invalid {
            key: format!("connector {:?}: source", connector.id),
            message: e.to_string(),
        })
}
