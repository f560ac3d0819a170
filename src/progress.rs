//! Telling a person at a terminal how far a run is.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Receives progress from a run. The sync calls it every few thousand rows, so an
/// implementation may be slow-ish but must not block.
pub trait Progress: Send + Sync {
    /// A download of `size` bytes (as stored) starts.
    fn start(&self, _key: &str, _size: u64) {}
    /// So many body bytes and records have been read.
    fn advance(&self, _bytes: u64, _records: u64) {}
    /// The read is over (finished or failed).
    fn finish(&self) {}
}

/// No progress output (tests, `--json`, the daemon).
pub struct Silent;

impl Progress for Silent {}

/// An indicatif bar on stderr: bytes and rows.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar when stderr is a terminal and output is for a person; `None` otherwise.
    pub fn for_terminal(json: bool) -> Option<Bar> {
        if json || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Some(Bar { bar })
    }
}

impl Progress for Bar {
    fn start(&self, key: &str, size: u64) {
        self.bar.set_length(size);
        self.bar.set_position(0);
        self.bar.set_message(key.to_string());
    }

    fn advance(&self, bytes: u64, records: u64) {
        self.bar.set_position(bytes);
        self.bar.set_prefix(format!("{records} rows"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
