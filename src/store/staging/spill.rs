//! Anonymous files on local disk: what a run keeps beyond memory (the rows and keys of
//! [`super::passes`], the rows a first load puts aside), written once and read back
//! once. They are unlinked when created: nothing is left behind, even by a `kill -9`.

use crate::export::Row;
use crate::store::error::{Result, StoreError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

/// Bytes buffered per file before they are written, or read back.
const BUFFER: usize = 64 * 1024;

/// An anonymous file, written then read back once.
pub(super) struct Spill {
    file: BufWriter<File>,
}

impl Spill {
    /// A new empty file in the temporary directory.
    pub(super) fn new() -> io::Result<Spill> {
        Spill::buffered(BUFFER)
    }

    /// A new empty file, written `buffer` bytes at a time.
    pub(super) fn buffered(buffer: usize) -> io::Result<Spill> {
        let file = tempfile::tempfile_in(std::env::temp_dir())?;
        Ok(Spill {
            file: BufWriter::with_capacity(buffer, file),
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

/// The error of a spill file, as the store reports it.
pub(super) fn spill_error(source: io::Error) -> StoreError {
    StoreError::Spill {
        dir: std::env::temp_dir().display().to_string(),
        source,
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

/// The rows of spill files ([`write_row`]), read back: a pass's, or those a first load
/// put aside. Each file holds its rows in the export's order; the rows of several are
/// merged back into that order by record number, so that the rows staged from a pass
/// reach the traits' key front to back, as the rows of one file would.
pub struct SpilledRows {
    files: Vec<RowFile>,
    /// The record number of each file's next row, the lowest first.
    next: BinaryHeap<Reverse<(u64, usize)>>,
}

/// One file of spilled rows, read back a row ahead: only the record number of its next
/// row is read, at the start of its bytes, until that row's turn.
struct RowFile {
    from: BufReader<File>,
    /// The next row's bytes.
    buf: Vec<u8>,
}

impl RowFile {
    /// Reads the next row's bytes; its record number, or `None` after the last.
    fn advance(&mut self) -> Result<Option<u64>> {
        let mut len = [0u8; 4];
        match self.from.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(spill_error(e)),
        }
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.from.read_exact(&mut self.buf).map_err(spill_error)?;
        // `Row::encode` starts with the record number.
        let record = self.buf.first_chunk::<8>().ok_or_else(not_a_row)?;
        Ok(Some(u64::from_le_bytes(*record)))
    }
}

fn not_a_row() -> StoreError {
    StoreError::Bug("a row read back from a spill file is not one".into())
}

impl SpilledRows {
    /// The rows written to `spill`, from the first.
    pub(super) fn of(spill: Spill) -> Result<SpilledRows> {
        SpilledRows::merged(vec![spill])
    }

    /// The rows written to these files, in the order of their records.
    pub(super) fn merged(spills: Vec<Spill>) -> Result<SpilledRows> {
        let mut rows = SpilledRows {
            files: Vec::with_capacity(spills.len()),
            next: BinaryHeap::with_capacity(spills.len()),
        };
        for (i, spill) in spills.into_iter().enumerate() {
            let mut file = RowFile {
                from: spill.read_back().map_err(spill_error)?,
                buf: Vec::new(),
            };
            if let Some(record) = file.advance()? {
                rows.next.push(Reverse((record, i)));
            }
            rows.files.push(file);
        }
        Ok(rows)
    }

    /// The next row; `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let Some(Reverse((_, i))) = self.next.pop() else {
            return Ok(None);
        };
        let file = &mut self.files[i];
        let row = Row::decode(&file.buf).ok_or_else(not_a_row)?;
        if let Some(record) = file.advance()? {
            self.next.push(Reverse((record, i)));
        }
        Ok(Some(row))
    }
}
