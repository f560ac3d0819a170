//! `runs` and `traits`: reading the ledger and the trait store.

use super::exit;
use super::output::listed_as_json;
use crate::cli::{RunsArgs, TraitsArgs};
use crate::config::Settings;
use crate::redact::mask_email;

pub(super) async fn runs(settings: Settings, args: &RunsArgs) -> anyhow::Result<u8> {
    let opened = crate::store::open(&settings.store_url).await?;
    let connector = args.target.connector.as_deref();
    let runs = crate::with_store!(opened, store => store.runs(connector, args.limit).await)?;
    if listed_as_json(args.json, &runs, "no runs yet")? {
        return Ok(exit::OK);
    }
    for run in &runs {
        let r = &run.report;
        let object = r.object.as_ref().map_or("-", |o| o.key.as_str());
        println!(
            "{:>6} {:<12} {:<8} {:<9} {} {}  rows {}/{}/{} (read/valid/rejected)  +{} ~{} ={} -{}",
            r.run_id,
            r.connector,
            run.trigger.as_str(),
            r.outcome.as_str(),
            run.started_at,
            object,
            r.rows.read,
            r.rows.valid,
            r.rows.rejected,
            r.changes.inserted,
            r.changes.updated,
            r.changes.unchanged,
            r.changes.removed,
        );
        if !r.warnings.is_empty() {
            println!("       warnings: {}", r.warnings);
        }
        if let Some(message) = &r.message {
            println!("       {message}");
        }
    }
    Ok(exit::OK)
}

pub(super) async fn traits(settings: Settings, args: &TraitsArgs) -> anyhow::Result<u8> {
    let connector = settings.connector_id(args.target.connector.as_deref());
    let opened = crate::store::open(&settings.store_url).await?;
    let found = crate::with_store!(opened, store => store.traits_and_actions(&connector, &args.email).await)?;
    let Some(traits) = found else {
        eprintln!(
            "no traits stored for {} in connector {connector:?}",
            mask_email(&args.email)
        );
        return Ok(exit::FAILED);
    };
    if args.json {
        println!("{}", serde_json::to_string(&traits)?);
    } else if let serde_json::Value::Object(fields) = serde_json::to_value(&traits)? {
        for (name, value) in fields {
            let shown = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{name:<20} {shown}");
        }
    }
    Ok(exit::OK)
}
