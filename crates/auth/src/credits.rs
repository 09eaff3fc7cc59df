//! Credits on the request path: prepaid balances spent by requests, never overspent across nodes.
//!
//! A balance lives in the database; a process spends from a *lease*, a slice of the balance it
//! took in one transaction ([`Store::lease_credits`]), so deciding a request is a short lock and
//! a subtraction in memory. A balance running low (a quarter of its last lease left) is leased
//! ahead by [`run_refiller`], which takes every balance running low in one transaction
//! ([`Store::lease_credits_many`]); a request waits for a lease only when its balance ran out
//! first (a balance it is the first to charge, or one given back idle), and then in the
//! refiller's next batch, with every other balance that requests need meanwhile (one commit for
//! them all: a node that starts, or whose keys come back after a pause, does not lease its
//! balances one transaction each). What was spent is reported every `flush` ([`Store::settle_credits`]),
//! which also keeps the lease alive; a lease idle for `idle_return` is given back, and so is every
//! lease at shutdown. So:
//! - **never overspent**: a process spends only credits the database handed it; a lease it has
//!   not renewed for `lease_ttl` (a process that died, or lost its database) is reclaimed by the
//!   database, and the process stops using it a third of that earlier;
//! - **never lost**: a process that dies (`kill -9`) leaves its leases to expire; the database
//!   gives their unspent part back, counting what was reported spent, so the credits spent since
//!   its last report come back (the bound: one `flush` of its traffic, 1 s by default, plus the
//!   time that report took to commit);
//! - **a refusal is exact**: 1006 only when the database itself could not cover the cost (the
//!   process holds less and the lease found less). While other processes hold leases, a balance
//!   may look exhausted here until they give them back (idle, at most `idle_return` after their
//!   last request; a give-back that ends an exhausted balance is announced in the change feed).
//!
//! A request charges at most two balances, its credential's own and its account's (locked in that
//! order, both must cover the cost, and either both are charged or neither). A request refused
//! later (a rate limit) is refunded.
//!
//! Setting a balance (`set`, a `PATCH`, a refill at a period boundary) moves its *epoch*: leases
//! of an older epoch are void. A process learns of it from the change feed (or computes a period
//! boundary itself), so after a `set` it may spend what it held for up to the feed's bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keygate_core::credits::{CreditsPolicy, Refill};
use keygate_core::decide::{AccountState, CredentialState};
use keygate_store::{CreditLease, CreditRequest, CreditScope, CreditSettlement, Store, StoreError, now_ms};
use tokio::sync::watch;

const SHARDS: usize = 16;

/// How long the refiller waits for more balances running low before it leases for them all.
const REFILL_BATCH: Duration = Duration::from_millis(5);

/// How much of a balance's recent spend a lease takes ahead.
const LEASE_AHEAD: Duration = Duration::from_secs(2);
/// The same while the balance holds a hundred times as much (see `lease_size`).
const LEASE_AHEAD_PLENTY: Duration = Duration::from_secs(20);

/// The fewest credits a lease takes ahead (unless `max_prefetch` is lower, or less is left).
pub const MIN_PREFETCH: i64 = 256;

/// A moment on this process's monotonic clock, in milliseconds since its first use: 8 bytes where
/// an `Instant` takes 16, so that what a request touches of a balance fits in two cache lines (a
/// quiet key's request finds its balance out of cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Mono(std::num::NonZeroU64);

impl Mono {
    /// From milliseconds since the base (stored plus one: `Option<(Mono, i64)>` takes 16 bytes).
    fn at(ms: u64) -> Mono {
        Mono(std::num::NonZeroU64::MIN.saturating_add(ms))
    }

    fn ms(self) -> u64 {
        self.0.get() - 1
    }

    /// Now: the base is a day before the first use, so that a moment a while ago is still one.
    fn now() -> Mono {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Mono::at(BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 86_400_000)
    }

    /// How long after `earlier` this is (zero if it is not after).
    fn since(self, earlier: Mono) -> Duration {
        Duration::from_millis(self.ms().saturating_sub(earlier.ms()))
    }
}

impl std::ops::Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono::at(self.ms().saturating_add(d.as_millis() as u64))
    }
}

impl std::ops::Sub<Duration> for Mono {
    type Output = Mono;
    fn sub(self, d: Duration) -> Mono {
        Mono::at(self.ms().saturating_sub(d.as_millis() as u64))
    }
}

