//! `cleeng-sync events`: the webhook inbox, newest first.

use super::exit;
use crate::cli::EventsArgs;
use crate::config::Settings;
use serde_json::json;

pub(super) async fn list(settings: Settings, args: &EventsArgs) -> anyhow::Result<u8> {
    let opened = crate::store::open(&settings.store_url).await?;
    let connector = args.target.connector.as_deref();
    let events = crate::with_store!(opened, store => {
        store.events(connector, args.status, args.limit.clamp(1, 1000)).await?
    });
    if args.json {
        println!("{}", json!({ "events": events }));
        return Ok(exit::OK);
    }
    if events.is_empty() {
        println!("no webhook events yet");
    }
    for e in &events {
        println!(
            "{:>6} {:<12} {:<40} {:<9} {:>2} {} {}",
            e.id,
            e.connector,
            e.topic,
            e.status.as_str(),
            e.attempts,
            e.received_at,
            e.email.as_deref().unwrap_or("-"),
        );
        if let Some(message) = &e.message {
            println!("       {message}");
        }
    }
    Ok(exit::OK)
}
