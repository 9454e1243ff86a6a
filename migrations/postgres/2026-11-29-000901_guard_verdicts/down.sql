ALTER TABLE password_states ADD COLUMN staged_digest BYTEA;
ALTER TABLE password_states ADD COLUMN staged_params TEXT;
ALTER TABLE password_states ADD COLUMN staged_at TIMESTAMP;
DROP TABLE guard_verdicts;