/// The refill period a moment belongs to (`None`: no refill), in 4 bytes (days or months since
/// 1970 fit in an `i32` for millions of years).
fn period_of(refill: Option<Refill>, now_ms: i64) -> Option<i32> {
    refill.map(|r| i32::try_from(r.period(now_ms)).unwrap_or(i32::MAX))
}

/// How balances are leased and reported.
#[derive(Debug, Clone, Copy)]
pub struct CreditSettings {
    /// How often spent credits are reported (and leases renewed): the bound on credits a process
    /// killed with `kill -9` can give back unspent.
    pub flush: Duration,
    /// How long a lease lives without a report before the database takes it back.
    pub lease_ttl: Duration,
    /// A lease unused this long is given back.
    pub idle_return: Duration,
    /// The most a lease takes ahead of the request that needs it (it also takes at most half of
    /// what is left beyond that request, and about two seconds of the balance's recent spend,
    /// twenty while plenty is left, at least [`MIN_PREFETCH`], so that a busy key takes a lease
    /// every few seconds and a quiet one not on every request).
    pub max_prefetch: i64,
    /// How long a lease may take before the request fails with 1503.
    pub store_timeout: Duration,
}

impl Default for CreditSettings {
    fn default() -> Self {
        Self {
            flush: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            idle_return: Duration::from_secs(5),
            max_prefetch: 10_000,
            store_timeout: Duration::from_secs(2),
        }
    }
}

/// One balance as this process holds it: what requests touch (the lock and [`Local`], 128 bytes)
/// first, on cache-line boundaries.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Balance {
    local: Mutex<Local>,
    scope: CreditScope,
    /// One lease at a time per balance: requests that need one wait for it, then look again.
    /// A give-back holds it too: a lease taken while the give-back is on its way would add to
    /// the very row the give-back ends, and be given back with it while this process spends it.
    leasing: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct Local {
    /// The epoch of what is held (credits of another epoch are void).
    epoch: i64,
    refill: Option<Refill>,
    /// The refill period the lease belongs to (`None`: no refill).
    period: Option<i32>,
    /// Leased and not spent.
    available: i64,
    /// The database says the quota is gone: requests are not charged until the credential or
    /// account is loaded again (the change feed brings it).
    unlimited: bool,
    /// Spent since the last report, under `epoch`.
    spent: i64,
    /// Whether the database holds a lease of this process for the balance.
    leased: bool,
    /// What the database held besides leases, as the last lease saw it (for the estimate).
    unleased: i64,
    /// The database could not give this many more credits: a request that would need as many
    /// from it is refused without asking until the feed says the balance changed, the period
    /// turns, or the instant passes (a request that needs fewer still asks).
    exhausted: Option<(Mono, i64)>,
    /// Past this, what is held is not used (it may have been reclaimed).
    valid_until: Mono,
    /// The balance's row changed (a top-up, a refund, a give-back elsewhere): give the lease back
    /// at the next report, so that a refund or a correction applies to what this process holds
    /// too (until then, at most one flush interval, it spends from its lease as before).
    give_back: bool,
    /// What the last lease left it holding, and whether a background lease is on its way.
    last_grant: i64,
    refilling: bool,
    last_spend: Mono,
    /// Spend since the last lease, for the next lease's size.
    spent_since_lease: i64,
    leased_at: Mono,
}

