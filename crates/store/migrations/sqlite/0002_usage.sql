-- Usage bookkeeping, written in batches (never on the request path): when each credential was
-- last used, and requests per credential per UTC day.
ALTER TABLE credentials ADD COLUMN last_used_at INTEGER;

CREATE TABLE credential_usage (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    day         INTEGER NOT NULL, -- days since 1970-01-01 (UTC)
    requests    INTEGER NOT NULL,
    PRIMARY KEY (client_id, day)
) WITHOUT ROWID;
