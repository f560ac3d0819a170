//! Localized offers, the template's consideration 3: each country has its own Cleeng
//! offer (`S123456789_PL`, `S223456789_DE`), with its own price, and a subscriber keeps
//! the localized one. The optional map names the plans a prompt targets and, for each
//! plan, its offer in every country.

use std::collections::{BTreeMap, HashMap};

/// What to do with a valid row whose offer the map does not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedOffer {
    /// Store the row, with the warning `unmapped_offer`.
    #[default]
    Warn,
    /// Reject the row with the reason `unmapped_offer`.
    Reject,
}

/// Where the map places one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The plan that lists the offer.
    pub plan: String,
    /// The country it is listed under (the offer ID's own suffix).
    pub country: String,
}

/// A map of plans to their localized offers (`[connector.offers]`), checked when it is
/// built: every offer ID has the Cleeng shape, its country is the key it is listed
/// under, and no offer is listed under two plans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offers {
    /// plan -> country -> offer ID, as configured.
    plans: BTreeMap<String, BTreeMap<String, String>>,
    /// offer ID -> where it is listed: the lookup every row makes.
    by_offer: HashMap<String, Placement>,
}

/// A map that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct OffersError {
    /// `plan.COUNTRY`, or the plan alone.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Offers {
    /// Checks and indexes a configured map (plan -> country -> offer ID).
    pub fn new(plans: BTreeMap<String, BTreeMap<String, String>>) -> Result<Offers, OffersError> {
        let mut by_offer: HashMap<String, Placement> = HashMap::new();
        for (plan, offers) in &plans {
            if plan.trim().is_empty() {
                return Err(OffersError {
                    key: format!("{plan:?}"),
                    message: "a plan needs a name".into(),
                });
            }
            for (country, offer) in offers {
                let key = format!("{plan}.{country}");
                if !is_country_code(country) {
                    return Err(OffersError {
                        key,
                        message: format!(
                            "{country:?} is not a two-letter country code in capitals (e.g. PL, DE, US)"
                        ),
                    });
                }
                if !usual_offer_id(offer) {
                    return Err(OffersError {
                        key,
                        message: format!(
                            "{offer:?} is not a Cleeng offer ID: a letter, nine digits, _ and the country (e.g. S123456789_{country})"
                        ),
                    });
                }
                if country_of(offer) != Some(country.as_str()) {
                    return Err(OffersError {
                        key,
                        message: format!(
                            "{offer:?} is the offer of another country than {country}; list it under its own country"
                        ),
                    });
                }
                if let Some(before) = by_offer.get(offer.as_str()) {
                    return Err(OffersError {
                        key,
                        message: format!(
                            "{offer:?} is listed under two plans, {:?} and {plan:?}; an offer belongs to one plan",
                            before.plan
                        ),
                    });
                }
                by_offer.insert(
                    offer.clone(),
                    Placement {
                        plan: plan.clone(),
                        country: country.clone(),
                    },
                );
            }
        }
        Ok(Offers { plans, by_offer })
    }

    /// Whether no map is configured (then no offer is "unmapped").
    pub fn is_empty(&self) -> bool {
        self.by_offer.is_empty()
    }

    /// The plan whose map lists this offer.
    pub fn plan_of(&self, offer_id: &str) -> Option<&str> {
        self.by_offer.get(offer_id).map(|p| p.plan.as_str())
    }

    /// The plan's offer in this country.
    pub fn offer_for(&self, plan: &str, country: &str) -> Option<&str> {
        self.plans.get(plan)?.get(country).map(String::as_str)
    }

    /// Every listed offer with its placement, ordered by offer ID.
    pub fn placements(&self) -> Vec<(&str, &Placement)> {
        let mut all: Vec<_> = self
            .by_offer
            .iter()
            .map(|(offer, placement)| (offer.as_str(), placement))
            .collect();
        all.sort_unstable_by_key(|(offer, _)| *offer);
        all
    }
}

