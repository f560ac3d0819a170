//! `refresh`: one subscriber read from Cleeng's API now, written into the traits.

use crate::cli::TraitsArgs;
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::live::{LiveSource, RefreshAnswer};
use crate::refresh::Refresher;
use std::sync::Arc;

pub(super) async fn run(settings: Settings, args: &TraitsArgs) -> anyhow::Result<u8> {
    let connector = settings.connector_id(args.target.connector.as_deref());
    let opened = crate::store::open(&settings.store_url).await?;
    let answer = crate::with_store!(opened, store => {
        let refresher =
            Refresher::new(&settings.connectors, Arc::new(store.clone()), Arc::new(SystemClock));
        let answer = refresher.refresh(&connector, &args.email, LiveSource::Manual).await;
        store.close().await;
        answer?
    });
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print_answer(&answer);
    }
    Ok(answer.outcome.exit_code())
}

fn print_answer(answer: &RefreshAnswer) {
    let subscription = answer
        .subscription_id
        .map_or_else(String::new, |s| format!(" subscription {s}"));
    println!(
        "{} {}{subscription}: {}",
        answer.connector,
        answer.email,
        answer.outcome.as_str()
    );
    for (name, [before, after]) in &answer.changes {
        println!("  {name}: {before} -> {after}");
    }
    if let Some(at) = &answer.live_at {
        println!("  known as of {at}; an export written before then leaves it as it is");
    }
    for id in &answer.confirmed_actions {
        println!("  confirmed action {id}: Cleeng shows its effect");
    }
    if let Some(message) = &answer.message {
        println!("  {message}");
    }
}
