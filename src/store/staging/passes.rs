//! Hash-partitioned passes: the held hashes of a connector too large to hold at once,
//! two parts at a time. What the held hashes are for is told in [`super::staging`]; this
//! is how a run past [`super::Tuning::max_held`] present subscribers keeps them, so
//! that a night with few changes still stages only the changed rows.
//!
//! # How
//!
//! The stored hashes and the export's rows are written, as they stream, to the files of
//! [`FINE`] fine partitions by the bits of their row hash. Once both are in, the fine
//! partitions are taken in `P` runs of about `pass_held / AT_ONCE` keys
//! (`P = ceil(present / (pass_held / AT_ONCE))`, from 2 to 64), one pass each: its stored
//! keys are loaded as [`HeldHashes`] and its rows are read back and marked against them
//! exactly as a held set marks them: a row whose hash is stored is marked (not staged),
//! every other row is staged. [`AT_ONCE`] passes are marked at once, each on a thread of
//! its own ([`super::marks`]), so that together they hold about
//! [`super::Tuning::pass_held`] keys. The keys no row marked are written back; the
//! comparison then lists the stored hash of every subscriber a staged row names into the file of its
//! pass, and each pass's keys left neither marked nor listed are the removals, counted
//! and kept for the removal statement.
//!
//! Fine partitions let the rows be written before anyone knows how many stored hashes
//! there are, so that on a night whose export is past the limit the store reads the
//! hashes beside the export instead of before it ([`super::beside`]).
//!
//! # Why it is exact
//!
//! A row hash's partition is a function of the same 96 bits the held set compares, so
//! a row and the stored hash it equals always meet in the same pass, and a pass holds
//! every stored hash of its partitions: each row is marked exactly as one set of all of
//! them would mark it. The counts are the held set's, and the removals are checked
//! against the one formula the same way ([`super::staging`]).
//!
//! # What it costs
//!
//! Memory: [`AT_ONCE`] passes' sets at a time (17 bytes a key, about `pass_held` keys in
//! all: 17 MB at the default), a 16 KiB write buffer per fine partition's file of rows
//! and another per file of keys while they are written (2 MiB), a 64 KiB read buffer per
//! file of the passes being marked (at most 2 MiB), nothing per row.
//! I/O: each present subscriber's 12 bytes written and read twice (gathered, the
//! unmarked kept), and each valid row once each way, about 70 bytes and its text (a
//! 5M-row export: some 900 MB written and read back). The files are anonymous (unlinked
//! when created) in the temporary directory (`TMPDIR`, else `/tmp`): nothing is left
//! behind, even by a `kill -9`. They are read back at once, mostly from the page cache;
//! `TMPDIR` should still be on a disk, not a RAM-backed tmpfs, where they would count
//! as memory.

use super::spill::{Spill, SpilledRows, spill_error, write_row};
use crate::export::Row;
use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::staging::held::{HeldHashes, KEPT, Listing, kept, key};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use tokio_util::task::AbortOnDropHandle;

/// Bytes buffered per fine partition's file: 128 of them are written at once while the
/// hashes are read beside the export.
const FINE_BUFFER: usize = 16 * 1024;

/// How many passes are marked at once, each on a thread of its own, holding its share of
/// `pass_held` keys. Two: a changed night's passes ran on one thread while the other
/// core waited (2.7 s of a 5M night on SQLite), and memory is what bounds more.
pub(super) const AT_ONCE: usize = 2;

/// The most passes: 64M subscribers at the default `pass_held`; past it a pass holds
/// more.
const MAX_PARTS: u64 = 64;

/// The fine partitions keys and rows are written by: as many as the most passes, so
/// that a pass is a run of one or more of them.
pub(super) const FINE: usize = MAX_PARTS as usize;

/// How many passes `present` hashes take in passes of `pass_held` each.
pub(super) fn parts(present: usize, pass_held: u64) -> usize {
    (present as u64)
        .div_ceil(pass_held.max(1))
        .clamp(2, MAX_PARTS) as usize
}

/// Empty files, one per fine partition.
pub(super) fn fine_spills() -> io::Result<Vec<Spill>> {
    (0..FINE).map(|_| Spill::buffered(FINE_BUFFER)).collect()
}

