//! The vocabulary of one run, shared by the sync, the ledger and the output:
//! outcomes, triggers, counts and the report printed by `sync --json`.

use serde::Serialize;
use std::fmt;

/// How a run ended. The names are part of the contract (`--json`, the ledger,
/// metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run started and has not finished (only ever seen in the ledger).
    Running,
    /// The export was applied to the trait store.
    Applied,
    /// The newest export is the one applied last (same object or same content).
    Unchanged,
    /// The source holds no export.
    NoExport,
    /// A guard refused the export; nothing was applied.
    Refused,
    /// The run failed; nothing was applied.
    Failed,
    /// `--dry-run`: everything computed, nothing applied.
    DryRun,
}

impl Outcome {
    /// The stable name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::NoExport => "no_export",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::DryRun => "dry_run",
        }
    }

    /// Reads a stored name back; unknown names (a newer version's) read as `failed`
    /// rather than breaking `runs`.
    pub fn parse(name: &str) -> Outcome {
        match name {
            "running" => Outcome::Running,
            "applied" => Outcome::Applied,
            "unchanged" => Outcome::Unchanged,
            "no_export" => Outcome::NoExport,
            "refused" => Outcome::Refused,
            "dry_run" => Outcome::DryRun,
            _ => Outcome::Failed,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The daemon's schedule.
    Schedule,
    /// `cleeng-sync sync` on the command line.
    #[default]
    Manual,
    /// `POST /v1/connectors/{id}/sync`.
    Api,
}

impl Trigger {
    /// The stable name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Api => "api",
        }
    }

    /// Reads a stored name back.
    pub fn parse(name: &str) -> Trigger {
        match name {
            "schedule" => Trigger::Schedule,
            "api" => Trigger::Api,
            _ => Trigger::Manual,
        }
    }
}

/// The export a run looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ObjectInfo {
    /// Object key (or file name under the source folder).
    pub key: String,
    /// The source's entity tag; for a folder, derived from size and modification time.
    pub etag: String,
    /// Size in bytes as stored (compressed size for `.csv.gz`); unknown in the ledger.
    pub size: Option<u64>,
    /// SHA-256 of the CSV content (after decompression), once it was read.
    pub sha256: Option<String>,
}

/// Row counts of the export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowCounts {
    /// Data records read (the header not included).
    pub read: u64,
    /// Records that passed validation, duplicates excluded.
    pub valid: u64,
    /// Records rejected, for any reason.
    pub rejected: u64,
}

/// What the run did (or, refused or dry, would have done) to the trait store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChangeCounts {
    /// Subscribers stored for the first time.
    pub inserted: u64,
    /// Subscribers whose traits changed, or who came back after being removed.
    pub updated: u64,
    /// Subscribers listed with the same traits as stored.
    pub unchanged: u64,
    /// Present subscribers the snapshot no longer lists.
    pub removed: u64,
    /// Subscribers a refresh read from Cleeng after the export was written: left as the
    /// refresh wrote them, neither updated nor removed (counted in no other kind).
    pub superseded: u64,
}

/// The result of one connector run, as printed by `sync --json` (one per line).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    /// Ledger id of the run.
    pub run_id: i64,
    /// Connector id.
    pub connector: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The export it looked at, if any.
    pub object: Option<ObjectInfo>,
    /// Row counts.
    pub rows: RowCounts,
    /// Changes made; for a refused or dry run, those that would have been made. A run
    /// whose apply failed made none: zero here, its plan in `planned`.
    pub changes: ChangeCounts,
    /// What a run whose apply failed and rolled back had planned to change; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<ChangeCounts>,
    /// Warnings on valid rows, per code (`{"expiry_within_buffer": 12}`).
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub warnings: WarningCounts,
    /// Wall-clock duration.
    pub duration_ms: u64,
    /// Why it was refused or failed, or a note; `null` otherwise.
    pub message: Option<String>,
}

impl RunReport {
    /// The report of a run that has read nothing (yet): no object, every count zero.
    pub fn empty(run_id: i64, connector: &str, outcome: Outcome) -> RunReport {
        RunReport {
            run_id,
            connector: connector.to_string(),
            outcome,
            object: None,
            rows: RowCounts::default(),
            changes: ChangeCounts::default(),
            planned: None,
            warnings: WarningCounts::default(),
            duration_ms: 0,
            message: None,
        }
    }
}

/// A run as kept in the ledger: the report plus when and why it ran.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// The report of the run.
    #[serde(flatten)]
    pub report: RunReport,
    /// What started it.
    pub trigger: Trigger,
    /// The local wall-clock time it was scheduled for (scheduled runs only).
    pub scheduled_for: Option<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC; `null` while running.
    pub finished_at: Option<String>,
}

impl RunRecord {
    /// When it finished, if it did.
    pub fn finished(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.finished_at.as_deref().and_then(instant)
    }
}

/// An RFC 3339 instant of the ledger, in UTC.
pub fn instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// One reason a record was rejected, as stored in `sync_rejections` and printed by
/// `validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// CSV record number, the header being record 1.
    pub record: u64,
    /// The template field (`email`, `expiry_date`...), or `record` for the whole record.
    pub column: String,
    /// Stable reason code.
    pub reason: Reason,
    /// The offending value: first 200 characters, emails masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The record's email, unmasked, when it could be read: which subscriber to look up
    /// at Cleeng. Personal data: stored, shown only to a holder of the admin token (the
    /// status page), never printed or logged.
    #[serde(skip)]
    pub email: Option<String>,
}

