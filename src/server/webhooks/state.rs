//! What the listener's handlers share: the connectors' endpoints (their secrets read once
//! from the environment), the inbox, the limits and the clock.

use super::verify::{BadSecret, Signer};
use crate::clock::Clock;
use crate::config::{Connector, Webhooks};
use crate::store::{Backend, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A connector's endpoint: how its deliveries are verified and queued.
#[derive(Debug)]
pub struct Endpoint {
    /// Its secret and signature header.
    pub signer: Signer,
    /// Events of another `broadcasterId` are refused.
    pub publisher_id: Option<i64>,
    /// How long an event waits for its subscriber's next ones (one refresh for all).
    pub coalesce: Duration,
}

/// What the listener's handlers share.
pub struct Listener<B: Backend> {
    /// The inbox.
    pub store: Arc<Store<B>>,
    /// The connectors that have an endpoint (a secret), by id.
    pub endpoints: Arc<BTreeMap<String, Endpoint>>,
    /// Body cap, timeout, concurrency.
    pub limits: Webhooks,
    /// When a delivery is received.
    pub clock: Arc<dyn Clock>,
}

impl<B: Backend> Clone for Listener<B> {
    fn clone(&self) -> Self {
        Listener {
            store: Arc::clone(&self.store),
            endpoints: Arc::clone(&self.endpoints),
            limits: self.limits.clone(),
            clock: Arc::clone(&self.clock),
        }
    }
}

/// Why a connector configured for webhooks has no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEndpoint {
    /// The secret's variable is unset or empty.
    #[error("{0} is not set: its webhook endpoint answers 404 until it is")]
    NoSecret(String),
    /// The secret is too short or too long.
    #[error("{0}: its webhook endpoint answers 404 until it is fixed")]
    BadSecret(#[from] BadSecret),
}

/// The endpoints of the connectors configured for webhooks, secrets read from the
/// environment through `secret`; and the connectors that have none, with why.
pub fn endpoints(
    connectors: &[Connector],
    secret: impl Fn(&str) -> Option<String>,
) -> (BTreeMap<String, Endpoint>, Vec<(String, NoEndpoint)>) {
    let mut endpoints = BTreeMap::new();
    let mut missing = Vec::new();
    for connector in connectors {
        let Some(settings) = &connector.webhooks else {
            continue;
        };
        let env = &settings.secret_env;
        let signer = match secret(env).filter(|s| !s.is_empty()) {
            None => Err(NoEndpoint::NoSecret(env.clone())),
            Some(value) => Signer::new(value.as_bytes(), &settings.signature_header, env)
                .map_err(NoEndpoint::from),
        };
        match signer {
            Ok(signer) => {
                let endpoint = Endpoint {
                    signer,
                    publisher_id: settings.publisher_id,
                    coalesce: settings.coalesce,
                };
                endpoints.insert(connector.id.clone(), endpoint);
            }
            Err(why) => missing.push((connector.id.clone(), why)),
        }
    }
    (endpoints, missing)
}
