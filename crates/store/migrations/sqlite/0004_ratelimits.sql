-- Rate limits and plans. A set of rate limits is stored as the JSON text of a list of
-- {"name": ..., "limit": ..., "duration": "1s"} objects (keygate_core::ratelimit::RateLimit);
-- on accounts and credentials, NULL means none. Every write to these columns appends to the
-- change feed (a plan's entry names the plan: every account on it is affected).

-- Named sets of limits assigned to accounts ("free", "pro", ...).
CREATE TABLE plans (
    name        TEXT    PRIMARY KEY,
    ratelimits  TEXT    NOT NULL, -- JSON array
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- An account's plan (a plan cannot be deleted while an account is on it) and its own limits,
-- shared by its credentials; each overrides the plan's limit of the same name.
ALTER TABLE accounts ADD COLUMN plan TEXT REFERENCES plans (name);
ALTER TABLE accounts ADD COLUMN ratelimits TEXT; -- JSON array
CREATE INDEX accounts_plan ON accounts (plan);

-- A credential's own limits, counted for it alone.
ALTER TABLE credentials ADD COLUMN ratelimits TEXT; -- JSON array

-- Requests refused by a rate limit, per credential per UTC day: an outcome of their own,
-- not counted in requests.
ALTER TABLE credential_usage ADD COLUMN limited INTEGER NOT NULL DEFAULT 0;
