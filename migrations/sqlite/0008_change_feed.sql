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
    -- What the store held before: 0 nothing, 1 a removed subscriber, 2 a present one.
    was       INTEGER NOT NULL,
    -- The ten template fields before and after, a JSON array in template order (NULL: the
    -- side does not exist). Raw values are cheap to write in the run's transaction; the
    -- kinds and the changed fields are computed from them when a page is read, by the
    -- one definition (src/change.rs).
    before    TEXT,
    after     TEXT
);

-- A consumer's pages: one connector's changes in id order.
CREATE INDEX subscription_changes_feed ON subscription_changes (connector, id);
