-- Attempts with an outcome on the current fallback step (the retry budget is per step), claims whose worker
-- never recorded an outcome (the dead-worker guard), and a provider report that arrived while the attempt
-- it describes was still in flight (applied when the worker records the send).
ALTER TABLE gateway_messages ADD COLUMN step_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gateway_messages ADD COLUMN unrecorded_claims INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gateway_messages ADD COLUMN early_report_sid TEXT;
ALTER TABLE gateway_messages ADD COLUMN early_report_outcome TEXT;
ALTER TABLE gateway_messages ADD COLUMN early_report_error_code TEXT;
-- The retention janitor deletes finished messages by age.
CREATE INDEX gateway_messages_finished ON gateway_messages (status, updated_at);
