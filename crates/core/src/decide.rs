//! The authentication decision: which credential a request presents, and whether the state
//! behind it lets it through. Pure functions; the server feeds them headers and cached state.

use crate::code::BusinessCode;
use crate::credits::CreditsPolicy;
use crate::ids::{AccountId, ClientId};
use crate::model::{AccountStatus, CredentialStatus, SecretGeneration};
use crate::net::Cidr;
use crate::permission::{Grants, Requirement};
use crate::ratelimit::{AccountLimit, RateLimit, account_limits};

/// What the request presented, borrowed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// An API key (from `x-api-key`, or sent as a Bearer value).
    ApiKey(&'a str),
    /// A token from getToken.
    Bearer(&'a str),
    /// `x-client-id` + `x-client-secret`.
    ClientPair { client_id: &'a str, secret: &'a str },
}

/// Why a request is refused. The business code is a function of the variant; the reason is
/// for logs and metrics only and is never shown to the client (one generic message per code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential, or an empty one: 1102.
    Missing,
    /// Wrong, malformed, revoked, rotated-out or expired: 1101.
    Invalid(InvalidReason),
    /// The account is banned: 1200.
    Banned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    UnsupportedScheme,
    MalformedKey,
    UnknownKey,
    ClientMismatch,
    Revoked,
    RotatedOut,
    MalformedToken,
    TokenSignature,
    TokenAlgorithm,
    TokenKeyId,
    TokenExpired,
    UnknownCredential,
    UnknownAccount,
    /// Its `enabled` is false.
    Disabled,
    /// Past its `expiresAt` (its tokens too).
    Expired,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::MalformedKey => "malformed_key",
            Self::UnknownKey => "unknown_key",
            Self::ClientMismatch => "client_mismatch",
            Self::Revoked => "revoked",
            Self::RotatedOut => "rotated_out",
            Self::MalformedToken => "malformed_token",
            Self::TokenSignature => "token_signature",
            Self::TokenAlgorithm => "token_algorithm",
            Self::TokenKeyId => "token_kid",
            Self::TokenExpired => "token_expired",
            Self::UnknownCredential => "unknown_credential",
            Self::UnknownAccount => "unknown_account",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
        }
    }
}

impl AuthFailure {
    pub fn code(self) -> BusinessCode {
        match self {
            Self::Missing => BusinessCode::EmptyAuth,
            Self::Invalid(_) => BusinessCode::InvalidAuth,
            Self::Banned => BusinessCode::Banned,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(r) => r.as_str(),
            Self::Banned => "banned",
        }
    }
}

/// Picks the credential from the request's headers (values already trimmed of nothing).
///
/// Precedence follows the vendor: `Authorization` wins over `x-api-key` when both are present.
/// An absent or empty header counts as not given. A Bearer value shaped like one of our API keys
/// is taken as an API key (as Stripe-style clients send keys).
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    x_client_id: Option<&'a str>,
    x_client_secret: Option<&'a str>,
) -> Result<Presented<'a>, AuthFailure> {
    let non_empty = |v: Option<&'a str>| v.map(str::trim).filter(|v| !v.is_empty());
    if let Some(auth) = non_empty(authorization) {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Invalid(InvalidReason::UnsupportedScheme));
        }
        let value = rest.trim();
        if value.is_empty() {
            return Err(AuthFailure::Missing);
        }
        return Ok(if crate::key::ApiKey::has_prefix(value) {
            Presented::ApiKey(value)
        } else {
            Presented::Bearer(value)
        });
    }
    if let Some(key) = non_empty(x_api_key) {
        return Ok(Presented::ApiKey(key));
    }
    match (non_empty(x_client_id), non_empty(x_client_secret)) {
        (Some(client_id), Some(secret)) => Ok(Presented::ClientPair { client_id, secret }),
        _ => Err(AuthFailure::Missing),
    }
}

