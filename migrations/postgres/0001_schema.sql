-- The ledger of runs, the traits it maintains, the rejected records of each run, and
-- the daemons' claims on scheduled times. The same columns as the SQLite schema, with
-- PostgreSQL's types.

CREATE TABLE sync_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector     TEXT        NOT NULL,
    "trigger"     TEXT        NOT NULL,
    scheduled_for TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    outcome       TEXT        NOT NULL,
    object_key    TEXT,
    object_etag   TEXT,
    object_sha256 TEXT,
    rows_read     BIGINT      NOT NULL DEFAULT 0,
    rows_valid    BIGINT      NOT NULL DEFAULT 0,
    rows_rejected BIGINT      NOT NULL DEFAULT 0,
    inserted      BIGINT      NOT NULL DEFAULT 0,
    updated       BIGINT      NOT NULL DEFAULT 0,
    unchanged     BIGINT      NOT NULL DEFAULT 0,
    removed       BIGINT      NOT NULL DEFAULT 0,
    message       TEXT
);

CREATE INDEX sync_runs_by_connector ON sync_runs (connector, id);
CREATE INDEX sync_runs_by_schedule ON sync_runs (connector, scheduled_for) WHERE scheduled_for IS NOT NULL;

CREATE TABLE subscription_traits (
    connector           TEXT        NOT NULL,
    email               TEXT        NOT NULL,
    offer_id            TEXT        NOT NULL,
    expiry_date         DATE        NOT NULL,
    status              TEXT        NOT NULL,
    payment_method_id   BIGINT      NOT NULL,
    external_id         TEXT,
    external_properties JSONB,
    season_index        BIGINT,
    coupon_code         TEXT,
    campaign_name       TEXT,
    coupon_uses         BIGINT,
    extra               JSONB,
    row_hash            TEXT        NOT NULL,
    first_seen_run      BIGINT      NOT NULL REFERENCES sync_runs (id),
    changed_run         BIGINT      NOT NULL REFERENCES sync_runs (id),
    removed_run         BIGINT      REFERENCES sync_runs (id),
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (connector, email)
);

CREATE TABLE sync_rejections (
    run_id   BIGINT NOT NULL REFERENCES sync_runs (id),
    record   BIGINT NOT NULL,
    "column" TEXT   NOT NULL,
    reason   TEXT   NOT NULL,
    value    TEXT
);

CREATE INDEX sync_rejections_by_run ON sync_rejections (run_id, record);

-- Who runs which scheduled local time; see the SQLite schema.
CREATE TABLE schedule_claims (
    connector     TEXT        NOT NULL,
    scheduled_for TEXT        NOT NULL,
    holder        TEXT        NOT NULL,
    claimed_at    TIMESTAMPTZ NOT NULL,
    lease_until   TIMESTAMPTZ NOT NULL,
    done          BOOLEAN     NOT NULL DEFAULT FALSE,
    PRIMARY KEY (connector, scheduled_for)
);
