//! The rules an action is checked against before Cleeng is called, and the one call
//! that changes Cleeng: pure functions of the request and the stored traits, so that
//! each refusal and each documented call is tested without a store or a network.

use crate::action::{ActionRequest, Change, PendingAction, SwitchTarget};
use crate::export::Offers;
use crate::redact::mask_email;
use crate::store::StoredTraits;
use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{Value, json};

/// A refusal: the action is not carried out, Cleeng is not asked to change anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// The checks before calling Cleeng: the subscriber, and what the action needs of
/// its traits. The switch's target offer when it has one.
pub fn check<'t>(
    request: &ActionRequest,
    traits: Option<&'t StoredTraits>,
    offers: &Offers,
    today: NaiveDate,
) -> Result<(&'t StoredTraits, Option<String>), Refusal> {
    let refuse = |code, message: String| Err(Refusal { code, message });
    let Some(traits) = traits.filter(|t| t.removed_run.is_none()) else {
        return refuse(
            "unknown_subscriber",
            format!(
                "{} is not a present subscriber of connector {:?} (not in its last applied export)",
                mask_email(&request.email),
                request.connector
            ),
        );
    };
    match &request.change {
        Change::Reactivate => {
            if traits.status != "stopped" {
                return refuse(
                    "already_active",
                    format!(
                        "the stored status is {:?}; only a stopped subscription is reactivated",
                        traits.status
                    ),
                );
            }
            let expired = NaiveDate::parse_from_str(&traits.expiry_date, "%Y-%m-%d")
                .map(|expiry| expiry < today)
                .unwrap_or(false);
            if expired {
                return refuse(
                    "expired",
                    format!(
                        "the subscription expired on {} (today is {today})",
                        traits.expiry_date
                    ),
                );
            }
            Ok((traits, None))
        }
        Change::Switch { to, .. } => {
            let target = match to {
                SwitchTarget::Offer(offer) => offer.clone(),
                SwitchTarget::Plan(plan) => {
                    let Some(country) = traits.offer_country.as_deref() else {
                        return refuse(
                            "no_localized_offer",
                            format!(
                                "the stored offer {} names no country, so plan {plan:?} has no offer for it",
                                traits.offer_id
                            ),
                        );
                    };
                    match offers.offer_for(plan, country) {
                        Some(offer) => offer.to_string(),
                        None => {
                            return refuse(
                                "no_localized_offer",
                                format!(
                                    "plan {plan:?} of [connector.offers] has no offer for {country}"
                                ),
                            );
                        }
                    }
                }
            };
            if target == traits.offer_id {
                return refuse(
                    "same_offer",
                    format!("the subscriber's offer is {target} already"),
                );
            }
            Ok((traits, Some(target)))
        }
        Change::Coupon { .. } => Ok((traits, None)),
    }
}

/// The check of an action without its own idempotency key against the subscriber's
/// actions that succeeded and are not confirmed yet (`pending`): another switch or
/// reactivate of the same kind is refused `already_requested`. Coupons are exempt.
pub fn check_requested(request: &ActionRequest, pending: &[PendingAction]) -> Result<(), Refusal> {
    if matches!(request.change, Change::Coupon { .. }) {
        return Ok(());
    }
    match pending.iter().find(|p| p.action == request.kind()) {
        Some(earlier) => Err(Refusal {
            code: "already_requested",
            message: format!(
                "action {} ({}) of this subscriber succeeded at {} and Cleeng does not show its \
                 effect yet; see `cleeng-sync actions --email`, refresh the subscriber, or send \
                 this one with its own Idempotency-Key to go ahead",
                earlier.action_id,
                earlier.action.as_str(),
                earlier.finished_at
            ),
        }),
        None => Ok(()),
    }
}