impl Balance {
    fn lock(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Local {
    fn touch(&mut self) {
        self.exhausted = None;
        self.give_back = self.leased;
    }

    /// Whether the database was found unable to give `more` credits (or fewer) a moment ago.
    fn exhausted_for(&self, more: i64, now: Mono) -> bool {
        self.exhausted.is_some_and(|(until, short)| now < until && more >= short)
    }

    /// Voids what is held when the period has turned or the epoch moved past it (what was spent
    /// under the old epoch is void too: the balance was set anew), or when the lease may have
    /// been reclaimed (what was spent is still reported).
    fn refresh(&mut self, policy_epoch: i64, now_ms: i64, now: Mono) {
        let period = period_of(self.refill, now_ms);
        if policy_epoch > self.epoch || period != self.period {
            self.epoch = self.epoch.max(policy_epoch);
            self.period = period;
            self.available = 0;
            self.spent = 0;
            self.exhausted = None;
        } else if now >= self.valid_until && self.available > 0 {
            self.available = 0;
        }
    }
}

/// The balances one credential's requests are charged to, worked out when it is loaded.
#[derive(Debug)]
pub struct Charged {
    credential: Option<(Arc<Balance>, i64)>,
    account: Option<(Arc<Balance>, i64)>,
}

impl Charged {
    fn balances(&self) -> impl Iterator<Item = &(Arc<Balance>, i64)> {
        self.credential.iter().chain(self.account.iter())
    }
}

/// Credits taken for one request, given back if a later check refuses it.
#[derive(Debug)]
pub struct Reserved {
    charged: Arc<Charged>,
    cost: i64,
    /// What is left, as this process knows it (the smallest of the balances charged).
    pub remaining: i64,
}

impl Reserved {
    /// The credits charged.
    pub fn cost(&self) -> u64 {
        self.cost.max(0) as u64
    }
}

/// Why a request could not be charged.
#[derive(Debug)]
pub enum CreditError {
    /// 1006: the balance does not cover the cost (`remaining` as known here).
    Insufficient { remaining: i64, cost: u64 },
    /// The database could not be asked for credits.
    Store(StoreError),
}

enum Attempt {
    Charged(i64),
    Insufficient(i64),
    /// These balances need credits from the database.
    Lease(Vec<Arc<Balance>>),
}

/// What [`run_refiller`] leases in its next batch.
#[derive(Default)]
struct Refills {
    /// Balances running low (each at most once: `Local::refilling`), and balances a request
    /// waits for, with the credits it needs held (`Some`).
    queue: Vec<(Arc<Balance>, Option<i64>)>,
    /// The number of the batch that takes `queue` next.
    next: u64,
    /// A request waits for this batch: no waiting for more to gather.
    urgent: bool,
}

/// The batches [`run_refiller`] has leased, for the requests waiting for one.
#[derive(Debug, Clone, Default)]
struct Batches {
    /// Every batch up to this one is done (`u64::MAX`: the refiller stopped).
    done: u64,
    /// The last batch that failed, and why.
    failed: Option<(u64, Arc<StoreError>)>,
}

/// Every balance this process charges.
pub struct Credits {
    holder: String,
    settings: CreditSettings,
    /// What [`run_refiller`] leases next.
    refills: Mutex<Refills>,
    refill_wanted: tokio::sync::Notify,
    /// Whether [`run_refiller`] runs: a request that needs a lease then waits for its next batch
    /// (one transaction for every balance that needs one meanwhile) rather than leasing alone.
    refiller: AtomicBool,
    batches: watch::Sender<Batches>,
    shards: [Mutex<HashMap<CreditScope, Arc<Balance>, foldhash::fast::RandomState>>; SHARDS],
}

impl std::fmt::Debug for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credits").field("holder", &self.holder).finish_non_exhaustive()
    }
}

fn shard_of(scope: &CreditScope) -> usize {
    let byte = match scope {
        CreditScope::Credential(c) => c.as_bytes()[11],
        CreditScope::Account(a) => a.as_bytes()[11],
    };
    byte as usize % SHARDS
}

impl Credits {
    /// Balances leased on the request path when a request finds too little, and ahead of it
    /// by [`run_refiller`] (when one runs) when what a balance holds runs low.
    pub fn new(settings: CreditSettings) -> Self {
        // Who holds a lease in the database: this process, until it exits (host and pid first,
        // so that an operator looking at `credit_leases` can tell which process holds what).
        let holder = format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>());
        Self {
            holder,
            settings,
            refills: Mutex::default(),
            refill_wanted: tokio::sync::Notify::new(),
            refiller: AtomicBool::new(false),
            batches: watch::Sender::new(Batches::default()),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    pub fn settings(&self) -> &CreditSettings {
        &self.settings
    }

    /// The name this process's leases carry.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn balance(&self, scope: CreditScope, policy: &CreditsPolicy) -> Arc<Balance> {
        let mut shard = self.shards[shard_of(&scope)].lock().unwrap_or_else(|p| p.into_inner());
        shard
            .entry(scope)
            .or_insert_with(|| {
                let now = Mono::now();
                Arc::new(Balance {
                    scope,
                    local: Mutex::new(Local {
                        epoch: policy.epoch,
                        refill: policy.refill,
                        period: period_of(policy.refill, now_ms()),
                        available: 0,
                        unlimited: false,
                        spent: 0,
                        leased: false,
                        unleased: 0,
                        exhausted: None,
                        give_back: false,
                        last_grant: 0,
                        refilling: false,
                        valid_until: now,
                        last_spend: now,
                        spent_since_lease: 0,
                        leased_at: now,
                    }),
                    leasing: Arc::default(),
                })
            })
            .clone()
    }

