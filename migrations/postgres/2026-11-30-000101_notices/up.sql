-- The plugin's outbox of security notices ("password changed", "password expires in N days", "you must
-- change your password"), written in the same transaction as the change that causes them and handed to the
-- gateway's `POST /v1/messages` by the plugin's notice worker, with the row's id as the Idempotency-Key.
CREATE TABLE notices (
    id TEXT PRIMARY KEY NOT NULL,
    identity_id TEXT NOT NULL,
    -- password_changed | password_expiring | password_change_required
    kind TEXT NOT NULL,
    -- At most one notice per key: `changed:<identity>:<changed at>`, `expiring:<identity>:<expiry date>`,
    -- `must_change:<identity>:<reason>:<marked at>`. Two plugin instances scanning at once insert one row.
    dedupe_key TEXT NOT NULL UNIQUE,
    -- email | sms, and the address; masked once the gateway has accepted the notice.
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    locale TEXT NOT NULL,
    -- The template's variables, JSON.
    data TEXT NOT NULL,
    -- pending | sent | failed
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When a worker may take it next; a worker that takes it pushes this forward (its lease).
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    gateway_message_id TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX notices_due ON notices (status, next_attempt_at);
CREATE INDEX notices_identity ON notices (identity_id);
