//! Where each staged email's rows are, by a 64-bit hash of the email, on local disk: the
//! repeated-email check then reads the staged rows of its candidates by their ids, where
//! without it a backend reads every staged row to find them (1.2 s of a 5M first load on
//! SQLite, for a few thousand candidates that are nearly all the filter's false ones).
//!
//! A row id is noted with the hash of its email as the row is staged: 16 bytes a row,
//! in an anonymous file of the temporary directory like [`super::passes`]'s. Every row of
//! a candidate email has that email's hash, so reading the ids of the candidates' hashes
//! finds all of them; another email whose hash is the same only adds a row, which the
//! check, by email, leaves out. Without a file (none could be made, or writing one
//! failed) the backend reads every staged row, as before.

use super::spill::{Spill, spill_error};
use crate::store::error::Result;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;

/// The ids of staged rows, by the hash of their email.
pub struct StagedEmails {
    /// `None`: no file, or one that failed; the check reads every staged row.
    spill: Option<Spill>,
}

impl StagedEmails {
    /// An empty file, or none if the temporary directory takes no file.
    pub fn new() -> StagedEmails {
        let spill = Spill::new()
            .inspect_err(|e| tracing::debug!(error = %e, "staged emails are not noted"))
            .ok();
        StagedEmails { spill }
    }

    /// Notes that the staged row `id` has this email.
    pub fn note(&mut self, email: &str, id: u64) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&hash(email).to_le_bytes());
        entry[8..].copy_from_slice(&id.to_le_bytes());
        if let Err(e) = spill.write(&entry) {
            tracing::debug!(error = %e, "staged emails are no longer noted");
            self.spill = None;
        }
    }

    /// Stops noting: some rows were staged without a note, so the ids found would miss
    /// them; the check reads every staged row.
    pub fn forget(&mut self) {
        self.spill = None;
    }

    /// The ids of the rows staged with one of these emails (and perhaps a few more);
    /// `None` when they are not known, and every staged row is to be read.
    pub fn find(&mut self, candidates: &[String]) -> Result<Option<Vec<u64>>> {
        let Some(spill) = self.spill.take() else {
            return Ok(None);
        };
        let wanted: HashSet<u64> = candidates.iter().map(|email| hash(email)).collect();
        let mut from = spill.read_back().map_err(spill_error)?;
        let mut ids = Vec::new();
        let mut entry = [0u8; 16];
        loop {
            match from.read_exact(&mut entry) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(spill_error(e)),
            }
            let (email, id) = entry.split_at(8);
            if wanted.contains(&u64::from_le_bytes(email.try_into().unwrap_or_default())) {
                ids.push(u64::from_le_bytes(id.try_into().unwrap_or_default()));
            }
        }
        Ok(Some(ids))
    }
}

/// The email's hash: the same for the same email within the process.
fn hash(email: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    email.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_row_of_the_candidates_and_nothing_once_forgotten() {
        let mut emails = StagedEmails::new();
        for (id, email) in ["a@x.io", "b@x.io", "a@x.io", "c@x.io", "b@x.io"]
            .into_iter()
            .enumerate()
        {
            emails.note(email, id as u64);
        }
        let candidates = ["a@x.io".to_owned(), "z@x.io".to_owned()];
        assert_eq!(emails.find(&candidates).expect("read"), Some(vec![0, 2]));
        assert_eq!(emails.find(&candidates).expect("read"), None, "read once");

        let mut forgotten = StagedEmails::new();
        forgotten.note("a@x.io", 0);
        forgotten.forget();
        assert_eq!(forgotten.find(&candidates).expect("read"), None);
    }
}
