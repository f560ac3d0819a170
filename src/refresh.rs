//! Refresh: one subscriber read from Cleeng's Core API now, and written into the traits
//! so that a prompt acts on what Cleeng holds rather than on last night's export.
//!
//! Which subscription: the stored external id's, else the customer's live (active or
//! stopped) ones without an offer filter (the offer may have changed since the export);
//! one is it, of several the one to the stored offer. What it writes: the offer, status
//! and expiry date (`expiresAt`, a Unix time, as a date in the schedule's zone), the
//! offer's country with them, and the row hash an export row saying the same gets, so
//! that the next export that agrees is `unchanged`; with `live_at` and `live_source`,
//! which make an older export leave the row as it is (`superseded`). Other traits stay
//! as the export gave them. Only GETs are sent: a refresh changes nothing at Cleeng.
//!
//! A read also confirms the subscriber's billing actions whose effect it shows (a switch:
//! the target offer; a reactivate: `active`); a coupon has no visible effect.
//!
//! The write holds the connector's run lock (for the milliseconds it takes): a run reads
//! the refreshed rows when it begins and applies its plan by row, so a write in the middle
//! of a run would be undone by it or make it fail its counts. A refresh that meets a run
//! waits for it to end, up to [`RUN_WAIT`], Cleeng having been read already; a run that
//! meets a refresh's write waits for it too (`sync`'s `LOCK_PATIENCE`).
//!
//! The calls follow Cleeng's reference pages: `GET /3.1/subscriptions` by `externalId`
//! or by `customerId` with `status[]`
//! (<https://developers.cleeng.com/reference/list-subscriptions>) and `GET
//! /3.1/entitlements` by `customerEmail`
//! (<https://developers.cleeng.com/reference/list-entitlements>). The stored pages give
//! `expiresAt` as a Unix time ("End of subscription period"); they are silent on whether
//! a subscription listed by external id can be in another status than active or
//! stopped, so other statuses are read as not live.

use crate::action::{ActionKind, PendingAction};
use crate::cleeng::client::Client;
use crate::cleeng::error::CleengError;
use crate::cleeng::lookup::{self, Held, NotOne};
use crate::clock::Clock;
use crate::config::Connector;
use crate::export::{Offers, country_of};
use crate::live::{LiveSource, RefreshAnswer, RefreshOutcome};
use crate::redact::mask_email;
use crate::store::{Backend, LiveWrite, RunLock, Store, StoreError, StoredTraits, timestamp};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// How often a refresh reads the row again when a run changed it between its read and
/// its write.
const MAX_WRITES: u32 = 3;

/// How long a refresh waits for a run of its connector to end before it gives up
/// (`failed`, nothing written).
pub const RUN_WAIT: Duration = Duration::from_secs(30);

/// Why a refresh could not be taken up at all (no answer of the contract).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No connector of that id is configured.
    #[error("no connector {0:?} is configured")]
    UnknownConnector(String),
    /// The traits could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A configured connector and the client of its Cleeng account (or why there is none).
pub type Account = (Connector, Result<Client, CleengError>);

/// Reads subscribers from Cleeng into the traits of the configured connectors.
pub struct Refresher<B: Backend> {
    store: Arc<Store<B>>,
    accounts: BTreeMap<String, Account>,
    clock: Arc<dyn Clock>,
}

impl<B: Backend> Refresher<B> {
    /// The refresher of these connectors; each one's token is read now, once.
    pub fn new(connectors: &[Connector], store: Arc<Store<B>>, clock: Arc<dyn Clock>) -> Self {
        let accounts = connectors
            .iter()
            .map(|c| (c.id.clone(), (c.clone(), Client::new(&c.cleeng))))
            .collect();
        Refresher {
            store,
            accounts,
            clock,
        }
    }

    /// A connector and its client.
    pub fn account(&self, connector: &str) -> Option<&Account> {
        self.accounts.get(connector)
    }

