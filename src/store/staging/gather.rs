//! Gathering the stored row hashes as the store reads them: into [`HeldHashes`], or,
//! past the limit, onto disk for [`Passes`].

use super::held::foreign;
use crate::store::error::Result;
use crate::store::staging::held::{HeldHashes, KEPT, key};
use crate::store::staging::passes::{FINE, FineKeys, fine_spills, partition};
use crate::store::staging::spill::{Spill, spill_error};

/// Gathers the stored row hashes into [`HeldHashes`], or into [`Passes`] past the limit.
pub struct Gather {
    keys: Vec<[u8; KEPT]>,
    foreign: Vec<(String, bool)>,
    present: usize,
    limit: u64,
    /// Keys held at once by the passes past the limit; 0: no passes, nothing held past it.
    pass_held: u64,
    /// Past the limit, with passes: every key read, on disk in the file of its fine
    /// partition (none in `keys`).
    overflow: Option<Vec<Spill>>,
    /// Why the overflow could not be written; reading stopped.
    failed: Option<std::io::Error>,
}

/// What [`Gather::finish`] found.
pub enum Gathered {
    /// Nothing is stored: a first load.
    Nothing,
    /// More than the limit, and no passes: nothing is held.
    TooMany,
    /// Every hash, held.
    Held(HeldHashes),
    /// Every hash, to be held a partition at a time ([`super::passes::Passes`]).
    Passes(FineKeys),
}

impl Gather {
    /// An empty gathering that holds up to `limit` hashes, and past it keeps them for
    /// passes of `pass_held` each (with 0, gives up past the limit).
    pub fn within(limit: u64, pass_held: u64) -> Gather {
        Gather {
            keys: Vec::new(),
            foreign: Vec::new(),
            present: 0,
            limit,
            pass_held,
            overflow: None,
            failed: None,
        }
    }

