//! The held hashes: the row hashes of a connector's present subscribers, held in
//! memory for one run, and the marks the export's rows leave on them. What they are
//! for is told once, in [`super::staging`].
//!
//! Memory: 17 bytes per present subscriber (96 bits of each hash, its mark and a share
//! of the bucket index), let go once the run is planned; nothing for a first load.
//! Above [`MAX_HELD`] present subscribers they are held two parts at a time, in passes
//! ([`super::passes`]), or not at all when passes are off.

use super::cache;
use crate::export::RowHash;

/// The largest number of present subscribers whose hashes are held in memory: 26 MB
/// with marks, so that a run at the limit stays within the 64 MiB a run is held to
/// (`bench/run.sh --rows 1500000`: a changed night peaked at 60 MiB on SQLite and
/// 57 MiB on PostgreSQL, against 33-35 MiB for a first load, which holds no set).
pub const MAX_HELD: u64 = 1_500_000;

/// Past [`MAX_HELD`], how many present subscribers' hashes are held at once, by the
/// passes marked together ([`super::passes`]): 17 MB with marks, a little more than the
/// set at a million.
pub const PASS_HELD: u64 = 1_000_000;

/// How many bytes of each hash are kept: 96 bits.
pub(super) const KEPT: usize = 12;

/// A set of row hashes, by their first 96 bits: two different rows agreeing there by
/// chance is a 2^-96 event per pair (SHA-256 bits), about 1e-18 for a night of a
/// hundred thousand changes against a million stored rows.
pub struct HeldHashes {
    /// The kept bytes of each hash, sorted.
    keys: Vec<[u8; KEPT]>,
    /// Where each bucket (the top `bits` of a key) starts in `keys`; one more entry
    /// than there are buckets.
    starts: Vec<u32>,
    bits: u32,
    /// Every hash read, kept or not: the number of present subscribers.
    present: usize,
    /// Beside each key, the record of the first row that matched it, or [`LISTED`] once
    /// a staged row named its subscriber (0: neither yet). Empty until the first mark.
    marks: Vec<u32>,
    /// Stored hashes that are not ours (not hex), as SQL's `lower(left(row_hash, 24))`
    /// reads them, and whether a staged row named their subscriber: never marked.
    foreign: Vec<(String, bool)>,
}

/// The mark of a held hash whose subscriber a staged row names (new traits, or a
/// rejected row): listed, not stored as it is.
const LISTED: u32 = u32::MAX;

/// What [`HeldHashes::mark`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The hash is not held: the row is new or changed.
    New,
    /// The first row with this held hash: its subscriber is stored unchanged.
    First,
    /// A held hash matched before (the same email again, with the same traits), or a
    /// record number too large to keep: stage the row as before.
    Again,
}

/// A hex row hash as the bytes the set keeps; `None` if it is not hex. Without a branch
/// per digit: a million of them are read before a run can start.
pub(super) fn key(row_hash: &[u8]) -> Option<[u8; KEPT]> {
    let digits = row_hash.get(..2 * KEPT)?;
    let mut key = [0u8; KEPT];
    let mut seen = 0u8;
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        seen |= high | low;
        *byte = high << 4 | low;
    }
    // A digit's value fits in four bits; anything else is marked in the high ones.
    (seen & 0xf0 == 0).then_some(key)
}

/// The value of each hex digit (either case); 0xff for any other byte.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        let digit = b"0123456789abcdef"[i];
        table[digit as usize] = i as u8;
        table[digit.to_ascii_uppercase() as usize] = i as u8;
        i += 1;
    }
    table
};

/// Where the comparison notes the present subscribers the staged rows name.
pub trait Listing: Send {
    /// Notes that a staged row names the present subscriber of this stored hash (the
    /// bytes of its text).
    fn list(&mut self, stored_hash: &[u8]);
}

impl Listing for HeldHashes {
    fn list(&mut self, stored_hash: &[u8]) {
        HeldHashes::list(self, stored_hash);
    }
}

impl HeldHashes {
    /// The set the gatherer found: these keys, the stored hashes that are not ours,
    /// and how many subscribers are present in all.
    pub(super) fn gathered(
        keys: Vec<[u8; KEPT]>,
        foreign: Vec<(String, bool)>,
        present: usize,
    ) -> HeldHashes {
        let mut held = HeldHashes::from_keys(keys);
        held.present = present;
        held.foreign = foreign;
        held
    }

