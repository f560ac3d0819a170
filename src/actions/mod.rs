//! Carrying out one action: the checks against the stored traits, the subscription's
//! lookup, the one call that changes Cleeng, and the ledger row around them.
//!
//! The row is written `pending` before anything is asked of Cleeng, with the caller's
//! idempotency key: a second request of that key finds the row (in this process or any
//! other on the store) and answers what the first one ended with, so Cleeng is called
//! at most once per key. A row left `pending` by a process that died is turned
//! `unknown` at the next start ([`Actions::recover`]): it is never carried out again.
//!
//! A switch or reactivate that succeeded is confirmed by reading the subscriber back
//! from Cleeng (a refresh, `action:<id>`): at once, and while the effect does not show
//! (a switch is `pending` at Cleeng first), again after `confirm_after`, up to
//! `confirm_reads` reads in all ([`Actions::confirm_later`]). Until then another of
//! that kind for the subscriber without its own idempotency key is refused
//! `already_requested`: the stored traits may not show the first one yet, and a second
//! PATCH or switch would reach Cleeng. Coupons are exempt: they have no visible effect,
//! and a second coupon is usually another code.

mod rules;

pub use rules::{Refusal, change_call, check, check_requested};

use crate::action::{ActionAnswer, ActionKind, ActionRequest, ActionStatus, ActionTrigger};
use crate::cleeng::client::{Client, MAX_RETRY_WAIT};
use crate::cleeng::error::CleengError;
use crate::cleeng::lookup::{self, NotOne};
use crate::clock::Clock;
use crate::config::Connector;
use crate::live::LiveSource;
use crate::process::owner_is_gone;
use crate::redact::mask_email;
use crate::refresh::Refresher;
use crate::store::{ActionEnd, Backend, Begun, NewAction, Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
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

/// The billing actions of the configured connectors, on one store.
pub struct Actions<B: Backend> {
    store: Arc<Store<B>>,
    /// The connectors' Cleeng accounts, and the refresh that confirms an action.
    refresher: Refresher<B>,
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
        let refresher = Refresher::new(connectors, Arc::clone(&store), Arc::clone(&clock));
        Actions {
            store,
            refresher,
            clock,
            owner,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store<B> {
        &self.store
    }

    /// The refresh of one subscriber from Cleeng, on the same accounts.
    pub fn refresher(&self) -> &Refresher<B> {
        &self.refresher
    }

    /// The connectors whose token cannot be used, and why (said at start).
    pub fn token_problems(&self) -> Vec<(&str, &CleengError)> {
        self.refresher
            .accounts()
            .filter_map(|(c, client)| client.as_ref().err().map(|e| (c.id.as_str(), e)))
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
            .refresher
            .account(&request.connector)
            .ok_or_else(|| ActionError::UnknownConnector(request.connector.clone()))?;
        let keyed = ask.key.is_some();
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
            confirmed_at: None,
        };
        if ask.dry_run {
            let end = self
                .carry_out(connector, client, request, keyed, true)
                .await?;
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
        let end = match self
            .carry_out(connector, client, request, keyed, false)
            .await
        {
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
        let mut answer = answer(&end, Some(id));
        if confirmable(&answer) {
            answer.confirmed_at = self.confirm(&answer).await;
        }
        Ok(answer)
    }

    /// Reads the subscriber of a succeeded action from Cleeng; when it was confirmed.
    /// Never an error: the action succeeded whatever the read finds, and only its
    /// confirmation waits for a later read when this one fails.
    async fn confirm(&self, answer: &ActionAnswer) -> Option<String> {
        let id = answer.action_id?;
        let read = self
            .refresher
            .refresh(&answer.connector, &answer.email, LiveSource::Action(id))
            .await;
        if let Err(e) = read {
            warn!(
                action_id = id,
                "reading the subscriber back from Cleeng: {e}"
            );
        }
        match self.store.action(id).await {
            Ok(action) => action.and_then(|a| a.answer.confirmed_at),
            Err(e) => {
                warn!(
                    action_id = id,
                    "reading whether the action is confirmed: {e}"
                );
                None
            }
        }
    }

    /// Reads the subscriber of a succeeded, unconfirmed switch or reactivate again, after
    /// `confirm_after` each time, until it is confirmed or `confirm_reads` reads (the one
    /// at once included) are spent. The answer with `confirmed_at` as it ends.
    pub async fn confirm_later(&self, mut answer: ActionAnswer) -> ActionAnswer {
        let Some((connector, _)) = self.refresher.account(&answer.connector) else {
            return answer;
        };
        let (wait, reads) = (
            connector.cleeng.confirm_after,
            connector.cleeng.confirm_reads,
        );
        for _ in 1..reads {
            if !confirmable(&answer) || answer.confirmed_at.is_some() {
                break;
            }
            tokio::time::sleep(wait).await;
            answer.confirmed_at = self.confirm(&answer).await;
        }
        answer
    }

    /// The answer of an earlier request of the same key: the same request, once it has
    /// ended; another request is refused.
    async fn replay(
        &self,
        mut record: crate::action::ActionRecord,
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
                confirmed_at: None,
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
        keyed: bool,
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
        if !keyed {
            let pending = self
                .store
                .pending_actions_of(&connector.id, &request.email)
                .await?;
            if let Err(refusal) = check_requested(request, &pending) {
                return Ok(ended(
                    ActionStatus::Refused,
                    refusal.code,
                    refusal.message,
                    now,
                ));
            }
        }
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

/// Whether an answer is of an action a refresh can confirm that is not confirmed yet: a
/// switch or reactivate that succeeded.
fn confirmable(answer: &ActionAnswer) -> bool {
    answer.status == ActionStatus::Succeeded
        && answer.action != ActionKind::ApplyCoupon
        && answer.confirmed_at.is_none()
}

/// How long a pending action may take at most: every request (three lookups and the
/// change) through every attempt, each to its timeout, plus the longest waits between.
fn lease(connector: &Connector) -> TimeDelta {
    let cleeng = &connector.cleeng;
    let per_request = (cleeng.timeout + MAX_RETRY_WAIT) * cleeng.max_attempts.max(1);
    TimeDelta::from_std(per_request * 4 + Duration::from_secs(60)).unwrap_or(TimeDelta::hours(1))
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