/// The one request that changes Cleeng.
pub fn change_call(
    request: &ActionRequest,
    subscription: i64,
    target: Option<&str>,
) -> (Method, String, Value) {
    match &request.change {
        Change::Switch { direction, .. } => (
            Method::POST,
            "/subscription_switches".into(),
            json!({
                "subscriptionId": subscription,
                "toOfferId": target.unwrap_or_default(),
                "switchDirection": direction.as_str(),
            }),
        ),
        Change::Coupon { code } => (
            Method::PATCH,
            format!("/subscriptions/{subscription}"),
            json!({ "couponCode": code }),
        ),
        Change::Reactivate => (
            Method::PATCH,
            format!("/subscriptions/{subscription}"),
            json!({ "status": "active" }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{ActionBody, ActionKind};
    use std::collections::BTreeMap;

    fn traits(status: &str, expiry: &str, offer: &str) -> StoredTraits {
        StoredTraits {
            connector: "c".into(),
            email: "a@example.com".into(),
            offer_id: offer.into(),
            offer_country: crate::export::country_of(offer).map(str::to_string),
            offer_plan: None,
            expiry_date: expiry.into(),
            status: status.into(),
            payment_method_id: 1,
            external_id: None,
            external_properties: None,
            season_index: None,
            coupon_code: None,
            campaign_name: None,
            coupon_uses: None,
            extra: None,
            row_hash: String::new(),
            first_seen_run: 1,
            changed_run: 1,
            removed_run: None,
            updated_at: String::new(),
            live_at: None,
            live_source: None,
        }
    }

    fn request(action: ActionKind, plan: Option<&str>, offer: Option<&str>) -> ActionRequest {
        ActionRequest::new(
            "c",
            ActionBody {
                action,
                email: "a@example.com".into(),
                to_offer_id: offer.map(str::to_string),
                to_plan: plan.map(str::to_string),
                direction: None,
                coupon_code: (action == ActionKind::ApplyCoupon).then(|| "SAVE".into()),
                subscription_id: None,
            },
        )
        .unwrap()
    }

    fn offers() -> Offers {
        let mut plans = BTreeMap::new();
        plans.insert(
            "premium".to_string(),
            BTreeMap::from([
                ("PL".to_string(), "S100000001_PL".to_string()),
                ("DE".to_string(), "S100000002_DE".to_string()),
            ]),
        );
        Offers::new(plans).unwrap()
    }

    #[test]
    fn each_local_refusal_has_its_code() {
        let today = NaiveDate::from_ymd_opt(2030, 6, 1).unwrap();
        let map = offers();
        let code = |r: &ActionRequest, t: Option<&StoredTraits>| {
            check(r, t, &map, today).err().map(|e| e.code)
        };
        let reactivate = request(ActionKind::ReactivateSubscription, None, None);
        assert_eq!(code(&reactivate, None), Some("unknown_subscriber"));
        let mut removed = traits("stopped", "2030-07-01", "S000000001_PL");
        removed.removed_run = Some(3);
        assert_eq!(
            code(&reactivate, Some(&removed)),
            Some("unknown_subscriber")
        );
        let active = traits("active", "2030-07-01", "S000000001_PL");
        assert_eq!(code(&reactivate, Some(&active)), Some("already_active"));
        let past = traits("stopped", "2030-05-31", "S000000001_PL");
        assert_eq!(code(&reactivate, Some(&past)), Some("expired"));
        let today_expiry = traits("stopped", "2030-06-01", "S000000001_PL");
        assert_eq!(code(&reactivate, Some(&today_expiry)), None);

        let same = request(ActionKind::SwitchSubscription, None, Some("S000000001_PL"));
        assert_eq!(code(&same, Some(&active)), Some("same_offer"));
        let to_plan = request(ActionKind::SwitchSubscription, Some("premium"), None);
        let us = traits("active", "2030-07-01", "S000000009_US");
        assert_eq!(code(&to_plan, Some(&us)), Some("no_localized_offer"));
        let no_country = traits("active", "2030-07-01", "S000000009");
        assert_eq!(
            code(&to_plan, Some(&no_country)),
            Some("no_localized_offer")
        );
        let unknown_plan = request(ActionKind::SwitchSubscription, Some("gold"), None);
        assert_eq!(
            code(&unknown_plan, Some(&active)),
            Some("no_localized_offer")
        );
    }

    #[test]
    fn a_plan_switches_to_the_subscribers_own_country() {
        let today = NaiveDate::from_ymd_opt(2030, 6, 1).unwrap();
        let map = offers();
        let to_plan = request(ActionKind::SwitchSubscription, Some("premium"), None);
        let pl = traits("active", "2030-07-01", "S000000001_PL");
        let (_, target) = check(&to_plan, Some(&pl), &map, today).unwrap();
        assert_eq!(target.as_deref(), Some("S100000001_PL"));
        let de = traits("active", "2030-07-01", "S000000001_DE");
        let (_, target) = check(&to_plan, Some(&de), &map, today).unwrap();
        assert_eq!(target.as_deref(), Some("S100000002_DE"));
    }

    #[test]
    fn the_calls_are_the_documented_ones() {
        let switch = request(ActionKind::SwitchSubscription, None, Some("S100000002_DE"));
        let (method, path, body) = change_call(&switch, 42, Some("S100000002_DE"));
        assert_eq!(
            (method, path.as_str()),
            (Method::POST, "/subscription_switches")
        );
        assert_eq!(
            body,
            json!({"subscriptionId": 42, "toOfferId": "S100000002_DE", "switchDirection": "unspecified"})
        );
        let coupon = request(ActionKind::ApplyCoupon, None, None);
        let (method, path, body) = change_call(&coupon, 42, None);
        assert_eq!(
            (method, path.as_str(), body),
            (
                Method::PATCH,
                "/subscriptions/42",
                json!({"couponCode": "SAVE"})
            )
        );
        let reactivate = request(ActionKind::ReactivateSubscription, None, None);
        let (_, _, body) = change_call(&reactivate, 42, None);
        assert_eq!(body, json!({"status": "active"}));
    }
}
