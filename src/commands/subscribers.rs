//! `cleeng-sync subscribers`: present subscribers by expiry date, a page at a time.
//! Emails are shown in full: this listing exists to act on them.

use super::exit;
use crate::cli::SubscribersArgs;
use crate::clock::Clock;
use crate::config::{Connector, Settings};
use crate::subscribers::Listing;
use chrono_tz::Tz;

pub(super) async fn run(
    settings: Settings,
    args: &SubscribersArgs,
    clock: &dyn Clock,
) -> anyhow::Result<u8> {
    let id = settings.connector_id(args.target.connector.as_deref());
    let zone: Tz = settings
        .connectors
        .iter()
        .find(|c| c.id == id)
        .map_or(settings.schedule.timezone, |c: &Connector| c.timezone);
    let today = args
        .today
        .unwrap_or_else(|| clock.now().with_timezone(&zone).date_naive());
    let listing = Listing {
        expiring_within: args.expiring_within.clone(),
        status: args.status.clone(),
        plan: args.plan.clone(),
        country: args.country.clone(),
        limit: Some(args.limit),
        after: args.after.clone(),
    };
    let query = match listing.query(&id, today) {
        Ok(query) => query,
        Err(e) => {
            eprintln!("subscribers: {e}");
            return Ok(exit::USAGE);
        }
    };
    let opened = crate::store::open(&settings.store_url).await?;
    let page = crate::with_store!(opened, store => store.subscribers(&query).await)?;
    if args.json {
        println!("{}", serde_json::to_string(&page)?);
        return Ok(exit::OK);
    }
    if page.subscribers.is_empty() {
        println!("no subscribers match");
    }
    for s in &page.subscribers {
        println!(
            "{}  {:<7}  {}  {}  plan {}  country {}",
            s.expiry_date,
            s.status,
            s.email,
            s.offer_id,
            s.offer_plan.as_deref().unwrap_or("-"),
            s.offer_country.as_deref().unwrap_or("-"),
        );
    }
    if let Some(next) = &page.next {
        println!("more: add --after {next}");
    }
    Ok(exit::OK)
}
