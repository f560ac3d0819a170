-- Where each destination of the change feed is (`[[connector.deliver]]`): one row per
-- destination the daemon has seen in its configuration, kept across restarts and shared
-- by replicas. Only acknowledged batches move the cursor.
CREATE TABLE change_deliveries (
    connector    TEXT        NOT NULL,
    destination  TEXT        NOT NULL,
    -- The last change id acknowledged (or passed over: not of the destination's kinds).
    cursor       BIGINT      NOT NULL,
    -- When the daemon first saw the destination.
    created_at   TIMESTAMPTZ NOT NULL,
    -- The last acknowledged batch, and the changes acknowledged in all.
    delivered_at TIMESTAMPTZ,
    delivered    BIGINT      NOT NULL DEFAULT 0,
    -- Failed attempts of the batch at the cursor since the last acknowledged one, the
    -- last failure, and when the next attempt is due (backoff).
    failures     BIGINT      NOT NULL DEFAULT 0,
    last_error   TEXT,
    retry_at     TIMESTAMPTZ,
    -- Set when the destination refused a batch (a 4xx other than 408/429): nothing is
    -- sent until `cleeng-sync deliver resume`.
    stopped_at   TIMESTAMPTZ,
    -- The process delivering to it (host:pid:start) and until when: one at a time, so
    -- that batches arrive in order.
    owner        TEXT,
    lease_until  TIMESTAMPTZ,
    PRIMARY KEY (connector, destination)
);
