//! Rows as both backends read them, and their one conversion into the domain types.
//!
//! Each struct derives [`sqlx::FromRow`] for any [`sqlx::Row`], so a `SqliteRow` and a `PgRow`
//! decode into the same struct; its fields are named after the columns the statements select.
//! Integer columns are read at the width PostgreSQL stores them: `generation` and `day` are
//! `INTEGER` (32 bits) there, and SQLite's `INTEGER` decodes into an `i32` too (checked).

use std::str::FromStr;

use keygate_core::ClientId;
use keygate_core::credits::{CreditsPolicy, Refill};
use keygate_core::decide::{AccountState, CredentialState};
use keygate_core::model::{
    Account, AccountStatus, Credential, CredentialStatus, KeyRole, Meta, Plan, SecretGeneration,
};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::{RateLimit, account_limits};

use crate::credits::Balance;
use crate::{
    AccountEvent, AuthBundle, Change, ConsoleAccount, ConsoleSession, CreditScope, Entity, Result, Role, SigningKey,
    StoreError,
};

pub(crate) fn parse_id<T: FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| StoreError::Other(format!("malformed id in database: {s:?}")))
}

fn account_status(s: &str) -> Result<AccountStatus> {
    AccountStatus::parse(s).ok_or_else(|| StoreError::Other("bad account status".into()))
}

fn credential_status(s: &str) -> Result<CredentialStatus> {
    CredentialStatus::parse(s).ok_or_else(|| StoreError::Other("bad credential status".into()))
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| StoreError::Other("bad account role".into()))
}

/// A set of rate limits from its JSON text (`NULL`: none).
fn ratelimits(s: Option<&str>) -> Result<Vec<RateLimit>> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => {
            serde_json::from_str(s).map_err(|e| StoreError::Other(format!("malformed rate limits in database: {e}")))
        }
    }
}

/// A credits refill from its JSON text (`NULL`: none).
fn refill(s: Option<&str>) -> Result<Option<Refill>> {
    s.map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Other(format!("malformed credits refill in database: {e}")))
}

/// Words stored joined by spaces (`NULL`: none).
fn words(s: Option<&str>) -> Vec<String> {
    s.unwrap_or_default().split_whitespace().map(str::to_owned).collect()
}

/// Networks stored joined by spaces (`NULL`: none).
fn cidrs(s: Option<&str>) -> Result<Vec<Cidr>> {
    s.unwrap_or_default()
        .split_whitespace()
        .map(|w| w.parse().map_err(|e| StoreError::Other(format!("malformed allowlist in database: {e}"))))
        .collect()
}

fn meta(s: Option<&str>) -> Result<Option<Meta>> {
    s.map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Other(format!("malformed credential meta in database: {e}")))
}

/// What a credential may do and when (`sql::credential_lifecycle_columns!`).
#[derive(sqlx::FromRow)]
pub(crate) struct LifecycleRow {
    name: Option<String>,
    meta: Option<String>,
    expires_at: Option<i64>,
    enabled: bool,
    permissions: Option<String>,
    ip_allowlist: Option<String>,
}

/// A role a credential holds (`sql::CREDENTIAL_ROLES`).
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialRoleRow {
    role: String,
    permissions: String,
}

/// `roles`.
#[derive(sqlx::FromRow)]
pub(crate) struct RoleRow {
    name: String,
    permissions: String,
    created_at: i64,
    updated_at: i64,
}

