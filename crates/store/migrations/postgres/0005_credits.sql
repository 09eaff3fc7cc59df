-- Credits. Same shape and rules as migrations/sqlite/0005_credits.sql (see there): a balance is
-- credits_remaining plus the unspent part of the leases under its row's credits_epoch;
-- credits_refill is JSON text; credits_period_start is the start (Unix ms) of the refill period
-- the balance belongs to. Nodes lease concurrently: every transaction that changes a balance
-- locks its row (SELECT ... FOR NO KEY UPDATE) before reading it, several rows in one order.
ALTER TABLE credentials ADD COLUMN credits_remaining BIGINT;
ALTER TABLE credentials ADD COLUMN credits_refill TEXT;
ALTER TABLE credentials ADD COLUMN credits_period_start BIGINT;
ALTER TABLE credentials ADD COLUMN credits_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD CONSTRAINT credentials_credits
    CHECK (credits_refill IS NULL OR credits_remaining IS NOT NULL);

ALTER TABLE accounts ADD COLUMN credits_remaining BIGINT;
ALTER TABLE accounts ADD COLUMN credits_refill TEXT;
ALTER TABLE accounts ADD COLUMN credits_period_start BIGINT;
ALTER TABLE accounts ADD COLUMN credits_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN credits_own BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE accounts ADD CONSTRAINT accounts_credits
    CHECK ((NOT credits_own OR credits_remaining IS NOT NULL) AND (credits_own OR credits_refill IS NULL));

ALTER TABLE plans ADD COLUMN credits_refill TEXT;

CREATE TABLE credit_leases (
    scope       TEXT    NOT NULL CHECK (scope IN ('credential', 'account')),
    id          TEXT    NOT NULL CHECK (length(id) = 24),
    holder      TEXT    NOT NULL,
    epoch       BIGINT  NOT NULL,
    granted     BIGINT  NOT NULL,
    spent       BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (scope, id, holder)
);
CREATE INDEX credit_leases_expires ON credit_leases (expires_at);

CREATE TABLE credit_adjustments (
    scope           TEXT    NOT NULL CHECK (scope IN ('credential', 'account')),
    id              TEXT    NOT NULL CHECK (length(id) = 24),
    idempotency_key TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('add', 'set')),
    amount          BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (scope, id, idempotency_key)
);
CREATE INDEX credit_adjustments_created ON credit_adjustments (created_at);
