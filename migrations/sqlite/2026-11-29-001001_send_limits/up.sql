-- One row per limit scope of every send the abuse limits let through (gateway/src/limits): a limit counts the
-- rows of its key inside its window. Keys are keyed digests (HMAC-SHA256 under the gateway's storage key) of
-- the destination, client IP, identity or number prefix, so the table holds none of them in clear. Each row
-- is deleted by the retention janitor after expires_at, when no limit of its scope counts it any more.
CREATE TABLE gateway_limit_sends (
    id TEXT PRIMARY KEY NOT NULL,
    scope TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    sent_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX gateway_limit_sends_key ON gateway_limit_sends (scope, key_digest, sent_at);
CREATE INDEX gateway_limit_sends_expires ON gateway_limit_sends (expires_at);
