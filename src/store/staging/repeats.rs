//! Which emails may occur more than once in an export, noted while it streams, so that
//! the exact check in the store reads only those (the usual export has none).

use super::cache;
use crate::run::{Reason, Rejection};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Bits of the filter at least: 8 MiB. A few million emails fit in that.
const MIN_BITS: u64 = 1 << 26;
/// Bits per expected email past that: ten million emails then give some thirty
/// thousand false candidates (a 15 MB filter), where 8 MiB gave more than
/// [`MAX_CANDIDATES`], and every email was checked.
const BITS_PER_EMAIL: u64 = 12;
/// Bits of a block, the cache line all the bits of one email are in.
const BLOCK: u64 = 512;
/// Bits set per email. A million distinct emails give a handful of false candidates,
/// five million a few thousand: still a small exact check.
const PROBES: u64 = 7;
/// Beyond this many candidates the list costs more than it saves: every email is
/// checked instead.
pub const MAX_CANDIDATES: usize = 100_000;

/// A Bloom filter of the emails seen, and the emails it had seen already.
pub struct Repeats {
    bits: Vec<u64>,
    /// Blocks of the filter.
    blocks: u64,
    /// `None` once there are too many to list.
    candidates: Option<Vec<String>>,
    /// How many candidates are listed at most.
    cap: usize,
}

/// What the store has to check for repeated emails.
#[derive(Debug, PartialEq, Eq)]
pub enum RepeatCheck {
    /// Every email occurs once: nothing to check.
    None,
    /// Only these emails may occur more than once (each listed once or more).
    Only(Vec<String>),
    /// Too many candidates: check every email.
    All,
}

impl Repeats {
    /// An empty filter that lists at most `cap` candidates.
    #[cfg(test)]
    pub fn new(cap: usize) -> Repeats {
        Repeats::sized(cap, 0)
    }

    /// An empty filter for about `expected` emails (more only costs false candidates),
    /// that lists at most `cap` candidates.
    pub fn sized(cap: usize, expected: u64) -> Repeats {
        Repeats::with_bits(cap, MIN_BITS.max(expected.saturating_mul(BITS_PER_EMAIL)))
    }

    fn with_bits(cap: usize, bits: u64) -> Repeats {
        let blocks = (bits / BLOCK).max(1);
        Repeats {
            bits: vec![0; (blocks * (BLOCK / 64)) as usize],
            blocks,
            candidates: Some(Vec::new()),
            cap,
        }
    }

    /// The hash of an email and the first word of its block. A blocked filter: every
    /// bit of one email lies in one 64-byte block, so a lookup costs one cache miss, not
    /// seven. The block comes from the high bits, the bits in it from 9-bit slices of the
    /// low ones.
    fn block(&self, email: &str) -> (u64, u64) {
        let mut hasher = DefaultHasher::new();
        email.hash(&mut hasher);
        let hash = hasher.finish();
        (hash, ((hash >> 32) % self.blocks) * (BLOCK / 64))
    }

    /// Asks for the block an email's note will read ([`super::cache`]).
    pub fn prefetch(&self, email: &str) {
        if let Some(word) = self.bits.get(self.block(email).1 as usize) {
            cache::prefetch(word);
        }
    }

    /// Notes an email of the export; whether it may have been noted before (it is a
    /// candidate).
    pub fn note(&mut self, email: &str) -> bool {
        if self.bits.is_empty() {
            // Finished: every email is a candidate already.
            return true;
        }
        let (hash, block) = self.block(email);
        let mut seen = true;
        for i in 0..PROBES {
            let bit = (hash >> (9 * i)) & (BLOCK - 1);
            let (word, mask) = ((block + bit / 64) as usize, 1u64 << (bit % 64));
            seen &= self.bits[word] & mask != 0;
            self.bits[word] |= mask;
        }
        if seen && let Some(candidates) = &mut self.candidates {
            if candidates.len() < self.cap {
                candidates.push(email.to_owned());
            } else {
                self.candidates = None;
            }
        }
        seen
    }

    /// What is left to check once every email was noted. The filter is freed (8 MiB or
    /// more, before the heaviest statements of a run); nothing can be missed after it: every
    /// email counts as a candidate.
    pub fn finish(&mut self) -> RepeatCheck {
        self.bits = Vec::new();
        match self.candidates.take() {
            Some(c) if c.is_empty() => RepeatCheck::None,
            Some(c) => RepeatCheck::Only(c),
            None => RepeatCheck::All,
        }
    }
}

/// The rejections of the records of repeated emails.
pub(super) fn rejections(records: impl IntoIterator<Item = (i64, String)>) -> Vec<Rejection> {
    records
        .into_iter()
        .map(|(record, email)| Rejection {
            record: record.max(0) as u64,
            column: "email".to_string(),
            reason: Reason::DuplicateEmail,
            value: Some(crate::redact::mask_email(&email)),
            email: Some(email),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_email_is_always_a_candidate() {
        let mut repeats = Repeats::new(MAX_CANDIDATES);
        for i in 0..100_000 {
            repeats.note(&format!("user{i}@example.com"));
        }
        let mut again = Repeats::new(MAX_CANDIDATES);
        for i in 0..100_000 {
            again.note(&format!("user{i}@example.com"));
        }
        assert_eq!(
            repeats.finish(),
            RepeatCheck::None,
            "no false candidates here"
        );
        again.note("user42@example.com");
        assert_eq!(
            again.finish(),
            RepeatCheck::Only(vec!["user42@example.com".to_string()])
        );
    }

    #[test]
    fn a_filter_sized_for_ten_million_emails_flags_few_of_them() {
        // A tenth of the emails of a 10M-row export: the rate of false candidates is
        // the same at any fill of the same bits per email.
        let n = 1_000_000;
        let mut repeats = Repeats::with_bits(usize::MAX, n * BITS_PER_EMAIL);
        for i in 0..n {
            repeats.note(&format!("user{i}@example.com"));
        }
        let RepeatCheck::Only(false_candidates) = repeats.finish() else {
            panic!("no candidates at all, or too many")
        };
        // 10,000 a million would be 100,000 at ten million: the list's limit.
        assert!(
            false_candidates.len() < 10_000,
            "{}",
            false_candidates.len()
        );
    }

    #[test]
    fn once_finished_every_email_is_to_be_checked() {
        let mut repeats = Repeats::new(MAX_CANDIDATES);
        repeats.note("a@example.com");
        assert_eq!(repeats.finish(), RepeatCheck::None);
        repeats.note("a@example.com");
        assert_eq!(repeats.finish(), RepeatCheck::All);
    }

    #[test]
    fn too_many_candidates_means_checking_everything() {
        let mut repeats = Repeats::new(3);
        for _ in 0..4 {
            repeats.note("same@example.com");
        }
        assert_eq!(
            repeats.finish(),
            RepeatCheck::Only(vec!["same@example.com".to_string(); 3])
        );
        let mut repeats = Repeats::new(3);
        for _ in 0..5 {
            repeats.note("same@example.com");
        }
        assert_eq!(repeats.finish(), RepeatCheck::All);
    }
}
