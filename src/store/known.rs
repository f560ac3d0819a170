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
//! bucket index), at most [`MAX_KNOWN`] of them, 28 MB. Above that the set is not
//! built and every row is staged in full, as before: memory stays bounded whatever the
//! size of the connector.

use futures::{Stream, StreamExt};

/// The largest number of present subscribers whose hashes are held in memory.
pub const MAX_KNOWN: u64 = 2_000_000;

/// A set of row hashes, by their first 96 bits: two different rows agreeing there by
/// chance is a 2^-96 event per pair (SHA-256 bits), about 1e-18 for a night of a
/// hundred thousand changes against a million stored rows.
pub struct Known {
    /// The first 64 bits of each hash, sorted (with `low` alongside).
    high: Vec<u64>,
    /// The next 32 bits of each hash.
    low: Vec<u32>,
    /// Where each bucket (the top `bits` of `high`) starts in `high`; one more entry
    /// than there are buckets.
    starts: Vec<u32>,
    bits: u32,
}

/// A hex row hash as the two numbers the set keeps; `None` if it is not hex.
fn key(row_hash: &str) -> Option<(u64, u32)> {
    let high = u64::from_str_radix(row_hash.get(..16)?, 16).ok()?;
    let low = u32::from_str_radix(row_hash.get(16..24)?, 16).ok()?;
    Some((high, low))
}

impl Known {
    /// Collects the hashes `rows` yields (`present` of them are expected). `None` when
    /// there is nothing to hold (a first load) or more than [`MAX_KNOWN`].
    pub async fn collect<E>(
        present: u64,
        rows: impl Stream<Item = Result<String, E>>,
    ) -> Result<Option<Known>, E> {
        if present == 0 || present > MAX_KNOWN {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(present as usize);
        let mut rows = std::pin::pin!(rows);
        while let Some(row_hash) = rows.next().await {
            // A stored hash that is not ours (written by hand?) just never matches.
            if let Some(k) = key(&row_hash?) {
                keys.push(k);
            }
            if keys.len() as u64 > MAX_KNOWN {
                return Ok(None);
            }
        }
        let known = Known::from_keys(keys);
        tracing::debug!(
            hashes = known.len(),
            "holding the present subscribers' row hashes: rows stored unchanged are staged by email only"
        );
        Ok(Some(known))
    }

    fn from_keys(mut keys: Vec<(u64, u32)>) -> Known {
        keys.sort_unstable();
        // About two hashes per bucket: the scan of a bucket stays within a cache line.
        let bits = (usize::BITS - (keys.len() / 2).max(1).leading_zeros()).min(31);
        let mut starts = vec![0u32; (1usize << bits) + 1];
        for (high, _) in &keys {
            starts[(high >> (64 - bits)) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let (high, low) = keys.into_iter().unzip();
        Known {
            high,
            low,
            starts,
            bits,
        }
    }

    /// Whether a row with this hash is stored, present, with these very traits.
    pub fn contains(&self, row_hash: &str) -> bool {
        let Some((high, low)) = key(row_hash) else {
            return false;
        };
        let bucket = (high >> (64 - self.bits)) as usize;
        let (from, to) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        (from..to).any(|i| self.high[i] == high && self.low[i] == low)
    }

    /// How many hashes it holds.
    pub fn len(&self) -> usize {
        self.high.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hash(i: u32) -> String {
        hex::encode(&Sha256::digest(i.to_le_bytes())[..16])
    }

    async fn known(hashes: Vec<String>) -> Option<Known> {
        let n = hashes.len() as u64;
        let rows = futures::stream::iter(hashes.into_iter().map(Ok::<_, ()>));
        Known::collect(n, rows).await.unwrap()
    }

    #[tokio::test]
    async fn holds_exactly_the_stored_hashes() {
        let set = known((0..50_000).map(hash).collect()).await.unwrap();
        assert_eq!(set.len(), 50_000);
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
        let rows = futures::stream::iter(std::iter::empty::<Result<String, ()>>());
        assert!(Known::collect(MAX_KNOWN + 1, rows).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_single_hash_and_a_malformed_one() {
        let set = known(vec![hash(1), "zz".into()]).await.unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&hash(1)));
        assert!(!set.contains(&hash(2)));
    }
}
