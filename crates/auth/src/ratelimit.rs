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

#[cfg(feature = "redis")]
pub mod redis;

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

    /// The name of one of its limits' shared bucket (in Redis).
    fn shared_key(&self, name: &str) -> String {
        match self {
            Self::Credential(c) => format!("keygate:rl:c:{c}:{name}"),
            Self::Account(a) => format!("keygate:rl:a:{a}:{name}"),
        }
    }
}

/// One limit's state in a scope: the process's own bucket (the whole decision on one node, and
/// the fallback when the shared counters cannot be reached) and, with shared counters, the units
/// leased from the shared bucket.
#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    bucket: Bucket,
    lease: Lease,
}

/// Units taken from a shared bucket ahead of the requests that will use them.
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    units: u64,
    /// When unused units lapse (a unit may only be used close to when it was taken).
    expires: u64,
    /// The shared bucket's arrival time when last seen.
    shared_tat: u64,
    /// The shared bucket had nothing left: refuse locally until then.
    blocked_until: u64,
    /// A refill is on its way.
    refilling: bool,
}

/// One credential's or account's limits, by name.
#[derive(Debug)]
pub struct Scope {
    key: ScopeKey,
    entries: Mutex<Vec<Entry>>,
}

impl Scope {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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

/// What [`Limiter::admit`] decided.
#[derive(Debug)]
pub enum Admit {
    Pass(Vec<LimitStatus>),
    Refuse(Box<Limited>),
    /// Shared counting: some limits have no units leased; [`Limiter::lease`] them, then ask again.
    Lease(Vec<Need>),
    /// Shared counting cannot be reached and the fail mode is closed.
    Unavailable,
}

/// Units a request waits for from a shared bucket.
#[derive(Debug)]
pub struct Need {
    scope: Arc<Scope>,
    name: Arc<str>,
    policy: Policy,
    want: u64,
}

/// What a shared bucket gave: `granted` units (0 to `want`), and its arrival time after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u64,
    pub tat: u64,
}

/// One bucket's part of [`SharedCounter::lease_many`].
#[derive(Debug, Clone)]
pub struct Ask {
    pub key: String,
    pub policy: Policy,
    pub want: u64,
}

/// A future of a [`SharedCounter`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Buckets shared by every process deciding the same limits ([`redis::RedisCounter`]).
pub trait SharedCounter: Send + Sync + 'static {
    /// Takes up to `want` units from the shared bucket `key`, counted under `policy` at `now`
    /// (nanoseconds since the Unix epoch), all at once: what passes is taken, the rest is not.
    fn lease<'a>(&'a self, key: &'a str, policy: Policy, want: u64, now: u64) -> BoxFuture<'a, Result<Grant, String>>;
    /// [`SharedCounter::lease`] for several buckets at once (one round trip where the counter
    /// can), in order.
    fn lease_many<'a>(&'a self, asks: &'a [Ask], now: u64) -> BoxFuture<'a, Result<Vec<Grant>, String>> {
        Box::pin(async move {
            let mut grants = Vec::with_capacity(asks.len());
            for a in asks {
                grants.push(self.lease(&a.key, a.policy, a.want, now).await?);
            }
            Ok(grants)
        })
    }
    /// Whether the counters answer.
    fn ping(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// What happens to limited requests while the shared counters cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Each process counts on its own (the limits still apply, per process) [default].
    #[default]
    Open,
    /// Requests of limited credentials are refused with 1503 until the counters are back.
    Closed,
}

impl std::str::FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        keygate_core::from_name(s).map_err(|e| format!("redis_failure: {e}"))
    }
}

/// How long leased units stay usable: a limit's window, from 5 s to 60 s. (What a process may
/// admit beyond the shared bucket is bounded by the units it holds, not by this: it keeps an idle
/// key from holding units indefinitely.) Units near their end are refilled ahead.
fn lease_ttl(policy: Policy) -> u64 {
    policy.window_ns.clamp(5_000_000_000, 60_000_000_000)
}
/// Leases asked for together in one round trip.
const BATCH: usize = 256;
/// A lease covers about this much of a limit's window (at least one unit, at most a quarter of the
/// limit): fewer round trips, and a bounded share of the limit held by one process.
const LEASE_WINDOW: u64 = 100_000_000;
/// After a failed round trip, requests leave the shared counters alone for this long (a probe
/// every [`PROBE_EVERY`] finds them back sooner).
const DOWN_FOR: u64 = 1_000_000_000;
/// How often the shared counters are probed: a failure is noticed, and a recovery taken up,
/// within this (plus the timeout).
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest wait for the shared counters on a request's path.
pub const SHARED_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