    /// The balances a credential's requests are charged to (`None`: neither has a quota).
    pub fn charged(&self, cred: &CredentialState, account: &AccountState) -> Option<Arc<Charged>> {
        let load = |scope, p: CreditsPolicy| {
            let b = self.balance(scope, &p);
            let mut l = b.lock();
            l.refill = p.refill;
            l.unlimited = false;
            drop(l);
            (b, p.epoch)
        };
        let credential = cred.credits.map(|p| load(CreditScope::Credential(cred.client_id), p));
        let account = account.credits.map(|p| load(CreditScope::Account(account.id), p));
        (credential.is_some() || account.is_some()).then(|| Arc::new(Charged { credential, account }))
    }

    /// The change feed says a balance's row changed (a top-up, a refund, a set, a give-back
    /// elsewhere): look at the database again before refusing, and give the lease back at the
    /// next report.
    pub fn touched(&self, scope: CreditScope) {
        let shard = self.shards[shard_of(&scope)].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = shard.get(&scope) {
            b.lock().touch();
        }
    }

    /// Every balance may have changed (the feed could not say which).
    pub fn touched_all(&self) {
        for shard in &self.shards {
            for b in shard.lock().unwrap_or_else(|p| p.into_inner()).values() {
                b.lock().touch();
            }
        }
    }

