//! Administrative operations, shared by the admin HTTP API and the CLI so both validate and
//! behave the same. Every write tells the local authenticator at once (when there is one);
//! other processes learn of it through the change feed.

use std::sync::Arc;
use std::time::Duration;

use keygate_core::model::{Account, AccountStatus, Credential};
use keygate_core::{AccountId, ApiKey, ClientId, SecretHasher};
use keygate_store::{AccountEvent, Entity, NewAccount, Role, Store, now_ms};

use crate::auth::Authenticator;
use crate::console::Passwords;
use crate::error::ApiError;

#[derive(Clone)]
pub struct Ops {
    store: Arc<dyn Store>,
    hasher: SecretHasher,
    auth: Option<Arc<Authenticator>>,
}

/// A credential with its secret, as shown once at creation or rotation.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCredential {
    pub client_id: ClientId,
    /// The API key, also the legacy `clientSecret`. Shown once; keygate keeps only its hash.
    pub api_key: String,
    pub credential: Credential,
}

pub fn validate_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim();
    let bad = || ApiError::BadRequest("email must look like name@example.com".into());
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

fn validate_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("firstName must be at most 100 printable characters".into()));
    }
    Ok(name.to_owned())
}

pub fn parse_account_id(s: &str) -> Result<AccountId, ApiError> {
    s.parse().map_err(|_| ApiError::BadRequest("account id must be 24 lowercase hexadecimal characters".into()))
}

pub fn parse_client_id(s: &str) -> Result<ClientId, ApiError> {
    s.parse().map_err(|_| ApiError::BadRequest("clientId must be 24 lowercase hexadecimal characters".into()))
}

fn not_found(what: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |e| match e {
        ApiError::NotFound(_) => ApiError::NotFound(what),
        e => e,
    }
}

impl Ops {
    pub fn new(store: Arc<dyn Store>, hasher: SecretHasher, auth: Option<Arc<Authenticator>>) -> Self {
        Self { store, hasher, auth }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn changed(&self, entity: Entity, id: &str) {
        if let Some(auth) = &self.auth {
            auth.invalidate(entity, id);
        }
    }

    pub async fn create_account(&self, email: &str, first_name: &str) -> Result<Account, ApiError> {
        let new = NewAccount { email: validate_email(email)?, first_name: validate_name(first_name)? };
        let account = self.store.create_account(&new).await?;
        self.changed(Entity::Account, &account.id.to_hex());
        Ok(account)
    }

    pub async fn list_accounts(
        &self,
        query: Option<&str>,
        limit: Option<u32>,
        after: Option<i64>,
    ) -> Result<Vec<Account>, ApiError> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
        }
        Ok(self.store.list_accounts(query.filter(|q| !q.is_empty()), limit, after).await?)
    }

    pub async fn get_account(&self, id: AccountId) -> Result<(Account, Vec<AccountEvent>), ApiError> {
        let account = self.store.get_account(id).await.map_err(ApiError::from).map_err(not_found("account"))?;
        Ok((account, self.store.account_events(id).await?))
    }

    pub async fn set_banned(
        &self,
        id: AccountId,
        banned: bool,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Account, ApiError> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(ApiError::BadRequest("reason must be at most 500 characters".into()));
        }
        let status = if banned { AccountStatus::Banned } else { AccountStatus::Active };
        let account = self
            .store
            .set_account_status(id, status, reason, actor)
            .await
            .map_err(ApiError::from)
            .map_err(not_found("account"))?;
        self.changed(Entity::Account, &id.to_hex());
        Ok(account)
    }

    pub async fn create_credential(&self, account: AccountId) -> Result<IssuedCredential, ApiError> {
        let key = ApiKey::generate();
        let client_id = ClientId::generate((now_ms() / 1000) as u64);
        let credential = self
            .store
            .create_credential(account, client_id, &self.hasher.hash(key.expose()), &key.hint())
            .await
            .map_err(ApiError::from)
            .map_err(not_found("account"))?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(IssuedCredential { client_id, api_key: key.expose().to_owned(), credential })
    }

    pub async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>, ApiError> {
        self.store.get_account(account).await.map_err(ApiError::from).map_err(not_found("account"))?;
        Ok(self.store.list_credentials(account).await?)
    }

    pub async fn get_credential(&self, client_id: ClientId) -> Result<Credential, ApiError> {
        self.store.get_credential(client_id).await.map_err(ApiError::from).map_err(not_found("credential"))
    }

    pub async fn revoke_credential(&self, client_id: ClientId) -> Result<Credential, ApiError> {
        let c =
            self.store.revoke_credential(client_id).await.map_err(ApiError::from).map_err(not_found("credential"))?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(c)
    }

    /// New secret for the same clientId; the old one (and its tokens) keep working for `grace`.
    pub async fn rotate_credential(&self, client_id: ClientId, grace: Duration) -> Result<IssuedCredential, ApiError> {
        if grace > Duration::from_secs(90 * 86_400) {
            return Err(ApiError::BadRequest("grace must be at most 90 days".into()));
        }
        let key = ApiKey::generate();
        let until = (!grace.is_zero()).then(|| now_ms() + grace.as_millis() as i64);
        let credential = self
            .store
            .rotate_credential(client_id, &self.hasher.hash(key.expose()), &key.hint(), until)
            .await
            .map_err(ApiError::from)
            .map_err(not_found("credential"))?;
        self.changed(Entity::Credential, &client_id.to_hex());
        Ok(IssuedCredential { client_id, api_key: key.expose().to_owned(), credential })
    }

    // ---- Console logins (web console sign-up and the CLI) ----------------------------------

    /// Creates an account that can log in to the web console (with a password) as `role`.
    pub async fn create_login_account(
        &self,
        email: &str,
        first_name: &str,
        password: Option<&str>,
        role: Role,
        passwords: &Passwords,
    ) -> Result<Account, ApiError> {
        let new = NewAccount { email: validate_email(email)?, first_name: validate_name(first_name)? };
        let hash = match password {
            Some(p) => Some(hash_password(passwords, p).await?),
            None => None,
        };
        let account = self.store.create_console_account(&new, hash.as_deref(), role).await?;
        self.changed(Entity::Account, &account.id.to_hex());
        Ok(account)
    }

    /// Sets an account's console password; its console sessions end.
    pub async fn set_password(&self, id: AccountId, password: &str, passwords: &Passwords) -> Result<(), ApiError> {
        let hash = hash_password(passwords, password).await?;
        self.store.set_password_hash(id, Some(&hash)).await.map_err(ApiError::from).map_err(not_found("account"))
    }

    /// Makes an account an operator of the web console, or a customer again.
    pub async fn set_role(&self, id: AccountId, role: Role) -> Result<(), ApiError> {
        self.store.set_role(id, role).await.map_err(ApiError::from).map_err(not_found("account"))
    }
}

async fn hash_password(passwords: &Passwords, password: &str) -> Result<String, ApiError> {
    crate::console::password::check_policy(password).map_err(ApiError::BadRequest)?;
    passwords.hash(password).await.map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(validate_email(" a@b.co ").unwrap(), "a@b.co");
        for bad in ["", "a", "a@", "@b.co", "a@b", "a b@c.d", "a@b@c.d", "a@.b", "a@b."] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
