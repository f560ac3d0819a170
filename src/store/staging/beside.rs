//! The stored hashes read beside the export. Reading every present subscriber's row
//! hash is a scan of the whole traits table (2.8 s of a 5M-row night on PostgreSQL,
//! 0.9 s on SQLite), and the export's read leaves a core part idle: the parse runs on
//! one, and in passes the rows only go to files. So when the export alone is past the
//! held set's limit, and the hashes will be held in passes anyway, they are read on a
//! task of their own while the export streams, into the fine partitions' files the rows
//! go to ([`super::passes`]); the passes wait for them.
//!
//! Exact as before: the connector's run lock keeps every other writer of its traits
//! out from before the read until the apply, so the hashes read beside the export are
//! the ones read before it would have been. Where a row waits depends only on its fine
//! partition, not on how many passes the count of hashes will make. When fewer are
//! stored than the export's size suggests (a connector that grew overnight), they are
//! still held in passes, of fewer keys: as exact, a little slower than one held set.

use super::gather::{Gather, Gathered};
use super::passes::{FineKeys, Reading};
use crate::store::backend::{Backend, Store};
use crate::store::error::StoreError;
use tokio_util::task::AbortOnDropHandle;

/// A usual export row is some 100 bytes of CSV: how many rows an export of a given size
/// holds, to judge whether its subscribers' hashes will be held in passes.
pub(super) const ROW_BYTES: u64 = 100;

/// Starts reading the connector's stored hashes into fine partitions, on a task of its
/// own; dropping what it returns stops the read.
pub(super) fn start<B: Backend>(store: &Store<B>, connector: &str) -> Reading {
    let (store, connector) = (store.clone(), connector.to_owned());
    AbortOnDropHandle::new(tokio::spawn(async move {
        // A limit of none: every key goes to its fine partition's file.
        let mut gather = Gather::within(0, 1);
        // Only a store in memory cannot be read by another connection, and no run can
        // use one (its tables are on a connection of their own).
        if !B::read_hashes(&store, &connector, &mut gather).await? {
            return Err(StoreError::Bug(
                "the stored row hashes could not be read beside the export".into(),
            ));
        }
        match gather.finish()? {
            Gathered::Passes(keys) => Ok(keys),
            // Nobody present: passes over no keys, every row new.
            Gathered::Nothing => FineKeys::none(),
            Gathered::Held(_) | Gathered::TooMany => Err(StoreError::Bug(
                "hashes gathered for passes were held in memory".into(),
            )),
        }
    }))
}
