-- Credits: prepaid balances (keygate_core::credits) on credentials and accounts, spent by
-- requests and refilled at a period boundary in UTC. Every write to a balance's quota (set,
-- adjust) appends to the change feed, as does a give-back that brings what the database holds
-- from zero or less to more (nodes that refused must look again); leasing and settling do not.
--
-- A balance is split between the database and the nodes spending it: credits_remaining is what
-- no node holds, and each node holds a lease (credit_leases) of what it took; the balance is
-- credits_remaining plus the unspent part (granted - spent) of the leases under the row's
-- current credits_epoch. The epoch moves when the balance is set rather than added to (a set, a
-- PATCH, a refill, a plan change): leases of an older epoch are void, and their unspent part is
-- never given back.
--
-- credits_refill is the JSON text of a Refill ({"interval": "daily"|"monthly", "amount": N,
-- "refillDay": D}, as serde writes it), NULL without a refill. credits_period_start is when the
-- refill period the balance belongs to started (Unix ms; NULL without a refill): a refill is due
-- when the current period started later. (The start, not the period's number: a plan's refill
-- may change from daily to monthly under its accounts' balances, and starts compare across
-- intervals where numbers do not.) Each refill sets credits_remaining to the amount once per
-- period, inside the write transaction that finds it due.

-- A credential's own balance: credits_remaining NULL means it has none (requests are not
-- charged for it).
ALTER TABLE credentials ADD COLUMN credits_remaining INTEGER;
ALTER TABLE credentials ADD COLUMN credits_refill TEXT CHECK (credits_refill IS NULL OR credits_remaining IS NOT NULL);
ALTER TABLE credentials ADD COLUMN credits_period_start INTEGER;
ALTER TABLE credentials ADD COLUMN credits_epoch INTEGER NOT NULL DEFAULT 0;

-- An account's balance, shared by its credentials, is either its own (credits_own = 1:
-- credits_remaining set, credits_refill its own refill or NULL) or follows its plan's refill
-- (credits_own = 0, credits_refill NULL: the refill is plans.credits_refill). A balance that
-- follows the plan is stored at its first use (its lease, adjustment or reading finds
-- credits_remaining NULL and starts it at the plan's amount) and refilled like an own one.
-- Changing the account's plan while it has no own quota drops that balance (credits_remaining
-- NULL, the epoch moved) so that it starts again at the new plan's amount; removing its own
-- quota makes it follow the plan again the same way. A balance whose plan stops giving credits
-- is kept, unused, and applies again (refilled at the next period boundary) if the plan gives
-- credits again.
ALTER TABLE accounts ADD COLUMN credits_remaining INTEGER;
ALTER TABLE accounts ADD COLUMN credits_refill TEXT;
ALTER TABLE accounts ADD COLUMN credits_period_start INTEGER;
ALTER TABLE accounts ADD COLUMN credits_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN credits_own INTEGER NOT NULL DEFAULT 0 CHECK (
    credits_own IN (0, 1)
    AND (credits_own = 0 OR credits_remaining IS NOT NULL)
    AND (credits_own = 1 OR credits_refill IS NULL)
);

-- The refill of the balance of every account on the plan that has no credits of its own (NULL:
-- the plan gives no credits quota).
ALTER TABLE plans ADD COLUMN credits_refill TEXT;

-- What each node (holder) took from a balance (scope 'credential' or 'account', id its hex id)
-- and has reported spent, both counted since the lease began, under the epoch the credits were
-- taken in. A lease not renewed (settled) by expires_at is taken back: its unspent part returns
-- to credits_remaining if its epoch is still the balance's.
CREATE TABLE credit_leases (
    scope       TEXT    NOT NULL CHECK (scope IN ('credential', 'account')),
    id          TEXT    NOT NULL CHECK (length(id) = 24),
    holder      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    granted     INTEGER NOT NULL,
    spent       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, id, holder)
) WITHOUT ROWID;
CREATE INDEX credit_leases_expires ON credit_leases (expires_at);

-- Adjustments made with an idempotency key, so that a retried top-up is applied once: the same
-- key with the same adjustment applies nothing, with another one it is refused. Kept 30 days.
CREATE TABLE credit_adjustments (
    scope           TEXT    NOT NULL CHECK (scope IN ('credential', 'account')),
    id              TEXT    NOT NULL CHECK (length(id) = 24),
    idempotency_key TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('add', 'set')),
    amount          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (scope, id, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX credit_adjustments_created ON credit_adjustments (created_at);
