//! `cleeng-sync check`: the receiving side's "Send Test". Lists each source, reads the
//! head of the newest export, validates its header, opens the store, and says what it
//! found, whether Cleeng accepts the publisher token, and whether each webhook endpoint
//! and change feed destination has its secret. Prints no secret: store URLs
//! lose their password, AWS keys are never read here, the token is never shown.

use super::exit;
use crate::cleeng::{CleengError, Client};
use crate::clock::Clock;
use crate::config::{ConfigError, Connector, Settings};
use crate::export::{Checked, ExportError, ExportReader};
use crate::redact::redact_url;
use crate::run::{Reason, WarningCode};
use crate::source::{AnySource, Source, sort_oldest_first};
use std::collections::BTreeMap;

/// Whether the connector's webhook endpoint can take deliveries: a listener, a secret
/// of 16 to 64 bytes. `None` for a connector without webhooks.
fn webhooks(settings: &Settings, connector: &Connector) -> Option<String> {
    let hooks = connector.webhooks.as_ref()?;
    let Some(listener) = &settings.webhooks else {
        return Some(
            "webhooks: FAILED: [webhooks] listen is not set: no delivery is received".into(),
        );
    };
    let (ready, missing) =
        crate::server::webhooks::endpoints(std::slice::from_ref(connector), |env| {
            std::env::var(env).ok()
        });
    Some(match missing.first() {
        Some((_, why)) => format!("webhooks: FAILED: {why}"),
        None if ready.is_empty() => "webhooks: FAILED: no endpoint".into(),
        None => format!(
            "webhooks: ok, POST http://{}/v1/webhooks/cleeng/{} takes deliveries signed with the \
             secret in {} (header {})",
            listener.listen, connector.id, hooks.secret_env, hooks.signature_header
        ),
    })
}

/// Whether each change feed destination can be signed for (its secret is set, at least
/// 16 bytes). Nothing is sent to it: a test batch would be a change the receiver acts on.
fn destinations(connector: &Connector) -> Vec<String> {
    let (ready, missing) = crate::deliver::Target::all(std::slice::from_ref(connector), |env| {
        std::env::var(env).ok()
    });
    let mut lines: Vec<String> = ready
        .iter()
        .map(|t| {
            format!(
                "deliver {}: ok, batches to {} are signed with the secret in {}",
                t.settings.name,
                t.settings.shown_url(),
                t.settings.secret_env
            )
        })
        .collect();
    lines.extend(
        missing
            .into_iter()
            .map(|(_, name, why)| format!("deliver {name}: FAILED: {why}")),
    );
    lines
}

pub(super) async fn run(settings: Settings, clock: &dyn Clock) -> anyhow::Result<u8> {
    if settings.connectors.is_empty() {
        return Err(ConfigError::NoConnector.into());
    }
    let mut healthy = true;
    for connector in &settings.connectors {
        println!("connector {}: source {}", connector.id, connector.source);
        match check_source(connector, clock).await {
            Ok(lines) => lines.iter().for_each(|l| println!("  {l}")),
            Err(problem) => {
                healthy = false;
                println!("  FAILED: {problem}");
            }
        }
        let api = redact_url(&connector.cleeng.api_url);
        match Client::new(&connector.cleeng) {
            Err(e @ CleengError::NoToken { .. }) => {
                println!("  cleeng {api}: not configured, billing actions answer failed: {e}");
            }
            Err(e) => {
                healthy = false;
                println!("  cleeng {api}: FAILED: {e}");
            }
            Ok(client) => match client.check_token().await {
                Ok(()) => println!(
                    "  cleeng {api}: ok, the publisher token in {} is accepted",
                    connector.cleeng.token_env
                ),
                Err(e) => {
                    healthy = false;
                    println!("  cleeng {api}: FAILED: {e}");
                }
            },
        }
        let lines = webhooks(&settings, connector).into_iter();
        for line in lines.chain(destinations(connector)) {
            healthy &= !line.contains("FAILED");
            println!("  {line}");
        }
    }
    let shown = redact_url(&settings.store_url);
    let last = match crate::store::open(&settings.store_url).await {
        Ok(opened) => crate::with_store!(opened, store => store.runs(None, 1).await),
        Err(e) => Err(e),
    };
    {
        match last {
            Ok(last) => {
                let last = last.first().map_or("no runs yet".to_string(), |r| {
                    format!(
                        "last run {} ({}, {})",
                        r.report.run_id, r.report.outcome, r.started_at
                    )
                });
                println!("store {shown}: ok, {last}");
            }
            Err(e) => {
                healthy = false;
                println!("store {shown}: FAILED: {e}");
            }
        }
    }
    Ok(if healthy { exit::OK } else { exit::FAILED })
}

