-- One-time codes and links (`/v1/verifications`). The code or link token is kept as a keyed digest for
-- checks; a code is also kept sealed so that a resend can repeat it, and emptied once the verification ends.
CREATE TABLE gateway_verifications (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    locale TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret_digest TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    superseded_digests TEXT NOT NULL,
    link_url TEXT,
    identity_id TEXT,
    known BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    checks INTEGER NOT NULL,
    sends INTEGER NOT NULL,
    last_sent_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX gateway_verifications_expiry ON gateway_verifications (expires_at);

-- Every send of a verification, in order; `message_id` is the outbox message (none when the destination was
-- marked unknown and nothing was sent).
CREATE TABLE gateway_verification_sends (
    verification_id TEXT NOT NULL REFERENCES gateway_verifications (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (verification_id, number)
);
