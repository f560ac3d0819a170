-- Live subscriber state: a subscriber read from Cleeng's API between exports.
-- Nullable columns: no row hash changes (an upgrade rewrites no subscriber). The view
-- `subscription_traits_with_plan` selects `t.*` and shows them without being created again.

-- When the refresh read the subscriber (its state is known as of then, RFC 3339 text) and
-- what asked for it (`manual`, `api`, `webhook:<event id>`, `action:<action id>`); NULL
-- for a row as the export left it.
ALTER TABLE subscription_traits ADD COLUMN live_at TEXT;
ALTER TABLE subscription_traits ADD COLUMN live_source TEXT;

-- The next export reads only these few rows (no scan of every subscriber), a page at a
-- time in (live_at, email) order, from the index alone: the hash is in it, so that no
-- page of the table is read (each refreshed row is on a page of its own). removed_run,
-- NULL in every entry, is in it too: SQLite reads an index alone only when it holds every
-- column the query names, the predicate's included.
CREATE INDEX subscription_traits_live
    ON subscription_traits (connector, live_at, email, row_hash, removed_run)
    WHERE live_at IS NOT NULL AND removed_run IS NULL;

-- When a refresh saw the action's effect at Cleeng (NULL: not yet, or never for a coupon).
ALTER TABLE cleeng_actions ADD COLUMN confirmed_at TEXT;

-- Subscribers a run left as a newer refresh wrote them.
ALTER TABLE sync_runs ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
