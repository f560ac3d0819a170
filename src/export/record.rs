//! One CSV record against the template: a typed row, or the reasons it is rejected.

use super::header::{Field, HeaderMap};
use super::offers::{Offers, UnmappedOffer, usual_offer_id};
use crate::redact::{mask_email, truncate_chars};
use crate::run::{Reason, Rejection, WarningCode};
use chrono::{Datelike, NaiveDate};
use csv_async::ByteRecord;
use serde::Deserialize;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What to do with an expiry date before today (the template says "must not be in
/// the past"; some publishers export lapsed subscriptions on purpose).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PastExpiry {
    /// Reject the record with `date_in_past`.
    #[default]
    Reject,
    /// Accept it.
    Accept,
}

/// The rules that depend on the connector and the day.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Today in the connector's time zone.
    pub today: NaiveDate,
    /// Whether an expiry date before `today` is rejected.
    pub past_expiry: PastExpiry,
    /// Days after today that an expiry date is warned about (`expiry_within_buffer`);
    /// 0 turns the warning off.
    pub expiry_buffer_days: u32,
    /// The connector's localized offers; empty when no map is configured.
    pub offers: Arc<Offers>,
    /// What an offer the map does not list gets (with a map only).
    pub unmapped_offer: UnmappedOffer,
}

/// Default of `expiry_buffer`: three days to move payment details.
pub const DEFAULT_EXPIRY_BUFFER_DAYS: u32 = 3;

impl Rules {
    /// The template's rules on `today`, with every connector setting at its default.
    pub fn new(today: NaiveDate) -> Rules {
        Rules {
            today,
            past_expiry: PastExpiry::Reject,
            expiry_buffer_days: DEFAULT_EXPIRY_BUFFER_DAYS,
            offers: Arc::default(),
            unmapped_offer: UnmappedOffer::Warn,
        }
    }

    /// Whether the expiry date falls from today to the end of the buffer, both included.
    pub fn within_buffer(&self, expiry: NaiveDate) -> bool {
        let days = (expiry - self.today).num_days();
        self.expiry_buffer_days > 0 && (0..=i64::from(self.expiry_buffer_days)).contains(&days)
    }

    /// The warnings of a valid row whose offer the map does or does not list.
    fn warnings(&self, offer_id: &str, unmapped: bool, expiry: NaiveDate) -> Warned {
        let mut warned = Warned::default();
        if !usual_offer_id(offer_id) {
            warned.add(WarningCode::OfferIdPattern);
        }
        if unmapped {
            warned.add(WarningCode::UnmappedOffer);
        }
        if self.within_buffer(expiry) {
            warned.add(WarningCode::ExpiryWithinBuffer);
        }
        warned
    }

    /// Whether a map is configured and does not list the offer: looked up once a row.
    fn unmapped(&self, offer_id: &str) -> bool {
        !self.offers.is_empty() && self.offers.plan_of(offer_id).is_none()
    }
}

/// A record that passed validation: one subscriber's traits.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// CSV record number (header = 1).
    pub record: u64,
    /// Expiry date.
    pub expiry_date: NaiveDate,
    /// `active` or `stopped`.
    pub status: &'static str,
    /// Payment method ID, > 0.
    pub payment_method_id: i64,
    /// Season index, >= 1.
    pub season_index: Option<i64>,
    /// Coupon Already Used, >= 0.
    pub coupon_uses: Option<i64>,
    /// Hash of the canonical traits: equal hashes mean nothing to update.
    pub row_hash: RowHash,
    /// The text traits back to back, in [`Text`] order, in the row itself unless they
    /// are long: no allocation per row (the parser allocated, the store's thread
    /// freed: glibc's slowest case, a tenth of a changed night's time).
    text: SmallVec<[u8; INLINE_TEXT]>,
    /// Where each text trait ends in `text`; it starts where the one before ends.
    /// Optional traits are never empty when present, so an empty one is absent.
    ends: [usize; TEXTS],
}

/// The text traits of a [`Row`], in the order they are laid out.
#[derive(Debug, Clone, Copy)]
enum Text {
    Email,
    OfferId,
    ExternalId,
    ExternalProperties,
    CouponCode,
    CampaignName,
    Extra,
}

const TEXTS: usize = 7;