    /// Every connector and its client.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Reads the subscriber from Cleeng and writes what it holds into their traits.
    pub async fn refresh(
        &self,
        connector: &str,
        email: &str,
        source: LiveSource,
    ) -> Result<RefreshAnswer, RefreshError> {
        let (settings, client) = self
            .account(connector)
            .ok_or_else(|| RefreshError::UnknownConnector(connector.to_string()))?;
        let email = email.trim().to_lowercase();
        let mut answer = RefreshAnswer {
            connector: connector.to_string(),
            email: email.clone(),
            outcome: RefreshOutcome::Failed,
            changes: BTreeMap::new(),
            subscription_id: None,
            live_at: None,
            confirmed_actions: Vec::new(),
            message: None,
            requests: 0,
            run_in_flight: false,
        };
        for _ in 0..MAX_WRITES {
            let Some(stored) = self.store.traits(connector, &email).await? else {
                answer.outcome = RefreshOutcome::UnknownSubscriber;
                answer.message = Some(format!(
                    "connector {connector:?} has no subscriber {}: new subscribers come with \
                     the export",
                    mask_email(&email)
                ));
                break;
            };
            if self
                .read_and_write(settings, client, &stored, source, &mut answer)
                .await?
            {
                break;
            }
            answer.message = Some(
                "a run changed the subscriber while Cleeng was read, again and again; try later"
                    .into(),
            );
        }
        crate::metrics::refresh_finished(connector, source, answer.outcome);
        info!(
            connector,
            email = %mask_email(&email),
            source = %source.stored(),
            outcome = answer.outcome.as_str(),
            subscription_id = answer.subscription_id,
            "refresh ended"
        );
        Ok(answer)
    }

    /// One read of Cleeng and one conditioned write; `false` when the row changed since
    /// it was read (nothing written).
    async fn read_and_write(
        &self,
        settings: &Connector,
        client: &Result<Client, CleengError>,
        stored: &StoredTraits,
        source: LiveSource,
        answer: &mut RefreshAnswer,
    ) -> Result<bool, RefreshError> {
        let held = match client {
            Ok(client) => {
                let mut attempts = 0;
                let external = stored.external_id.as_deref();
                let held = lookup::live(client, external, &stored.email, &mut attempts).await;
                answer.requests += attempts;
                held
            }
            Err(e) => Err(e.clone()),
        };
        let chosen = match held {
            Ok(Ok(held)) => choose(held, &stored.offer_id),
            Ok(Err(NotOne::Many(message))) => Err((RefreshOutcome::AmbiguousSubscription, message)),
            Ok(Err(NotOne::None(message))) => Err((RefreshOutcome::NoLiveSubscription, message)),
            Err(e) => Err((RefreshOutcome::Failed, crate::error::one_line(&e))),
        };
        let held = match chosen {
            Ok(held) => held,
            Err((outcome, message)) => {
                answer.outcome = outcome;
                answer.message = Some(message);
                return Ok(true);
            }
        };
        let live_at = self.clock.now();
        answer.subscription_id = Some(held.id);
        let Some(expiry) = expiry_date(held.expires_at, settings.timezone) else {
            answer.outcome = RefreshOutcome::Failed;
            answer.message = Some(format!(
                "Cleeng's expiresAt {} of subscription {} is not a date",
                held.expires_at, held.id
            ));
            return Ok(true);
        };
        let live = (held.offer_id.as_str(), held.status.as_str(), expiry);
        let Some(row) = stored.as_row(0, Some(live)) else {
            return Err(StoreError::Bug(format!(
                "the stored traits of a subscriber make no row (expiry {:?})",
                stored.expiry_date
            ))
            .into());
        };
        let hash = row.row_hash.hex();
        let Some(lock) = self
            .store
            .lock_connector_within(&settings.id, RUN_WAIT)
            .await?
        else {
            answer.outcome = RefreshOutcome::Failed;
            answer.run_in_flight = true;
            answer.message = Some(format!(
                "a run of connector {:?} has been applying an export for {} s: a refresh does not \
                 write under it; try again when it ends",
                settings.id,
                RUN_WAIT.as_secs()
            ));
            return Ok(true);
        };
        let written = self
            .store
            .write_live(&LiveWrite {
                read: stored,
                offer_id: &held.offer_id,
                status: &held.status,
                expiry_date: expiry,
                row_hash: hash.as_str(),
                live_at,
                live_source: &source.stored(),
            })
            .await;
        lock.release().await;
        if !written? {
            return Ok(false);
        }
        answer.changes = changes(stored, &held, expiry);
        answer.outcome = if answer.changes.is_empty() {
            RefreshOutcome::Unchanged
        } else {
            RefreshOutcome::Updated
        };
        answer.live_at = Some(timestamp(live_at));
        answer.message = None;
        answer.confirmed_actions = self
            .confirm(settings, &stored.email, &held, live_at)
            .await?;
        Ok(true)
    }

