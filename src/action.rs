//! The billing actions as the rest of the program sees them: what is asked, how it
//! ended, and the ledger's record of it. Nothing here talks to Cleeng or the store.

use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The connector's three actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Switch Subscription: move a subscription to another offer.
    SwitchSubscription,
    /// Apply Coupon: apply a coupon code to a subscription.
    ApplyCoupon,
    /// Reactivate Subscription: turn a stopped subscription active again.
    ReactivateSubscription,
}

impl ActionKind {
    /// Every action.
    pub const ALL: [ActionKind; 3] = [
        ActionKind::SwitchSubscription,
        ActionKind::ApplyCoupon,
        ActionKind::ReactivateSubscription,
    ];

    /// The stable name, as in the ledger, the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::SwitchSubscription => "switch_subscription",
            ActionKind::ApplyCoupon => "apply_coupon",
            ActionKind::ReactivateSubscription => "reactivate_subscription",
        }
    }

    /// The kind a stable name stands for.
    pub fn parse(name: &str) -> Option<ActionKind> {
        [
            ActionKind::SwitchSubscription,
            ActionKind::ApplyCoupon,
            ActionKind::ReactivateSubscription,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// How an action ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Recorded, Cleeng not yet answered.
    Pending,
    /// Cleeng applied it.
    Succeeded,
    /// Refused, by a check before calling or by Cleeng; nothing changed.
    Refused,
    /// Cleeng failed or could not be reached; nothing changed.
    Failed,
    /// Cleeng may or may not have applied it (its answer was lost): a person or a later
    /// reconciliation decides. Never repeated blindly.
    Unknown,
    /// `--dry-run`: checked and resolved, nothing changed; never stored.
    DryRun,
}

impl ActionStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Refused => "refused",
            ActionStatus::Failed => "failed",
            ActionStatus::Unknown => "unknown",
            ActionStatus::DryRun => "dry_run",
        }
    }

    /// The status a stable name stands for.
    pub fn parse(name: &str) -> Option<ActionStatus> {
        [
            ActionStatus::Pending,
            ActionStatus::Succeeded,
            ActionStatus::Refused,
            ActionStatus::Failed,
            ActionStatus::Unknown,
            ActionStatus::DryRun,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Who asked for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionTrigger {
    /// `cleeng-sync action ...`.
    Cli,
    /// `POST /v1/connectors/{id}/actions`.
    Api,
}

impl ActionTrigger {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionTrigger::Cli => "cli",
            ActionTrigger::Api => "api",
        }
    }
}

/// Which way a switch goes, as Cleeng's `switchDirection` takes it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// To a dearer offer.
    Upgrade,
    /// To a cheaper offer.
    Downgrade,
    /// Not said (Cleeng's default when the caller does not know).
    #[default]
    Unspecified,
}

impl Direction {
    /// The name Cleeng takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upgrade => "upgrade",
            Direction::Downgrade => "downgrade",
            Direction::Unspecified => "unspecified",
        }
    }
}

/// What a switch moves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchTarget {
    /// This offer ID.
    Offer(String),
    /// The plan's offer for the subscriber's country (`[connector.offers]`).
    Plan(String),
}

/// What an action changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Switch Subscription.
    Switch {
        /// The offer or plan.
        to: SwitchTarget,
        /// Which way.
        direction: Direction,
    },
    /// Apply Coupon.
    Coupon {
        /// The coupon code.
        code: String,
    },
    /// Reactivate Subscription.
    Reactivate,
}

impl Change {
    /// The action this change is.
    pub fn kind(&self) -> ActionKind {
        match self {
            Change::Switch { .. } => ActionKind::SwitchSubscription,
            Change::Coupon { .. } => ActionKind::ApplyCoupon,
            Change::Reactivate => ActionKind::ReactivateSubscription,
        }
    }
}

/// One asked-for action, checked for form (not yet against the store or Cleeng).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// Connector id.
    pub connector: String,
    /// The subscriber's email, trimmed and lower case (as the traits keep it).
    pub email: String,
    /// Cleeng's subscription id, when the caller knows it.
    pub subscription_id: Option<i64>,
    /// What to change.
    pub change: Change,
}

/// A request that is not well formed: a usage error (exit 2, HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

/// The body of `POST /v1/connectors/{id}/actions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Which action.
    pub action: ActionKind,
    /// The subscriber's email.
    pub email: String,
    /// Switch: the offer to switch to (or `to_plan`).
    #[serde(default)]
    pub to_offer_id: Option<String>,
    /// Switch: the plan of `[connector.offers]` whose offer for the subscriber's country to
    /// switch to (or `to_offer_id`).
    #[serde(default)]
    pub to_plan: Option<String>,
    /// Switch: `upgrade`, `downgrade` or `unspecified` (the default).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Apply Coupon: the coupon code.
    #[serde(default)]
    pub coupon_code: Option<String>,
    /// Cleeng's subscription id, when known; else it is looked up.
    #[serde(default)]
    pub subscription_id: Option<i64>,
}