/// Bytes of text traits kept in the row itself; a usual row has about a hundred.
const INLINE_TEXT: usize = 160;

impl Row {
    /// Trimmed, lower-cased.
    pub fn email(&self) -> &str {
        self.text(Text::Email)
    }

    /// Offer ID.
    pub fn offer_id(&self) -> &str {
        self.text(Text::OfferId)
    }

    /// Subscription external ID.
    pub fn external_id(&self) -> Option<&str> {
        self.optional(Text::ExternalId)
    }

    /// External properties as canonical JSON text (keys sorted).
    pub fn external_properties(&self) -> Option<&str> {
        self.optional(Text::ExternalProperties)
    }

    /// Coupon code.
    pub fn coupon_code(&self) -> Option<&str> {
        self.optional(Text::CouponCode)
    }

    /// Campaign name.
    pub fn campaign_name(&self) -> Option<&str> {
        self.optional(Text::CampaignName)
    }

    /// Columns the template does not name, as a JSON object of strings (keys sorted).
    pub fn extra(&self) -> Option<&str> {
        self.optional(Text::Extra)
    }

    fn text(&self, field: Text) -> &str {
        let i = field as usize;
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        // Laid out from whole `&str`s, cut where one ends: always UTF-8.
        self.text
            .get(start..self.ends[i])
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    fn optional(&self, field: Text) -> Option<&str> {
        Some(self.text(field)).filter(|t| !t.is_empty())
    }

    /// Appends the row as bytes that [`Row::decode`] reads back: for rows that wait on
    /// local disk while a large run is planned in passes (`store::passes`). Not a stored
    /// format: written and read by the same process.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.record.to_le_bytes());
        out.extend_from_slice(&self.expiry_date.num_days_from_ce().to_le_bytes());
        out.push(u8::from(self.status == "stopped"));
        out.extend_from_slice(&self.payment_method_id.to_le_bytes());
        for n in [self.season_index, self.coupon_uses] {
            match n {
                Some(n) => {
                    out.push(1);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&self.row_hash.0);
        for end in self.ends {
            // A row's text is one CSV record's worth: far below 4 GiB.
            out.extend_from_slice(&(end as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.text);
    }

    /// A row from the bytes [`Row::encode`] wrote; `None` if they are not such bytes.
    pub fn decode(bytes: &[u8]) -> Option<Row> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let record = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let days = i32::from_le_bytes(take(4)?.try_into().ok()?);
        let expiry_date = NaiveDate::from_num_days_from_ce_opt(days)?;
        let status = match take(1)?[0] {
            0 => "active",
            _ => "stopped",
        };
        let payment_method_id = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut optional = || -> Option<Option<i64>> {
            match take(1)?[0] {
                0 => Some(None),
                _ => Some(Some(i64::from_le_bytes(take(8)?.try_into().ok()?))),
            }
        };
        let season_index = optional()?;
        let coupon_uses = optional()?;
        let row_hash = RowHash(take(16)?.try_into().ok()?);
        let mut ends = [0usize; TEXTS];
        for end in &mut ends {
            *end = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        }
        let text = SmallVec::from_slice(rest);
        // The text accessors slice by `ends`: they must lie in order within it, on
        // character boundaries (checked as UTF-8 once, here).
        let in_order = ends.windows(2).all(|w| w[0] <= w[1]) && ends[TEXTS - 1] == text.len();
        (in_order && std::str::from_utf8(&text).is_ok()).then_some(Row {
            record,
            expiry_date,
            status,
            payment_method_id,
            season_index,
            coupon_uses,
            row_hash,
            text,
            ends,
        })
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("record", &self.record)
            .field("email", &self.email())
            .field("offer_id", &self.offer_id())
            .field("expiry_date", &self.expiry_date)
            .field("status", &self.status)
            .field("payment_method_id", &self.payment_method_id)
            .field("external_id", &self.external_id())
            .field("external_properties", &self.external_properties())
            .field("season_index", &self.season_index)
            .field("coupon_code", &self.coupon_code())
            .field("campaign_name", &self.campaign_name())
            .field("coupon_uses", &self.coupon_uses)
            .field("extra", &self.extra())
            .field("row_hash", &self.row_hash)
            .finish()
    }
}

/// Lays out a row's text traits, in [`Text`] order.
struct TextBuilder {
    text: SmallVec<[u8; INLINE_TEXT]>,
    ends: [usize; TEXTS],
    next: usize,
}

impl TextBuilder {
    fn new() -> TextBuilder {
        TextBuilder {
            text: SmallVec::new(),
            ends: [0; TEXTS],
            next: 0,
        }
    }

    /// Ends the current trait.
    fn end(&mut self) {
        self.ends[self.next] = self.text.len();
        self.next += 1;
    }

    fn push(&mut self, value: Option<&str>) {
        self.text
            .extend_from_slice(value.unwrap_or_default().as_bytes());
        self.end();
    }
}

/// A row's hash: 128 bits of SHA-256 over its canonical traits. Kept as bytes while the
/// row travels (no allocation, and the held hashes are looked up without decoding);
/// stored as its 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHash(pub [u8; 16]);

impl RowHash {
    /// The 32 lower-case hex digits the stores keep.
    pub fn hex(&self) -> HexHash {
        let mut hex = [0u8; 32];
        // 32 output bytes for 16 input bytes: the sizes agree, it cannot fail.
        let _ = hex::encode_to_slice(self.0, &mut hex);
        HexHash(hex)
    }
}

/// A row hash in hex, on the stack.
pub struct HexHash([u8; 32]);

impl HexHash {
    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The warnings of one valid record, as a set of codes: counting them costs nothing
/// per row; [`Warning::describe`] writes the message when a person reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warned(u8);

impl Warned {
    fn add(&mut self, code: WarningCode) {
        self.0 |= 1 << code as u8;
    }

    /// Whether the record has this warning.
    pub fn contains(self, code: WarningCode) -> bool {
        self.0 & (1 << code as u8) != 0
    }

    /// Whether it has none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Its codes, in [`WarningCode::ALL`] order.
    pub fn codes(self) -> impl Iterator<Item = WarningCode> {
        WarningCode::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

/// A non-fatal remark about a valid record, as `validate` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// CSV record number.
    pub record: u64,
    /// The template field.
    pub column: &'static str,
    /// Stable code.
    pub code: WarningCode,
    /// What is unusual, for a person.
    pub message: String,
}

impl Warning {
    /// The warning `code` of a valid row, in words.
    pub fn describe(code: WarningCode, row: &Row, rules: &Rules) -> Warning {
        let offer = row.offer_id();
        let message = match code {
            WarningCode::OfferIdPattern => {
                format!("offer ID {offer:?} does not follow the pattern S123456789_PL")
            }
            WarningCode::UnmappedOffer => {
                format!("offer ID {offer:?} is in no plan of the connector's offer map")
            }
            WarningCode::ExpiryWithinBuffer => {
                let days = (row.expiry_date - rules.today).num_days();
                let when = match days {
                    0 => "today".to_string(),
                    1 => "tomorrow".to_string(),
                    n => format!("in {n} days"),
                };
                format!(
                    "expires {when} ({}), within the {}-day buffer: Cleeng charges or terminates it that day",
                    row.expiry_date, rules.expiry_buffer_days
                )
            }
        };
        Warning {
            record: row.record,
            column: code.column(),
            code,
            message,
        }
    }
}

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
    let mut rejections = Vec::new();
    let reject = |rejections: &mut Vec<Rejection>,
                  field: Option<Field>,
                  reason: Reason,
                  value: Option<&str>| {
        let column = field.map_or("record", Field::name).to_string();
        let value = value.map(|v| {
            if field == Some(Field::Email) {
                mask_email(v)
            } else {
                truncate_chars(v, VALUE_LIMIT)
            }
        });
        rejections.push(Rejection {
            record: number,
            column,
            reason,
            value,
            email: None,
        });
    };

    // The email, when readable, is kept even for broken records (see `Checked::Rejected`).
    // Only read for rejected records: a valid one has its email in the row.
    let readable_email = || {
        header
            .position(Field::Email)
            .and_then(|i| record.get(i))
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(|s| s.trim().to_lowercase())
            .filter(|e| valid_email(e))
    };

    if record.len() != header.width() {
        let note = format!("{} fields, header has {}", record.len(), header.width());
        reject(&mut rejections, None, Reason::WrongFieldCount, Some(&note));
        return Checked::Rejected {
            email: readable_email(),
            rejections,
        };
    }
    // The cells on the stack when the export is as wide as usual: this runs per row.
    let (mut inline, mut spilled) = ([""; INLINE_CELLS], Vec::new());
    let cells: &mut [&str] = if record.len() <= INLINE_CELLS {
        &mut inline[..record.len()]
    } else {
        spilled.resize(record.len(), "");
        &mut spilled
    };
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
                reject(&mut rejections, field, Reason::InvalidUtf8, Some(&lossy));
                return Checked::Rejected {
                    email: readable_email(),
                    rejections,
                };
            }
        }
    }
    let cell = |field: Field| -> Option<&str> {
        header
            .position(field)
            .map(|i| cells[i])
            .filter(|v| !v.is_empty())
    };

    let email = match cell(Field::Email) {
        None => {
            reject(
                &mut rejections,
                Some(Field::Email),
                Reason::MissingValue,
                None,
            );
            None
        }
        // Lower-casing changes letters only: the rule reads the same on either form,
        // and the lower-cased email is written straight into the row.
        Some(v) if valid_email(v) => Some(v),
        Some(v) => {
            reject(
                &mut rejections,
                Some(Field::Email),
                Reason::InvalidEmail,
                Some(v),
            );
            None
        }
    };

    let offer_id = match cell(Field::OfferId) {
        None => {
            reject(
                &mut rejections,
                Some(Field::OfferId),
                Reason::MissingValue,
                None,
            );
            None
        }
        Some(v) if v.chars().any(char::is_whitespace) => {
            reject(
                &mut rejections,
                Some(Field::OfferId),
                Reason::InvalidOfferId,
                Some(v),
            );
            None
        }
        Some(v) => {
            let unmapped = rules.unmapped(v);
            if unmapped && rules.unmapped_offer == UnmappedOffer::Reject {
                reject(
                    &mut rejections,
                    Some(Field::OfferId),
                    Reason::UnmappedOffer,
                    Some(v),
                );
                None
            } else {
                Some((v, unmapped))
            }
        }
    };

    let expiry_date = match cell(Field::ExpiryDate) {
        None => {
            reject(
                &mut rejections,
                Some(Field::ExpiryDate),
                Reason::MissingValue,
                None,
            );
            None
        }
        Some(v) => match parse_date(v) {
            Ok(date) if date < rules.today && rules.past_expiry == PastExpiry::Reject => {
                reject(
                    &mut rejections,
                    Some(Field::ExpiryDate),
                    Reason::DateInPast,
                    Some(v),
                );
                None
            }
            Ok(date) => Some(date),
            Err(reason) => {
                reject(&mut rejections, Some(Field::ExpiryDate), reason, Some(v));
                None
            }
        },
    };

    let status = match cell(Field::Status) {
        None => {
            reject(
                &mut rejections,
                Some(Field::Status),
                Reason::MissingValue,
                None,
            );
            None
        }
        Some(v) if v.eq_ignore_ascii_case("active") => Some("active"),
        Some(v) if v.eq_ignore_ascii_case("stopped") => Some("stopped"),
        Some(v) => {
            reject(
                &mut rejections,
                Some(Field::Status),
                Reason::InvalidStatus,
                Some(v),
            );
            None
        }
    };

    let mut integer = |field: Field, min: i64, mandatory: bool| -> Option<Option<i64>> {
        match cell(field) {
            None if mandatory => {
                reject(&mut rejections, Some(field), Reason::MissingValue, None);
                None
            }
            None => Some(None),
            Some(v) => match parse_integer(v, min) {
                Ok(n) => Some(Some(n)),
                Err(reason) => {
                    reject(&mut rejections, Some(field), reason, Some(v));
                    None
                }
            },
        }
    };
    let payment_method_id = integer(Field::PaymentMethodId, 1, true).flatten();
    let season_index = integer(Field::SeasonIndex, 1, false);
    let coupon_uses = integer(Field::CouponUses, 0, false);

    let external_properties = match cell(Field::ExternalProperties) {
        None => Some(None),
        Some(v) => match string_map(v) {
            Ok(json) => Some(Some(json)),
            Err(reason) => {
                reject(
                    &mut rejections,
                    Some(Field::ExternalProperties),
                    reason,
                    Some(v),
                );
                None
            }
        },
    };

    let (
        Some(email),
        Some((offer_id, unmapped)),
        Some(expiry_date),
        Some(status),
        Some(payment_method_id),
        Some(season_index),
        Some(coupon_uses),
        Some(external_properties),
    ) = (
        email,
        offer_id,
        expiry_date,
        status,
        payment_method_id,
        season_index,
        coupon_uses,
        external_properties,
    )
    else {
        return Checked::Rejected {
            email: readable_email(),
            rejections,
        };
    };

    let extra: BTreeMap<&str, &str> = header
        .extra()
        .iter()
        .map(|(i, label)| (label.as_str(), cells[*i]))
        .filter(|(_, v)| !v.is_empty())
        .collect();

    let warned = rules.warnings(offer_id, unmapped, expiry_date);

    let mut text = TextBuilder::new();
    push_lowercase(&mut text.text, email);
    text.end();
    text.push(Some(offer_id));
    text.push(cell(Field::ExternalId));
    text.push(external_properties.as_deref());
    text.push(cell(Field::CouponCode));
    text.push(cell(Field::CampaignName));
    if !extra.is_empty() {
        // A map of strings always serialises.
        if let Ok(json) = serde_json::to_string(&extra) {
            text.text.extend_from_slice(json.as_bytes());
        }
    }
    text.end();
    let mut row = Row {
        record: number,
        expiry_date,
        status,
        payment_method_id,
        season_index,
        coupon_uses,
        row_hash: RowHash([0; 16]),
        text: text.text,
        ends: text.ends,
    };
    row.row_hash = row_hash(&row);
    Checked::Valid(row, warned)
}

/// Appends the text lower-cased, without the Unicode tables when it is ASCII (nearly
/// every email).
fn push_lowercase(out: &mut SmallVec<[u8; INLINE_TEXT]>, text: &str) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        out.extend_from_slice(text.to_lowercase().as_bytes());
    }
}