/// What the server knows about a credential, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub status: CredentialStatus,
    pub generations: Vec<SecretGeneration>,
    /// Its own rate limits.
    pub ratelimits: Vec<RateLimit>,
    /// Its own credits balance, if it has one.
    pub credits: Option<CreditsPolicy>,
    /// `false`: refused until enabled again.
    pub enabled: bool,
    /// When it stops working (Unix ms).
    pub expires_at: Option<i64>,
    /// What it may do: its own permissions and its roles'.
    pub grants: Grants,
    /// Where it may be used from (empty: anywhere).
    pub ip_allowlist: Vec<Cidr>,
    /// Its name, for the upstream.
    pub name: Option<String>,
    /// Its metadata as compact JSON, for the upstream.
    pub meta: Option<String>,
}

impl CredentialState {
    /// An active, enabled credential of `account_id` with no key generations, limits, credits,
    /// permissions, allowlist, name or metadata yet (the caller sets what it needs).
    pub fn new(client_id: ClientId, account_id: AccountId) -> Self {
        Self {
            client_id,
            account_id,
            status: CredentialStatus::Active,
            generations: Vec::new(),
            ratelimits: Vec::new(),
            credits: None,
            enabled: true,
            expires_at: None,
            grants: Grants::default(),
            ip_allowlist: Vec::new(),
            name: None,
            meta: None,
        }
    }
}

/// What the server knows about an account, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub id: AccountId,
    pub uid: i64,
    pub email: String,
    pub first_name: String,
    pub status: AccountStatus,
    /// The rate limits counted for the account: its plan's and its own
    /// ([`crate::ratelimit::account_limits`]).
    pub ratelimits: Vec<AccountLimit>,
    /// The account's credits balance, shared by its credentials: its own, or its plan's refill.
    pub credits: Option<CreditsPolicy>,
    /// Where its credentials may be used from (empty: anywhere).
    pub ip_allowlist: Vec<Cidr>,
}

impl From<crate::model::Credential> for CredentialState {
    fn from(c: crate::model::Credential) -> Self {
        Self {
            client_id: c.client_id,
            account_id: c.account_id,
            status: c.status,
            generations: c.live_generations,
            ratelimits: c.ratelimits,
            credits: c.credits,
            enabled: c.enabled,
            expires_at: c.expires_at,
            grants: grants(&c.permissions, &c.role_permissions),
            ip_allowlist: c.ip_allowlist,
            name: c.name,
            meta: c.meta.map(|m| serde_json::Value::Object(m).to_string()),
        }
    }
}

/// A credential's own permissions and its roles', as [`Grants`] (anything the store holds that is
/// not a valid grant, which validation keeps out, is skipped rather than failing the load).
pub fn grants(own: &[String], from_roles: &[String]) -> Grants {
    let all = own.iter().chain(from_roles).filter(|p| crate::permission::check_grant(p).is_ok());
    Grants::new(all).unwrap_or_default()
}

impl AccountState {
    /// The account's state with its plan's rate limits and credits refill (`None`: no plan).
    pub fn new(a: crate::model::Account, plan: Option<&crate::model::Plan>) -> Self {
        let ratelimits = account_limits(a.plan.as_deref().zip(plan.map(|p| p.ratelimits.as_slice())), &a.ratelimits);
        let credits = a.credits.or_else(|| {
            plan.and_then(|p| p.credits).map(|refill| CreditsPolicy { refill: Some(refill), epoch: a.credits_epoch })
        });
        Self {
            id: a.id,
            uid: a.uid,
            email: a.email,
            first_name: a.first_name,
            status: a.status,
            ratelimits,
            credits,
            ip_allowlist: a.ip_allowlist,
        }
    }
}

/// Does secret generation `generation` of this credential, owned by this account, let a request in?
pub fn decide(cred: &CredentialState, generation: u32, account: &AccountState, now_ms: i64) -> Result<(), AuthFailure> {
    Standing::of(cred, generation, account).at(now_ms)
}

