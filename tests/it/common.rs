//! The harness: LocalStack buckets, exports built from numbered subscribers, the
//! binary run as a user would, and a look into the resulting store.

#![allow(dead_code)]

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use cleeng_sync::run::{Rejection, RunRecord};
use cleeng_sync::store::{Opened, StoredTraits};
use cleeng_sync::with_store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const LOCALSTACK: &str = "http://127.0.0.1:4566";

/// The header in snake_case, in template order.
pub const HEADER: &str = "email,offer_id,expiry_date,status,payment_method_id,external_id,\
external_properties,season_index,coupon_code,campaign_name,coupon_uses";

/// A valid row for subscriber `i`, with every optional field filled and an expiry
/// date far in the future.
pub fn row(i: u32) -> String {
    format!(
        "user{i}@example.com,S{i:09}_PL,2099-{:02}-{:02},{},{},ext-{i},\"{{\"\"tier\"\":\"\"t{i}\"\"}}\",{},COUPON{i},Campaign {i},{}",
        1 + i % 12,
        1 + i % 28,
        if i.is_multiple_of(2) {
            "active"
        } else {
            "stopped"
        },
        100 + i,
        1 + i % 3,
        i % 4
    )
}

/// An export: the header and the given rows, LF line ends.
pub fn csv(rows: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out
}

/// Rows for subscribers `range`.
pub fn rows(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(row).collect()
}

/// A bucket of its own in LocalStack, for one test.
pub struct Bucket {
    pub client: Client,
    pub name: String,
}

impl Bucket {
    pub async fn new() -> Bucket {
        static N: AtomicU32 = AtomicU32::new(0);
        let reachable = localstack_answers();
        assert!(
            reachable,
            "LocalStack is not answering on {LOCALSTACK}: start it with `localstack/run.sh start` \
             (the test script does this)"
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-west-2"))
            .endpoint_url(LOCALSTACK)
            .force_path_style(true)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        let client = Client::from_conf(config);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "t{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        client
            .create_bucket()
            .bucket(&name)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
                    .build(),
            )
            .send()
            .await
            .expect("create bucket in LocalStack");
        Bucket { client, name }
    }

    pub async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .expect("put object in LocalStack");
    }

    /// Uploads in parts of `part_size` bytes (at least 5 MiB but the last) with CRC32
    /// checksums, as boto3 and most uploaders do above 8 MiB: the object's checksum is
    /// then composite, one per part (`...-3`), and its ETag ends in the part count.
    pub async fn put_multipart(&self, key: &str, body: &[u8], part_size: usize) {
        use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .expect("create a multipart upload in LocalStack");
        let id = upload.upload_id().expect("an upload id");
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(part_size).enumerate() {
            let number = i as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.name)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .expect("upload a part to LocalStack");
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .set_checksum_crc32(part.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .expect("complete the multipart upload in LocalStack");
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }
}

fn localstack_answers() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4566".parse().expect("address"),
        std::time::Duration::from_secs(2),
    )
    .is_ok()
}

/// Runs a command to its end and keeps what it did.
pub fn output(mut command: Command) -> Output {
    let out = command.output().expect("run cleeng-sync");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sets a file's modification time: a folder export's LastModified.
pub fn written_at(path: &Path, at: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .expect("set the export's modification time");
}

/// What the binary did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stdout lines, each parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{self:?}"))
            })
            .collect()
    }

    /// The single JSON object printed.
    pub fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "{self:?}");
        lines.remove(0)
    }
}

/// A scratch directory with a store of its own, and the binary pointed at LocalStack.
///
/// The store is a SQLite file in the directory, or with `CLEENG_SYNC_TEST_STORE=postgres`
/// a fresh PostgreSQL database (dropped afterwards), so that the same tests run against
/// both stores.
pub struct Env {
    pub dir: tempfile::TempDir,
    store_url: String,
    database: Option<String>,
    /// Environment variables every command of this env is started with.
    vars: Vec<(&'static str, String)>,
}

/// The server the PostgreSQL tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Whether this pass of the suite runs against PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("CLEENG_SYNC_TEST_STORE").is_ok_and(|v| v == "postgres")
}

impl Env {
    pub fn new() -> Env {
        if on_postgres() {
            Env::postgres()
        } else {
            Env::sqlite()
        }
    }

