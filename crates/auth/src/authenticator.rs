//! The authenticator: the request hot path.
//!
//! A request's credential is checked against in-memory state in the common case:
//! - `x-api-key`: format and checksum (no IO) -> keyed hash -> `secrets` cache -> credential and
//!   account caches -> [`keygate_core::decide::decide`];
//! - Bearer: JWT signature, algorithm, kid and expiry (no IO) -> the same credential and account
//!   caches, so a token dies with its credential and is refused while its account is banned.
//!
//! The caches are filled from the store on a miss and invalidated by the change feed
//! ([`crate::feed`]) and, at once, by this process's own writes. A load that races with an
//! invalidation is dropped rather than cached (see [`Authenticator::load`]).
//!
//! Fast path: once a key (or token) has been decided, its cache entry also keeps what the
//! credential and account it resolved to say ([`Resolved`], reduced to what a decision reads),
//! with the invalidation epochs of their stripes at the time they were read; while neither stripe
//! has moved, a request needs that one lookup. A key's entry is all that is cached for it (about
//! 130 bytes for a credential with no limits, credits, permissions, allowlists, name or
//! metadata); a stale one is loaded again with one store query.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, header};
use keygate_core::decide::{
    self, AccountState, AuthFailure, CredentialState, Denial, InvalidReason, Presented, Standing,
};
use keygate_core::model::AuthMethod;
use keygate_core::permission::Requirement;
use keygate_core::token::{Claims, Keyring, TokenError, TokenSubject};
use keygate_core::{AccountId, ClientId, SecretHash, SecretHasher};
use keygate_store::{Entity, Store, StoreError, now_ms};
use subtle::ConstantTimeEq;

use crate::cache::{BoundedCache as Cache, fmix64};
use crate::credits::{Charged, CreditError, CreditSettings, Credits, Reserved};
use crate::identity::{Identity, Profile, X_API_KEY, X_CLIENT_ID, X_CLIENT_SECRET};
use crate::ratelimit::{Admit, Applied, Limited, Limiter, Need};

/// For the legacy clientId + clientSecret pair: the secret must belong to that clientId (a
/// constant-time comparison of the 24 characters).
fn check_pair(client_id: Option<&str>, cid: ClientId) -> Result<(), AuthError> {
    if let Some(presented) = client_id
        && !bool::from(presented.as_bytes().ct_eq(&cid.hex_bytes()))
    {
        return Err(AuthError::Refused(AuthFailure::Invalid(InvalidReason::ClientMismatch)));
    }
    Ok(())
}

/// Why authentication did not produce an identity.
#[derive(Debug)]
pub enum AuthError {
    /// The request is refused (1101 / 1102 / 1200).
    Refused(AuthFailure),
    /// The decision needed the store and the store failed.
    Store(StoreError),
    /// A rate limit refused the request (1005).
    Limited(Box<Limited>),
    /// The credits left do not cover the request's cost (1006).
    NoCredits(Box<NoCredits>),
    /// The credential may not do this, or not from this address (1009).
    Denied(Box<Denied>),
}

/// A request whose credential may not do what it asks (1009).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub denial: Denial,
    /// What was required, in canonical form (for a permission denial).
    pub required: Option<String>,
}

/// What a request asks for besides being let in: what it costs, what it requires, and where it
/// comes from (for allowlists).
#[derive(Debug, Clone, Copy, Default)]
pub struct Access<'a> {
    /// Credits (0: needs a positive balance, charges nothing).
    pub cost: u64,
    /// The permissions the route requires (`None`: none).
    pub require: Option<&'a Requirement>,
    /// The client's address (`None`: unknown, which no allowlist contains).
    pub client_ip: Option<std::net::IpAddr>,
}

impl Access<'_> {
    /// Costs 1, requires nothing, from an unknown address.
    pub fn cost(cost: u64) -> Self {
        Self { cost, require: None, client_ip: None }
    }
}
/// A request refused because its balance does not cover its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCredits {
    /// What is left, as this process knows it.
    pub remaining: i64,
    pub cost: u64,
}

impl AuthError {
    /// Logs a refusal at debug level (which check failed: for the operator, never the client).
    pub fn log(&self, endpoint: &'static str) {
        match self {
            Self::Refused(f) => {
                tracing::debug!(endpoint, code = f.code().as_u32(), reason = f.reason(), "authentication refused");
            }
            Self::Limited(l) => {
                tracing::debug!(endpoint, code = 1005, limits = ?l.refused_by, "rate limited");
            }
            Self::NoCredits(n) => {
                tracing::debug!(endpoint, code = 1006, remaining = n.remaining, cost = n.cost, "insufficient credits");
            }
            Self::Denied(d) => {
                tracing::debug!(endpoint, code = 1009, denial = d.denial.as_str(), required = ?d.required, "permission denied");
            }
            Self::Store(_) => {}
        }
    }
}

