DROP TABLE gateway_attempts;
DROP TABLE gateway_messages;
