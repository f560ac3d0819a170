//! Which Cleeng subscription an action is about: the id the caller gave; else the one
//! the stored external id names; else the customer's (found by email) subscription to
//! the stored offer, active or stopped. Exactly one, or the action is refused.
//!
//! And what Cleeng holds for a subscriber now ([`live`], for a refresh): the
//! subscriptions the stored external id names, else the customer's active or stopped
//! ones with no offer filter (the offer may have changed since the export), each with
//! its offer, status and `expiresAt` (a Unix time, as the list's reference page and the
//! JSON-RPC pages it replaced give it; a numeric string is read too).

use super::client::Client;
use super::error::CleengError;
use crate::store::StoredTraits;
use reqwest::Method;
use serde_json::Value;

/// Why no single subscription was found: a refusal (Cleeng is not asked to change
/// anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOne {
    /// None matched (`subscription_not_found`).
    None(String),
    /// Several matched (`ambiguous_subscription`).
    Many(String),
}

/// The subscription of `traits` the action is about.
pub async fn subscription(
    client: &Client,
    given: Option<i64>,
    traits: &StoredTraits,
    attempts: &mut u32,
) -> Result<Result<i64, NotOne>, CleengError> {
    if let Some(id) = given {
        return Ok(Ok(id));
    }
    if let Some(external) = traits.external_id.as_deref().filter(|e| !e.is_empty()) {
        let answer = client
            .call(
                Method::GET,
                "/subscriptions",
                &[("externalId", external)],
                None,
                attempts,
            )
            .await?;
        let ids = ids(
            &answer.body,
            "subscriptionId",
            "GET /subscriptions?externalId",
        )?;
        return Ok(one(ids, || {
            format!("with the stored external id {external:?}")
        }));
    }
    let customer = match customer(client, &traits.email, attempts).await? {
        Ok(customer) => customer,
        Err(not_one) => return Ok(Err(not_one)),
    };
    let to_the_offer = [
        ("customerId", customer.as_str()),
        ("offerId", traits.offer_id.as_str()),
        ("status[]", "active"),
        ("status[]", "stopped"),
    ];
    let ids = listed(
        client,
        "/subscriptions",
        &to_the_offer,
        "subscriptionId",
        attempts,
    )
    .await?;
    Ok(one(ids, || {
        format!(
            "of customer {customer} to the stored offer {} (active or stopped)",
            traits.offer_id
        )
    }))
}

/// The one customer Cleeng lists entitlements of for an email.
async fn customer(
    client: &Client,
    email: &str,
    attempts: &mut u32,
) -> Result<Result<String, NotOne>, CleengError> {
    let by_email = [("customerEmail", email), ("offset", "0"), ("limit", "100")];
    let mut customers = listed(client, "/entitlements", &by_email, "customerId", attempts).await?;
    customers.sort_unstable();
    customers.dedup();
    Ok(match one(customers, String::new) {
        Ok(customer) => Ok(customer.to_string()),
        Err(NotOne::None(_)) => Err(NotOne::None(
            "Cleeng lists no entitlement for the subscriber's email, so no customer to look in"
                .into(),
        )),
        Err(NotOne::Many(_)) => Err(NotOne::Many(
            "Cleeng lists several customers for the subscriber's email".into(),
        )),
    })
}

/// A subscription as Cleeng lists it, with what a refresh reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `subscriptionId` (else `id`).
    pub id: i64,
    /// `offerId`.
    pub offer_id: String,
    /// `status`: `active` and `stopped` are the live ones.
    pub status: String,
    /// `expiresAt`, a Unix time.
    pub expires_at: i64,
}

/// The subscriber's live (active or stopped) subscriptions at Cleeng; several customers
/// for the email is [`NotOne::Many`], none an empty list.
pub async fn live(
    client: &Client,
    external_id: Option<&str>,
    email: &str,
    attempts: &mut u32,
) -> Result<Result<Vec<Held>, NotOne>, CleengError> {
    let answer = match external_id.filter(|e| !e.is_empty()) {
        Some(external) => {
            let query = [("externalId", external)];
            let answer = client
                .call(Method::GET, "/subscriptions", &query, None, attempts)
                .await?;
            (answer, "GET /subscriptions?externalId")
        }
        None => {
            let customer = match customer(client, email, attempts).await? {
                Ok(customer) => customer,
                Err(NotOne::None(_)) => return Ok(Ok(Vec::new())),
                Err(many) => return Ok(Err(many)),
            };
            let query = [
                ("customerId", customer.as_str()),
                ("status[]", "active"),
                ("status[]", "stopped"),
            ];
            let answer = client
                .call(Method::GET, "/subscriptions", &query, None, attempts)
                .await?;
            (answer, "GET /subscriptions?customerId")
        }
    };
    let (answer, what) = answer;
    let held = items(&answer.body, what)?
        .iter()
        .map(|item| held(item, what))
        .collect::<Result<Vec<Held>, CleengError>>()?;
    Ok(Ok(held
        .into_iter()
        .filter(|h| h.status == "active" || h.status == "stopped")
        .collect()))
}

