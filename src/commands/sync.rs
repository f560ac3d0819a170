//! `cleeng-sync sync`: one run of every selected connector, now.

use super::exit::exit_for_outcomes;
use crate::cli::SyncArgs;
use crate::clock::SystemClock;
use crate::config::{ConfigError, Settings};
use crate::progress::{Bar, Progress, Silent};
use crate::run::{RunReport, Trigger};
use crate::store::{Backend, Store};
use crate::sync::{Job, RunOptions};

pub(super) async fn run(settings: Settings, args: &SyncArgs) -> anyhow::Result<u8> {
    if settings.connectors.is_empty() {
        return Err(ConfigError::NoConnector.into());
    }
    let opened = crate::store::open(&settings.store_url).await?;
    crate::with_store!(opened, store => {
        let done = sync_all(&settings, &store, args).await;
        store.close().await;
        done
    })
}

/// Every selected connector, once, on the store's backend.
async fn sync_all<B: Backend>(
    settings: &Settings,
    store: &Store<B>,
    args: &SyncArgs,
) -> anyhow::Result<u8> {
    let options = RunOptions {
        trigger: Trigger::Manual,
        scheduled_for: None,
        dry_run: args.dry_run,
        force: args.force,
        no_guards: args.no_guards,
        object: args.object.clone(),
    };
    let bar = Bar::for_terminal(args.json);
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &Silent,
    };
    let mut outcomes = Vec::new();
    for connector in &settings.connectors {
        let source = super::settings::source(connector).await?;
        let job = Job {
            store,
            source: &source,
            connector,
            clock: &SystemClock,
            progress,
        };
        let (reports, stopped) = match job.run(&options).await {
            Ok(reports) => (reports, None),
            Err(stopped) => (stopped.reports, Some(stopped.error)),
        };
        for report in &reports {
            print_report(report, args.json)?;
            outcomes.push(report.outcome);
        }
        // The runs that ended are printed first: each is in the ledger.
        if let Some(error) = stopped {
            return Err(error.into());
        }
    }
    Ok(exit_for_outcomes(outcomes))
}

fn print_report(report: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let object = report
        .object
        .as_ref()
        .map(|o| format!(" {}", o.key))
        .unwrap_or_default();
    let (r, c) = (report.rows, report.changes);
    println!(
        "{}: {}{} (run {}): {} rows read, {} valid, {} rejected; {} inserted, {} updated, {} unchanged, {} removed; {:.1} s",
        report.connector,
        report.outcome,
        object,
        report.run_id,
        r.read,
        r.valid,
        r.rejected,
        c.inserted,
        c.updated,
        c.unchanged,
        c.removed,
        report.duration_ms as f64 / 1000.0
    );
    if c.superseded > 0 {
        println!(
            "  superseded: {} subscribers were refreshed from Cleeng after this export was written; \
             left as the refresh wrote them",
            c.superseded
        );
    }
    if let Some(p) = report.planned {
        println!(
            "  planned, not applied: {} inserted, {} updated, {} unchanged, {} removed",
            p.inserted, p.updated, p.unchanged, p.removed
        );
    }
    if !report.warnings.is_empty() {
        println!(
            "  warnings: {} (`cleeng-sync validate` lists the records)",
            report.warnings
        );
    }
    if let Some(message) = &report.message {
        println!("  {message}");
    }
    Ok(())
}
