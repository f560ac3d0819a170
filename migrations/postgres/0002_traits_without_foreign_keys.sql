-- The run columns of a trait row always name the run writing it, in the transaction that
-- writes the run's ledger row: the foreign keys proved nothing more, and their checks
-- (two lookups and a row lock on sync_runs per trait row) made up most of a
-- million-row apply.
ALTER TABLE subscription_traits
    DROP CONSTRAINT IF EXISTS subscription_traits_first_seen_run_fkey,
    DROP CONSTRAINT IF EXISTS subscription_traits_changed_run_fkey,
    DROP CONSTRAINT IF EXISTS subscription_traits_removed_run_fkey;
