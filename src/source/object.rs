//! What a source lists and opens: an export object, its body, and the one small trait
//! both sources implement.

use chrono::{DateTime, Utc};
use std::future::Future;
use tokio::io::AsyncRead;

/// One export object as listed by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key (S3) or path relative to the folder.
    pub key: String,
    /// Entity tag: S3's ETag, or for a file one derived from size and mtime.
    pub etag: String,
    /// Size in bytes as stored.
    pub size: u64,
    /// When it was written; the newest export is the one to apply.
    pub last_modified: DateTime<Utc>,
    /// What the source's own checksum of it covers.
    pub checksum: StoredChecksum,
}

/// What an object's stored checksum covers, as the listing tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoredChecksum {
    /// The whole object (one upload, or a multipart one with a full-object checksum),
    /// or there is none: the download checks what there is.
    #[default]
    Whole,
    /// One checksum per part, combined (a multipart upload's composite checksum): no
    /// download can check it whole. The run relies on the size, the ETag (If-Match)
    /// and the content's SHA-256 instead.
    Composite {
        /// How many parts, from the ETag's `-N`, when it says.
        parts: Option<u32>,
    },
}

impl ObjectMeta {
    /// Whether the object is gzip-compressed (by its name, as Cleeng delivers it).
    pub fn is_gzip(&self) -> bool {
        self.key.ends_with(".csv.gz")
    }
}

/// Orders exports oldest first: by LastModified, then by key, so that the last one is
/// the export to apply.
pub fn sort_oldest_first(objects: &mut [ObjectMeta]) {
    objects.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
}

/// Whether a key names an export: `.csv` or `.csv.gz`, any case.
pub fn is_export_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower.ends_with(".csv") || lower.ends_with(".csv.gz")
}

/// A readable body: bytes as stored (still compressed for `.csv.gz`).
pub type Body = Box<dyn AsyncRead + Send + Unpin>;

/// Why a source could not list or open exports.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source URL is not one we know.
    #[error(
        "unsupported source {0:?}: use s3://bucket/prefix/, file:///abs/dir, or a directory path"
    )]
    BadUrl(String),
    /// Listing failed (unreachable, denied, no such bucket or folder).
    #[error("cannot list {location}: {detail}")]
    List {
        /// The source, as configured.
        location: String,
        /// What the service or the file system said.
        detail: String,
    },
    /// Opening an object failed.
    #[error("cannot read {location}{key}: {detail}")]
    Open {
        /// The source, as configured.
        location: String,
        /// The object key.
        key: String,
        /// What the service or the file system said.
        detail: String,
    },
}

/// A place that holds exports.
pub trait Source: Send + Sync {
    /// Lists the export objects (`.csv`, `.csv.gz`) under the source, in any order.
    fn list(&self) -> impl Future<Output = Result<Vec<ObjectMeta>, SourceError>> + Send;

    /// Opens an object for streaming. The body must end with an error, not a short
    /// read, if the transfer is cut; the caller also checks the size.
    fn open(&self, object: &ObjectMeta) -> impl Future<Output = Result<Body, SourceError>> + Send;

    /// The source as a person would name it (`s3://bucket/prefix/`, a path).
    fn location(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_export_keys() {
        assert!(is_export_key("cleeng/2026-11-21.csv"));
        assert!(is_export_key("cleeng/2026-11-21.CSV.GZ"));
        assert!(!is_export_key("cleeng/2026-11-21.json"));
        assert!(!is_export_key("cleeng/"));
    }
}
