//! Cleeng's Web Subscription Data template: which columns an export has, how one
//! record becomes a typed row or a list of rejections, and the streaming reader that
//! turns a body of bytes into checked records.
//!
//! Nothing here knows where the bytes come from (S3, a folder) or where rows go.

mod header;
#[cfg(test)]
mod properties;
mod reader;
mod record;

pub use header::{Field, HeaderError, HeaderMap, normalize_label};
pub use reader::{Batch, ContentDigest, ExportError, ExportReader, ReadAhead};
pub use record::{
    Checked, HexHash, PastExpiry, Row, RowHash, Rules, Warning, check_record, iso_date,
};
