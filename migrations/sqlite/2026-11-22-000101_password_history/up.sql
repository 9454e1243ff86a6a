-- One row per identity the plugin has heard of: the history salt and the state of its current password.
CREATE TABLE password_states (
    identity_id TEXT PRIMARY KEY NOT NULL,
    history_salt BLOB NOT NULL,
    profile TEXT,
    schema_id TEXT,
    changed_at TIMESTAMP,
    expires_at TIMESTAMP,
    must_change_reason TEXT,
    grace_logins_used INTEGER NOT NULL DEFAULT 0,
    email TEXT,
    phone TEXT,
    staged_digest BLOB,
    staged_params TEXT,
    staged_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Earlier passwords. `keyed` entries hold HMAC-SHA256(pepper, argon2id(password, history_salt, params));
-- `foreign` entries hold an imported PHC string until the plaintext is seen and they are re-keyed.
CREATE TABLE password_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    identity_id TEXT NOT NULL REFERENCES password_states (identity_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    digest BLOB,
    foreign_hash TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX password_history_identity ON password_history (identity_id, created_at);