impl From<AuthFailure> for AuthError {
    fn from(f: AuthFailure) -> Self {
        Self::Refused(f)
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Which invalidation stripe a cache key belongs to: a 64-bit mix of it (the stripe is its low
/// bits).
trait Stripe {
    fn stripe_hash(&self) -> u64;
}

/// A 12-byte id's stripe hash: all of its bytes (time, process and counter parts) mixed
/// ([`fmix64`]: ids that differ only in a counter, in any byte, spread over the stripes).
fn mix_id(b: &[u8; 12]) -> u64 {
    let low = u64::from_le_bytes(b[4..].try_into().expect("8 bytes"));
    let high = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    fmix64(low ^ u64::from(high).rotate_left(32))
}

impl Stripe for ClientId {
    fn stripe_hash(&self) -> u64 {
        mix_id(self.as_bytes())
    }
}

impl Stripe for AccountId {
    fn stripe_hash(&self) -> u64 {
        mix_id(self.as_bytes())
    }
}

/// How many invalidation stripes a cache of `capacity` entries gets: about one per 8 entries
/// (a power of two, 64 to 4M: 4 bytes each), so that an invalidation makes few other entries
/// look stale (each such entry costs one store query on its next use).
fn stripes_for(capacity: u64) -> usize {
    ((capacity / 8) as usize).clamp(64, 1 << 22).next_power_of_two()
}

/// The credential a request presents ([`decide::presented`] over its headers). Each header is
/// looked up once, and a later one only when the earlier ones are not used. A header that is
/// present but not visible ASCII is not a credential we could have issued: an `Authorization`
/// one, or an `x-api-key` one without `Authorization`, answers malformed.
fn presented(headers: &HeaderMap) -> Result<Presented<'_>, AuthFailure> {
    let malformed = || AuthFailure::Invalid(InvalidReason::MalformedKey);
    let used = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| malformed())?),
        None => None,
    };
    let x_api_key = if used(authorization) {
        None
    } else {
        match headers.get(&X_API_KEY).map(|v| v.to_str()) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) if authorization.is_none() => return Err(malformed()),
            _ => None,
        }
    };
    let (client_id, client_secret) = if used(authorization) || used(x_api_key) {
        (None, None)
    } else {
        let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        (get(&X_CLIENT_ID), get(&X_CLIENT_SECRET))
    };
    decide::presented(authorization, x_api_key, client_id, client_secret)
}

/// `keygate_auth_decisions_total{method, result}` handles, made once: counting a decision on the
/// hot path is one atomic add. Indexed by `AuthMethod as usize` (3 = unknown) and by outcome.
fn decision_counters() -> &'static [[metrics::Counter; 8]; 4] {
    static COUNTERS: std::sync::OnceLock<[[metrics::Counter; 8]; 4]> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| {
        let methods =
            [AuthMethod::ApiKey.as_str(), AuthMethod::Bearer.as_str(), AuthMethod::ClientSecret.as_str(), "-"];
        methods.map(|m| {
            ["1000", "1101", "1102", "1200", "1503", "1005", "1006", "1009"]
                .map(|r| metrics::counter!("keygate_auth_decisions_total", "method" => m, "result" => r))
        })
    })
}

/// What a credential (one of its secret generations) and its account said when they were read
/// together, reduced to what a decision reads, with their stripes' epochs from before the read:
/// current while both epochs are unchanged. Invalidations bump the epoch after they remove, and a
/// load keeps its result only if no invalidation ran while it read (see `load_key` and
/// `insert_checked`), so a value read at epoch `e` reflects every invalidation up to `e`.
///
/// Small and inline: a credential with none of what [`Rich`] holds costs no allocation.
#[derive(Clone)]
struct Resolved {
    /// The credential's and account's standing ([`decide::decide`] reduced).
    standing: Standing,
    account_id: AccountId,
    uid: i64,
    /// 32 bits: a stripe would have to move 2^32 times between a read and a check to look
    /// unchanged.
    epochs: (u32, u32),
    /// What only some credentials have (`None`: none of it).
    rich: Option<Arc<Rich>>,
}

/// What a credential may have beyond its standing: rate limits, credits, permissions,
/// allowlists (its own or its account's), a name or metadata.
struct Rich {
    cred: Arc<CredentialState>,
    account: Arc<AccountState>,
    /// The rate limits that apply, with their buckets (`None`: no limit applies).
    limits: Option<Arc<Applied>>,
    /// The credit balances charged (`None`: no quota applies).
    credits: Option<Arc<Charged>>,
    /// What the credential says about itself upstream.
    profile: Arc<Profile>,
}

impl Resolved {
    fn profile(&self) -> Arc<Profile> {
        match &self.rich {
            Some(r) => r.profile.clone(),
            None => empty_profile().clone(),
        }
    }

    fn limits(&self) -> Option<&Arc<Applied>> {
        self.rich.as_ref().and_then(|r| r.limits.as_ref())
    }

    fn credits(&self) -> Option<&Arc<Charged>> {
        self.rich.as_ref().and_then(|r| r.credits.as_ref())
    }
}

/// The profile of a credential with no name, permissions or metadata (one, shared).
fn empty_profile() -> &'static Arc<Profile> {
    static EMPTY: std::sync::OnceLock<Arc<Profile>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Arc::default)
}

/// What a key hash maps to: the credential and secret generation it is, and what it resolved to.
#[derive(Clone)]
struct SecretEntry {
    cid: ClientId,
    generation: u32,
    resolved: Option<Resolved>,
}

/// A token whose signature, algorithm and key id were verified, and what it resolved to.
#[derive(Clone)]
struct TokenEntry {
    subject: TokenSubject,
    resolved: Option<Resolved>,
}

/// A decision, or one that waits for shared rate-limit units or for credits leased from the
/// database ([`Authenticator::finish`]).
enum Decided {
    Done(Result<Verified, AuthError>),
    Lease(Box<Leasing>),
    Credits(Box<Charging>),
}

/// A request that waits for units of its shared rate-limit buckets (and was charged `Reserved`).
type Leasing = (Verified, Arc<Applied>, Vec<Need>, Option<Reserved>);

/// A request that passed the credential checks and waits for credits, then its rate limits.
struct Charging {
    v: Verified,
    charged: Arc<Charged>,
    cost: u64,
    limits: Option<Arc<Applied>>,
}

/// A successful check, with what getToken needs to sign.
struct Verified {
    identity: Identity,
    generation: u32,
    /// When the credential expires (its tokens must not outlive it).
    expires_at: Option<i64>,
}

