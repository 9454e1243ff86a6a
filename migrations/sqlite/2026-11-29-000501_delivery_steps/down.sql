DROP INDEX gateway_messages_finished;
ALTER TABLE gateway_messages DROP COLUMN early_report_error_code;
ALTER TABLE gateway_messages DROP COLUMN early_report_outcome;
ALTER TABLE gateway_messages DROP COLUMN early_report_sid;
ALTER TABLE gateway_messages DROP COLUMN unrecorded_claims;
ALTER TABLE gateway_messages DROP COLUMN step_attempts;
