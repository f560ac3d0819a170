//! What a listing of subscribers to act on accepts, read the same way from the command
//! line (`cleeng-sync subscribers`) and the admin API
//! (`GET /v1/connectors/{id}/subscribers`): an expiry window in days from today, a
//! status, a plan, a country, a page size and the cursor of the page before.

use crate::config::days;
use crate::store::{Cursor, SubscriberQuery};
use chrono::{Days, NaiveDate};

/// A page holds this many subscribers unless the request says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most subscribers a page holds.
pub const MAX_LIMIT: u32 = 1000;

/// A listing as asked for, before it is checked.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Listing {
    /// `7d`: expiry dates from today to today + 7 days, both included.
    pub expiring_within: Option<String>,
    /// `active` or `stopped`.
    pub status: Option<String>,
    /// A plan of the connector's offer map.
    pub plan: Option<String>,
    /// A two-letter country code.
    pub country: Option<String>,
    /// Subscribers per page; default 100, at most 1000.
    pub limit: Option<u32>,
    /// The `next` of the page before.
    pub after: Option<String>,
}

/// A listing that cannot be answered: a usage error (exit 2, HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ListingError {
    /// The flag or query parameter at fault.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Listing {
    /// The store's query for the connector, "today" being `today` in its zone.
    pub fn query(
        &self,
        connector: &str,
        today: NaiveDate,
    ) -> Result<SubscriberQuery, ListingError> {
        let expiring = match &self.expiring_within {
            None => None,
            Some(window) => {
                let n = days(window).map_err(|message| ListingError {
                    field: "expiring_within",
                    message,
                })?;
                let last = today
                    .checked_add_days(Days::new(u64::from(n)))
                    .unwrap_or(today);
                Some((today, last))
            }
        };
        let status = match self.status.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(s) if s == "active" || s == "stopped" => Some(s),
            Some(other) => {
                return Err(ListingError {
                    field: "status",
                    message: format!("{other:?} is not a status: active or stopped"),
                });
            }
        };
        let country = match self.country.as_deref().map(str::to_ascii_uppercase) {
            None => None,
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => Some(c),
            Some(other) => {
                return Err(ListingError {
                    field: "country",
                    message: format!("{other:?} is not a two-letter country code (e.g. PL)"),
                });
            }
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ListingError {
                field: "limit",
                message: format!("{limit} is not from 1 to {MAX_LIMIT}"),
            });
        }
        let after = match &self.after {
            None => None,
            Some(token) => Some(Cursor::decode(token).ok_or_else(|| ListingError {
                field: "after",
                message: "not a cursor of this listing: pass the `next` of the page before".into(),
            })?),
        };
        Ok(SubscriberQuery {
            connector: connector.to_string(),
            expiring,
            status,
            plan: self.plan.clone(),
            country,
            after,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
    }

    #[test]
    fn a_window_runs_from_today_to_its_last_day() {
        let listing = Listing {
            expiring_within: Some("7d".into()),
            status: Some("Stopped".into()),
            country: Some("pl".into()),
            ..Listing::default()
        };
        let q = listing.query("c", today()).unwrap();
        assert_eq!(
            q.expiring,
            Some((today(), NaiveDate::from_ymd_opt(2026, 6, 8).unwrap()))
        );
        assert_eq!(q.status.as_deref(), Some("stopped"));
        assert_eq!(q.country.as_deref(), Some("PL"));
        assert_eq!(q.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (query, field) in [
            ("expiring_within=soon", "expiring_within"),
            ("status=gone", "status"),
            ("country=POL", "country"),
            ("limit=0", "limit"),
            ("limit=5000", "limit"),
            ("after=nope", "after"),
        ] {
            let uri: axum::http::Uri = format!("/?{query}").parse().expect("a URI");
            let axum::extract::Query(listing) =
                axum::extract::Query::<Listing>::try_from_uri(&uri).expect("the listing's shape");
            let err = listing.query("c", today()).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
