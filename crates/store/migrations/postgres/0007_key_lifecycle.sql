-- What a key may do and when. Same shape and rules as migrations/sqlite/0007_key_lifecycle.sql
-- (see there): lists of words are stored space-separated (NULL when empty), meta as JSON text.
ALTER TABLE credentials ADD COLUMN name TEXT;
ALTER TABLE credentials ADD COLUMN meta TEXT;
ALTER TABLE credentials ADD COLUMN expires_at BIGINT;
ALTER TABLE credentials ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE credentials ADD COLUMN permissions TEXT;
ALTER TABLE credentials ADD COLUMN ip_allowlist TEXT;
ALTER TABLE accounts ADD COLUMN ip_allowlist TEXT;

CREATE TABLE roles (
    name        TEXT    PRIMARY KEY,
    permissions TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE credential_roles (
    client_id TEXT NOT NULL REFERENCES credentials (client_id) ON DELETE CASCADE,
    role      TEXT NOT NULL REFERENCES roles (name),
    PRIMARY KEY (client_id, role)
);
CREATE INDEX credential_roles_role ON credential_roles (role);
