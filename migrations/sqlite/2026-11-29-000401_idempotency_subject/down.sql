DROP INDEX idempotency_keys_subject;
ALTER TABLE idempotency_keys DROP COLUMN subject;
