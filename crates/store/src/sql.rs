//! The statements both backends run with the same text, and the small decisions they make alike.
//!
//! The text uses PostgreSQL's `$1..$n` placeholders, which SQLite accepts as well: `$NNN` is a
//! named parameter there, and sqlx binds it by its number, so a number may appear twice, as in
//! PostgreSQL. What the dialects say differently stays in each backend: locking (`BEGIN
//! IMMEDIATE`, `FOR UPDATE`, the feed's advisory lock and `NOTIFY`), the usage batches (chunked
//! inserts against `UNNEST`), case-insensitive matching, aggregates and function names.

use keygate_core::credits::Refill;
use keygate_core::model::AccountStatus;
use keygate_core::ratelimit::RateLimit;

use crate::{Result, StoreError};

/// The columns of an account, as `rows::AccountRow` reads them.
macro_rules! account_columns {
    () => {
        "id, uid, email, first_name, status, ban_reason, plan, ratelimits, credits_own, credits_refill, \
         credits_epoch, ip_allowlist, created_at, updated_at"
    };
}
pub(crate) use account_columns;

/// The columns of an account's state, from `accounts a LEFT JOIN plans p ON p.name = a.plan`, as
/// `rows::AccountStateRow` reads them (also in the backends' `auth_bundle` queries).
macro_rules! account_state_columns {
    () => {
        "a.id AS account_id, a.uid, a.email, a.first_name, a.status AS account_status, a.plan, \
         a.ratelimits AS account_ratelimits, p.ratelimits AS plan_ratelimits, \
         a.credits_own AS account_credits_own, a.credits_refill AS account_credits_refill, \
         a.credits_epoch AS account_credits_epoch, p.credits_refill AS plan_credits, \
         a.ip_allowlist AS account_ip_allowlist"
    };
}
pub(crate) use account_state_columns;

/// A credential's own credits, from `credentials c`, as `rows::OwnCreditsRow` reads them (also in
/// the backends' `auth_bundle` queries): it has a quota when it has a balance.
macro_rules! credential_credits_columns {
    () => {
        "c.credits_remaining IS NOT NULL AS credits_own, c.credits_refill, c.credits_epoch"
    };
}
pub(crate) use credential_credits_columns;

/// What a credential may do and when, from `credentials c`, as `rows::LifecycleRow` reads them
/// (also in the backends' `auth_bundle` queries).
macro_rules! credential_lifecycle_columns {
    () => {
        "c.name, c.meta, c.expires_at, c.enabled, c.permissions, c.ip_allowlist"
    };
}
pub(crate) use credential_lifecycle_columns;

/// The columns of a plan, as `rows::PlanRow` reads them.
macro_rules! plan_columns {
    () => {
        "name, ratelimits, credits_refill, created_at, updated_at"
    };
}
pub(crate) use plan_columns;

// Accounts.
pub(crate) const ACCOUNT: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1");
pub(crate) const ACCOUNT_EXISTS: &str = "SELECT 1 FROM accounts WHERE id = $1";
pub(crate) const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO accounts (id, email, first_name, status, password_hash, role, created_at, updated_at) \
     VALUES ($1, $2, $3, 'active', $4, $5, $6, $6) RETURNING ",
    account_columns!()
);
pub(crate) const SET_ACCOUNT_STATUS: &str = concat!(
    "UPDATE accounts SET status = $1, ban_reason = $2, updated_at = $3 WHERE id = $4 RETURNING ",
    account_columns!()
);
pub(crate) const INSERT_ACCOUNT_EVENT: &str =
    "INSERT INTO account_events (account_id, kind, reason, actor, at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const ACCOUNT_EVENTS: &str =
    "SELECT kind, reason, actor, at FROM account_events WHERE account_id = $1 ORDER BY id";