/// What [`decide`] asks of a credential, one of its secret generations and its account, worked
/// out once when they are loaded: the checks that do not depend on the time as they came out,
/// and the two instants that do. Kept in the cache instead of the states themselves (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// When the credential stops working (Unix ms; `i64::MAX`: never).
    expires_at: i64,
    /// Until when the generation is live (Unix ms; `i64::MAX`: while the credential is,
    /// `i64::MIN`: not a live generation).
    live_until: i64,
    /// Refused whatever the time, before the time is looked at: revoked, disabled.
    first: Option<InvalidReason>,
    /// Refused whatever the time, once the time checks passed: another account, banned.
    last: Option<AuthFailure>,
}

impl Standing {
    pub fn of(cred: &CredentialState, generation: u32, account: &AccountState) -> Self {
        let first = if cred.status != CredentialStatus::Active {
            Some(InvalidReason::Revoked)
        } else if !cred.enabled {
            Some(InvalidReason::Disabled)
        } else {
            None
        };
        let live_until = cred
            .generations
            .iter()
            .filter(|g| g.generation == generation)
            .map(|g| g.expires_at.unwrap_or(i64::MAX))
            .max()
            .unwrap_or(i64::MIN);
        let last = if account.id != cred.account_id {
            Some(AuthFailure::Invalid(InvalidReason::UnknownAccount))
        } else if account.status == AccountStatus::Banned {
            Some(AuthFailure::Banned)
        } else {
            None
        };
        Self { expires_at: cred.expires_at.unwrap_or(i64::MAX), live_until, first, last }
    }

    /// The decision at `now_ms`, in [`decide`]'s order: revoked, disabled, expired, rotated
    /// out, another account, banned.
    pub fn at(&self, now_ms: i64) -> Result<(), AuthFailure> {
        if let Some(r) = self.first {
            return Err(AuthFailure::Invalid(r));
        }
        if now_ms >= self.expires_at {
            return Err(AuthFailure::Invalid(InvalidReason::Expired));
        }
        if now_ms >= self.live_until {
            return Err(AuthFailure::Invalid(InvalidReason::RotatedOut));
        }
        self.last.map_or(Ok(()), Err)
    }

    /// When the credential stops working (Unix ms), if it does.
    pub fn expires_at(&self) -> Option<i64> {
        (self.expires_at != i64::MAX).then_some(self.expires_at)
    }
}

/// Why a request with a good credential may not do what it asks (1009, permission denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The client's address is outside the credential's or its account's allowlist.
    Address,
    /// The credential does not meet the requirement.
    Permission,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Permission => "permission",
        }
    }
}

/// Whether `ip` is in `list` (an empty list allows every address; an unknown address none).
pub fn allowed_from(list: &[Cidr], ip: Option<std::net::IpAddr>) -> bool {
    list.is_empty() || ip.is_some_and(|ip| list.iter().any(|n| n.contains(ip)))
}

/// May this credential, from `client_ip`, do what `required` asks? Both allowlists must allow the
/// address; then the credential's permissions must meet the requirement.
pub fn access(
    cred: &CredentialState,
    account: &AccountState,
    client_ip: Option<std::net::IpAddr>,
    required: Option<&Requirement>,
) -> Result<(), Denial> {
    access_to(&cred.grants, &cred.ip_allowlist, &account.ip_allowlist, client_ip, required)
}

