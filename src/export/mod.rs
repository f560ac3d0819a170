//! Cleeng's Web Subscription Data template: which columns an export has, how one
//! record becomes a typed row or a list of rejections, and the streaming reader that
//! turns a body of bytes into checked records.
//!
//! The template's considerations are checked here too: localized offers (`offers`) and
//! the expiry buffer.
//!
//! Nothing here knows where the bytes come from (S3, a folder) or where rows go.

mod check;
mod header;
mod offers;
#[cfg(test)]
mod properties;
mod reader;
#[cfg(test)]
mod record_tests;
mod row;
mod rules;

pub use check::{Checked, check_record};
pub use header::{Field, HeaderError, HeaderMap, normalize_label};
pub use offers::{Offers, OffersError, Placement, UnmappedOffer, country_of, usual_offer_id};
pub use reader::{Batch, ContentDigest, ExportError, ExportReader, ReadAhead};
pub use row::{HexHash, Row, RowHash, Traits, iso_date};
pub use rules::{DEFAULT_EXPIRY_BUFFER_DAYS, PastExpiry, Rules, Warned, Warning};
