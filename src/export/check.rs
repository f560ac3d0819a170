//! One CSV record against the template: a typed row, or the reasons it is rejected.

use super::header::{Field, HeaderMap};
use super::offers::UnmappedOffer;
use super::row::{INLINE_TEXT, Row, RowHash, TEXTS, TextBuilder, row_hash};
use super::rules::{PastExpiry, Rules, Warned};
use crate::redact::{mask_email, truncate_chars};
use crate::run::{Reason, Rejection};
use chrono::NaiveDate;
use csv_async::ByteRecord;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// The verdict on one record.
// Most records are valid: boxing the row would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// The record is a valid row (warnings may come with it).
    Valid(Row, Warned),
    /// The record is rejected.
    Rejected {
        /// The subscriber's email when it could be read, so that a subscriber seen
        /// only in rejected rows is not taken as removed.
        email: Option<String>,
        /// Every reason found, at least one.
        rejections: Vec<Rejection>,
    },
}

const VALUE_LIMIT: usize = 200;

/// Cells of a record kept on the stack; a wider export (the template's eleven columns
/// and more than twenty others) puts them on the heap.
const INLINE_CELLS: usize = 32;

/// Checks one record against the template.
pub fn check_record(
    header: &HeaderMap,
    record: &ByteRecord,
    number: u64,
    rules: &Rules,
) -> Checked {
    // The email, when readable, is kept even for broken records (see `Checked::Rejected`).
    // Only read for rejected records: a valid one has its email in the row.
    let rejected = |rejections| Checked::Rejected {
        email: readable_email(header, record),
        rejections,
    };
    if record.len() != header.width() {
        let note = format!("{} fields, header has {}", record.len(), header.width());
        return rejected(vec![rejection(
            number,
            None,
            Reason::WrongFieldCount,
            Some(&note),
        )]);
    }
    // The cells on the stack when the export is as wide as usual: this runs per row.
    let (mut inline, mut spilled) = ([""; INLINE_CELLS], Vec::new());
    let cells: &mut [&str] = if record.len() <= INLINE_CELLS {
        &mut inline[..record.len()]
    } else {
        spilled.resize(record.len(), "");
        &mut spilled
    };
    if let Err(bad) = read_cells(header, record, number, cells) {
        return rejected(vec![bad]);
    }
    let mut cells = Cells {
        header,
        cells,
        number,
        rejections: Vec::new(),
    };
    let Some(f) = cells.fields(rules) else {
        return rejected(cells.rejections);
    };
    let warned = rules.warnings(f.offer_id, f.unmapped, f.expiry_date);
    let mut row = Row {
        record: number,
        expiry_date: f.expiry_date,
        status: f.status,
        payment_method_id: f.payment_method_id,
        season_index: f.season_index,
        coupon_uses: f.coupon_uses,
        row_hash: RowHash([0; 16]),
        text: SmallVec::new(),
        ends: [0; TEXTS],
    };
    (row.text, row.ends) = cells.texts(f.email, f.offer_id, f.external_properties.as_deref());
    row.row_hash = row_hash(&row);
    Checked::Valid(row, warned)
}

/// One rejection of record `number`; an email's value is masked, any other shortened.
fn rejection(number: u64, field: Option<Field>, reason: Reason, value: Option<&str>) -> Rejection {
    let value = value.map(|v| {
        if field == Some(Field::Email) {
            mask_email(v)
        } else {
            truncate_chars(v, VALUE_LIMIT)
        }
    });
    Rejection {
        record: number,
        column: field.map_or("record", Field::name).to_string(),
        reason,
        value,
        email: None,
    }
}

/// The email of a record, if it can be read and is valid, lower-cased.
fn readable_email(header: &HeaderMap, record: &ByteRecord) -> Option<String> {
    header
        .position(Field::Email)
        .and_then(|i| record.get(i))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_lowercase())
        .filter(|e| valid_email(e))
}

/// Each cell of the record as trimmed text, or the rejection of the first that is not
/// UTF-8.
fn read_cells<'r>(
    header: &HeaderMap,
    record: &'r ByteRecord,
    number: u64,
    cells: &mut [&'r str],
) -> Result<(), Rejection> {
    // The record's bytes checked once rather than a cell at a time; a cell is then a
    // slice of them (`get` also checks that it starts and ends on a character).
    let whole = std::str::from_utf8(record.as_slice()).ok();
    for (i, bytes) in record.iter().enumerate() {
        let text = whole.and_then(|all| all.get(record.range(i)?));
        match text.map_or_else(|| std::str::from_utf8(bytes), Ok) {
            Ok(s) => cells[i] = s.trim(),
            Err(_) => {
                let field = Field::ALL
                    .into_iter()
                    .find(|f| header.position(*f) == Some(i));
                let lossy = String::from_utf8_lossy(bytes);
                return Err(rejection(number, field, Reason::InvalidUtf8, Some(&lossy)));
            }
        }
    }
    Ok(())
}