async fn check_source(connector: &Connector, clock: &dyn Clock) -> Result<Vec<String>, String> {
    let source = AnySource::from_url(&connector.source, &connector.s3)
        .await
        .map_err(|e| e.to_string())?;
    let mut objects = source.list().await.map_err(|e| e.to_string())?;
    sort_oldest_first(&mut objects);
    let Some(newest) = objects.last() else {
        return Ok(vec![format!(
            "ok: listed {}: no .csv or .csv.gz export yet",
            source.location()
        )]);
    };
    let mut lines = vec![format!(
        "ok: listed {}: {} export(s), newest {} ({} bytes, {})",
        source.location(),
        objects.len(),
        newest.key,
        newest.size,
        newest.last_modified.to_rfc3339()
    )];
    let body = source.open(newest).await.map_err(|e| e.to_string())?;
    let rules = connector.rules(clock.now());
    let mut reader = ExportReader::open(body, newest.is_gzip(), &connector.columns, rules)
        .await
        .map_err(|e| format!("{}: {e}", newest.key))?;
    let extra: Vec<&str> = reader
        .header()
        .extra()
        .iter()
        .map(|(_, l)| l.as_str())
        .collect();
    lines.push(format!(
        "ok: header of {} matches the template{}",
        newest.key,
        if extra.is_empty() {
            String::new()
        } else {
            format!("; extra columns kept: {}", extra.join(", "))
        }
    ));
    if !connector.offers.is_empty() {
        lines.push(
            unmapped_offers(&mut reader)
                .await
                .map_err(|e| format!("{}: {e}", newest.key))?,
        );
    }
    Ok(lines)
}

/// The head of an export that `check` reads for the offer map.
const HEAD_ROWS: u64 = 1000;

/// Which offers of the export's first rows the connector's map does not list, and on
/// how many of those rows.
async fn unmapped_offers(reader: &mut ExportReader) -> Result<String, ExportError> {
    let mut unmapped: BTreeMap<String, u64> = BTreeMap::new();
    let mut read = 0;
    while read < HEAD_ROWS
        && let Some(checked) = reader.next().await?
    {
        read += 1;
        let offer = match checked {
            Checked::Valid(row, warned) if warned.contains(WarningCode::UnmappedOffer) => {
                Some(row.offer_id().to_string())
            }
            Checked::Valid(..) => None,
            Checked::Rejected { rejections, .. } => rejections
                .into_iter()
                .find(|r| r.reason == Reason::UnmappedOffer)
                .and_then(|r| r.value),
        };
        if let Some(offer) = offer {
            *unmapped.entry(offer).or_default() += 1;
        }
    }
    if unmapped.is_empty() {
        return Ok(format!(
            "ok: every offer of the first {read} rows is in the offer map"
        ));
    }
    let listed: Vec<String> = unmapped
        .iter()
        .map(|(offer, rows)| format!("{offer} ({rows} rows)"))
        .collect();
    Ok(format!(
        "warning: {} offer(s) of the first {read} rows are in no plan of the offer map: {}; \
         add them to [connector.offers] under their plan",
        unmapped.len(),
        listed.join(", ")
    ))
}
