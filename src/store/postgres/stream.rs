//! The run's PostgreSQL session while rows stream: one `COPY ... FROM STDIN` fed by a
//! task of its own, so that the server ingests one chunk while the next is parsed, and
//! the session given back when the COPY ends.

use crate::store::error::{Result, StoreError};
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// Chunks waiting for the COPY task: bounded, so memory stays flat when the server is
/// slower than the parser.
const COPY_CHUNKS_AHEAD: usize = 4;

/// Where the staging session is.
pub(super) enum Session {
    /// Rows are streaming: chunks go to the task that owns the session and its COPY.
    Copying {
        chunks: mpsc::Sender<Vec<u8>>,
        task: AbortOnDropHandle<Result<(PgConnection, u64)>>,
    },
    /// No COPY is running: statements run on the session.
    Ready(PgConnection),
    /// The COPY task failed (its error was returned once).
    Lost,
}

impl Session {
    /// Starts `copy` (a `COPY ... FROM STDIN`) on the session, fed by a task.
    pub(super) fn copy(mut conn: PgConnection, copy: String) -> Session {
        let (chunks, mut incoming) = mpsc::channel::<Vec<u8>>(COPY_CHUNKS_AHEAD);
        let task = tokio::spawn(async move {
            let mut stream = conn.copy_in_raw(&copy).await?;
            while let Some(chunk) = incoming.recv().await {
                if let Err(e) = stream.send(chunk).await {
                    // Ends the COPY before the session is dropped with it.
                    let _ = stream.abort("the staging stream failed").await;
                    return Err(e.into());
                }
            }
            let rows = stream.finish().await?;
            Ok((conn, rows))
        });
        Session::Copying {
            chunks,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Hands a chunk to the COPY task; `false` if it stopped taking them (it failed:
    /// [`Session::finish`] says why).
    pub(super) async fn send(&self, chunk: Vec<u8>) -> Result<bool> {
        match self {
            Session::Copying { chunks, .. } => Ok(chunks.send(chunk).await.is_ok()),
            Session::Ready(_) => Err(StoreError::Bug(
                "rows were staged after the stream of rows had ended".into(),
            )),
            Session::Lost => Ok(false),
        }
    }

    /// Ends the COPY, if one runs: the rows it wrote (0 if none ran).
    pub(super) async fn finish(&mut self) -> Result<u64> {
        // Left `Lost` if the COPY task failed: its error is returned once, here.
        let mut rows = 0;
        *self = match std::mem::replace(self, Session::Lost) {
            Session::Copying { chunks, task } => {
                // No more chunks: the task finishes the COPY and gives the session back.
                drop(chunks);
                let finished = task.await.map_err(|e| {
                    StoreError::Interrupted(format!("the COPY of the run's rows stopped: {e}"))
                })?;
                let (conn, copied) = finished?;
                rows = copied;
                Session::Ready(conn)
            }
            other => other,
        };
        match self {
            Session::Ready(_) => Ok(rows),
            Session::Copying { .. } | Session::Lost => Err(StoreError::Interrupted(
                "the COPY of the run's rows failed earlier in this run".into(),
            )),
        }
    }

    /// The session, once every row is in.
    pub(super) async fn ready(&mut self) -> Result<&mut PgConnection> {
        self.finish().await?;
        match self {
            Session::Ready(conn) => Ok(conn),
            Session::Copying { .. } | Session::Lost => Err(StoreError::Interrupted(
                "the COPY of the run's rows failed earlier in this run".into(),
            )),
        }
    }

    /// Takes the session for a new COPY, once the last has ended.
    pub(super) async fn take(&mut self) -> Result<PgConnection> {
        self.finish().await?;
        match std::mem::replace(self, Session::Lost) {
            Session::Ready(conn) => Ok(conn),
            _ => Err(StoreError::Interrupted(
                "the COPY of the run's rows failed earlier in this run".into(),
            )),
        }
    }
}