    /// Charges `cost` to every balance in memory if they all cover it, or says which need a lease.
    fn attempt<'a>(&self, charged: &'a Charged, cost: i64, now_ms: i64) -> Attempt {
        let now = Mono::now();
        // Locked in order (the credential's first), on the stack: this is every charged request.
        let lock = |held: &'a Option<(Arc<Balance>, i64)>| {
            held.as_ref().map(|(b, epoch)| {
                let mut l = b.lock();
                l.refresh(*epoch, now_ms, now);
                (l, b)
            })
        };
        let mut guards: [Option<(MutexGuard<'a, Local>, &'a Arc<Balance>)>; 2] =
            [lock(&charged.credential), lock(&charged.account)];
        // A cost of 0 checks that the balance is positive (`keygate_core::credits::covers`).
        let need = cost.max(1);
        let mut lacking = Vec::new();
        let mut refused = None;
        for (l, b) in guards.iter().flatten() {
            if l.unlimited || l.available >= need {
                continue;
            }
            if l.exhausted_for(need - l.available, now) {
                refused = Some(l.available + l.unleased.max(0));
            } else {
                lacking.push(Arc::clone(b));
            }
        }
        if let Some(remaining) = refused {
            return Attempt::Insufficient(remaining);
        }
        if !lacking.is_empty() {
            return Attempt::Lease(lacking);
        }
        let mut remaining = i64::MAX;
        let mut low = None;
        for (l, b) in guards.iter_mut().flatten() {
            if l.unlimited {
                continue;
            }
            l.available -= cost;
            l.spent += cost;
            l.spent_since_lease += cost;
            l.last_spend = now;
            remaining = remaining.min(l.available + l.unleased.max(0));
            // Running low: lease more in the background, before a request has to wait for it.
            if !l.refilling && l.available.saturating_mul(4) < l.last_grant && l.exhausted.is_none() {
                l.refilling = true;
                low.get_or_insert_with(Vec::new).push(Arc::clone(b));
            }
        }
        drop(guards);
        if let Some(low) = low {
            self.refill(low);
        }
        Attempt::Charged(remaining)
    }

    /// Queues balances running low for the background refiller ([`run_refiller`]).
    fn refill(&self, low: Vec<Arc<Balance>>) {
        self.refills.lock().unwrap_or_else(|p| p.into_inner()).queue.extend(low.into_iter().map(|b| (b, None)));
        self.refill_wanted.notify_one();
    }

    /// Queues balances a request needs `want` credits of for the refiller's next batch, and
    /// returns its number (`None`: no refiller runs).
    fn queue_wanted(&self, lacking: Vec<Arc<Balance>>, want: i64) -> Option<u64> {
        if !self.refiller.load(Ordering::Acquire) {
            return None;
        }
        let mut refills = self.refills.lock().unwrap_or_else(|p| p.into_inner());
        refills.queue.extend(lacking.into_iter().map(|b| (b, Some(want))));
        refills.urgent = true;
        let batch = refills.next;
        drop(refills);
        self.refill_wanted.notify_one();
        Some(batch)
    }

    /// Waits until the refiller has leased batch `batch`, or stopped (`Err`: the batch failed, or
    /// took longer than `store_timeout`).
    async fn wait_batch(&self, batch: u64) -> Result<(), CreditError> {
        let mut done = self.batches.subscribe();
        let waited = tokio::time::timeout(self.settings.store_timeout, done.wait_for(|b| b.done >= batch)).await;
        match waited {
            Ok(Ok(b)) => match &b.failed {
                Some((failed, e)) if *failed == batch => Err(CreditError::Store(copy_error(e))),
                _ => Ok(()),
            },
            // The sender lives as long as `self`.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(CreditError::Store(StoreError::Unavailable(format!(
                "credits could not be leased within {:?}",
                self.settings.store_timeout
            )))),
        }
    }

    /// Charges `cost` (0: a check that the balances are positive, charging nothing) to the
    /// balances, leasing from the database when what is held does not cover it.
    pub async fn reserve(&self, store: &dyn Store, charged: &Arc<Charged>, cost: u64) -> Result<Reserved, CreditError> {
        let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
        // Other requests may spend a lease before this one looks again: a few rounds, then the
        // balance is contended at its very end and the request is refused.
        for round in 0..8 {
            let lacking = match self.attempt(charged, cost_i, now_ms()) {
                Attempt::Charged(remaining) => {
                    return Ok(Reserved { charged: charged.clone(), cost: cost_i, remaining });
                }
                Attempt::Insufficient(remaining) => return Err(CreditError::Insufficient { remaining, cost }),
                Attempt::Lease(lacking) => lacking,
            };
            // First in the refiller's next batch, with every balance other requests need
            // meanwhile (one transaction, one commit for them all); then (a balance whose lease
            // was on its way elsewhere, or spent meanwhile) one lease at a time, as without it.
            if round == 0
                && let Some(batch) = self.queue_wanted(lacking.clone(), cost_i.max(1))
            {
                self.wait_batch(batch).await?;
                continue;
            }
            for b in lacking {
                self.lease(store, &b, cost_i.max(1)).await?;
            }
        }
        Err(CreditError::Insufficient { remaining: remaining_of(charged), cost })
    }

    /// The fast path: charges from what is held, without waiting (`None`: a lease is needed).
    /// `now_ms` is the request's time (Unix ms), as the caller read it.
    pub fn try_reserve(&self, charged: &Arc<Charged>, cost: u64, now_ms: i64) -> Option<Result<Reserved, CreditError>> {
        let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
        match self.attempt(charged, cost_i, now_ms) {
            Attempt::Charged(remaining) => Some(Ok(Reserved { charged: charged.clone(), cost: cost_i, remaining })),
            Attempt::Insufficient(remaining) => Some(Err(CreditError::Insufficient { remaining, cost })),
            Attempt::Lease(_) => None,
        }
    }

    /// Gives a refused request's credits back.
    pub fn refund(&self, reserved: Reserved) {
        for (b, _) in reserved.charged.balances() {
            let mut l = b.lock();
            l.available += reserved.cost;
            l.spent -= reserved.cost;
            l.spent_since_lease -= reserved.cost;
        }
    }

    async fn lease(&self, store: &dyn Store, b: &Arc<Balance>, want: i64) -> Result<(), CreditError> {
        lease_balance(&self.holder, &self.settings, store, b, want).await
    }

    /// Reports what was spent, renews the leases still in use and gives back idle ones (all of
    /// them with `release_all`, at shutdown). A failed report keeps its counts for the next one.
    pub async fn settle(&self, store: &dyn Store, release_all: bool) -> Result<usize, StoreError> {
        let now = Mono::now();
        let mut batch = Vec::new();
        let mut held = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, b| {
                let mut l = b.lock();
                if !l.leased && l.spent == 0 {
                    // Nothing in the database: forget it unless a cached credential still uses it.
                    return Arc::strong_count(b) > 1;
                }
                let idle = release_all || l.give_back || now.since(l.last_spend) >= self.settings.idle_return;
                // Nothing spent and not giving back: renew only once a third of the TTL has gone.
                if !idle && l.spent == 0 && now + self.settings.lease_ttl / 3 < l.valid_until {
                    return true;
                }
                // A give-back waits while a lease of the balance is on its way (next time, then).
                let guard = if idle { b.leasing.clone().try_lock_owned().ok() } else { None };
                let release = guard.is_some();
                batch.push(CreditSettlement { scope: b.scope, epoch: l.epoch, spent: l.spent, release });
                held.push((b.clone(), l.spent, release.then_some(l.available), guard));
                l.spent = 0;
                if release {
                    l.available = 0;
                    l.leased = false;
                    l.give_back = false;
                }
                true
            });
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let ttl = self.settings.lease_ttl;
        match store.settle_credits(&self.holder, &batch, now_ms(), ttl.as_millis() as i64).await {
            Ok(()) => {
                for (b, _, released, _) in &held {
                    let mut l = b.lock();
                    if released.is_none() && l.leased {
                        l.valid_until = now + ttl - ttl / 3;
                    }
                }
                Ok(batch.len())
            }
            Err(e) => {
                for (b, spent, released, _) in held {
                    let mut l = b.lock();
                    l.spent += spent;
                    if let Some(available) = released {
                        l.available += available;
                        l.leased = true;
                    }
                }
                Err(e)
            }
        }
    }
}

