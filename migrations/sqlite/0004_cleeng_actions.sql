-- The ledger of the billing actions: every attempt, from the moment it is asked for
-- (`pending`) to its end. A row is written before Cleeng is called, so that a process
-- that dies mid-call leaves a trace (turned `unknown` at the next start).
CREATE TABLE cleeng_actions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       TEXT    NOT NULL,
    email           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    -- The request as asked (JSON text): target offer or plan, direction, coupon code,
    -- subscription id; never the token.
    params          TEXT    NOT NULL,
    -- The caller's Idempotency-Key; its unique index is the lock that lets at most one
    -- request of a key call Cleeng.
    idempotency_key TEXT,
    -- SHA-256 of the request: the same key with another request is refused.
    request_hash    TEXT    NOT NULL,
    "trigger"       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    http_status     INTEGER,
    code            TEXT,
    message         TEXT,
    subscription_id INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- The process that carries it out (host:pid:start), and until when it may: a
    -- `pending` row past it, or of a process that is gone, is `unknown`.
    owner           TEXT    NOT NULL,
    lease_until     TEXT    NOT NULL,
    requested_at    TEXT    NOT NULL,
    finished_at     TEXT
);

CREATE UNIQUE INDEX cleeng_actions_by_key ON cleeng_actions (idempotency_key);
CREATE INDEX cleeng_actions_by_email ON cleeng_actions (connector, email, id);
CREATE INDEX cleeng_actions_pending ON cleeng_actions (id) WHERE status = 'pending';
