//! The rules a record is checked against that depend on the connector and the day,
//! and the warnings a valid record may carry.

use super::offers::{Offers, UnmappedOffer, usual_offer_id};
use super::row::Row;
use crate::run::WarningCode;
use chrono::NaiveDate;
use serde::Deserialize;
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
    pub(super) fn warnings(&self, offer_id: &str, unmapped: bool, expiry: NaiveDate) -> Warned {
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
    pub(super) fn unmapped(&self, offer_id: &str) -> bool {
        !self.offers.is_empty() && self.offers.plan_of(offer_id).is_none()
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