fn lease_size(policy: Policy) -> u64 {
    let by_window = (policy.limit as u128 * LEASE_WINDOW as u128 / policy.window_ns.max(1) as u128) as u64;
    by_window.clamp(1, (policy.limit / 4).max(1))
}

/// Shared counting's state.
struct Shared {
    counter: Arc<dyn SharedCounter>,
    fail: FailMode,
    /// Until when the counters are taken to be unreachable (ns).
    down_until: std::sync::atomic::AtomicU64,
    refills: tokio::sync::mpsc::UnboundedSender<Need>,
}

/// Every limited scope of this process.
#[derive(Default)]
pub struct Limiter {
    shards: [Mutex<HashMap<ScopeKey, Arc<Scope>, foldhash::fast::RandomState>>; SHARDS],
    shared: std::sync::OnceLock<Shared>,
}

impl Limiter {
    /// The scope of `key`, made if it is new.
    fn scope(&self, key: ScopeKey) -> Arc<Scope> {
        let mut shard = self.shards[key.shard()].lock().unwrap_or_else(|p| p.into_inner());
        shard.entry(key).or_insert_with(|| Arc::new(Scope { key, entries: Mutex::new(Vec::new()) })).clone()
    }

    /// Counts in `counter`'s shared buckets from now on, with `fail` while it cannot be reached.
    /// Spawns the task that refills leases ahead of the requests (needs a tokio runtime).
    /// Returns false if shared counting was set already.
    pub fn share(self: &Arc<Self>, counter: Arc<dyn SharedCounter>, fail: FailMode) -> bool {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Need>();
        let shared = Shared { counter, fail, down_until: Default::default(), refills: tx };
        if self.shared.set(shared).is_err() {
            return false;
        }
        let me = Arc::downgrade(self);
        let prober = me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(limiter) = prober.upgrade() else { return };
                let Some(shared) = limiter.shared.get() else { return };
                let answer = tokio::time::timeout(SHARED_TIMEOUT, shared.counter.ping()).await;
                match answer {
                    Ok(Ok(())) => limiter.mark_up(),
                    Ok(Err(e)) => limiter.mark_down(e),
                    Err(_) => limiter.mark_down(format!("no answer within {SHARED_TIMEOUT:?}")),
                }
            }
        });
        // Refills, batched: whatever is waiting goes in one round trip.
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let Some(limiter) = me.upgrade() else { return };
                limiter.lease(&batch, now_ns()).await;
                for need in batch.drain(..) {
                    if let Some(e) = need.scope.lock().iter_mut().find(|e| e.name == need.name) {
                        e.lease.refilling = false;
                    }
                }
            }
        });
        true
    }

    /// Whether counts are shared, and whether the shared counters answer.
    pub fn shared_state(&self) -> Option<bool> {
        let s = self.shared.get()?;
        Some(s.down_until.load(std::sync::atomic::Ordering::Relaxed) <= now_ns())
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
    /// every limit in `applied`: all pass and each gives `cost`, or none gives anything. With
    /// shared counting, units come from leases; a limit without enough is [`Admit::Lease`].
    pub fn admit(&self, applied: &Applied, cost: u64, now: u64) -> Admit {
        match self.shared.get() {
            Some(s) if s.down_until.load(std::sync::atomic::Ordering::Relaxed) <= now => {
                self.admit_shared(s, applied, cost, now)
            }
            Some(s) if s.fail == FailMode::Closed => Admit::Unavailable,
            _ => Self::admit_local(applied, cost, now),
        }
    }

    /// Decides on this process's own buckets.
    pub fn admit_local(applied: &Applied, cost: u64, now: u64) -> Admit {
        // The credential's scope first, then the account's: the one order every request locks in.
        let mut cred = applied.credential.as_ref().map(|(s, l)| (s.lock(), l.as_slice()));
        let mut account = applied.account.as_ref().map(|(s, l)| (s.lock(), l.as_slice()));
        // Per limit, in order: its entry's index and the arrival time it would get.
        let mut found = [(0usize, 0u64); 2 * MAX_LIMITS];
        let mut n = 0;
        let mut refused = false;
        let mut retry: Option<u64> = Some(0);
        for (entries, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let i = entry_index(entries, &limit.name, limit.policy);
                let bucket = &mut entries[i].bucket;
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
        for (entries, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let (i, tat) = found[k];
                k += 1;
                let bucket = &mut entries[i].bucket;
                if !refused {
                    bucket.tat = tat;
                } else if !matches!(bucket.take(limit.policy, cost, now), Take::Pass(_)) {
                    refused_by.push(limit.name.to_string());
                }
                statuses.push(status(limit, bucket, now));
            }
        }
        if refused {
            return Admit::Refuse(Box::new(Limited { refused_by, retry_after: retry.map(ceil_secs), statuses }));
        }
        Admit::Pass(statuses)
    }

    /// Decides on leased units of the shared buckets.
    fn admit_shared(&self, shared: &Shared, applied: &Applied, cost: u64, now: u64) -> Admit {
        let mut cred = applied.credential.as_ref().map(|(s, l)| (s, s.lock(), l.as_slice()));
        let mut account = applied.account.as_ref().map(|(s, l)| (s, s.lock(), l.as_slice()));
        let mut needs = Vec::new();
        let mut refused_by = Vec::new();
        let mut retry: Option<u64> = Some(0);
        for (scope, entries, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let i = entry_index(entries, &limit.name, limit.policy);
                let e = &mut entries[i];
                if e.lease.expires <= now {
                    e.lease.units = 0;
                }
                if limit.policy.limit == 0 {
                    refused_by.push(limit.name.to_string());
                    retry = None;
                } else if e.lease.units < cost && e.lease.blocked_until > now {
                    refused_by.push(limit.name.to_string());
                    retry = retry.map(|r| r.max(e.lease.blocked_until - now));
                } else if e.lease.units < cost {
                    let want = lease_size(limit.policy).max(cost);
                    needs.push(Need { scope: Arc::clone(scope), name: limit.name.clone(), policy: limit.policy, want });
                }
            }
        }
        let refused = !refused_by.is_empty();
        if !refused && !needs.is_empty() {
            return Admit::Lease(needs);
        }
        let mut statuses = Vec::new();
        for (scope, entries, limits) in [cred.as_mut(), account.as_mut()].into_iter().flatten() {
            for limit in limits.iter() {
                let i = entry_index(entries, &limit.name, limit.policy);
                let e = &mut entries[i];
                if !refused {
                    e.lease.units -= cost;
                    let running_low = e.lease.units < lease_size(limit.policy).div_ceil(2);
                    let ending = e.lease.expires.saturating_sub(now) < lease_ttl(limit.policy) / 4;
                    if (running_low || ending) && !e.lease.refilling {
                        e.lease.refilling = true;
                        let want = lease_size(limit.policy);
                        let need =
                            Need { scope: Arc::clone(scope), name: limit.name.clone(), policy: limit.policy, want };
                        if shared.refills.send(need).is_err() {
                            e.lease.refilling = false;
                        }
                    }
                }
                statuses.push(shared_status(limit, &e.lease, now));
            }
        }
        if refused {
            return Admit::Refuse(Box::new(Limited { refused_by, retry_after: retry.map(ceil_secs), statuses }));
        }
        Admit::Pass(statuses)
    }

    /// Leases what `needs` say from the shared buckets, in one round trip. A failure marks the
    /// counters down (the fail mode decides meanwhile).
    pub async fn lease(&self, needs: &[Need], now: u64) {
        let Some(shared) = self.shared.get() else { return };
        let asks: Vec<Ask> = needs
            .iter()
            .map(|n| Ask { key: n.scope.key.shared_key(&n.name), policy: n.policy, want: n.want })
            .collect();
        let answer = tokio::time::timeout(SHARED_TIMEOUT, shared.counter.lease_many(&asks, now)).await;
        let grants = match answer {
            Ok(Ok(grants)) if grants.len() == needs.len() => grants,
            Ok(Ok(grants)) => return self.mark_down(format!("{} answers for {} leases", grants.len(), needs.len())),
            Ok(Err(e)) => return self.mark_down(e),
            Err(_) => return self.mark_down(format!("no answer within {SHARED_TIMEOUT:?}")),
        };
        for (need, grant) in needs.iter().zip(grants) {
            let mut entries = need.scope.lock();
            let i = entry_index(&mut entries, &need.name, need.policy);
            let lease = &mut entries[i].lease;
            if lease.expires <= now {
                lease.units = 0;
            }
            // At most two leases in stock: the bound on what this process may admit beyond
            // the shared bucket (what is cut is spent there and lost: under-admission only).
            lease.units = (lease.units + grant.granted).min(2 * lease_size(need.policy).max(need.want));
            lease.expires = now + lease_ttl(need.policy);
            lease.shared_tat = grant.tat;
            // Nothing left: one more unit is there once the arrival time is a window ahead no more.
            lease.blocked_until = if grant.granted == 0 {
                let t = need.policy.interval();
                (grant.tat + t).saturating_sub(need.policy.capacity()).max(now + 1)
            } else {
                0
            };
        }
    }

    /// The shared counters failed: the fail mode decides for [`DOWN_FOR`] (or until a probe
    /// finds them back).
    fn mark_down(&self, why: String) {
        let Some(shared) = self.shared.get() else { return };
        let now = now_ns();
        let was_up = shared.down_until.swap(now + DOWN_FOR, std::sync::atomic::Ordering::Relaxed) <= now;
        if was_up {
            tracing::warn!(error = %why, fail_mode = ?shared.fail, "rate limits: the shared counters cannot be reached");
        }
        metrics::counter!("keygate_ratelimit_shared_errors_total").increment(1);
        metrics::gauge!("keygate_ratelimit_shared_up").set(0.0);
    }

    /// The shared counters answered a probe.
    fn mark_up(&self) {
        let Some(shared) = self.shared.get() else { return };
        if shared.down_until.swap(0, std::sync::atomic::Ordering::Relaxed) > now_ns() {
            tracing::info!("rate limits: the shared counters answer again");
        }
        metrics::gauge!("keygate_ratelimit_shared_up").set(1.0);
    }

    /// Forgets the scopes that nothing refers to and whose buckets are all full at `now`: they
    /// hold nothing a fresh scope would not. Returns how many scopes remain.
    pub fn sweep(&self, now: u64) -> usize {
        let mut left = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, scope| {
                Arc::strong_count(scope) > 1
                    || scope.lock().iter().any(|e| e.bucket.tat > now || (e.lease.units > 0 && e.lease.expires > now))
            });
            left += shard.len();
        }
        left
    }
}