/// One listed subscription.
fn held(item: &Value, what: &str) -> Result<Held, CleengError> {
    let bad = |reason: &str| CleengError::BadAnswer {
        what: what.into(),
        reason: reason.into(),
    };
    let number = |value: Option<&Value>| match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let text = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(Held {
        id: number(item.get("subscriptionId").or_else(|| item.get("id")))
            .ok_or_else(|| bad("an item without a numeric subscriptionId"))?,
        offer_id: text("offerId").ok_or_else(|| bad("an item without an offerId"))?,
        status: text("status").ok_or_else(|| bad("an item without a status"))?,
        expires_at: number(item.get("expiresAt"))
            .ok_or_else(|| bad("an item without a numeric expiresAt (a Unix time)"))?,
    })
}

/// The ids a lookup lists.
async fn listed(
    client: &Client,
    path: &str,
    query: &[(&str, &str)],
    field: &str,
    attempts: &mut u32,
) -> Result<Vec<i64>, CleengError> {
    let answer = client
        .call(Method::GET, path, query, None, attempts)
        .await?;
    ids(&answer.body, field, &format!("GET {path}"))
}

fn one(ids: Vec<i64>, what: impl Fn() -> String) -> Result<i64, NotOne> {
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(NotOne::None(format!(
            "Cleeng has no subscription {}",
            what()
        ))),
        many => Err(NotOne::Many(format!(
            "Cleeng has {} subscriptions {}; give the one to act on as subscription_id",
            many.len(),
            what()
        ))),
    }
}

/// The items of a list that comes as an array or as `{"items": [...]}`.
fn items<'v>(body: &'v Value, what: &str) -> Result<&'v [Value], CleengError> {
    let bad = |reason: String| CleengError::BadAnswer {
        what: what.into(),
        reason,
    };
    match body {
        Value::Array(items) => Ok(items),
        Value::Object(map) => match map.get("items") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(bad("an object without an \"items\" list".into())),
        },
        other => Err(bad(format!("expected a list, got {}", kind(other)))),
    }
}

/// The ids (`field`, else `id`) of a list.
fn ids(body: &Value, field: &str, what: &str) -> Result<Vec<i64>, CleengError> {
    let bad = |reason: String| CleengError::BadAnswer {
        what: what.into(),
        reason,
    };
    items(body, what)?
        .iter()
        .map(|item| {
            let value = item.get(field).or_else(|| item.get("id"));
            match value {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("an item without a numeric {field}")))
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_come_as_arrays_or_items_and_ids_under_either_name() {
        let what = "test";
        assert_eq!(
            ids(
                &json!([{"subscriptionId": 5}, {"id": "6"}]),
                "subscriptionId",
                what
            )
            .unwrap(),
            vec![5, 6]
        );
        assert_eq!(
            ids(
                &json!({"items": [{"subscriptionId": 7}]}),
                "subscriptionId",
                what
            )
            .unwrap(),
            vec![7]
        );
        assert!(ids(&json!({"data": []}), "subscriptionId", what).is_err());
        assert!(ids(&json!([{"offerId": "S1"}]), "subscriptionId", what).is_err());
    }

    #[test]
    fn a_listed_subscription_gives_its_offer_status_and_expiry() {
        let item = json!({"subscriptionId": 9, "offerId": "S1_PL", "status": "active", "expiresAt": 1893456000});
        assert_eq!(
            held(&item, "t").unwrap(),
            Held {
                id: 9,
                offer_id: "S1_PL".into(),
                status: "active".into(),
                expires_at: 1_893_456_000,
            }
        );
        let text =
            json!({"id": "9", "offerId": "S1_PL", "status": "stopped", "expiresAt": "1893456000"});
        assert_eq!(held(&text, "t").unwrap().expires_at, 1_893_456_000);
        assert!(
            held(
                &json!({"subscriptionId": 9, "offerId": "S1_PL", "status": "active"}),
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn exactly_one_is_wanted() {
        assert_eq!(one(vec![3], String::new), Ok(3));
        assert!(matches!(one(vec![], String::new), Err(NotOne::None(_))));
        assert!(matches!(one(vec![1, 2], String::new), Err(NotOne::Many(_))));
    }
}
