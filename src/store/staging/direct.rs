//! A first load's rows, written into the traits as they are read (one write of each
//! row, where staging it and copying it in were two), with what the repeated-email
//! check needs kept on local disk.
//!
//! The traits keep one row per email, and a backend's bulk write (PostgreSQL's COPY,
//! SQLite's insert `OR FAIL`) fails whole on a second. So a valid row whose email the
//! filter may have seen before is put **aside**, whole, and staged once the rows written are in; every other valid
//! row is written. The check needs every record of an email that may repeat, and the
//! rows written have no record number in the traits: each is **noted** here by record
//! and email, as is each rejected row (which staging would have had), and read back
//! once the export is in. Only the notes of the emails the filter lists as candidates
//! (every one, when it listed too many) are then staged by email, and the check runs
//! exactly as on any run, taking back the row written of each repeated email. The
//! usual export repeats no email: nothing is put aside and the notes are never read.
//!
//! About 40 bytes a row (a record number, validity, an email and its length) in the
//! temporary directory, unlinked as soon as it is created, like the spill files of
//! [`super::passes`].

use super::repeats::RepeatCheck;
use super::spill::{Spill, SpilledRows, spill_error, write_row};
use crate::export::Row;
use crate::store::backend::{ByEmail, Stamp, Tables};
use crate::store::error::{Result, StoreError};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};

/// A first load's notes and the rows it put aside.
pub struct Direct {
    notes: Spill,
    /// Valid rows of emails that may repeat ([`write_row`]).
    aside: Spill,
    /// A row's bytes, reused.
    buf: Vec<u8>,
}

/// A noted row: its record, whether it was valid (and written), and its email.
pub type Note = (u64, bool, String);

impl Direct {
    /// Empty files.
    pub fn new() -> Result<Direct> {
        Ok(Direct {
            notes: Spill::new().map_err(spill_error)?,
            aside: Spill::new().map_err(spill_error)?,
            buf: Vec::new(),
        })
    }

    /// Notes a row written into the traits (`valid`), or a rejected one.
    pub fn note(&mut self, record: u64, valid: bool, email: &str) -> Result<()> {
        // An email is a cell of one CSV record: its length fits in 31 bits.
        let len = u32::try_from(email.len()).unwrap_or(u32::MAX >> 1) | (u32::from(valid) << 31);
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&record.to_le_bytes());
        head[8..].copy_from_slice(&len.to_le_bytes());
        self.notes
            .write(&head)
            .and_then(|()| self.notes.write(email.as_bytes()))
            .map_err(spill_error)
    }

    /// Puts a valid row aside, to be staged once the rows written are in.
    pub fn put_aside(&mut self, row: &Row) -> Result<()> {
        write_row(&mut self.aside, &mut self.buf, row)
    }

    /// Stages the rows put aside, now that the rows written are in, and the notes of
    /// the emails that may repeat by email (a row written: valid, and not to be applied
    /// again), for the repeated-email check.
    pub async fn stage(self, tables: &mut impl Tables, check: &RepeatCheck) -> Result<()> {
        let mut aside = SpilledRows::of(self.aside)?;
        while let Some(row) = aside.next_row()? {
            tables.full(row).await?;
        }
        let mut notes = Notes::of(self.notes, check)?;
        while let Some((record, valid, email)) = notes.next_row()? {
            let kind = if valid {
                ByEmail::Marked
            } else {
                ByEmail::Rejected
            };
            tables.by_email(record, &email, kind).await?;
        }
        tables.flush().await
    }
}

/// Noted rows read back, those the check must see.
pub struct Notes<'a> {
    /// `None`: nothing to read.
    from: Option<BufReader<File>>,
    /// The candidates; `None`: every email.
    only: Option<HashSet<&'a str>>,
}

impl Notes<'_> {
    /// The notes written to `notes`, in order: those of the candidates, or all. Nothing
    /// is read when no email may repeat.
    fn of(notes: Spill, check: &RepeatCheck) -> Result<Notes<'_>> {
        let only = match check {
            RepeatCheck::None => {
                return Ok(Notes {
                    from: None,
                    only: None,
                });
            }
            RepeatCheck::Only(emails) => Some(emails.iter().map(String::as_str).collect()),
            RepeatCheck::All => None,
        };
        let from = notes.read_back().map_err(spill_error)?;
        Ok(Notes {
            from: Some(from),
            only,
        })
    }

    /// The next row to check; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Note>> {
        let Some(from) = self.from.as_mut() else {
            return Ok(None);
        };
        while let Some(note) = next_note(from).map_err(spill_error)? {
            if self
                .only
                .as_ref()
                .is_none_or(|only| only.contains(note.2.as_str()))
            {
                return Ok(Some(note));
            }
        }
        Ok(None)
    }
}

/// Reads one note; `None` at the end of the file.
fn next_note(from: &mut BufReader<File>) -> io::Result<Option<Note>> {
    let mut head = [0u8; 12];
    match from.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (record, len) = head.split_at(8);
    let record = u64::from_le_bytes(record.try_into().unwrap_or_default());
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default());
    let valid = len >> 31 == 1;
    let mut email = vec![0u8; (len & (u32::MAX >> 1)) as usize];
    from.read_exact(&mut email)?;
    let email = String::from_utf8(email)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a noted email is not UTF-8"))?;
    Ok(Some((record, valid, email)))
}

/// The rows a first load wrote straight into the traits that stay there: `written` of
/// them, stamped `first`, less the `undone` ones of repeated emails; checked against
/// the `stamp` of the run that applies them.
pub fn inserted(first: Stamp, stamp: Stamp, written: u64, undone: u64) -> Result<u64> {
    if first.run_id != stamp.run_id || stamp.record {
        return Err(StoreError::Bug(format!(
            "rows written into the traits as run {}'s first load, applied as run {}",
            first.run_id, stamp.run_id
        )));
    }
    written.checked_sub(undone).ok_or_else(|| {
        StoreError::Bug(format!(
            "{undone} rows taken back of {written} written into the traits"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(check: &RepeatCheck) -> Vec<Note> {
        let mut direct = Direct::new().unwrap();
        for (record, valid, email) in [
            (2, true, "a@x.io"),
            (3, false, "b@x.io"),
            (4, true, "é@x.io"),
            (5, false, "a@x.io"),
        ] {
            direct.note(record, valid, email).unwrap();
        }
        let mut notes = Notes::of(direct.notes, check).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = notes.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    #[test]
    fn reads_back_the_notes_of_the_candidates_of_every_email_or_none() {
        let only = RepeatCheck::Only(vec!["a@x.io".into(), "z@x.io".into()]);
        assert_eq!(
            read(&only),
            [
                (2, true, "a@x.io".to_string()),
                (5, false, "a@x.io".to_string())
            ]
        );
        let all = read(&RepeatCheck::All);
        assert_eq!(all.len(), 4);
        assert_eq!(all[2], (4, true, "é@x.io".to_string()));
        assert!(read(&RepeatCheck::None).is_empty());
    }
}
