//! What the handlers share: the daemon, the actions, the metrics and the admin token.

use crate::actions::Actions;
use crate::daemon::Daemon;
use crate::store::Backend;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The bearer token of the admin API. Never printed.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// The token from `CLEENG_SYNC_SERVER_TOKEN`'s value; empty means none.
    pub fn new(value: Option<String>) -> Option<Token> {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| Token(v.into()))
    }

    /// Compares in constant time, so that the answer's timing tells nothing of the token.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The status page's cookie: an HMAC of a fixed label under the token, so that the
    /// cookie shows the page's emails but cannot be replayed as the API's bearer token.
    pub(crate) fn page_cookie(&self) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_bytes());
        hex::encode(ring::hmac::sign(&key, b"cleeng-sync status page v1").as_ref())
    }

    /// Whether a cookie is the page's, in constant time.
    pub(crate) fn page_cookie_matches(&self, presented: &str) -> bool {
        self.page_cookie()
            .as_bytes()
            .ct_eq(presented.trim().as_bytes())
            .into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What the handlers share.
pub struct Api<B: Backend> {
    /// The daemon: its store, its connectors, its runs.
    pub daemon: Arc<Daemon<B>>,
    /// The bearer token; `None` disables `POST`.
    pub token: Option<Token>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The billing actions.
    pub actions: Arc<Actions<B>>,
}

impl<B: Backend> Clone for Api<B> {
    fn clone(&self) -> Self {
        Api {
            daemon: Arc::clone(&self.daemon),
            token: self.token.clone(),
            metrics: self.metrics.clone(),
            actions: Arc::clone(&self.actions),
        }
    }
}

/// Serves the API on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
