-- The email of a rejected record, unmasked, when it could be read: which subscriber to
-- look up at Cleeng. Shown only to a holder of the admin token (the status page); the
-- masked `value` stays what `runs`, the API and the logs show.
ALTER TABLE sync_rejections ADD COLUMN email text;