/// Makes `b` hold at least `want` credits, leasing the difference from the database (one lease at
/// a time per balance; a request that waited for another's lease looks again first).
async fn lease_balance(
    holder: &str,
    settings: &CreditSettings,
    store: &dyn Store,
    b: &Arc<Balance>,
    want: i64,
) -> Result<(), CreditError> {
    let _one = b.leasing.lock().await;
    let Some((need, extra)) = lease_size(settings, b, want) else { return Ok(()) };
    let ttl = settings.lease_ttl;
    let sent = Mono::now();
    let lease = tokio::time::timeout(
        settings.store_timeout,
        store.lease_credits(holder, b.scope, need, extra, now_ms(), ttl.as_millis() as i64),
    )
    .await
    .map_err(|_| {
        CreditError::Store(StoreError::Unavailable(format!(
            "credits could not be leased within {:?}",
            settings.store_timeout
        )))
    })?
    .map_err(CreditError::Store)?;
    metrics::counter!("keygate_credit_leases_total").increment(1);
    apply_lease(settings, b, &lease, need, sent);
    Ok(())
}

/// What a lease for `b` asks (`None`: none is needed): what `want` lacks, and ahead of it about
/// two seconds of the balance's recent spend ([`LEASE_AHEAD`]), or twenty ([`LEASE_AHEAD_PLENTY`])
/// while the database held more than a hundred times that besides leases when it last leased
/// (at least [`MIN_PREFETCH`], at most `max_prefetch`). Near a balance's end leases stay small, so
/// that what one node holds unused is little of what is left; far from it, a key spending fast
/// takes a lease a tenth as often (each a write to the database).
fn lease_size(settings: &CreditSettings, b: &Balance, want: i64) -> Option<(i64, i64)> {
    let mut l = b.lock();
    let epoch = l.epoch;
    l.refresh(epoch, now_ms(), Mono::now());
    if l.unlimited || l.available >= want || l.exhausted_for(want - l.available, Mono::now()) {
        return None;
    }
    let need = want - l.available;
    let elapsed = Mono::now().since(l.leased_at).as_secs_f64().max(0.001);
    let rate = l.spent_since_lease.max(0) as f64 / elapsed;
    let ahead =
        |horizon: Duration| ((rate * horizon.as_secs_f64()) as i64).max(MIN_PREFETCH).min(settings.max_prefetch);
    let plenty = ahead(LEASE_AHEAD_PLENTY);
    let extra = if l.unleased / 100 > plenty { plenty } else { ahead(LEASE_AHEAD) };
    Some((need, extra))
}

