DROP INDEX gateway_verifications_recipient;
DROP INDEX gateway_messages_destination;
DROP INDEX gateway_messages_recipient;
ALTER TABLE gateway_messages DROP COLUMN recipient;
