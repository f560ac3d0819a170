//! The ledger of the billing actions (`cleeng_actions`): a row is written `pending`
//! before Cleeng is called and ended once it answers. The unique index on the
//! idempotency key is the lock that lets one request of a key call Cleeng: the second
//! finds the first's row, in this process or another, and waits for its end.

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::action::{
    ActionAnswer, ActionKind, ActionRecord, ActionRequest, ActionStatus, ActionTrigger,
    PendingAction,
};
use crate::store::backend::Store;
use crate::store::error::StoreError;
use crate::store::reads::StoredTraits;
use chrono::{DateTime, Utc};

use super::reads::Row as Conn;
use crate::store::error::Result;

type Row<B> = <Conn<B> as Session>::Row;

/// An action to record as `pending`.
#[derive(Debug, Clone, Copy)]
pub struct NewAction<'a> {
    /// What is asked.
    pub request: &'a ActionRequest,
    /// The caller's Idempotency-Key.
    pub key: Option<&'a str>,
    /// Who asked.
    pub trigger: ActionTrigger,
    /// The process carrying it out.
    pub owner: &'a str,
    /// Past this, a `pending` row is taken for dead.
    pub lease_until: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What recording an action found.
#[derive(Debug, Clone)]
pub enum Begun {
    /// A new row: carry it out.
    New(i64),
    /// The key's row, written by an earlier request (ended, or still pending).
    Existing(Box<ActionRecord>),
}

/// How an action ended.
#[derive(Debug, Clone)]
pub struct ActionEnd {
    /// Succeeded, refused, failed or unknown.
    pub status: ActionStatus,
    /// Cleeng's last HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// The answer's code.
    pub code: Option<String>,
    /// The answer's message.
    pub message: Option<String>,
    /// Cleeng's subscription id, once found.
    pub subscription_id: Option<i64>,
    /// Requests sent to Cleeng.
    pub attempts: u32,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// A `pending` action, as a start judges whether its process is alive.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Its id.
    pub id: i64,
    /// The process carrying it out.
    pub owner: String,
    /// Until when it may.
    pub lease_until: Option<DateTime<Utc>>,
}

/// One subscriber's traits and the actions Cleeng applied since the export they come
/// from: what `traits` and the traits endpoint answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TraitsAndActions {
    /// The stored traits, as of the last applied export.
    #[serde(flatten)]
    pub traits: StoredTraits,
    /// Actions that succeeded after that export was read, oldest first.
    pub pending_actions: Vec<PendingAction>,
}

impl<B: Backend> Store<B> {
    /// One subscriber's traits with the actions that succeeded since their export.
    pub async fn traits_and_actions(
        &self,
        connector: &str,
        email: &str,
    ) -> Result<Option<TraitsAndActions>> {
        let Some(traits) = self.traits(connector, email).await? else {
            return Ok(None);
        };
        let pending_actions = self.pending_actions_of(connector, email).await?;
        Ok(Some(TraitsAndActions {
            traits,
            pending_actions,
        }))
    }

    /// Records an action as `pending`, or finds the row its idempotency key already has.
    pub async fn begin_action(&self, new: &NewAction<'_>) -> Result<Begun> {
        let request = new.request;
        let params = request.params().to_string();
        let hash = request.fingerprint();
        let inserted = self
            .read_one(
                B::SQL.begin_action,
                &[
                    Param::Text(Some(&request.connector)),
                    Param::Text(Some(&request.email)),
                    Param::Text(Some(request.kind().as_str())),
                    Param::Text(Some(&params)),
                    Param::Text(new.key),
                    Param::Text(Some(&hash)),
                    Param::Text(Some(new.trigger.as_str())),
                    Param::Text(Some(new.owner)),
                    Param::Instant(new.lease_until),
                    Param::Instant(new.now),
                ],
                |row| Ok(row.int("id")?),
            )
            .await?;
        if let Some(id) = inserted {
            return Ok(Begun::New(id));
        }
        let key = new
            .key
            .ok_or_else(|| StoreError::Bug("an action without a key was not recorded".into()))?;
        let record = self
            .read_one(
                B::SQL.action_by_key,
                &[Param::Text(Some(key))],
                action_record::<B>,
            )
            .await?
            .ok_or_else(|| StoreError::Bug("an idempotency key's row vanished".into()))?;
        Ok(Begun::Existing(Box::new(record)))
    }

