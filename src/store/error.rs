//! Why the store failed, told apart by what the caller should do about it: retry
//! (the server, the disk, another run), fix the configuration, or report a bug.

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store we support.
    #[error("unsupported store URL {0:?}: use sqlite://path.db or postgres://user@host/db")]
    BadUrl(String),
    /// Another run of the connector is in flight, in this process or another.
    #[error(
        "another run of connector {0:?} is in flight (in this or another process); nothing was done: try again when it has finished"
    )]
    Busy(String),
    /// The store could not be opened.
    #[error("cannot open the store {url}: {source}; {advice}")]
    Open {
        /// The URL, password removed.
        url: String,
        /// What to check, for this kind of store.
        advice: &'static str,
        /// What the driver said.
        source: sqlx::Error,
    },
    /// The run lock file next to a SQLite database could not be opened.
    #[error(
        "cannot open the run lock file {path}: {source}; the folder of the SQLite file must be writable"
    )]
    LockFile {
        /// The lock file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate the store {url}: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// What the migrator said.
        source: sqlx::migrate::MigrateError,
    },
    /// The stream of rows into staging stopped (the server went away mid-COPY, a task
    /// was cancelled): worth retrying.
    #[error("{0}; nothing was applied, the next run retries")]
    Interrupted(String),
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// Writing staged rows into SQLite's temporary tables failed.
    #[error(
        "writing the export's rows into SQLite's temporary tables failed: {0}; check the room \
         left where SQLite keeps temporary files (SQLITE_TMPDIR or TMPDIR, else /var/tmp)"
    )]
    Write(#[from] rusqlite::Error),
    /// A file of a run held in passes could not be written or read back.
    #[error(
        "writing or reading back a run's spill file in {dir} failed: {source}; nothing was \
         applied. Free space there, or point TMPDIR at a disk with room (a few hundred bytes \
         per subscriber), and the next run retries"
    )]
    Spill {
        /// The temporary directory.
        dir: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A store limit set in the environment is not a number.
    #[error(
        "{name}={value:?} is not a whole number: unset it, or set it as a count of subscribers"
    )]
    BadTuning {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Reading the stored row hashes through SQLite's own API failed.
    #[error(
        "reading the stored row hashes from the SQLite file failed: {0}; nothing was applied, the next run retries"
    )]
    Read(rusqlite::Error),
    /// A statement of the apply did not do what the plan said it would: the run is
    /// rolled back rather than applied on a count nobody checked.
    #[error(
        "the plan counted {planned} {kind} but the statement {kind} {done}; the run was rolled back \
         and nothing changed. This is a bug in cleeng-sync: please report it with this message"
    )]
    Miscount {
        /// Which change: `inserted`, `updated`, `removed`, `inserted or updated`.
        kind: &'static str,
        /// What the plan said.
        planned: u64,
        /// What the statement's rows affected said.
        done: u64,
    },
    /// The store's own bookkeeping broke one of its rules: retrying will not help.
    #[error(
        "{0}; nothing was applied. This is a bug in cleeng-sync: please report it with this message"
    )]
    Bug(String),
}

impl StoreError {
    /// Whether the error says cleeng-sync itself is wrong, not the world around it:
    /// the next run will meet it again.
    pub fn is_bug(&self) -> bool {
        matches!(self, StoreError::Miscount { .. } | StoreError::Bug(_))
    }
}

impl StoreError {
    /// How a failure to open the store at `url` is told (its password masked), with
    /// what to check for this kind of store.
    pub(in crate::store) fn opening(
        url: &str,
        advice: &'static str,
    ) -> impl Fn(sqlx::Error) -> StoreError {
        let url = crate::redact::redact_url(url);
        move |source| StoreError::Open {
            url: url.clone(),
            advice,
            source,
        }
    }
}

/// What the store's operations give: a value, or why the store failed.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