    /// A set of these keys, none marked.
    pub(super) fn from_keys(mut keys: Vec<[u8; KEPT]>) -> HeldHashes {
        keys.sort_unstable();
        // Two to four hashes per bucket: the scan of a bucket stays within a cache line
        // or two, and the index takes a byte a hash.
        let bits = (usize::BITS - (keys.len() / 4).max(1).leading_zeros()).min(24);
        let mut starts = vec![0u32; (1usize << bits) + 1];
        for k in &keys {
            starts[bucket(k, bits) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let present = keys.len();
        HeldHashes {
            keys,
            starts,
            bits,
            present,
            marks: Vec::new(),
            foreign: Vec::new(),
        }
    }

    /// Where a key is in `keys`.
    fn position(&self, k: &[u8; KEPT]) -> Option<usize> {
        let b = bucket(k, self.bits);
        let from = self.starts[b] as usize;
        let to = self.starts[b + 1] as usize;
        self.keys[from..to]
            .iter()
            .position(|held| held == k)
            .map(|i| from + i)
    }

    /// Asks for what looking these hashes up will read: first each bucket's bounds,
    /// then, once those have come in, its keys and marks ([`super::cache`]).
    pub(super) fn prefetch<'a>(&self, hashes: impl Iterator<Item = &'a RowHash> + Clone) {
        for row_hash in hashes.clone() {
            cache::prefetch(&self.starts[bucket(&kept(row_hash), self.bits)]);
        }
        for row_hash in hashes {
            let from = self.starts[bucket(&kept(row_hash), self.bits)] as usize;
            if let Some(k) = self.keys.get(from) {
                cache::prefetch(k);
            }
            if let Some(mark) = self.marks.get(from) {
                cache::prefetch(mark);
            }
        }
    }

    /// Looks a row's hash up and marks it with the row's record.
    pub fn mark(&mut self, row_hash: &RowHash, record: u64) -> Mark {
        let Some(i) = self.position(&kept(row_hash)) else {
            return Mark::New;
        };
        if self.marks.is_empty() {
            self.marks = vec![0; self.keys.len()];
        }
        match u32::try_from(record) {
            Ok(record) if self.marks[i] == 0 && record > 0 && record < LISTED => {
                self.marks[i] = record;
                Mark::First
            }
            _ => Mark::Again,
        }
    }

    /// The record of the row that marked this stored hash, if one did.
    pub fn marked(&self, stored_hash: &str) -> Option<u64> {
        let i = self.position(&key(stored_hash.as_bytes())?)?;
        let record = *self.marks.get(i)?;
        (record > 0 && record != LISTED).then_some(u64::from(record))
    }

    /// Notes that a staged row names the present subscriber of this stored hash (the
    /// bytes of its text), unless a row marked it.
    pub fn list(&mut self, stored_hash: &[u8]) {
        let Some(k) = key(stored_hash) else {
            let prefix = foreign(stored_hash);
            // One stored row per listing: two foreign hashes alike are two subscribers.
            if let Some((_, listed)) = self
                .foreign
                .iter_mut()
                .find(|(f, listed)| *f == prefix && !*listed)
            {
                *listed = true;
            }
            return;
        };
        self.list_key(&k);
    }

    /// [`HeldHashes::list`], of a key.
    pub(super) fn list_key(&mut self, k: &[u8; KEPT]) {
        let Some(i) = self.position(k) else { return };
        if self.marks.is_empty() {
            self.marks = vec![0; self.keys.len()];
        }
        if self.marks[i] == 0 {
            self.marks[i] = LISTED;
        }
    }

    /// The held keys no row marked or listed (foreign hashes aside).
    pub(super) fn unmarked(&self) -> impl Iterator<Item = &[u8; KEPT]> + '_ {
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| self.marks.get(*i).is_none_or(|&m| m == 0))
            .map(|(_, k)| k)
    }

    /// The stored hashes no row marked or listed, as SQL's `lower(left(row_hash, 24))`
    /// reads them: the subscribers the export does not name.
    pub fn unlisted(&self) -> impl Iterator<Item = String> + Send + '_ {
        self.unmarked().map(hex::encode).chain(
            self.foreign
                .iter()
                .filter(|(_, listed)| !listed)
                .map(|(f, _)| f.clone()),
        )
    }

    /// How many [`HeldHashes::unlisted`] gives.
    pub fn unlisted_count(&self) -> u64 {
        let keys = match self.marks.is_empty() {
            true => self.keys.len(),
            false => self.marks.iter().filter(|&&m| m == 0).count(),
        };
        (keys + self.foreign.iter().filter(|(_, listed)| !listed).count()) as u64
    }

    /// How many present subscribers there are (every hash read, held or not).
    pub fn present(&self) -> usize {
        self.present
    }
}

/// A stored hash that is not ours, as SQL's `lower(left(row_hash, 24))` reads it.
pub(super) fn foreign(row_hash: &[u8]) -> String {
    String::from_utf8_lossy(row_hash)
        .chars()
        .take(2 * KEPT)
        .collect::<String>()
        .to_lowercase()
}

