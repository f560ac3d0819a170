//! `cleeng-sync daemon`: the scheduler and the admin API until SIGTERM or SIGINT.

use super::exit;
use crate::actions::Actions;
use crate::clock::SystemClock;
use crate::config::{ConfigError, Connector, Settings};
use crate::daemon::Daemon;
use crate::deliver::{Courier, Target};
use crate::inbox::Inbox;
use crate::server::{Api, Token, webhooks};
use crate::store::{Backend, Store};
use anyhow::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub(super) async fn run(settings: Settings) -> anyhow::Result<u8> {
    if settings.connectors.is_empty() {
        return Err(ConfigError::NoConnector.into());
    }
    let opened = crate::store::open(&settings.store_url).await?;
    crate::with_store!(opened, store => {
        let done = serve(settings, Arc::new(store.clone())).await;
        store.close().await;
        done
    })
}

/// The daemon on the store's backend.
async fn serve<B: Backend>(settings: Settings, store: Arc<Store<B>>) -> anyhow::Result<u8> {
    let mut sources = Vec::new();
    for connector in &settings.connectors {
        sources.push(super::settings::source(connector).await?);
    }
    let metrics =
        crate::metrics::install().context("cannot install the Prometheus metrics recorder")?;
    let mut last_success = Vec::new();
    for connector in &settings.connectors {
        let run = store.last_success(&connector.id).await?;
        last_success.push((connector.id.as_str(), run.and_then(|run| run.finished())));
    }
    crate::metrics::register(last_success);
    let token = Token::new(std::env::var("CLEENG_SYNC_SERVER_TOKEN").ok());
    let listen = settings.server.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (server.listen): is another daemon running there?")
    })?;
    let address = listener.local_addr()?;
    if token.is_none() {
        warn!("CLEENG_SYNC_SERVER_TOKEN is not set: POST /v1/connectors/{{id}}/sync answers 403");
    }
    if !address.ip().is_loopback() {
        warn!(%address, "the admin API listens beyond loopback: keep it behind a network policy");
    }

    let instance = crate::process::instance();
    let actions = Arc::new(Actions::new(
        &settings.connectors,
        Arc::clone(&store),
        Arc::new(SystemClock),
        instance.clone(),
    ));
    for (connector, problem) in actions.token_problems() {
        warn!(
            connector,
            "billing actions answer failed until this is fixed: {problem}"
        );
    }
    let abandoned = actions
        .recover()
        .await
        .context("cannot look for actions a stopped process left pending")?;
    if abandoned > 0 {
        warn!(
            abandoned,
            "actions left pending by a stopped process are now unknown: see GET /v1/actions"
        );
    }
    let hooks = webhooks(&settings, &store).await?;
    let inbox = Arc::new(Inbox::new(
        &settings.connectors,
        Arc::clone(&store),
        Arc::clone(&actions),
        Arc::new(SystemClock),
        instance.clone(),
    ));
    let outbox = outbox(&settings, &store, instance.clone())?;
    let (feed_store, feed_connectors) = (Arc::clone(&store), settings.connectors.clone());
    let daemon = Arc::new(Daemon::new(
        &settings,
        store,
        sources,
        Arc::new(SystemClock),
        instance,
    ));
    let router = crate::server::router(Api {
        daemon: Arc::clone(&daemon),
        token,
        metrics,
        actions,
    });
    info!(%address, connectors = settings.connectors.len(), "admin API listening on http://{address}");
    let beside = Beside {
        admin: (listener, router),
        hooks,
        inbox,
        outbox,
        store: feed_store,
        connectors: feed_connectors,
    };
    crate::daemon::run(
        daemon,
        settings.daemon.shutdown_grace,
        |stop| tokio::spawn(beside.run(stop)),
        shutdown_signal(),
    )
    .await;
    Ok(exit::OK)
}

/// What runs beside the scheduler until the daemon stops: the admin API, the webhook
/// listener, the inbox worker, the change feed's deliveries and its daily pruning.
struct Beside<B: Backend> {
    admin: (TcpListener, axum::Router),
    hooks: Option<(TcpListener, axum::Router)>,
    inbox: Arc<Inbox<B>>,
    outbox: (Arc<Courier<B>>, Vec<Target>),
    store: Arc<Store<B>>,
    connectors: Vec<Connector>,
}

impl<B: Backend> Beside<B> {
    /// Runs them all until `stop` fires, each ending its work in flight.
    async fn run(self, stop: CancellationToken) {
        let (listener, router) = self.admin;
        let admin = crate::server::serve(listener, router, stop.clone());
        let hooks = async {
            if let Some((listener, router)) = self.hooks
                && let Err(e) = crate::server::serve(listener, router, stop.clone()).await
            {
                error!("the webhook listener stopped: {e}");
            }
        };
        let clock = Arc::new(SystemClock);
        let (courier, targets) = self.outbox;
        let deliver = crate::outbox::work(
            courier,
            targets,
            Arc::clone(&self.store),
            clock.clone(),
            stop.clone(),
        );
        let prune = crate::retention::prune_daily(self.store, self.connectors, clock, stop.clone());
        let (admin, (), (), (), ()) =
            tokio::join!(admin, hooks, self.inbox.work(stop.clone()), deliver, prune);
        if let Err(e) = admin {
            error!("the admin API stopped: {e}");
        }
    }
}

/// The change feed's courier and the destinations it can sign for (a destination whose
/// secret is missing is named in a warning and left out).
fn outbox<B: Backend>(
    settings: &Settings,
    store: &Arc<Store<B>>,
    instance: String,
) -> anyhow::Result<(Arc<Courier<B>>, Vec<Target>)> {
    let (targets, missing) = Target::all(&settings.connectors, |env| std::env::var(env).ok());
    for (connector, destination, why) in missing {
        warn!(connector, destination, "{why}");
    }
    let courier = Courier::new(Arc::clone(store), Arc::new(SystemClock), instance)
        .context("cannot build the HTTP client the change feed is delivered with")?;
    Ok((Arc::new(courier), targets))
}

/// The webhook listener, bound, when `[webhooks]` names an address.
async fn webhooks<B: Backend>(
    settings: &Settings,
    store: &Arc<Store<B>>,
) -> anyhow::Result<Option<(TcpListener, axum::Router)>> {
    let Some(limits) = &settings.webhooks else {
        if settings.connectors.iter().any(|c| c.webhooks.is_some()) {
            warn!(
                "[connector.webhooks] is set but [webhooks] listen is not: no webhook is received"
            );
        }
        return Ok(None);
    };
    let (endpoints, missing) =
        webhooks::endpoints(&settings.connectors, |env| std::env::var(env).ok());
    for (connector, why) in missing {
        warn!(connector, "{why}");
    }
    let listen = limits.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (webhooks.listen): is another daemon running there?")
    })?;
    let address = listener.local_addr()?;
    info!(webhook_address = %address, endpoints = endpoints.len(),
        "webhook listener on http://{address}/v1/webhooks/cleeng/{{connector}}");
    let router = webhooks::router(webhooks::Listener {
        store: Arc::clone(store),
        endpoints: Arc::new(endpoints),
        limits: limits.clone(),
        clock: Arc::new(SystemClock),
    });
    Ok(Some((listener, router)))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (docker stop, systemd, Kubernetes).
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
