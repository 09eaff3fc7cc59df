//! Records of the domain, as the store returns them and the admin API shows them.
//! Times are Unix milliseconds (the vendor's convention, e.g. webhook `timestamp`).

use serde::{Deserialize, Serialize};

use crate::credits::{CreditsPolicy, Refill};
use crate::ids::{AccountId, ClientId};
use crate::net::Cidr;
use crate::ratelimit::RateLimit;

/// A credential's metadata: a JSON object, at most [`MAX_META_BYTES`] as compact JSON.
pub type Meta = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Banned,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Banned => "banned",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "banned" => Some(Self::Banned),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CredentialStatus {
    Active,
    Revoked,
}

impl CredentialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: AccountId,
    pub uid: i64,
    pub email: String,
    pub first_name: String,
    pub status: AccountStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ban_reason: Option<String>,
    /// The plan whose rate limits the account's requests count against (shared by its credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The account's own rate limits, shared by its credentials; each overrides the plan's limit
    /// of the same name.
    pub ratelimits: Vec<RateLimit>,
    /// The networks its credentials may be used from (empty: anywhere); a credential's own
    /// allowlist applies as well.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["203.0.113.0/24", "2001:db8::/32"])))]
    pub ip_allowlist: Vec<Cidr>,
    /// Its own credits balance, if it has one (the admin API shows the balance itself).
    #[serde(skip)]
    pub credits: Option<CreditsPolicy>,
    /// The epoch of its balance, also when the balance follows its plan's refill.
    #[serde(skip)]
    pub credits_epoch: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A named set of rate limits assigned to accounts (`free`, `pro`, ...). Changing it applies to
/// every account on it at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "pro"))]
    pub name: String,
    pub ratelimits: Vec<RateLimit>,
    /// How the balance of an account on the plan refills, unless the account has credits of its
    /// own (`None`: the plan gives no credits quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<Refill>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One secret generation of a credential: the current one has no expiry; after a rotation
/// with a grace period, the previous one carries the time it stops working.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretGeneration {
    pub generation: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl SecretGeneration {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|t| now_ms < t)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub status: CredentialStatus,
    /// The current secret generation (1 at creation, +1 per rotation).
    pub generation: u32,
    /// Display hint of the current secret, e.g. `kgk_...Ab12`. Never the secret.
    pub hint: String,
    /// Generations whose secret (and tokens) still work, current included.
    pub live_generations: Vec<SecretGeneration>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// When a request last authenticated with it (flushed in batches, so up to a few seconds old).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// The credential's own rate limits, counted for it alone; each overrides the plan's limit of
    /// the same name (not the account's own, which apply as well).
    pub ratelimits: Vec<RateLimit>,
    /// Its own credits balance, if it has one (the admin API shows the balance itself).
    #[serde(skip)]
    pub credits: Option<CreditsPolicy>,
    /// A name for people, e.g. `dashboard (read-only)`: sent upstream and in `/auth/verify`'s
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form metadata (a JSON object), sent upstream and in `/auth/verify`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<Meta>,
    /// When the credential and its tokens stop working (Unix ms; 1101); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// `false`: refused (1101) until enabled again; unlike a revoke, reversible.
    pub enabled: bool,
    /// Its own permissions (`videos.create`, `images.*`, `*`).
    pub permissions: Vec<String>,
    /// The roles it holds: each grants the role's permissions as they are now.
    pub roles: Vec<String>,
    /// The networks it may be used from (empty: anywhere); its account's allowlist applies as
    /// well.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["203.0.113.7", "10.0.0.0/8"])))]
    pub ip_allowlist: Vec<Cidr>,
    /// The permissions its roles grant (with `permissions`: what it may do).
    #[serde(skip)]
    pub role_permissions: Vec<String>,
}

/// A named set of permissions credentials hold (`PUT /admin/v1/roles/{name}`). A change applies to
/// every credential holding it, and to their tokens, at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyRole {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "video-editor"))]
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The longest credential name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The largest metadata object, as compact JSON.
pub const MAX_META_BYTES: usize = 4096;
/// The most roles one credential holds.
pub const MAX_ROLES: usize = 64;
/// The most networks in one allowlist.
pub const MAX_ALLOWLIST: usize = 256;

/// What to change on a credential (or set when creating it); `None` leaves a field as it is,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CredentialChange {
    pub name: Option<Option<String>>,
    pub meta: Option<Option<Meta>>,
    pub expires_at: Option<Option<i64>>,
    pub enabled: Option<bool>,
    pub permissions: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub ip_allowlist: Option<Vec<Cidr>>,
    pub ratelimits: Option<Vec<RateLimit>>,
}

impl CredentialChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every field, so that nothing is written when one is wrong. Permissions are
    /// deduplicated and sorted, as are roles.
    pub fn normalize(&mut self) -> Result<(), String> {
        if let Some(Some(name)) = &mut self.name {
            *name = check_name(name)?;
        }
        if let Some(Some(meta)) = &self.meta {
            let len = serde_json::to_string(meta).map_err(|e| e.to_string())?.len();
            if len > MAX_META_BYTES {
                return Err(format!("meta is {len} bytes as JSON; at most {MAX_META_BYTES}"));
            }
        }
        if let Some(Some(t)) = self.expires_at
            && !(0..=253_402_300_799_999).contains(&t)
        {
            return Err("expiresAt is out of range".into());
        }
        if let Some(list) = &mut self.permissions {
            *list = check_permissions(std::mem::take(list))?;
        }
        if let Some(roles) = &mut self.roles {
            if roles.len() > MAX_ROLES {
                return Err(format!("a credential holds at most {MAX_ROLES} roles"));
            }
            for r in roles.iter() {
                check_role_name(r)?;
            }
            roles.sort();
            roles.dedup();
        }
        if let Some(list) = &mut self.ip_allowlist {
            *list = check_allowlist(std::mem::take(list))?;
        }
        if let Some(set) = &self.ratelimits {
            crate::ratelimit::validate(set)?;
        }
        Ok(())
    }
}

/// A credential's name, trimmed: 1 to 200 characters, no control characters.
fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters (null removes it)"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// A set of granted permissions, sorted and deduplicated.
pub fn check_permissions(mut list: Vec<String>) -> Result<Vec<String>, String> {
    use crate::permission::{MAX_PERMISSIONS, check_grant};
    for p in &list {
        check_grant(p).map_err(|e| e.to_string())?;
    }
    list.sort();
    list.dedup();
    if list.len() > MAX_PERMISSIONS {
        return Err(format!("at most {MAX_PERMISSIONS} permissions"));
    }
    Ok(list)
}

/// A role's name: the same shape as a plan's.
pub fn check_role_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && matches!(b, b'_' | b'.' | b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a role name: 1 to 64 of a-z, 0-9, and _ . - after the first",
            name.chars().take(70).collect::<String>()
        ))
    }
}

/// An allowlist, deduplicated, at most [`MAX_ALLOWLIST`] networks.
pub fn check_allowlist(mut list: Vec<Cidr>) -> Result<Vec<Cidr>, String> {
    list.sort_by_key(|c| c.to_string());
    list.dedup();
    if list.len() > MAX_ALLOWLIST {
        return Err(format!("an allowlist holds at most {MAX_ALLOWLIST} networks"));
    }
    Ok(list)
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `x-api-key` (or the key itself sent as a Bearer value).
    ApiKey,
    /// `Authorization: Bearer <token from getToken>`.
    Bearer,
    /// `x-client-id` + `x-client-secret` headers.
    ClientSecret,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Bearer => "bearer",
            Self::ClientSecret => "client_secret",
        }
    }
}
