//! The web console in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver with fantoccini, against the real `keygate serve` binary: sign up, log
//! in, generate a credential, use it (x-api-key, getToken, Bearer), watch its usage, revoke it
//! (with its confirmation step); an operator made with the CLI bans the customer, whose key gets
//! 1200 and whose open session ends; a form without its CSRF token is refused.
//!
//! Screenshots of the main pages go to `target/screenshots/` (a phone-sized one too).
//! Without Chromium or chromedriver the test skips loudly, or fails when
//! `KEYGATE_TEST_REQUIRE_ALL=1` (`scripts/test.sh` installs both).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::{Sandbox, Server, assert_no_secrets, client, free_port, require};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "a long console password";

/// A chromedriver child process, killed when dropped, with the browser profiles it used.
struct Driver {
    child: Child,
    url: String,
    profiles: Vec<tempfile::TempDir>,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        // Its own process group, so that dropping the driver also ends the browsers it started
        // (a test that panics never gets to close them).
        let child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver { child, url, profiles: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client().get(format!("{}/status", driver.url)).send().await
                && r.status().is_success()
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer on {}", driver.url);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser (its own Chromium process and fresh profile: no shared cookies).
    async fn browser(&mut self) -> Client {
        let profile = tempfile::Builder::new().prefix("keygate-chromium-").tempdir().expect("profile dir");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-crash-reporter", "--disable-breakpad",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        self.profiles.push(profile);
        let caps = serde_json::from_value(caps).expect("capabilities");
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session with Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("writing a screenshot");
}

async fn path(c: &Client) -> String {
    c.current_url().await.expect("current url").path().to_owned()
}

/// Waits until the browser shows `want` (a path), or fails with what it shows.
async fn wait_path(c: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path(c).await != want {
        if Instant::now() > deadline {
            panic!("the browser is at {} instead of {want}:\n{}", path(c).await, c.source().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The element `css` selects, waiting (a click's navigation may still be loading).
async fn find(c: &Client, css: &str) -> Element {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.find(Locator::Css(css)).await {
            Ok(e) => return e,
            Err(e) if Instant::now() > deadline => {
                panic!("no {css} ({e}) at {}:\n{}", path(c).await, c.source().await.unwrap_or_default())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = find(c, css).await;
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("typing");
}

async fn click(c: &Client, css: &str) {
    find(c, css).await.click().await.expect("click");
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.expect("text")
}

/// Follows the link with this text (waiting for it to be there).
async fn click_link(c: &Client, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.find(Locator::LinkText(text)).await {
            Ok(e) => return e.click().await.expect("click"),
            Err(e) if Instant::now() > deadline => {
                panic!("no link {text:?} ({e}) at {}:\n{}", path(c).await, c.source().await.unwrap_or_default())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the text of `css` contains `want` (for pages whose path does not change).
async fn wait_text(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got.contains(want) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{css} shows {got:?}, not {want:?}:\n{}", c.source().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(c: &Client, base: &str, email: &str) {
    c.goto(&format!("{base}/console/login")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", PASSWORD).await;
    click(c, "form[action='/console/login'] button[type=submit]").await;
}

fn chromium_available() -> bool {
    require("chromium (Debian package `chromium`)", Command::new(CHROMIUM).arg("--version"))
        && require("chromedriver (Debian package `chromium-driver`)", Command::new(CHROMEDRIVER).arg("--version"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !chromium_available() {
        return;
    }
    let sb = Sandbox::new();
    // Usage is flushed every 200 ms here, so the chart fills quickly.
    std::fs::write(sb.path("keygate.toml"), "usage_flush = \"200ms\"\nfeed_interval = \"50ms\"\n").unwrap();
    let server: Server = sb.start(&["--config", "keygate.toml"], &[]).await;
    let base = server.url("");

    // The first operator, from the CLI; the password comes on standard input, never as an argument.
    let op_email = "ops@example.com";
    let mut cli = sb
        .cmd()
        .args(["--json", "account", "create", "--email", op_email, "--operator", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(cli.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let op_account: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(op_account["role"], "operator");

    let mut driver = Driver::start().await;
    let customer = driver.browser().await;

    // Sign up.
    customer.goto(&format!("{base}/console")).await.unwrap();
    wait_path(&customer, "/console/login").await;
    shot(&customer, "01-login").await;
    click_link(&customer, "Create one").await;
    wait_path(&customer, "/console/signup").await;
    let email = "dev@customer.example";
    fill(&customer, "#email", email).await;
    fill(&customer, "#first_name", "Dev").await;
    fill(&customer, "#password", PASSWORD).await;
    fill(&customer, "#password_confirm", PASSWORD).await;
    shot(&customer, "02-signup").await;
    click(&customer, "form[action='/console/signup'] button[type=submit]").await;
    wait_path(&customer, "/console/credentials").await;
    wait_text(&customer, "h1", "API Credentials").await;

    // Log out and in again.
    click(&customer, "form[action='/console/logout'] button").await;
    wait_path(&customer, "/console/login").await;
    login(&customer, &base, email).await;
    wait_path(&customer, "/console/credentials").await;

    // Generate a credential: the secret is on this page and nowhere else.
    click(&customer, "#generate").await;
    wait_text(&customer, "h1", "Your new credential").await;
    let client_id = text(&customer, "#client-id").await;
    let api_key = text(&customer, "#api-key").await;
    assert_eq!(client_id.len(), 24, "{client_id}");
    assert!(api_key.starts_with("kgk_") && api_key.len() == 32, "{api_key}");
    assert!(text(&customer, ".alert-warn").await.contains("You will not see it again"));
    // The copy button exists only with JavaScript, which the CSP allows from /console/static.
    let copy = find(&customer, "button[data-copy='api-key']").await;
    assert!(copy.is_displayed().await.unwrap(), "the script ran and showed the copy button");
    shot(&customer, "03-secret-shown").await;
    copy.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while copy.text().await.unwrap() == "Copy" {
        assert!(Instant::now() < deadline, "the copy button did not react");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Use it: x-api-key, getToken, Bearer.
    let r = server.verify_key(&api_key).await;
    assert_eq!((r.status, r.code()), (200, 1000), "{r:?}");
    let token = server.token(&client_id, &api_key).await;
    assert_eq!(server.verify_bearer(&token).await.code(), 1000);
    for _ in 0..4 {
        assert_eq!(server.verify_key(&api_key).await.code(), 1000);
    }

    click_link(&customer, "I have stored it: back to API Credentials").await;
    wait_text(&customer, "h1", "API Credentials").await;
    let list = customer.source().await.unwrap();
    assert!(list.contains(&client_id) && list.contains(&api_key[api_key.len() - 4..]));
    assert!(!list.contains(&api_key), "the list must not show the API key");

    // Usage: the chart fills once the counters are flushed.
    click_link(&customer, "Usage").await;
    wait_path(&customer, &format!("/console/credentials/{client_id}")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while text(&customer, "#usage-total").await == "0" {
        assert!(Instant::now() < deadline, "usage never showed on the credential page");
        tokio::time::sleep(Duration::from_millis(300)).await;
        customer.refresh().await.unwrap();
    }
    assert_ne!(text(&customer, "#last-used").await, "never");
    assert!(!customer.source().await.unwrap().contains(&api_key));
    shot(&customer, "04-usage-chart").await;

    // The list on a phone-sized screen.
    customer.goto(&format!("{base}/console/credentials")).await.unwrap();
    customer.set_window_size(390, 844).await.unwrap();
    shot(&customer, "05-credentials-phone").await;
    customer.set_window_size(1280, 900).await.unwrap();
    shot(&customer, "06-credentials").await;

    // Revoke, with its confirmation step: key and token refused (1101).
    customer.goto(&format!("{base}/console/credentials/{client_id}")).await.unwrap();
    click_link(&customer, "Revoke this credential…").await;
    wait_path(&customer, &format!("/console/credentials/{client_id}/revoke")).await;
    assert_eq!(server.verify_key(&api_key).await.code(), 1000, "nothing happens before the confirmation");
    shot(&customer, "07-revoke-confirm").await;
    click(&customer, "#confirm-revoke").await;
    wait_text(&customer, ".alert-ok", "was revoked").await;
    let r = server.verify_key(&api_key).await;
    assert_eq!((r.status, r.code()), (401, 1101), "{r:?}");
    assert_eq!(server.verify_bearer(&token).await.code(), 1101);

    // A second credential, alive until the ban.
    click(&customer, "#generate").await;
    wait_text(&customer, "h1", "Your new credential").await;
    let key2 = text(&customer, "#api-key").await;
    assert_eq!(server.verify_key(&key2).await.code(), 1000);

    // A form without its CSRF token is refused (403), in the browser and from a script.
    customer.goto(&format!("{base}/console/credentials")).await.unwrap();
    customer
        .execute("document.querySelector('form[action=\"/console/credentials\"] input[name=csrf]').remove()", vec![])
        .await
        .unwrap();
    click(&customer, "#generate").await;
    wait_text(&customer, "h1", "Request refused").await;
    let session = customer.get_named_cookie("kg_session").await.expect("the session cookie");
    assert!(session.http_only().unwrap_or(false), "HttpOnly");
    let res = client()
        .post(server.url("/console/credentials"))
        .header("cookie", format!("kg_session={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    customer.goto(&format!("{base}/console/credentials")).await.unwrap();
    find(&customer, "#credentials").await;
    assert_eq!(customer.find_all(Locator::Css("#credentials tbody tr")).await.unwrap().len(), 2, "no third credential");

    // The operator bans the customer, with a reason.
    let operator = driver.browser().await;
    login(&operator, &base, op_email).await;
    wait_path(&operator, "/console/credentials").await;
    click_link(&operator, "Accounts").await;
    wait_path(&operator, "/console/admin/accounts").await;
    fill(&operator, "#q", "customer.example").await;
    click(&operator, "form[role=search] button[type=submit]").await;
    wait_path(&operator, "/console/admin/accounts").await;
    wait_text(&operator, "#accounts", email).await;
    click_link(&operator, email).await;
    wait_text(&operator, "h1", email).await;
    let account_page = path(&operator).await;
    assert!(account_page.starts_with("/console/admin/accounts/"), "{account_page}");
    shot(&operator, "08-operator-account").await;
    fill(&operator, "#ban-reason", "chargeback fraud").await;
    click(&operator, "#ban").await;
    wait_text(&operator, "#history", "chargeback fraud").await;
    assert_eq!(path(&operator).await, account_page);
    assert!(text(&operator, "#account-status").await.contains("banned"));
    shot(&operator, "09-operator-banned").await;

    // The customer's key gets 1200; their open session has ended; they cannot log in.
    let r = server.verify_key(&key2).await;
    assert_eq!((r.status, r.code()), (403, 1200), "{r:?}");
    customer.refresh().await.unwrap();
    wait_path(&customer, "/console/login").await;
    login(&customer, &base, email).await;
    wait_text(&customer, "h1", "Account suspended").await;
    shot(&customer, "10-suspended").await;

    // What was typed and issued is nowhere at rest or in the logs: the database keeps Argon2id
    // and HMAC hashes only, and the server never logs a form.
    let mut at_rest = std::fs::read(sb.path("keygate.db")).unwrap();
    at_rest.extend(std::fs::read(sb.path("keygate.db-wal")).unwrap_or_default());
    let secrets = [
        ("the console password", PASSWORD.to_owned()),
        ("the session cookie", session.value().to_owned()),
        ("the first API key", api_key.clone()),
        ("the second API key", key2.clone()),
    ];
    assert_no_secrets("the database", &at_rest, &secrets);
    assert_no_secrets("the server's output", server.output_text().as_bytes(), &secrets);

    customer.close().await.unwrap();
    operator.close().await.unwrap();
    eprintln!("console screenshots in {}", screenshot_dir().display());
}
