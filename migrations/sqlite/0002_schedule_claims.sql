-- Who runs which scheduled local time. A claim is taken before the run starts and
-- renewed while it runs; once the run ends it is done and the time never runs again.
-- A claim that is neither done nor renewed before lease_until belongs to a daemon that
-- died: another one takes it over.
CREATE TABLE schedule_claims (
    connector     TEXT    NOT NULL,
    scheduled_for TEXT    NOT NULL,
    holder        TEXT    NOT NULL,
    claimed_at    TEXT    NOT NULL,
    lease_until   TEXT    NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connector, scheduled_for)
) WITHOUT ROWID;

CREATE INDEX sync_runs_by_schedule ON sync_runs (connector, scheduled_for) WHERE scheduled_for IS NOT NULL;
