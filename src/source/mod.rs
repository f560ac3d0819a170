//! Where exports come from: an S3 prefix or a local folder, behind one small trait.

mod fs;
mod resume;
mod s3;

pub use fs::FolderSource;
pub use s3::S3Source;

use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;
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

/// Settings an S3 source needs besides its URL: where it is, and how hard to try.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// AWS region; the standard chain's when `None`, else us-west-2.
    pub region: Option<String>,
    /// Custom endpoint (LocalStack); path-style addressing is used with it.
    pub endpoint_url: Option<String>,
    /// Attempts per request (the first included), in the SDK's standard retry mode:
    /// throttling, 5xx answers, resets and timeouts are retried with exponential
    /// backoff and jitter.
    pub max_attempts: u32,
    /// How often a download whose body is cut mid-way (after the SDK has handed it
    /// over, so it no longer retries) is resumed from where it stopped.
    pub resume_attempts: u32,
    /// A download that receives nothing for this long is cut, then resumed. Long
    /// enough that a slow store does not abort a healthy download.
    pub stall_timeout: Duration,
    /// Connecting, and waiting for an answer's headers, per attempt.
    pub request_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            region: None,
            endpoint_url: None,
            max_attempts: 5,
            resume_attempts: 3,
            stall_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Either kind of source, chosen by URL.
pub enum AnySource {
    /// An S3 prefix.
    S3(S3Source),
    /// A local folder.
    Folder(FolderSource),
}

impl AnySource {
    /// Builds the source a URL names: `s3://bucket/prefix/`, `file:///abs/dir`, or a
    /// plain directory path.
    pub async fn from_url(url: &str, s3: &S3Settings) -> Result<AnySource, SourceError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(SourceError::BadUrl(url.to_string()));
            }
            return Ok(AnySource::S3(S3Source::new(bucket, prefix, s3).await));
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(AnySource::Folder(FolderSource::new(path)));
        }
        if url.contains("://") || url.is_empty() {
            return Err(SourceError::BadUrl(url.to_string()));
        }
        Ok(AnySource::Folder(FolderSource::new(url)))
    }
}

impl Source for AnySource {
    async fn list(&self) -> Result<Vec<ObjectMeta>, SourceError> {
        match self {
            AnySource::S3(s) => s.list().await,
            AnySource::Folder(f) => f.list().await,
        }
    }

    async fn open(&self, object: &ObjectMeta) -> Result<Body, SourceError> {
        match self {
            AnySource::S3(s) => s.open(object).await,
            AnySource::Folder(f) => f.open(object).await,
        }
    }

    fn location(&self) -> String {
        match self {
            AnySource::S3(s) => s.location(),
            AnySource::Folder(f) => f.location(),
        }
    }
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
