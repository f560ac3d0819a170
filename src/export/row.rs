//! A valid record as it is kept and stored: one subscriber's traits in a compact row,
//! and the row hash that says whether a subscriber changed (the same function for
//! every row, whichever path it took).

use chrono::{Datelike, NaiveDate};
use smallvec::SmallVec;

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
    pub(super) text: SmallVec<[u8; INLINE_TEXT]>,
    /// Where each text trait ends in `text`; it starts where the one before ends.
    /// Optional traits are never empty when present, so an empty one is absent.
    pub(super) ends: [usize; TEXTS],
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

pub(super) const TEXTS: usize = 7;

/// Bytes of text traits kept in the row itself; a usual row has about a hundred.
pub(super) const INLINE_TEXT: usize = 160;

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

/// One subscriber's traits as plain values: what a row is made of when it does not come
/// from a record (a subscriber read from Cleeng's API, the stored row a newer refresh
/// keeps), so that it gets the hash an export row saying the same would get.
#[derive(Debug, Clone, Copy)]
pub struct Traits<'a> {
    /// Email, lower case.
    pub email: &'a str,
    /// Offer ID.
    pub offer_id: &'a str,
    /// Expiry date.
    pub expiry_date: NaiveDate,
    /// `active` or `stopped`.
    pub status: &'a str,
    /// Payment method ID.
    pub payment_method_id: i64,
    /// Subscription external ID.
    pub external_id: Option<&'a str>,
    /// External properties as canonical JSON text (keys sorted, as `serde_json` writes a
    /// map of strings).
    pub external_properties: Option<&'a str>,
    /// Season index.
    pub season_index: Option<i64>,
    /// Coupon code.
    pub coupon_code: Option<&'a str>,
    /// Campaign name.
    pub campaign_name: Option<&'a str>,
    /// Coupon Already Used.
    pub coupon_uses: Option<i64>,
    /// Columns the template does not name, as a JSON object of strings (keys sorted).
    pub extra: Option<&'a str>,
}

impl Row {
    /// The row of these traits at record `record`, hashed as a checked record is.
    /// `None` when the status is neither `active` nor `stopped` (no export row has one).
    pub fn of_traits(record: u64, traits: &Traits<'_>) -> Option<Row> {
        let status = match traits.status {
            "active" => "active",
            "stopped" => "stopped",
            _ => return None,
        };
        let mut text = TextBuilder::new();
        text.push(Some(traits.email));
        text.push(Some(traits.offer_id));
        text.push(nonempty(traits.external_id));
        text.push(nonempty(traits.external_properties));
        text.push(nonempty(traits.coupon_code));
        text.push(nonempty(traits.campaign_name));
        text.push(nonempty(traits.extra));
        let mut row = Row {
            record,
            expiry_date: traits.expiry_date,
            status,
            payment_method_id: traits.payment_method_id,
            season_index: traits.season_index,
            coupon_uses: traits.coupon_uses,
            row_hash: RowHash([0; 16]),
            text: text.text,
            ends: text.ends,
        };
        row.row_hash = row_hash(&row);
        Some(row)
    }

    /// A row that stands for a subscriber stored as they are: their email and stored
    /// hash, the other traits placeholders. Every path takes a row whose hash is stored
    /// for an unchanged subscriber and never writes it, so the placeholders are never
    /// stored (a run uses it for a subscriber a newer refresh holds and the export omits).
    pub fn stored_as(record: u64, email: &str, stored: RowHash) -> Row {
        let mut text = TextBuilder::new();
        text.push(Some(email));
        for _ in 1..TEXTS {
            text.push(None);
        }
        Row {
            record,
            // A date every store takes (PostgreSQL's has no year 0).
            expiry_date: NaiveDate::default(),
            status: "active",
            payment_method_id: 1,
            season_index: None,
            coupon_uses: None,
            row_hash: stored,
            text: text.text,
            ends: text.ends,
        }
    }
}

/// An optional trait is never empty when present (as a checked record has it).
fn nonempty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
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
pub(super) struct TextBuilder {
    pub(super) text: SmallVec<[u8; INLINE_TEXT]>,
    pub(super) ends: [usize; TEXTS],
    pub(super) next: usize,
}

impl TextBuilder {
    pub(super) fn new() -> TextBuilder {
        TextBuilder {
            text: SmallVec::new(),
            ends: [0; TEXTS],
            next: 0,
        }
    }

    /// Ends the current trait.
    pub(super) fn end(&mut self) {
        self.ends[self.next] = self.text.len();
        self.next += 1;
    }

    pub(super) fn push(&mut self, value: Option<&str>) {
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
    /// From the 32 hex digits the stores keep; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<RowHash> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(RowHash(bytes))
    }

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
pub(super) fn row_hash(row: &Row) -> RowHash {
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
