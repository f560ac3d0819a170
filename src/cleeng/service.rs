//! Carrying out one action: the checks against the stored traits, the subscription's
//! lookup, the one call that changes Cleeng, and the ledger row around them.
//!
//! The row is written `pending` before anything is asked of Cleeng, with the caller's
//! idempotency key: a second request of that key finds the row (in this process or any
//! other on the store) and answers what the first one ended with, so Cleeng is called
//! at most once per key. A row left `pending` by a process that died is turned
//! `unknown` at the next start ([`Actions::recover`]): it is never carried out again.

use super::action::{
    ActionAnswer, ActionRequest, ActionStatus, ActionTrigger, Change, SwitchTarget,
};
use super::client::{CleengError, Client, MAX_RETRY_WAIT};
use super::lookup::{self, NotOne};
use crate::clock::Clock;
use crate::config::Connector;
use crate::export::Offers;
use crate::redact::mask_email;
use crate::store::{ActionEnd, Backend, Begun, NewAction, Store, StoreError, StoredTraits};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often a request waits on the row of another request of its key.
const KEY_POLL: Duration = Duration::from_millis(100);

/// One asked-for action and how to carry it out.
#[derive(Debug, Clone)]
pub struct Ask {
    /// What is asked.
    pub request: ActionRequest,
    /// The caller's Idempotency-Key.
    pub key: Option<String>,
    /// Who asks.
    pub trigger: ActionTrigger,
    /// Check and resolve only; change nothing and record nothing.
    pub dry_run: bool,
}

/// Why an action could not be taken up at all (no answer of the contract).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No connector of that id is configured.
    #[error("no connector {0:?} is configured")]
    UnknownConnector(String),
    /// The ledger could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refusal: the action is not carried out, Cleeng is not asked to change anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// The billing actions of the configured connectors, on one store.
pub struct Actions<B: Backend> {
    store: Arc<Store<B>>,
    connectors: BTreeMap<String, (Connector, Result<Client, CleengError>)>,
    clock: Arc<dyn Clock>,
    /// This process, as the ledger names the owner of a pending row.
    owner: String,
}