impl ActionRequest {
    /// A request from its parts, checked for form: an email, one switch target, a
    /// coupon code, fields that belong to the action.
    pub fn new(connector: &str, body: ActionBody) -> Result<ActionRequest, RequestError> {
        let email = body.email.trim().to_lowercase();
        if email.is_empty() || !email.contains('@') {
            return Err(RequestError {
                field: "email",
                message: "an email address is required".into(),
            });
        }
        if let Some(id) = body.subscription_id
            && id <= 0
        {
            return Err(RequestError {
                field: "subscription_id",
                message: format!("{id} is not a Cleeng subscription id (a positive number)"),
            });
        }
        let misplaced = |field: &'static str, present: bool| {
            if present {
                Err(RequestError {
                    field,
                    message: format!("does not belong to {}", body.action.as_str()),
                })
            } else {
                Ok(())
            }
        };
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let change = match body.action {
            ActionKind::SwitchSubscription => {
                misplaced("coupon_code", body.coupon_code.is_some())?;
                let to = match (text(&body.to_offer_id), text(&body.to_plan)) {
                    (Some(offer), None) => SwitchTarget::Offer(offer),
                    (None, Some(plan)) => SwitchTarget::Plan(plan),
                    (Some(_), Some(_)) => {
                        return Err(RequestError {
                            field: "to_offer_id",
                            message: "give to_offer_id or to_plan, not both".into(),
                        });
                    }
                    (None, None) => {
                        return Err(RequestError {
                            field: "to_offer_id",
                            message: "a switch needs to_offer_id or to_plan".into(),
                        });
                    }
                };
                Change::Switch {
                    to,
                    direction: body.direction.unwrap_or_default(),
                }
            }
            ActionKind::ApplyCoupon => {
                misplaced("to_offer_id", body.to_offer_id.is_some())?;
                misplaced("to_plan", body.to_plan.is_some())?;
                misplaced("direction", body.direction.is_some())?;
                let code = text(&body.coupon_code).ok_or_else(|| RequestError {
                    field: "coupon_code",
                    message: "applying a coupon needs its code".into(),
                })?;
                Change::Coupon { code }
            }
            ActionKind::ReactivateSubscription => {
                misplaced("to_offer_id", body.to_offer_id.is_some())?;
                misplaced("to_plan", body.to_plan.is_some())?;
                misplaced("direction", body.direction.is_some())?;
                misplaced("coupon_code", body.coupon_code.is_some())?;
                Change::Reactivate
            }
        };
        Ok(ActionRequest {
            connector: connector.to_string(),
            email,
            subscription_id: body.subscription_id,
            change,
        })
    }

    /// The action.
    pub fn kind(&self) -> ActionKind {
        self.change.kind()
    }

    /// The request's parameters as the ledger keeps them (never a secret).
    pub fn params(&self) -> Value {
        let mut params = match &self.change {
            Change::Switch { to, direction } => {
                let mut p = json!({ "direction": direction.as_str() });
                match to {
                    SwitchTarget::Offer(offer) => p["to_offer_id"] = json!(offer),
                    SwitchTarget::Plan(plan) => p["to_plan"] = json!(plan),
                }
                p
            }
            Change::Coupon { code } => json!({ "coupon_code": code }),
            Change::Reactivate => json!({}),
        };
        if let Some(id) = self.subscription_id {
            params["subscription_id"] = json!(id);
        }
        params
    }

    /// A fingerprint of the whole request: two requests with one idempotency key must
    /// have the same. serde_json keeps object keys sorted, so equal requests print alike.
    pub fn fingerprint(&self) -> String {
        let canonical = json!({
            "connector": self.connector,
            "action": self.kind().as_str(),
            "email": self.email,
            "params": self.params(),
        });
        hex::encode(digest::digest(
            &digest::SHA256,
            canonical.to_string().as_bytes(),
        ))
    }
}

/// The answer to an action, the same from the API and from `action ... --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ActionAnswer {
    /// The ledger row; `null` for a dry run or a request refused before it was recorded.
    pub action_id: Option<i64>,
    /// Connector id.
    pub connector: String,
    /// Which action.
    pub action: ActionKind,
    /// The subscriber's email.
    pub email: String,
    /// How it ended.
    pub status: ActionStatus,
    /// Why it did not succeed: our refusal code (`unknown_subscriber`, `already_active`,
    /// `expired`, `same_offer`, `no_localized_offer`, `subscription_not_found`,
    /// `ambiguous_subscription`, `idempotency_key_reused`), Cleeng's own code
    /// (`SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS`...), or ours for a failure
    /// (`token_refused`, `cleeng_unreachable`, `cleeng_unavailable`, `answer_lost`...).
    pub code: Option<String>,
    /// What happened, for a person.
    pub message: Option<String>,
    /// Cleeng's subscription id, once found.
    pub subscription_id: Option<i64>,
    /// When a refresh saw the action's effect at Cleeng (RFC 3339, UTC): a switch's
    /// target offer, a reactivate's `active`. `null` until then, and always for a coupon.
    pub confirmed_at: Option<String>,
}

