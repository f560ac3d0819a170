//! The API's handlers, by resource: the process ([`health`]), the ledger's runs
//! ([`runs`]), the subscribers ([`subscribers`]) and their change feed ([`changes`]), the
//! billing actions ([`actions`]) and the webhook inbox ([`events`]).

pub mod actions;
pub mod changes;
pub mod events;
pub mod health;
pub mod runs;
pub mod subscribers;