/// Where `limit` stands on this process's bucket.
fn status(limit: &Counted, bucket: &Bucket, now: u64) -> LimitStatus {
    LimitStatus {
        name: limit.name.clone(),
        limit: limit.limit,
        duration: limit.duration,
        remaining: bucket.remaining(limit.policy, now),
        reset: ceil_secs(bucket.reset(limit.policy, now)),
    }
}

/// Where `limit` stands by the shared bucket as last seen, plus the units leased here.
fn shared_status(limit: &Counted, lease: &Lease, now: u64) -> LimitStatus {
    let seen = Bucket { tat: lease.shared_tat, policy: limit.policy };
    let remaining = (seen.remaining(limit.policy, now) + lease.units).min(limit.limit);
    let reset = if remaining >= limit.limit { 0 } else { ceil_secs(seen.reset(limit.policy, now)) };
    LimitStatus { name: limit.name.clone(), limit: limit.limit, duration: limit.duration, remaining, reset }
}

/// The index of the entry named `name`, added (full, nothing leased) if there is none.
fn entry_index(entries: &mut Vec<Entry>, name: &Arc<str>, policy: Policy) -> usize {
    match entries.iter().position(|e| e.name == *name) {
        Some(i) => i,
        None => {
            entries.push(Entry { name: name.clone(), bucket: Bucket::new(policy), lease: Lease::default() });
            entries.len() - 1
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
    let mut n = itoa::Buffer::new();
    for (i, s) in statuses.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        for (out, (a, av), (b, bv)) in [
            (&mut policy, (";q=", s.limit), (";w=", s.duration.as_secs())),
            (&mut state, (";r=", s.remaining), (";t=", s.reset)),
        ] {
            out.push('"');
            out.push_str(&s.name);
            out.push('"');
            out.push_str(a);
            out.push_str(n.format(av));
            out.push_str(b);
            out.push_str(n.format(bv));
        }
    }
    // The strings become the values as they are (checked, not copied).
    let value = |s: String| HeaderValue::from_maybe_shared(bytes::Bytes::from(s));
    if let (Ok(p), Ok(s)) = (value(policy), value(state)) {
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
    use keygate_core::model::AccountStatus;
    use keygate_core::ratelimit::AccountLimit;

    use super::*;

    const S: u64 = 1_000_000_000;

    impl Admit {
        fn unwrap(self) -> Vec<LimitStatus> {
            match self {
                Admit::Pass(s) => s,
                other => panic!("not a pass: {other:?}"),
            }
        }

        fn unwrap_err(self) -> Box<Limited> {
            match self {
                Admit::Refuse(l) => l,
                other => panic!("not a refusal: {other:?}"),
            }
        }

        fn is_ok(&self) -> bool {
            matches!(self, Admit::Pass(_))
        }
    }

    fn states(own: Vec<RateLimit>, account: Vec<AccountLimit>) -> (CredentialState, AccountState) {
        let a = AccountId::generate(1);
        let cred = CredentialState { ratelimits: own, ..CredentialState::new(ClientId::generate(2), a) };
        let account = AccountState {
            id: a,
            uid: 1,
            email: String::new(),
            first_name: String::new(),
            status: AccountStatus::Active,
            ratelimits: account,
            credits: None,
            ip_allowlist: Vec::new(),
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

    /// Shared buckets held in this process (what Redis holds for several), GCRA on one `Bucket`
    /// per key, for testing the lease logic deterministically; `down` makes every call fail.
    #[derive(Default)]
    struct InProcess {
        buckets: Mutex<HashMap<String, Bucket>>,
        down: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicU64,
    }

    impl SharedCounter for InProcess {
        fn lease<'a>(
            &'a self,
            key: &'a str,
            policy: Policy,
            want: u64,
            now: u64,
        ) -> BoxFuture<'a, Result<Grant, String>> {
            Box::pin(async move {
                self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("down".into());
                }
                let mut buckets = self.buckets.lock().unwrap();
                let b = buckets.entry(key.to_owned()).or_insert_with(|| Bucket::new(policy));
                b.adopt(policy, now);
                let mut granted = 0;
                while granted < want {
                    match b.take(policy, 1, now) {
                        Take::Pass(tat) => b.tat = tat,
                        Take::Refuse(_) => break,
                    }
                    granted += 1;
                }
                Ok(Grant { granted, tat: b.tat.max(now) })
            })
        }

        fn ping(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::Relaxed) { Err("down".into()) } else { Ok(()) }
            })
        }
    }

    /// Decides one request as the authenticator does: leasing when asked, three times at most.
    async fn decide(limiter: &Limiter, applied: &Applied, now: u64) -> Admit {
        for _ in 0..3 {
            match limiter.admit(applied, 1, now) {
                Admit::Lease(needs) => limiter.lease(&needs, now).await,
                other => return other,
            }
        }
        Limiter::admit_local(applied, 1, now)
    }

    #[tokio::test]
    async fn shared_counting_never_admits_more_than_the_shared_bucket() {
        let counter = Arc::new(InProcess::default());
        // Two processes, one shared bucket of 10 per minute.
        let nodes = [Arc::new(Limiter::default()), Arc::new(Limiter::default())];
        for n in &nodes {
            assert!(n.share(counter.clone(), FailMode::Open));
            assert!(!n.share(counter.clone(), FailMode::Open), "shared once");
        }
        let (cred, account) = states(vec![RateLimit::new("requests", 10, w("1m"))], Vec::new());
        let applied: Vec<_> = nodes.iter().map(|n| n.applied(&cred, &account).unwrap()).collect();
        let t0 = now_ns();
        let mut passed = 0;
        for i in 0..40 {
            if matches!(decide(&nodes[i % 2], &applied[i % 2], t0).await, Admit::Pass(_)) {
                passed += 1;
            }
        }
        assert_eq!(passed, 10, "two processes, one limit");
        // A refusal after the bucket ran dry is decided locally, without a round trip.
        let calls = counter.calls.load(std::sync::atomic::Ordering::Relaxed);
        let refused = decide(&nodes[0], &applied[0], t0).await;
        match refused {
            Admit::Refuse(l) => assert_eq!(l.retry_after, Some(6), "one more every 6 s"),
            other => panic!("{other:?}"),
        }
        assert_eq!(counter.calls.load(std::sync::atomic::Ordering::Relaxed), calls);
        assert_eq!(nodes[0].shared_state(), Some(true));
    }

    #[tokio::test]
    async fn a_shared_refusal_takes_nothing_from_the_other_limits() {
        let counter = Arc::new(InProcess::default());
        let limiter = Arc::new(Limiter::default());
        limiter.share(counter.clone(), FailMode::Open);
        let own = vec![RateLimit::new("a", 2, w("1m")), RateLimit::new("b", 5, w("1m"))];
        let (cred, account) = states(own, Vec::new());
        let applied = limiter.applied(&cred, &account).unwrap();
        let t0 = now_ns();
        assert!(decide(&limiter, &applied, t0).await.is_ok());
        assert!(decide(&limiter, &applied, t0).await.is_ok());
        let refused = decide(&limiter, &applied, t0).await.unwrap_err();
        assert_eq!(refused.refused_by, ["a"]);
        // "b" gave 2 of its 5; what it leased and did not use is still this process's.
        let b = refused.statuses.iter().find(|s| &*s.name == "b").unwrap();
        assert_eq!(b.remaining, 3, "{refused:?}");
    }

    #[tokio::test]
    async fn unreachable_counters_fall_back_to_the_fail_mode() {
        let (cred, account) = states(vec![RateLimit::new("requests", 3, w("1m"))], Vec::new());
        for fail in [FailMode::Open, FailMode::Closed] {
            let counter = Arc::new(InProcess::default());
            counter.down.store(true, std::sync::atomic::Ordering::Relaxed);
            let limiter = Arc::new(Limiter::default());
            limiter.share(counter.clone(), fail);
            let applied = limiter.applied(&cred, &account).unwrap();
            let t0 = now_ns();
            let first = decide(&limiter, &applied, t0).await;
            assert_eq!(limiter.shared_state(), Some(false));
            match fail {
                // Counted on this process's own bucket: 3 pass, the 4th does not.
                FailMode::Open => {
                    assert!(first.is_ok());
                    for _ in 0..2 {
                        assert!(decide(&limiter, &applied, t0).await.is_ok());
                    }
                    assert!(matches!(decide(&limiter, &applied, t0).await, Admit::Refuse(_)));
                }
                FailMode::Closed => {
                    assert!(matches!(first, Admit::Unavailable), "{first:?}");
                    assert!(matches!(decide(&limiter, &applied, t0).await, Admit::Unavailable));
                }
            }
            // Back: the probe finds it, and shared counting resumes.
            counter.down.store(false, std::sync::atomic::Ordering::Relaxed);
            let start = std::time::Instant::now();
            while limiter.shared_state() != Some(true) {
                assert!(start.elapsed() < std::time::Duration::from_secs(5), "the probe never found it back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(decide(&limiter, &applied, now_ns()).await.is_ok());
        }
    }

    #[test]
    fn leases_are_a_bounded_share_of_the_limit() {
        let p = |limit, secs| Policy::new(limit, secs * S);
        assert_eq!(lease_size(p(1, 1)), 1);
        assert_eq!(lease_size(p(20, 1)), 2);
        assert_eq!(lease_size(p(1000, 1)), 100);
        assert_eq!(lease_size(p(1000, 86_400)), 1, "a slow limit: one at a time");
        assert_eq!(lease_size(p(8, 1)), 1);
        assert_eq!(lease_size(p(1_000_000_000, 1)), 100_000_000);
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
