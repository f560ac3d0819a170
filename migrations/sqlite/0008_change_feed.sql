-- The change feed: what happened to each subscriber, one row per change an applied run
-- (after the connector's first, its baseline) or a refresh made. Written in the same
-- transaction as the change itself. AUTOINCREMENT: an id is never used twice, also after
-- the newest changes are pruned.
CREATE TABLE subscription_changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    connector TEXT    NOT NULL,
    email     TEXT    NOT NULL,
    at        TEXT    NOT NULL,
    -- The run that applied it; NULL for a refresh.
    run_id    INTEGER,
    -- `export`, or the refresh's live_source (`manual`, `api`, `webhook:<id>`, `action:<id>`).
    source    TEXT    NOT NULL,
    -- A JSON array of kinds (`new`, `returned`, `removed`, `stopped`, ...).
    kinds     TEXT    NOT NULL,
    -- The changed template fields before and after, JSON (all ten for new, returned, removed).
    before    TEXT,
    after     TEXT
);

-- A consumer's pages: one connector's changes in id order.
CREATE INDEX subscription_changes_feed ON subscription_changes (connector, id);
