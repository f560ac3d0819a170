-- The offer's country as a plain column, written by the run and the refresh with the
-- offer (as PostgreSQL keeps it, migration 0004), no longer computed by the database.
-- A virtual generated column makes SQLite keep a statement journal for every write of
-- the traits, conflict clause or not: a 1M night's update of its 100,000 changed rows
-- wrote 214 MB of it. The rule is that of `export::country_of`, as 0003 computed it,
-- and a test holds every writer to it.
ALTER TABLE subscription_traits DROP COLUMN offer_country;
ALTER TABLE subscription_traits ADD COLUMN offer_country TEXT;
UPDATE subscription_traits SET offer_country = substr(offer_id, -2)
    WHERE offer_id GLOB '*_[A-Z][A-Z]';