impl RoleRow {
    pub(crate) fn into_role(self) -> KeyRole {
        KeyRole {
            permissions: words(Some(&self.permissions)),
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An own credits quota: its policy when it has one.
fn own_credits(own: bool, refill_text: Option<&str>, epoch: i64) -> Result<Option<CreditsPolicy>> {
    Ok(if own { Some(CreditsPolicy { refill: refill(refill_text)?, epoch }) } else { None })
}

/// The credits of a credential or an account of its own (`sql::credential_credits_columns!`, and
/// the same names among `sql::account_columns!`).
#[derive(sqlx::FromRow)]
pub(crate) struct OwnCreditsRow {
    credits_own: bool,
    credits_refill: Option<String>,
    credits_epoch: i64,
}

impl OwnCreditsRow {
    fn policy(&self) -> Result<Option<CreditsPolicy>> {
        own_credits(self.credits_own, self.credits_refill.as_deref(), self.credits_epoch)
    }
}

/// Parses `generation:expires_at` pairs joined by commas (expiry empty when none), as the
/// backends' bundle queries aggregate them.
fn parse_generations(s: Option<&str>) -> Result<Vec<SecretGeneration>> {
    let bad = || StoreError::Other("malformed generation list".into());
    s.unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (g, e) = p.split_once(':').ok_or_else(bad)?;
            Ok(SecretGeneration {
                generation: g.parse().map_err(|_| bad())?,
                expires_at: if e.is_empty() { None } else { Some(e.parse().map_err(|_| bad())?) },
            })
        })
        .collect()
}

/// `accounts`, the columns of `sql::account_columns!`.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    id: String,
    uid: i64,
    email: String,
    first_name: String,
    status: String,
    ban_reason: Option<String>,
    plan: Option<String>,
    ratelimits: Option<String>,
    #[sqlx(flatten)]
    credits: OwnCreditsRow,
    ip_allowlist: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl AccountRow {
    pub(crate) fn into_account(self) -> Result<Account> {
        Ok(Account {
            credits: self.credits.policy()?,
            credits_epoch: self.credits.credits_epoch,
            id: parse_id(&self.id)?,
            uid: self.uid,
            email: self.email,
            first_name: self.first_name,
            status: account_status(&self.status)?,
            ban_reason: self.ban_reason,
            ratelimits: ratelimits(self.ratelimits.as_deref())?,
            plan: self.plan,
            ip_allowlist: cidrs(self.ip_allowlist.as_deref())?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// An account with its console login: `role, password_hash` after the account's columns.
#[derive(sqlx::FromRow)]
pub(crate) struct ConsoleAccountRow {
    #[sqlx(flatten)]
    account: AccountRow,
    role: String,
    password_hash: Option<String>,
}

impl ConsoleAccountRow {
    pub(crate) fn into_console_account(self) -> Result<ConsoleAccount> {
        Ok(ConsoleAccount {
            account: self.account.into_account()?,
            role: role(&self.role)?,
            password_hash: self.password_hash,
        })
    }
}

/// A console session joined with its account.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    account: AccountRow,
    role: String,
    session_created_at: i64,
    session_expires_at: i64,
}

impl SessionRow {
    pub(crate) fn into_session(self) -> Result<ConsoleSession> {
        Ok(ConsoleSession {
            account: self.account.into_account()?,
            role: role(&self.role)?,
            created_at: self.session_created_at,
            expires_at: self.session_expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    kind: String,
    reason: Option<String>,
    actor: String,
    at: i64,
}

impl EventRow {
    pub(crate) fn into_event(self) -> AccountEvent {
        AccountEvent { kind: self.kind, reason: self.reason, actor: self.actor, at: self.at }
    }
}

/// `credentials`, the columns of `sql::CREDENTIAL`.
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialRow {
    client_id: String,
    account_id: String,
    status: String,
    generation: i32,
    hint: String,
    created_at: i64,
    updated_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    ratelimits: Option<String>,
    #[sqlx(flatten)]
    credits: OwnCreditsRow,
    #[sqlx(flatten)]
    lifecycle: LifecycleRow,
}

impl CredentialRow {
    /// The credential, with its live secret generations (read by `sql::LIVE_GENERATIONS`) and
    /// its roles (`sql::CREDENTIAL_ROLES`).
    pub(crate) fn into_credential(self, live: Vec<GenerationRow>, roles: Vec<CredentialRoleRow>) -> Result<Credential> {
        let l = self.lifecycle;
        let role_permissions = roles.iter().flat_map(|r| words(Some(&r.permissions))).collect();
        Ok(Credential {
            name: l.name,
            meta: meta(l.meta.as_deref())?,
            expires_at: l.expires_at,
            enabled: l.enabled,
            permissions: words(l.permissions.as_deref()),
            roles: roles.into_iter().map(|r| r.role).collect(),
            ip_allowlist: cidrs(l.ip_allowlist.as_deref())?,
            role_permissions,
            client_id: parse_id(&self.client_id)?,
            account_id: parse_id(&self.account_id)?,
            status: credential_status(&self.status)?,
            generation: self.generation as u32,
            hint: self.hint,
            live_generations: live.into_iter().map(GenerationRow::into_generation).collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
            ratelimits: ratelimits(self.ratelimits.as_deref())?,
            credits: self.credits.policy()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct GenerationRow {
    generation: i32,
    expires_at: Option<i64>,
}

impl GenerationRow {
    fn into_generation(self) -> SecretGeneration {
        SecretGeneration { generation: self.generation as u32, expires_at: self.expires_at }
    }
}

/// What a secret hash belongs to.
#[derive(sqlx::FromRow)]
pub(crate) struct SecretRow {
    client_id: String,
    generation: i32,
}

impl SecretRow {
    pub(crate) fn into_secret(self) -> Result<(ClientId, u32)> {
        Ok((parse_id(&self.client_id)?, self.generation as u32))
    }
}

/// An account's state joined with its plan: the columns of `sql::account_state_columns!`.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountStateRow {
    account_id: String,
    uid: i64,
    email: String,
    first_name: String,
    account_status: String,
    plan: Option<String>,
    account_ratelimits: Option<String>,
    /// `NULL` when the account has no plan.
    plan_ratelimits: Option<String>,
    account_credits_own: bool,
    account_credits_refill: Option<String>,
    account_credits_epoch: i64,
    /// The plan's credits refill (`NULL` too when the account has no plan).
    plan_credits: Option<String>,
    account_ip_allowlist: Option<String>,
}

impl AccountStateRow {
    /// What `AccountState::new` makes of the account and its plan's limits and credits refill.
    pub(crate) fn into_state(self) -> Result<AccountState> {
        let epoch = self.account_credits_epoch;
        let own_credits = own_credits(self.account_credits_own, self.account_credits_refill.as_deref(), epoch)?;
        let plan_credits = refill(self.plan_credits.as_deref())?;
        let own = ratelimits(self.account_ratelimits.as_deref())?;
        let plan_limits = match &self.plan_ratelimits {
            Some(text) => Some(ratelimits(Some(text))?),
            None => None,
        };
        Ok(AccountState {
            id: parse_id(&self.account_id)?,
            uid: self.uid,
            email: self.email,
            first_name: self.first_name,
            status: account_status(&self.account_status)?,
            ratelimits: account_limits(self.plan.as_deref().zip(plan_limits.as_deref()), &own),
            credits: own_credits.or(plan_credits.map(|r| CreditsPolicy { refill: Some(r), epoch })),
            ip_allowlist: cidrs(self.account_ip_allowlist.as_deref())?,
        })
    }
}

/// The row of a backend's `auth_bundle` query: the presented generation, the credential with its
/// live generations aggregated into `gens` and its own rate limits, and the account's state.
#[derive(sqlx::FromRow)]
pub(crate) struct BundleRow {
    presented: i32,
    client_id: String,
    status: String,
    gens: Option<String>,
    ratelimits: Option<String>,
    #[sqlx(flatten)]
    credits: OwnCreditsRow,
    #[sqlx(flatten)]
    lifecycle: LifecycleRow,
    /// The permissions of its roles, joined by spaces.
    role_permissions: Option<String>,
    #[sqlx(flatten)]
    account: AccountStateRow,
}

impl BundleRow {
    pub(crate) fn into_bundle(self) -> Result<AuthBundle> {
        let client_id: ClientId = parse_id(&self.client_id)?;
        let account = self.account.into_state()?;
        let l = self.lifecycle;
        let own = words(l.permissions.as_deref());
        let from_roles = words(self.role_permissions.as_deref());
        Ok(AuthBundle {
            generation: self.presented as u32,
            credential: CredentialState {
                client_id,
                account_id: account.id,
                status: credential_status(&self.status)?,
                generations: parse_generations(self.gens.as_deref())?,
                ratelimits: ratelimits(self.ratelimits.as_deref())?,
                credits: self.credits.policy()?,
                enabled: l.enabled,
                expires_at: l.expires_at,
                grants: keygate_core::decide::grants(&own, &from_roles),
                ip_allowlist: cidrs(l.ip_allowlist.as_deref())?,
                name: l.name,
                meta: l.meta,
            },
            account,
        })
    }
}

/// `plans`, the columns of `sql::plan_columns!`.
#[derive(sqlx::FromRow)]
pub(crate) struct PlanRow {
    name: String,
    ratelimits: String,
    credits_refill: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl PlanRow {
    pub(crate) fn into_plan(self) -> Result<Plan> {
        Ok(Plan {
            ratelimits: ratelimits(Some(&self.ratelimits))?,
            credits: refill(self.credits_refill.as_deref())?,
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A balance's row (`sql::CREDENTIAL_BALANCE`, `sql::ACCOUNT_BALANCE`).
#[derive(sqlx::FromRow)]
pub(crate) struct BalanceRow {
    remaining: Option<i64>,
    refill: Option<String>,
    period_start: Option<i64>,
    epoch: i64,
    own: bool,
    plan_refill: Option<String>,
    leased: i64,
}

impl BalanceRow {
    pub(crate) fn into_balance(self) -> Result<Balance> {
        // An own quota refills by its own refill, else the balance follows the plan's.
        let refill = refill(if self.own { self.refill.as_deref() } else { self.plan_refill.as_deref() })?;
        Ok(Balance {
            remaining: self.remaining,
            refill,
            own: self.own,
            period_start: self.period_start,
            epoch: self.epoch,
            leased: self.leased,
            changed: false,
        })
    }
}

/// A lease of credits (`sql::LEASE`, `sql::TAKE_EXPIRED_LEASES`).
#[derive(sqlx::FromRow, Debug, Clone, Copy)]
pub(crate) struct LeaseRow {
    pub(crate) epoch: i64,
    pub(crate) granted: i64,
    pub(crate) spent: i64,
}

/// The balance a lease is of (`sql::EXPIRED_LEASE_SCOPES`).
#[derive(sqlx::FromRow)]
pub(crate) struct LeaseScopeRow {
    scope: String,
    id: String,
}

impl LeaseScopeRow {
    pub(crate) fn into_scope(self) -> Result<CreditScope> {
        match self.scope.as_str() {
            "credential" => Ok(CreditScope::Credential(parse_id(&self.id)?)),
            "account" => Ok(CreditScope::Account(parse_id(&self.id)?)),
            other => Err(StoreError::Other(format!("bad credit lease scope {other:?}"))),
        }
    }
}

/// An adjustment made with an idempotency key (`sql::ADJUSTMENT`).
#[derive(sqlx::FromRow)]
pub(crate) struct AdjustmentRow {
    pub(crate) kind: String,
    pub(crate) amount: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChangeRow {
    seq: i64,
    entity: String,
    entity_id: String,
}

impl ChangeRow {
    pub(crate) fn into_change(self) -> Result<Change> {
        Ok(Change {
            seq: self.seq,
            entity: Entity::parse(&self.entity).unwrap_or(Entity::Unknown),
            entity_id: self.entity_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SigningKeyRow {
    kid: String,
    created_at: i64,
    retired_at: Option<i64>,
}

impl SigningKeyRow {
    pub(crate) fn into_signing_key(self) -> SigningKey {
        SigningKey { kid: self.kid, created_at: self.created_at, retired_at: self.retired_at }
    }
}

/// `audit_log`, the columns of `audit::audit_columns!`.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: i64,
    actor_kind: String,
    actor: String,
    action: String,
    target_kind: String,
    target: String,
    account_id: Option<String>,
    before: Option<String>,
    after: Option<String>,
    source_ip: Option<String>,
    request_id: Option<String>,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> Result<keygate_core::audit::AuditEntry> {
        use keygate_core::audit::{ActorKind, TargetKind};
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>> {
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Other(format!("audit entry: {e}"))))
                .transpose()
        };
        Ok(keygate_core::audit::AuditEntry {
            id: self.id,
            at: self.at,
            actor_kind: ActorKind::parse(&self.actor_kind)
                .ok_or_else(|| StoreError::Other(format!("unknown actor kind {:?}", self.actor_kind)))?,
            actor: self.actor,
            action: self.action,
            target_kind: TargetKind::parse(&self.target_kind)
                .ok_or_else(|| StoreError::Other(format!("unknown target kind {:?}", self.target_kind)))?,
            target: self.target,
            account_id: self.account_id,
            before: json(self.before)?,
            after: json(self.after)?,
            source_ip: self.source_ip,
            request_id: self.request_id,
        })
    }
}