    /// Ends an action its owner carried out; `false` if it is not that owner's (or
    /// already ended).
    pub async fn finish_action(&self, id: i64, owner: &str, end: &ActionEnd) -> Result<bool> {
        let changed = self
            .write(
                B::SQL.finish_action,
                &[
                    Param::Int(Some(id)),
                    Param::Text(Some(owner)),
                    Param::Text(Some(end.status.as_str())),
                    Param::Int(end.http_status.map(i64::from)),
                    Param::Text(end.code.as_deref()),
                    Param::Text(end.message.as_deref()),
                    Param::Int(end.subscription_id),
                    Param::Int(Some(i64::from(end.attempts))),
                    Param::Instant(end.at),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    /// One action.
    pub async fn action(&self, id: i64) -> Result<Option<ActionRecord>> {
        self.read_one(B::SQL.action, &[Param::Int(Some(id))], action_record::<B>)
            .await
    }

    /// Recent actions, newest first, of a connector and an email when given.
    pub async fn actions(
        &self,
        connector: Option<&str>,
        email: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ActionRecord>> {
        let email = email.map(|e| e.trim().to_lowercase());
        self.read_all(
            B::SQL.actions,
            &[
                Param::Text(connector),
                Param::Text(email.as_deref()),
                Param::Int(Some(i64::from(limit))),
            ],
            action_record::<B>,
        )
        .await
    }

    /// Every action still `pending`.
    pub async fn pending_actions(&self) -> Result<Vec<PendingRow>> {
        self.read_all(B::SQL.pending_actions, &[], |row| {
            Ok(PendingRow {
                id: row.int("id")?,
                owner: row.text("owner")?,
                lease_until: <Conn<B>>::instant(row, "lease_until")?
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&Utc)),
            })
        })
        .await
    }

    /// Turns a `pending` action `unknown`; `false` if it had ended meanwhile.
    pub async fn abandon_action(&self, id: i64, message: &str, now: DateTime<Utc>) -> Result<bool> {
        let changed = self
            .write(
                B::SQL.abandon_action,
                &[
                    Param::Int(Some(id)),
                    Param::Text(Some(message)),
                    Param::Instant(now),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    /// The subscriber's actions that succeeded after the connector's last applied
    /// export was read: its traits do not show them yet.
    pub async fn pending_actions_of(
        &self,
        connector: &str,
        email: &str,
    ) -> Result<Vec<PendingAction>> {
        let email = email.trim().to_lowercase();
        let params = [Param::Text(Some(connector)), Param::Text(Some(&email))];
        self.read_all(B::SQL.actions_since_export, &params, |row| {
            let record = action_record::<B>(row)?;
            Ok(PendingAction {
                action_id: record.answer.action_id.unwrap_or_default(),
                action: record.answer.action,
                params: record.params,
                finished_at: record.finished_at.unwrap_or_default(),
            })
        })
        .await
    }
}

fn action_record<B: Backend>(row: &Row<B>) -> Result<ActionRecord> {
    let action = row.text("action")?;
    let status = row.text("status")?;
    let trigger = row.text("trigger")?;
    Ok(ActionRecord {
        answer: ActionAnswer {
            action_id: Some(row.int("id")?),
            connector: row.text("connector")?,
            action: ActionKind::parse(&action)
                .ok_or_else(|| StoreError::Bug(format!("unknown action {action:?} stored")))?,
            email: row.text("email")?,
            status: ActionStatus::parse(&status)
                .ok_or_else(|| StoreError::Bug(format!("unknown status {status:?} stored")))?,
            code: row.maybe_text("code")?,
            message: row.maybe_text("message")?,
            subscription_id: row.maybe_int("subscription_id")?,
            confirmed_at: <Conn<B>>::instant(row, "confirmed_at")?,
        },
        params: <Conn<B>>::json(row, "params")?.unwrap_or(serde_json::Value::Null),
        idempotency_key: row.maybe_text("idempotency_key")?,
        trigger: if trigger == "api" {
            ActionTrigger::Api
        } else {
            ActionTrigger::Cli
        },
        http_status: row.maybe_int("http_status")?,
        attempts: row.int("attempts")?,
        requested_at: <Conn<B>>::instant(row, "requested_at")?.unwrap_or_default(),
        finished_at: <Conn<B>>::instant(row, "finished_at")?,
        request_hash: row.text("request_hash")?,
    })
}