/// An account's state with its plan's rate limits, in one query.
pub(crate) const ACCOUNT_STATE: &str = concat!(
    "SELECT ",
    account_state_columns!(),
    " FROM accounts a LEFT JOIN plans p ON p.name = a.plan WHERE a.id = $1"
);
/// Replaces an account's own rate limits when `$1`, its plan when `$3`. A new plan drops the
/// balance that followed the old one (not an own balance): it starts again at the new plan's
/// amount, under a new epoch.
pub(crate) const SET_ACCOUNT_LIMITS: &str = concat!(
    "UPDATE accounts SET ratelimits = CASE WHEN $1 THEN $2 ELSE ratelimits END, \
     plan = CASE WHEN $3 THEN $4 ELSE plan END, \
     credits_remaining = CASE WHEN $3 AND NOT credits_own AND plan IS DISTINCT FROM $4 \
         THEN NULL ELSE credits_remaining END, \
     credits_period_start = CASE WHEN $3 AND NOT credits_own AND plan IS DISTINCT FROM $4 \
         THEN NULL ELSE credits_period_start END, \
     credits_epoch = CASE WHEN $3 AND NOT credits_own AND plan IS DISTINCT FROM $4 \
         THEN credits_epoch + 1 ELSE credits_epoch END, \
     updated_at = $5 WHERE id = $6 RETURNING ",
    account_columns!()
);

// Credentials and their secrets.
pub(crate) const CREDENTIAL: &str = concat!(
    "SELECT c.client_id, c.account_id, c.status, c.generation, c.hint, c.created_at, c.updated_at, \
     c.revoked_at, c.last_used_at, c.ratelimits, ",
    credential_credits_columns!(),
    ", ",
    credential_lifecycle_columns!(),
    " FROM credentials c WHERE c.client_id = $1"
);
/// The roles a credential holds, with what each grants.
pub(crate) const CREDENTIAL_ROLES: &str = "SELECT cr.role, r.permissions FROM credential_roles cr \
     JOIN roles r ON r.name = cr.role WHERE cr.client_id = $1 ORDER BY cr.role";
pub(crate) const LIVE_GENERATIONS: &str = "SELECT generation, expires_at FROM credential_secrets \
     WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY generation DESC";
pub(crate) const CREDENTIAL_IDS: &str =
    "SELECT client_id FROM credentials WHERE account_id = $1 ORDER BY created_at, client_id";
pub(crate) const INSERT_CREDENTIAL: &str = "INSERT INTO credentials \
     (client_id, account_id, status, generation, hint, created_at, updated_at) \
     VALUES ($1, $2, 'active', 1, $3, $4, $4)";
pub(crate) const REVOKE_CREDENTIAL: &str = "UPDATE credentials SET status = 'revoked', \
     revoked_at = COALESCE(revoked_at, $1), updated_at = $1 WHERE client_id = $2";
pub(crate) const SET_CREDENTIAL_LIMITS: &str =
    "UPDATE credentials SET ratelimits = $1, updated_at = $2 WHERE client_id = $3";
pub(crate) const SET_GENERATION: &str =
    "UPDATE credentials SET generation = $1, hint = $2, updated_at = $3 WHERE client_id = $4";
pub(crate) const INSERT_SECRET: &str =
    "INSERT INTO credential_secrets (hash, client_id, generation, created_at) VALUES ($1, $2, $3, $4)";
/// Rotation: every secret but the current one (`$2`) goes (the rule: current + previous at most).
pub(crate) const DELETE_OLDER_SECRETS: &str =
    "DELETE FROM credential_secrets WHERE client_id = $1 AND generation <> $2";
pub(crate) const SET_SECRETS_EXPIRY: &str = "UPDATE credential_secrets SET expires_at = $1 WHERE client_id = $2";
pub(crate) const DELETE_SECRETS: &str = "DELETE FROM credential_secrets WHERE client_id = $1";
pub(crate) const DELETE_EXPIRED_SECRETS: &str =
    "DELETE FROM credential_secrets WHERE client_id = $1 AND expires_at <= $2";
pub(crate) const FIND_SECRET: &str = "SELECT client_id, generation FROM credential_secrets WHERE hash = $1";

