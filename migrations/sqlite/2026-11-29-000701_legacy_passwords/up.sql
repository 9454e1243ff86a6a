-- Passwords imported from another system (`reclaim import hashes`): which login identifier each imported hash
-- belongs to, and the identity id its `foreign` history entry is stored under (`holder`: the Kratos identity id,
-- or a `legacy:` placeholder for rows imported by login identifier). Kratos's password migration hook finds
-- the hash through this table; `migrated_at` is set once the plaintext was seen, and a row is never deleted,
-- so importing the same file again imports nothing new.
CREATE TABLE legacy_passwords (
    identifier TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    migrated_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX legacy_passwords_holder ON legacy_passwords (holder);
