//! The command line: `cleeng-sync [--config FILE] [--log-format ...] [-v|-q] <command>`.

use chrono::NaiveDate;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Keeps subscription traits in step with Cleeng's nightly CSV exports.
#[derive(Debug, Parser)]
#[command(name = "cleeng-sync", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CLEENG_SYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: pretty on a terminal, JSON for machines (default: pretty on a
    /// terminal, JSON otherwise).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one sync now, then exit.
    Sync(SyncArgs),
    /// Run the scheduler and the admin HTTP server until SIGTERM or SIGINT.
    Daemon(DaemonArgs),
    /// Check files against the Web Subscription Data template.
    Validate(ValidateArgs),
    /// Recent runs from the ledger.
    Runs(RunsArgs),
    /// One subscriber's stored traits.
    Traits(TraitsArgs),
    /// Read one subscriber from Cleeng's API now and write what it holds into the traits
    /// (offer, status, expiry date); changes nothing at Cleeng.
    Refresh(TraitsArgs),
    /// Present subscribers by expiry date, a page at a time (who to act on).
    Subscribers(SubscribersArgs),
    /// Check the configuration, S3 (or folder) access, the store and the Cleeng token.
    Check(CheckArgs),
    /// Carry out one of the connector's billing actions at Cleeng.
    Action(ActionArgs),
    /// Recent billing actions from the ledger.
    Actions(ActionsArgs),
    /// The webhook inbox, newest first: what Cleeng delivered and what became of it.
    Events(EventsArgs),
    /// The change feed: what happened to each subscriber, oldest first, a page at a time.
    Changes(ChangesArgs),
    /// The change feed's HTTP destinations: where each one is, and resuming a stopped one.
    Deliver(DeliverArgs),
}

/// Where to work: the connector, its source and the store.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Only this connector.
    #[arg(long, value_name = "ID")]
    pub connector: Option<String>,
    /// Store URL: sqlite://path.db or postgres://...
    #[arg(long, env = "CLEENG_SYNC_STORE", value_name = "URL")]
    pub store: Option<String>,
}

/// `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Source: s3://bucket/prefix/, file:///abs/dir, or a directory path.
    #[arg(long, env = "CLEENG_SYNC_SOURCE", value_name = "URL")]
    pub source: Option<String>,
    /// Compute everything, write nothing but the run record.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even an unchanged export.
    #[arg(long)]
    pub force: bool,
    /// Lift the safety guards for this run.
    #[arg(long)]
    pub no_guards: bool,
    /// Apply this object key instead of the newest export.
    #[arg(long, value_name = "KEY")]
    pub object: Option<String>,
    /// Print one JSON object per connector run.
    #[arg(long)]
    pub json: bool,
}

/// `daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Store URL: sqlite://path.db or postgres://...
    #[arg(long, env = "CLEENG_SYNC_STORE", value_name = "URL")]
    pub store: Option<String>,
}

/// `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// CSV files (.csv or .csv.gz).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Use this connector's column mapping and validation settings.
    #[arg(long, value_name = "ID")]
    pub connector: Option<String>,
    /// Print one JSON object per file.
    #[arg(long)]
    pub json: bool,
    /// Take this date as today for the "not in the past" rule and the expiry buffer.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<NaiveDate>,
}

/// `runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `traits`.
#[derive(Debug, Args)]
pub struct TraitsArgs {
    /// The subscriber's email (any case).
    pub email: String,
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `subscribers`.
#[derive(Debug, Args)]
pub struct SubscribersArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Only those expiring from today to today + this many days (`7d`), both included.
    #[arg(long, value_name = "DAYS")]
    pub expiring_within: Option<String>,
    /// Only this status: active or stopped.
    #[arg(long)]
    pub status: Option<String>,
    /// Only subscribers whose offer this plan of the offer map lists.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<String>,
    /// Only this offer country (two letters).
    #[arg(long, value_name = "CC")]
    pub country: Option<String>,
    /// Subscribers per page (at most 1000).
    #[arg(long, default_value_t = crate::subscribers::DEFAULT_LIMIT)]
    pub limit: u32,
    /// The page after this cursor (the `next` of the page before).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Take this date as today for --expiring-within.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<NaiveDate>,
    /// Print JSON: {"subscribers": [...], "next": CURSOR or null}.
    #[arg(long)]
    pub json: bool,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Source: s3://bucket/prefix/, file:///abs/dir, or a directory path.
    #[arg(long, env = "CLEENG_SYNC_SOURCE", value_name = "URL")]
    pub source: Option<String>,
}

