//! Which Cleeng subscription an action is about: the id the caller gave; else the one
//! the stored external id names; else the customer's (found by email) subscription to
//! the stored offer, active or stopped. Exactly one, or the action is refused.

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
    let by_email = [
        ("customerEmail", traits.email.as_str()),
        ("offset", "0"),
        ("limit", "100"),
    ];
    let mut customers = listed(client, "/entitlements", &by_email, "customerId", attempts).await?;
    customers.sort_unstable();
    customers.dedup();
    let customer = match one(customers, || "for the subscriber's email".to_string()) {
        Ok(customer) => customer,
        Err(NotOne::None(_)) => {
            return Ok(Err(NotOne::None(
                "Cleeng lists no entitlement for the subscriber's email, so no customer to \
                 look in"
                    .into(),
            )));
        }
        Err(NotOne::Many(_)) => {
            return Ok(Err(NotOne::Many(
                "Cleeng lists several customers for the subscriber's email".into(),
            )));
        }
    };
    let customer = customer.to_string();
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

/// The ids (`field`, else `id`) of a list that comes as an array or as `{"items": [...]}`.
fn ids(body: &Value, field: &str, what: &str) -> Result<Vec<i64>, CleengError> {
    let bad = |reason: String| CleengError::BadAnswer {
        what: what.into(),
        reason,
    };
    let items = match body {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("items") {
            Some(Value::Array(items)) => items,
            _ => return Err(bad("an object without an \"items\" list".into())),
        },
        other => return Err(bad(format!("expected a list, got {}", kind(other)))),
    };
    items
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
    fn exactly_one_is_wanted() {
        assert_eq!(one(vec![3], String::new), Ok(3));
        assert!(matches!(one(vec![], String::new), Err(NotOne::None(_))));
        assert!(matches!(one(vec![1, 2], String::new), Err(NotOne::Many(_))));
    }
}
