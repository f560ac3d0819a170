//! `cleeng-sync changes`: the change feed of a connector, a page at a time.

use super::exit;
use crate::change::{ChangeKind, Cursor};
use crate::cli::ChangesArgs;
use crate::config::{ConfigError, Settings};
use serde_json::Value;

pub(super) async fn list(settings: Settings, args: &ChangesArgs) -> anyhow::Result<u8> {
    let connector = settings.connector_id(args.target.connector.as_deref());
    let mut kinds = Vec::new();
    for kind in &args.kinds {
        kinds.push(ChangeKind::parse(kind).ok_or_else(|| ConfigError::Invalid {
            key: "--kind".into(),
            message: format!("unknown kind {kind:?}"),
        })?);
    }
    let after = match args.after.as_deref() {
        None => Cursor::default(),
        Some(text) => Cursor::parse(text).ok_or_else(|| ConfigError::Invalid {
            key: "--after".into(),
            message: format!("{text:?} is not a page's next"),
        })?,
    };
    let opened = crate::store::open(&settings.store_url).await?;
    let page = crate::with_store!(opened, store => {
        store.changes(&connector, &kinds, after, args.limit).await?
    });
    if args.json {
        println!("{}", serde_json::to_string(&page)?);
        return Ok(exit::OK);
    }
    if page.changes.is_empty() {
        println!("no changes after {after}");
    }
    for c in &page.changes {
        println!(
            "{:>8} {} {} {} ({})",
            c.id,
            c.at,
            c.email,
            c.kinds.join(", "),
            c.source
        );
        if let (Value::Object(before), Value::Object(after)) = (&c.before, &c.after) {
            for (field, was) in before {
                let is = after.get(field).unwrap_or(&Value::Null);
                println!("         {field}: {was} -> {is}");
            }
        }
    }
    println!("next: {}", page.next);
    Ok(exit::OK)
}