// Plans (listing them differs: each backend orders names by their bytes its own way).
pub(crate) const PLAN: &str = concat!("SELECT ", plan_columns!(), " FROM plans WHERE name = $1");
pub(crate) const PLAN_EXISTS: &str = "SELECT 1 FROM plans WHERE name = $1";
/// Creates a plan (`$4`: its credits refill); no row when one has that name.
pub(crate) const INSERT_PLAN: &str = concat!(
    "INSERT INTO plans (name, ratelimits, credits_refill, created_at, updated_at) VALUES ($1, $2, $4, $3, $3) \
     ON CONFLICT (name) DO NOTHING RETURNING ",
    plan_columns!()
);
pub(crate) const REPLACE_PLAN: &str = concat!(
    "UPDATE plans SET ratelimits = $2, credits_refill = $4, updated_at = $3 WHERE name = $1 RETURNING ",
    plan_columns!()
);
pub(crate) const DELETE_PLAN: &str = "DELETE FROM plans WHERE name = $1";
pub(crate) const PLAN_ACCOUNTS: &str = "SELECT COUNT(*) FROM accounts WHERE plan = $1";

// Credits (see `credits`). A balance's row, as `rows::BalanceRow` reads it, with what the leases
// of its epoch hold; `$1` is the credential's or the account's id.
pub(crate) const CREDENTIAL_BALANCE: BalanceStatements = BalanceStatements {
    read: "SELECT c.credits_remaining AS remaining, c.credits_refill AS refill, \
           c.credits_period_start AS period_start, c.credits_epoch AS epoch, \
           c.credits_remaining IS NOT NULL AS own, CAST(NULL AS TEXT) AS plan_refill, \
           (SELECT CAST(COALESCE(SUM(l.granted - l.spent), 0) AS BIGINT) FROM credit_leases l \
             WHERE l.scope = 'credential' AND l.id = c.client_id AND l.epoch = c.credits_epoch) AS leased \
           FROM credentials c WHERE c.client_id = $1",
    write: "UPDATE credentials SET credits_remaining = $1, credits_period_start = $2, credits_epoch = $3 \
            WHERE client_id = $4",
    configure: "UPDATE credentials SET credits_remaining = $1, credits_refill = $2, credits_period_start = $3, \
                credits_epoch = credits_epoch + 1, updated_at = $4 WHERE client_id = $5 RETURNING credits_epoch",
};
pub(crate) const ACCOUNT_BALANCE: BalanceStatements = BalanceStatements {
    read: "SELECT a.credits_remaining AS remaining, a.credits_refill AS refill, \
           a.credits_period_start AS period_start, a.credits_epoch AS epoch, a.credits_own AS own, \
           p.credits_refill AS plan_refill, \
           (SELECT CAST(COALESCE(SUM(l.granted - l.spent), 0) AS BIGINT) FROM credit_leases l \
             WHERE l.scope = 'account' AND l.id = a.id AND l.epoch = a.credits_epoch) AS leased \
           FROM accounts a LEFT JOIN plans p ON p.name = a.plan WHERE a.id = $1",
    write: "UPDATE accounts SET credits_remaining = $1, credits_period_start = $2, credits_epoch = $3 WHERE id = $4",
    configure: "UPDATE accounts SET credits_remaining = $1, credits_refill = $2, credits_period_start = $3, \
                credits_epoch = credits_epoch + 1, updated_at = $4, credits_own = $6 WHERE id = $5 \
                RETURNING credits_epoch",
};
pub(crate) const LEASE: &str =
    "SELECT epoch, granted, spent FROM credit_leases WHERE scope = $1 AND id = $2 AND holder = $3";
pub(crate) const PUT_LEASE: &str = "INSERT INTO credit_leases (scope, id, holder, epoch, granted, spent, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (scope, id, holder) DO UPDATE SET epoch = excluded.epoch, \
     granted = excluded.granted, spent = excluded.spent, expires_at = excluded.expires_at";
