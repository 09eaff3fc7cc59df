-- Rate limits and plans. Same shape and rules as migrations/sqlite/0004_ratelimits.sql (see there):
-- sets of limits are JSON text (NULL on accounts and credentials: none).
CREATE TABLE plans (
    name        TEXT    PRIMARY KEY,
    ratelimits  TEXT    NOT NULL, -- JSON array
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

ALTER TABLE accounts ADD COLUMN plan TEXT REFERENCES plans (name);
ALTER TABLE accounts ADD COLUMN ratelimits TEXT; -- JSON array
CREATE INDEX accounts_plan ON accounts (plan);

ALTER TABLE credentials ADD COLUMN ratelimits TEXT; -- JSON array

ALTER TABLE credential_usage ADD COLUMN limited BIGINT NOT NULL DEFAULT 0;
