-- Live subscriber state: a subscriber read from Cleeng's API between exports.
-- Nullable columns without a default: PostgreSQL adds them without rewriting the table,
-- and no row hash changes (an upgrade rewrites no subscriber).

-- When the refresh read the subscriber (its state is known as of then) and what asked
-- for it (`manual`, `api`, `webhook:<event id>`, `action:<action id>`); NULL for a row as
-- the export left it.
ALTER TABLE subscription_traits ADD COLUMN live_at TIMESTAMPTZ, ADD COLUMN live_source TEXT;

-- The next export reads only these few rows (no scan of every subscriber), a page at a
-- time in (live_at, email) order, from the index alone: the hash is in it, so that no
-- row of the table is visited.
CREATE INDEX subscription_traits_live
    ON subscription_traits (connector, live_at, email) INCLUDE (row_hash)
    WHERE live_at IS NOT NULL AND removed_run IS NULL;

-- The view's columns were fixed when it was created: created again to show the new ones.
DROP VIEW subscription_traits_with_plan;
CREATE VIEW subscription_traits_with_plan AS
    SELECT t.*, p.plan AS offer_plan
    FROM subscription_traits t
    LEFT JOIN offer_plans p ON p.connector = t.connector AND p.offer_id = t.offer_id;

-- When a refresh saw the action's effect at Cleeng (NULL: not yet, or never for a coupon).
ALTER TABLE cleeng_actions ADD COLUMN confirmed_at TIMESTAMPTZ;

-- Subscribers a run left as a newer refresh wrote them.
ALTER TABLE sync_runs ADD COLUMN superseded BIGINT NOT NULL DEFAULT 0;
