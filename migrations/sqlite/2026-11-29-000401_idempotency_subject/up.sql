-- The identity a remembered answer is about, so that erasing the identity forgets its answers too
-- (NULL for answers about no identity, e.g. gateway messages).
ALTER TABLE idempotency_keys ADD COLUMN subject TEXT;
CREATE INDEX idempotency_keys_subject ON idempotency_keys (subject);
