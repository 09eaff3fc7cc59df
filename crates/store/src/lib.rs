//! keygate's storage contract and its backends.
//!
//! [`Store`] is the one contract the server and the CLI use; [`sqlite::SqliteStore`] implements it
//! on an embedded SQLite file, [`postgres::PgStore`] on a PostgreSQL shared by several nodes. The backend is chosen once, from the database URL, by [`connect`].
//! Both backends decode the same row structs into the domain types (`rows`) and run the
//! statements the two dialects say alike from one text (`sql`); the credits transactions are
//! written once over sqlx's generic database (`credits`); what differs stays in each.
//!
//! Architecture invariants:
//! - only this crate knows SQL;
//! - every write that can change an authentication decision appends to the change feed
//!   (`changes`) in the same transaction, so every process that caches authentication state can
//!   follow it ([`Store::changes_since`]) and no write is ever invisible to a cache.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use keygate_core::audit::{Audit, AuditEntry};
use keygate_core::credits::{Adjustment, CreditBalance, CreditsConfig, CreditsPolicy, Refill};
use keygate_core::decide::{AccountState, CredentialState};
use keygate_core::model::{Account, AccountStatus, Credential, CredentialChange, KeyRole, Plan};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::RateLimit;
use keygate_core::{AccountId, ClientId, SecretHash};
use serde::Serialize;

mod audit;
mod credits;
mod keys;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;
mod usage;

pub use audit::{AuditQuery, MAX_AUDIT_PAGE};
pub use usage::{
    CredentialBucket, DAY_MS, Granularity, HOUR_MS, HOURLY_RETENTION_HOURS, UsageBucket, UsageDelta, UsageScope,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What an entry of the change feed is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Account,
    Credential,
    SigningKey,
    Setting,
    /// A plan's rate limits or credits refill changed (`entity_id` is its name): every account on
    /// it is affected.
    Plan,
    /// A role's permissions changed, or it was deleted (`entity_id` is its name): every
    /// credential holding it is affected.
    Role,
    /// An entry a newer keygate wrote, of a kind this build does not know: a follower drops its
    /// whole cache (never wrong, only slower), so that nodes of two versions can share a
    /// database during a rolling upgrade instead of this one stopping at the entry.
    Unknown,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Credential => "credential",
            Self::SigningKey => "signing_key",
            Self::Setting => "setting",
            Self::Plan => "plan",
            Self::Role => "role",
            Self::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "account" => Self::Account,
            "credential" => Self::Credential,
            "signing_key" => Self::SigningKey,
            "setting" => Self::Setting,
            "plan" => Self::Plan,
            "role" => Self::Role,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub entity: Entity,
    pub entity_id: String,
}

/// See [`Store::auth_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthBundle {
    pub generation: u32,
    pub credential: CredentialState,
    pub account: AccountState,
}

/// Whose credits balance: a credential's own, or an account's (shared by its credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditScope {
    Credential(ClientId),
    Account(AccountId),
}

impl CreditScope {
    /// The change-feed entry a write to this balance appends.
    pub fn entity(self) -> (Entity, String) {
        match self {
            Self::Credential(id) => (Entity::Credential, id.to_hex()),
            Self::Account(id) => (Entity::Account, id.to_hex()),
        }
    }
}

/// What [`Store::lease_credits`] handed a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditLease {
    /// Credits taken from the balance into the node's lease (0: the balance does not cover
    /// `need`, and nothing was taken).
    pub granted: i64,
    /// The balance's policy now (its epoch is the lease's); `None`: the scope has no credits
    /// quota (any more), so requests are not charged.
    pub policy: Option<CreditsPolicy>,
    /// What the database holds after the grant, not counting any node's lease.
    pub unleased: i64,
}

/// One lease asked for in [`Store::lease_credits_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditRequest {
    pub scope: CreditScope,
    pub need: i64,
    pub extra: i64,
}

/// What a node reports about one of its leases (see [`Store::settle_credits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditSettlement {
    pub scope: CreditScope,
    /// The epoch the credits were leased (and spent) under.
    pub epoch: i64,
    /// Credits spent since the last settlement.
    pub spent: i64,
    /// Gives what was not spent back to the balance and ends the lease.
    pub release: bool,
}

/// The answer to [`Store::adjust_credits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjusted {
    pub balance: CreditBalance,
    /// The idempotency key had been used for this adjustment before: nothing was applied now,
    /// and `balance` is the current one.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: String,
    pub first_name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AccountEvent {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub actor: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    pub kid: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
}

