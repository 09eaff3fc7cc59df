-- What a key may do and when: names, metadata, expiry, disable, permissions, roles and IP
-- allowlists. Every write to these appends to the change feed (a role's entry names the role:
-- every credential holding it is affected).
--
-- Lists of words without spaces (permissions, networks in CIDR form) are stored as their words
-- joined by single spaces, NULL when empty, so that a credential's roles' permissions aggregate
-- with one group_concat. meta is the compact JSON text of an object.
ALTER TABLE credentials ADD COLUMN name TEXT;
ALTER TABLE credentials ADD COLUMN meta TEXT;
ALTER TABLE credentials ADD COLUMN expires_at INTEGER;
ALTER TABLE credentials ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1));
ALTER TABLE credentials ADD COLUMN permissions TEXT;
ALTER TABLE credentials ADD COLUMN ip_allowlist TEXT;
ALTER TABLE accounts ADD COLUMN ip_allowlist TEXT;

-- Named sets of permissions ("video-editor", "read-only", ...).
CREATE TABLE roles (
    name        TEXT    PRIMARY KEY,
    permissions TEXT    NOT NULL, -- space-separated ('' when none)
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- The roles a credential holds; a role cannot be deleted while a credential holds it.
CREATE TABLE credential_roles (
    client_id TEXT NOT NULL REFERENCES credentials (client_id) ON DELETE CASCADE,
    role      TEXT NOT NULL REFERENCES roles (name),
    PRIMARY KEY (client_id, role)
) WITHOUT ROWID;
CREATE INDEX credential_roles_role ON credential_roles (role);