/// Adds to a lease of the current epoch, in place (a concurrent report of what was spent, which
/// adds to `spent` in place too, is kept).
pub(crate) const ADD_LEASE_GRANT: &str = "UPDATE credit_leases SET granted = granted + $5, expires_at = $6 \
     WHERE scope = $1 AND id = $2 AND holder = $3 AND epoch = $4";
/// Reports of spent credits that give nothing back: their lease rows alone, in place, from a
/// `batch (scope, id, epoch, spent)` each backend makes its own way (`Dialect::add_spent`), with
/// `{holder}` and `{expires_at}` the placeholders of the holder and of the lease's new end.
macro_rules! add_leases_spent {
    ($holder:literal, $expires_at:literal) => {
        concat!(
            "UPDATE credit_leases SET spent = credit_leases.spent + batch.spent, expires_at = ",
            $expires_at,
            " FROM batch WHERE credit_leases.scope = batch.scope AND credit_leases.id = batch.id \
             AND credit_leases.holder = ",
            $holder,
            " AND credit_leases.epoch = batch.epoch"
        )
    };
}
pub(crate) use add_leases_spent;
pub(crate) const DELETE_LEASE: &str = "DELETE FROM credit_leases WHERE scope = $1 AND id = $2 AND holder = $3";
/// Ends a balance's leases expired at `$3`, returning them.
pub(crate) const TAKE_EXPIRED_LEASES: &str = "DELETE FROM credit_leases \
     WHERE scope = $1 AND id = $2 AND expires_at < $3 RETURNING epoch, granted, spent";
pub(crate) const EXPIRED_LEASE_SCOPES: &str = "SELECT DISTINCT scope, id FROM credit_leases WHERE expires_at < $1";
pub(crate) const ADJUSTMENT: &str =
    "SELECT kind, amount FROM credit_adjustments WHERE scope = $1 AND id = $2 AND idempotency_key = $3";
pub(crate) const INSERT_ADJUSTMENT: &str = "INSERT INTO credit_adjustments \
     (scope, id, idempotency_key, kind, amount, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const PRUNE_ADJUSTMENTS: &str = "DELETE FROM credit_adjustments WHERE created_at < $1";

/// The statements of one kind of balance (`CREDENTIAL_BALANCE`, `ACCOUNT_BALANCE`).
pub(crate) struct BalanceStatements {
    /// The balance (`$1`: the id).
    pub(crate) read: &'static str,
    /// Writes what a transaction decided: remaining, period start, epoch (`$4`: the id).
    pub(crate) write: &'static str,
    /// Sets the quota: remaining, refill, period start, `updated_at` (`$5`: the id; an
    /// account's `$6`: whether it is its own), moving the epoch.
    pub(crate) configure: &'static str,
}

// The change feed (appending to it differs: see each backend's `record_change`).
pub(crate) const CHANGES_SINCE: &str =
    "SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const PRUNE_CHANGES: &str = "DELETE FROM changes WHERE at < $1 AND seq < (SELECT MAX(seq) FROM changes)";

// Signing keys and settings.
pub(crate) const SIGNING_KEYS: &str = "SELECT kid, created_at, retired_at FROM signing_keys ORDER BY created_at, kid";
pub(crate) const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys (kid, created_at) VALUES ($1, $2)";
pub(crate) const RETIRE_SIGNING_KEY: &str = "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1) \
     WHERE kid = $2 RETURNING kid, created_at, retired_at";
pub(crate) const SETTING: &str = "SELECT value FROM settings WHERE name = $1";
/// Deletes a setting and returns its value: whoever gets the value took it, once.
pub(crate) const TAKE_SETTING: &str = "DELETE FROM settings WHERE name = $1 RETURNING value";
/// Settings with a name in [$1, $2) (a prefix's range, by the primary key) written before $3.
pub(crate) const PRUNE_SETTINGS: &str = "DELETE FROM settings WHERE name >= $1 AND name < $2 AND updated_at < $3";