/// `action`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Which action.
    #[command(subcommand)]
    pub action: ActionCommand,
}

/// The three billing actions.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Switch Subscription: move the subscriber's subscription to another offer.
    Switch(SwitchArgs),
    /// Apply Coupon: apply a coupon code to the subscriber's subscription.
    Coupon(CouponArgs),
    /// Reactivate Subscription: turn the subscriber's stopped subscription active again.
    Reactivate(ReactivateArgs),
}

impl ActionCommand {
    /// What every action takes.
    pub fn common(&self) -> &ActionCommon {
        match self {
            ActionCommand::Switch(a) => &a.common,
            ActionCommand::Coupon(a) => &a.common,
            ActionCommand::Reactivate(a) => &a.common,
        }
    }
}

/// What every action takes.
#[derive(Debug, Clone, Args)]
pub struct ActionCommon {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Cleeng's subscription id; else it is looked up (stored external id, or the
    /// customer's subscription to the stored offer).
    #[arg(long, value_name = "N")]
    pub subscription_id: Option<i64>,
    /// The same key answers the stored result and calls Cleeng at most once.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Check and resolve only; call nothing that changes Cleeng, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `action switch`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The subscriber's email.
    pub email: String,
    /// The offer to switch to.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "to_plan",
        conflicts_with = "to_plan"
    )]
    pub to_offer: Option<String>,
    /// The plan of [connector.offers] whose offer for the subscriber's country to switch to.
    #[arg(long, value_name = "PLAN")]
    pub to_plan: Option<String>,
    /// Which way the switch goes (Cleeng's switchDirection); default unspecified.
    #[arg(long, value_enum)]
    pub direction: Option<crate::action::Direction>,
    /// What every action takes.
    #[command(flatten)]
    pub common: ActionCommon,
}

/// `action coupon`.
#[derive(Debug, Args)]
pub struct CouponArgs {
    /// The subscriber's email.
    pub email: String,
    /// The coupon code.
    pub code: String,
    /// What every action takes.
    #[command(flatten)]
    pub common: ActionCommon,
}

/// `action reactivate`.
#[derive(Debug, Args)]
pub struct ReactivateArgs {
    /// The subscriber's email.
    pub email: String,
    /// What every action takes.
    #[command(flatten)]
    pub common: ActionCommon,
}

/// `actions`.
#[derive(Debug, Args)]
pub struct ActionsArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Only this subscriber's actions.
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Only events in this status: queued, applied, unchanged, skipped, failed.
    #[arg(long, value_name = "S", value_parser = parse_event_status)]
    pub status: Option<crate::event::EventStatus>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_event_status(text: &str) -> Result<crate::event::EventStatus, String> {
    crate::event::EventStatus::parse(text)
        .ok_or_else(|| "expected one of queued, applied, unchanged, skipped, failed".to_string())
}

/// `changes`.
#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Only changes of this kind (repeat for several): new, returned, removed, stopped,
    /// reactivated, switched, renewed, expiry_moved, coupon_applied, updated.
    #[arg(long = "kind", value_name = "K")]
    pub kinds: Vec<String>,
    /// The `next` of the page before (from the oldest retained change without it).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// How many, oldest first (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print JSON: `{"changes":[...],"next":CURSOR}`.
    #[arg(long)]
    pub json: bool,
}

/// `deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DeliverCommand,
}

/// What `deliver` does.
#[derive(Debug, Subcommand)]
pub enum DeliverCommand {
    /// Each destination: its cursor, what it acknowledged, its failures, whether it is
    /// stopped.
    Status(DeliverStatusArgs),
    /// Lets a destination stopped by a refused batch be delivered to again, from its
    /// cursor (the refused batch is sent again first).
    Resume(DeliverResumeArgs),
}

/// `deliver status`.
#[derive(Debug, Args)]
pub struct DeliverStatusArgs {
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON: `{"destinations":[...]}`.
    #[arg(long)]
    pub json: bool,
}

/// `deliver resume`.
#[derive(Debug, Args)]
pub struct DeliverResumeArgs {
    /// The destination's `name` in `[[connector.deliver]]`.
    pub name: String,
    /// Connector and store.
    #[command(flatten)]
    pub target: Target,
}