/// A valid record's fields, as its cells gave them.
struct Fields<'r> {
    email: &'r str,
    offer_id: &'r str,
    /// Whether the offer map lacks the offer.
    unmapped: bool,
    expiry_date: NaiveDate,
    status: &'static str,
    payment_method_id: i64,
    season_index: Option<i64>,
    coupon_uses: Option<i64>,
    external_properties: Option<String>,
}

/// A record's cells, read a field at a time, and the rejections found so far. Each
/// field's reading gives `None` when it is rejected, so that every broken field of a
/// record is reported at once.
struct Cells<'c, 'r> {
    header: &'c HeaderMap,
    cells: &'c [&'r str],
    number: u64,
    rejections: Vec<Rejection>,
}

impl<'r> Cells<'_, 'r> {
    /// Every field read, each broken one rejected; the fields when none is.
    fn fields(&mut self, rules: &Rules) -> Option<Fields<'r>> {
        let email = self.email();
        let offer_id = self.offer_id(rules);
        let expiry_date = self.expiry_date(rules);
        let status = self.status();
        let payment_method_id = self.integer(Field::PaymentMethodId, 1, true).flatten();
        let season_index = self.integer(Field::SeasonIndex, 1, false);
        let coupon_uses = self.integer(Field::CouponUses, 0, false);
        let external_properties = self.external_properties();
        // Every field is read first, so that each broken one is reported.
        let (offer_id, unmapped) = offer_id?;
        Some(Fields {
            email: email?,
            offer_id,
            unmapped,
            expiry_date: expiry_date?,
            status: status?,
            payment_method_id: payment_method_id?,
            season_index: season_index?,
            coupon_uses: coupon_uses?,
            external_properties: external_properties?,
        })
    }

    fn reject(&mut self, field: Field, reason: Reason, value: Option<&str>) {
        let rejection = rejection(self.number, Some(field), reason, value);
        self.rejections.push(rejection);
    }

    /// A field's value; an empty cell or a missing column is none.
    fn cell(&self, field: Field) -> Option<&'r str> {
        self.header
            .position(field)
            .map(|i| self.cells[i])
            .filter(|v| !v.is_empty())
    }

    /// A mandatory field's value, or a `missing_value` rejection.
    fn required(&mut self, field: Field) -> Option<&'r str> {
        let value = self.cell(field);
        if value.is_none() {
            self.reject(field, Reason::MissingValue, None);
        }
        value
    }

    fn email(&mut self) -> Option<&'r str> {
        // Lower-casing changes letters only: the rule reads the same on either form,
        // and the lower-cased email is written straight into the row.
        let v = self.required(Field::Email)?;
        if valid_email(v) {
            return Some(v);
        }
        self.reject(Field::Email, Reason::InvalidEmail, Some(v));
        None
    }

    /// The offer id, and whether the offer map lacks it.
    fn offer_id(&mut self, rules: &Rules) -> Option<(&'r str, bool)> {
        let v = self.required(Field::OfferId)?;
        if v.chars().any(char::is_whitespace) {
            self.reject(Field::OfferId, Reason::InvalidOfferId, Some(v));
            return None;
        }
        let unmapped = rules.unmapped(v);
        if unmapped && rules.unmapped_offer == UnmappedOffer::Reject {
            self.reject(Field::OfferId, Reason::UnmappedOffer, Some(v));
            return None;
        }
        Some((v, unmapped))
    }

    fn expiry_date(&mut self, rules: &Rules) -> Option<NaiveDate> {
        let v = self.required(Field::ExpiryDate)?;
        match parse_date(v) {
            Ok(date) if date < rules.today && rules.past_expiry == PastExpiry::Reject => {
                self.reject(Field::ExpiryDate, Reason::DateInPast, Some(v));
                None
            }
            Ok(date) => Some(date),
            Err(reason) => {
                self.reject(Field::ExpiryDate, reason, Some(v));
                None
            }
        }
    }

    fn status(&mut self) -> Option<&'static str> {
        let v = self.required(Field::Status)?;
        if v.eq_ignore_ascii_case("active") {
            Some("active")
        } else if v.eq_ignore_ascii_case("stopped") {
            Some("stopped")
        } else {
            self.reject(Field::Status, Reason::InvalidStatus, Some(v));
            None
        }
    }

    /// An integer of at least `min`: `Some(None)` when an optional one is empty.
    fn integer(&mut self, field: Field, min: i64, mandatory: bool) -> Option<Option<i64>> {
        let v = match self.cell(field) {
            None if mandatory => {
                self.reject(field, Reason::MissingValue, None);
                return None;
            }
            None => return Some(None),
            Some(v) => v,
        };
        match parse_integer(v, min) {
            Ok(n) => Some(Some(n)),
            Err(reason) => {
                self.reject(field, reason, Some(v));
                None
            }
        }
    }

    /// The external properties in canonical form: `Some(None)` when empty.
    fn external_properties(&mut self) -> Option<Option<String>> {
        let Some(v) = self.cell(Field::ExternalProperties) else {
            return Some(None);
        };
        match string_map(v) {
            Ok(json) => Some(Some(json)),
            Err(reason) => {
                self.reject(Field::ExternalProperties, reason, Some(v));
                None
            }
        }
    }

    /// The row's text traits, laid out in its order: the email lower-cased, then the
    /// others, and the columns outside the template as one JSON object.
    fn texts(
        &self,
        email: &str,
        offer_id: &str,
        external_properties: Option<&str>,
    ) -> (SmallVec<[u8; INLINE_TEXT]>, [usize; TEXTS]) {
        let extra: BTreeMap<&str, &str> = self
            .header
            .extra()
            .iter()
            .map(|(i, label)| (label.as_str(), self.cells[*i]))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let mut text = TextBuilder::new();
        push_lowercase(&mut text.text, email);
        text.end();
        text.push(Some(offer_id));
        text.push(self.cell(Field::ExternalId));
        text.push(external_properties);
        text.push(self.cell(Field::CouponCode));
        text.push(self.cell(Field::CampaignName));
        if !extra.is_empty() {
            // A map of strings always serialises.
            if let Ok(json) = serde_json::to_string(&extra) {
                text.text.extend_from_slice(json.as_bytes());
            }
        }
        text.end();
        (text.text, text.ends)
    }
}