impl ActionAnswer {
    /// The HTTP status of the answer: 200 succeeded (or a dry run that would go ahead),
    /// 422 refused, 502 failed or unknown, 409 still pending (another request of its key).
    pub fn http_status(&self) -> u16 {
        match self.status {
            ActionStatus::Succeeded | ActionStatus::DryRun => 200,
            ActionStatus::Refused => 422,
            ActionStatus::Failed | ActionStatus::Unknown => 502,
            ActionStatus::Pending => 409,
        }
    }
}

/// One row of the ledger `cleeng_actions`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ActionRecord {
    /// The answer it gave (or gives, once it ends).
    #[serde(flatten)]
    pub answer: ActionAnswer,
    /// The request's parameters.
    #[schema(value_type = Object)]
    pub params: Value,
    /// The caller's Idempotency-Key, if any.
    pub idempotency_key: Option<String>,
    /// Who asked.
    pub trigger: ActionTrigger,
    /// The HTTP status of Cleeng's last answer, if one came.
    pub http_status: Option<i64>,
    /// Requests sent to Cleeng for it, lookups included.
    pub attempts: i64,
    /// RFC 3339, UTC.
    pub requested_at: String,
    /// RFC 3339, UTC; `null` while pending.
    pub finished_at: Option<String>,
    /// SHA-256 of the request (the idempotency check).
    #[serde(skip)]
    pub request_hash: String,
}

/// An action that succeeded since the last applied export, which does not show it yet.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PendingAction {
    /// The ledger row.
    pub action_id: i64,
    /// Which action.
    pub action: ActionKind,
    /// Its parameters.
    #[schema(value_type = Object)]
    pub params: Value,
    /// When Cleeng applied it, RFC 3339, UTC.
    pub finished_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(action: ActionKind) -> ActionBody {
        ActionBody {
            action,
            email: " User1@Example.com ".into(),
            to_offer_id: None,
            to_plan: None,
            direction: None,
            coupon_code: None,
            subscription_id: None,
        }
    }

    #[test]
    fn a_request_is_checked_for_form() {
        let mut switch = body(ActionKind::SwitchSubscription);
        assert_eq!(
            ActionRequest::new("c", switch.clone()).unwrap_err().field,
            "to_offer_id"
        );
        switch.to_plan = Some("premium".into());
        let request = ActionRequest::new("c", switch.clone()).unwrap();
        assert_eq!(request.email, "user1@example.com");
        assert_eq!(
            request.params(),
            json!({"to_plan": "premium", "direction": "unspecified"})
        );
        switch.to_offer_id = Some("S123456789_PL".into());
        assert!(ActionRequest::new("c", switch).is_err());

        let mut coupon = body(ActionKind::ApplyCoupon);
        assert_eq!(
            ActionRequest::new("c", coupon.clone()).unwrap_err().field,
            "coupon_code"
        );
        coupon.coupon_code = Some("SAVE10".into());
        coupon.direction = Some(Direction::Upgrade);
        assert_eq!(
            ActionRequest::new("c", coupon).unwrap_err().field,
            "direction"
        );

        let mut reactivate = body(ActionKind::ReactivateSubscription);
        reactivate.subscription_id = Some(0);
        assert_eq!(
            ActionRequest::new("c", reactivate).unwrap_err().field,
            "subscription_id"
        );
    }

    #[test]
    fn the_fingerprint_follows_every_part_of_the_request() {
        let mut coupon = body(ActionKind::ApplyCoupon);
        coupon.coupon_code = Some("SAVE10".into());
        let a = ActionRequest::new("c", coupon.clone()).unwrap();
        assert_eq!(
            a.fingerprint(),
            ActionRequest::new("c", coupon.clone())
                .unwrap()
                .fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            ActionRequest::new("d", coupon.clone())
                .unwrap()
                .fingerprint()
        );
        coupon.coupon_code = Some("SAVE20".into());
        assert_ne!(
            a.fingerprint(),
            ActionRequest::new("c", coupon.clone())
                .unwrap()
                .fingerprint()
        );
        coupon.subscription_id = Some(7);
        coupon.coupon_code = Some("SAVE10".into());
        assert_ne!(
            a.fingerprint(),
            ActionRequest::new("c", coupon).unwrap().fingerprint()
        );
    }
}
