//! Rate limits on the request path: the buckets of every limited credential and account, held in
//! memory and decided with GCRA ([`keygate_core::ratelimit`], whose guarantee this keeps exactly
//! on one process).
//!
//! A credential's own limits count in its credential's *scope*; its account's limits (the plan's
//! and the account's own) in the account's scope, shared by all the account's credentials. A
//! request locks at most two scopes, always the credential's first, decides every limit that
//! applies, and only if all of them pass takes one unit (`cost`) from each: a refused request
//! consumes none of them.
//!
//! Which limits apply is worked out when a credential's state is loaded ([`Limiter::applied`]),
//! not per request; the scopes live as long as a cached entry or a non-full bucket needs them
//! ([`Limiter::sweep`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{HeaderMap, HeaderName, HeaderValue};
use keygate_core::decide::{AccountState, CredentialState};
use keygate_core::ratelimit::{self, Bucket, MAX_LIMITS, Policy, RateLimit, Take, Window, ceil_secs};
use keygate_core::{AccountId, ClientId};
use serde::{Deserialize, Serialize};

const SHARDS: usize = 16;

/// Whose bucket a limit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKey {
    Credential(ClientId),
    Account(AccountId),
}

impl ScopeKey {
    fn shard(&self) -> usize {
        let byte = match self {
            Self::Credential(c) => c.as_bytes()[11],
            Self::Account(a) => a.as_bytes()[11],
        };
        byte as usize % SHARDS
    }
}

/// One credential's or account's buckets, by limit name.
#[derive(Debug)]
pub struct Scope {
    buckets: Mutex<Vec<(Box<str>, Bucket)>>,
}

impl Scope {
    fn lock(&self) -> MutexGuard<'_, Vec<(Box<str>, Bucket)>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One limit as a request counts it: its name shared with the statuses it produces.
#[derive(Debug)]
struct Counted {
    name: Arc<str>,
    limit: u64,
    duration: Window,
    policy: Policy,
}

impl From<&RateLimit> for Counted {
    fn from(l: &RateLimit) -> Self {
        Self { name: l.name.as_str().into(), limit: l.limit, duration: l.duration, policy: l.policy() }
    }
}

/// The limits that apply to one credential's requests, with the scopes they count in.
#[derive(Debug)]
pub struct Applied {
    credential: Option<(Arc<Scope>, Vec<Counted>)>,
    account: Option<(Arc<Scope>, Vec<Counted>)>,
}

/// Where one limit stands after a request, for the `RateLimit` headers and `/auth/verify`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitStatus {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub name: Arc<str>,
    /// Requests per window.
    pub limit: u64,
    pub duration: Window,
    /// Requests that would pass now, one after the other.
    pub remaining: u64,
    /// Seconds until one more would (0: none is spent).
    pub reset: u64,
}

/// A request refused by a rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limits that refused it.
    pub refused_by: Vec<String>,
    /// Seconds until it would pass (`None`: never; a limit is 0).
    pub retry_after: Option<u64>,
    /// Every limit that applies, as it stands (nothing was taken).
    pub statuses: Vec<LimitStatus>,
}

/// Every limited scope of this process.
#[derive(Default)]
pub struct Limiter {
    shards: [Mutex<HashMap<ScopeKey, Arc<Scope>, foldhash::fast::RandomState>>; SHARDS],
}

impl Limiter {
    /// The scope of `key`, made if it is new.
    fn scope(&self, key: ScopeKey) -> Arc<Scope> {
        let mut shard = self.shards[key.shard()].lock().unwrap_or_else(|p| p.into_inner());
        shard.entry(key).or_insert_with(|| Arc::new(Scope { buckets: Mutex::new(Vec::new()) })).clone()
    }

    /// What applies to requests with this credential of this account: `None` when no limit does.
    pub fn applied(&self, cred: &CredentialState, account: &AccountState) -> Option<Arc<Applied>> {
        let shared: Vec<Counted> =
            ratelimit::shared_limits(&cred.ratelimits, &account.ratelimits).map(|a| Counted::from(&a.limit)).collect();
        if cred.ratelimits.is_empty() && shared.is_empty() {
            return None;
        }
        let credential = (!cred.ratelimits.is_empty()).then(|| {
            (self.scope(ScopeKey::Credential(cred.client_id)), cred.ratelimits.iter().map(Counted::from).collect())
        });
        let account = (!shared.is_empty()).then(|| (self.scope(ScopeKey::Account(account.id)), shared));
        Some(Arc::new(Applied { credential, account }))
    }

