CREATE TABLE gateway_messages (
    id TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    template TEXT NOT NULL,
    locale TEXT NOT NULL,
    data TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    expires_at TIMESTAMP,
    provider TEXT,
    provider_message_id TEXT,
    last_error TEXT,
    fallback TEXT NOT NULL,
    fallback_position INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX gateway_messages_due ON gateway_messages (status, next_attempt_at);
CREATE INDEX gateway_messages_provider_message ON gateway_messages (provider_message_id);

CREATE TABLE gateway_attempts (
    message_id TEXT NOT NULL REFERENCES gateway_messages (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    channel TEXT NOT NULL,
    provider TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    provider_message_id TEXT,
    latency_ms BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    PRIMARY KEY (message_id, number)
);
