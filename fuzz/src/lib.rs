//! What the fuzz targets that run the real authenticator share: an in-memory SQLite store seeded
//! with credentials in every state (active, rate limited to 0, revoked, rotated out, banned, with
//! limits of its own, its account's and its plan's), their keys and tokens, an `Authenticator` on
//! it, and the expected outcome of a request presenting any of them.
//!
//! Keys and clientIds are fixed (so that seed corpora can carry them and a crash reproduces);
//! tokens are issued at start-up (`Fixture::known` has them, for the targets to put in headers).

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, header};
use keygate_auth::identity::{X_API_KEY, X_CLIENT_ID, X_CLIENT_SECRET};
use keygate_auth::{AuthError, AuthSettings, Authenticator, Identity, secrets};
use keygate_core::audit::Audit;
use keygate_core::decide::{self, AuthFailure, Presented};
use keygate_core::model::AuthMethod;
use keygate_core::ratelimit::{MAX_LIMIT, RateLimit};
use keygate_core::{AccountId, ClientId, MasterKey, key};
use keygate_ops::Ops;
use keygate_store::{Connect, Entity, NewAccount};

/// A fixed master key (the fixture is the same in every run).
pub const MASTER_KEY: &str = "0b8e2f4c6a1d3e5f7a9c0b2d4e6f8a1c3e5f7a9c0b2d4e6f8a1c3e5f7a9c0b2d";

/// What a request presenting a credential must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Pass,
    /// 1005: a limit of 0.
    Limited,
    /// 1101 (revoked, rotated out, wrong pair).
    Invalid,
    /// 1200.
    Banned,
}

/// One seeded secret: the API key, the token issued for it, and what each must get.
#[derive(Debug, Clone)]
pub struct Known {
    pub name: &'static str,
    pub client_id: ClientId,
    pub account_id: AccountId,
    pub key: String,
    pub key_expect: Expect,
    pub token: String,
    pub token_expect: Expect,
}

pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub auth: Arc<Authenticator>,
    pub known: Vec<Known>,
}

/// `kgk_` + `tag` padded to 22 base62 characters + its checksum.
pub fn fixed_key(tag: &str) -> String {
    let body: String = tag.chars().chain(std::iter::repeat('0')).take(key::RANDOM_LEN).collect();
    key::with_checksum(&format!("{}{body}", key::API_KEY_PREFIX))
}

