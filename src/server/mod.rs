//! The admin HTTP API: health, readiness, metrics, the ledger, manual runs, one
//! subscriber's traits, the listing of subscribers to act on, and the billing actions.
//! Loopback by default; the write endpoints and the listing (personal data, in bulk)
//! need the bearer token, and are disabled without one; one subscriber's traits and the
//! actions' ledger need it when one is configured.
//!
//! Its OpenAPI 3.1 document ([`ApiDoc`], `GET /openapi.json`) is built from the handlers'
//! annotations; [`routes`] names every route the router serves, so that a test can hold
//! the two to each other.
//!
//! The folder: [`state`] (what the handlers share, the token), [`auth`] (who may ask,
//! and for which connector), [`error`] (the error answer), [`routes`] (the router and
//! the OpenAPI document), [`api`] (the handlers, by resource) and [`status`] (the page);
//! beside them [`webhooks`], the webhook listener on its own socket.

pub mod api;
pub mod auth;
pub mod error;
pub mod routes;
pub mod state;
pub mod status;
pub mod webhooks;

pub use routes::{ApiDoc, router, routes};
pub use state::{Api, Token, serve};