/// Takes what the database granted into `b` (asked for `need`, sent at `sent`).
fn apply_lease(settings: &CreditSettings, b: &Balance, lease: &CreditLease, need: i64, sent: Mono) {
    let ttl = settings.lease_ttl;
    let mut l = b.lock();
    let Some(policy) = lease.policy else {
        l.available = 0;
        l.unlimited = true;
        return;
    };
    if policy.epoch != l.epoch || policy.refill != l.refill {
        // The balance was set or refilled: what was held is void, the new lease is all.
        l.epoch = policy.epoch;
        l.refill = policy.refill;
        l.available = 0;
        l.spent = 0;
    }
    l.period = period_of(policy.refill, now_ms());
    l.available += lease.granted;
    l.last_grant = l.available;
    l.unleased = lease.unleased;
    l.leased |= lease.granted > 0;
    l.spent_since_lease = 0;
    l.leased_at = Mono::now();
    // Used only while the database cannot have reclaimed it: a third of the TTL early.
    l.valid_until = sent + ttl - ttl / 3;
    l.exhausted = (lease.granted == 0).then(|| (Mono::now() + settings.idle_return, need));
}

/// Leases ahead for the balances running low, all of them in one transaction (one commit however
/// many keys are busy), until `stop`; also leases for the requests that found too little (the
/// balances they need, all in the next batch). Requests never wait for what it leases ahead: a
/// balance that runs out first is leased for the request that needs it, in the next batch.
pub async fn run_refiller(credits: Arc<Credits>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    struct Running<'a>(&'a Credits);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            // Requests lease one by one again; those waiting for a batch look again.
            self.0.refiller.store(false, Ordering::Release);
            self.0.batches.send_modify(|b| b.done = u64::MAX);
        }
    }
    credits.refiller.store(true, Ordering::Release);
    let _running = Running(&credits);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = credits.refill_wanted.notified() => {}
        }
        // Gather what runs low meanwhile into the same batch (unless a request waits for it:
        // what comes meanwhile goes into the next batch, taken as soon as this one is done).
        if !credits.refills.lock().unwrap_or_else(|p| p.into_inner()).urgent {
            tokio::time::sleep(REFILL_BATCH).await;
        }
        let (queued, number) = {
            let mut refills = credits.refills.lock().unwrap_or_else(|p| p.into_inner());
            refills.urgent = false;
            refills.next += 1;
            (std::mem::take(&mut refills.queue), refills.next - 1)
        };
        let outcome = refill_batch(&credits, store.as_ref(), queued).await;
        credits.batches.send_modify(|b| {
            b.done = number;
            if let Err(e) = outcome {
                b.failed = Some((number, Arc::new(e)));
            }
        });
    }
}

/// Leases for one batch of the refiller.
async fn refill_batch(
    credits: &Credits,
    store: &dyn Store,
    mut queued: Vec<(Arc<Balance>, Option<i64>)>,
) -> Result<(), StoreError> {
    // A balance queued more than once (running low, and needed by requests) is leased once, for
    // the most any of them needs.
    queued.sort_by_key(|(b, want)| (Arc::as_ptr(b) as usize, std::cmp::Reverse(*want)));
    queued.dedup_by(|later, first| Arc::ptr_eq(&later.0, &first.0));
    let mut batch = Vec::new();
    for (b, wanted) in queued {
        // A balance whose lease is on its way (a request's, or a give-back) is left to it.
        let Ok(guard) = b.leasing.clone().try_lock_owned() else {
            b.lock().refilling = false;
            continue;
        };
        let want = {
            let l = b.lock();
            wanted.map_or(l.available + 1, |w| w.max(l.available + 1))
        };
        match lease_size(&credits.settings, &b, want) {
            Some((need, extra)) => batch.push((b, guard, need, extra)),
            None => b.lock().refilling = false,
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let requests: Vec<CreditRequest> =
        batch.iter().map(|(b, _, need, extra)| CreditRequest { scope: b.scope, need: *need, extra: *extra }).collect();
    let ttl = credits.settings.lease_ttl;
    let sent = Mono::now();
    let leased = tokio::time::timeout(
        credits.settings.store_timeout,
        store.lease_credits_many(&credits.holder, &requests, now_ms(), ttl.as_millis() as i64),
    )
    .await
    .unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("credits could not be leased within {:?}", credits.settings.store_timeout)))
    });
    match leased {
        Ok(leases) => {
            metrics::counter!("keygate_credit_leases_total").increment(batch.len() as u64);
            for ((b, _guard, need, _), lease) in batch.iter().zip(leases) {
                if let Some(lease) = lease {
                    apply_lease(&credits.settings, b, &lease, *need, sent);
                }
                b.lock().refilling = false;
            }
            Ok(())
        }
        Err(e) => {
            tracing::debug!(error = %e, "leasing credits failed");
            for (b, ..) in &batch {
                b.lock().refilling = false;
            }
            Err(e)
        }
    }
}

