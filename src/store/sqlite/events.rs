//! SQLite's dialect of the webhook inbox. One writer at a time: a claim is one statement,
//! so two claims never take the same event.

use crate::store::EventSql;

/// The statements.
pub(super) const EVENTS: &EventSql = &EventSql {
    enqueue: "INSERT INTO cleeng_events (connector, topic, body_sha256, received_at, email,
            customer_id, subscription_id, status, message, processed_at, not_before)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                 CASE WHEN ?8 = 'skipped' THEN ?4 END, ?10)
         ON CONFLICT (connector, body_sha256) DO NOTHING RETURNING id",
    by_body: "SELECT id FROM cleeng_events WHERE connector = ?1 AND body_sha256 = ?2",
    claim: "WITH first AS (
            SELECT id, email FROM cleeng_events
            WHERE connector = ?1 AND status = 'queued' AND not_before <= ?2
              AND (lease_until IS NULL OR lease_until < ?2)
            ORDER BY id LIMIT 1)
         UPDATE cleeng_events SET owner = ?3, lease_until = ?4, attempts = attempts + 1
         WHERE connector = ?1 AND status = 'queued'
           AND (lease_until IS NULL OR lease_until < ?2)
           AND (id = (SELECT id FROM first) OR email = (SELECT email FROM first))
         RETURNING id, email, attempts",
    finish: "UPDATE cleeng_events SET status = ?2, message = ?3, processed_at = ?4,
            owner = NULL, lease_until = NULL
         WHERE owner = ?1 AND status = 'queued'",
    retry: "UPDATE cleeng_events SET not_before = ?3, message = ?4,
            attempts = attempts - ?5, owner = NULL, lease_until = NULL
         WHERE id = ?1 AND owner = ?2 AND status = 'queued'",
    renew: "UPDATE cleeng_events SET lease_until = ?2
         WHERE owner = ?1 AND status = 'queued'",
    list: "SELECT * FROM cleeng_events
         WHERE (?1 IS NULL OR connector = ?1) AND (?2 IS NULL OR status = ?2)
         ORDER BY id DESC LIMIT ?3",
    summary: "SELECT
            (SELECT COUNT(*) FROM cleeng_events WHERE connector = ?1 AND status = 'queued')
                AS queued,
            (SELECT MIN(received_at) FROM cleeng_events
                WHERE connector = ?1 AND status = 'queued') AS oldest,
            (SELECT received_at FROM cleeng_events WHERE connector = ?1
                ORDER BY id DESC LIMIT 1) AS last,
            (SELECT COUNT(*) FROM cleeng_events
                WHERE connector = ?1 AND status = 'failed' AND processed_at > ?2) AS failed",
};