/// What an account may do in the web console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages its own credentials.
    Customer,
    /// Also sees every account, bans and unbans, revokes any credential.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Operator => "operator",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }
}

/// An account as the console's login sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleAccount {
    pub account: Account,
    pub role: Role,
    /// Argon2id PHC string; `None`: the account cannot log in to the console.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for ConsoleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAccount")
            .field("account", &self.account)
            .field("role", &self.role)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A live console session and the account it belongs to (read together on every console request,
/// so a ban or a demotion applies at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub account: Account,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The storage contract. Implementations must be safe to use from many tasks and many processes
/// at once (the CLI writes into the database a server is using).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("sqlite", "postgres").
    fn backend(&self) -> &'static str;
    /// Cheap liveness check of the database connection.
    async fn ping(&self) -> Result<()>;

    // Accounts.
    async fn create_account(&self, audit: &Audit, new: &NewAccount) -> Result<Account>;
    async fn get_account(&self, id: AccountId) -> Result<Account>;
    /// Accounts ordered by uid; `query` matches email or id substrings.
    async fn list_accounts(&self, query: Option<&str>, limit: u32, after_uid: Option<i64>) -> Result<Vec<Account>>;
    /// Sets the status and records an event. Banning a banned account is not an error.
    async fn set_account_status(
        &self,
        audit: &Audit,
        id: AccountId,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<Account>;
    async fn account_events(&self, id: AccountId) -> Result<Vec<AccountEvent>>;

    // Credentials.
    async fn create_credential(
        &self,
        audit: &Audit,
        account: AccountId,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
        change: &CredentialChange,
    ) -> Result<Credential>;
    async fn get_credential(&self, client_id: ClientId) -> Result<Credential>;
    async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>>;
    async fn revoke_credential(&self, audit: &Audit, client_id: ClientId) -> Result<Credential>;
    /// Applies a change to a credential's name, meta, expiry, enabled, permissions, roles,
    /// allowlist and rate limits, in one transaction. A role that does not exist: `Conflict`.
    async fn update_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        change: &CredentialChange,
    ) -> Result<Credential>;
    /// New secret generation. The one it replaces stops at `old_expires_at` (now when `None`);
    /// any older one stops now: the current key and the one before it, at most.
    async fn rotate_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
        old_expires_at: Option<i64>,
    ) -> Result<Credential>;

    // Roles (named sets of permissions). Each write appends the role to the change feed: every
    // credential holding it is reloaded.
    /// Creates or replaces a role; `true` when it was created.
    async fn put_role(&self, audit: &Audit, name: &str, permissions: &[String]) -> Result<(KeyRole, bool)>;
    async fn get_role(&self, name: &str) -> Result<KeyRole>;
    /// Every role, by name.
    async fn list_roles(&self) -> Result<Vec<KeyRole>>;
    /// Deletes a role; `Conflict` while a credential holds it.
    async fn delete_role(&self, audit: &Audit, name: &str) -> Result<()>;
    /// How many credentials hold a role.
    async fn role_holders(&self, name: &str) -> Result<u64>;
    /// Replaces an account's IP allowlist (empty: anywhere).
    async fn set_account_ip_allowlist(&self, audit: &Audit, id: AccountId, list: &[Cidr]) -> Result<Account>;

    // Rate limits and plans. Each write appends to the change feed: the credential, the account,
    // or the plan (whose accounts every process then reloads).
    /// Replaces a credential's own rate limits (empty: none).
    async fn set_credential_ratelimits(
        &self,
        audit: &Audit,
        client_id: ClientId,
        ratelimits: &[RateLimit],
    ) -> Result<Credential>;
    /// Replaces an account's own rate limits (`Some`; empty: none) and/or its plan (`Some(None)`
    /// removes it). A plan that does not exist is `Conflict`.
    async fn update_account_limits(
        &self,
        audit: &Audit,
        id: AccountId,
        ratelimits: Option<&[RateLimit]>,
        plan: Option<Option<&str>>,
    ) -> Result<Account>;
    /// Creates or replaces a plan (its rate limits and the credits refill of its accounts that
    /// have no credits of their own); `true` when it was created.
    async fn put_plan(
        &self,
        audit: &Audit,
        name: &str,
        ratelimits: &[RateLimit],
        credits: Option<&Refill>,
    ) -> Result<(Plan, bool)>;
    async fn get_plan(&self, name: &str) -> Result<Plan>;
    /// Every plan, by name.
    async fn list_plans(&self) -> Result<Vec<Plan>>;
    /// Deletes a plan; `Conflict` while an account is on it.
    async fn delete_plan(&self, audit: &Audit, name: &str) -> Result<()>;
    /// How many accounts are on a plan.
    async fn plan_accounts(&self, name: &str) -> Result<u64>;

    // Credits. A balance is a row's `remaining` (what no node holds) plus the unspent part of the
    // leases nodes hold (`credit_leases`, one per node and balance). Every write that can change
    // a decision appends to the change feed (the credential or the account).
    /// Sets a balance and its refill (`None`: removes the quota: requests are not charged). The
    /// epoch moves: leases taken before are void. `NotFound` for an unknown credential/account.
    async fn set_credits(
        &self,
        audit: &Audit,
        scope: CreditScope,
        config: Option<&CreditsConfig>,
        now_ms: i64,
    ) -> Result<()>;
    /// Adds to or sets a balance (a due refill applied first). `Set` moves the epoch, `Add` does
    /// not (leases stay valid). With an idempotency key, a second call with the same key and
    /// adjustment applies nothing and says so; the same key with another adjustment is
    /// `Conflict`. No credits quota on the scope: `Conflict`. Unknown scope: `NotFound`.
    async fn adjust_credits(
        &self,
        audit: &Audit,
        scope: CreditScope,
        adjustment: Adjustment,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<Adjusted>;
    /// The balance now (a due refill counted as done), or `None` without a quota (also for an
    /// account whose plan gives none). Unknown scope: `NotFound`.
    async fn credit_balance(&self, scope: CreditScope, now_ms: i64) -> Result<Option<CreditBalance>>;
    /// Takes credits from a balance into `holder`'s lease, in one transaction: expired leases of
    /// the balance are given back first (a node that died), a due refill is applied (the balance
    /// set to the refill amount, the epoch moved), then, if what is left covers `need`, `need`
    /// plus up to `extra` (at most half of what is left beyond `need`) is granted; else nothing.
    /// The lease expires `ttl_ms` after `now_ms` unless settled before. A lease of `holder` under
    /// an older epoch is replaced (void). Unknown scope: `NotFound`.
    async fn lease_credits(
        &self,
        holder: &str,
        scope: CreditScope,
        need: i64,
        extra: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<CreditLease>;
    /// [`Store::lease_credits`] for several balances in one transaction (a node's background
    /// refills: one commit for every balance running low). `None` for a credential or account
    /// that does not exist.
    async fn lease_credits_many(
        &self,
        holder: &str,
        requests: &[CreditRequest],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Vec<Option<CreditLease>>>;
    /// Records what `holder` spent from its leases and extends them to `now_ms + ttl_ms`; a
    /// settlement with `release` gives the unspent part back and ends the lease. A settlement
    /// whose lease is gone or under another epoch changes nothing. A release that brings a
    /// balance from zero or less to more appends to the change feed (nodes that refused with
    /// 1006 must look again). One transaction for the batch.
    async fn settle_credits(&self, holder: &str, batch: &[CreditSettlement], now_ms: i64, ttl_ms: i64) -> Result<()>;
    /// Gives back the unspent part of every lease expired at `now_ms` (their nodes stopped
    /// settling) and deletes them; returns how many. A give-back that brings a balance from zero
    /// or less to more appends to the change feed, as a release does. Also forgets idempotency
    /// keys of adjustments older than 30 days.
    async fn reclaim_credit_leases(&self, now_ms: i64) -> Result<u64>;

    // Usage by outcome, aggregated in memory by the server and written in batches (`usage.rs`).
    /// Adds each delta to its hour and to its day, in one transaction; moves each credential's
    /// `last_used_at` forward. Deltas of credentials that do not exist are skipped.
    async fn record_usage(&self, batch: &[UsageDelta]) -> Result<()>;
    /// The buckets whose start is in `[from_ms, to_ms)`, by start then outcome; an account's are
    /// summed over its credentials. Hourly buckets exist for the last [`HOURLY_RETENTION_HOURS`].
    async fn usage(
        &self,
        scope: UsageScope,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>>;
    /// As [`Store::usage`], one bucket per credential: by start, clientId, outcome.
    async fn usage_by_credential(
        &self,
        scope: UsageScope,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
    ) -> Result<Vec<CredentialBucket>>;
    /// Deletes the hourly rows before `before_hour` (hours since the epoch); daily rows stay.
    async fn prune_usage(&self, before_hour: i64) -> Result<u64>;

    // The authentication hot path's loads (behind the server's cache).
    /// The credential and secret generation a secret hash belongs to.
    async fn find_secret(&self, hash: &SecretHash) -> Result<Option<(ClientId, u32)>>;
    async fn credential_state(&self, client_id: ClientId) -> Result<Option<CredentialState>> {
        Ok(if_found(self.get_credential(client_id).await)?.map(CredentialState::from))
    }
    /// The account with its plan's rate limits.
    async fn account_state(&self, id: AccountId) -> Result<Option<AccountState>> {
        let Some(account) = if_found(self.get_account(id).await)? else { return Ok(None) };
        let plan = match &account.plan {
            Some(name) => if_found(self.get_plan(name).await)?,
            None => None,
        };
        Ok(Some(AccountState::new(account, plan.as_ref())))
    }
    /// Everything a cache miss on an API key needs, at once: the secret's generation, its
    /// credential and the owning account. Backends answer it with one query.
    async fn auth_bundle(&self, hash: &SecretHash) -> Result<Option<AuthBundle>> {
        let Some((client_id, generation)) = self.find_secret(hash).await? else { return Ok(None) };
        let Some(credential) = self.credential_state(client_id).await? else { return Ok(None) };
        let Some(account) = self.account_state(credential.account_id).await? else { return Ok(None) };
        Ok(Some(AuthBundle { generation, credential, account }))
    }

    // The change feed.
    /// Changes with `seq > after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>>;
    /// The newest change's seq (0 when none).
    async fn last_change_seq(&self) -> Result<i64>;
    /// Deletes changes older than `before_ms`, keeping the newest one.
    async fn prune_changes(&self, before_ms: i64) -> Result<u64>;
    /// A push source of change-feed wake-ups, where the backend has one (PostgreSQL's
    /// LISTEN/NOTIFY). Followers still poll: a wake-up only shortens the wait.
    async fn change_listener(&self) -> Result<Option<Box<dyn ChangeListener>>> {
        Ok(None)
    }

    // JWT signing key ids.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    async fn add_signing_key(&self, audit: &Audit, kid: &str) -> Result<SigningKey>;
    async fn retire_signing_key(&self, audit: &Audit, kid: &str) -> Result<SigningKey>;

    // Settings (e.g. the admin token's hash).
    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Sets a setting; with `only_if_absent`, returns false and changes nothing when it exists.
    async fn put_setting(&self, name: &str, value: &[u8], only_if_absent: bool) -> Result<bool>;
    /// Deletes a setting and returns its value (`None`: there was none): of several takers at
    /// once, one gets it (a single-use claim, e.g. a sign-up link).
    async fn take_setting(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Deletes the settings whose name starts with `prefix` written before `before_ms` (claims
    /// that have served their purpose, e.g. the console's forms applied once); how many.
    async fn prune_settings(&self, prefix: &str, before_ms: i64) -> Result<u64>;
    /// [`Store::put_setting`] of a setting the audit log records (the admin token's hash): the
    /// entry says `action` on the admin token, never the value.
    async fn put_audited_setting(
        &self,
        audit: &Audit,
        action: &str,
        name: &str,
        value: &[u8],
        only_if_absent: bool,
    ) -> Result<bool>;

    // The audit log (every write above that takes an `Audit` records its entry in its own
    // transaction).
    /// Entries matching the query, newest first.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>>;
    /// Deletes entries older than `before_ms` (at most 10,000 per call, the oldest); how many.
    async fn prune_audit(&self, before_ms: i64) -> Result<u64>;

    // Console: passwords, roles, sessions. None of these changes an API authentication decision,
    // so none appends to the change feed (creating an account does, as `create_account`).
    /// Creates an account with its console login (password hash, role) in one transaction.
    async fn create_console_account(
        &self,
        audit: &Audit,
        new: &NewAccount,
        password_hash: Option<&str>,
        role: Role,
    ) -> Result<Account>;
    /// The account with this email (case-insensitive), with its role and password hash.
    async fn console_account_by_email(&self, email: &str) -> Result<Option<ConsoleAccount>>;
    async fn console_account(&self, id: AccountId) -> Result<ConsoleAccount>;
    /// Sets (`None`: clears) the password hash and ends the account's console sessions.
    async fn set_password_hash(&self, audit: &Audit, id: AccountId, password_hash: Option<&str>) -> Result<()>;
    async fn set_role(&self, audit: &Audit, id: AccountId, role: Role) -> Result<()>;
    /// Stores a session by the hash of its token.
    async fn create_session(&self, token_hash: &SecretHash, account: AccountId, expires_at: i64) -> Result<()>;
    /// The session with this token hash, if it has not expired at `now`, with its account.
    async fn session(&self, token_hash: &SecretHash, now: i64) -> Result<Option<ConsoleSession>>;
    /// Ends one session (logout). Ending an unknown session is not an error.
    async fn delete_session(&self, token_hash: &SecretHash) -> Result<()>;
    /// Ends every session of an account; returns how many there were.
    async fn delete_sessions(&self, account: AccountId) -> Result<u64>;
    /// Deletes sessions expired at `now`.
    async fn prune_sessions(&self, now: i64) -> Result<u64>;
}

/// `NotFound` as `None`.
fn if_found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Wake-ups from the database when the change feed grows.
#[async_trait]
pub trait ChangeListener: Send {
    /// Waits for the next wake-up. `Ok(true)`: a change was announced. `Ok(false)`: the
    /// connection was lost and re-established, so announcements may have been missed. `Err`:
    /// the listener is broken; drop it and make a new one later.
    async fn wait(&mut self) -> Result<bool>;
}

/// Opens the store a database URL names. With `migrate`, a missing SQLite file is created and the
/// schema brought up to date; without, see [`Connect::existing`].
pub async fn connect(url: &str, migrate: bool) -> Result<std::sync::Arc<dyn Store>> {
    let how = if migrate { Connect::migrate() } else { Connect::existing() };
    how.open(url).await
}

/// How a database is opened: [`Connect::migrate`] (what `keygate serve` and `keygate migrate`
/// do) or [`Connect::existing`] (everything else: the admin CLI, a service embedding the Layer, a
/// second handle on a database in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    pub(crate) migrate: bool,
    pub(crate) short_lived: bool,
}

impl Connect {
    /// Creates a missing SQLite file and applies pending migrations (processes doing so at once
    /// take turns).
    pub fn migrate() -> Self {
        Self { migrate: true, short_lived: false }
    }

    /// Opens an existing database with every migration of this build applied, and creates or
    /// changes nothing: a missing SQLite file, a database without keygate's schema and one whose
    /// schema is behind (or was migrated by a newer keygate) are errors that say so.
    pub fn existing() -> Self {
        Self { migrate: false, short_lived: false }
    }

    /// For a process that runs a few statements, one at a time, and exits (the CLI): one
    /// connection (each new one to a remote PostgreSQL costs a TCP and often a TLS handshake),
    /// not pinged before every statement as a server's pooled connections are (it was just
    /// opened). [default: a server's pool]
    pub fn short_lived(mut self) -> Self {
        self.short_lived = true;
        self
    }

    /// Whether a missing database is created and migrations applied.
    pub fn migrates(&self) -> bool {
        self.migrate
    }

    pub async fn open(self, url: &str) -> Result<std::sync::Arc<dyn Store>> {
        if url.starts_with("sqlite:") {
            Ok(std::sync::Arc::new(sqlite::SqliteStore::open_with(url, self).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(std::sync::Arc::new(postgres::PgStore::open_with(url, self).await?))
        } else {
            Err(StoreError::Other(format!(
                "unsupported database URL scheme in {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                url.split(':').next().unwrap_or_default()
            )))
        }
    }
}

/// Checks, without changing anything, that the migrations applied to a database (`applied`:
/// version, checksum, from sqlx's `_sqlx_migrations`) are exactly this build's.
pub(crate) fn check_schema(migrator: &sqlx::migrate::Migrator, applied: &[(i64, Vec<u8>)]) -> Result<()> {
    let known: Vec<_> = migrator.iter().filter(|m| m.migration_type.is_up_migration()).collect();
    if applied.is_empty() {
        return Err(StoreError::Other(
            "the database has no keygate schema: run `keygate migrate` (or start `keygate serve`) to set it up".into(),
        ));
    }
    for (version, checksum) in applied {
        match known.iter().find(|m| m.version == *version) {
            Some(m) if m.checksum.as_ref() == checksum.as_slice() => {}
            Some(m) => {
                return Err(StoreError::Other(format!(
                    "migration {} ({}) applied to the database differs from this keygate's",
                    m.version, m.description
                )));
            }
            None => {
                return Err(StoreError::Other(format!(
                    "the database was migrated by a newer keygate (migration {version} is unknown to this one): \
                     use that keygate"
                )));
            }
        }
    }
    if known.iter().any(|m| !applied.iter().any(|(v, _)| *v == m.version)) {
        return Err(StoreError::Other(
            "the database schema is behind this keygate: run `keygate migrate` (or start `keygate serve`, which \
             migrates) first"
                .into(),
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
