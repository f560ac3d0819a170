//! A local folder of exports: for trying the product, for tests, and for deliveries
//! synced to disk by other means.

use super::object::{Body, ObjectMeta, Source, SourceError, StoredChecksum, is_export_key};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Exports in a folder (not recursive).
pub struct FolderSource {
    root: PathBuf,
}

impl FolderSource {
    /// A source reading the folder at `root`.
    pub fn new(root: impl AsRef<Path>) -> FolderSource {
        FolderSource {
            root: root.as_ref().to_path_buf(),
        }
    }

    fn list_error(&self, e: std::io::Error) -> SourceError {
        SourceError::List {
            location: self.location(),
            detail: e.to_string(),
        }
    }
}

impl Source for FolderSource {
    async fn list(&self) -> Result<Vec<ObjectMeta>, SourceError> {
        let mut entries = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|e| self.list_error(e))?;
        let mut objects = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| self.list_error(e))? {
            let key = entry.file_name().to_string_lossy().into_owned();
            // Follows symbolic links: a folder of exports may link to where they landed.
            let meta = tokio::fs::metadata(entry.path())
                .await
                .map_err(|e| self.list_error(e))?;
            if !meta.is_file() || !is_export_key(&key) {
                continue;
            }
            let modified = meta.modified().map_err(|e| self.list_error(e))?;
            let nanos = modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            objects.push(ObjectMeta {
                etag: format!("\"{:x}-{:x}\"", meta.len(), nanos),
                size: meta.len(),
                last_modified: DateTime::<Utc>::from(modified),
                checksum: StoredChecksum::Whole,
                key,
            });
        }
        Ok(objects)
    }

    async fn open(&self, object: &ObjectMeta) -> Result<Body, SourceError> {
        let file = tokio::fs::File::open(self.root.join(&object.key))
            .await
            .map_err(|e| SourceError::Open {
                location: self.location(),
                key: object.key.clone(),
                detail: e.to_string(),
            })?;
        Ok(Box::new(file))
    }

    fn location(&self) -> String {
        let mut shown = self.root.display().to_string();
        if !shown.ends_with('/') {
            shown.push('/');
        }
        shown
    }
}
