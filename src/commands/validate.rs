//! `cleeng-sync validate FILE...`: the template's rules on local files, no store.

use super::exit;
use crate::cli::ValidateArgs;
use crate::clock::{Clock, FixedClock};
use crate::config::Settings;
use crate::export::{Checked, ExportReader, Field, Rules, Warning};
use crate::redact::mask_email;
use crate::run::{Reason, Rejection, RowCounts};
use chrono::TimeZone;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Serialize)]
struct FileReport {
    file: String,
    rows: RowCounts,
    rejections: Vec<Rejection>,
    warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(super) async fn run(
    settings: &Settings,
    args: &ValidateArgs,
    clock: &dyn Clock,
) -> anyhow::Result<u8> {
    // A configured connector lends its column mapping and rules; otherwise the template's.
    let connector = match settings.connectors.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    let timezone = connector.map_or(settings.schedule.timezone, |c| c.timezone);
    // `--today` stops the clock at noon of that day in the zone (noon: never in a gap).
    let fixed;
    let clock = match args.today {
        Some(day) => {
            let noon = day.and_hms_opt(12, 0, 0).unwrap_or_default();
            let instant = timezone.from_local_datetime(&noon).earliest();
            fixed = FixedClock(instant.map_or_else(|| noon.and_utc(), |t| t.to_utc()));
            &fixed
        }
        None => clock,
    };
    let rules = match connector {
        Some(c) => c.rules(clock.now()),
        None => Rules::new(clock.now().with_timezone(&timezone).date_naive()),
    };
    let columns = connector.map(|c| c.columns.clone()).unwrap_or_default();
    let mut code = exit::OK;
    for path in &args.files {
        let report = check_file(path, &columns, &rules).await;
        if report.error.is_some() || report.rows.rejected > 0 {
            code = exit::REFUSED;
        }
        print(&report, args.json)?;
    }
    Ok(code)
}

async fn check_file(path: &Path, columns: &BTreeMap<Field, String>, rules: &Rules) -> FileReport {
    let mut report = FileReport {
        file: path.display().to_string(),
        rows: RowCounts::default(),
        rejections: Vec::new(),
        warnings: Vec::new(),
        error: None,
    };
    if let Err(e) = read(path, columns, rules, &mut report).await {
        report.error = Some(e);
    }
    report
}

async fn read(
    path: &Path,
    columns: &BTreeMap<Field, String>,
    rules: &Rules,
    report: &mut FileReport,
) -> Result<(), String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let gzip = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let mut reader = ExportReader::open(file, gzip, columns, rules.clone())
        .await
        .map_err(|e| e.to_string())?;
    // Which records carry each email, and whether they were otherwise valid: a file
    // checked by hand may hold all its emails in memory (the sync stages them instead).
    let mut seen: HashMap<String, Vec<(u64, bool)>> = HashMap::new();
    while let Some(checked) = reader.next().await.map_err(|e| e.to_string())? {
        report.rows.read += 1;
        match checked {
            Checked::Valid(row, warned) => {
                report.rows.valid += 1;
                let described = warned.codes().map(|c| Warning::describe(c, &row, rules));
                report.warnings.extend(described);
                seen.entry(row.email().to_owned())
                    .or_default()
                    .push((row.record, true));
            }
            Checked::Rejected { email, rejections } => {
                report.rows.rejected += 1;
                if let (Some(email), Some(first)) = (email, rejections.first()) {
                    seen.entry(email).or_default().push((first.record, false));
                }
                report.rejections.extend(rejections);
            }
        }
    }
    for (email, records) in seen.into_iter().filter(|(_, r)| r.len() > 1) {
        for (record, valid) in records {
            if valid {
                report.rows.valid -= 1;
                report.rows.rejected += 1;
            }
            report.rejections.push(Rejection {
                record,
                column: "email".into(),
                reason: Reason::DuplicateEmail,
                value: Some(mask_email(&email)),
                email: Some(email.clone()),
            });
        }
    }
    report.rejections.sort_by_key(|r| r.record);
    Ok(())
}

fn print(report: &FileReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    if let Some(error) = &report.error {
        println!("{}: {error}", report.file);
        return Ok(());
    }
    let r = report.rows;
    println!(
        "{}: {} rows, {} valid, {} rejected",
        report.file, r.read, r.valid, r.rejected
    );
    for rejection in &report.rejections {
        let value = rejection
            .value
            .as_deref()
            .map(|v| format!(" ({v:?})"))
            .unwrap_or_default();
        println!(
            "  record {}: {} {}{value}",
            rejection.record,
            rejection.column,
            rejection.reason.as_str()
        );
    }
    for warning in &report.warnings {
        println!(
            "  record {}: {} warning {}: {}",
            warning.record,
            warning.column,
            warning.code.as_str(),
            warning.message
        );
    }
    Ok(())
}
