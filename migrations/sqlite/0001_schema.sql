-- The ledger of runs, the traits it maintains, and the rejected records of each run.
-- Dates and times are text: YYYY-MM-DD for dates, RFC 3339 UTC for instants.

CREATE TABLE sync_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connector     TEXT    NOT NULL,
    "trigger"     TEXT    NOT NULL,
    scheduled_for TEXT,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    outcome       TEXT    NOT NULL,
    object_key    TEXT,
    object_etag   TEXT,
    object_sha256 TEXT,
    rows_read     INTEGER NOT NULL DEFAULT 0,
    rows_valid    INTEGER NOT NULL DEFAULT 0,
    rows_rejected INTEGER NOT NULL DEFAULT 0,
    inserted      INTEGER NOT NULL DEFAULT 0,
    updated       INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    removed       INTEGER NOT NULL DEFAULT 0,
    message       TEXT
);

CREATE INDEX sync_runs_by_connector ON sync_runs (connector, id);

CREATE TABLE subscription_traits (
    connector           TEXT    NOT NULL,
    email               TEXT    NOT NULL,
    offer_id            TEXT    NOT NULL,
    expiry_date         TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    payment_method_id   INTEGER NOT NULL,
    external_id         TEXT,
    external_properties TEXT,
    season_index        INTEGER,
    coupon_code         TEXT,
    campaign_name       TEXT,
    coupon_uses         INTEGER,
    extra               TEXT,
    row_hash            TEXT    NOT NULL,
    first_seen_run      INTEGER NOT NULL REFERENCES sync_runs (id),
    changed_run         INTEGER NOT NULL REFERENCES sync_runs (id),
    removed_run         INTEGER REFERENCES sync_runs (id),
    updated_at          TEXT    NOT NULL,
    PRIMARY KEY (connector, email)
) WITHOUT ROWID;

CREATE TABLE sync_rejections (
    run_id   INTEGER NOT NULL REFERENCES sync_runs (id),
    record   INTEGER NOT NULL,
    "column" TEXT    NOT NULL,
    reason   TEXT    NOT NULL,
    value    TEXT
);

CREATE INDEX sync_rejections_by_run ON sync_rejections (run_id, record);
