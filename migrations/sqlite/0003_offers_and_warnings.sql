-- Localized offers and the expiry buffer (the template's considerations 1 and 3).

-- The offer's country: the two capital letters after the offer ID's last `_`
-- (`PL` in `S123456789_PL`), NULL when it does not end that way. Computed by the
-- database from offer_id, so that it can never disagree with it and the row hash is
-- what it was; the same rule as `export::country_of`.
ALTER TABLE subscription_traits ADD COLUMN offer_country TEXT
    GENERATED ALWAYS AS (CASE WHEN offer_id GLOB '*_[A-Z][A-Z]' THEN substr(offer_id, -2) END) VIRTUAL;

-- Each connector's `[connector.offers]`, as every run that writes finds it: plan and
-- country of each listed offer.
CREATE TABLE offer_plans (
    connector TEXT NOT NULL,
    offer_id  TEXT NOT NULL,
    plan      TEXT NOT NULL,
    country   TEXT NOT NULL,
    PRIMARY KEY (connector, offer_id)
) WITHOUT ROWID;

-- The traits with the plan of each subscriber's offer (`offer_plan`, NULL when the map
-- does not list it): what `traits`, the API and other readers of the database read.
-- A change of the map shows here as soon as a run stores it, with no trait row written.
CREATE VIEW subscription_traits_with_plan AS
    SELECT t.*, p.plan AS offer_plan
    FROM subscription_traits t
    LEFT JOIN offer_plans p ON p.connector = t.connector AND p.offer_id = t.offer_id;

-- The listing of subscribers to act on: present ones by expiry date, then email (an
-- index of a WITHOUT ROWID table ends with the primary key, so the email is in it).
CREATE INDEX subscription_traits_by_expiry
    ON subscription_traits (connector, expiry_date) WHERE removed_run IS NULL;

-- Each run's warnings per code, a JSON object ({"expiry_within_buffer": 12}).
ALTER TABLE sync_runs ADD COLUMN warnings TEXT;