/// `64db241f6d9e5c4bd136c1` + two hex digits.
pub fn fixed_client_id(n: u8) -> ClientId {
    ClientId::parse(&format!("64db241f6d9e5c4bd136c1{n:02x}")).expect("24 hex")
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn limit(name: &str, n: u64, window: &str) -> RateLimit {
    RateLimit::new(name, n, window.parse().expect("window"))
}

fn build() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (auth, known) = rt.block_on(async {
        let store = Connect::migrate().short_lived().open("sqlite::memory:").await.expect("in-memory SQLite");
        let master = MasterKey::from_hex(MASTER_KEY).expect("master key");
        secrets::ensure_signing_key(store.as_ref()).await.expect("signing key");
        let ring = secrets::load_keyring(store.as_ref(), &master).await.expect("keyring");
        let hasher = master.api_key_hasher();
        // A small cache, so that eviction is part of what is fuzzed.
        let settings = AuthSettings { cache_capacity: 4096, ..AuthSettings::default() };
        let auth = Arc::new(Authenticator::new(store.clone(), hasher.clone(), ring, settings));
        let ops = Ops::new(store.clone(), &master, Some(auth.clone()));

        let account = |email: &str| NewAccount { email: email.into(), first_name: "Fuzz".into() };
        let a = store.create_account(&Audit::system(), &account("a@fuzz.example")).await.expect("account a");
        let b = store.create_account(&Audit::system(), &account("b@fuzz.example")).await.expect("account b");
        let c = store.create_account(&Audit::system(), &account("c@fuzz.example")).await.expect("account c");
        let specs: [(&'static str, u8, AccountId, &str, Expect); 7] = [
            ("good", 1, a.id, "FuzzGood", Expect::Pass),
            ("zero", 2, a.id, "FuzzZero", Expect::Limited),
            ("revoked", 3, a.id, "FuzzRevoked", Expect::Invalid),
            ("rotated-old", 4, a.id, "FuzzRotatedOld", Expect::Invalid),
            ("banned", 5, b.id, "FuzzBanned", Expect::Banned),
            ("limited", 6, c.id, "FuzzLimited", Expect::Pass),
            ("plain-c", 7, c.id, "FuzzPlainC", Expect::Pass),
        ];
        let mut known = Vec::new();
        for (name, n, account_id, tag, expect) in specs {
            let key = fixed_key(tag);
            let client_id = fixed_client_id(n);
            store
                .create_credential(
                    &Audit::system(),
                    account_id,
                    client_id,
                    &hasher.hash(&key),
                    &key::hint_of(&key),
                    &Default::default(),
                )
                .await
                .expect("cred");
            // Tokens first: issuing goes through the same checks (a limit of 0 would refuse it).
            let token = auth.issue_token(&client_id.to_hex(), &key).await.expect("token");
            known.push(Known { name, client_id, account_id, key, key_expect: expect, token, token_expect: expect });
        }
        let id = |name: &str| known.iter().find(|k| k.name == name).unwrap().client_id;
        ops.set_credential_ratelimits(&Audit::system(), id("zero"), &[limit("requests", 0, "1s")]).await.expect("zero");
        ops.revoke_credential(&Audit::system(), id("revoked")).await.expect("revoke");
        ops.ban(&Audit::system(), b.id, Some("fuzz")).await.expect("ban");
        ops.put_plan(&Audit::system(), "pro", &[limit("daily", MAX_LIMIT, "1d")], None).await.expect("plan");
        ops.update_account_limits(
            &Audit::system(),
            c.id,
            Some(&[limit("account", MAX_LIMIT, "1s")]),
            Some(Some("pro")),
        )
        .await
        .expect("account limits");
        ops.set_credential_ratelimits(
            &Audit::system(),
            id("limited"),
            &[limit("requests", MAX_LIMIT, "1s"), limit("daily", MAX_LIMIT, "1d")],
        )
        .await
        .expect("limits");
        // Rotation without grace: the old key and its token stop; the new ones work.
        let rotated = id("rotated-old");
        let new_key = fixed_key("FuzzRotatedNew");
        store
            .rotate_credential(&Audit::system(), rotated, &hasher.hash(&new_key), &key::hint_of(&new_key), None)
            .await
            .expect("rotate");
        auth.invalidate(Entity::Credential, &rotated.to_hex());
        let new_token = auth.issue_token(&rotated.to_hex(), &new_key).await.expect("token after rotation");
        known.push(Known {
            name: "rotated-new",
            client_id: rotated,
            account_id: a.id,
            key: new_key,
            key_expect: Expect::Pass,
            token: new_token,
            token_expect: Expect::Pass,
        });
        (auth, known)
    });
    let fixture = Fixture { rt, auth, known };
    // The fixture is what the targets assume: check it once.
    for k in &fixture.known {
        for (value, expect, method) in [
            (&k.key, k.key_expect, AuthMethod::ApiKey),
            (&format!("Bearer {}", k.token), k.token_expect, AuthMethod::Bearer),
        ] {
            let mut h = HeaderMap::new();
            let name = if method == AuthMethod::ApiKey { &X_API_KEY } else { &header::AUTHORIZATION };
            h.insert(name, value.parse().unwrap());
            let got = fixture.authenticate(&h);
            fixture.check(&h, &got);
            assert_eq!(Outcome::of(&got).as_expect(), Some(expect), "{} {method:?}", k.name);
        }
    }
    fixture
}

/// What an authentication produced, comparably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass {
        client_id: ClientId,
        account_id: AccountId,
        method: AuthMethod,
    },
    Limited,
    Refused(AuthFailure),
    Store(String),
    /// 1006 or 1009: none of the seeded credentials has credits or permissions, so never expected.
    Other(String),
}

