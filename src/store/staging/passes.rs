//! Hash-partitioned passes: the held hashes of a connector too large to hold at once,
//! a part at a time. What the held hashes are for is told in [`super::staging`]; this
//! is how a run past [`super::Tuning::max_held`] present subscribers keeps them, so
//! that a night with few changes still stages only the changed rows.
//!
//! # How
//!
//! The stored hashes are split by their bits into `P` partitions of about
//! [`super::Tuning::pass_held`] keys (`P = ceil(present / pass_held)`, from 2 to 64),
//! each written to a file of its own while they are read. The export's rows go to the
//! file of the partition their row hash falls in, as they stream. Once every row is in,
//! each partition in turn is loaded as [`HeldHashes`] and its rows are read back and
//! marked against it exactly as a held set marks them: a row whose hash is stored is
//! marked (not staged), every other row is staged. The keys no row marked are written
//! back; the comparison then lists the stored hash of every subscriber a staged row
//! names into the file of its partition, and each partition's keys left neither marked
//! nor listed are the removals, counted and kept for the removal statement.
//!
//! # Why it is exact
//!
//! A row hash's partition is a function of the same 96 bits the held set compares, so
//! a row and the stored hash it equals always meet in the same pass, and a pass holds
//! every stored hash of its partition: each row is marked exactly as one set of all of
//! them would mark it. The counts are the held set's, and the removals are checked
//! against the one formula the same way ([`super::staging`]).
//!
//! # What it costs
//!
//! Memory: one partition's set at a time (17 bytes a key, about `pass_held` keys:
//! 17 MB at the default), two 64 KiB write buffers per partition, nothing per row.
//! I/O: each present subscriber's 12 bytes written and read three times (gathered,
//! partitioned, the unmarked kept), and each valid row once each way, about 70 bytes
//! and its text (a 5M-row export: some 900 MB written and read back). The files are
//! anonymous (unlinked when created) in the temporary directory (`TMPDIR`, else
//! `/tmp`): nothing is left behind, even by a `kill -9`. They are read back at once,
//! mostly from the page cache; `TMPDIR` should still be on a disk, not a RAM-backed
//! tmpfs, where they would count as memory.

use crate::export::Row;
use crate::store::error::Result;
use crate::store::error::StoreError;
use crate::store::staging::held::{HeldHashes, KEPT, Listing, kept, key};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

/// Bytes buffered per file before they are written.
const BUFFER: usize = 64 * 1024;

/// The most partitions: 64M subscribers at the default `pass_held`; past it a pass holds
/// more. Each partition has up to three files open and two buffers: 192 descriptors,
/// 8 MiB, however small `pass_held` is set.
const MAX_PARTS: u64 = 64;

/// How many partitions `present` hashes take in passes of `pass_held`.
pub(super) fn parts(present: usize, pass_held: u64) -> usize {
    (present as u64)
        .div_ceil(pass_held.max(1))
        .clamp(2, MAX_PARTS) as usize
}

/// An anonymous file, written then read back once.
pub(super) struct Spill {
    file: BufWriter<File>,
}

