//! The streaming reader: bytes in, checked records out, with the content's digest
//! computed on the way. Memory stays flat whatever the size of the export.

use super::check::{Checked, check_record};
use super::header::{Field, HeaderError, HeaderMap};
use super::rules::Rules;
use async_compression::tokio::bufread::GzipDecoder;
use csv_async::{AsyncReader, AsyncReaderBuilder, ByteRecord};
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, BufReader, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// Records per batch handed from the reading task to its consumer.
const BATCH: usize = 1024;
/// Batches read ahead of the consumer: enough to keep both busy, few enough that
/// memory stays flat (a few thousand rows).
const BATCHES_AHEAD: usize = 4;

/// Why an export could not be read to the end.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Not even a header line.
    #[error("the export is empty: it has no header line")]
    Empty,
    /// The header does not match the template.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The body failed or was cut (network, gzip, disk).
    #[error("reading the export failed after {bytes} bytes: {source}")]
    Read {
        /// Bytes of the body received before the failure.
        bytes: u64,
        /// The underlying failure.
        source: io::Error,
    },
}

/// What was read: the size and SHA-256 of the CSV content (decompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// Hex SHA-256 of the CSV content.
    pub sha256: String,
    /// Bytes of CSV content.
    pub content_bytes: u64,
    /// Bytes of the body as delivered (compressed size for gzip).
    pub body_bytes: u64,
}

type Body = Box<dyn AsyncRead + Send + Unpin>;

/// Reads an export record by record.
pub struct ExportReader {
    csv: AsyncReader<Tap<Body, Digest>>,
    header: HeaderMap,
    rules: Rules,
    record: ByteRecord,
    number: u64,
    body_bytes: Arc<AtomicU64>,
}

impl ExportReader {
    /// Starts reading `body` (gzip-compressed when `gzip`) and maps its header.
    pub async fn open(
        body: impl AsyncRead + Send + Unpin + 'static,
        gzip: bool,
        columns: &BTreeMap<Field, String>,
        rules: Rules,
    ) -> Result<ExportReader, ExportError> {
        let body_bytes = Arc::new(AtomicU64::new(0));
        let counted = Tap {
            inner: body,
            observer: ByteCount(body_bytes.clone()),
        };
        let content: Body = if gzip {
            let mut decoder = GzipDecoder::new(BufReader::with_capacity(64 * 1024, counted));
            decoder.multiple_members(true);
            Box::new(decoder)
        } else {
            Box::new(counted)
        };
        let digesting = Tap {
            inner: content,
            observer: Digest {
                hasher: ring::digest::Context::new(&ring::digest::SHA256),
                bytes: 0,
            },
        };
        let mut csv = AsyncReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .create_reader(digesting);
        let mut first = ByteRecord::new();
        let read = csv
            .read_byte_record(&mut first)
            .await
            .map_err(|e| ExportError::Read {
                bytes: body_bytes.load(Ordering::Relaxed),
                source: e.into(),
            })?;
        if !read {
            return Err(ExportError::Empty);
        }
        let header = HeaderMap::new(first.iter(), columns)?;
        Ok(ExportReader {
            csv,
            header,
            rules,
            record: ByteRecord::new(),
            number: 1,
            body_bytes,
        })
    }

    /// The next data record, checked; `None` at the end of the export.
    pub async fn next(&mut self) -> Result<Option<Checked>, ExportError> {
        // Blank lines are no records: the csv reader skips them, and they are not counted.
        let more = self
            .csv
            .read_byte_record(&mut self.record)
            .await
            .map_err(|e| ExportError::Read {
                bytes: self.body_bytes(),
                source: e.into(),
            })?;
        if !more {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some(check_record(
            &self.header,
            &self.record,
            self.number,
            &self.rules,
        )))
    }

    /// The header mapping of this export.
    pub fn header(&self) -> &HeaderMap {
        &self.header
    }

    /// Bytes of the body received so far (for progress).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::Relaxed)
    }

    /// Ends the read and returns the digest of everything read.
    pub fn finish(self) -> ContentDigest {
        let body_bytes = self.body_bytes();
        let digest = self.csv.into_inner().observer;
        ContentDigest {
            sha256: hex::encode(digest.hasher.finish()),
            content_bytes: digest.bytes,
            body_bytes,
        }
    }
}

