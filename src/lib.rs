//! `cleeng-sync`: keeps a platform's subscription traits in step with Cleeng's nightly
//! CSV exports.
//!
//! The crate is a library with a thin binary on top, so that integration tests can
//! drive one run with their own [`source::Source`] (a body that fails mid-stream, say)
//! and an injected clock.

pub mod action;
pub mod actions;
pub mod change;
pub mod cleeng;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod error;
pub mod event;
pub mod export;
pub mod inbox;
pub mod live;
pub mod metrics;
pub mod outbox;
pub mod process;
pub mod progress;
pub mod redact;
pub mod refresh;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod server;
pub mod source;
pub mod store;
pub mod subscribers;
pub mod sync;
pub mod telemetry;
