//! Which exports a run looks at, and change detection: whether an object is the
//! export applied last.

use crate::source::ObjectMeta;
use crate::store::AcceptedObject;

/// Change detection, in one place: whether an object is the export applied last. The
/// same key and ETag is the same object, known before downloading; once the content is
/// read (`sha256`), the same content under another key or ETag is the same export.
pub fn same_as(last: &AcceptedObject, object: &ObjectMeta, sha256: Option<&str>) -> bool {
    match sha256 {
        None => last.key == object.key && last.etag == object.etag,
        Some(sha256) => last.sha256 == sha256,
    }
}

/// Delta mode: the exports after the last accepted one, oldest first. If that one is
/// no longer listed, keys sorting after its key (Cleeng names exports by date).
pub fn pending_deltas(sorted: Vec<ObjectMeta>, last: Option<&AcceptedObject>) -> Vec<ObjectMeta> {
    let Some(last) = last else { return sorted };
    match sorted.iter().position(|o| o.key == last.key) {
        Some(i) => sorted.into_iter().skip(i + 1).collect(),
        None => sorted.into_iter().filter(|o| o.key > last.key).collect(),
    }
}
