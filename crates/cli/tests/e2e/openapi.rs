//! The OpenAPI document against the live server: `keygate openapi` prints what `/openapi.json`
//! serves, it is OpenAPI 3.1 naming every JSON endpoint, and schemathesis (property-based tests
//! generated from the document: examples, coverage, fuzzing and stateful phases, every check)
//! finds no server error, no answer the document does not describe, no crash.
//!
//! Needs schemathesis (`scripts/test.sh` installs it from PyPI into a virtualenv and sets
//! `KEYGATE_SCHEMATHESIS`); without it the test prints a loud SKIP, or fails when
//! `KEYGATE_TEST_REQUIRE_ALL=1`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{Sandbox, admin_token, client, require, text};

fn schemathesis() -> Option<PathBuf> {
    let bin = std::env::var_os("KEYGATE_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| "schemathesis".into());
    require("schemathesis", Command::new(&bin).arg("--version")).then_some(bin)
}

#[tokio::test]
async fn the_document_describes_the_live_server() {
    let sb = Sandbox::new();
    let printed: Value = serde_json::from_slice(&sb.run(&["openapi"]).stdout).expect("`keygate openapi` prints JSON");
    let admin = admin_token();
    let server = sb.start(&["--admin-token", &admin], &[]).await;
    let served: Value = client().get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(printed, served, "`keygate openapi` and /openapi.json differ");
    assert!(served["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", served["openapi"]);
    let paths = served["paths"].as_object().unwrap();
    for p in [
        "/api/open/v3/getToken",
        "/auth/verify",
        "/healthz",
        "/readyz",
        "/admin/v1/accounts",
        "/admin/v1/accounts/{id}/credentials",
        "/admin/v1/credentials/{client_id}/rotate",
        "/admin/v1/signing-keys/rotate",
    ] {
        assert!(paths.contains_key(p), "the document has no {p}");
    }
    for scheme in ["apiKey", "bearerToken", "adminToken"] {
        assert!(served["components"]["securitySchemes"].get(scheme).is_some(), "no security scheme {scheme}");
    }

    let Some(bin) = schemathesis() else { return };
    // A customer, so that generated requests can also carry a valid key.
    let account = sb.create_account("schemathesis@example.com");
    let (_, key) = sb.create_credential(&account);
    // The admin API with its token, stateful over the document's links (account -> credential ->
    // rotate / revoke ...); the protocol and health with a customer's key (no links: no state).
    let runs: [(&str, &str, Vec<String>); 2] = [
        (
            "admin",
            "examples,coverage,fuzzing,stateful",
            vec!["--include-tag".into(), "admin".into(), "-H".into(), format!("Authorization: Bearer {admin}")],
        ),
        (
            "protocol and health",
            "examples,coverage,fuzzing",
            vec!["--exclude-tag".into(), "admin".into(), "-H".into(), format!("x-api-key: {key}")],
        ),
    ];
    // Rules JSON Schema cannot state: a set of rate limits has unique names (`uniqueItems`
    // compares whole items), a role given to a credential must exist, a permission is not named
    // `and` or `or`, a network's prefix fits its address. So for the operations that take them
    // (PATCH and PUT, and a credential's creation, which takes PATCH's body), a 400 for a
    // schema-valid body is expected too; every other check still applies to them. The same for the usage
    // queries, whose parameters depend on each other (from before to, at most 366 days apart,
    // hours within the last 7 days, days not with from or to), and the audit log's (from before
    // to, times in three forms): separate query parameters have no JSON Schema for that.
    let config = sb.path("schemathesis.toml");
    std::fs::write(
        &config,
        r#"[[operations]]
include-path-regex = "^/admin/v1/(credentials/[^/]+|accounts/[^/]+|plans/[^/]+|roles/[^/]+)$"
include-method-regex = "^(PATCH|PUT)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path-regex = "^/admin/v1/accounts/[^/]+/credentials$"
include-method-regex = "^POST$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# x-keygate-require's grammar (nested parentheses) is no regular language: its schema says
# which characters an expression is made of, so a schema-valid value may still be malformed
# (400); an undeclared method (TRACE) with such a value gets that 400 before its 405.
[[operations]]
include-path-regex = "^/auth/verify"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "402", "403", "404", "409", "429", "5xx"]
checks.unsupported_method.enabled = false

[[operations]]
include-path-regex = "^/admin/v1/((credentials|accounts)/[^/]+/usage|audit)$"
include-method-regex = "^GET$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"#,
    )
    .unwrap();
    for (what, phases, args) in runs {
        let out = Command::new(&bin)
            // Its cache (.schemathesis/) goes to the sandbox, not the source tree.
            .current_dir(sb.dir())
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(server.url("/openapi.json"))
            .args(["--checks", "all", "--phases", phases])
            // One worker: with two, hypothesis parses lambdas' source (ast) from two threads at
            // once, which CPython 3.11 can fail with "AST constructor recursion depth mismatch"
            // (seen in CI: a tool error, not a finding).
            .args(["--max-examples", "40", "--workers", "1", "--seed", "1", "--no-color"])
            .args(&args)
            .output()
            .expect("running schemathesis");
        let report = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
        eprintln!(
            "--- schemathesis, {what} ---\n{}",
            report.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        assert!(out.status.success(), "schemathesis found problems ({what}):\n{report}");
    }
    let log = server.stderr_text();
    assert!(!log.contains("panicked"), "the server panicked under schemathesis:\n{log}");
}
