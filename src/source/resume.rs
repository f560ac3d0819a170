//! A download that survives a cut: when the body fails or ends short of its size, the
//! rest is asked for again from where it stopped, a bounded number of times.
//!
//! The SDK retries a request only until its response headers arrive; a connection
//! reset or a stall half-way through a body is the caller's to handle. Resuming (rather
//! than starting over) keeps the bytes already parsed and hashed, so the reader above
//! never knows: it sees one continuous body or, once the attempts are spent, an error.

use super::object::{Body, SourceError};
use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::warn;

/// Opens the object again from a byte offset (`Range: bytes=N-`, pinned to the same
/// version of the object).
pub type Reopen = Box<dyn Fn(u64) -> BoxFuture<'static, Result<Body, SourceError>> + Send + Sync>;

/// The first pause before resuming; it doubles with each attempt (with jitter).
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// A body that resumes a cut transfer.
pub struct Resuming {
    key: String,
    size: u64,
    /// Bytes handed to the reader so far: where a resumed request starts.
    offset: u64,
    /// Resumptions used.
    resumed: u32,
    /// Resumptions allowed.
    attempts: u32,
    reopen: Reopen,
    state: State,
}

enum State {
    Reading(Body),
    Reopening(BoxFuture<'static, Result<Body, SourceError>>),
    /// A reopen failed for good; the error was returned.
    Failed,
}

impl Resuming {
    /// Wraps the first response's body of `key`, `size` bytes long; `attempts`
    /// resumptions are allowed.
    pub fn new(key: &str, size: u64, first: Body, attempts: u32, reopen: Reopen) -> Resuming {
        Resuming {
            key: key.to_string(),
            size,
            offset: 0,
            resumed: 0,
            attempts,
            reopen,
            state: State::Reading(first),
        }
    }

    /// After a failure: schedules a resumption, or gives up with the failure.
    fn resume_or_fail(&mut self, failure: io::Error) -> Result<(), io::Error> {
        let reason = causes(&failure);
        if self.resumed >= self.attempts {
            self.state = State::Failed;
            return Err(io::Error::new(
                failure.kind(),
                format!(
                    "{reason} at byte {} of {} of {}, after resuming {} time(s) \
                     (connector.s3.resume_attempts)",
                    self.offset, self.size, self.key, self.resumed
                ),
            ));
        }
        self.resumed += 1;
        crate::metrics::download_resumed();
        warn!(
            object = %self.key, offset = self.offset, size = self.size, error = %reason,
            attempt = self.resumed, attempts = self.attempts,
            "download cut; resuming from where it stopped"
        );
        let pause = backoff(self.resumed);
        let reopen = (self.reopen)(self.offset);
        self.state = State::Reopening(Box::pin(async move {
            tokio::time::sleep(pause).await;
            reopen.await
        }));
        Ok(())
    }
}

impl AsyncRead for Resuming {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let failure = match &mut this.state {
                State::Failed => {
                    return Poll::Ready(Err(io::Error::other("the download failed already")));
                }
                State::Reopening(reopen) => match ready!(reopen.as_mut().poll(cx)) {
                    Ok(body) => {
                        this.state = State::Reading(body);
                        continue;
                    }
                    Err(e) => io::Error::other(e.to_string()),
                },
                State::Reading(body) => {
                    let before = buf.filled().len();
                    match ready!(Pin::new(body).poll_read(cx, buf)) {
                        Ok(()) => {
                            let n = (buf.filled().len() - before) as u64;
                            this.offset += n;
                            if n > 0 || this.offset >= this.size {
                                return Poll::Ready(Ok(()));
                            }
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the body ended at {} of {} bytes", this.offset, this.size),
                            )
                        }
                        Err(e) => e,
                    }
                }
            };
            this.resume_or_fail(failure)?;
        }
    }
}

/// An error and its causes on one line (the SDK's body error says only "streaming
/// error"; its cause says what happened).
fn causes(err: &io::Error) -> String {
    crate::error::one_line(err)
}

/// 200 ms, 400 ms, 800 ms... capped at 10 s, each with up to half again of jitter so
/// that replicas cut by the same outage do not come back in step.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let base = FIRST_PAUSE.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(10));
    let jitter = RandomState::new().hash_one(attempt) % 1000;
    base + base.mul_f64(jitter as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;

    /// A body of `bytes[from..]` that fails after `cut` bytes.
    fn cut_body(bytes: &'static [u8], from: usize, cut: Option<usize>) -> Body {
        let end = cut.map_or(bytes.len(), |c| (from + c).min(bytes.len()));
        let part = std::io::Cursor::new(&bytes[from..end]);
        match cut {
            Some(_) => Box::new(AsyncReadExt::chain(part, Failing)),
            None => Box::new(part),
        }
    }

    struct Failing;
    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )))
        }
    }

    const DATA: &[u8] = b"email,offer_id\nuser1@example.com,S1\nuser2@example.com,S2\n";

    /// Every response cut after `cut` bytes, `cuts` times, then whole; the offsets asked for.
    fn source(cut: usize, cuts: usize) -> (Reopen, Arc<Mutex<Vec<u64>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let reopen: Reopen = Box::new(move |from| {
            let mut asked = seen.lock().unwrap();
            asked.push(from);
            let body = cut_body(DATA, from as usize, (asked.len() < cuts).then_some(cut));
            Box::pin(async move { Ok(body) })
        });
        (reopen, asked)
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_body_resumes_where_it_stopped() {
        let (reopen, asked) = source(10, 2);
        let first = cut_body(DATA, 0, Some(10));
        let mut body = Resuming::new("k", DATA.len() as u64, first, 3, reopen);
        let mut out = Vec::new();
        body.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, DATA);
        assert_eq!(*asked.lock().unwrap(), vec![10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_body_is_resumed_too_and_the_attempts_are_bounded() {
        let (reopen, asked) = source(5, usize::MAX);
        let first: Body = Box::new(std::io::Cursor::new(&DATA[..5]));
        let mut body = Resuming::new("k", DATA.len() as u64, first, 2, reopen);
        let mut out = Vec::new();
        let err = body.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            err.to_string().contains("after resuming 2 time(s)"),
            "{err}"
        );
        assert_eq!(out, &DATA[..15]);
        assert_eq!(*asked.lock().unwrap(), vec![5, 10]);
    }

    #[test]
    fn pauses_grow_and_stay_bounded() {
        assert!(backoff(1) >= FIRST_PAUSE && backoff(1) <= FIRST_PAUSE * 2);
        assert!(backoff(3) >= FIRST_PAUSE * 4);
        assert!(backoff(30) <= Duration::from_secs(15));
    }
}
