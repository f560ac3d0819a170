//! Downloads that fail or end early apply nothing, and the next healthy run applies.

use crate::common::*;
use cleeng_sync::clock::SystemClock;
use cleeng_sync::config::Connector;
use cleeng_sync::progress::Silent;
use cleeng_sync::run::{Outcome, RunReport};
use cleeng_sync::source::{Body, FolderSource, ObjectMeta, Source, SourceError};
use cleeng_sync::store::{Backend, Store};
use cleeng_sync::sync::{Job, RunOptions};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// How a body misbehaves after `after` bytes.
#[derive(Clone, Copy)]
enum Fault {
    /// The connection resets.
    Error,
    /// The body just ends, short of its size.
    Eof,
}

/// A folder source whose bodies misbehave.
struct Faulty {
    inner: FolderSource,
    after: usize,
    fault: Fault,
}

impl Source for Faulty {
    async fn list(&self) -> Result<Vec<ObjectMeta>, SourceError> {
        self.inner.list().await
    }

    async fn open(&self, object: &ObjectMeta) -> Result<Body, SourceError> {
        Ok(Box::new(Cut {
            inner: self.inner.open(object).await?,
            left: self.after,
            fault: self.fault,
        }))
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

struct Cut {
    inner: Body,
    left: usize,
    fault: Fault,
}

impl AsyncRead for Cut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return match self.fault {
                Fault::Error => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                ))),
                Fault::Eof => Poll::Ready(Ok(())),
            };
        }
        let mut chunk = vec![0u8; self.left.min(buf.remaining())];
        let mut limited = ReadBuf::new(&mut chunk);
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.put_slice(limited.filled());
        self.left -= n;
        poll
    }
}

fn connector(dir: &std::path::Path) -> Connector {
    Connector::new(
        "default",
        &dir.display().to_string(),
        chrono_tz::America::Los_Angeles,
    )
}

async fn run_with<S: Source>(env: &Env, source: &S) -> RunReport {
    cleeng_sync::with_store!(env.store().await, store => run_on(&store, env, source).await)
}

async fn run_on<B: Backend, S: Source>(store: &Store<B>, env: &Env, source: &S) -> RunReport {
    let connector = connector(&env.path("exports"));
    let job = Job {
        store,
        source,
        connector: &connector,
        clock: &SystemClock,
        progress: &Silent,
    };
    let mut reports = job
        .run(&RunOptions::default())
        .await
        .expect("ledger writable");
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[tokio::test]
async fn a_body_that_fails_or_ends_early_applies_nothing() {
    let env = Env::new();
    env.write("exports/old.csv", csv(rows(1..101)));
    let (_, first) = env.sync(&folder(&env.path("exports")), &[]);
    assert_eq!(first["outcome"], "applied");
    let before = env.traits("user50@example.com").await.unwrap();

    std::fs::remove_file(env.path("exports/old.csv")).unwrap();
    let mut changed: Vec<String> = rows(1..101)
        .into_iter()
        .map(|r| r.replace("COUPON", "NEW"))
        .collect();
    changed.push(row(500));
    let body = csv(changed);
    env.write("exports/new.csv", &body);

    for fault in [Fault::Error, Fault::Eof] {
        let faulty = Faulty {
            inner: FolderSource::new(env.path("exports")),
            after: body.len() / 2,
            fault,
        };
        let report = run_with(&env, &faulty).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        let message = report.message.unwrap_or_default();
        assert!(
            message.contains("new.csv") || message.contains("bytes"),
            "{message}"
        );
        assert_eq!(
            env.traits("user50@example.com").await.unwrap(),
            before,
            "nothing applied"
        );
        assert_eq!(env.traits("user500@example.com").await, None);
    }
    let runs = env.runs(10).await;
    assert_eq!(runs[0].report.outcome, Outcome::Failed);
    assert!(runs[0].finished_at.is_some());

    let healthy = run_with(&env, &FolderSource::new(env.path("exports"))).await;
    assert_eq!(healthy.outcome, Outcome::Applied, "{healthy:?}");
    assert_eq!(
        env.traits("user50@example.com")
            .await
            .unwrap()
            .coupon_code
            .as_deref(),
        Some("NEW50")
    );
}

#[tokio::test]
async fn an_unreachable_source_fails_the_run_with_where() {
    let env = Env::new();
    let out = env.run(&["sync", "--source", &folder(&env.path("missing")), "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let report = out.json();
    assert_eq!(report["outcome"], "failed");
    assert!(
        report["message"].as_str().unwrap().contains("missing"),
        "{report}"
    );
}

/// Every row a run writes refers to the run's own row in the ledger: an apply for a
/// run that is not there fails and writes nothing, whatever the store enforces per row.
#[tokio::test]
async fn an_apply_for_a_run_missing_from_the_ledger_writes_nothing() {
    use cleeng_sync::export::{Checked, ExportReader, Rules};
    use cleeng_sync::run::{ChangeCounts, Mode, RowCounts};
    let env = Env::new();
    let csv =
        format!("{HEADER}\nmissing-run@example.com,S123456789_PL,2099-01-01,active,1,,,,,,\n");
    let rules = Rules::new(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date"));
    let mut reader = ExportReader::open(
        std::io::Cursor::new(csv.into_bytes()),
        false,
        &Default::default(),
        rules,
    )
    .await
    .expect("header");
    let Some(Checked::Valid(row, _)) = reader.next().await.expect("a record") else {
        panic!("the record is valid");
    };

    cleeng_sync::with_store!(env.store().await, store => {
    let mut staging = store.staging("default", 0, None).await.expect("staging");
    staging.add_valid(row).await.expect("staged");
    let plan = staging.plan(Mode::Snapshot).await.expect("plan");
    assert_eq!(plan.changes.inserted, 1);
    let report = RunReport {
        run_id: 424_242,
        connector: "default".into(),
        outcome: Outcome::Applied,
        object: None,
        rows: RowCounts {
            read: 1,
            valid: 1,
            ..RowCounts::default()
        },
        changes: ChangeCounts {
            inserted: 1,
            ..ChangeCounts::default()
        },
        planned: None,
        warnings: Default::default(),
        duration_ms: 0,
        message: None,
    };
    let applied = staging.apply(&report, &[], &SystemClock).await;
    assert!(applied.is_err(), "applied for a run the ledger lacks");
    });
    assert_eq!(env.traits("missing-run@example.com").await, None);
    assert_eq!(env.present().await, 0);
}