    /// Confirms the subscriber's unconfirmed actions whose effect Cleeng shows.
    async fn confirm(
        &self,
        settings: &Connector,
        email: &str,
        held: &Held,
        at: DateTime<Utc>,
    ) -> Result<Vec<i64>, RefreshError> {
        let mut confirmed = Vec::new();
        let pending = self.store.pending_actions_of(&settings.id, email).await?;
        for action in pending {
            if shows_effect(&action, &settings.offers, held) {
                self.store.confirm_action(action.action_id, at).await?;
                confirmed.push(action.action_id);
            }
        }
        Ok(confirmed)
    }
}

/// The subscription a refresh reads, of the subscriber's live ones; or how it ends
/// without one.
pub fn choose(mut held: Vec<Held>, stored_offer: &str) -> Result<Held, (RefreshOutcome, String)> {
    if held.is_empty() {
        return Err((
            RefreshOutcome::NoLiveSubscription,
            "Cleeng holds no active or stopped subscription of the subscriber".into(),
        ));
    }
    let ids: Vec<i64> = held.iter().map(|h| h.id).collect();
    if held.len() > 1 {
        held.retain(|h| h.offer_id == stored_offer);
    }
    match held.pop() {
        Some(one) if held.is_empty() => Ok(one),
        _ => Err((
            RefreshOutcome::AmbiguousSubscription,
            format!(
                "Cleeng holds {} live subscriptions of the subscriber ({ids:?}), and not exactly \
                 one of them is to the stored offer {stored_offer}",
                ids.len()
            ),
        )),
    }
}

/// `expiresAt` as a date in the zone.
pub fn expiry_date(expires_at: i64, zone: Tz) -> Option<NaiveDate> {
    DateTime::from_timestamp(expires_at, 0).map(|t| t.with_timezone(&zone).date_naive())
}

/// What the refresh changes, each as `[before, after]`.
fn changes(
    stored: &StoredTraits,
    held: &Held,
    expiry: NaiveDate,
) -> BTreeMap<&'static str, [Value; 2]> {
    let expiry = expiry.format("%Y-%m-%d").to_string();
    let mut changes = BTreeMap::new();
    for (name, before, after) in [
        ("offer_id", &stored.offer_id, &held.offer_id),
        ("status", &stored.status, &held.status),
        ("expiry_date", &stored.expiry_date, &expiry),
    ] {
        if before != after {
            changes.insert(name, [json!(before), json!(after)]);
        }
    }
    if let Some(run) = stored.removed_run {
        changes.insert("removed_run", [json!(run), Value::Null]);
    }
    changes
}