impl Outcome {
    pub fn of(r: &Result<Identity, AuthError>) -> Self {
        match r {
            Ok(id) => Self::Pass { client_id: id.client_id, account_id: id.account_id, method: id.method },
            Err(AuthError::Limited(_)) => Self::Limited,
            Err(AuthError::Refused(f)) => Self::Refused(*f),
            Err(AuthError::Store(e)) => Self::Store(e.to_string()),
            Err(e @ (AuthError::NoCredits(_) | AuthError::Denied(_))) => Self::Other(format!("{e:?}")),
        }
    }

    fn as_expect(&self) -> Option<Expect> {
        match self {
            Self::Pass { .. } => Some(Expect::Pass),
            Self::Limited => Some(Expect::Limited),
            Self::Refused(AuthFailure::Banned) => Some(Expect::Banned),
            Self::Refused(AuthFailure::Invalid(_)) => Some(Expect::Invalid),
            Self::Refused(AuthFailure::Missing) | Self::Store(_) | Self::Other(_) => None,
        }
    }
}

impl Fixture {
    /// Runs the real `Authenticator::authenticate` on `headers`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        // As if the change feed were being followed: the cache stays trusted however long a run is.
        self.auth.feed_succeeded();
        self.rt.block_on(self.auth.authenticate(headers))
    }

    /// Which seeded secret (and how) these headers present, by the rules the authenticator
    /// documents: `None` when it is none of them (or nothing, or a header no key could be in).
    pub fn presented(&self, headers: &HeaderMap) -> Option<(&Known, AuthMethod, Expect)> {
        let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let garbled = |name: &HeaderName| headers.get(name).is_some_and(|v| v.to_str().is_err());
        if garbled(&header::AUTHORIZATION) || (headers.get(&header::AUTHORIZATION).is_none() && garbled(&X_API_KEY)) {
            return None;
        }
        let p =
            decide::presented(get(&header::AUTHORIZATION), get(&X_API_KEY), get(&X_CLIENT_ID), get(&X_CLIENT_SECRET))
                .ok()?;
        match p {
            Presented::ApiKey(v) => {
                self.known.iter().find(|k| k.key == v).map(|k| (k, AuthMethod::ApiKey, k.key_expect))
            }
            Presented::Bearer(v) => {
                self.known.iter().find(|k| k.token == v).map(|k| (k, AuthMethod::Bearer, k.token_expect))
            }
            Presented::ClientPair { client_id, secret } => self.known.iter().find(|k| k.key == secret).map(|k| {
                let expect = if k.client_id.to_hex() == client_id { k.key_expect } else { Expect::Invalid };
                (k, AuthMethod::ClientSecret, expect)
            }),
        }
    }

    /// Checks an authentication of `headers` against what the seeded state says it must be.
    pub fn check(&self, headers: &HeaderMap, got: &Result<Identity, AuthError>) {
        let outcome = Outcome::of(got);
        assert!(!matches!(outcome, Outcome::Store(_)), "the in-memory store failed: {outcome:?}");
        match self.presented(headers) {
            Some((k, method, expect)) => {
                assert_eq!(outcome.as_expect(), Some(expect), "{} via {method:?}: {outcome:?}", k.name);
                if let Outcome::Pass { client_id, account_id, method: m } = outcome {
                    assert_eq!((client_id, account_id, m), (k.client_id, k.account_id, method), "{}", k.name);
                }
            }
            // Nothing we issued (or nothing at all): refused, whatever it is.
            None => {
                assert!(matches!(outcome, Outcome::Refused(_)), "unknown credential not refused: {outcome:?}")
            }
        }
    }
}
