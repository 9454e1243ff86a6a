-- The support timeline (`GET /admin/recipients/{address}/timeline`) finds every message and verification to
-- one address. `recipient` is the address a message was first sent to (a fallback step may change
-- `destination`), email addresses lowercased; a message is also found by the address a fallback step moved it
-- to, and verifications by theirs, lowercased.
ALTER TABLE gateway_messages ADD COLUMN recipient TEXT;
UPDATE gateway_messages SET recipient = lower(destination);
CREATE INDEX gateway_messages_recipient ON gateway_messages (recipient, created_at);
CREATE INDEX gateway_messages_destination ON gateway_messages (lower(destination), created_at);
CREATE INDEX gateway_verifications_recipient ON gateway_verifications (lower(destination), created_at);