/// A copy of a store error, for every request that waited for the batch it ended.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Other(m) => StoreError::Other(m.clone()),
    }
}

/// The smallest balance known here (for a refusal's message after a contended end).
fn remaining_of(charged: &Charged) -> i64 {
    charged
        .balances()
        .map(|(b, _)| {
            let l = b.lock();
            l.available + l.unleased.max(0)
        })
        .min()
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "keygate".into())
}

/// Settles every `flush` until `stop`, then gives every lease back; reclaims the expired leases
/// of processes that died every 10 flushes. Reports start every `flush` however long each takes
/// (a report that takes longer delays the next, never adds a `flush` to it): what a process
/// killed with `kill -9` spent unreported is what it spent since its last report started.
pub async fn run_settler(credits: Arc<Credits>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let flush = credits.settings.flush;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + flush, flush);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        let stopping = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = every.tick() => false,
        };
        if let Err(e) = credits.settle(store.as_ref(), stopping).await {
            tracing::warn!(error = %e, "reporting spent credits failed; kept for the next report");
        }
        ticks += 1;
        if ticks.is_multiple_of(10)
            && let Err(e) = store.reclaim_credit_leases(now_ms()).await
        {
            tracing::warn!(error = %e, "reclaiming expired credit leases failed");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_request_touches_of_a_balance_is_two_cache_lines() {
        assert!(size_of::<Mutex<Local>>() <= 128, "{} bytes", size_of::<Mutex<Local>>());
        assert_eq!(std::mem::offset_of!(Balance, local), 0);
        assert_eq!(align_of::<Balance>(), 64);
    }

    #[test]
    fn leases_take_more_ahead_while_plenty_is_left() {
        let credits = Credits::new(CreditSettings::default());
        let scope = CreditScope::Credential(keygate_core::ids::ClientId::generate(1));
        let b = credits.balance(scope, &CreditsPolicy { refill: None, epoch: 0 });
        // 1,000 credits a second since the last lease (spent 1,000 over the last second).
        let ahead = |unleased: i64| {
            let mut l = b.lock();
            l.unleased = unleased;
            l.spent_since_lease = 1_000;
            l.leased_at = Mono::now() - Duration::from_secs(1);
            l.exhausted = None;
            drop(l);
            lease_size(credits.settings(), &b, 1).map(|(_, extra)| extra)
        };
        // Two seconds of spend near the end (at most what is left is the database's to say).
        assert!(matches!(ahead(0), Some(1_990..=2_010)), "{:?}", ahead(0));
        // Twenty (capped by max_prefetch) once the database holds more than a hundred times that.
        assert!(matches!(ahead(900_000), Some(1_990..=2_010)), "{:?}", ahead(900_000));
        assert_eq!(ahead(1_100_000), Some(10_000));
        let small = Credits::new(CreditSettings { max_prefetch: 1_000_000, ..CreditSettings::default() });
        let b2 = small.balance(scope, &CreditsPolicy { refill: None, epoch: 0 });
        {
            let mut l = b2.lock();
            l.unleased = 10_000_000;
            l.spent_since_lease = 1_000;
            l.leased_at = Mono::now() - Duration::from_secs(1);
        }
        assert!(matches!(lease_size(small.settings(), &b2, 1), Some((1, 19_900..=20_100))));
        // A quiet key still takes the least lease.
        b2.lock().spent_since_lease = 1;
        assert_eq!(lease_size(small.settings(), &b2, 1), Some((1, MIN_PREFETCH)));
    }

    #[test]
    fn the_monotonic_clock_in_milliseconds() {
        let t = Mono::at(1_000);
        assert_eq!((t + Duration::from_millis(250)).ms(), 1_250);
        assert_eq!((t - Duration::from_secs(5)).ms(), 0, "saturates at the base");
        assert_eq!((t + Duration::from_secs(2)).since(t), Duration::from_secs(2));
        assert_eq!(t.since(t + Duration::from_secs(2)), Duration::ZERO);
        assert!(Mono::now() <= Mono::now());
        assert_eq!(size_of::<Option<(Mono, i64)>>(), 16);
    }
}