    /// Adds a stored row hash, as the bytes of its text (its first 24 hex digits are
    /// kept; a hash that is not ours counts as present and never matches). `false`:
    /// stop reading (past the limit without passes, or the overflow file failed).
    pub fn add(&mut self, row_hash: &[u8]) -> bool {
        self.present += 1;
        match key(row_hash) {
            Some(key) => match &mut self.overflow {
                Some(overflow) => {
                    if let Err(e) = overflow[partition(&key, FINE)].write(&key) {
                        self.failed = Some(e);
                        return false;
                    }
                }
                None => self.keys.push(key),
            },
            None => self.foreign.push((foreign(row_hash), false)),
        }
        if !self.over_limit() || self.overflow.is_some() {
            return true;
        }
        if self.pass_held == 0 {
            return false;
        }
        // Past the limit: every key so far goes to disk, and every one after it.
        let spilled = fine_spills().and_then(|mut overflow| {
            for k in &self.keys {
                overflow[partition(k, FINE)].write(k)?;
            }
            Ok(overflow)
        });
        match spilled {
            Ok(overflow) => {
                self.keys = Vec::new();
                self.overflow = Some(overflow);
                true
            }
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    /// Whether more hashes were added than the set holds.
    pub fn over_limit(&self) -> bool {
        self.present as u64 > self.limit
    }

    /// The hashes, as they are to be held.
    pub fn finish(self) -> Result<Gathered> {
        let over_limit = self.over_limit();
        let Gather {
            mut keys,
            foreign,
            present,
            overflow,
            failed,
            ..
        } = self;
        if let Some(e) = failed {
            return Err(spill_error(e));
        }
        if let Some(keys) = overflow {
            return Ok(Gathered::Passes(FineKeys {
                keys,
                present,
                foreign,
            }));
        }
        if present == 0 {
            return Ok(Gathered::Nothing);
        }
        if over_limit {
            return Ok(Gathered::TooMany);
        }
        // Grown by doubling: up to half of it unused.
        keys.shrink_to_fit();
        let hashes = keys.len();
        let held = HeldHashes::gathered(keys, foreign, present);
        tracing::debug!(
            hashes,
            "holding the present subscribers' row hashes: rows stored unchanged are marked, not staged"
        );
        Ok(Gathered::Held(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::staging::held::{KEPT, Listing, key};
    use crate::store::staging::passes::{PassFiles, Passes, partition, parts, unmarked};

    /// A stored row hash, as the store keeps it.
    fn hash(i: u32) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &i.to_le_bytes());
        hex::encode(&digest.as_ref()[..16])
    }

    /// The stored prefixes of these hashes, sorted, as the unlisted ones are given.
    fn prefixes(range: std::ops::Range<u32>) -> Vec<String> {
        let mut prefixes: Vec<String> = range.map(|i| hash(i)[..24].to_string()).collect();
        prefixes.sort();
        prefixes
    }

    fn passes(n: u32, limit: u64, pass_held: u64) -> Passes {
        let mut gather = Gather::within(limit, pass_held);
        for i in 0..n {
            assert!(gather.add(hash(i).as_bytes()), "reading stopped at {i}");
        }
        assert!(gather.add(b"Not-Ours"));
        match gather.finish().expect("spill files") {
            Gathered::Passes(keys) => Passes::split(keys, pass_held).expect("spill files"),
            _ => panic!("not held in passes"),
        }
    }

    #[test]
    fn partitions_split_keys_evenly_by_bits_the_set_does_not_bucket_on() {
        let parts = 7;
        let mut sizes = [0u32; 7];
        for i in 0..70_000 {
            let k = key(hash(i).as_bytes()).expect("hex");
            sizes[partition(&k, parts)] += 1;
        }
        assert!(
            sizes.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{sizes:?}"
        );
        assert_eq!(partition(&[0xff; KEPT], parts), parts - 1);
        assert_eq!(partition(&[0; KEPT], parts), 0);
    }

    #[test]
    fn a_run_takes_at_least_two_passes_and_at_most_sixty_four() {
        assert_eq!(parts(1_500_001, 1_000_000), 2);
        assert_eq!(parts(10_000_000, 1_000_000), 10);
        assert_eq!(parts(10_000_001, 1_000_000), 11);
        assert_eq!(parts(10_000_000, 1), 64, "files and buffers stay bounded");
        assert_eq!(parts(10, 0), 10, "0 per pass is read as 1");
    }

    #[test]
    fn every_stored_hash_is_in_exactly_one_pass() {
        let mut passes = passes(1_000, 10, 300);
        assert_eq!(
            passes.parts(),
            7,
            "1,001 hashes held 300 at a time: two passes at once, of 150 each"
        );
        assert_eq!(passes.present(), 1_001, "the foreign one counts as present");
        let mut seen = Vec::new();
        for p in 0..passes.parts() {
            let (held, mut rows) = passes.take(p).and_then(PassFiles::load).expect("pass");
            assert!(rows.next_row().expect("read").is_none(), "no rows held");
            seen.extend(held.unmarked().map(hex::encode));
            passes
                .passed(p, unmarked(&held).expect("written"))
                .expect("kept");
            assert!(passes.take(p).is_err(), "a partition passes once");
        }
        seen.sort();
        assert_eq!(seen, prefixes(0..1_000));
    }

    #[test]
    fn the_unlisted_are_the_hashes_nobody_listed() {
        let mut passes = passes(100, 10, 30);
        for p in 0..passes.parts() {
            let (held, _) = passes.take(p).and_then(PassFiles::load).expect("pass");
            passes
                .passed(p, unmarked(&held).expect("written"))
                .expect("kept");
        }
        for i in 0..90 {
            passes.list(hash(i).to_uppercase().as_bytes());
        }
        passes.list(b"NOT-OURS");
        assert_eq!(passes.settle().expect("settled"), 10);
        assert_eq!(passes.unlisted_count(), 10);
        let mut failed = None;
        let mut unlisted: Vec<String> = passes.unlisted(&mut failed).expect("read").collect();
        assert!(failed.is_none());
        unlisted.sort();
        assert_eq!(unlisted, prefixes(90..100));
    }

    #[test]
    fn below_the_limit_the_hashes_are_held_and_without_passes_not_at_all() {
        let gathered = |limit, pass_held| {
            let mut gather = Gather::within(limit, pass_held);
            let read = (0..20)
                .take_while(|i| gather.add(hash(*i).as_bytes()))
                .count();
            (read, gather.finish().expect("spill files"))
        };
        assert!(matches!(gathered(20, 5), (20, Gathered::Held(_))));
        assert!(matches!(gathered(19, 5), (20, Gathered::Passes(_))));
        assert!(
            matches!(gathered(19, 0), (19, Gathered::TooMany)),
            "stops at the 20th"
        );
        assert!(
            matches!(gathered(10, 0), (10, Gathered::TooMany)),
            "stops at the 11th"
        );
    }

    fn held(hashes: Vec<String>) -> Option<HeldHashes> {
        gather(Gather::within(crate::store::MAX_HELD, 0), hashes)
    }

    fn gather(mut gather: Gather, hashes: Vec<String>) -> Option<HeldHashes> {
        for hash in &hashes {
            if !gather.add(hash.as_bytes()) {
                break;
            }
        }
        match gather.finish().expect("no spill") {
            Gathered::Held(held) => Some(held),
            _ => None,
        }
    }

    #[test]
    fn nothing_is_held_for_a_first_load_or_past_the_limit() {
        assert!(held(Vec::new()).is_none());
        let hashes = |n: u32| (0..n).map(hash).collect();
        assert!(gather(Gather::within(10, 0), hashes(11)).is_none());
        assert!(gather(Gather::within(10, 0), hashes(10)).is_some());
    }
}
