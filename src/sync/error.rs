//! What stops a run; each becomes the `message` of a `failed` run.

use crate::export::ExportError;
use crate::source::SourceError;
use crate::store::StoreError;

/// What stops a run; each becomes the `message` of a `failed` run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; nothing was applied")]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no export {key:?} under {location}; check the key, or omit --object to take the newest"
    )]
    NoSuchObject { key: String, location: String },
    #[error(
        "the download of {key} ended after {got} of {expected} bytes; nothing was applied, the next run retries"
    )]
    Truncated {
        key: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "reading and checking {key} took longer than run_timeout ({limit}); nothing was applied: \
         check the network to the source, or raise connector.run_timeout for very large exports"
    )]
    TimedOut { key: String, limit: String },
}