/// [`access`] from what it reads: the grants, the credential's and the account's allowlists.
pub fn access_to(
    grants: &Grants,
    credential_allowlist: &[Cidr],
    account_allowlist: &[Cidr],
    client_ip: Option<std::net::IpAddr>,
    required: Option<&Requirement>,
) -> Result<(), Denial> {
    if !allowed_from(credential_allowlist, client_ip) || !allowed_from(account_allowlist, client_ip) {
        return Err(Denial::Address);
    }
    match required {
        Some(r) if !r.is_met_by(grants) => Err(Denial::Permission),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_emptiness() {
        use Presented::*;
        let key = "kgk_x";
        assert_eq!(presented(None, None, None, None), Err(AuthFailure::Missing));
        assert_eq!(presented(Some(""), Some("  "), None, None), Err(AuthFailure::Missing));
        assert_eq!(presented(None, Some(key), None, None), Ok(ApiKey(key)));
        assert_eq!(presented(Some("Bearer t.t.t"), Some(key), None, None), Ok(Bearer("t.t.t")));
        assert_eq!(presented(Some("bearer t.t.t"), None, None, None), Ok(Bearer("t.t.t")));
        assert_eq!(presented(Some("BEARER   t.t.t "), None, None, None), Ok(Bearer("t.t.t")));
        assert_eq!(presented(Some("Bearer kgk_abc"), None, None, None), Ok(ApiKey("kgk_abc")));
        assert_eq!(presented(Some("Bearer"), Some(key), None, None), Err(AuthFailure::Missing));
        assert_eq!(presented(Some("Bearer "), None, None, None), Err(AuthFailure::Missing));
        assert_eq!(
            presented(Some("Basic dXNlcjpwYXNz"), Some(key), None, None),
            Err(AuthFailure::Invalid(InvalidReason::UnsupportedScheme))
        );
        assert_eq!(presented(None, None, Some("c"), Some("s")), Ok(ClientPair { client_id: "c", secret: "s" }));
        assert_eq!(presented(None, None, Some("c"), None), Err(AuthFailure::Missing));
    }

    fn states() -> (CredentialState, AccountState) {
        let account = AccountState {
            id: AccountId::generate(1),
            uid: 1,
            email: "e".into(),
            first_name: "f".into(),
            status: AccountStatus::Active,
            ratelimits: Vec::new(),
            credits: None,
            ip_allowlist: Vec::new(),
        };
        let cred = CredentialState {
            generations: vec![
                SecretGeneration { generation: 2, expires_at: None },
                SecretGeneration { generation: 1, expires_at: Some(1_000) },
            ],
            ..CredentialState::new(ClientId::generate(1), account.id)
        };
        (cred, account)
    }

    #[test]
    fn decisions() {
        let (mut cred, mut account) = states();
        assert_eq!(decide(&cred, 2, &account, 5_000), Ok(()));
        assert_eq!(decide(&cred, 1, &account, 999), Ok(()));
        assert_eq!(decide(&cred, 1, &account, 1_000), Err(AuthFailure::Invalid(InvalidReason::RotatedOut)));
        assert_eq!(decide(&cred, 3, &account, 0), Err(AuthFailure::Invalid(InvalidReason::RotatedOut)));
        account.status = AccountStatus::Banned;
        assert_eq!(decide(&cred, 2, &account, 0), Err(AuthFailure::Banned));
        cred.status = CredentialStatus::Revoked;
        assert_eq!(decide(&cred, 2, &account, 0), Err(AuthFailure::Invalid(InvalidReason::Revoked)));
        assert_eq!(AuthFailure::Banned.code().as_u32(), 1200);
        let (mut cred, account) = states();
        cred.expires_at = Some(5_000);
        assert_eq!(decide(&cred, 2, &account, 4_999), Ok(()));
        assert_eq!(decide(&cred, 2, &account, 5_000), Err(AuthFailure::Invalid(InvalidReason::Expired)));
        cred.enabled = false;
        assert_eq!(decide(&cred, 2, &account, 0), Err(AuthFailure::Invalid(InvalidReason::Disabled)));
        assert_eq!(AuthFailure::Missing.code().as_u32(), 1102);
    }

    /// The decision as it was written before [`Standing`]: every check on the states themselves.
    fn reference(
        cred: &CredentialState,
        generation: u32,
        account: &AccountState,
        now_ms: i64,
    ) -> Result<(), AuthFailure> {
        if cred.status != CredentialStatus::Active {
            return Err(AuthFailure::Invalid(InvalidReason::Revoked));
        }
        if !cred.enabled {
            return Err(AuthFailure::Invalid(InvalidReason::Disabled));
        }
        if cred.expires_at.is_some_and(|t| now_ms >= t) {
            return Err(AuthFailure::Invalid(InvalidReason::Expired));
        }
        if !cred.generations.iter().any(|g| g.generation == generation && g.is_live(now_ms)) {
            return Err(AuthFailure::Invalid(InvalidReason::RotatedOut));
        }
        if account.id != cred.account_id {
            return Err(AuthFailure::Invalid(InvalidReason::UnknownAccount));
        }
        if account.status == AccountStatus::Banned {
            return Err(AuthFailure::Banned);
        }
        Ok(())
    }

    #[test]
    fn standing_decides_as_the_states_do() {
        let (base, account) = states();
        let other = AccountState { id: AccountId::generate(2), ..account.clone() };
        let banned = AccountState { status: AccountStatus::Banned, ..account.clone() };
        let generations = [
            vec![],
            vec![SecretGeneration { generation: 1, expires_at: None }],
            vec![SecretGeneration { generation: 1, expires_at: Some(1_000) }],
            vec![
                SecretGeneration { generation: 2, expires_at: None },
                SecretGeneration { generation: 1, expires_at: Some(1_000) },
            ],
            vec![
                SecretGeneration { generation: 1, expires_at: Some(500) },
                SecretGeneration { generation: 1, expires_at: Some(1_500) },
            ],
        ];
        let mut cases = 0;
        for status in [CredentialStatus::Active, CredentialStatus::Revoked] {
            for enabled in [true, false] {
                for expires_at in [None, Some(999), Some(1_000), Some(2_000)] {
                    for gens in &generations {
                        let cred =
                            CredentialState { status, enabled, expires_at, generations: gens.clone(), ..base.clone() };
                        for acc in [&account, &other, &banned] {
                            for generation in [1, 2, 3] {
                                let standing = Standing::of(&cred, generation, acc);
                                assert_eq!(standing.expires_at(), expires_at);
                                for now in [0, 499, 500, 999, 1_000, 1_001, 1_499, 1_500, 1_999, 2_000, i64::MAX - 1] {
                                    assert_eq!(
                                        standing.at(now),
                                        reference(&cred, generation, acc, now),
                                        "{cred:?} gen {generation} {acc:?} at {now}"
                                    );
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 2 * 4 * 5 * 3 * 3 * 11);
        assert!(std::mem::size_of::<Standing>() <= 24);
    }

    #[test]
    fn access_by_address_and_permission() {
        let (mut cred, mut account) = states();
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        let req: Requirement = "videos.create".parse().unwrap();
        // Nothing set: anywhere, but no permission is held.
        assert_eq!(access(&cred, &account, None, None), Ok(()));
        assert_eq!(access(&cred, &account, ip("1.2.3.4"), Some(&req)), Err(Denial::Permission));
        cred.grants = Grants::new(["videos.*"]).unwrap();
        assert_eq!(access(&cred, &account, ip("1.2.3.4"), Some(&req)), Ok(()));
        cred.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert_eq!(access(&cred, &account, ip("10.9.8.7"), Some(&req)), Ok(()));
        assert_eq!(access(&cred, &account, ip("2001:db8::1"), None), Ok(()));
        assert_eq!(access(&cred, &account, ip("11.0.0.1"), None), Err(Denial::Address));
        // An unknown address is never on a list.
        assert_eq!(access(&cred, &account, None, None), Err(Denial::Address));
        // The account's list applies as well: both must allow the address.
        account.ip_allowlist = vec!["10.1.0.0/16".parse().unwrap()];
        assert_eq!(access(&cred, &account, ip("10.1.2.3"), None), Ok(()));
        assert_eq!(access(&cred, &account, ip("10.2.0.1"), None), Err(Denial::Address));
        // The address is checked before the permission (an outsider learns nothing of them).
        cred.grants = Grants::default();
        assert_eq!(access(&cred, &account, ip("10.2.0.1"), Some(&req)), Err(Denial::Address));
    }
}
