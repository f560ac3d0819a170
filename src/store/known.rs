//! The row hashes of the subscribers a connector already holds, so that a row of the
//! export that is stored unchanged is recognised in the process and not sent to the
//! database in full.
//!
//! Most nights most rows are unchanged; copying a million rows to staging only to find
//! that nine in ten equal what is stored was most of a run's time. A row hash covers the
//! email and every trait, so "this row's hash is among the present subscribers' hashes"
//! means "this subscriber is present with exactly these traits". Such rows are staged by
//! email alone (the removal check needs every email); the rest go in full.
//!
//! Memory: 14 bytes per present subscriber (96 bits of each hash and a share of the
//! bucket index), at most [`MAX_KNOWN`] of them, 28 MB; nothing for a first load. Above that the set is not
//! built and every row is staged in full, as before: memory stays bounded whatever the
//! size of the connector.

use futures::{Stream, StreamExt};

/// The largest number of present subscribers whose hashes are held in memory.
pub const MAX_KNOWN: u64 = 2_000_000;

/// How many bytes of each hash are kept: 96 bits.
const KEPT: usize = 12;

/// A set of row hashes, by their first 96 bits: two different rows agreeing there by
/// chance is a 2^-96 event per pair (SHA-256 bits), about 1e-18 for a night of a
/// hundred thousand changes against a million stored rows.
pub struct Known {
    /// The kept bytes of each hash, sorted.
    keys: Vec<[u8; KEPT]>,
    /// Where each bucket (the top `bits` of a key) starts in `keys`; one more entry
    /// than there are buckets.
    starts: Vec<u32>,
    bits: u32,
    /// Every hash read, kept or not: the number of present subscribers.
    present: usize,
}

/// A hex row hash as the bytes the set keeps; `None` if it is not hex.
fn key(row_hash: &str) -> Option<[u8; KEPT]> {
    let mut key = [0u8; KEPT];
    hex::decode_to_slice(row_hash.get(..2 * KEPT)?, &mut key).ok()?;
    Some(key)
}

impl Known {
    /// Collects the hashes `rows` yields: the present subscribers' (the query asks for
    /// at most [`MAX_KNOWN`] + 1). `None` when there is nothing to hold (a first load)
    /// or more than [`MAX_KNOWN`].
    pub async fn collect<E>(
        rows: impl Stream<Item = Result<String, E>>,
    ) -> Result<Option<Known>, E> {
        Known::collect_within(MAX_KNOWN, rows).await
    }

    async fn collect_within<E>(
        limit: u64,
        rows: impl Stream<Item = Result<String, E>>,
    ) -> Result<Option<Known>, E> {
        let (mut keys, mut present) = (Vec::new(), 0usize);
        let mut rows = std::pin::pin!(rows);
        while let Some(row_hash) = rows.next().await {
            present += 1;
            // A stored hash that is not ours (written by hand?) just never matches.
            if let Some(k) = key(&row_hash?) {
                keys.push(k);
            }
            if present as u64 > limit {
                return Ok(None);
            }
        }
        if present == 0 {
            return Ok(None);
        }
        let mut known = Known::from_keys(keys);
        known.present = present;
        tracing::debug!(
            hashes = known.keys.len(),
            "holding the present subscribers' row hashes: rows stored unchanged are staged by email only"
        );
        Ok(Some(known))
    }

    fn from_keys(mut keys: Vec<[u8; KEPT]>) -> Known {
        keys.sort_unstable();
        keys.shrink_to_fit();
        // About two hashes per bucket: the scan of a bucket stays within a cache line.
        let bits = (usize::BITS - (keys.len() / 2).max(1).leading_zeros()).min(24);
        let mut starts = vec![0u32; (1usize << bits) + 1];
        for k in &keys {
            starts[bucket(k, bits) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let present = keys.len();
        Known {
            keys,
            starts,
            bits,
            present,
        }
    }

    /// Whether a row with this hash is stored, present, with these very traits.
    pub fn contains(&self, row_hash: &str) -> bool {
        let Some(k) = key(row_hash) else {
            return false;
        };
        let b = bucket(&k, self.bits);
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        self.keys[from..to].contains(&k)
    }

    /// How many present subscribers there are (every hash read, held or not).
    pub fn present(&self) -> usize {
        self.present
    }
}

/// The bucket of a key: its top `bits` (at most 24).
fn bucket(key: &[u8; KEPT], bits: u32) -> usize {
    let top = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    (top >> (32 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hash(i: u32) -> String {
        hex::encode(&Sha256::digest(i.to_le_bytes())[..16])
    }

    async fn known(hashes: Vec<String>) -> Option<Known> {
        let rows = futures::stream::iter(hashes.into_iter().map(Ok::<_, ()>));
        Known::collect(rows).await.unwrap()
    }

    #[tokio::test]
    async fn holds_exactly_the_stored_hashes() {
        let set = known((0..50_000).map(hash).collect()).await.unwrap();
        assert_eq!(set.present(), 50_000);
        assert!((0..50_000).all(|i| set.contains(&hash(i))));
        assert!((50_000..150_000).all(|i| !set.contains(&hash(i))));
        assert!(!set.contains("not a hash"));
        // The same first 64 bits, other next 32: not the same row.
        let mut near = hash(7);
        near.replace_range(16..24, "00000000");
        assert!(!set.contains(&near));
    }

    #[tokio::test]
    async fn nothing_is_held_for_a_first_load_or_past_the_limit() {
        assert!(known(Vec::new()).await.is_none());
        let rows = |n: u32| futures::stream::iter((0..n).map(|i| Ok::<_, ()>(hash(i))));
        assert!(Known::collect_within(10, rows(11)).await.unwrap().is_none());
        assert!(Known::collect_within(10, rows(10)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_single_hash_and_a_malformed_one() {
        let set = known(vec![hash(1), "zz".into()]).await.unwrap();
        assert_eq!(set.present(), 2, "every stored row counts as present");
        assert!(set.contains(&hash(1)));
        assert!(!set.contains(&hash(2)));
    }
}
