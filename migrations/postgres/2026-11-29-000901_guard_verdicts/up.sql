-- Verdicts the Kratos edge guard staged for password submissions it saw, keyed by Kratos's flow id: the
-- settings hooks read them (refused → Kratos shows our message on the password field; allowed → the
-- post-persist hook commits the digest as the new current password), the registration post-persist hook
-- commits the first history entry. A verdict is used once and is gone after expires_at.
CREATE TABLE guard_verdicts (
    kind TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    -- settings: the identity Kratos's /sessions/whoami named; registration: NULL (not created yet).
    identity_id TEXT,
    allowed BOOLEAN NOT NULL,
    -- Refused: the violation codes, comma-separated, and the Kratos UI messages to show (JSON array).
    codes TEXT NOT NULL,
    messages TEXT NOT NULL,
    -- Allowed: the candidate's keyed digest and its KDF parameters; registration also keeps the salt it was
    -- made with, which becomes the new identity's history salt.
    digest BYTEA,
    params TEXT,
    salt BYTEA,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    -- Set by the settings pre-persist hook when it let the change through; the post-persist hook commits only
    -- an accepted verdict.
    accepted_at TIMESTAMP,
    PRIMARY KEY (kind, flow_id)
);
CREATE INDEX guard_verdicts_expires ON guard_verdicts (expires_at);

-- Verdicts replace the one digest a row could stage, which knew no flow.
ALTER TABLE password_states DROP COLUMN staged_digest;
ALTER TABLE password_states DROP COLUMN staged_params;
ALTER TABLE password_states DROP COLUMN staged_at;
