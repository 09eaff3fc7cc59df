//! The per-request cost of authentication on a warm cache: `x-api-key` and `Bearer`, the same key
//! with two rate limits (one its own, one its account's; never reached) against none, the
//! refusal of a malformed key (no store access) for scale, rendering the RateLimit headers, and
//! the same decision through the tower Layer around a service that does nothing, and a key with
//! two credits balances (its own and its account's; leased ahead from the database, so the
//! figure includes the amortised lease, one per `max_prefetch` requests at most), and a key
//! holding 20 permissions checked against a 3-term requirement from an address its 10-network
//! allowlist allows.
//! Run: `cargo bench -p keygate-auth`.

use std::convert::Infallible;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use keygate_auth::identity::X_API_KEY;
use keygate_auth::{AuthLayer, AuthSettings, Authenticator, StatusMode, secrets};
use keygate_core::audit::Audit;
use keygate_core::credits::CreditsConfig;
use keygate_core::ratelimit::{MAX_LIMIT, RateLimit};
use keygate_core::{ApiKey, ClientId, MasterKey};
use keygate_store::{CreditScope, NewAccount};
use tower::{Layer, Service, ServiceExt};

const CREDENTIALS: usize = 2_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let (auth, keys, tokens, limited, credited, restricted, master) = rt.block_on(async {
        let store = keygate_store::connect(&url, true).await.unwrap();
        let master = MasterKey::generate();
        secrets::ensure_signing_key(store.as_ref()).await.unwrap();
        let ring = secrets::load_keyring(store.as_ref(), &master).await.unwrap();
        let hasher = master.api_key_hasher();
        let auth = Arc::new(Authenticator::new(store.clone(), hasher.clone(), ring, AuthSettings::default()));
        let mut keys = Vec::new();
        let mut tokens = Vec::new();
        let mut limited = Vec::new();
        let mut credited = Vec::new();
        let mut restricted = Vec::new();
        // 20 permissions (2 of them wildcards) and 10 networks, the last one the client's.
        let mut permissions: Vec<String> = (0..18).map(|p| format!("service{p}.action")).collect();
        permissions.extend(["videos.*".to_owned(), "images.read".to_owned()]);
        let allowlist: Vec<keygate_core::net::Cidr> =
            (0..10).map(|n| format!("10.{n}.0.0/16").parse().unwrap()).collect();
        let restrict = keygate_core::model::CredentialChange {
            permissions: Some(permissions),
            ip_allowlist: Some(allowlist),
            ..Default::default()
        };
        let high = |name: &str| vec![RateLimit::new(name, MAX_LIMIT, "1s".parse().unwrap())];
        let plenty = CreditsConfig { remaining: keygate_core::credits::MAX_CREDITS, refill: None };
        for i in 0..4 * CREDENTIALS {
            let new = NewAccount { email: format!("u{i}@bench.example"), first_name: "b".into() };
            let account = store.create_account(&Audit::system(), &new).await.unwrap();
            let key = ApiKey::generate();
            let client_id = ClientId::generate(i as u64);
            let change = if i >= 3 * CREDENTIALS { restrict.clone() } else { Default::default() };
            store
                .create_credential(
                    &Audit::system(),
                    account.id,
                    client_id,
                    &hasher.hash(key.expose()),
                    &key.hint(),
                    &change,
                )
                .await
                .unwrap();
            if i < CREDENTIALS {
                tokens.push(auth.issue_token(&client_id.to_hex(), key.expose()).await.unwrap());
                keys.push(key.expose().to_owned());
            } else if i < 2 * CREDENTIALS {
                store.set_credential_ratelimits(&Audit::system(), client_id, &high("requests")).await.unwrap();
                store.update_account_limits(&Audit::system(), account.id, Some(&high("account")), None).await.unwrap();
                limited.push(key.expose().to_owned());
            } else if i >= 3 * CREDENTIALS {
                restricted.push(key.expose().to_owned());
            } else {
                let now = keygate_store::now_ms();
                store
                    .set_credits(&Audit::system(), CreditScope::Credential(client_id), Some(&plenty), now)
                    .await
                    .unwrap();
                store
                    .set_credits(&Audit::system(), CreditScope::Account(account.id), Some(&plenty), now)
                    .await
                    .unwrap();
                credited.push(key.expose().to_owned());
            }
        }
        (auth, keys, tokens, limited, credited, restricted, master)
    });
    let with_key = |k: &String| {
        let mut h = HeaderMap::new();
        h.insert(&X_API_KEY, HeaderValue::from_str(k).unwrap());
        h
    };
    let key_headers: Vec<HeaderMap> = keys.iter().map(with_key).collect();
    let limited_headers: Vec<HeaderMap> = limited.iter().map(with_key).collect();
    let credited_headers: Vec<HeaderMap> = credited.iter().map(with_key).collect();
    let restricted_headers: Vec<HeaderMap> = restricted.iter().map(with_key).collect();
    let required: keygate_core::permission::Requirement = "videos.create AND (images.read OR admin)".parse().unwrap();
    let from: std::net::IpAddr = "10.9.1.2".parse().unwrap();
    let access = keygate_auth::Access { cost: 1, require: Some(&required), client_ip: Some(from) };
    let token_headers: Vec<HeaderMap> = tokens
        .iter()
        .map(|t| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
            h
        })
        .collect();
    // Warm the cache.
    rt.block_on(async {
        for h in key_headers.iter().chain(&token_headers).chain(&limited_headers).chain(&credited_headers) {
            auth.authenticate(h).await.unwrap();
        }
        for h in &restricted_headers {
            auth.authorize(h, &access).await.unwrap();
        }
    });

    let mut g = c.benchmark_group("authenticate");
    let mut i = 0usize;
    g.bench_function("x_api_key_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authenticate(&key_headers[i])).unwrap()
        })
    });
    // Permissions and allowlist: the same decision as x_api_key_warm, plus the requirement and
    // the address checked.
    g.bench_function("x_api_key_20_permissions_3_term_requirement_10_network_allowlist", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authorize(&restricted_headers[i], &access)).unwrap()
        })
    });
    // The allowlist alone (no requirement): with the figure above, each check's share.
    let from_only = keygate_auth::Access { cost: 1, require: None, client_ip: Some(from) };
    g.bench_function("x_api_key_10_network_allowlist", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authorize(&restricted_headers[i], &from_only)).unwrap()
        })
    });
    // Credits: the request path charges in memory; leases are taken ahead by the refiller, a task
    // on a runtime thread of its own (as in the server), so they are off the measured path (on a
    // 2-core machine they still compete for the CPU).
    let mt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    mt.spawn(keygate_auth::credits::run_refiller(auth.credits.clone(), auth.store().clone(), stopped.clone()));
    // And the settler, as in the server: it reports what was spent and renews the leases (without
    // it a lease is void after two thirds of its TTL, and every request would wait for a new one).
    mt.spawn(keygate_auth::credits::run_settler(auth.credits.clone(), auth.store().clone(), stopped));
    // The baselines on the same runtime: the same number of keys, no credits.
    g.bench_function("x_api_key_16_busy_keys_no_credits", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            mt.block_on(auth.authenticate(&key_headers[i % 16])).unwrap()
        })
    });
    g.bench_function("x_api_key_2000_quiet_keys_no_credits", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            mt.block_on(auth.authenticate(&key_headers[i])).unwrap()
        })
    });
    // 16 busy keys: leases of about two seconds of spend each.
    g.bench_function("x_api_key_two_credit_balances_16_busy_keys", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            mt.block_on(auth.authenticate(&credited_headers[i % 16])).unwrap()
        })
    });
    // 2,000 keys in turn: each is used about once per 2,000 requests, so its leases are small (256
    // credits at least) and are leased ahead in the background more often.
    g.bench_function("x_api_key_two_credit_balances_2000_quiet_keys", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            mt.block_on(auth.authenticate(&credited_headers[i])).unwrap()
        })
    });
    g.bench_function("x_api_key_two_ratelimits_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authenticate(&limited_headers[i])).unwrap()
        })
    });
    // The same keys counted in shared buckets: units leased ahead (from a counter in this
    // process that grants whatever is asked, so only the lease bookkeeping on the request's path
    // is measured; the round trips to Redis happen off it, in the refill task).
    let shared_auth = rt.block_on(async {
        let ring = secrets::load_keyring(auth.store().as_ref(), &master).await.unwrap();
        Arc::new(Authenticator::new(auth.store().clone(), auth.hasher().clone(), ring, AuthSettings::default()))
    });
    rt.block_on(async {
        shared_auth.limiter.share(Arc::new(Unlimited), keygate_auth::ratelimit::FailMode::Open);
        for h in &limited_headers {
            shared_auth.authenticate(h).await.unwrap();
        }
    });
    g.bench_function("x_api_key_two_ratelimits_shared_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(shared_auth.authenticate(&limited_headers[i])).unwrap()
        })
    });
    g.bench_function("bearer_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authenticate(&token_headers[i])).unwrap()
        })
    });
    let mut bad = HeaderMap::new();
    bad.insert(&X_API_KEY, HeaderValue::from_static("kgk_this-is-not-a-valid-key-0000"));
    g.bench_function("malformed_key_refused", |b| b.iter(|| rt.block_on(auth.authenticate(&bad)).unwrap_err()));
    // The RateLimit-Policy and RateLimit headers of an answer for a key with two limits.
    let statuses = rt.block_on(auth.authenticate(&limited_headers[0])).unwrap().ratelimits;
    assert_eq!(statuses.len(), 2);
    g.bench_function("ratelimit_headers_two_limits", |b| {
        b.iter(|| {
            let mut h = HeaderMap::new();
            keygate_auth::ratelimit::set_headers(&statuses, &mut h);
            h
        })
    });
    // The floor: an empty async call on the same runtime.
    g.bench_function("baseline_block_on", |b| b.iter(|| rt.block_on(async { std::hint::black_box(1) })));
    g.finish();

    // The tower Layer: the same decision, plus the request's trip through the middleware (the
    // boxed future, the identity in the extensions) around a service that answers at once.
    let inner = tower::service_fn(|req: Request<()>| async move {
        let identity = req.extensions().get::<keygate_auth::Identity>().is_some();
        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from_static(if identity {
            b"ok"
        } else {
            b"no identity"
        }))))
    });
    let mut svc = AuthLayer::new(auth.clone(), StatusMode::Standard).layer(inner);
    let request = |h: &HeaderMap| {
        let mut req = Request::new(());
        *req.headers_mut() = h.clone();
        req
    };
    let mut g = c.benchmark_group("layer");
    g.bench_function("x_api_key_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            let req = request(&key_headers[i]);
            rt.block_on(async { svc.ready().await.unwrap().call(req).await.unwrap() })
        })
    });
    // What the Layer adds beyond the decision: the same request with no authentication at all
    // (the inner service alone, and copying the headers as the layer benchmark does).
    let mut bare = inner;
    g.bench_function("inner_service_alone", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            let req = request(&key_headers[i]);
            rt.block_on(async { bare.ready().await.unwrap().call(req).await.unwrap() })
        })
    });
    g.finish();
}

/// A shared counter that grants every lease at once.
struct Unlimited;

impl keygate_auth::ratelimit::SharedCounter for Unlimited {
    fn lease<'a>(
        &'a self,
        _key: &'a str,
        _policy: keygate_core::ratelimit::Policy,
        want: u64,
        now: u64,
    ) -> keygate_auth::ratelimit::BoxFuture<'a, Result<keygate_auth::ratelimit::Grant, String>> {
        Box::pin(async move { Ok(keygate_auth::ratelimit::Grant { granted: want, tat: now }) })
    }

    fn ping(&self) -> keygate_auth::ratelimit::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
