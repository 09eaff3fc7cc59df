//! Administrative operations, shared by the admin HTTP API, the CLI and the web console, so all
//! three validate and behave the same: accounts (create, ban, unban), credentials (create, revoke,
//! rotate), signing keys, the admin token, console logins and passwords ([`password`]). Every write
//! tells the local authenticator at once (when there is one); other processes learn of it through
//! the change feed. Errors are [`OpsError`]: domain outcomes, mapped to the protocol's envelope in
//! one place (`From<OpsError> for ApiError`).
#![forbid(unsafe_code)]

pub mod admin_token;
pub mod audit;
pub mod credits;
pub mod password;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use keygate_auth::envelope::{ApiError, Resource};
use keygate_auth::{Authenticator, secrets};
use keygate_core::audit::Audit;
use keygate_core::model::{
    Account, AccountStatus, Credential, CredentialChange, KeyRole, Plan, check_allowlist, check_permissions,
    check_role_name,
};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::{self, EffectiveLimit, RateLimit};
use keygate_core::{AccountId, ApiKey, ClientId, MasterKey, SecretHasher};
use keygate_store::{AccountEvent, Entity, NewAccount, Role, SigningKey, Store, StoreError, now_ms};

pub use password::Passwords;
pub use usage::{UsageRange, UsageRequest, UsageSummary};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The input is not acceptable; the message says why and is safe to show.
    #[error("{0}")]
    Invalid(String),
    #[error("{}", .0.not_found())]
    NotFound(Resource),
    /// The operation contradicts the current state (say, retiring the last live signing key).
    #[error("{0}")]
    Conflict(String),
    /// The store refused or failed (a duplicate email is `StoreError::Conflict`).
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Invalid(m) => Self::BadRequest(m),
            OpsError::NotFound(what) => Self::NotFound(what),
            OpsError::Conflict(m) => Self::Conflict(m),
            OpsError::Store(e) => e.into(),
            OpsError::Internal(m) => Self::Internal(m),
        }
    }
}

pub type Result<T, E = OpsError> = std::result::Result<T, E>;

/// A store result whose "not found" is about `what`.
trait OrNotFound<T> {
    fn or_not_found(self, what: Resource) -> Result<T>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: Resource) -> Result<T> {
        self.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(what),
            e => OpsError::Store(e),
        })
    }
}

#[derive(Clone)]
pub struct Ops {
    store: Arc<dyn Store>,
    master: MasterKey,
    hasher: SecretHasher,
    auth: Option<Arc<Authenticator>>,
}

/// A credential with its secret, as shown once at creation or rotation.
#[derive(Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IssuedCredential {
    pub client_id: ClientId,
    /// The API key, also the legacy `clientSecret`. Shown once; keygate keeps only its hash.
    pub api_key: String,
    pub credential: Credential,
}

pub fn validate_email(raw: &str) -> Result<String> {
    let email = raw.trim();
    let bad = || OpsError::Invalid("email must look like name@example.com".into());
    if email.len() < 3 || email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(email.to_owned())
}

/// One page of a list, and the cursor of the next one (`None`: this is the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// From `items` fetched with one more than `limit`: the extra one says a next page exists,
    /// which starts after the cursor of the last item kept.
    fn cut(items: &mut Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = if more { items.last().map(cursor) } else { None };
        Page { items: std::mem::take(items), next }
    }
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(OpsError::Invalid("limit must be between 1 and 1000".into()));
    }
    Ok(limit)
}

/// The longest grace period of a rotation.
pub const MAX_GRACE: Duration = Duration::from_secs(90 * 86_400);

/// The admin API's form of a grace period: a whole number (no leading zero) and one unit, `s`,
/// `m`, `h` or `d`, at most 90 days; empty is none. Exactly the strings [`parse_grace`] takes.
pub const GRACE_PATTERN: &str = "^$|^(([0-9]|[1-9][0-9]{1,5}|[1-6][0-9]{6}|7[0-6][0-9]{5}|77[0-6][0-9]{4}|777[0-5][0-9]{3}|7776000)s|([0-9]|[1-9][0-9]{1,4}|1[01][0-9]{4}|12[0-8][0-9]{3}|129[0-5][0-9]{2}|129600)m|([0-9]|[1-9][0-9]{1,2}|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|([0-9]|[1-8][0-9]|90)d)$";

