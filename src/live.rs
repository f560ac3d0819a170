//! Live subscriber state as the rest of the program sees it: what asked for a refresh,
//! how it ended, and the answer the CLI and the API give. Nothing here talks to Cleeng
//! or the store.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What asked for a refresh; kept as the row's `live_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveSource {
    /// `cleeng-sync refresh`.
    Manual,
    /// `POST /v1/connectors/{id}/subscribers/{email}/refresh`.
    Api,
    /// A Cleeng webhook, by its `cleeng_events` row.
    Webhook(i64),
    /// A succeeded billing action, by its ledger row.
    Action(i64),
}

impl LiveSource {
    /// As the store keeps it: `manual`, `api`, `webhook:<event id>`, `action:<action id>`.
    pub fn stored(self) -> String {
        match self {
            LiveSource::Manual => "manual".into(),
            LiveSource::Api => "api".into(),
            LiveSource::Webhook(id) => format!("webhook:{id}"),
            LiveSource::Action(id) => format!("action:{id}"),
        }
    }

    /// The `trigger` label of `cleeng_sync_refreshes_total`.
    pub fn trigger(self) -> &'static str {
        match self {
            LiveSource::Manual => "manual",
            LiveSource::Api => "api",
            LiveSource::Webhook(_) => "webhook",
            LiveSource::Action(_) => "action",
        }
    }
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// Cleeng holds another offer, status or expiry date than stored: written.
    Updated,
    /// Cleeng holds what is stored: only `live_at` and `live_source` written.
    Unchanged,
    /// Cleeng holds no active or stopped subscription of the subscriber: nothing written.
    NoLiveSubscription,
    /// Several live subscriptions, none or several of them to the stored offer.
    AmbiguousSubscription,
    /// The connector's traits have no such subscriber (new ones come with the export).
    UnknownSubscriber,
    /// Cleeng could not be read (unreachable, busy, the token refused) after the attempts.
    Failed,
}

impl RefreshOutcome {
    /// Every outcome.
    pub const ALL: [RefreshOutcome; 6] = [
        RefreshOutcome::Updated,
        RefreshOutcome::Unchanged,
        RefreshOutcome::NoLiveSubscription,
        RefreshOutcome::AmbiguousSubscription,
        RefreshOutcome::UnknownSubscriber,
        RefreshOutcome::Failed,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Updated => "updated",
            RefreshOutcome::Unchanged => "unchanged",
            RefreshOutcome::NoLiveSubscription => "no_live_subscription",
            RefreshOutcome::AmbiguousSubscription => "ambiguous_subscription",
            RefreshOutcome::UnknownSubscriber => "unknown_subscriber",
            RefreshOutcome::Failed => "failed",
        }
    }

    /// The HTTP status of the answer: 200, 422 for what a person must look at, 502 when
    /// Cleeng failed.
    pub fn http_status(self) -> u16 {
        match self {
            RefreshOutcome::Updated
            | RefreshOutcome::Unchanged
            | RefreshOutcome::NoLiveSubscription => 200,
            RefreshOutcome::AmbiguousSubscription | RefreshOutcome::UnknownSubscriber => 422,
            RefreshOutcome::Failed => 502,
        }
    }

    /// The CLI's exit code: 0, 3 (as a refused action), 1.
    pub fn exit_code(self) -> u8 {
        match self.http_status() {
            200 => 0,
            422 => 3,
            _ => 1,
        }
    }
}

/// What a refresh did: the same object from `refresh --json` and the API.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RefreshAnswer {
    /// Connector id.
    pub connector: String,
    /// The subscriber's email (lower case).
    pub email: String,
    /// How it ended.
    pub outcome: RefreshOutcome,
    /// Each trait it changed, as `[before, after]`: `offer_id`, `status`, `expiry_date`,
    /// and `removed_run` (`[N, null]`) for a removed subscriber present again.
    #[schema(value_type = Object)]
    pub changes: BTreeMap<&'static str, [Value; 2]>,
    /// Cleeng's subscription it read.
    pub subscription_id: Option<i64>,
    /// When Cleeng was read (RFC 3339, UTC), for `updated` and `unchanged`.
    pub live_at: Option<String>,
    /// Billing actions whose effect this read showed, now confirmed.
    pub confirmed_actions: Vec<i64>,
    /// What happened, for a person.
    pub message: Option<String>,
    /// Requests sent to Cleeng, retries included: the inbox worker's rate limit counts
    /// them. Not in the answer.
    #[serde(skip)]
    pub requests: u32,
    /// It failed only because a run of the connector held the traits past the wait:
    /// the inbox worker tries it again after the run without counting the attempt. Not
    /// in the answer.
    #[serde(skip)]
    pub run_in_flight: bool,
}