impl<B: Backend> Actions<B> {
    /// The actions of these connectors; each one's token is read now, once.
    pub fn new(
        connectors: &[Connector],
        store: Arc<Store<B>>,
        clock: Arc<dyn Clock>,
        owner: String,
    ) -> Actions<B> {
        let connectors = connectors
            .iter()
            .map(|c| (c.id.clone(), (c.clone(), Client::new(&c.cleeng))))
            .collect();
        Actions {
            store,
            connectors,
            clock,
            owner,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store<B> {
        &self.store
    }

    /// Whether a connector of this id is configured.
    pub fn has_connector(&self, id: &str) -> bool {
        self.connectors.contains_key(id)
    }

    /// The connectors whose token cannot be used, and why (said at start).
    pub fn token_problems(&self) -> Vec<(&str, &CleengError)> {
        self.connectors
            .iter()
            .filter_map(|(id, (_, client))| client.as_ref().err().map(|e| (id.as_str(), e)))
            .collect()
    }

    /// Turns `unknown` the `pending` actions whose process is gone (or whose lease has
    /// passed): they are never carried out again. Returns how many.
    pub async fn recover(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut abandoned = 0;
        for row in self.store.pending_actions().await? {
            if !owner_is_gone(&row.owner, row.lease_until, now, &self.owner) {
                continue;
            }
            let message = "the process carrying it out stopped before Cleeng answered; Cleeng \
                 may or may not have applied it: check the subscription in the Cleeng dashboard";
            if self.store.abandon_action(row.id, message, now).await? {
                warn!(
                    action_id = row.id,
                    "action left pending by a stopped process is now unknown"
                );
                crate::metrics::action_abandoned();
                abandoned += 1;
            }
        }
        Ok(abandoned)
    }

    /// Carries out an action (or answers what an earlier request of its key did).
    pub async fn perform(&self, ask: Ask) -> Result<ActionAnswer, ActionError> {
        let request = &ask.request;
        let (connector, client) = self
            .connectors
            .get(&request.connector)
            .ok_or_else(|| ActionError::UnknownConnector(request.connector.clone()))?;
        let started = Instant::now();
        let answer = |end: &ActionEnd, action_id| ActionAnswer {
            action_id,
            connector: request.connector.clone(),
            action: request.kind(),
            email: request.email.clone(),
            status: end.status,
            code: end.code.clone(),
            message: end.message.clone(),
            subscription_id: end.subscription_id,
        };
        if ask.dry_run {
            let end = self.carry_out(connector, client, request, true).await?;
            return Ok(answer(&end, None));
        }
        let now = self.clock.now();
        let begun = self
            .store
            .begin_action(&NewAction {
                request,
                key: ask.key.as_deref(),
                trigger: ask.trigger,
                owner: &self.owner,
                lease_until: now + lease(connector),
                now,
            })
            .await?;
        let id = match begun {
            Begun::New(id) => id,
            Begun::Existing(record) => return self.replay(*record, request, connector).await,
        };
        let end = match self.carry_out(connector, client, request, false).await {
            Ok(end) => end,
            Err(e) => {
                // The store failed before Cleeng was asked anything: nothing changed.
                let end = ended(
                    ActionStatus::Failed,
                    "store_failed",
                    e.to_string(),
                    self.clock.now(),
                );
                let _ = self.store.finish_action(id, &self.owner, &end).await;
                return Err(e);
            }
        };
        self.store.finish_action(id, &self.owner, &end).await?;
        let elapsed = started.elapsed();
        crate::metrics::action_finished(&request.connector, request.kind(), end.status, elapsed);
        info!(
            action_id = id,
            connector = %request.connector,
            action = request.kind().as_str(),
            email = %mask_email(&request.email),
            status = end.status.as_str(),
            code = end.code.as_deref().unwrap_or(""),
            attempts = end.attempts,
            duration_ms = elapsed.as_millis() as u64,
            "action ended"
        );
        Ok(answer(&end, Some(id)))
    }

    /// The answer of an earlier request of the same key: the same request, once it has
    /// ended; another request is refused.
    async fn replay(
        &self,
        mut record: crate::cleeng::ActionRecord,
        request: &ActionRequest,
        connector: &Connector,
    ) -> Result<ActionAnswer, ActionError> {
        let id = record.answer.action_id.unwrap_or_default();
        if record.request_hash != request.fingerprint() {
            return Ok(ActionAnswer {
                action_id: None,
                connector: request.connector.clone(),
                action: request.kind(),
                email: request.email.clone(),
                status: ActionStatus::Refused,
                code: Some("idempotency_key_reused".into()),
                message: Some(format!(
                    "this Idempotency-Key belongs to action {id}, a different request; use a new \
                     key for a new request"
                )),
                subscription_id: None,
            });
        }
        // The first request is still at it: wait for its end (it is bounded by its lease).
        let deadline = Instant::now() + lease(connector).to_std().unwrap_or(MAX_RETRY_WAIT);
        while record.answer.status == ActionStatus::Pending && Instant::now() < deadline {
            tokio::time::sleep(KEY_POLL).await;
            match self.store.action(id).await? {
                Some(again) => record = again,
                None => break,
            }
        }
        if record.answer.status == ActionStatus::Pending {
            record.answer.message = Some(format!(
                "action {id} of this Idempotency-Key is still waiting for Cleeng; ask again later"
            ));
        }
        info!(
            action_id = id,
            status = record.answer.status.as_str(),
            "action answered from its idempotency key"
        );
        Ok(record.answer)
    }

    /// The checks, the lookup and the change, as one [`ActionEnd`].
    async fn carry_out(
        &self,
        connector: &Connector,
        client: &Result<Client, CleengError>,
        request: &ActionRequest,
        dry_run: bool,
    ) -> Result<ActionEnd, ActionError> {
        let traits = self.store.traits(&connector.id, &request.email).await?;
        let now = self.clock.now();
        let (traits, target) = match check(
            request,
            traits.as_ref(),
            &connector.offers,
            connector.today(now),
        ) {
            Ok(checked) => checked,
            Err(refusal) => {
                return Ok(ended(
                    ActionStatus::Refused,
                    refusal.code,
                    refusal.message,
                    now,
                ));
            }
        };
        let client = match client {
            Ok(client) => client,
            Err(e) => return Ok(failure(e, 0, None, now)),
        };
        let mut attempts = 0;
        let found =
            lookup::subscription(client, request.subscription_id, traits, &mut attempts).await;
        let subscription = match found {
            Ok(Ok(id)) => id,
            Ok(Err(not_one)) => {
                let (code, message) = match not_one {
                    NotOne::None(message) => ("subscription_not_found", message),
                    NotOne::Many(message) => ("ambiguous_subscription", message),
                };
                let mut end = ended(ActionStatus::Refused, code, message, self.clock.now());
                end.attempts = attempts;
                return Ok(end);
            }
            Err(e) => return Ok(failure(&e, attempts, None, self.clock.now())),
        };
        let (method, path, body) = change_call(request, subscription, target.as_deref());
        if dry_run {
            let mut end = ended(
                ActionStatus::DryRun,
                "dry_run",
                format!("would send {method} {path} {body}; nothing was changed"),
                self.clock.now(),
            );
            end.code = None;
            end.subscription_id = Some(subscription);
            end.attempts = attempts;
            return Ok(end);
        }
        let result = client
            .call(method, &path, &[], Some(&body), &mut attempts)
            .await;
        let at = self.clock.now();
        Ok(match result {
            Ok(answer) => ActionEnd {
                status: ActionStatus::Succeeded,
                http_status: Some(answer.status),
                code: None,
                message: Some(format!("Cleeng applied it (HTTP {})", answer.status)),
                subscription_id: Some(subscription),
                attempts,
                at,
            },
            Err(e) => failure(&e, attempts, Some(subscription), at),
        })
    }
}

/// How long a pending action may take at most: every request (three lookups and the
/// change) through every attempt, each to its timeout, plus the longest waits between.
fn lease(connector: &Connector) -> TimeDelta {
    let cleeng = &connector.cleeng;
    let per_request = (cleeng.timeout + MAX_RETRY_WAIT) * cleeng.max_attempts.max(1);
    TimeDelta::from_std(per_request * 4 + Duration::from_secs(60)).unwrap_or(TimeDelta::hours(1))
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

/// The one request that changes Cleeng.
fn change_call(
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

fn ended(status: ActionStatus, code: &str, message: String, at: DateTime<Utc>) -> ActionEnd {
    ActionEnd {
        status,
        http_status: None,
        code: Some(code.to_string()),
        message: Some(message),
        subscription_id: None,
        attempts: 0,
        at,
    }
}

/// The end of an action Cleeng did not apply, or may have.
fn failure(
    e: &CleengError,
    attempts: u32,
    subscription: Option<i64>,
    at: DateTime<Utc>,
) -> ActionEnd {
    let status = match e {
        CleengError::Refused { .. } => ActionStatus::Refused,
        CleengError::Lost { .. } => ActionStatus::Unknown,
        _ => ActionStatus::Failed,
    };
    ActionEnd {
        status,
        http_status: e.http_status(),
        code: Some(e.code()),
        message: Some(e.to_string()),
        subscription_id: subscription,
        attempts,
        at,
    }
}

/// Whether the process that owns a pending row is gone: its lease has passed, or it
/// ran on this host and is no longer running. Owners are `host:pid:start`.
fn owner_is_gone(
    owner: &str,
    lease_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    this: &str,
) -> bool {
    if lease_until.is_none_or(|until| until < now) {
        return true;
    }
    if owner == this {
        return false;
    }
    let mut parts = owner.rsplitn(3, ':');
    let (_start, pid, host) = (parts.next(), parts.next(), parts.next());
    let this_host = this.rsplitn(3, ':').nth(2);
    if host.is_none() || host != this_host {
        // Another machine's: only its lease tells.
        return false;
    }
    let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    // Another start of this very pid (a container's pid 1 restarted) is gone.
    if pid == std::process::id() {
        return true;
    }
    let proc = std::path::Path::new("/proc");
    proc.is_dir() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleeng::{ActionBody, ActionKind};

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

    #[test]
    fn a_pending_row_is_taken_for_dead_by_its_lease_or_its_gone_process() {
        let now = Utc::now();
        let later = Some(now + TimeDelta::minutes(5));
        let this = format!("host-a:{}:1", std::process::id());
        assert!(owner_is_gone(
            "host-b:1:1",
            Some(now - TimeDelta::seconds(1)),
            now,
            &this
        ));
        assert!(!owner_is_gone("host-b:1:1", later, now, &this));
        assert!(!owner_is_gone(&this, later, now, &this));
        // This pid, another start: an earlier life of this process id.
        assert!(owner_is_gone(
            &format!("host-a:{}:0", std::process::id()),
            later,
            now,
            &this
        ));
        // A pid that cannot be running.
        assert!(owner_is_gone("host-a:4294967290:1", later, now, &this));
    }
}
