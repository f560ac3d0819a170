//! Cleeng's Core API 3.1, as the connector's three billing actions call it (Switch
//! Subscription, Apply Coupon and Reactivate Subscription): the adapter, not the rules.
//!
//! The calls follow Cleeng's reference pages:
//! - authentication (`X-Publisher-Token`) and the base URLs:
//!   <https://developers.cleeng.com/reference/api31>;
//! - `POST /3.1/subscription_switches` and its error codes
//!   (`SWITCH_NOT_DEFINED_IN_SWITCH_SETTINGS`, `PAYMENT_GATEWAY_NOT_SUPPORTED`, ...):
//!   <https://developers.cleeng.com/v2.0/reference/31-switch-subscription>;
//! - `PATCH /3.1/subscriptions/{subscriptionId}` with one of `couponCode` or `status`:
//!   <https://developers.cleeng.com/v2.0/reference/update-subscription>;
//! - `GET /3.1/subscriptions` by `externalId`, or by `customerId` with `offerId` and
//!   `status[]`: <https://developers.cleeng.com/reference/list-subscriptions>;
//! - `GET /3.1/entitlements` by `customerEmail` with `offset` and `limit`:
//!   <https://developers.cleeng.com/reference/list-entitlements>;
//! - 401 and 429: <https://developers.cleeng.com/reference/how-to-understand-and-resolve-common-api-errors-401-429>.
//!
//! [`client`] talks HTTP (retries, timeouts, typed errors) and [`lookup`] finds the
//! subscription an action is about. The action service that carries an action out
//! around its ledger row is `crate::actions`; the types the API, the CLI and the store
//! share are `crate::action`.

pub mod client;
pub mod error;
pub mod lookup;

pub use client::{Client, PublisherToken};
pub use error::CleengError;
