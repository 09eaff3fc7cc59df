//! Records of the domain, as the store returns them and the admin API shows them.
//! Times are Unix milliseconds (the vendor's convention, e.g. webhook `timestamp`).

use serde::{Deserialize, Serialize};

use crate::credits::{CreditsPolicy, Refill};
use crate::ids::{AccountId, ClientId};
use crate::ratelimit::RateLimit;

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