/// The template's email rule: one `@`, a non-empty local part, a dot in the domain,
/// no white space.
fn valid_email(email: &str) -> bool {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !email.chars().any(char::is_whitespace)
}

/// `YYYY-MM-DD` exactly, a real date; a date followed by a time is told apart so that
/// the publisher knows to drop the time rather than fix the date.
fn parse_date(value: &str) -> Result<NaiveDate, Reason> {
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
fn parse_integer(value: &str, min: i64) -> Result<i64, Reason> {
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
fn string_map(value: &str) -> Result<String, Reason> {
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

/// A date as the template writes it, `YYYY-MM-DD`, without a formatter: this runs
/// for every row. Validated dates have four-digit years.
pub fn iso_date(date: NaiveDate) -> [u8; 10] {
    let (y, m, d) = (date.year().clamp(0, 9999) as u32, date.month(), date.day());
    let digit = |n: u32| b'0' + (n % 10) as u8;
    [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'-',
        digit(m / 10),
        digit(m),
        b'-',
        digit(d / 10),
        digit(d),
    ]
}

/// The canonical hash of a row's traits (not its record number): 128 bits of SHA-256
/// over the fields, each prefixed with a presence marker so that `None` and `""`
/// differ and no two rows can collide by shifting a separator.
fn row_hash(row: &Row) -> RowHash {
    thread_local! {
        /// The canonical bytes of the row being hashed, reused from row to row.
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CANONICAL.with_borrow_mut(|bytes| {
        bytes.clear();
        canonical(row, bytes);
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&sha256(bytes).as_ref()[..16]);
        RowHash(hash)
    })
}

/// Lays out the fields the row hash covers: they are laid out first and hashed in one
/// call, as SHA-256 fed a field at a time spends as long on its buffering as on the
/// rounds.
fn canonical(row: &Row, bytes: &mut Vec<u8>) {
    let mut field = |value: Option<&str>| match value {
        None => bytes.push(0u8),
        Some(v) => {
            bytes.push(1u8);
            bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
            bytes.extend_from_slice(v.as_bytes());
        }
    };
    let date = iso_date(row.expiry_date);
    let mut pm = itoa::Buffer::new();
    let (mut season, mut uses) = (itoa::Buffer::new(), itoa::Buffer::new());
    let date = std::str::from_utf8(&date).unwrap_or_default();
    let pm = pm.format(row.payment_method_id);
    let season = row.season_index.map(|n| season.format(n));
    let uses = row.coupon_uses.map(|n| uses.format(n));
    field(Some(row.email()));
    field(Some(row.offer_id()));
    field(Some(date));
    field(Some(row.status));
    field(Some(pm));
    field(row.external_id());
    field(row.external_properties());
    field(season);
    field(row.coupon_code());
    field(row.campaign_name());
    field(uses);
    field(row.extra());
}

/// SHA-256 by ring (already linked for TLS), whose assembly runs about twice as fast
/// as the portable code on processors without the SHA extensions.
fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(labels: &[&str]) -> HeaderMap {
        HeaderMap::new(labels.iter().map(|l| l.as_bytes()), &BTreeMap::new()).unwrap()
    }

    fn rules() -> Rules {
        Rules::new(NaiveDate::from_ymd_opt(2026, 6, 1).unwrap())
    }

    const FULL: [&str; 12] = [
        "email",
        "offer_id",
        "expiry_date",
        "status",
        "payment_method_id",
        "external_id",
        "external_properties",
        "season_index",
        "coupon_code",
        "campaign_name",
        "coupon_uses",
        "Region",
    ];

    /// Checks a record given as `|`-separated cells (JSON cells hold commas).
    fn check_with(line: &str, rules: &Rules) -> Checked {
        let cells: Vec<&str> = line.split('|').collect();
        check_record(&header(&FULL), &ByteRecord::from(cells), 2, rules)
    }

    fn check(line: &str) -> Checked {
        check_with(line, &rules())
    }

    fn reasons(checked: &Checked) -> Vec<(String, Reason)> {
        match checked {
            Checked::Valid(..) => vec![],
            Checked::Rejected { rejections, .. } => rejections
                .iter()
                .map(|r| (r.column.clone(), r.reason))
                .collect(),
        }
    }

    fn row_hash_of(line: &str) -> String {
        match check(line) {
            Checked::Valid(row, _) => row.row_hash.hex().as_str().to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_record_becomes_a_typed_row() {
        let checked = check(
            r#" Ann@Example.COM |S123456789_PL|2030-01-31|Active|42|ext-1|{"b":"2", "a":"1"}|3|Free4Me|Winter|0|EU"#,
        );
        let Checked::Valid(row, warned) = checked else {
            panic!("{checked:?}")
        };
        assert!(warned.is_empty());
        assert_eq!(row.email(), "ann@example.com");
        assert_eq!(row.status, "active");
        assert_eq!(row.external_properties(), Some(r#"{"a":"1","b":"2"}"#));
        assert_eq!(row.extra(), Some(r#"{"Region":"EU"}"#));
        assert_eq!((row.season_index, row.coupon_uses), (Some(3), Some(0)));
        // Stored hashes are compared with the next export's: the hash of a row must
        // never change between versions, or every subscriber would read as updated.
        assert_eq!(
            row.row_hash.hex().as_str(),
            "6500b188bd11774683a8ca83f12841c7"
        );
    }

    #[test]
    fn a_character_split_across_two_cells_is_invalid_utf8() {
        // Together the two bytes are "é": valid as a record, not as cells.
        let mut cells: Vec<&[u8]> = FULL.iter().map(|_| b"" as &[u8]).collect();
        cells[0] = b"a@b.co";
        cells[1] = b"S123456789_PL";
        cells[2] = b"2030-01-01";
        cells[3] = b"active";
        cells[4] = b"1";
        cells[8] = b"\xc3";
        cells[9] = b"\xa9";
        let checked = check_record(&header(&FULL), &ByteRecord::from(cells), 2, &rules());
        assert_eq!(
            reasons(&checked),
            vec![("coupon_code".into(), Reason::InvalidUtf8)]
        );
    }

    #[test]
    fn long_and_non_ascii_traits_read_back_whole() {
        // Past the bytes a row keeps inline, and with characters of several bytes.
        let long = "x".repeat(300);
        let checked = check(&format!(
            "ÉVA@exemple.fr|S123456789_PL|2030-01-31|active|1|{long}|{{\"città\":\"Zürich\"}}||é|{long}||Ünïcode"
        ));
        let Checked::Valid(row, _) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(row.email(), "éva@exemple.fr");
        assert_eq!(row.external_id(), Some(long.as_str()));
        assert_eq!(row.external_properties(), Some(r#"{"città":"Zürich"}"#));
        assert_eq!(row.coupon_code(), Some("é"));
        assert_eq!(row.campaign_name(), Some(long.as_str()));
        assert_eq!(row.extra(), Some(r#"{"Region":"Ünïcode"}"#));
    }

    #[test]
    fn a_row_read_back_from_its_bytes_is_the_same_row() {
        let long = "x".repeat(300);
        for line in [
            r#" Ann@Example.COM |S123456789_PL|2030-01-31|Active|42|ext-1|{"b":"2", "a":"1"}|3|Free4Me|Winter|0|EU"#.to_string(),
            "b@example.com|S123456789_PL|2031-02-28|stopped|7|||||||".to_string(),
            format!("ÉVA@exemple.fr|S123456789_PL|2030-01-31|active|1|{long}|{{\"città\":\"Zürich\"}}||é|{long}||Ünïcode"),
        ] {
            let Checked::Valid(row, _) = check(&line) else {
                panic!("{line}")
            };
            let mut bytes = Vec::new();
            row.encode(&mut bytes);
            assert_eq!(Row::decode(&bytes).as_ref(), Some(&row), "{line}");
            // Cut short, or its text lengths wrong: not a row.
            assert_eq!(Row::decode(&bytes[..bytes.len() - 1]), None, "{line}");
            assert_eq!(Row::decode(&bytes[..20]), None, "{line}");
        }
    }

    #[test]
    fn iso_dates_are_written_as_the_template_writes_them() {
        for (y, m, d) in [(2030, 1, 31), (999, 12, 1), (9999, 10, 9)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(
                std::str::from_utf8(&iso_date(date)).unwrap(),
                date.format("%Y-%m-%d").to_string()
            );
        }
    }

    #[test]
    fn every_broken_field_is_reported_once() {
        let checked = check("||2030-02-30|paused|x||[1]|0|||-1|");
        assert_eq!(
            reasons(&checked),
            vec![
                ("email".into(), Reason::MissingValue),
                ("offer_id".into(), Reason::MissingValue),
                ("expiry_date".into(), Reason::InvalidDate),
                ("status".into(), Reason::InvalidStatus),
                ("payment_method_id".into(), Reason::NotAnInteger),
                ("season_index".into(), Reason::OutOfRange),
                ("coupon_uses".into(), Reason::OutOfRange),
                ("external_properties".into(), Reason::JsonNotStringMap),
            ]
        );
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(
            parse_date("2030-01-01"),
            Ok(NaiveDate::from_ymd_opt(2030, 1, 1).unwrap())
        );
        assert_eq!(
            parse_date("2030-01-01T10:00:00Z"),
            Err(Reason::TimestampNotAllowed)
        );
        assert_eq!(
            parse_date("2030-01-01 10:00"),
            Err(Reason::TimestampNotAllowed)
        );
        assert_eq!(parse_date("2030-1-01"), Err(Reason::InvalidDate));
        assert_eq!(parse_date("01/02/2030"), Err(Reason::InvalidDate));
        assert_eq!(parse_date("2030-13-01"), Err(Reason::InvalidDate));
    }

    #[test]
    fn past_expiry_follows_the_connector_setting() {
        let line = "a@b.co|S123456789_PL|2026-05-31|active|1|||||||";
        assert_eq!(
            reasons(&check(line)),
            vec![("expiry_date".into(), Reason::DateInPast)]
        );
        let lenient = Rules {
            past_expiry: PastExpiry::Accept,
            ..rules()
        };
        assert!(matches!(check_with(line, &lenient), Checked::Valid(..)));
        let today = "a@b.co|S123456789_PL|2026-06-01|active|1|||||||";
        assert!(
            matches!(check(today), Checked::Valid(..)),
            "today is not in the past"
        );
    }

    #[test]
    fn integers_tell_overflow_from_garbage() {
        assert_eq!(parse_integer("12", 1), Ok(12));
        assert_eq!(parse_integer("1.0", 1), Err(Reason::NotAnInteger));
        assert_eq!(
            parse_integer("99999999999999999999", 1),
            Err(Reason::OutOfRange)
        );
        assert_eq!(parse_integer("0", 1), Err(Reason::OutOfRange));
    }

    #[test]
    fn rejected_records_keep_a_readable_email_and_mask_it() {
        let Checked::Rejected { email, rejections } =
            check("Bob@Example.com|S1 2|2030-01-01|active|1|||||||")
        else {
            panic!()
        };
        assert_eq!(email.as_deref(), Some("bob@example.com"));
        assert_eq!(rejections[0].reason, Reason::InvalidOfferId);

        let Checked::Rejected { email, rejections } =
            check("bob example.com|S1|2030-01-01|active|1|||||||")
        else {
            panic!()
        };
        assert_eq!(email, None);
        assert_eq!(rejections[0].value.as_deref(), Some("b***"));
    }

    #[test]
    fn the_hash_ignores_formatting_but_not_values() {
        let base = row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|active|1||{"x":"1"}|||||"#);
        let reformatted =
            row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|ACTIVE|1||{ "x" : "1" }|||||"#);
        let changed = row_hash_of(r#"a@b.co|S123456789_PL|2030-01-01|active|1||{"x":"1"}||NEW|||"#);
        assert_eq!(base, reformatted);
        assert_ne!(base, changed);
    }

    /// Stored rows carry their hash: were it computed differently, the next run would
    /// update every subscriber of every store. The value is what earlier releases stored.
    #[test]
    fn the_hash_of_a_row_is_what_earlier_releases_stored() {
        let hash = row_hash_of(
            r#"user00000000@example0.com|S100000000_PL|2099-01-01|active|1||{"plan": "p0", "source": "web"}|1|CODE0|Winter season|0|"#,
        );
        assert_eq!(hash, "c9b9ca80706d6ca15e3eca05d462deef");
    }

    fn warned(line: &str, rules: &Rules) -> Vec<WarningCode> {
        match check_with(line, rules) {
            Checked::Valid(_, warned) => warned.codes().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusual_offer_ids_only_warn() {
        let checked = check("a@b.co|premium-monthly|2030-01-01|active|1|||||||");
        let Checked::Valid(row, warned) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(
            warned.codes().collect::<Vec<_>>(),
            [WarningCode::OfferIdPattern]
        );
        let warning = Warning::describe(WarningCode::OfferIdPattern, &row, &rules());
        assert_eq!((warning.record, warning.column), (2, "offer_id"));
    }

    #[test]
    fn the_expiry_buffer_warns_from_today_to_its_last_day() {
        // Today is 2026-06-01 and the buffer three days: the 1st to the 4th are warned.
        let line = |day: u32| format!("a@b.co|S123456789_PL|2026-06-{day:02}|active|1|||||||");
        let within = [WarningCode::ExpiryWithinBuffer];
        for day in [1, 2, 4] {
            assert_eq!(warned(&line(day), &rules()), within, "June {day}");
        }
        assert_eq!(warned(&line(5), &rules()), [], "a day past the buffer");
        let off = Rules {
            expiry_buffer_days: 0,
            ..rules()
        };
        assert_eq!(warned(&line(1), &off), [], "0d turns it off");
        let lenient = Rules {
            past_expiry: PastExpiry::Accept,
            ..rules()
        };
        let past = "a@b.co|S123456789_PL|2026-05-31|active|1|||||||";
        assert_eq!(
            warned(past, &lenient),
            [],
            "an accepted past date is not ahead"
        );
    }

    #[test]
    fn an_offer_outside_the_map_warns_or_is_rejected() {
        let plans = [(
            "monthly".to_string(),
            [("PL".to_string(), "S123456789_PL".to_string())].into(),
        )];
        let mapped = Rules {
            offers: Arc::new(Offers::new(plans.into()).unwrap()),
            ..rules()
        };
        let listed = "a@b.co|S123456789_PL|2030-01-01|active|1|||||||";
        let unlisted = "a@b.co|S999999999_PL|2030-01-01|active|1|||||||";
        assert_eq!(warned(listed, &mapped), []);
        assert_eq!(warned(unlisted, &mapped), [WarningCode::UnmappedOffer]);
        assert_eq!(
            warned(unlisted, &rules()),
            [],
            "without a map nothing is unmapped"
        );
        let strict = Rules {
            unmapped_offer: UnmappedOffer::Reject,
            ..mapped
        };
        assert_eq!(
            reasons(&check_with(unlisted, &strict)),
            vec![("offer_id".into(), Reason::UnmappedOffer)]
        );
        assert!(matches!(check_with(listed, &strict), Checked::Valid(..)));
    }
}