/// The bytes of a row's hash the set keeps.
pub(super) fn kept(row_hash: &RowHash) -> [u8; KEPT] {
    let mut k = [0u8; KEPT];
    k.copy_from_slice(&row_hash.0[..KEPT]);
    k
}

/// The bucket of a key: its top `bits` (at most 24).
fn bucket(key: &[u8; KEPT], bits: u32) -> usize {
    let top = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    (top >> (32 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_hash(i: u32) -> RowHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, &i.to_le_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        RowHash(bytes)
    }

    /// A row hash as the store keeps it.
    fn hash(i: u32) -> String {
        row_hash(i).hex().as_str().to_string()
    }

    /// Whether the set holds this row's hash.
    fn holds(set: &HeldHashes, row_hash: &RowHash) -> bool {
        set.position(&kept(row_hash)).is_some()
    }

    /// The set of these stored hashes, as the gatherer builds it; none for none.
    fn held(hashes: Vec<String>) -> Option<HeldHashes> {
        let mut keys = Vec::new();
        let mut foreign_ones = Vec::new();
        for hash in &hashes {
            match key(hash.as_bytes()) {
                Some(k) => keys.push(k),
                None => foreign_ones.push((foreign(hash.as_bytes()), false)),
            }
        }
        (!hashes.is_empty()).then(|| HeldHashes::gathered(keys, foreign_ones, hashes.len()))
    }

    #[test]
    fn holds_exactly_the_stored_hashes() {
        let set = held((0..50_000).map(hash).collect()).unwrap();
        assert_eq!(set.present(), 50_000);
        assert!((0..50_000).all(|i| holds(&set, &row_hash(i))));
        assert!((50_000..150_000).all(|i| !holds(&set, &row_hash(i))));
        // The same first 64 bits, other next 32: not the same row.
        let mut near = row_hash(7);
        near.0[8..12].copy_from_slice(&[0; 4]);
        assert!(!holds(&set, &near));
    }

    #[test]
    fn marks_say_which_row_matched_first_and_which_stored_hashes_none_did() {
        let mut set = held(vec![hash(1), hash(2), hash(3), "Not-Ours".into()]).unwrap();
        assert_eq!(set.mark(&row_hash(9), 5), Mark::New);
        assert_eq!(set.mark(&row_hash(2), 7), Mark::First);
        assert_eq!(set.mark(&row_hash(2), 8), Mark::Again, "the same row again");
        assert_eq!(set.marked(&hash(2)), Some(7));
        assert_eq!(set.marked(&hash(1)), None);
        assert_eq!(set.marked(&hash(9)), None);
        let mut unlisted: Vec<String> = set.unlisted().collect();
        unlisted.sort();
        let mut expected = vec![hash(1)[..24].to_string(), hash(3)[..24].to_string()];
        expected.push("not-ours".into());
        expected.sort();
        assert_eq!(unlisted, expected);
    }

    #[test]
    fn hex_is_read_in_either_case_and_anything_else_is_foreign() {
        let mut bad = hash(3);
        bad.replace_range(23..24, "g");
        let set = held(vec![hash(1).to_uppercase(), hash(2), bad.clone()]).unwrap();
        assert!(holds(&set, &row_hash(1)), "upper case is the same hash");
        assert!(holds(&set, &row_hash(2)));
        assert!(!holds(&set, &row_hash(3)), "a non-hex digit is not ours");
        assert_eq!(set.present(), 3);
        assert!(set.unlisted().any(|prefix| prefix == bad[..24]));
    }

    #[test]
    fn unlisted_hashes_are_those_no_row_marked_or_named() {
        let mut set = held(vec![hash(1), hash(2), hash(3), "Not-Ours".into()]).unwrap();
        assert_eq!(set.unlisted_count(), 4, "nothing marked or listed yet");
        assert_eq!(set.mark(&row_hash(1), 2), Mark::First);
        set.list(hash(2).as_bytes());
        set.list(hash(1).as_bytes());
        assert_eq!(set.marked(&hash(1)), Some(2), "a mark outlives a listing");
        assert_eq!(set.marked(&hash(2)), None, "listed is not marked");
        assert_eq!(set.mark(&row_hash(2), 9), Mark::Again);
        let unlisted: Vec<String> = set.unlisted().collect();
        assert_eq!(unlisted, vec![hash(3)[..24].to_string(), "not-ours".into()]);
        set.list(b"NOT-OURS");
        set.list(hash(3).to_uppercase().as_bytes());
        assert_eq!(set.unlisted_count(), 0);
        assert_eq!(set.unlisted().count(), 0);
    }

    #[test]
    fn a_single_hash_and_a_malformed_one() {
        let set = held(vec!["zz".into(), hash(1), "zz".into()]).unwrap();
        assert_eq!(set.present(), 3, "every stored row counts as present");
        assert!(holds(&set, &row_hash(1)));
        assert!(!holds(&set, &row_hash(2)));
    }
}