/// How the authenticator issues tokens, trusts its cache and keeps it current, and how its
/// refusals are answered.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Lifetime of tokens from getToken.
    pub token_ttl: Duration,
    /// The `from` claim.
    pub token_from: String,
    /// Entries per cache.
    pub cache_capacity: u64,
    /// How long cached state is trusted without a successful change-feed poll. Past it, every
    /// request goes to the store, and fails with 1503 if the store cannot answer.
    pub fail_static: Duration,
    /// How long a cache-miss load may take before the request fails with 1503.
    pub store_timeout: Duration,
    /// How often the change feed is polled (PostgreSQL also pushes): the bound on how long a
    /// revoke or ban made elsewhere takes to reach this process.
    pub feed_interval: Duration,
    /// How often usage counts (last used, requests per day) are written.
    pub usage_flush: Duration,
    /// How credits are leased and reported.
    pub credits: CreditSettings,
    /// The HTTP statuses of refusals rendered by the Layer and the gateway.
    pub status_mode: crate::envelope::StatusMode,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(366 * 86_400),
            token_from: "keygate".into(),
            cache_capacity: 1_000_000,
            fail_static: Duration::from_secs(300),
            store_timeout: Duration::from_secs(2),
            feed_interval: Duration::from_millis(250),
            usage_flush: Duration::from_secs(10),
            credits: CreditSettings::default(),
            status_mode: crate::envelope::StatusMode::Standard,
        }
    }
}

