//! A browser without JavaScript for the console tests: cookies, forms with their CSRF tokens,
//! redirects not followed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::helpers::TestApp;

/// The password of the accounts the console tests make.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// One answer of the console.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn location(&self) -> &str {
        self.header("location").unwrap_or_default()
    }

    /// The `Set-Cookie` line for cookie `name`.
    pub(crate) fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The CSRF token of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        between(&self.text, r#"name="csrf" value=""#, "\"").unwrap_or_else(|| panic!("no CSRF field in {}", self.text))
    }

    /// The hidden `form_key` of the page's form that posts to `action` (a form applied once).
    pub(crate) fn form_key(&self, action: &str) -> Option<String> {
        let form = &self.text[self.text.find(&format!(r#"action="{action}""#))?..];
        between(&form[..form.find("</form>")?], r#"name="form_key" value=""#, "\"")
    }

    #[track_caller]
    pub(crate) fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected answer: {}\n{}", self.status, self.text);
        self
    }

    #[track_caller]
    pub(crate) fn expect_redirect(&self, to: &str) -> &Self {
        assert_eq!((self.status, self.location()), (303, to), "{}", self.text);
        self
    }

    #[track_caller]
    pub(crate) fn expect_text(&self, what: &str) -> &Self {
        assert!(self.text.contains(what), "{what:?} not in:\n{}", self.text);
        self
    }

    #[track_caller]
    pub(crate) fn expect_no_text(&self, what: &str) -> &Self {
        assert!(!self.text.contains(what), "{what:?} in:\n{}", self.text);
        self
    }
}

/// The text between the first `start` and the next `end` after it.
pub(crate) fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].to_owned())
}

/// Text as askama escapes it.
pub(crate) fn html(s: &str) -> String {
    s.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// A cookie-keeping client that does not follow redirects.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: Mutex<BTreeMap<String, String>>,
    /// Headers sent with every request (e.g. `X-Forwarded-For` to stand for another client).
    extra: Vec<(&'static str, String)>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Self::with_headers(app, &[])
    }

    pub(crate) fn with_headers(app: &'a TestApp, extra: &[(&'static str, &str)]) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self { app, http, cookies: Mutex::default(), extra: extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect() }
    }

    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    pub(crate) fn set(&self, name: &str, value: &str) {
        self.cookies.lock().unwrap().insert(name.into(), value.into());
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Page {
        let cookie =
            self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        for (k, v) in &self.extra {
            req = req.header(*k, v);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for c in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.lock().unwrap().remove(name);
            } else {
                self.set(name, value);
            }
        }
        Page { status, headers, text: res.text().await.unwrap() }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(self.app.url(path)), &[]).await
    }

    pub(crate) async fn post_with(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded_like(fields);
        let req =
            self.http.post(self.app.url(path)).header("content-type", "application/x-www-form-urlencoded").body(body);
        self.send(req, headers).await
    }

    pub(crate) async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    /// This site's origin, as a browser sends it in `Origin`.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.app.addr)
    }

    /// Opens `page`, then submits `fields` to `action` with the page's CSRF token (and the
    /// form's `form_key`, if it has one and `fields` none), as a browser on this site does (with
    /// its `Origin`).
    pub(crate) async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let shown = self.get(page).await;
        let csrf = shown.expect(200).csrf();
        let key = shown.form_key(action).filter(|_| !fields.iter().any(|(k, _)| *k == "form_key"));
        let mut all = vec![("csrf", csrf.as_str())];
        if let Some(key) = &key {
            all.push(("form_key", key.as_str()));
        }
        all.extend_from_slice(fields);
        let origin = self.origin();
        self.post_with(action, &all, &[("origin", &origin), ("sec-fetch-site", "same-origin")]).await
    }

    /// Signs up with [`PASSWORD`]; the sign-up must succeed (a redirect to the credentials).
    pub(crate) async fn signup(&self, email: &str) -> Page {
        let fields = [("email", email), ("first_name", "Test"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
        let p = self.submit("/console/signup", "/console/signup", &fields).await;
        p.expect_redirect("/console/credentials");
        p
    }

    /// Submits the login form; the answer is left to the caller to check.
    pub(crate) async fn login(&self, email: &str, password: &str) -> Page {
        self.submit("/console/login", "/console/login", &[("email", email), ("password", password)]).await
    }

    /// Generates a credential on the API Credentials page: (clientId, API key, the page).
    pub(crate) async fn generate(&self) -> (String, String, Page) {
        let p = self.submit("/console/credentials", "/console/credentials", &[]).await;
        p.expect(200);
        let client_id = between(&p.text, r#"<code id="client-id" aria-labelledby="client-id-label">"#, "<").unwrap();
        let key = between(&p.text, r#"<code id="api-key" class="key" aria-labelledby="api-key-label">"#, "<").unwrap();
        (client_id, key, p)
    }
}

/// Form fields encoded as `application/x-www-form-urlencoded`.
pub(crate) fn serde_urlencoded_like(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                        b' ' => "+".into(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An operator of the console (a new login account) and a browser logged in as it.
pub(crate) async fn operator_browser(app: &TestApp) -> (String, Browser<'_>) {
    let email = crate::helpers::unique_email();
    let s = &app.state;
    s.ops
        .create_login_account(
            &keygate_core::audit::Audit::system(),
            &email,
            "Op",
            Some(PASSWORD),
            keygate_store::Role::Operator,
            &s.console.passwords,
        )
        .await
        .unwrap();
    let b = Browser::new(app);
    b.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    (email, b)
}

/// The id of the account with this email.
pub(crate) async fn account_id(app: &TestApp, email: &str) -> String {
    app.state.ops.store().console_account_by_email(email).await.unwrap().unwrap().account.id.to_hex()
}