    /// Decides a request of `cost` units at `now` (nanoseconds since the Unix epoch) against
    /// every limit in `applied`: all pass and each gives `cost`, or none gives anything.
    pub fn admit(&self, applied: &Applied, cost: u64, now: u64) -> Result<Vec<LimitStatus>, Box<Limited>> {
        // The credential's scope first, then the account's: the one order every request locks in.
        let mut cred = applied.credential.as_ref().map(|(s, l)| (s.lock(), l.as_slice()));
        let mut account = applied.account.as_ref().map(|(s, l)| (s.lock(), l.as_slice()));
        // Per limit, in order: its bucket's index and the arrival time it would get.
        let mut found = [(0usize, 0u64); 2 * MAX_LIMITS];
        let mut n = 0;
        let mut refused = false;
        let mut retry: Option<u64> = Some(0);
        for (buckets, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let i = bucket_index(buckets, &limit.name, limit.policy);
                let bucket = &mut buckets[i].1;
                bucket.adopt(limit.policy, now);
                let tat = match bucket.take(limit.policy, cost, now) {
                    Take::Pass(tat) => tat,
                    Take::Refuse(wait) => {
                        refused = true;
                        retry = retry.zip(wait).map(|(a, b)| a.max(b));
                        bucket.tat
                    }
                };
                found[n] = (i, tat);
                n += 1;
            }
        }
        let mut statuses = Vec::with_capacity(n);
        let mut refused_by = Vec::new();
        let mut k = 0;
        for (buckets, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let (i, tat) = found[k];
                k += 1;
                let bucket = &mut buckets[i].1;
                if !refused {
                    bucket.tat = tat;
                } else if !matches!(bucket.take(limit.policy, cost, now), Take::Pass(_)) {
                    refused_by.push(limit.name.to_string());
                }
                statuses.push(LimitStatus {
                    name: limit.name.clone(),
                    limit: limit.limit,
                    duration: limit.duration,
                    remaining: bucket.remaining(limit.policy, now),
                    reset: ceil_secs(bucket.reset(limit.policy, now)),
                });
            }
        }
        if refused {
            return Err(Box::new(Limited { refused_by, retry_after: retry.map(ceil_secs), statuses }));
        }
        Ok(statuses)
    }

    /// Forgets the scopes that nothing refers to and whose buckets are all full at `now`: they
    /// hold nothing a fresh scope would not. Returns how many scopes remain.
    pub fn sweep(&self, now: u64) -> usize {
        let mut left = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, scope| Arc::strong_count(scope) > 1 || scope.lock().iter().any(|(_, b)| b.tat > now));
            left += shard.len();
        }
        left
    }
}

/// The index of the bucket named `name`, added full if there is none.
fn bucket_index(buckets: &mut Vec<(Box<str>, Bucket)>, name: &str, policy: Policy) -> usize {
    match buckets.iter().position(|(n, _)| &**n == name) {
        Some(i) => i,
        None => {
            buckets.push((name.into(), Bucket::new(policy)));
            buckets.len() - 1
        }
    }
}

/// `RateLimit-Policy`, draft-ietf-httpapi-ratelimit-headers-12: `"name";q=LIMIT;w=SECONDS`, one
/// item per limit.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`, the same draft: `"name";r=REMAINING;t=SECONDS`, one item per limit.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Sets `RateLimit-Policy` and `RateLimit` for `statuses` (nothing when there are none). Names
/// are of the `[a-z0-9_.-]` form, so each is a valid structured-field string as it is.
pub fn set_headers(statuses: &[LimitStatus], headers: &mut HeaderMap) {
    if statuses.is_empty() {
        return;
    }
    let mut policy = String::with_capacity(32 * statuses.len());
    let mut state = String::with_capacity(32 * statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        use std::fmt::Write;
        let _ = write!(policy, "{sep}\"{}\";q={};w={}", s.name, s.limit, s.duration.as_secs());
        let _ = write!(state, "{sep}\"{}\";r={};t={}", s.name, s.remaining, s.reset);
    }
    if let (Ok(p), Ok(s)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert(&RATELIMIT_POLICY, p);
        headers.insert(&RATELIMIT, s);
    }
}