/// The country of an offer: the two capital letters after its last `_` (`PL` in
/// `S123456789_PL`); `None` when the ID does not end that way. The stores keep it as
/// `offer_country`: a run writes this function's answer, a refresh and the migrations
/// compute the same in SQL, and tests hold them to it.
pub fn country_of(offer_id: &str) -> Option<&str> {
    let b = offer_id.as_bytes();
    let n = b.len();
    (n >= 3 && b[n - 3] == b'_' && b[n - 2..].iter().all(u8::is_ascii_uppercase))
        .then(|| &offer_id[n - 2..])
}

/// `S123456789_PL`: a capital letter, nine digits, `_`, two capital letters.
pub fn usual_offer_id(offer_id: &str) -> bool {
    let b = offer_id.as_bytes();
    b.len() == 13
        && b[0].is_ascii_uppercase()
        && b[1..10].iter().all(u8::is_ascii_digit)
        && b[10] == b'_'
        && b[11..].iter().all(u8::is_ascii_uppercase)
}

fn is_country_code(key: &str) -> bool {
    key.len() == 2 && key.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        entries
            .iter()
            .map(|(plan, offers)| {
                let offers = offers
                    .iter()
                    .map(|(c, o)| (c.to_string(), o.to_string()))
                    .collect();
                (plan.to_string(), offers)
            })
            .collect()
    }

    #[test]
    fn a_map_places_each_offer_in_its_plan_and_country() {
        let offers = Offers::new(map(&[
            (
                "monthly",
                &[("PL", "S123456789_PL"), ("DE", "S223456789_DE")],
            ),
            ("annual", &[("PL", "S987654321_PL")]),
        ]))
        .unwrap();
        assert_eq!(offers.plan_of("S223456789_DE"), Some("monthly"));
        assert_eq!(offers.plan_of("S987654321_PL"), Some("annual"));
        assert_eq!(offers.plan_of("S000000000_PL"), None);
        assert_eq!(offers.offer_for("annual", "PL"), Some("S987654321_PL"));
        assert_eq!(offers.offer_for("annual", "DE"), None);
        assert_eq!(offers.placements().len(), 3);
    }

    #[test]
    fn an_offer_under_two_plans_names_both() {
        let err = Offers::new(map(&[
            ("annual", &[("PL", "S123456789_PL")]),
            ("monthly", &[("PL", "S123456789_PL")]),
        ]))
        .unwrap_err();
        assert_eq!(err.key, "monthly.PL");
        assert!(err.message.contains("\"annual\" and \"monthly\""), "{err}");
    }

    #[test]
    fn keys_and_ids_of_another_shape_are_named() {
        for (country, offer, key, says) in [
            ("pl", "S123456789_PL", "p.pl", "country code"),
            ("POL", "S123456789_PL", "p.POL", "country code"),
            ("PL", "premium", "p.PL", "not a Cleeng offer ID"),
            ("PL", "S12345_PL", "p.PL", "not a Cleeng offer ID"),
            ("DE", "S123456789_PL", "p.DE", "another country"),
        ] {
            let err = Offers::new(map(&[("p", &[(country, offer)])])).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.message.contains(says), "{err}");
        }
    }

    #[test]
    fn the_country_is_the_ids_suffix() {
        assert_eq!(country_of("S123456789_PL"), Some("PL"));
        assert_eq!(country_of("premium_DE"), Some("DE"));
        assert_eq!(country_of("_US"), Some("US"));
        for none in ["S123456789", "S1_pl", "PL", "S1_PLX", "S1_P1", "", "é_Pé"] {
            assert_eq!(country_of(none), None, "{none}");
        }
    }

    #[test]
    fn the_usual_shape() {
        assert!(usual_offer_id("S123456789_PL"));
        assert!(usual_offer_id("P123456789_DE"));
        for other in [
            "s123456789_PL",
            "S12345678_PL",
            "S123456789-PL",
            "S123456789_pl",
        ] {
            assert!(!usual_offer_id(other), "{other}");
        }
    }
}
