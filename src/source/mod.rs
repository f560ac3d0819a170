//! Where exports come from: an S3 prefix or a local folder, behind one small trait.

mod fs;
mod object;
mod resume;
mod s3;

pub use fs::FolderSource;
pub use object::{
    Body, ObjectMeta, Source, SourceError, StoredChecksum, is_export_key, sort_oldest_first,
};
pub use s3::S3Source;

use crate::config::S3Settings;

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
