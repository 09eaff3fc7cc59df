//! The admin API's token: generated at first start (or chosen by the operator), shown once, kept
//! as an HMAC in the settings table.

use keygate_core::audit::{Audit, action};
use keygate_core::key::{self, ADMIN_TOKEN_PREFIX};
use keygate_core::{MasterKey, SecretHash};
use keygate_store::{Store, StoreError};

const ADMIN_TOKEN_HASH: &str = "admin_token_hash";

/// Makes sure an admin token exists; returns a newly generated one (to print once) if it made one.
pub async fn ensure(store: &dyn Store, master: &MasterKey, audit: &Audit) -> Result<Option<String>, StoreError> {
    if store.get_setting(ADMIN_TOKEN_HASH).await?.is_some() {
        return Ok(None);
    }
    let token = key::generate(ADMIN_TOKEN_PREFIX);
    let hash = master.admin_token_hasher().hash(&token);
    let put = store.put_audited_setting(audit, action::ADMIN_TOKEN_CREATE, ADMIN_TOKEN_HASH, hash.as_bytes(), true);
    Ok(put.await?.then_some(token))
}

/// Replaces the admin token; returns the new one (to print once).
pub async fn reset(store: &dyn Store, master: &MasterKey, audit: &Audit) -> Result<String, StoreError> {
    let token = key::generate(ADMIN_TOKEN_PREFIX);
    let hash = master.admin_token_hasher().hash(&token);
    store.put_audited_setting(audit, action::ADMIN_TOKEN_RESET, ADMIN_TOKEN_HASH, hash.as_bytes(), false).await?;
    Ok(token)
}

/// The stored admin token hash, if any.
pub async fn stored_hash(store: &dyn Store) -> Result<Option<SecretHash>, StoreError> {
    Ok(store.get_setting(ADMIN_TOKEN_HASH).await?.and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok()).map(SecretHash))
}

/// What an admin API caller must present: the operator-configured token, or else the one
/// generated at first start (its hash in the database). Keeps hashes only.
pub struct AdminToken {
    hasher: keygate_core::SecretHasher,
    configured: Option<SecretHash>,
}

impl AdminToken {
    pub fn new(master: &MasterKey, configured: Option<&keygate_core::Secret>) -> Self {
        let hasher = master.admin_token_hasher();
        Self { configured: configured.map(|t| hasher.hash(t.expose())), hasher }
    }

    /// Whether `presented` is the admin token (a constant-time comparison of hashes). `false`
    /// when none exists yet.
    pub async fn matches(&self, store: &dyn Store, presented: &str) -> Result<bool, StoreError> {
        let expected = match self.configured {
            Some(hash) => hash,
            None => match stored_hash(store).await? {
                Some(hash) => hash,
                None => return Ok(false),
            },
        };
        Ok(self.hasher.hash(presented).ct_eq(&expected))
    }
}