/// Appends the text lower-cased, without the Unicode tables when it is ASCII (nearly
/// every email).
pub(super) fn push_lowercase(out: &mut SmallVec<[u8; INLINE_TEXT]>, text: &str) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        out.extend_from_slice(text.to_lowercase().as_bytes());
    }
}

/// The template's email rule: one `@`, a non-empty local part, a dot in the domain,
/// no white space.
pub(super) fn valid_email(email: &str) -> bool {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !email.chars().any(char::is_whitespace)
}

/// `YYYY-MM-DD` exactly, a real date; a date followed by a time is told apart so that
/// the publisher knows to drop the time rather than fix the date.
pub(super) fn parse_date(value: &str) -> Result<NaiveDate, Reason> {
    let strict = |s: &str| {
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if shape {
            // The shape is checked: the numbers are read directly, not through a
            // format string (this runs for every row).
            let number = |r: std::ops::Range<usize>| {
                b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
            };
            let year = i32::try_from(number(0..4)).ok()?;
            NaiveDate::from_ymd_opt(year, number(5..7), number(8..10))
        } else {
            None
        }
    };
    if let Some(date) = strict(value) {
        return Ok(date);
    }
    match (value.get(..10), value.as_bytes().get(10)) {
        (Some(day), Some(b'T' | b't' | b' ')) if strict(day).is_some() => {
            Err(Reason::TimestampNotAllowed)
        }
        _ => Err(Reason::InvalidDate),
    }
}

/// An integer of at least `min`. Digits that overflow are out of range, not "not an
/// integer": the value is a number, just not one we can keep.
pub(super) fn parse_integer(value: &str, min: i64) -> Result<i64, Reason> {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::NotAnInteger);
    }
    match value.parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Reason::OutOfRange),
    }
}

/// External properties: a JSON object whose values are all strings, returned in
/// canonical form (keys sorted, no white space) so that formatting does not count as
/// a change.
pub(super) fn string_map(value: &str) -> Result<String, Reason> {
    // Nearly always an object of plain strings: read borrowed, without a value tree.
    // Escaped strings, other values and broken JSON take the general way below.
    if let Ok(map) = serde_json::from_str::<BTreeMap<&str, &str>>(value) {
        return serde_json::to_string(&map).map_err(|_| Reason::InvalidJson);
    }
    let parsed: serde_json::Value = serde_json::from_str(value).map_err(|_| Reason::InvalidJson)?;
    match parsed {
        serde_json::Value::Object(map) if map.values().all(serde_json::Value::is_string) => {
            serde_json::to_string(&map).map_err(|_| Reason::InvalidJson)
        }
        _ => Err(Reason::JsonNotStringMap),
    }
}
