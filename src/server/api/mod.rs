//! The API's handlers, by resource: the process ([`health`]), the ledger's runs
//! ([`runs`]), the subscribers ([`subscribers`]) and the billing actions ([`actions`]).

pub mod actions;
pub mod health;
pub mod runs;
pub mod subscribers;