/// Reads a grace period of the [`GRACE_PATTERN`] form ("24h", "7d", "90s").
pub fn parse_grace(s: &str) -> Result<Duration> {
    let bad = || OpsError::Invalid("grace must be a duration like \"24h\" (s, m, h or d), at most 90 days".into());
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    let Some(unit) = s.chars().last() else { return Err(bad()) };
    let digits = &s[..s.len() - unit.len_utf8()];
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(bad());
    }
    let secs = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)).ok_or_else(bad)?;
    let grace = Duration::from_secs(secs);
    if grace > MAX_GRACE {
        return Err(bad());
    }
    Ok(grace)
}

/// A plan's name: the form of a rate limit's name ([`ratelimit::NAME_PATTERN`]).
fn check_plan_name(name: &str) -> Result<()> {
    if !ratelimit::valid_name(name) {
        return Err(OpsError::Invalid(format!(
            "plan name {name:?} must be 1 to 64 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

fn bad_cursor() -> OpsError {
    OpsError::Invalid("after must be the `next` cursor of a previous page".into())
}

/// A ban's (or unban's) reason: trimmed, at most 500 characters; empty is none.
fn checked_reason(reason: Option<&str>) -> Result<Option<&str>> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(OpsError::Invalid("reason must be at most 500 characters".into()));
    }
    Ok(reason)
}

fn validate_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(OpsError::Invalid("firstName must be at most 100 printable characters".into()));
    }
    Ok(name.to_owned())
}

pub fn parse_account_id(s: &str) -> Result<AccountId> {
    s.parse().map_err(|_| OpsError::Invalid("account id must be 24 lowercase hexadecimal characters".into()))
}

pub fn parse_client_id(s: &str) -> Result<ClientId> {
    s.parse().map_err(|_| OpsError::Invalid("clientId must be 24 lowercase hexadecimal characters".into()))
}

impl Ops {
    /// Operations on `store`; `auth` is this process's authenticator, told of every write at once
    /// (the CLI has none: a server learns of its writes through the change feed).
    pub fn new(store: Arc<dyn Store>, master: &MasterKey, auth: Option<Arc<Authenticator>>) -> Self {
        Self { store, hasher: master.api_key_hasher(), master: master.clone(), auth }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn changed(&self, entity: Entity, id: &str) {
        if let Some(auth) = &self.auth {
            auth.invalidate(entity, id);
        }
    }

    pub async fn create_account(&self, audit: &Audit, email: &str, first_name: &str) -> Result<Account> {
        let new = NewAccount { email: validate_email(email)?, first_name: validate_name(first_name)? };
        let account = self.store.create_account(audit, &new).await?;
        self.changed(Entity::Account, &account.id.to_hex());
        Ok(account)
    }

    /// Accounts by uid, `limit` (1 to 1000, default 100) from after the cursor `after`;
    /// `query` matches email or id substrings.
    pub async fn list_accounts(
        &self,
        query: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<Account>> {
        let limit = page_limit(limit)?;
        let after = after.map(|a| a.parse::<i64>().ok().filter(|uid| *uid >= 0).ok_or_else(bad_cursor)).transpose()?;
        let mut items = self.store.list_accounts(query.filter(|q| !q.is_empty()), limit + 1, after).await?;
        Ok(Page::cut(&mut items, limit, |a| a.uid.to_string()))
    }

    pub async fn get_account(&self, id: AccountId) -> Result<(Account, Vec<AccountEvent>)> {
        let account = self.store.get_account(id).await.or_not_found(Resource::Account)?;
        Ok((account, self.store.account_events(id).await?))
    }

    /// Bans an account: its keys and tokens are refused (1200) at once, everywhere, and its
    /// console sessions end. Banning a banned account is not an error.
    pub async fn ban(&self, audit: &Audit, id: AccountId, reason: Option<&str>) -> Result<Account> {
        let account = self.store.set_account_status(audit, id, AccountStatus::Banned, checked_reason(reason)?);
        self.account_changed(id, account.await.or_not_found(Resource::Account)?)
    }

    /// Lifts a ban (the reason, if any, goes into the account's history).
    pub async fn unban(&self, audit: &Audit, id: AccountId, reason: Option<&str>) -> Result<Account> {
        let account = self.store.set_account_status(audit, id, AccountStatus::Active, checked_reason(reason)?);
        self.account_changed(id, account.await.or_not_found(Resource::Account)?)
    }

    fn account_changed(&self, id: AccountId, account: Account) -> Result<Account> {
        self.changed(Entity::Account, &id.to_hex());
        Ok(account)
    }

    pub async fn create_credential(&self, audit: &Audit, account: AccountId) -> Result<IssuedCredential> {
        self.create_credential_with(audit, account, CredentialChange::default()).await
    }

    /// A new credential with its name, meta, expiry, permissions, roles, allowlist and limits
    /// set in the same transaction (a key never exists without its restrictions).
    pub async fn create_credential_with(
        &self,
        audit: &Audit,
        account: AccountId,
        mut change: CredentialChange,
    ) -> Result<IssuedCredential> {
        change.normalize().map_err(OpsError::Invalid)?;
        let key = ApiKey::generate();
        let client_id = ClientId::generate((now_ms() / 1000) as u64);
        let credential = self
            .store
            .create_credential(audit, account, client_id, &self.hasher.hash(key.expose()), &key.hint(), &change)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => OpsError::NotFound(Resource::Account),
                // A role that does not exist.
                StoreError::Conflict(m) => OpsError::Invalid(m),
                e => OpsError::Store(e),
            })?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(IssuedCredential { client_id, api_key: key.expose().to_owned(), credential })
    }

    /// Every credential of an account, oldest first.
    pub async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>> {
        self.store.get_account(account).await.or_not_found(Resource::Account)?;
        Ok(self.store.list_credentials(account).await?)
    }

    /// An account's credentials by clientId (which starts with the creation time), `limit` (1 to
    /// 1000, default 100) with a clientId above `after`.
    pub async fn credentials_page(
        &self,
        account: AccountId,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<Credential>> {
        let limit = page_limit(limit)?;
        let after = after.map(|a| a.parse::<ClientId>().map_err(|_| bad_cursor())).transpose()?;
        let mut items = self.list_credentials(account).await?;
        items.sort_by_key(|c| c.client_id);
        items.retain(|c| after.is_none_or(|a| c.client_id > a));
        items.truncate(limit as usize + 1);
        Ok(Page::cut(&mut items, limit, |c| c.client_id.to_hex()))
    }

    pub async fn get_credential(&self, client_id: ClientId) -> Result<Credential> {
        self.store.get_credential(client_id).await.or_not_found(Resource::Credential)
    }

    pub async fn revoke_credential(&self, audit: &Audit, client_id: ClientId) -> Result<Credential> {
        let c = self.store.revoke_credential(audit, client_id).await.or_not_found(Resource::Credential)?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(c)
    }

    /// New secret for the same clientId; the old one (and its tokens) keep working for `grace`
    /// (at most 90 days).
    pub async fn rotate_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        grace: Duration,
    ) -> Result<IssuedCredential> {
        if grace > MAX_GRACE {
            return Err(OpsError::Invalid("grace must be at most 90 days".into()));
        }
        let key = ApiKey::generate();
        let until = (!grace.is_zero()).then(|| now_ms() + grace.as_millis() as i64);
        let credential = self
            .store
            .rotate_credential(audit, client_id, &self.hasher.hash(key.expose()), &key.hint(), until)
            .await
            .or_not_found(Resource::Credential)?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(IssuedCredential { client_id, api_key: key.expose().to_owned(), credential })
    }

    /// Changes a credential's name, meta, expiry, enabled, permissions, roles, allowlist and
    /// rate limits in one transaction; every node applies it within the feed bound (its live
    /// tokens too).
    pub async fn update_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        mut change: CredentialChange,
    ) -> Result<Credential> {
        change.normalize().map_err(OpsError::Invalid)?;
        let c = if change.is_empty() {
            self.get_credential(client_id).await?
        } else {
            self.store.update_credential(audit, client_id, &change).await.map_err(|e| match e {
                StoreError::NotFound => OpsError::NotFound(Resource::Credential),
                StoreError::Conflict(m) => OpsError::Invalid(m),
                e => OpsError::Store(e),
            })?
        };
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(c)
    }

    // ---- Roles and allowlists ----------------------------------------------------------------

    /// Creates or replaces a role; `true` when it was created. Every credential holding it has
    /// the new permissions within the feed bound.
    pub async fn put_role(&self, audit: &Audit, name: &str, permissions: Vec<String>) -> Result<(KeyRole, bool)> {
        check_role_name(name).map_err(OpsError::Invalid)?;
        let permissions = check_permissions(permissions).map_err(OpsError::Invalid)?;
        let put = self.store.put_role(audit, name, &permissions).await?;
        self.changed(Entity::Role, name);
        Ok(put)
    }

    /// A role and how many credentials hold it.
    pub async fn get_role(&self, name: &str) -> Result<(KeyRole, u64)> {
        check_role_name(name).map_err(|_| OpsError::NotFound(Resource::Role))?;
        let role = self.store.get_role(name).await.or_not_found(Resource::Role)?;
        Ok((role, self.store.role_holders(name).await?))
    }

    /// Every role, by name.
    pub async fn list_roles(&self) -> Result<Vec<KeyRole>> {
        Ok(self.store.list_roles().await?)
    }

    /// Deletes a role; refused (409) while a credential holds it.
    pub async fn delete_role(&self, audit: &Audit, name: &str) -> Result<()> {
        check_role_name(name).map_err(|_| OpsError::NotFound(Resource::Role))?;
        self.store.delete_role(audit, name).await.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(Resource::Role),
            StoreError::Conflict(m) => OpsError::Conflict(m),
            e => OpsError::Store(e),
        })?;
        self.changed(Entity::Role, name);
        Ok(())
    }

    /// Replaces the networks an account's credentials may be used from (empty: anywhere).
    pub async fn set_account_ip_allowlist(&self, audit: &Audit, id: AccountId, list: Vec<Cidr>) -> Result<Account> {
        let list = check_allowlist(list).map_err(OpsError::Invalid)?;
        let account = self.store.set_account_ip_allowlist(audit, id, &list).await.or_not_found(Resource::Account)?;
        self.account_changed(id, account)
    }

    // ---- Rate limits and plans ----------------------------------------------------------------

    /// Replaces a credential's own rate limits (the whole set; empty removes them).
    pub async fn set_credential_ratelimits(
        &self,
        audit: &Audit,
        client_id: ClientId,
        ratelimits: &[RateLimit],
    ) -> Result<Credential> {
        ratelimit::validate(ratelimits).map_err(OpsError::Invalid)?;
        let c = self
            .store
            .set_credential_ratelimits(audit, client_id, ratelimits)
            .await
            .or_not_found(Resource::Credential)?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(c)
    }

    /// Replaces an account's own rate limits (`Some`: the whole set; empty removes them) and/or
    /// its plan (`Some(None)` removes it).
    pub async fn update_account_limits(
        &self,
        audit: &Audit,
        id: AccountId,
        ratelimits: Option<&[RateLimit]>,
        plan: Option<Option<&str>>,
    ) -> Result<Account> {
        if let Some(set) = ratelimits {
            ratelimit::validate(set).map_err(OpsError::Invalid)?;
        }
        if let Some(Some(name)) = plan {
            check_plan_name(name)?;
            self.store.get_plan(name).await.map_err(|e| match e {
                StoreError::NotFound => OpsError::Invalid(format!("no plan named {name:?}")),
                e => OpsError::Store(e),
            })?;
        }
        let account = self.store.update_account_limits(audit, id, ratelimits, plan).await.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(Resource::Account),
            // The plan went away meanwhile.
            StoreError::Conflict(m) => OpsError::Invalid(m),
            e => OpsError::Store(e),
        })?;
        self.account_changed(id, account)
    }

    /// Creates or replaces a plan; `true` when it was created. Every account on it counts
    /// against the new limits at once (keeping what each has spent); `credits` is the refill of
    /// the balance of its accounts that have no credits of their own.
    pub async fn put_plan(
        &self,
        audit: &Audit,
        name: &str,
        ratelimits: &[RateLimit],
        credits: Option<&keygate_core::credits::Refill>,
    ) -> Result<(Plan, bool)> {
        check_plan_name(name)?;
        ratelimit::validate(ratelimits).map_err(OpsError::Invalid)?;
        credits::check_refill(credits)?;
        let put = self.store.put_plan(audit, name, ratelimits, credits).await?;
        self.changed(Entity::Plan, name);
        Ok(put)
    }

    /// A plan and how many accounts are on it.
    pub async fn get_plan(&self, name: &str) -> Result<(Plan, u64)> {
        check_plan_name(name).map_err(|_| OpsError::NotFound(Resource::Plan))?;
        let plan = self.store.get_plan(name).await.or_not_found(Resource::Plan)?;
        Ok((plan, self.store.plan_accounts(name).await?))
    }

    /// Every plan, by name.
    pub async fn list_plans(&self) -> Result<Vec<Plan>> {
        Ok(self.store.list_plans().await?)
    }

    /// Deletes a plan; refused (409) while accounts are on it.
    pub async fn delete_plan(&self, audit: &Audit, name: &str) -> Result<()> {
        check_plan_name(name).map_err(|_| OpsError::NotFound(Resource::Plan))?;
        self.store.delete_plan(audit, name).await.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(Resource::Plan),
            StoreError::Conflict(m) => OpsError::Conflict(m),
            e => OpsError::Store(e),
        })?;
        self.changed(Entity::Plan, name);
        Ok(())
    }

    /// The limits counted for an account's requests, and where each comes from.
    pub async fn account_limits(&self, account: &Account) -> Result<Vec<EffectiveLimit>> {
        Ok(EffectiveLimit::for_account(&self.account_state_limits(account).await?))
    }

    /// The limits a credential's requests count against, and where each comes from.
    pub async fn credential_limits(&self, credential: &Credential) -> Result<Vec<EffectiveLimit>> {
        let account = self.store.get_account(credential.account_id).await?;
        let shared = self.account_state_limits(&account).await?;
        Ok(EffectiveLimit::for_credential(&credential.ratelimits, &shared))
    }

    async fn account_state_limits(&self, account: &Account) -> Result<Vec<ratelimit::AccountLimit>> {
        let plan = match &account.plan {
            Some(name) => match self.store.get_plan(name).await {
                Ok(p) => Some(p),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        Ok(ratelimit::account_limits(
            account.plan.as_deref().zip(plan.as_ref().map(|p| p.ratelimits.as_slice())),
            &account.ratelimits,
        ))
    }

    // ---- JWT signing keys -------------------------------------------------------------------

    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        Ok(self.store.signing_keys().await?)
    }

    /// Adds a signing key: new tokens are signed with it, existing ones keep verifying.
    pub async fn rotate_signing_key(&self, audit: &Audit) -> Result<SigningKey> {
        let key = self.store.add_signing_key(audit, &secrets::new_kid()).await?;
        self.reload_keyring().await?;
        Ok(key)
    }

    /// Retires a key id: tokens signed with it stop verifying. The last live key cannot go.
    pub async fn retire_signing_key(&self, audit: &Audit, kid: &str) -> Result<SigningKey> {
        let keys = self.store.signing_keys().await?;
        let target = keys.iter().find(|k| k.kid == kid).ok_or(OpsError::NotFound(Resource::SigningKey))?;
        if target.retired_at.is_none() && keys.iter().filter(|k| k.retired_at.is_none()).count() <= 1 {
            return Err(OpsError::Conflict(format!(
                "{kid} is the only live signing key: rotate the signing key first"
            )));
        }
        let key = self.store.retire_signing_key(audit, kid).await.or_not_found(Resource::SigningKey)?;
        self.reload_keyring().await?;
        Ok(key)
    }

    async fn reload_keyring(&self) -> Result<()> {
        if let Some(auth) = &self.auth {
            auth.set_keyring(secrets::load_keyring(self.store.as_ref(), &self.master).await?);
        }
        Ok(())
    }

    // ---- The admin token --------------------------------------------------------------------

    /// Replaces the admin token; returns the new one (to show once).
    pub async fn reset_admin_token(&self, audit: &Audit) -> Result<String> {
        Ok(admin_token::reset(self.store.as_ref(), &self.master, audit).await?)
    }

    // ---- Console logins (web console sign-up and the CLI) ----------------------------------

    /// Creates an account that can log in to the web console (with a password) as `role`.
    pub async fn create_login_account(
        &self,
        audit: &Audit,
        email: &str,
        first_name: &str,
        password: Option<&str>,
        role: Role,
        passwords: &Passwords,
    ) -> Result<Account> {
        let new = check_new_login(email, first_name)?;
        let hash = match password {
            Some(p) => Some(hash_new_password(passwords, p).await?),
            None => None,
        };
        self.create_account_with_login(audit, &new, hash.as_deref(), role).await
    }

    /// [`Ops::create_login_account`] with a password hashed before ([`hash_new_password`]), e.g.
    /// at a sign-up confirmed later by email.
    pub async fn create_login_account_hashed(
        &self,
        audit: &Audit,
        email: &str,
        first_name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<Account> {
        let new = check_new_login(email, first_name)?;
        self.create_account_with_login(audit, &new, Some(password_hash), role).await
    }

    async fn create_account_with_login(
        &self,
        audit: &Audit,
        new: &NewAccount,
        password_hash: Option<&str>,
        role: Role,
    ) -> Result<Account> {
        let account = self.store.create_console_account(audit, new, password_hash, role).await?;
        self.changed(Entity::Account, &account.id.to_hex());
        Ok(account)
    }

    /// Sets an account's console password; its console sessions end.
    pub async fn set_password(
        &self,
        audit: &Audit,
        id: AccountId,
        password: &str,
        passwords: &Passwords,
    ) -> Result<()> {
        let hash = hash_new_password(passwords, password).await?;
        self.store.set_password_hash(audit, id, Some(&hash)).await.or_not_found(Resource::Account)
    }

    /// Makes an account an operator of the web console, or a customer again.
    pub async fn set_role(&self, audit: &Audit, id: AccountId, role: Role) -> Result<()> {
        self.store.set_role(audit, id, role).await.or_not_found(Resource::Account)
    }
}

/// The email and first name of a new console login, checked and trimmed.
pub fn check_new_login(email: &str, first_name: &str) -> Result<NewAccount> {
    Ok(NewAccount { email: validate_email(email)?, first_name: validate_name(first_name)? })
}

/// A new password checked against the policy, and its hash.
pub async fn hash_new_password(passwords: &Passwords, password: &str) -> Result<String> {
    password::check_policy(password).map_err(OpsError::Invalid)?;
    passwords.hash(password).await.map_err(|e| OpsError::Internal(format!("hashing a password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods() {
        for (s, secs) in [("", 0), ("0s", 0), ("2s", 2), ("24h", 86_400), ("7d", 604_800), ("90d", 7_776_000)] {
            assert_eq!(parse_grace(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for s in ["7776000s", "129600m", "2160h"] {
            assert_eq!(parse_grace(s).unwrap(), MAX_GRACE, "{s}");
        }
        for bad in [
            "soon", "1h30m", "91d", "7776001s", "129601m", "2161h", "01h", "h", "-1s", "1 h", "1.5h", "1w", "\u{84}",
            "1é",
        ] {
            assert!(parse_grace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(validate_email(" a@b.co ").unwrap(), "a@b.co");
        for bad in ["", "a", "a@", "@b.co", "a@b", "a b@c.d", "a@b@c.d", "a@.b", "a@b."] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