impl Spill {
    /// A new empty file in the temporary directory.
    pub(super) fn new() -> io::Result<Spill> {
        let file = tempfile::tempfile_in(std::env::temp_dir())?;
        Ok(Spill {
            file: BufWriter::with_capacity(BUFFER, file),
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// What was written, from its start.
    pub(super) fn read_back(self) -> io::Result<BufReader<File>> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(BufReader::with_capacity(BUFFER, file))
    }
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

/// Every key of a file.
fn read_keys(spill: Spill) -> io::Result<Vec<[u8; KEPT]>> {
    let mut from = spill.read_back()?;
    // Sized from the file: grown by doubling, a pass's set could take twice its keys.
    let len = from.get_ref().metadata()?.len() as usize / KEPT;
    let mut keys = Vec::with_capacity(len);
    while let Some(k) = read_key(&mut from)? {
        keys.push(k);
    }
    Ok(keys)
}

/// The partition of a key among `parts`. From bits 32-63: the held set buckets on the
/// top ones, which within one partition would then all start alike.
pub(super) fn partition(k: &[u8; KEPT], parts: usize) -> usize {
    let bits = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
    ((u64::from(bits) * parts as u64) >> 32) as usize
}

/// The error of a spill file, as the store reports it.
pub(super) fn spill_error(source: io::Error) -> StoreError {
    StoreError::Spill {
        dir: std::env::temp_dir().display().to_string(),
        source,
    }
}

/// The present subscribers' hashes and the export's rows, by partition.
pub struct Passes {
    /// How many present subscribers (every hash read).
    present: usize,
    /// Per partition: its stored keys; after its pass, those no row marked.
    keys: Vec<Option<Spill>>,
    /// Per partition: the export's valid rows, each its length (4 bytes) and
    /// [`Row::encode`]'s bytes.
    rows: Vec<Option<Spill>>,
    /// Per partition: the keys the comparison listed, once it did.
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
    /// Splits the gathered keys (`overflow`, every hex hash read) into partitions of
    /// about `pass_held` keys.
    pub(super) fn split(
        overflow: Spill,
        present: usize,
        foreign: HeldHashes,
        pass_held: u64,
    ) -> io::Result<Passes> {
        let parts = parts(present, pass_held);
        let mut keys = (0..parts)
            .map(|_| Spill::new())
            .collect::<io::Result<Vec<_>>>()?;
        let mut from = overflow.read_back()?;
        while let Some(k) = read_key(&mut from)? {
            keys[partition(&k, parts)].write(&k)?;
        }
        let rows = (0..parts)
            .map(|_| Spill::new().map(Some))
            .collect::<io::Result<_>>()?;
        tracing::debug!(
            present,
            parts,
            dir = %std::env::temp_dir().display(),
            "too many present subscribers to hold their row hashes at once: held in passes, \
             a part at a time, from files in the temporary directory"
        );
        Ok(Passes {
            present,
            keys: keys.into_iter().map(Some).collect(),
            rows,
            listed: (0..parts).map(|_| None).collect(),
            foreign,
            unlisted: None,
            failed: None,
            buf: Vec::new(),
        })
    }

    /// How many partitions.
    pub fn parts(&self) -> usize {
        self.keys.len()
    }

    /// How many present subscribers there are.
    pub fn present(&self) -> usize {
        self.present
    }

    /// Keeps a valid row for the pass of its partition.
    pub fn hold(&mut self, row: &Row) -> Result<()> {
        let p = partition(&kept(&row.row_hash), self.parts());
        let rows = self.rows[p]
            .as_mut()
            .ok_or_else(|| StoreError::Bug("a row kept after its pass".into()))?;
        write_row(rows, &mut self.buf, row)
    }

    /// The pass of partition `p`: its stored keys, held, and its rows to mark on them.
    pub fn pass(&mut self, p: usize) -> Result<(HeldHashes, SpilledRows)> {
        let (Some(keys), Some(rows)) = (self.keys[p].take(), self.rows[p].take()) else {
            return Err(StoreError::Bug(format!("partition {p} passed twice")));
        };
        let held = HeldHashes::from_keys(read_keys(keys).map_err(spill_error)?);
        Ok((held, SpilledRows::of(rows)?))
    }

    /// Keeps the keys of partition `p` that no row marked in its pass.
    pub fn passed(&mut self, p: usize, held: &HeldHashes) -> Result<()> {
        let mut unmarked = Spill::new().map_err(spill_error)?;
        for k in held.unmarked() {
            unmarked.write(k).map_err(spill_error)?;
        }
        self.keys[p] = Some(unmarked);
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
        for p in 0..self.parts() {
            let Some(keys) = self.keys[p].take() else {
                return Err(StoreError::Bug(format!(
                    "partition {p} settled before its pass"
                )));
            };
            let mut held = HeldHashes::from_keys(read_keys(keys).map_err(spill_error)?);
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
        let p = partition(&k, self.parts());
        let listed = match &mut self.listed[p] {
            Some(listed) => Ok(listed),
            empty => Spill::new().map(|spill| empty.insert(spill)),
        };
        if let Err(e) = listed.and_then(|listed| listed.write(&k)) {
            self.failed = Some(e);
        }
    }
}

/// Writes a row to a spill file as [`SpilledRows`] reads it back: its length (4 bytes)
/// and [`Row::encode`]'s bytes, put together in `buf`.
pub(super) fn write_row(spill: &mut Spill, buf: &mut Vec<u8>, row: &Row) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    row.encode(buf);
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| StoreError::Bug("a row of more than 4 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    spill.write(buf).map_err(spill_error)
}

/// The rows of a spill file ([`write_row`]), read back: a partition's, or those a
/// first load put aside.
pub struct SpilledRows {
    from: BufReader<File>,
    buf: Vec<u8>,
}

impl SpilledRows {
    /// The rows written to `spill`, from the first.
    pub(super) fn of(spill: Spill) -> Result<SpilledRows> {
        Ok(SpilledRows {
            from: spill.read_back().map_err(spill_error)?,
            buf: Vec::new(),
        })
    }

    /// The next row; `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let mut len = [0u8; 4];
        match self.from.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(spill_error(e)),
        }
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.from.read_exact(&mut self.buf).map_err(spill_error)?;
        Row::decode(&self.buf)
            .map(Some)
            .ok_or_else(|| StoreError::Bug("a row read back from a spill file is not one".into()))
    }
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