/// Whether Cleeng's subscription shows an action's effect: a switch's target offer (a
/// plan's offer for the country of the offer it holds), a reactivate's `active`.
pub fn shows_effect(action: &PendingAction, offers: &Offers, held: &Held) -> bool {
    match action.action {
        ActionKind::ReactivateSubscription => held.status == "active",
        ActionKind::SwitchSubscription => {
            let param = |name: &str| action.params.get(name).and_then(Value::as_str);
            if let Some(offer) = param("to_offer_id") {
                return offer == held.offer_id;
            }
            let target = param("to_plan").and_then(|plan| {
                country_of(&held.offer_id).and_then(|country| offers.offer_for(plan, country))
            });
            target == Some(held.offer_id.as_str())
        }
        ActionKind::ApplyCoupon => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn held(id: i64, offer: &str, status: &str) -> Held {
        Held {
            id,
            offer_id: offer.into(),
            status: status.into(),
            expires_at: 1_893_456_000,
        }
    }

    #[test]
    fn one_subscription_is_it_and_of_several_the_one_to_the_stored_offer() {
        let one = choose(vec![held(1, "S2_PL", "active")], "S1_PL").unwrap();
        assert_eq!(one.id, 1, "the offer may have changed since the export");
        let two = vec![held(1, "S2_PL", "active"), held(2, "S1_PL", "stopped")];
        assert_eq!(choose(two, "S1_PL").unwrap().id, 2);
        let neither = vec![held(1, "S2_PL", "active"), held(2, "S3_PL", "active")];
        assert_eq!(
            choose(neither, "S1_PL").unwrap_err().0,
            RefreshOutcome::AmbiguousSubscription
        );
        let both = vec![held(1, "S1_PL", "active"), held(2, "S1_PL", "stopped")];
        assert_eq!(
            choose(both, "S1_PL").unwrap_err().0,
            RefreshOutcome::AmbiguousSubscription
        );
        assert_eq!(
            choose(Vec::new(), "S1_PL").unwrap_err().0,
            RefreshOutcome::NoLiveSubscription
        );
    }

    #[test]
    fn an_expiry_at_three_in_the_morning_utc_is_the_day_before_in_los_angeles() {
        // 2031-03-04T03:00:00Z is 2031-03-03 19:00 in Los Angeles (PST, UTC-8).
        let at = DateTime::parse_from_rfc3339("2031-03-04T03:00:00Z")
            .unwrap()
            .timestamp();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(
            expiry_date(at, chrono_tz::America::Los_Angeles),
            day(2031, 3, 3)
        );
        assert_eq!(expiry_date(at, chrono_tz::UTC), day(2031, 3, 4));
        assert_eq!(expiry_date(at, chrono_tz::Europe::Warsaw), day(2031, 3, 4));
    }

    #[test]
    fn a_switch_shows_in_its_target_offer_a_reactivate_in_active_a_coupon_never() {
        let mut plans = BTreeMap::new();
        plans.insert(
            "annual".to_string(),
            BTreeMap::from([
                ("PL".to_string(), "S200000001_PL".to_string()),
                ("DE".to_string(), "S200000002_DE".to_string()),
            ]),
        );
        let offers = Offers::new(plans).unwrap();
        let action = |kind, params| PendingAction {
            action_id: 1,
            action: kind,
            params,
            finished_at: String::new(),
        };
        let to_offer = action(
            ActionKind::SwitchSubscription,
            json!({"to_offer_id": "S200000001_PL"}),
        );
        let to_plan = action(ActionKind::SwitchSubscription, json!({"to_plan": "annual"}));
        let reactivate = action(ActionKind::ReactivateSubscription, json!({}));
        let coupon = action(ActionKind::ApplyCoupon, json!({"coupon_code": "SAVE"}));
        let moved = held(1, "S200000001_PL", "active");
        let not_yet = held(1, "S100000001_PL", "stopped");
        assert!(shows_effect(&to_offer, &offers, &moved));
        assert!(!shows_effect(&to_offer, &offers, &not_yet));
        assert!(shows_effect(&to_plan, &offers, &moved));
        assert!(!shows_effect(&to_plan, &offers, &not_yet));
        assert!(shows_effect(&reactivate, &offers, &moved));
        assert!(!shows_effect(&reactivate, &offers, &not_yet));
        assert!(!shows_effect(&coupon, &offers, &moved));
    }
}