/// Nanoseconds since the Unix epoch (the limiter's clock: wall time, so nodes sharing counters
/// agree on it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use keygate_core::model::{AccountStatus, CredentialStatus};
    use keygate_core::ratelimit::AccountLimit;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn states(own: Vec<RateLimit>, account: Vec<AccountLimit>) -> (CredentialState, AccountState) {
        let a = AccountId::generate(1);
        let cred = CredentialState {
            client_id: ClientId::generate(2),
            account_id: a,
            status: CredentialStatus::Active,
            generations: Vec::new(),
            ratelimits: own,
        };
        let account = AccountState {
            id: a,
            uid: 1,
            email: String::new(),
            first_name: String::new(),
            status: AccountStatus::Active,
            ratelimits: account,
        };
        (cred, account)
    }

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    #[test]
    fn nothing_applies_without_limits() {
        let (cred, account) = states(Vec::new(), Vec::new());
        assert!(Limiter::default().applied(&cred, &account).is_none());
    }

    #[test]
    fn every_limit_must_pass_and_a_refusal_takes_nothing() {
        let limiter = Limiter::default();
        let own = vec![RateLimit::new("requests", 3, w("1s")), RateLimit::new("burst", 5, w("1m"))];
        let shared = vec![AccountLimit { limit: RateLimit::new("account", 4, w("1s")), plan: None }];
        let (cred, account) = states(own, shared);
        let applied = limiter.applied(&cred, &account).unwrap();
        let t0 = 100 * S;
        for i in 0..3 {
            let st = limiter.admit(&applied, 1, t0).unwrap();
            assert_eq!(st.iter().map(|s| s.remaining).collect::<Vec<_>>(), [2 - i, 4 - i, 3 - i]);
        }
        let refused = limiter.admit(&applied, 1, t0).unwrap_err();
        assert_eq!(refused.refused_by, ["requests"]);
        assert_eq!(refused.retry_after, Some(1));
        // Nothing was taken from the limits that would have passed.
        assert_eq!(refused.statuses.iter().map(|s| s.remaining).collect::<Vec<_>>(), [0, 2, 1]);
        // A second credential of the account shares "account" only.
        let (mut other, _) = states(Vec::new(), Vec::new());
        other.client_id = ClientId::generate(3);
        other.account_id = account.id;
        let applied2 = limiter.applied(&other, &account).unwrap();
        assert_eq!(limiter.admit(&applied2, 1, t0).unwrap()[0].remaining, 0);
        let refused = limiter.admit(&applied2, 1, t0).unwrap_err();
        assert_eq!(refused.refused_by, ["account"]);
        // Later, both pass again.
        assert!(limiter.admit(&applied, 1, t0 + S).is_ok());
    }

    #[test]
    fn zero_never_passes_and_has_no_retry() {
        let limiter = Limiter::default();
        let (cred, account) = states(vec![RateLimit::new("blocked", 0, w("1s"))], Vec::new());
        let applied = limiter.applied(&cred, &account).unwrap();
        let refused = limiter.admit(&applied, 1, S).unwrap_err();
        assert_eq!((refused.retry_after, refused.refused_by.as_slice()), (None, &["blocked".to_owned()][..]));
    }

    #[test]
    fn headers_follow_the_draft() {
        let statuses = vec![
            LimitStatus { name: "requests".into(), limit: 10, duration: w("1s"), remaining: 9, reset: 1 },
            LimitStatus { name: "daily".into(), limit: 1000, duration: w("1d"), remaining: 999, reset: 87 },
        ];
        let mut h = HeaderMap::new();
        set_headers(&statuses, &mut h);
        assert_eq!(h[&RATELIMIT_POLICY], r#""requests";q=10;w=1, "daily";q=1000;w=86400"#);
        assert_eq!(h[&RATELIMIT], r#""requests";r=9;t=1, "daily";r=999;t=87"#);
    }

    #[test]
    fn sweeping_keeps_what_is_in_use_or_not_full() {
        let limiter = Limiter::default();
        let (cred, account) = states(vec![RateLimit::new("requests", 2, w("10s"))], Vec::new());
        let applied = limiter.applied(&cred, &account).unwrap();
        limiter.admit(&applied, 1, 10 * S).unwrap();
        assert_eq!(limiter.sweep(10 * S), 1, "in use");
        drop(applied);
        assert_eq!(limiter.sweep(10 * S), 1, "not full yet");
        assert_eq!(limiter.sweep(30 * S), 0);
    }
}