/// The end of the range of names starting with `prefix` (its last character moved one up), for
/// [`PRUNE_SETTINGS`]; `None` for an empty prefix or one ending in the last character.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    chars.push(char::from_u32(last as u32 + 1)?);
    Some(chars.into_iter().collect())
}
pub(crate) const INSERT_SETTING: &str =
    "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
pub(crate) const PUT_SETTING: &str = "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

// The console.
pub(crate) const CONSOLE_ACCOUNT: &str =
    concat!("SELECT ", account_columns!(), ", role, password_hash FROM accounts WHERE id = $1");
pub(crate) const SET_PASSWORD_HASH: &str = "UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3";
pub(crate) const SET_ROLE: &str = "UPDATE accounts SET role = $1, updated_at = $2 WHERE id = $3";
pub(crate) const INSERT_SESSION: &str =
    "INSERT INTO console_sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub(crate) const SESSION: &str = "SELECT a.id, a.uid, a.email, a.first_name, a.status, a.ban_reason, \
     a.plan, a.ratelimits, a.credits_own, a.credits_refill, a.credits_epoch, a.ip_allowlist, a.created_at, a.updated_at, a.role, s.created_at AS session_created_at, s.expires_at AS session_expires_at \
     FROM console_sessions s JOIN accounts a ON a.id = s.account_id \
     WHERE s.token_hash = $1 AND s.expires_at > $2";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM console_sessions WHERE token_hash = $1";
pub(crate) const DELETE_ACCOUNT_SESSIONS: &str = "DELETE FROM console_sessions WHERE account_id = $1";
pub(crate) const PRUNE_SESSIONS: &str = "DELETE FROM console_sessions WHERE expires_at <= $1";

/// A `LIKE` pattern matching `query` anywhere, its wildcards escaped with `\`.
pub(crate) fn like_pattern(query: &str) -> String {
    let escaped = query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// What setting an account's status writes: the `ban_reason` column and the event's kind.
pub(crate) fn status_change(status: AccountStatus, reason: Option<&str>) -> (Option<&str>, &'static str) {
    match status {
        AccountStatus::Banned => (reason, "banned"),
        AccountStatus::Active => (None, "unbanned"),
    }
}

/// A write by key that touched no row: nothing has that key.
pub(crate) fn found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Any conflict of an account insert is a taken email (the id is random).
pub(crate) fn email_taken(e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict(_) => StoreError::Conflict("an account with this email already exists".into()),
        e => e,
    }
}

/// A set of rate limits as stored: its JSON text.
pub(crate) fn ratelimits_json(set: &[RateLimit]) -> Result<String> {
    serde_json::to_string(set).map_err(|e| StoreError::Other(format!("cannot encode rate limits: {e}")))
}

/// A set of rate limits as an account or a credential stores it: `NULL` when empty.
pub(crate) fn optional_ratelimits_json(set: &[RateLimit]) -> Result<Option<String>> {
    if set.is_empty() { Ok(None) } else { ratelimits_json(set).map(Some) }
}

/// A credits refill as stored: its JSON text (`NULL`: none).
pub(crate) fn refill_json(refill: Option<&Refill>) -> Result<Option<String>> {
    refill
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Other(format!("cannot encode a credits refill: {e}")))
}

/// Whether a statement failed on a foreign key (e.g. an account set on a plan deleted meanwhile).
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

pub(crate) fn no_plan(name: &str) -> StoreError {
    StoreError::Conflict(format!("no plan named {name:?}"))
}

/// A plan that cannot be deleted: `accounts` are on it (`None`: some, as a foreign key said).
pub(crate) fn plan_in_use(name: &str, accounts: Option<i64>) -> StoreError {
    StoreError::Conflict(match accounts {
        Some(1) => format!("plan {name:?} is used by 1 account"),
        Some(n) => format!("plan {name:?} is used by {n} accounts"),
        None => format!("plan {name:?} is used by accounts"),
    })
}
