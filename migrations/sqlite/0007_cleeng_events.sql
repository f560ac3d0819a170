-- The webhook inbox: one row per delivery Cleeng made (a redelivery of the same body is
-- the same row), worked by the daemon into refreshes. Never the body: payment topics
-- carry a card token. Only the fields that say whom to refresh are kept.
CREATE TABLE cleeng_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    -- SHA-256 of the raw body, hex: a redelivery is recognised by it.
    body_sha256     TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    email           TEXT,
    customer_id     INTEGER,
    subscription_id INTEGER,
    -- queued, applied, unchanged, skipped, failed.
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    message         TEXT,
    processed_at    TEXT,
    -- The worker that claimed it (host:pid:start) and until when: past it, or after a
    -- kill, it is taken again. NULL while nobody works it.
    owner           TEXT,
    lease_until     TEXT,
    -- A failed refresh's next attempt, not before this (backoff).
    not_before      TEXT    NOT NULL
);

CREATE UNIQUE INDEX cleeng_events_redelivery ON cleeng_events (connector, body_sha256);
-- The worker's reads: the oldest queued event, then the queued events of its subscriber.
CREATE INDEX cleeng_events_queued ON cleeng_events (connector, id) WHERE status = 'queued';
CREATE INDEX cleeng_events_queued_by_email
    ON cleeng_events (connector, email) WHERE status = 'queued';
-- The listing, newest first, and the status page's last event.
CREATE INDEX cleeng_events_by_connector ON cleeng_events (connector, id);
-- The failures of the last day, on the status page.
CREATE INDEX cleeng_events_failed
    ON cleeng_events (connector, processed_at) WHERE status = 'failed';
-- A claim's events, by the claim's owner: ended or renewed in one statement. Small: the
-- owner is cleared when an event ends.
CREATE INDEX cleeng_events_claimed ON cleeng_events (owner) WHERE owner IS NOT NULL;
