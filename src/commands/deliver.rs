//! `cleeng-sync deliver status|resume`: the change feed's destinations as the store keeps
//! them, and resuming one a refused batch stopped.

use super::exit;
use crate::cli::{DeliverResumeArgs, DeliverStatusArgs};
use crate::config::{ConfigError, Settings};
use crate::store::DeliveryState;
use serde_json::json;

/// One configured destination and its state (none: no daemon has started with it yet).
#[derive(serde::Serialize)]
struct Shown<'a> {
    connector: &'a str,
    name: &'a str,
    /// Without its query, which may carry a token.
    url: String,
    kinds: Vec<&'static str>,
    state: Option<&'a DeliveryState>,
}

pub(super) async fn status(settings: Settings, args: &DeliverStatusArgs) -> anyhow::Result<u8> {
    let wanted = args.target.connector.as_deref();
    let opened = crate::store::open(&settings.store_url).await?;
    let states = crate::with_store!(opened, store => store.deliveries(wanted).await?);
    let mut shown = Vec::new();
    for connector in &settings.connectors {
        if wanted.is_some_and(|id| id != connector.id) {
            continue;
        }
        for d in &connector.deliver {
            shown.push(Shown {
                connector: &connector.id,
                name: &d.name,
                url: d.shown_url().to_string(),
                kinds: d.kinds.iter().map(|k| k.as_str()).collect(),
                state: states
                    .iter()
                    .find(|s| s.connector == connector.id && s.destination == d.name),
            });
        }
    }
    if args.json {
        println!("{}", json!({ "destinations": shown }));
        return Ok(exit::OK);
    }
    if shown.is_empty() {
        println!("no destinations: add [[connector.deliver]] to the configuration");
    }
    for d in &shown {
        println!("{}/{} -> {}", d.connector, d.name, d.url);
        let Some(s) = d.state else {
            println!("  not started yet: a daemon records it when it first starts with it");
            continue;
        };
        println!(
            "  cursor {}, {} changes delivered, last at {}",
            s.cursor,
            s.delivered,
            s.delivered_at.as_deref().unwrap_or("never")
        );
        match (&s.stopped_at, s.pending_since.as_deref()) {
            (Some(at), _) => println!(
                "  STOPPED at {at}: `cleeng-sync deliver resume {} --connector {}` once fixed",
                d.name, d.connector
            ),
            (None, Some(since)) => println!("  pending since {since}"),
            (None, None) => println!("  caught up"),
        }
        if let Some(error) = &s.last_error {
            println!("  last failure ({} in a row): {error}", s.failures);
        }
    }
    Ok(exit::OK)
}

pub(super) async fn resume(settings: Settings, args: &DeliverResumeArgs) -> anyhow::Result<u8> {
    let connector = settings.connector_id(args.target.connector.as_deref());
    let configured = settings
        .connectors
        .iter()
        .find(|c| c.id == connector)
        .is_some_and(|c| c.deliver.iter().any(|d| d.name == args.name));
    if !configured {
        return Err(ConfigError::Invalid {
            key: "deliver resume".into(),
            message: format!(
                "connector {connector:?} has no destination {:?} in [[connector.deliver]]",
                args.name
            ),
        }
        .into());
    }
    let opened = crate::store::open(&settings.store_url).await?;
    let (was, resumed) = crate::with_store!(opened, store => {
        let states = store.deliveries(Some(&connector)).await?;
        let was = states.into_iter().find(|s| s.destination == args.name);
        (was, store.resume_delivery(&connector, &args.name).await?)
    });
    match was {
        Some(state) if resumed && state.stopped_at.is_some() => {
            println!(
                "{connector}/{}: resumed; the daemon sends the batch after change {} again \
                 within its poll",
                args.name, state.cursor
            );
        }
        Some(_) => println!("{connector}/{}: was not stopped; nothing to do", args.name),
        None => {
            anyhow::bail!(
                "{connector}/{}: the store has no record of it yet (a daemon records a \
                 destination when it first starts with it)",
                args.name
            )
        }
    }
    Ok(exit::OK)
}
