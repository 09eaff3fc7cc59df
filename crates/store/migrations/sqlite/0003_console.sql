-- The web console: customers and operators log in with email + password.
-- password_hash is an Argon2id PHC string (peppered with a key derived from the master key);
-- NULL means the account cannot log in to the console (e.g. created by the admin API).
ALTER TABLE accounts ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'operator'));

-- Console sessions, by HMAC of the random session token (the cookie); never the token itself.
-- Banning an account deletes its sessions in the same transaction.
CREATE TABLE console_sessions (
    token_hash  BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_account ON console_sessions (account_id);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