/// Cache counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    hasher: SecretHasher,
    keyring: ArcSwap<Keyring>,
    settings: AuthSettings,
    /// When the change feed was last followed successfully (Unix ms).
    feed_ok_ms: AtomicI64,
    /// Key hash -> what it is and resolved to: all a key's requests read.
    /// By the key's HMAC, which is its own hash ([`crate::cache::PreHashed`]).
    secrets: Cache<[u8; 32], Option<SecretEntry>, crate::cache::PreHashed>,
    /// Credentials and accounts as tokens and getToken need them (a key's load does not fill
    /// them: its entry holds what it needs).
    credentials: Cache<ClientId, Option<Arc<CredentialState>>>,
    accounts: Cache<AccountId, Option<Arc<AccountState>>>,
    /// Tokens whose signature, algorithm and key id were verified, with what they say. Only the
    /// signature check is skipped on a hit: expiry, credential and account are checked each time.
    /// By the token, hashed by its signature's last characters ([`crate::cache::PreHashed`]).
    tokens: Cache<String, TokenEntry, crate::cache::PreHashed>,
    /// Invalidation counters, striped by key ([`stripes_for`]): an invalidation bumps its key's
    /// stripe (or all of them); a load that sees its stripe move meanwhile does not keep its result.
    epochs: Box<[AtomicU32]>,
    /// Bumped before every stripe is: a load that sees it unchanged saw no invalidation at all.
    changes: AtomicU64,
    pub stats: CacheStats,
    /// Requests per credential, flushed to the store in batches.
    pub usage: Arc<crate::usage::UsageRecorder>,
    /// The rate limits' buckets.
    pub limiter: Arc<Limiter>,
    /// The credit balances this process spends from.
    pub credits: Arc<Credits>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, hasher: SecretHasher, keyring: Keyring, settings: AuthSettings) -> Self {
        let capacity = settings.cache_capacity;
        let credits = CreditSettings { store_timeout: settings.store_timeout, ..settings.credits };
        Self {
            credits: Arc::new(Credits::new(credits)),
            store,
            hasher,
            keyring: ArcSwap::from_pointee(keyring),
            settings,
            feed_ok_ms: AtomicI64::new(now_ms()),
            secrets: Cache::new(capacity),
            credentials: Cache::new(capacity),
            accounts: Cache::new(capacity),
            tokens: Cache::new(capacity),
            epochs: (0..stripes_for(capacity)).map(|_| AtomicU32::new(0)).collect(),
            changes: AtomicU64::new(0),
            stats: CacheStats::default(),
            usage: Arc::default(),
            limiter: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    pub fn set_keyring(&self, keyring: Keyring) {
        self.keyring.store(Arc::new(keyring));
        // A retired key id must take its tokens with it.
        self.tokens.invalidate_all();
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// Called by the change-feed follower after every successful poll.
    pub fn feed_succeeded(&self) {
        self.feed_ok_ms.store(now_ms(), Ordering::SeqCst);
    }

    /// Milliseconds since the change feed was last followed successfully.
    pub fn feed_age_ms(&self) -> i64 {
        now_ms() - self.feed_ok_ms.load(Ordering::SeqCst)
    }

    /// Whether cached state may still be used (the fail-static window has not run out).
    pub fn cache_trusted(&self) -> bool {
        self.trusted_at(now_ms())
    }

    /// [`Self::cache_trusted`] at `now_ms` (a request reads the clock once).
    fn trusted_at(&self, now_ms: i64) -> bool {
        now_ms - self.feed_ok_ms.load(Ordering::SeqCst) <= self.settings.fail_static.as_millis() as i64
    }

    /// Drops what the cache holds about one entity. Called after this process's own writes and
    /// for every change-feed entry.
    pub fn invalidate(&self, entity: Entity, id: &str) {
        match entity {
            Entity::Account => {
                if let Ok(id) = id.parse::<AccountId>() {
                    self.changes.fetch_add(1, Ordering::SeqCst);
                    self.accounts.invalidate(&id);
                    self.epoch(&id).fetch_add(1, Ordering::SeqCst);
                    self.credits.touched(keygate_store::CreditScope::Account(id));
                }
            }
            Entity::Credential => {
                if let Ok(id) = id.parse::<ClientId>() {
                    self.changes.fetch_add(1, Ordering::SeqCst);
                    self.credentials.invalidate(&id);
                    self.epoch(&id).fetch_add(1, Ordering::SeqCst);
                    self.credits.touched(keygate_store::CreditScope::Credential(id));
                }
            }
            // A role's permissions changed: every credential holding it must be reloaded. Roles
            // change rarely; each credential is reloaded once, on its next request.
            Entity::Role => {
                self.changes.fetch_add(1, Ordering::SeqCst);
                self.credentials.invalidate_all();
                self.bump_all();
            }
            // A plan's limits changed: every account on it must be reloaded. Plans change
            // rarely; each account is reloaded once, on its next request.
            Entity::Plan => {
                self.changes.fetch_add(1, Ordering::SeqCst);
                self.accounts.invalidate_all();
                self.bump_all();
                self.credits.touched_all();
            }
            Entity::SigningKey | Entity::Setting => {}
            // Written by a newer keygate: what it affects is not known here, so everything goes.
            Entity::Unknown => self.invalidate_all(),
        }
    }

    /// The bytes the caches' tables and the invalidation stripes take (not what cached values
    /// point to: a key's entry is inline unless the key has limits, credits, permissions,
    /// allowlists, a name or metadata). For measuring memory against RSS.
    pub fn cache_table_bytes(&self) -> usize {
        self.secrets.table_bytes()
            + self.credentials.table_bytes()
            + self.accounts.table_bytes()
            + self.tokens.table_bytes()
            + self.epochs.len() * std::mem::size_of::<AtomicU32>()
    }

    /// Drops everything (used when the change feed cannot tell what was missed).
    pub fn invalidate_all(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.secrets.invalidate_all();
        self.credentials.invalidate_all();
        self.accounts.invalidate_all();
        self.tokens.invalidate_all();
        self.bump_all();
        self.credits.touched_all();
    }

    /// Every stripe moves: whatever was resolved before is stale.
    fn bump_all(&self) {
        for e in self.epochs.iter() {
            e.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The invalidation counter of `key`'s stripe.
    fn epoch(&self, key: &impl Stripe) -> &AtomicU32 {
        &self.epochs[key.stripe_hash() as usize & (self.epochs.len() - 1)]
    }

    /// Cache lookup, or store load whose result is kept only if no invalidation ran meanwhile.
    /// Past the fail-static window the cache is bypassed: the store must answer, in time.
    async fn load<K, V, F>(&self, cache: &Cache<K, V>, key: K, fetch: F) -> Result<V, StoreError>
    where
        K: Hash + Eq + Send + Sync + Clone + Stripe + 'static,
        V: Clone + Send + Sync + 'static,
        F: Future<Output = Result<V, StoreError>>,
    {
        let trusted = self.cache_trusted();
        if trusted && let Some(v) = cache.get::<K>(&key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.epoch(&key).load(Ordering::SeqCst);
        let v = tokio::time::timeout(self.settings.store_timeout, fetch).await.map_err(|_| {
            StoreError::Unavailable(format!("store did not answer within {:?}", self.settings.store_timeout))
        })??;
        if trusted {
            self.insert_checked(cache, key, v.clone(), before);
        }
        Ok(v)
    }

    /// The credential and generation a key hash belongs to, and what they resolve to, from one
    /// store query (`Store::auth_bundle`); cached as the key's entry unless an invalidation ran
    /// while it was read (then it decides this request only).
    async fn load_key(&self, hash: SecretHash) -> Result<Option<(ClientId, u32, Resolved)>, StoreError> {
        let trusted = self.cache_trusted();
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let changes = self.changes.load(Ordering::SeqCst);
        let bundle = tokio::time::timeout(self.settings.store_timeout, self.store.auth_bundle(&hash)).await.map_err(
            |_| StoreError::Unavailable(format!("store did not answer within {:?}", self.settings.store_timeout)),
        )??;
        let Some(b) = bundle else {
            if trusted && self.changes.load(Ordering::SeqCst) == changes {
                self.secrets.insert(hash.0, None);
            }
            return Ok(None);
        };
        let (cid, aid) = (b.credential.client_id, b.account.id);
        // Read after the query, kept only if nothing was invalidated since before it (`changes`
        // moves before any stripe does): then these are the epochs from before the read.
        let epochs = (self.epoch(&cid).load(Ordering::SeqCst), self.epoch(&aid).load(Ordering::SeqCst));
        let (cred, account) = (Arc::new(b.credential), Arc::new(b.account));
        let resolved = self.resolved(cred.clone(), b.generation, account.clone(), epochs);
        if trusted && self.changes.load(Ordering::SeqCst) == changes {
            let entry = SecretEntry { cid, generation: b.generation, resolved: Some(resolved.clone()) };
            self.secrets.insert(hash.0, Some(entry));
            // What tokens read may be older (a change made elsewhere whose feed event has not
            // arrived yet, such as a rotation this key is the new secret of): refreshed where
            // cached, so that a token issued from this key works at once. Not added where
            // absent: a credential used only by its keys costs its key's entry alone.
            self.credentials.update(&cid, |v| *v = Some(cred));
            self.accounts.update(&aid, |v| *v = Some(account));
        }
        Ok(Some((cid, b.generation, resolved)))
    }

    /// A credential's generation and its account, reduced ([`Resolved`]).
    fn resolved(
        &self,
        cred: Arc<CredentialState>,
        generation: u32,
        account: Arc<AccountState>,
        epochs: (u32, u32),
    ) -> Resolved {
        let standing = Standing::of(&cred, generation, &account);
        let limits = self.limiter.applied(&cred, &account);
        let credits = self.credits.charged(&cred, &account);
        let plain = limits.is_none()
            && credits.is_none()
            && cred.grants.is_empty()
            && cred.name.is_none()
            && cred.meta.is_none()
            && cred.ip_allowlist.is_empty()
            && account.ip_allowlist.is_empty();
        let (account_id, uid) = (account.id, account.uid);
        let rich =
            (!plain).then(|| Arc::new(Rich { profile: Arc::new(Profile::of(&cred)), cred, account, limits, credits }));
        Resolved { standing, account_id, uid, epochs, rich }
    }

    /// Caches `value` unless `key`'s stripe moved since `before` (an invalidation raced the load).
    /// Taking a value back bumps the stripe again: whatever was read from the cache meanwhile
    /// (the stale value) must not pass for current (see [`Resolved`]).
    fn insert_checked<K, V>(&self, cache: &Cache<K, V>, key: K, value: V, before: u32)
    where
        K: Hash + Eq + Send + Sync + Clone + Stripe + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let epoch = self.epoch(&key);
        cache.insert(key.clone(), value);
        if epoch.load(Ordering::SeqCst) != before {
            cache.invalidate::<K>(&key);
            self.changes.fetch_add(1, Ordering::SeqCst);
            epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether what credential `cid` and its account resolved to in `r` is still current.
    fn current(&self, cid: ClientId, r: &Resolved) -> bool {
        self.epoch(&cid).load(Ordering::SeqCst) == r.epochs.0
            && self.epoch(&r.account_id).load(Ordering::SeqCst) == r.epochs.1
    }

    async fn credential(&self, id: ClientId) -> Result<Option<Arc<CredentialState>>, StoreError> {
        self.load(&self.credentials, id, async { Ok(self.store.credential_state(id).await?.map(Arc::new)) }).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Arc<AccountState>>, StoreError> {
        self.load(&self.accounts, id, async { Ok(self.store.account_state(id).await?.map(Arc::new)) }).await
    }

    /// Authenticates a request by its headers, as every protected call is, charging it 1 credit
    /// where a balance applies.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        self.authorize(headers, &Access::cost(1)).await
    }

    /// Authenticates a request that costs `cost` credits (0: needs a positive balance, charges
    /// nothing), from an unknown address and requiring no permission. A request refused by any
    /// check is charged nothing.
    pub async fn authenticate_with(&self, headers: &HeaderMap, cost: u64) -> Result<Identity, AuthError> {
        self.authorize(headers, &Access::cost(cost)).await
    }

    /// Decides a request: its credential, then where it comes from and what it requires
    /// (`access`), then its credits and rate limits. A request refused by any check is charged
    /// nothing.
    pub async fn authorize(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<Identity, AuthError> {
        let result = self.authenticate_inner(headers, access).await;
        let (method, outcome) = match &result {
            Ok(id) => (id.method as usize, 0),
            Err(AuthError::Refused(AuthFailure::Invalid(_))) => (3, 1),
            Err(AuthError::Refused(AuthFailure::Missing)) => (3, 2),
            Err(AuthError::Refused(AuthFailure::Banned)) => (3, 3),
            Err(AuthError::Store(_)) => (3, 4),
            Err(AuthError::Limited(_)) => (3, 5),
            Err(AuthError::NoCredits(_)) => (3, 6),
            Err(AuthError::Denied(_)) => (3, 7),
        };
        decision_counters()[method][outcome].increment(1);
        result
    }

    async fn authenticate_inner(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<Identity, AuthError> {
        let presented = presented(headers)?;
        match presented {
            Presented::ApiKey(key) => {
                self.by_key(key, None, AuthMethod::ApiKey, access, true).await.map(|v| v.identity)
            }
            Presented::ClientPair { client_id, secret } => {
                self.by_key(secret, Some(client_id), AuthMethod::ClientSecret, access, true).await.map(|v| v.identity)
            }
            Presented::Bearer(token) => self.by_token(token, access).await,
        }
    }

    /// Checks an API key (and, for the legacy pair, that it belongs to `client_id`) and what the
    /// request asks for, charging its cost where `charge` (not for getToken).
    async fn by_key(
        &self,
        key: &str,
        client_id: Option<&str>,
        method: AuthMethod,
        access: &Access<'_>,
        charge: bool,
    ) -> Result<Verified, AuthError> {
        let invalid = |r| AuthError::Refused(AuthFailure::Invalid(r));
        // Checked in place: no copy of the key is made. Its checksum only on a miss, before the
        // store is asked: a key found among known ones is one that was made with a right one.
        keygate_core::key::check_shape(keygate_core::key::API_KEY_PREFIX, key)
            .map_err(|_| invalid(InvalidReason::MalformedKey))?;
        let hash = self.hasher.hash(key);
        // One clock read for the cache's trust and the decision (the limiter counts in ns).
        let now_ns = crate::ratelimit::now_ns();
        if self.trusted_at((now_ns / 1_000_000) as i64) {
            let fast = self.secrets.with(&hash.0, |entry| match entry {
                None => Some(Decided::Done(Err(invalid(InvalidReason::UnknownKey)))),
                Some(e) => {
                    e.resolved.as_ref().filter(|r| self.current(e.cid, r)).map(|r| match check_pair(client_id, e.cid) {
                        Ok(()) => self.decide(r, e.cid, e.generation, method, access, charge, now_ns),
                        Err(refused) => Decided::Done(Err(refused)),
                    })
                }
            });
            if let Some(Some(decided)) = fast {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return match decided {
                    Decided::Done(result) => result,
                    waits => Box::pin(self.finish(waits)).await,
                };
            }
        }
        // Not among known keys: its checksum before the store is asked.
        keygate_core::key::check_sum(key).map_err(|_| invalid(InvalidReason::MalformedKey))?;
        // Boxed: the warm path above does not carry the store query's state (a smaller future
        // for every request to move).
        Box::pin(self.by_key_loaded(hash, client_id, method, access, charge)).await
    }

    /// Not cached, stale, or the cache is not trusted: one store query. The same path whether
    /// the clientId is unknown or the secret is wrong: one hash, one lookup, one constant-time
    /// comparison of the 24 characters.
    async fn by_key_loaded(
        &self,
        hash: SecretHash,
        client_id: Option<&str>,
        method: AuthMethod,
        access: &Access<'_>,
        charge: bool,
    ) -> Result<Verified, AuthError> {
        let (cid, generation, resolved) =
            self.load_key(hash).await?.ok_or(AuthError::Refused(AuthFailure::Invalid(InvalidReason::UnknownKey)))?;
        check_pair(client_id, cid)?;
        self.finish(self.decide(&resolved, cid, generation, method, access, charge, crate::ratelimit::now_ns())).await
    }

    async fn by_token(&self, token: &str, access: &Access<'_>) -> Result<Identity, AuthError> {
        let now_ns = crate::ratelimit::now_ns();
        let now_secs = (now_ns / 1_000_000_000) as i64;
        let expired = || AuthError::Refused(AuthFailure::Invalid(InvalidReason::TokenExpired));
        // A cached token had its signature checked before; its expiry is checked each time.
        let cached = self.tokens.with(token, |t| {
            if t.subject.exp <= now_secs {
                return Err(Decided::Done(Err(expired())));
            }
            let trusted = self.trusted_at((now_ns / 1_000_000) as i64);
            match t.resolved.as_ref().filter(|r| trusted && self.current(t.subject.client_id, r)) {
                Some(r) => Err(self.token_decision(&t.subject, r, access, now_ns)),
                None => Ok(t.subject),
            }
        });
        let subject = match cached {
            // Decided from the cache entry alone (or expired).
            Some(Err(decided)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return match decided {
                    Decided::Done(result) => result.map(|v| v.identity),
                    waits => Box::pin(self.finish(waits)).await.map(|v| v.identity),
                };
            }
            Some(Ok(subject)) => subject,
            None => {
                let s = self.verify_token(token, now_secs)?;
                self.tokens.insert(token.to_owned(), TokenEntry { subject: s, resolved: None });
                s
            }
        };
        // Boxed, as in `by_key`: the warm path's future stays small.
        Box::pin(self.by_token_loaded(token, subject, access)).await
    }

    /// A token whose credential and account are not cached with it (or are stale): resolved from
    /// the caches or the store, then decided.
    async fn by_token_loaded(
        &self,
        token: &str,
        subject: TokenSubject,
        access: &Access<'_>,
    ) -> Result<Identity, AuthError> {
        let r = self.resolve(subject.client_id, subject.generation).await?;
        self.tokens.update(token, |t| t.resolved = Some(r.clone()));
        self.finish(self.token_decision(&subject, &r, access, crate::ratelimit::now_ns())).await.map(|v| v.identity)
    }

    fn token_decision(&self, subject: &TokenSubject, r: &Resolved, access: &Access<'_>, now_ns: u64) -> Decided {
        if r.account_id != subject.account_id {
            return Decided::Done(Err(AuthFailure::Invalid(InvalidReason::UnknownAccount).into()));
        }
        self.decide(r, subject.client_id, subject.generation, AuthMethod::Bearer, access, true, now_ns)
    }

    fn verify_token(&self, token: &str, now_secs: i64) -> Result<TokenSubject, AuthError> {
        self.keyring.load().verify(token, now_secs).map_err(|e| {
            AuthError::Refused(AuthFailure::Invalid(match e {
                TokenError::Expired => InvalidReason::TokenExpired,
                TokenError::Signature => InvalidReason::TokenSignature,
                TokenError::Algorithm => InvalidReason::TokenAlgorithm,
                TokenError::UnknownKid => InvalidReason::TokenKeyId,
                TokenError::Malformed | TokenError::NoSigningKey => InvalidReason::MalformedToken,
            }))
        })
    }

    /// The credential (generation `generation`) and its account, from the caches or the store.
    /// Each epoch is read before what it guards.
    async fn resolve(&self, cid: ClientId, generation: u32) -> Result<Resolved, AuthError> {
        let cred_epoch = self.epoch(&cid).load(Ordering::SeqCst);
        let cred = self.credential(cid).await?.ok_or(AuthFailure::Invalid(InvalidReason::UnknownCredential))?;
        let account_epoch = self.epoch(&cred.account_id).load(Ordering::SeqCst);
        let account =
            self.account(cred.account_id).await?.ok_or(AuthFailure::Invalid(InvalidReason::UnknownAccount))?;
        Ok(self.resolved(cred, generation, account, (cred_epoch, account_epoch)))
    }

    /// Whether generation `generation` of the resolved credential lets a request in, then whether
    /// its credits cover `cost`, then whether its rate limits let it in (a request refused by any
    /// of them is charged nothing). Decided here unless credits must be leased from the database
    /// or shared rate limits need a round trip first ([`Decided::Credits`], [`Decided::Lease`],
    /// see [`Self::finish`]).
    /// `now_ns`: the request's clock reading (Unix ns).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        r: &Resolved,
        cid: ClientId,
        generation: u32,
        method: AuthMethod,
        access: &Access<'_>,
        charge: bool,
        now_ns: u64,
    ) -> Decided {
        // The limiter counts in nanoseconds, the rest in milliseconds.
        let now = (now_ns / 1_000_000) as i64;
        if let Err(refused) = r.standing.at(now) {
            // The credential is known: its usage counts the refusal (revoked, rotated out, banned).
            self.usage.record_outcome(cid, now, refused.code().as_u32(), 0);
            return Decided::Done(Err(refused.into()));
        }
        let allowed = match &r.rich {
            Some(rich) => decide::access(&rich.cred, &rich.account, access.client_ip, access.require),
            None => decide::access_to(&Default::default(), &[], &[], access.client_ip, access.require),
        };
        if let Err(denial) = allowed {
            self.usage.record_outcome(cid, now, 1009, 0);
            let required = match denial {
                Denial::Permission => access.require.map(ToString::to_string),
                Denial::Address => None,
            };
            return Decided::Done(Err(AuthError::Denied(Box::new(Denied { denial, required }))));
        }
        let identity = Identity {
            account_id: r.account_id,
            uid: r.uid,
            client_id: cid,
            method,
            ratelimits: Vec::new(),
            credits_remaining: None,
            profile: r.profile(),
        };
        let v = Verified { identity, generation, expires_at: r.standing.expires_at() };
        let reserved = match (r.credits(), charge) {
            (Some(charged), true) => match self.credits.try_reserve(charged, access.cost, now) {
                Some(Ok(reserved)) => Some(reserved),
                Some(Err(e)) => return Decided::Done(Err(self.not_charged(cid, e, now))),
                None => {
                    let limits = r.limits().cloned();
                    let cost = access.cost;
                    return Decided::Credits(Box::new(Charging { v, charged: charged.clone(), cost, limits }));
                }
            },
            _ => None,
        };
        self.limit(v, r.limits(), reserved, now_ns)
    }

    /// The rate-limit step, for a request that passed everything else (and was charged
    /// `reserved`, given back if a limit refuses it).
    fn limit(
        &self,
        mut v: Verified,
        limits: Option<&Arc<Applied>>,
        reserved: Option<Reserved>,
        now_ns: u64,
    ) -> Decided {
        let now = (now_ns / 1_000_000) as i64;
        v.identity.credits_remaining = reserved.as_ref().map(|r| r.remaining);
        match limits {
            None => {
                let spent = reserved.as_ref().map_or(0, Reserved::cost);
                self.usage.record_outcome(v.identity.client_id, now, 1000, spent);
                Decided::Done(Ok(v))
            }
            Some(applied) => match self.limiter.admit(applied, 1, now_ns) {
                Admit::Lease(needs) => Decided::Lease(Box::new((v, applied.clone(), needs, reserved))),
                admit => Decided::Done(self.admitted(v, admit, now, reserved)),
            },
        }
    }

    /// A request its credits could not be charged for: 1006, or 1503 when the database could
    /// not be asked.
    fn not_charged(&self, cid: ClientId, e: CreditError, now: i64) -> AuthError {
        match e {
            CreditError::Insufficient { remaining, cost } => {
                metrics::counter!("keygate_credit_refusals_total").increment(1);
                self.usage.record_outcome(cid, now, 1006, 0);
                AuthError::NoCredits(Box::new(NoCredits { remaining, cost }))
            }
            CreditError::Store(e) => AuthError::Store(e),
        }
    }

    /// A decision that waited for credits leased from the database or for units of the shared
    /// rate-limit buckets: takes them, then decides. Leases taken by other requests meanwhile can
    /// make it ask again (three times; then this request is decided on this process's own
    /// buckets).
    async fn finish(&self, decided: Decided) -> Result<Verified, AuthError> {
        let decided = match decided {
            Decided::Done(result) => return result,
            Decided::Credits(c) => {
                let Charging { v, charged, cost, limits } = *c;
                let reserved = match self.credits.reserve(self.store.as_ref(), &charged, cost).await {
                    Ok(reserved) => reserved,
                    Err(e) => return Err(self.not_charged(v.identity.client_id, e, now_ms())),
                };
                self.limit(v, limits.as_ref(), Some(reserved), crate::ratelimit::now_ns())
            }
            lease => lease,
        };
        let (v, applied, mut needs, reserved) = match decided {
            Decided::Lease(l) => *l,
            Decided::Done(result) => return result,
            Decided::Credits(_) => unreachable!("credits are charged before the rate limits"),
        };
        for _ in 0..3 {
            self.limiter.lease(&needs, crate::ratelimit::now_ns()).await;
            match self.limiter.admit(&applied, 1, crate::ratelimit::now_ns()) {
                Admit::Lease(more) => needs = more,
                admit => return self.admitted(v, admit, now_ms(), reserved),
            }
        }
        self.admitted(v, Limiter::admit_local(&applied, 1, crate::ratelimit::now_ns()), now_ms(), reserved)
    }

    /// The outcome of a rate-limit decision for a request that passed everything else; credits
    /// charged for a refused request are given back.
    fn admitted(
        &self,
        mut v: Verified,
        admit: Admit,
        now: i64,
        reserved: Option<Reserved>,
    ) -> Result<Verified, AuthError> {
        let cid = v.identity.client_id;
        match admit {
            Admit::Pass(statuses) => {
                v.identity.ratelimits = statuses;
                self.usage.record_outcome(cid, now, 1000, reserved.as_ref().map_or(0, Reserved::cost));
                Ok(v)
            }
            Admit::Refuse(limited) => {
                if let Some(r) = reserved {
                    self.credits.refund(r);
                }
                self.usage.record_limited(cid, now);
                for name in &limited.refused_by {
                    metrics::counter!("keygate_ratelimit_refusals_total", "limit" => name.clone()).increment(1);
                }
                Err(AuthError::Limited(limited))
            }
            Admit::Unavailable | Admit::Lease(_) => {
                if let Some(r) = reserved {
                    self.credits.refund(r);
                }
                Err(AuthError::Store(StoreError::Unavailable(
                    "rate limits cannot be counted: the shared counters do not answer (redis_failure = closed)".into(),
                )))
            }
        }
    }

    /// getToken: trades `clientId` + `clientSecret` for a signed token.
    pub async fn issue_token(&self, client_id: &str, client_secret: &str) -> Result<String, AuthError> {
        if client_id.trim().is_empty() || client_secret.trim().is_empty() {
            return Err(AuthFailure::Missing.into());
        }
        self.issue_token_from(client_id, client_secret, None).await
    }

    /// getToken from `client_ip` (which the credential's and its account's allowlists must
    /// allow). A token never outlives its credential's `expiresAt`.
    pub async fn issue_token_from(
        &self,
        client_id: &str,
        client_secret: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<String, AuthError> {
        if client_id.trim().is_empty() || client_secret.trim().is_empty() {
            return Err(AuthFailure::Missing.into());
        }
        let access = Access { cost: 0, require: None, client_ip };
        let Verified { identity, generation, expires_at } =
            self.by_key(client_secret.trim(), Some(client_id.trim()), AuthMethod::ClientSecret, &access, false).await?;
        // The claims name the account's email and first name, which a key's cache entry does
        // not keep: from the accounts cache, or the store.
        let account =
            self.account(identity.account_id).await?.ok_or(AuthFailure::Invalid(InvalidReason::UnknownAccount))?;
        let now = now_ms() / 1000;
        // Rounded down to a whole second: the token is refused no later than the key.
        let exp = (now + self.settings.token_ttl.as_secs() as i64).min(expires_at.map_or(i64::MAX, |t| t / 1000));
        let hint = identity.client_id.to_hex();
        let claims = Claims {
            id: account.id,
            kind: "user".into(),
            from: self.settings.token_from.clone(),
            email: account.email.clone(),
            first_name: account.first_name.clone(),
            uid: account.uid,
            code: hint[hint.len() - 4..].to_owned(),
            iat: now,
            exp,
            cid: identity.client_id,
            generation,
            jti: ClientId::generate(now as u64).to_hex(),
        };
        self.keyring.load().issue(&claims).map_err(|e| AuthError::Store(StoreError::Other(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The extraction as it was before it looked each header up once: every header read, then
    /// `decide::presented`.
    fn reference(headers: &HeaderMap) -> Result<Presented<'_>, AuthFailure> {
        let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let garbled = |name: &HeaderName| headers.get(name).is_some_and(|v| v.to_str().is_err());
        if garbled(&header::AUTHORIZATION) || (headers.get(&header::AUTHORIZATION).is_none() && garbled(&X_API_KEY)) {
            return Err(AuthFailure::Invalid(InvalidReason::MalformedKey));
        }
        decide::presented(get(&header::AUTHORIZATION), get(&X_API_KEY), get(&X_CLIENT_ID), get(&X_CLIENT_SECRET))
    }

    /// What a cached key costs besides the table's ~8 bytes: its hash and entry, inline.
    #[test]
    fn a_key_entry_is_small() {
        assert_eq!(std::mem::size_of::<Standing>(), 24);
        assert!(std::mem::size_of::<Resolved>() <= 64, "{}", std::mem::size_of::<Resolved>());
        let slot = std::mem::size_of::<([u8; 32], Option<SecretEntry>)>();
        assert!(slot <= 112, "{slot}");
    }

    #[test]
    fn stripes_grow_with_the_cache() {
        assert_eq!(stripes_for(0), 64);
        assert_eq!(stripes_for(1_000_000), 131_072);
        assert_eq!(stripes_for(10_000_000), 2_097_152);
        assert_eq!(stripes_for(u64::MAX), 1 << 22);
        // Ids that differ only in a counter (as ids from one process do: time and process
        // bytes the same) spread over the stripes, wherever the counter is.
        let mask = stripes_for(1_000_000) as u64 - 1;
        let mut seen = std::collections::HashSet::new();
        let mut few = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            let mut b = [0x5au8; 12];
            b[9..].copy_from_slice(&i.to_be_bytes()[5..]);
            let id: ClientId = b.iter().map(|x| format!("{x:02x}")).collect::<String>().parse().unwrap();
            seen.insert(id.stripe_hash() & mask);
            few.insert(id.stripe_hash() & 63);
        }
        assert_eq!(few.len(), 64);
        assert!(seen.len() > 9_000, "{}", seen.len());
    }

    #[test]
    fn each_header_once_decides_as_reading_them_all() {
        let key = keygate_core::ApiKey::generate();
        let values: Vec<Option<HeaderValue>> = vec![
            None,
            Some(HeaderValue::from_static("")),
            Some(HeaderValue::from_static("  ")),
            Some(HeaderValue::from_bytes(b"\xffgarbled").unwrap()),
            Some(HeaderValue::from_str(key.expose()).unwrap()),
            Some(HeaderValue::from_str(&format!("Bearer {}", key.expose())).unwrap()),
            Some(HeaderValue::from_static("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")),
            Some(HeaderValue::from_static("Basic dXNlcjpwYXNz")),
            Some(HeaderValue::from_static("Bearer ")),
        ];
        let names = [header::AUTHORIZATION, X_API_KEY.clone(), X_CLIENT_ID.clone(), X_CLIENT_SECRET.clone()];
        let n = values.len();
        let mut cases = 0;
        for i in 0..n.pow(4) {
            let mut h = HeaderMap::new();
            for (slot, name) in names.iter().enumerate() {
                if let Some(v) = &values[i / n.pow(slot as u32) % n] {
                    h.insert(name.clone(), v.clone());
                }
            }
            assert_eq!(presented(&h), reference(&h), "{h:?}");
            cases += 1;
        }
        assert_eq!(cases, 6561);
    }
}