impl ExportReader {
    /// Moves the reading, parsing and checking to a task of its own, so that they run
    /// on one core while the consumer (the store) works on another.
    pub fn read_ahead(mut self) -> ReadAhead {
        let (sender, batches) = mpsc::channel(BATCHES_AHEAD);
        let task = tokio::spawn(async move {
            loop {
                let mut records = Vec::with_capacity(BATCH);
                let mut failure = None;
                while records.len() < BATCH {
                    match self.next().await {
                        Ok(Some(checked)) => records.push(checked),
                        Ok(None) => break,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                let last = failure.is_some() || records.len() < BATCH;
                let batch = Batch {
                    records,
                    body_bytes: self.body_bytes(),
                };
                // A consumer that stopped listening has given up: so does the reader.
                if sender.send(Ok(batch)).await.is_err() {
                    return None;
                }
                if let Some(e) = failure {
                    let _ = sender.send(Err(e)).await;
                    return None;
                }
                if last {
                    return Some(self.finish());
                }
            }
        });
        ReadAhead {
            batches,
            task: AbortOnDropHandle::new(task),
        }
    }
}

/// Checked records in the order of the export, with how far the body was read.
pub struct Batch {
    /// The records, in order.
    pub records: Vec<Checked>,
    /// Bytes of the body received when the batch was complete (for progress).
    pub body_bytes: u64,
}

/// An export being read ahead on its own task ([`ExportReader::read_ahead`]).
/// Dropping it stops the reading.
pub struct ReadAhead {
    batches: mpsc::Receiver<Result<Batch, ExportError>>,
    task: AbortOnDropHandle<Option<ContentDigest>>,
}

impl ReadAhead {
    /// The next batch; `None` once the export has been read to the end.
    pub async fn next(&mut self) -> Result<Option<Batch>, ExportError> {
        self.batches.recv().await.transpose()
    }

    /// The digest of everything read, once [`ReadAhead::next`] has returned `None`.
    pub async fn finish(self) -> Result<ContentDigest, ExportError> {
        match self.task.await {
            Ok(Some(digest)) => Ok(digest),
            // The task ends without a digest only after sending an error, which
            // `next` has returned already; a panic is reported the same way.
            Ok(None) | Err(_) => Err(ExportError::Read {
                bytes: 0,
                source: io::Error::other("the export reader stopped before the end"),
            }),
        }
    }
}

/// Sees every byte that passes through a [`Tap`].
trait Observer: Unpin {
    fn observe(&mut self, bytes: &[u8]);
}

/// A reader that shows what it reads to an observer, on the way to the parser.
struct Tap<R, O> {
    inner: R,
    observer: O,
}

impl<R: AsyncRead + Unpin, O: Observer> AsyncRead for Tap<R, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.observer.observe(&buf.filled()[before..]);
        poll
    }
}

/// Counts the bytes of the body as delivered, readable from outside for progress.
struct ByteCount(Arc<AtomicU64>);

impl Observer for ByteCount {
    fn observe(&mut self, bytes: &[u8]) {
        self.0.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}

/// Hashes the CSV content as the parser consumes it, so that change detection costs
/// no second pass.
struct Digest {
    /// ring's SHA-256: about twice the portable code's speed without SHA extensions.
    hasher: ring::digest::Context,
    bytes: u64,
}

impl Observer for Digest {
    fn observe(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.hasher.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const CSV: &str = "\u{feff}User email*,Offer ID*,Expiry date*,Status*,Payment method ID (will be used also for payment gateway)*,Campaign name\r\n\
        a@x.io,S123456789_PL,2099-01-01,active,1,\"Winter, \"\"big\"\" sale\"\r\n\
        \r\n\
        b@x.io,S123456789_PL,2099-01-01,stopped,2,\r\n";

    fn rules() -> Rules {
        Rules::new(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
    }

    async fn read_all(body: Vec<u8>, gzip: bool) -> (Vec<Checked>, ContentDigest) {
        let mut reader =
            ExportReader::open(std::io::Cursor::new(body), gzip, &BTreeMap::new(), rules())
                .await
                .unwrap();
        let mut out = vec![];
        while let Some(c) = reader.next().await.unwrap() {
            out.push(c);
        }
        (out, reader.finish())
    }

    #[tokio::test]
    async fn reads_bom_crlf_and_quoted_fields() {
        let (records, digest) = read_all(CSV.as_bytes().to_vec(), false).await;
        assert_eq!(records.len(), 2);
        let Checked::Valid(row, _) = &records[0] else {
            panic!("{:?}", records[0])
        };
        assert_eq!(row.campaign_name(), Some("Winter, \"big\" sale"));
        let Checked::Valid(row, _) = &records[1] else {
            panic!("{:?}", records[1])
        };
        assert_eq!(row.record, 3, "a blank line is not a record");
        assert_eq!(digest.content_bytes, CSV.len() as u64);
    }

    #[tokio::test]
    async fn gzip_gives_the_same_records_and_digest() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(CSV.as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();
        let plain = read_all(CSV.as_bytes().to_vec(), false).await;
        let unzipped = read_all(compressed.clone(), true).await;
        assert_eq!(plain.0, unzipped.0);
        assert_eq!(plain.1.sha256, unzipped.1.sha256);
        assert_eq!(unzipped.1.body_bytes, compressed.len() as u64);
    }

    #[tokio::test]
    async fn a_cut_gzip_body_is_an_error() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(CSV.repeat(100).as_bytes()).unwrap();
        let mut compressed = gz.finish().unwrap();
        compressed.truncate(compressed.len() / 2);
        let mut reader = ExportReader::open(
            std::io::Cursor::new(compressed),
            true,
            &BTreeMap::new(),
            rules(),
        )
        .await
        .unwrap();
        let mut failed = false;
        loop {
            match reader.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(ExportError::Read { .. }) => {
                    failed = true;
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            failed,
            "a truncated gzip stream must not read as a complete export"
        );
    }

    #[tokio::test]
    async fn an_empty_body_has_no_header() {
        let err = ExportReader::open(
            std::io::Cursor::new(Vec::new()),
            false,
            &BTreeMap::new(),
            rules(),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, ExportError::Empty));
    }
}
