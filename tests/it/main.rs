//! Integration tests: the binary and the library against LocalStack, folders and
//! SQLite files. One test binary, so the suite links once.

mod actions;
mod browser;
mod changes;
mod common;
mod crash;

mod daemon;
mod daemon_harness;
mod deliveries;
mod docs;
mod faults;
mod guards;
mod headers;
mod live;
mod network;
mod offers;
mod plans;
mod postgres;
mod proxy;
mod s3;
mod same_bytes;
mod schedule;
mod secrets;
mod shape;
mod standin;
mod status;
mod validation;
mod webhook_security;
mod webhooks;