    /// An env on a SQLite file.
    pub fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let store_url = format!("sqlite://{}", dir.path().join("traits.db").display());
        Env {
            dir,
            store_url,
            database: None,
            vars: Vec::new(),
        }
    }

    /// An env on a fresh PostgreSQL database.
    pub fn postgres() -> Env {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "cleeng_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(format!("CREATE DATABASE {name}"));
        let admin_url = postgres_admin_url();
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            store_url: format!("{server}/{name}"),
            database: Some(name),
            vars: Vec::new(),
        }
    }

    pub fn store_url(&self) -> String {
        self.store_url.clone()
    }

    /// Gives the store URL a password (PostgreSQL's trust auth ignores it): every
    /// command of this env then carries a secret in its store URL.
    pub fn with_password(mut self, password: &str) -> Env {
        assert!(self.database.is_some(), "a PostgreSQL env");
        let (scheme, rest) = self.store_url.split_once("://").expect("a URL");
        let (user, host) = rest.split_once('@').expect("a user in the URL");
        let user = user.split(':').next().unwrap_or(user);
        self.store_url = format!("{scheme}://{user}:{password}@{host}");
        self
    }

    /// Starts every command of this env with this environment variable set.
    pub fn with_var(mut self, name: &'static str, value: impl Into<String>) -> Env {
        self.vars.push((name, value.into()));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cleeng-sync` with these arguments, as a user would start it here: the store
    /// is this env's unless the arguments name one, AWS points at LocalStack.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cleeng-sync"));
        command
            .args(args)
            .env_remove("CLEENG_SYNC_CONFIG")
            .env_remove("CLEENG_SYNC_SOURCE")
            .env_remove("CLEENG_SYNC_SERVER_TOKEN")
            .env_remove("CLEENG_SYNC_PUBLISHER_TOKEN")
            .env("CLEENG_SYNC_STORE", self.store_url())
            .env("AWS_ENDPOINT_URL", LOCALSTACK)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-west-2")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .envs(self.vars.iter().map(|(name, value)| (name, value)))
            .current_dir(self.dir.path());
        command
    }

    /// Runs `cleeng-sync` with these arguments to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        output(self.command(args))
    }

    /// `sync --json` of a source; returns the one report.
    pub fn sync(&self, source: &str, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["sync", "--source", source, "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let code = out.code;
        (code, out.json())
    }

    pub async fn store(&self) -> Opened {
        cleeng_sync::store::open(&self.store_url)
            .await
            .expect("open store")
    }

    /// Subscribers of the default connector present in the store.
    pub async fn present(&self) -> u64 {
        with_store!(self.store().await, s => s.present("default").await).expect("count")
    }

    /// One stored subscriber of the default connector.
    pub async fn traits(&self, email: &str) -> Option<StoredTraits> {
        with_store!(self.store().await, s => s.traits("default", email).await).expect("read traits")
    }

    /// The newest runs in the ledger.
    pub async fn runs(&self, limit: u32) -> Vec<RunRecord> {
        with_store!(self.store().await, s => s.runs(None, limit).await).expect("runs")
    }

    /// A run's stored rejections.
    pub async fn rejections(&self, run_id: i64) -> Vec<Rejection> {
        with_store!(self.store().await, s => s.rejections(run_id).await).expect("rejections")
    }

    /// Everything the store holds of the actions' ledger, as text (for a secret's search).
    pub async fn store_dump(&self) -> String {
        if self.database.is_none() {
            let mut text = String::new();
            for suffix in ["", "-wal"] {
                let path = self.path(&format!("traits.db{suffix}"));
                if let Ok(bytes) = std::fs::read(&path) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            assert!(text.contains("cleeng_actions"), "the SQLite file was read");
            return text;
        }
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.store_url)
            .await
            .expect("connect");
        let row = sqlx::query(
            "SELECT COALESCE(string_agg(row_to_json(a)::text, E'\\n'), '')
               || COALESCE((SELECT string_agg(row_to_json(e)::text, E'\\n') FROM cleeng_events e), '')
               AS dump FROM cleeng_actions a",
        )
        .fetch_one(&mut conn)
        .await
        .expect("dump");
        row.get::<String, _>("dump")
    }

    pub fn write(&self, name: &str, body: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, body).expect("write file");
        path
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(name) = self.database.take() {
            admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs one statement on the PostgreSQL server as its administrator, from any context
/// (a thread of its own, so that it also works inside a test's runtime and in drop).
fn admin(statement: String) {
    let url = postgres_admin_url();
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not answering at {url} ({e}): start it, or set DATABASE_URL \
                     to a server where this user may create databases"
                )
            });
            conn.execute(statement.as_str())
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        })
    })
    .join();
    if let Err(panic) = done {
        std::panic::resume_unwind(panic);
    }
}

/// The counts of a report as `[read, valid, rejected]` and
/// `[inserted, updated, unchanged, removed]`.
pub fn counts(report: &Value) -> ([u64; 3], [u64; 4]) {
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    let rows = &report["rows"];
    let changes = &report["changes"];
    (
        [n(&rows["read"]), n(&rows["valid"]), n(&rows["rejected"])],
        [
            n(&changes["inserted"]),
            n(&changes["updated"]),
            n(&changes["unchanged"]),
            n(&changes["removed"]),
        ],
    )
}

/// gzip-compresses bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A folder path as a `--source`.
pub fn folder(path: &Path) -> String {
    path.display().to_string()
}

/// A run's exit code and outcome, to compare in one assertion.
pub fn outcome(code: i32, report: &Value) -> (i32, &str) {
    (code, report["outcome"].as_str().unwrap_or("<no outcome>"))
}

/// Checks an OpenAPI document with openapi-spec-validator (PyPI), which the test script
/// installs into its tools venv (`OPENAPI_SPEC_VALIDATOR` names another binary).
pub fn validate_openapi(path: &Path) {
    let validator = std::env::var("OPENAPI_SPEC_VALIDATOR").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/cleeng-sync/deploy-venv/bin/openapi-spec-validator")
    });
    let out = Command::new(&validator)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {validator} ({e}): scripts/test.sh installs it (scripts/check-deploy.sh)")
        });
    assert!(
        out.status.success(),
        "{} is not valid OpenAPI:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
