-- The change feed: what happened to each subscriber, one row per change an applied run
-- (after the connector's first, its baseline) or a refresh made. Written in the same
-- transaction as the change itself.
CREATE TABLE subscription_changes (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector TEXT        NOT NULL,
    email     TEXT        NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    -- The run that applied it; NULL for a refresh.
    run_id    BIGINT,
    -- `export`, or the refresh's live_source (`manual`, `api`, `webhook:<id>`, `action:<id>`).
    source    TEXT        NOT NULL,
    -- A JSON array of kinds (`new`, `returned`, `removed`, `stopped`, ...).
    kinds     JSONB       NOT NULL,
    -- The changed template fields before and after (all ten for new, returned, removed).
    before    JSONB,
    after     JSONB
);

-- A consumer's pages: one connector's changes in id order.
CREATE INDEX subscription_changes_feed ON subscription_changes (connector, id);