/// The stable, machine-readable reasons a record is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A mandatory cell is empty.
    MissingValue,
    /// An offer ID with white space in it.
    InvalidOfferId,
    /// Not one `@`, an empty local part, no dot in the domain, or white space.
    InvalidEmail,
    /// Not a real `YYYY-MM-DD` date.
    InvalidDate,
    /// A date with a time part.
    TimestampNotAllowed,
    /// An expiry date before today in the connector's time zone.
    DateInPast,
    /// A status other than `active` or `stopped`.
    InvalidStatus,
    /// Not an integer.
    NotAnInteger,
    /// An integer outside the allowed range.
    OutOfRange,
    /// External properties that are not JSON.
    InvalidJson,
    /// External properties that are not an object of strings.
    JsonNotStringMap,
    /// Another number of fields than the header.
    WrongFieldCount,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// The email occurs in more than one record.
    DuplicateEmail,
    /// An offer the connector's offer map does not list (`unmapped_offer = "reject"`).
    UnmappedOffer,
}

impl Reason {
    /// Every reason, for reading stored codes back.
    pub const ALL: [Reason; 15] = [
        Reason::MissingValue,
        Reason::InvalidOfferId,
        Reason::InvalidEmail,
        Reason::InvalidDate,
        Reason::TimestampNotAllowed,
        Reason::DateInPast,
        Reason::InvalidStatus,
        Reason::NotAnInteger,
        Reason::OutOfRange,
        Reason::InvalidJson,
        Reason::JsonNotStringMap,
        Reason::WrongFieldCount,
        Reason::InvalidUtf8,
        Reason::DuplicateEmail,
        Reason::UnmappedOffer,
    ];

    /// Reads a stored code back.
    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// The stable code, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingValue => "missing_value",
            Reason::InvalidOfferId => "invalid_offer_id",
            Reason::InvalidEmail => "invalid_email",
            Reason::InvalidDate => "invalid_date",
            Reason::TimestampNotAllowed => "timestamp_not_allowed",
            Reason::DateInPast => "date_in_past",
            Reason::InvalidStatus => "invalid_status",
            Reason::NotAnInteger => "not_an_integer",
            Reason::OutOfRange => "out_of_range",
            Reason::InvalidJson => "invalid_json",
            Reason::JsonNotStringMap => "json_not_string_map",
            Reason::WrongFieldCount => "wrong_field_count",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::DuplicateEmail => "duplicate_email",
            Reason::UnmappedOffer => "unmapped_offer",
        }
    }
}

/// The stable codes of a warning: a remark about a valid row, which is stored all the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// An offer ID that is not a letter, nine digits, `_` and a country (`S123456789_PL`).
    OfferIdPattern,
    /// An offer the connector's offer map does not list.
    UnmappedOffer,
    /// An expiry date from today to the end of the expiry buffer: Cleeng charges or
    /// terminates the subscription on that day.
    ExpiryWithinBuffer,
}

impl WarningCode {
    /// Every code, in the order they are counted and printed.
    pub const ALL: [WarningCode; 3] = [
        WarningCode::OfferIdPattern,
        WarningCode::UnmappedOffer,
        WarningCode::ExpiryWithinBuffer,
    ];

    /// The stable code, as counted, stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningCode::OfferIdPattern => "offer_id_pattern",
            WarningCode::UnmappedOffer => "unmapped_offer",
            WarningCode::ExpiryWithinBuffer => "expiry_within_buffer",
        }
    }

    /// Reads a stored code back.
    pub fn parse(code: &str) -> Option<WarningCode> {
        WarningCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The template field the warning is about.
    pub fn column(self) -> &'static str {
        match self {
            WarningCode::OfferIdPattern | WarningCode::UnmappedOffer => "offer_id",
            WarningCode::ExpiryWithinBuffer => "expiry_date",
        }
    }
}

/// A run's warnings counted per code; serialised as an object of the codes that
/// occurred (`{"expiry_within_buffer":12}`, `{}` for none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarningCounts([u64; WarningCode::ALL.len()]);

impl WarningCounts {
    /// Counts `n` more warnings of `code`.
    pub fn add(&mut self, code: WarningCode, n: u64) {
        self.0[code as usize] += n;
    }

    /// The warnings of `code`.
    pub fn get(&self, code: WarningCode) -> u64 {
        self.0[code as usize]
    }

    /// The codes that occurred, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (WarningCode, u64)> + '_ {
        WarningCode::ALL
            .into_iter()
            .map(|c| (c, self.get(c)))
            .filter(|(_, n)| *n > 0)
    }

    /// Whether there were none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The counts as the ledger keeps them, a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads the ledger's JSON back; codes this version does not know are left out.
    pub fn from_json(json: &serde_json::Value) -> WarningCounts {
        let mut counts = WarningCounts::default();
        if let Some(map) = json.as_object() {
            for (code, n) in map {
                if let (Some(code), Some(n)) = (WarningCode::parse(code), n.as_u64()) {
                    counts.add(code, n);
                }
            }
        }
        counts
    }
}

impl fmt::Display for WarningCounts {
    /// `3 expiry_within_buffer, 1 unmapped_offer`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (code, n)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{n} {}", code.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for WarningCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (code, n) in self.iter() {
            map.serialize_entry(code.as_str(), &n)?;
        }
        map.end()
    }
}

/// How a connector's exports relate to each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each export is the whole segment: subscribers it no longer lists are removed.
    #[default]
    Snapshot,
    /// Exports only add or change subscribers; every new one is applied in order.
    Delta,
}
