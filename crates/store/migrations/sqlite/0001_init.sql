-- keygate schema, SQLite. Times are Unix milliseconds. No secret is stored in plain text:
-- credential_secrets.hash is HMAC-SHA256(pepper, key), the pepper derived from the master key.

CREATE TABLE accounts (
    uid         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE CHECK (length(id) = 24),
    email       TEXT    NOT NULL,
    first_name  TEXT    NOT NULL DEFAULT '',
    status      TEXT    NOT NULL CHECK (status IN ('active', 'banned')),
    ban_reason  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX accounts_email ON accounts (email COLLATE NOCASE);

-- What happened to an account (ban / unban with reason), for operators.
CREATE TABLE account_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    kind        TEXT    NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX account_events_account ON account_events (account_id, id);

CREATE TABLE credentials (
    client_id   TEXT    PRIMARY KEY CHECK (length(client_id) = 24),
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    status      TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    generation  INTEGER NOT NULL,
    hint        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX credentials_account ON credentials (account_id);

-- One row per live secret generation of a credential. The current generation has no expiry;
-- after a rotation with grace the previous one expires; without grace it is deleted.
CREATE TABLE credential_secrets (
    hash        BLOB    PRIMARY KEY CHECK (length(hash) = 32),
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    generation  INTEGER NOT NULL,
    expires_at  INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (client_id, generation)
) WITHOUT ROWID;

-- The change feed: every write that can change an authentication decision appends a row in
-- the same transaction. Every process reading the database follows it to invalidate its cache.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    entity      TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    at          INTEGER NOT NULL
);

-- JWT signing key ids. The secrets are derived from the master key and never stored.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE TABLE settings (
    name        TEXT    PRIMARY KEY,
    value       BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL
);
