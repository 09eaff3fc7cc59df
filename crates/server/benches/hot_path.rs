//! The per-request cost of authentication on a warm cache: `x-api-key` and `Bearer`, plus the
//! refusal of a malformed key (no store access) for scale. Run: `cargo bench -p keygate-server`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use criterion::{Criterion, criterion_group, criterion_main};
use keygate_core::MasterKey;
use keygate_server::auth::{AuthSettings, Authenticator, X_API_KEY};
use keygate_server::keys;
use keygate_server::ops::Ops;

const CREDENTIALS: usize = 2_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let (auth, keys_, tokens) = rt.block_on(async {
        let store = keygate_store::connect(&url, true).await.unwrap();
        let master = MasterKey::generate();
        keys::ensure_signing_key(store.as_ref()).await.unwrap();
        let ring = keys::load_keyring(store.as_ref(), &master).await.unwrap();
        let auth = Arc::new(Authenticator::new(store.clone(), master.api_key_hasher(), ring, AuthSettings::default()));
        let ops = Ops::new(store.clone(), master.api_key_hasher(), Some(auth.clone()));
        let mut keys_ = Vec::new();
        let mut tokens = Vec::new();
        for i in 0..CREDENTIALS {
            let a = ops.create_account(&format!("u{i}@bench.example"), "b").await.unwrap();
            let issued = ops.create_credential(a.id).await.unwrap();
            tokens.push(auth.issue_token(&issued.client_id.to_hex(), &issued.api_key).await.unwrap());
            keys_.push(issued.api_key);
        }
        (auth, keys_, tokens)
    });
    let key_headers: Vec<HeaderMap> = keys_
        .iter()
        .map(|k| {
            let mut h = HeaderMap::new();
            h.insert(&X_API_KEY, HeaderValue::from_str(k).unwrap());
            h
        })
        .collect();
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
        for h in key_headers.iter().chain(&token_headers) {
            auth.authenticate(h).await.unwrap();
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
    g.bench_function("bearer_warm", |b| {
        b.iter(|| {
            i = (i + 1) % CREDENTIALS;
            rt.block_on(auth.authenticate(&token_headers[i])).unwrap()
        })
    });
    let mut bad = HeaderMap::new();
    bad.insert(&X_API_KEY, HeaderValue::from_static("kgk_this-is-not-a-valid-key-0000"));
    g.bench_function("malformed_key_refused", |b| b.iter(|| rt.block_on(auth.authenticate(&bad)).unwrap_err()));
    // The floor: an empty async call on the same runtime.
    g.bench_function("baseline_block_on", |b| b.iter(|| rt.block_on(async { std::hint::black_box(1) })));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
