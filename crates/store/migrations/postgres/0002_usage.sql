-- Usage bookkeeping, written in batches (never on the request path).
ALTER TABLE credentials ADD COLUMN last_used_at BIGINT;

CREATE TABLE credential_usage (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    day         INTEGER NOT NULL, -- days since 1970-01-01 (UTC)
    requests    BIGINT  NOT NULL,
    PRIMARY KEY (client_id, day)
);
