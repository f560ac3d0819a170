-- Localized offers and the expiry buffer (the template's considerations 1 and 3).
-- See the SQLite migration of the same name for the why of each part.

-- The offer's country, by the rule of `export::country_of`. Written with each row
-- (a generated column cost a tenth of a first load); rows stored before are filled here.
ALTER TABLE subscription_traits ADD COLUMN offer_country TEXT;
UPDATE subscription_traits SET offer_country = substring(offer_id FROM '_([A-Z]{2})$')
    WHERE offer_id ~ '_[A-Z]{2}$';

CREATE TABLE offer_plans (
    connector TEXT NOT NULL,
    offer_id  TEXT NOT NULL,
    plan      TEXT NOT NULL,
    country   TEXT NOT NULL,
    PRIMARY KEY (connector, offer_id)
);

-- PostgreSQL fixes a view's columns when it is created: a later migration that adds a
-- trait column recreates this view.
CREATE VIEW subscription_traits_with_plan AS
    SELECT t.*, p.plan AS offer_plan
    FROM subscription_traits t
    LEFT JOIN offer_plans p ON p.connector = t.connector AND p.offer_id = t.offer_id;

-- By expiry date alone: many subscribers share a day, and the index keeps one entry per
-- day and page (deduplication), a tenth of the size of one that adds the email, and
-- cheaper to keep up on a first load. A page is sorted by email within its days.
CREATE INDEX subscription_traits_by_expiry
    ON subscription_traits (connector, expiry_date) WHERE removed_run IS NULL;

ALTER TABLE sync_runs ADD COLUMN warnings JSONB;
