//! Caddy `forward_auth` in front of keygate, for real: Debian's Caddy runs the shipped example
//! `examples/caddy/Caddyfile` (only its marked addresses substituted) in front of `keygate serve`
//! and a recording API server inside this test, as its own process on free ports with its admin
//! endpoint off and its state in a temporary directory (never a system Caddy): identities,
//! refusals, and credits charged at the example's per-path prices (keygate's 402 as it is).
//!
//! Needs `caddy` (`scripts/test.sh` installs Debian's); without it the test prints a loud SKIP,
//! or fails when `KEYGATE_TEST_REQUIRE_ALL=1`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::nginx::{
    self, Answer, BACKEND_OWN_401, Backend, Customer, KEYGATE_FLUSH_ARGS, Seen, ask, balance_settles, customer,
    usage_is, with_headers,
};
use crate::support::{Sandbox, admin_token, assert_no_secrets, client, free_port, text};

/// The shipped example, compiled in so that the test always runs the file as it is.
const EXAMPLE: &str = include_str!("../../../../examples/caddy/Caddyfile");
/// The example's addresses, each replaced by a test address and required exactly as often.
const EXAMPLE_SITE: (&str, usize) = ("api.example.com {", 1);
const EXAMPLE_KEYGATE: (&str, usize) = ("127.0.0.1:8080", 2);
const EXAMPLE_BACKEND: (&str, usize) = ("127.0.0.1:3000", 1);
/// The example's per-path price the test relies on (not substituted: required as it is).
const EXAMPLE_VIDEO_COST: &str = "vars /api/videos/* kg_cost 10";

/// The example with the test's addresses.
fn site_config(keygate: u16, backend: u16, listen: u16) -> String {
    let mut conf = EXAMPLE.to_owned();
    for ((marker, times), with) in [
        (EXAMPLE_SITE, format!("http://127.0.0.1:{listen} {{")),
        (EXAMPLE_KEYGATE, format!("127.0.0.1:{keygate}")),
        (EXAMPLE_BACKEND, format!("127.0.0.1:{backend}")),
    ] {
        assert_eq!(
            conf.matches(marker).count(),
            times,
            "examples/caddy/Caddyfile must contain `{marker}` {times} time(s) (the test substitutes it)"
        );
        conf = conf.replace(marker, &with);
    }
    assert_eq!(
        conf.matches(EXAMPLE_VIDEO_COST).count(),
        1,
        "examples/caddy/Caddyfile must price /api/videos/ with `{EXAMPLE_VIDEO_COST}` (the test spends it)"
    );
    conf
}

/// The caddy binary, if one is installed.
fn caddy_bin() -> Option<PathBuf> {
    let usr = Path::new("/usr/bin/caddy");
    let bin = if usr.exists() { usr.to_path_buf() } else { PathBuf::from("caddy") };
    let works = Command::new(&bin).arg("version").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    works.then_some(bin)
}

/// Caddy as a child process with its configuration, data and logs in its own temporary
/// directory. Dropping it stops the process.
struct Caddy {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Caddy {
    /// Starts Caddy on a free port in front of keygate and the API and waits until it accepts
    /// connections.
    fn start(bin: &Path, keygate: u16, backend: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("keygate-caddy-").tempdir().expect("tempdir");
        let d = dir.path().display();
        // Global options: no admin endpoint (the default, localhost:2019, may be a system
        // Caddy's), plain HTTP on the test's port, nothing stored outside the directory.
        let main = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\nimport {d}/keygate.Caddyfile\n");
        let conf = dir.path().join("Caddyfile");
        std::fs::write(&conf, main).expect("writing the Caddyfile");
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port();
            std::fs::write(dir.path().join("keygate.Caddyfile"), site_config(keygate, backend, port))
                .expect("writing the site config");
            let log = dir.path().join(format!("caddy-{attempt}.log"));
            let mut child = Command::new(bin)
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&conf)
                .env("HOME", dir.path())
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(File::create(dir.path().join(format!("caddy-{attempt}.stdout"))).expect("log file"))
                .stderr(File::create(&log).expect("log file"))
                .spawn()
                .expect("spawning caddy");
            match nginx::wait_listening(&mut child, port, "caddy", || logs(dir.path())) {
                Ok(()) => return Self { child, dir, port },
                Err(e) => {
                    nginx::stop(&mut child);
                    // Another test took the port between our probe and Caddy's bind.
                    if !e.contains("address already in use") {
                        panic!("{e}");
                    }
                    last = e;
                }
            }
        }
        panic!("caddy did not start: {last}")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        nginx::stop(&mut self.child);
    }
}

