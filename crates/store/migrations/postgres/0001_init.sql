-- keygate schema, PostgreSQL. Same shape and rules as migrations/sqlite (see there).

CREATE TABLE accounts (
    uid         BIGSERIAL PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE CHECK (length(id) = 24),
    email       TEXT    NOT NULL,
    first_name  TEXT    NOT NULL DEFAULT '',
    status      TEXT    NOT NULL CHECK (status IN ('active', 'banned')),
    ban_reason  TEXT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));

CREATE TABLE account_events (
    id          BIGSERIAL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    kind        TEXT    NOT NULL,
    reason      TEXT,
    actor       TEXT    NOT NULL,
    at          BIGINT  NOT NULL
);
CREATE INDEX account_events_account ON account_events (account_id, id);

CREATE TABLE credentials (
    client_id   TEXT    PRIMARY KEY CHECK (length(client_id) = 24),
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    status      TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    generation  INTEGER NOT NULL,
    hint        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX credentials_account ON credentials (account_id);

CREATE TABLE credential_secrets (
    hash        BYTEA   PRIMARY KEY CHECK (length(hash) = 32),
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    generation  INTEGER NOT NULL,
    expires_at  BIGINT,
    created_at  BIGINT  NOT NULL,
    UNIQUE (client_id, generation)
);

-- The change feed. Writers take a transaction-level advisory lock before appending, so entries
-- become visible in seq order (a reader never sees seq N+1 before N commits), and NOTIFY
-- 'keygate_changes' at commit so followers wake at once instead of at their next poll.
CREATE TABLE changes (
    seq         BIGSERIAL PRIMARY KEY,
    entity      TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    at          BIGINT  NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE settings (
    name        TEXT    PRIMARY KEY,
    value       BYTEA   NOT NULL,
    updated_at  BIGINT  NOT NULL
);
