-- The web console. Same shape and rules as migrations/sqlite/0003_console.sql (see there).
ALTER TABLE accounts ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'operator'));

CREATE TABLE console_sessions (
    token_hash  BYTEA   PRIMARY KEY CHECK (length(token_hash) = 32),
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX console_sessions_account ON console_sessions (account_id);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