/// Caddy's output and configuration, for failure messages.
fn logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for f in files.iter().filter(|f| f.is_file()) {
        out += &format!("--- {} ---\n{}\n", f.display(), std::fs::read_to_string(f).unwrap_or_default());
    }
    out
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_keygate() {
    let Some(bin) = caddy_bin() else {
        keygate_testkit::skip_or_fail!("caddy is not installed (scripts/test.sh installs Debian's `caddy`)");
    };
    let sb = Sandbox::new();
    let admin = admin_token();
    let keygate = sb.start(&[&["--admin-token", &admin][..], &KEYGATE_FLUSH_ARGS].concat(), &[]).await;
    let backend = Backend::start();
    let caddy = Caddy::start(&bin, keygate.port, backend.port);
    let http = client();

    let alice = customer(&keygate, &admin, "alice@example.com").await;
    let mallory = customer(&keygate, &admin, "mallory@example.com").await;
    // Requests keygate let through, which are exactly the ones the API may see.
    let mut accepted = 0;

    // The API must see the identity, never the credential, never a client's own x-keygate-*.
    let expect_identity = |seen: &Seen, who: &Customer, method: &str, secrets: &[(&str, String)]| {
        assert_eq!(seen.one("x-keygate-account-id"), who.account, "{seen:#?}");
        assert_eq!(seen.one("x-keygate-uid"), who.uid.to_string(), "{seen:#?}");
        assert_eq!(seen.one("x-keygate-client-id"), who.client_id, "{seen:#?}");
        assert_eq!(seen.one("x-keygate-auth-method"), method, "{seen:#?}");
        for credential_header in ["x-api-key", "authorization", "x-client-id", "x-client-secret"] {
            assert_eq!(seen.all(credential_header), Vec::<&str>::new(), "`{credential_header}` reached the API");
        }
        assert!(
            !text(&seen.head).to_ascii_lowercase().contains("forged"),
            "a forged header reached the API: {seen:#?}"
        );
        assert_no_secrets("the request head the API received", &seen.head, secrets);
    };
    let forged = [
        ("X-Keygate-Account-Id", "forged-account"),
        ("x-keygate-account-id", "forged-again"),
        ("X-Keygate-Uid", "forged-0"),
        ("X-Keygate-Client-Id", "forged-client"),
        ("X-Keygate-Auth-Method", "forged-method"),
    ];

    // 1. x-api-key, with forged identity headers and a body: to the API, body and query intact.
    let req = http
        .post(caddy.url("/api/things?page=2"))
        .header("x-api-key", &alice.key)
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#);
    let a = ask(with_headers(req, &forged)).await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "x-api-key: {a:?}\n{}", caddy.logs());
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/api/things?page=2"));
    assert_eq!(text(&seen.body), r#"{"hello":"world"}"#);
    expect_identity(&seen, &alice, "api_key", &[("API key", alice.key.clone())]);

    // 2. getToken through Caddy (not behind forward_auth, and not the API's business), then Bearer.
    let a = ask(http
        .post(caddy.url("/api/open/v3/getToken"))
        .json(&json!({"clientId": alice.client_id, "clientSecret": alice.key})))
    .await;
    assert_eq!((a.status, a.body["code"].as_i64()), (200, Some(1000)), "getToken through Caddy: {a:?}");
    let token = a.body["token"].as_str().expect("token").to_owned();
    assert_eq!(backend.count(), accepted, "getToken must not reach the API");
    let a = ask(with_headers(http.get(caddy.url("/api/me")).bearer_auth(&token), &forged)).await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "Bearer: {a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/api/me"));
    expect_identity(&seen, &alice, "bearer", &[("token", token.clone())]);

    // 3. x-client-id + x-client-secret.
    let a = ask(http
        .get(caddy.url("/api/pair"))
        .header("x-client-id", &alice.client_id)
        .header("x-client-secret", &alice.key))
    .await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "client pair: {a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    expect_identity(&backend.last(), &alice, "client_secret", &[("API key", alice.key.clone())]);

    // 4. Refusals: the client gets keygate's own status, envelope and challenge, exactly what
    // keygate answers directly to the same headers, and the API is not called.
    let expect_refused = async |what: &str, headers: &[(&str, &str)], status: u16, code: i64| {
        let before = backend.count();
        // A POST with a body, which Caddy must not pass on.
        let req = http.post(caddy.url("/api/things?page=3")).header("content-type", "application/json");
        let a: Answer = ask(with_headers(req.body(r#"{"would":"write"}"#), &[headers, &forged[..1]].concat())).await;
        let direct = ask(with_headers(http.get(keygate.url("/auth/verify")), headers)).await;
        assert_eq!(
            (direct.status, direct.body["code"].as_i64()),
            (status, Some(code)),
            "{what}, keygate directly: {direct:?}"
        );
        assert_eq!(a.status, status, "{what}: {a:?}\n{}", caddy.logs());
        assert_eq!(a.body, direct.body, "{what}: Caddy must pass keygate's envelope: {a:?}");
        assert!(a.body["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {a:?}");
        assert!(a.content_type.starts_with("application/json"), "{what}: {a:?}");
        assert_eq!(a.www_authenticate, direct.www_authenticate, "{what}: the challenge, once: {a:?}");
        assert_eq!(a.www_authenticate.len(), usize::from(status == 401), "{what}: {a:?}");
        assert_eq!(backend.count(), before, "{what}: the API was called for a refused request");
    };
    expect_refused("no credential", &[], 401, 1102).await;
    expect_refused("empty Bearer", &[("authorization", "Bearer ")], 401, 1102).await;
    expect_refused("wrong key", &[("x-api-key", "kgk_thisIsNotAKeyAtAll00000000")], 401, 1101).await;
    let pair = [("x-client-id", alice.client_id.as_str()), ("x-client-secret", "wrong-secret")];
    expect_refused("wrong secret", &pair, 401, 1101).await;
    let forged_token = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImZvcmdlZCJ9.c2lnbmF0dXJl";
    expect_refused("forged token", &[("authorization", forged_token)], 401, 1101).await;

    // 5. The API's own 401 is its business: passed through, not replaced by keygate's envelope.
    let a = ask(http.get(caddy.url(BACKEND_OWN_401)).header("x-api-key", &alice.key)).await;
    assert_eq!((a.status, &a.body), (401, &json!({"upstream": "refused"})), "{a:?}");
    assert_eq!(a.www_authenticate, ["Basic realm=\"backend\""], "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);

    // 6. A banned account: 403 with code 1200 for its key and its token; others unaffected.
    let mallory_token = keygate.token(&mallory.client_id, &mallory.key).await;
    let a = ask(http.get(caddy.url("/api/before-ban")).header("x-api-key", &mallory.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    expect_identity(&backend.last(), &mallory, "api_key", &[("API key", mallory.key.clone())]);
    let r = keygate
        .admin(&admin, "POST", &format!("/accounts/{}/ban", mallory.account), Some(json!({"reason": "caddy test"})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let bearer = format!("Bearer {mallory_token}");
    expect_refused("banned, key", &[("x-api-key", &mallory.key)], 403, 1200).await;
    expect_refused("banned, token", &[("authorization", &bearer)], 403, 1200).await;
    let a = ask(http.get(caddy.url("/api/after-ban")).header("x-api-key", &alice.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    accepted += 1;

    // 7. Credits. erin has 13; /api/things costs the default 1 and /api/videos/ 10 (the
    // example's `vars`, by the cleaned path). Whatever x-keygate-cost the client sends is
    // dropped, and it cannot forge what is left either.
    let erin = customer(&keygate, &admin, "erin@example.com").await;
    let r = keygate
        .admin(
            &admin,
            "PATCH",
            &format!("/credentials/{}", erin.client_id),
            Some(json!({"credits": {"remaining": 13}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A request let in: 200 from the API, which (like the client) gets what is left, `left` if
    // given.
    let charged = async |path: &str, left: Option<i64>| {
        let before = backend.count();
        let req = http.get(caddy.url(path)).header("x-api-key", &erin.key);
        let a = ask(with_headers(req, &[("x-keygate-cost", "0"), ("x-keygate-credits-remaining", "forged-999")])).await;
        assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "{path}: {a:?}\n{}", caddy.logs());
        let got: i64 = a.one("x-keygate-credits-remaining").parse().expect("credits left, a number");
        if let Some(left) = left {
            assert_eq!(got, left, "{path}: the client's balance: {a:?}");
        }
        assert_eq!(backend.count(), before + 1, "{path}");
        let seen = backend.last();
        assert_eq!(seen.target, path);
        assert_eq!(seen.one("x-keygate-credits-remaining"), got.to_string(), "{path}: the API's: {seen:#?}");
        assert_eq!(seen.all("x-keygate-cost"), Vec::<&str>::new(), "{path}: the price is not the API's business");
        expect_identity(&seen, &erin, "api_key", &[("API key", erin.key.clone())]);
    };
    // 402: keygate's own answer, as it is (one call: asked directly at the same cost, it
    // refuses too and so charges nothing), with what is left; the API is not called.
    let no_credits = async |path: &str, left: i64| {
        let before = backend.count();
        let req = http.post(caddy.url(path)).header("x-api-key", &erin.key).header("content-type", "application/json");
        let a = ask(req.header("x-keygate-cost", "1").body(r#"{"would":"write"}"#)).await;
        assert_eq!(a.status, 402, "{path}, {left} left: {a:?}\n{}", caddy.logs());
        let msg = format!("Insufficient quota balance: the request costs 10 and {left} credits are left");
        assert_eq!(a.body, json!({"code": 1006, "msg": msg}), "{path}: keygate's envelope: {a:?}");
        assert!(a.content_type.starts_with("application/json"), "{path}: {a:?}");
        assert_eq!(a.one("x-keygate-credits-remaining"), left.to_string(), "{path}: {a:?}");
        for header in ["x-keygate-client-id", "x-keygate-account-id", "www-authenticate", "ratelimit", "retry-after"] {
            assert_eq!(a.all(header), Vec::<&str>::new(), "{path}: `{header}` on a 402: {a:?}");
        }
        assert_eq!(backend.count(), before, "{path}: the API was called for a request the balance did not cover");
        a
    };
    charged("/api/things", Some(12)).await;
    charged("/api/videos/1", Some(2)).await;
    accepted += 2;
    // The same price however the path is spelled (Caddy's path matcher cleans and decodes it).
    let a = no_credits("/api/%76ideos/clip", 2).await;
    let direct =
        ask(http.get(keygate.url("/auth/verify")).header("x-api-key", &erin.key).header("x-keygate-cost", "10")).await;
    assert_eq!((direct.status, &direct.body), (402, &a.body), "keygate's own 402: {direct:?}");
    no_credits("/api//videos/2", 2).await;
    balance_settles(&keygate, &admin, &erin.client_id, 2).await;
    // A top-up of 5: the next request passes, and the balance is exactly 2 + 5 - 1. (Not
    // checked: the count on that request, which is what keygate knew when it last leased
    // credits, and may not include the top-up yet.)
    let r = keygate
        .admin(&admin, "POST", &format!("/credentials/{}/credits", erin.client_id), Some(json!({"add": 5})))
        .await;
    assert_eq!((r.status, r.body["data"]["remaining"].as_i64()), (200, Some(7)), "{r:?}");
    charged("/api/things", None).await;
    accepted += 1;
    balance_settles(&keygate, &admin, &erin.client_id, 6).await;
    // keygate was asked once per request: 3 let in (1 + 10 + 1 credits), 2 refused through
    // Caddy and 1 directly.
    usage_is(&keygate, &admin, &erin.client_id, &[("1000", 3), ("1006", 3)], 12).await;

    // A credential without a balance is not charged and gets no X-Keygate-Credits-Remaining
    // (Caddy 2.6 would pass its unresolved placeholder on); a client's own goes nowhere.
    let req = http.get(caddy.url("/api/videos/free")).header("x-api-key", &alice.key);
    let a = ask(req.header("x-keygate-credits-remaining", "forged-999")).await;
    assert_eq!((a.status, a.all("x-keygate-credits-remaining")), (200, vec![]), "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.all("x-keygate-credits-remaining"), seen.all("x-keygate-cost")), (vec![], vec![]), "{seen:#?}");
    expect_identity(&seen, &alice, "api_key", &[("API key", alice.key.clone())]);

    // 8. A rate limit of 2 per hour: keygate's 429 goes to the client as it is (code 1005,
    // Retry-After, RateLimit headers), and the API is not called.
    let carol = customer(&keygate, &admin, "carol@example.com").await;
    let limits = json!({"ratelimits": [{"name": "requests", "limit": 2, "duration": "1h"}]});
    let r = keygate.admin(&admin, "PATCH", &format!("/credentials/{}", carol.client_id), Some(limits)).await;
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..2 {
        let a = ask(http.get(caddy.url("/api/limited")).header("x-api-key", &carol.key)).await;
        assert_eq!(a.status, 200, "{a:?}");
        accepted += 1;
    }
    let a = ask(http.get(caddy.url("/api/limited")).header("x-api-key", &carol.key)).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (429, Some(1005)), "{a:?}\n{}", caddy.logs());
    assert!(a.one("retry-after").parse::<u64>().is_ok(), "{a:?}");
    assert!(a.one("ratelimit").starts_with(r#""requests";r=0;t="#), "{a:?}");
    assert_eq!(backend.count(), accepted, "the API was called for a rate-limited request");

    // Outside /api/ nothing is served, and nothing reaches the API.
    let a = ask(http.get(caddy.url("/elsewhere")).header("x-api-key", &alice.key)).await;
    assert_eq!(a.status, 404, "{a:?}");

    // Only what keygate accepted ever reached the API.
    assert_eq!(backend.count(), accepted, "{:#?}", backend.seen.lock().unwrap());
}