/// Reads one key; `None` at the end of the file.
fn read_key(from: &mut impl Read) -> io::Result<Option<[u8; KEPT]>> {
    let mut k = [0u8; KEPT];
    match from.read_exact(&mut k) {
        Ok(()) => Ok(Some(k)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every key of these files.
fn read_keys(spills: Vec<Spill>) -> io::Result<Vec<[u8; KEPT]>> {
    let mut readers = spills
        .into_iter()
        .map(Spill::read_back)
        .collect::<io::Result<Vec<_>>>()?;
    // Sized from the files: grown by doubling, a pass's set could take twice its keys.
    let mut len = 0;
    for from in &readers {
        len += from.get_ref().metadata()?.len() as usize / KEPT;
    }
    let mut keys = Vec::with_capacity(len);
    for from in &mut readers {
        while let Some(k) = read_key(from)? {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// The partition of a key among `parts`. From bits 32-63: the held set buckets on the
/// top ones, which within one partition would then all start alike.
pub(super) fn partition(k: &[u8; KEPT], parts: usize) -> usize {
    let bits = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
    ((u64::from(bits) * parts as u64) >> 32) as usize
}

/// The fine partitions of pass `pass` of `parts`: a run of them, every one in exactly
/// one pass.
fn fines(pass: usize, parts: usize) -> Range<usize> {
    pass * FINE / parts..(pass + 1) * FINE / parts
}

/// The pass of fine partition `fine` among `parts` (the one whose [`fines`] hold it).
fn pass_of(fine: usize, parts: usize) -> usize {
    ((fine + 1) * parts - 1) / FINE
}

/// The stored hashes gathered for passes: every hex one read, in the file of its fine
/// partition.
pub struct FineKeys {
    /// One file per fine partition.
    pub(super) keys: Vec<Spill>,
    /// Every hash read (foreign ones too): the present subscribers.
    pub(super) present: usize,
    /// Stored hashes that are not ours (not hex), as [`HeldHashes`] keeps them.
    pub(super) foreign: Vec<(String, bool)>,
}

impl FineKeys {
    /// No stored keys at all.
    pub(super) fn none() -> Result<FineKeys> {
        Ok(FineKeys {
            keys: fine_spills().map_err(spill_error)?,
            present: 0,
            foreign: Vec::new(),
        })
    }
}

/// The stored keys being read on a task of their own ([`super::beside`]).
pub type Reading = AbortOnDropHandle<Result<FineKeys>>;

/// Where the stored keys of the passes are.
enum Keys {
    /// Still being read, beside the export, for passes of the `u64` keys each.
    Reading(Reading, u64),
    /// Per fine partition, until its pass.
    Fine(Vec<Option<Spill>>),
}

/// The present subscribers' hashes and the export's rows, by partition.
pub struct Passes {
    /// How many present subscribers (every hash read); 0 while they are read.
    present: usize,
    /// How many passes; 0 while the hashes are read.
    parts: usize,
    keys: Keys,
    /// Per pass: the keys no row marked, once it passed.
    unmarked: Vec<Option<Spill>>,
    /// Per fine partition: the export's valid rows, each its length (4 bytes) and
    /// [`Row::encode`]'s bytes.
    rows: Vec<Option<Spill>>,
    /// Per pass: the keys the comparison listed, once it did.
    listed: Vec<Option<Spill>>,
    /// Stored hashes that are not ours (not hex): few, held in memory, never marked.
    foreign: HeldHashes,
    /// The keys neither marked nor listed, and how many, once counted.
    unlisted: Option<(Spill, u64)>,
    /// The first error writing a file where no error can be returned (the listing).
    failed: Option<io::Error>,
    /// A row's bytes, reused.
    buf: Vec<u8>,
}

impl Passes {
    /// Passes of about `pass_held` keys over the gathered ones.
    pub(super) fn split(keys: FineKeys, pass_held: u64) -> io::Result<Passes> {
        let mut passes = Passes::waiting(Keys::Fine(Vec::new()))?;
        passes.gathered(keys, pass_held);
        Ok(passes)
    }

    /// Passes of about `pass_held` keys whose stored keys are still being read.
    pub(super) fn reading(reading: Reading, pass_held: u64) -> io::Result<Passes> {
        Passes::waiting(Keys::Reading(reading, pass_held))
    }

    /// Passes with nowhere for rows yet but their files, and `keys`.
    fn waiting(keys: Keys) -> io::Result<Passes> {
        Ok(Passes {
            present: 0,
            parts: 0,
            keys,
            unmarked: Vec::new(),
            rows: fine_spills()?.into_iter().map(Some).collect(),
            listed: Vec::new(),
            foreign: HeldHashes::gathered(Vec::new(), Vec::new(), 0),
            unlisted: None,
            failed: None,
            buf: Vec::new(),
        })
    }

    /// Takes the gathered keys and splits them into passes of about `pass_held`.
    fn gathered(&mut self, keys: FineKeys, pass_held: u64) {
        let FineKeys {
            keys,
            present,
            foreign,
        } = keys;
        self.parts = parts(present, pass_held / AT_ONCE as u64);
        self.present = present;
        self.keys = Keys::Fine(keys.into_iter().map(Some).collect());
        self.listed = (0..self.parts).map(|_| None).collect();
        self.unmarked = (0..self.parts).map(|_| None).collect();
        self.foreign = HeldHashes::gathered(Vec::new(), foreign, 0);
        tracing::debug!(
            present,
            parts = self.parts,
            dir = %std::env::temp_dir().display(),
            "too many present subscribers to hold their row hashes at once: held in passes, \
             two parts at a time, from files in the temporary directory"
        );
    }

    /// Waits for the stored keys being read beside the export, if they are.
    pub async fn keys_read(&mut self) -> Result<()> {
        if let Keys::Reading(..) = &self.keys
            && let Keys::Reading(reading, pass_held) =
                std::mem::replace(&mut self.keys, Keys::Fine(Vec::new()))
        {
            let keys = reading.await.map_err(|e| {
                StoreError::Interrupted(format!("reading the stored row hashes stopped: {e}"))
            })??;
            self.gathered(keys, pass_held);
        }
        Ok(())
    }

    /// How many passes (0 while the stored keys are read).
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// How many present subscribers there are (0 while their keys are read).
    pub fn present(&self) -> usize {
        self.present
    }

    /// Keeps a valid row for the pass of its partition.
    pub fn hold(&mut self, row: &Row) -> Result<()> {
        let f = partition(&kept(&row.row_hash), FINE);
        let rows = self.rows[f]
            .as_mut()
            .ok_or_else(|| StoreError::Bug("a row kept after its pass".into()))?;
        write_row(rows, &mut self.buf, row)
    }

    /// The files of pass `p`: its stored keys and its rows, taken once.
    pub(super) fn take(&mut self, p: usize) -> Result<PassFiles> {
        let parts = self.parts;
        let Keys::Fine(keys) = &mut self.keys else {
            return Err(StoreError::Bug(format!("pass {p} before the keys were in")));
        };
        let mut taken = (Vec::new(), Vec::new());
        for f in fines(p, parts) {
            let k = keys.get_mut(f).and_then(Option::take);
            let (Some(k), Some(rows)) = (k, self.rows[f].take()) else {
                return Err(StoreError::Bug(format!("pass {p} passed twice")));
            };
            taken.0.push(k);
            taken.1.push(rows);
        }
        Ok(PassFiles {
            keys: taken.0,
            rows: taken.1,
        })
    }

    /// Keeps the keys of pass `p` that no row marked ([`unmarked`]).
    pub(super) fn passed(&mut self, p: usize, unmarked: Spill) -> Result<()> {
        let kept = self
            .unmarked
            .get_mut(p)
            .ok_or_else(|| StoreError::Bug(format!("pass {p} of {} kept", self.parts)))?;
        *kept = Some(unmarked);
        Ok(())
    }

    /// Counts the keys left neither marked nor listed, and keeps them for
    /// [`Passes::unlisted`]; how many (foreign hashes included).
    pub fn settle(&mut self) -> Result<u64> {
        if let Some(e) = self.failed.take() {
            return Err(spill_error(e));
        }
        let mut unlisted = Spill::new().map_err(spill_error)?;
        let mut count = 0;
        for p in 0..self.parts {
            let Some(keys) = self.unmarked[p].take() else {
                return Err(StoreError::Bug(format!(
                    "partition {p} settled before its pass"
                )));
            };
            let mut held = HeldHashes::from_keys(read_keys(vec![keys]).map_err(spill_error)?);
            if let Some(listed) = self.listed[p].take() {
                let mut from = listed.read_back().map_err(spill_error)?;
                while let Some(k) = read_key(&mut from).map_err(spill_error)? {
                    held.list_key(&k);
                }
            }
            for k in held.unmarked() {
                unlisted.write(k).map_err(spill_error)?;
                count += 1;
            }
        }
        count += self.foreign.unlisted_count();
        self.unlisted = Some((unlisted, count));
        Ok(count)
    }

    /// How many [`Passes::settle`] counted (0 before).
    pub fn unlisted_count(&self) -> u64 {
        self.unlisted.as_ref().map_or(0, |(_, n)| *n)
    }

    /// The unlisted hashes' prefixes, as SQL's `lower(left(row_hash, 24))` reads them.
    /// An error reading them ends the iteration and is kept in `failed`.
    pub fn unlisted<'a>(&'a mut self, failed: &'a mut Option<io::Error>) -> Result<Unlisted<'a>> {
        let Some((spill, _)) = self.unlisted.take() else {
            return Err(StoreError::Bug(
                "unlisted hashes read before they were counted".into(),
            ));
        };
        Ok(Unlisted {
            from: spill.read_back().map_err(spill_error)?,
            failed,
            foreign: Box::new(self.foreign.unlisted()),
        })
    }
}

impl Listing for Passes {
    fn list(&mut self, stored_hash: &[u8]) {
        let Some(k) = key(stored_hash) else {
            self.foreign.list(stored_hash);
            return;
        };
        if self.failed.is_some() {
            return;
        }
        if self.parts == 0 {
            self.failed = Some(io::Error::other(
                "a hash listed before the passes were made",
            ));
            return;
        }
        let p = pass_of(partition(&k, FINE), self.parts);
        let listed = match self.listed.get_mut(p) {
            Some(Some(listed)) => Ok(listed),
            Some(empty) => Spill::new().map(|spill| empty.insert(spill)),
            None => Err(io::Error::other("a hash listed past the last pass")),
        };
        if let Err(e) = listed.and_then(|listed| listed.write(&k)) {
            self.failed = Some(e);
        }
    }
}

/// The files of one pass ([`Passes::take`]), to be loaded where it is marked.
pub(super) struct PassFiles {
    keys: Vec<Spill>,
    rows: Vec<Spill>,
}

impl PassFiles {
    /// The pass's stored keys, held, and its rows to mark on them.
    pub(super) fn load(self) -> Result<(HeldHashes, SpilledRows)> {
        let held = HeldHashes::from_keys(read_keys(self.keys).map_err(spill_error)?);
        Ok((held, SpilledRows::merged(self.rows)?))
    }
}

/// The keys of a pass's set that no row marked, in a file for [`Passes::passed`].
pub(super) fn unmarked(held: &HeldHashes) -> Result<Spill> {
    let mut unmarked = Spill::new().map_err(spill_error)?;
    for k in held.unmarked() {
        unmarked.write(k).map_err(spill_error)?;
    }
    Ok(unmarked)
}

/// The unlisted prefixes of [`Passes::unlisted`].
pub struct Unlisted<'a> {
    from: BufReader<File>,
    failed: &'a mut Option<io::Error>,
    foreign: Box<dyn Iterator<Item = String> + Send + 'a>,
}

impl Iterator for Unlisted<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.failed.is_some() {
            return None;
        }
        match read_key(&mut self.from) {
            Ok(Some(k)) => Some(hex::encode(k)),
            Ok(None) => self.foreign.next(),
            Err(e) => {
                *self.failed = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fine_partition_is_in_the_one_pass_that_holds_it() {
        for parts in 1..=FINE {
            let mut seen = Vec::new();
            for p in 0..parts {
                let run = fines(p, parts);
                assert!(!run.is_empty(), "pass {p} of {parts} is empty");
                for f in run {
                    assert_eq!(pass_of(f, parts), p, "fine {f} of {parts} passes");
                    seen.push(f);
                }
            }
            assert_eq!(seen, (0..FINE).collect::<Vec<_>>(), "{parts} passes");
        }
    }
}
