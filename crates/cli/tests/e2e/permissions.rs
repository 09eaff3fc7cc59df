//! What a key may do and when, from the CLI: `credential create` with its fields (one
//! transaction), `credential update`, `role`, `account allowlist`, what `credential show` and
//! `rotate` print, a running server applying the CLI's changes, and bad input refused with what
//! is wrong (clap's exit code 2 for a malformed argument, 1 for a value the server's rules refuse).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Reply, Sandbox, Server, now_ms, send, text};

/// Runs `keygate ARGS`, asserts success, and returns stdout.
fn human(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.run(args);
    assert!(out.status.success(), "keygate {args:?}: {out:?}");
    text(&out.stdout)
}

/// Runs `keygate ARGS`, asserts the exit code, and returns stderr.
fn refused(sb: &Sandbox, args: &[&str], code: i32) -> String {
    let out = sb.run(args);
    assert_eq!(out.status.code(), Some(code), "keygate {args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "keygate {args:?} printed on stdout: {out:?}");
    text(&out.stderr)
}

#[test]
fn credential_create_and_update_set_every_field() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("fields@example.com");
    let role = sb.json(&["role", "put", "reader", "--permission", "images.read"]);
    assert_eq!(role["permissions"], json!(["images.read"]), "{role}");

    let issued = sb.json(&[
        "credential",
        "create",
        "--account",
        &account,
        "--name",
        "dashboard (read-only)",
        "--meta",
        r#"{"team":"web","n":3}"#,
        "--expires",
        "2099-01-31T00:00:00Z",
        "--disabled",
        "--permission",
        "videos.read",
        "--permission",
        "images.*,videos.read",
        "--role",
        "reader",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-ip",
        "::1",
        "--ratelimit",
        "burst=100/1m",
    ]);
    let c = &issued["credential"];
    assert_eq!(c["name"], "dashboard (read-only)");
    assert_eq!(c["meta"], json!({"team": "web", "n": 3}));
    assert_eq!(c["expiresAt"], 4_073_500_800_000i64);
    assert_eq!(c["enabled"], false);
    assert_eq!(c["permissions"], json!(["images.*", "videos.read"]), "sorted, deduplicated");
    assert_eq!(c["roles"], json!(["reader"]));
    assert_eq!(c["ipAllowlist"], json!(["10.0.0.0/8", "::1/128"]));
    assert_eq!(c["ratelimits"], json!([{"name": "burst", "limit": 100, "duration": "1m"}]));
    let client = issued["clientId"].as_str().unwrap().to_owned();

    // `show` (and `list`) print what is set.
    let shown = human(&sb, &["credential", "show", &client]);
    for part in [
        "active (disabled)",
        r#"name="dashboard (read-only)""#,
        "expires 2099-01-31T00:00:00Z",
        "permissions=images.*,videos.read",
        "roles=reader",
        "ip-allowlist=10.0.0.0/8,::1/128",
        r#"meta={"n":3,"team":"web"}"#,
    ] {
        assert!(shown.contains(part), "no {part:?} in {shown}");
    }
    assert_eq!(human(&sb, &["credential", "list", "--account", &account]), shown);
    // A plain credential's line has none of them.
    let (plain, _) = sb.create_credential(&account);
    let line = human(&sb, &["credential", "show", &plain]);
    for absent in ["disabled", "name=", "expires", "permissions=", "roles=", "ip-allowlist=", "meta="] {
        assert!(!line.contains(absent), "{absent:?} in {line}");
    }

    // A change names what it changes; the rest stays.
    let c = sb.json(&["credential", "update", &client, "--enable", "--permissions", "videos.create,videos.read"]);
    assert_eq!(
        (c["enabled"].clone(), c["permissions"].clone()),
        (json!(true), json!(["videos.create", "videos.read"]))
    );
    assert_eq!(c["name"], "dashboard (read-only)");
    assert_eq!(c["roles"], json!(["reader"]));
    let c = sb.json(&[
        "credential",
        "update",
        &client,
        "--no-name",
        "--no-meta",
        "--no-expiry",
        "--permissions",
        "",
        "--roles",
        "",
        "--allow-ips",
        "",
    ]);
    for gone in ["name", "meta", "expiresAt"] {
        assert!(c.get(gone).is_none(), "{gone} is still set: {c}");
    }
    for empty in ["permissions", "roles", "ipAllowlist"] {
        assert_eq!(c[empty], json!([]), "{c}");
    }
    assert_eq!(c["ratelimits"], json!([{"name": "burst", "limit": 100, "duration": "1m"}]), "not this command's");
    let c = sb.json(&[
        "credential",
        "update",
        &client,
        "--name",
        "ci",
        "--meta",
        r#"{"a":1}"#,
        "--expires",
        "2000-01-01",
        "--disable",
        "--roles",
        "reader",
        "--allow-ips",
        "203.0.113.7,2001:db8::/32",
    ]);
    assert_eq!(c["name"], "ci");
    assert_eq!(c["meta"], json!({"a": 1}));
    assert_eq!(c["expiresAt"], 946_684_800_000i64);
    assert_eq!(c["enabled"], false);
    assert_eq!(c["ipAllowlist"], json!(["2001:db8::/32", "203.0.113.7/32"]));
    let shown = human(&sb, &["credential", "show", &client]);
    assert!(shown.contains("expired 2000-01-01T00:00:00Z"), "a past expiry says so: {shown}");
    // The human answer of an update is the credential's line.
    let line = human(&sb, &["credential", "update", &client, "--enable"]);
    assert!(line.starts_with(&client) && !line.contains("disabled"), "{line}");

    // Nothing to change is refused, and says what can be.
    let err = refused(&sb, &["credential", "update", &client], 1);
    assert!(err.starts_with("error: nothing to change"), "{err}");
    for flag in ["--name", "--meta", "--expires", "--enable", "--permissions", "--roles", "--allow-ips"] {
        assert!(err.contains(flag), "no {flag} in {err}");
    }
}

#[test]
fn roles_and_account_allowlists() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("roles@example.com");

    let out = human(&sb, &["role", "put", "editor", "--permission", "videos.*", "--permission", "images.read"]);
    assert_eq!(out, "role editor created\n  permissions: images.read, videos.*\n");
    let out = human(&sb, &["role", "put", "editor", "--permissions", "videos.*,images.*"]);
    assert!(out.starts_with("role editor replaced"), "{out}");
    sb.json(&["role", "put", "auditor", "--permission", "reports.read"]);
    let list = sb.json(&["role", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["auditor", "editor"], "{list}");
    assert!(human(&sb, &["role", "list"]).contains("editor\n  permissions: images.*, videos.*"));

    let issued = sb.json(&["credential", "create", "--account", &account, "--role", "editor"]);
    let client = issued["clientId"].as_str().unwrap().to_owned();
    // `get` is `show`.
    for verb in ["show", "get"] {
        let shown = sb.json(&["role", verb, "editor"]);
        assert_eq!(
            (shown["role"]["name"].clone(), shown["credentials"].clone()),
            (json!("editor"), json!(1)),
            "{shown}"
        );
    }
    assert!(human(&sb, &["role", "show", "editor"]).starts_with("editor  credentials=1\n"));

    // A held role is not deleted; once nobody holds it, it is.
    let err = refused(&sb, &["role", "delete", "editor"], 1);
    assert!(err.contains("editor") && err.contains("in database sqlite://keygate.db"), "{err}");
    sb.json(&["credential", "update", &client, "--roles", ""]);
    assert_eq!(human(&sb, &["role", "delete", "editor"]), "role editor deleted\n");
    let err = refused(&sb, &["role", "show", "editor"], 1);
    assert!(err.starts_with("error: role not found"), "{err}");
    assert!(err.contains("hint:"), "a role not found may be another database's: {err}");

    // An account's allowlist: set, shown, cleared.
    let a = sb.json(&["account", "allowlist", &account, "203.0.113.0/24", "2001:db8::1"]);
    assert_eq!(a["ipAllowlist"], json!(["2001:db8::1/128", "203.0.113.0/24"]), "{a}");
    let out = human(&sb, &["account", "allowlist", &account]);
    assert!(out.contains("  ip allowlist: 2001:db8::1/128,203.0.113.0/24"), "{out}");
    assert_eq!(sb.json(&["account", "show", &account])["account"]["ipAllowlist"], a["ipAllowlist"]);
    let a = sb.json(&["account", "allowlist", &account, "--clear"]);
    assert_eq!(a["ipAllowlist"], json!([]), "{a}");
    assert!(human(&sb, &["account", "allowlist", &account]).contains("ip allowlist: none"));
}

#[test]
fn rotate_says_until_when_each_old_key_works() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("rotation@example.com");
    let (client, _) = sb.create_credential(&account);

    let first = sb.json(&["credential", "rotate", &client, "--grace", "2h"]);
    assert_eq!((first["previousGeneration"].clone(), first["endedGenerations"].clone()), (json!(1), json!([])));
    let gen1_until = first["oldKeyExpiresAt"].as_i64().unwrap_or_else(|| panic!("{first}"));

    // The second rotation in a grace: generation 2 gets its own grace, generation 1 ends now.
    let out = sb.run(&["credential", "rotate", &client, "--grace", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let said = text(&out.stdout);
    let previous = said.lines().find(|l| l.starts_with("The previous API key")).unwrap_or_else(|| panic!("{said}"));
    assert!(
        previous.contains("(generation 2, and its tokens) keeps working until ") && previous.ends_with("Z."),
        "{said}"
    );
    let older = said.lines().find(|l| l.starts_with("The older API key")).unwrap_or_else(|| panic!("{said}"));
    let gen1_end = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(gen1_until as u64));
    assert!(
        older.contains("generation 1")
            && older.contains(&format!("its grace ran until {gen1_end}"))
            && older.contains("stopped working now"),
        "{said}"
    );
    let live = sb.json(&["credential", "show", &client])["liveGenerations"].clone();
    let mut gens: Vec<i64> = live.as_array().unwrap().iter().map(|g| g["generation"].as_i64().unwrap()).collect();
    gens.sort();
    assert_eq!(gens, [2, 3], "the current key and the one before it: {live}");

    // Without a grace every old key stops now; --json says which.
    let r = sb.json(&["credential", "rotate", &client]);
    assert_eq!(r["previousGeneration"], 3);
    assert!(r["oldKeyExpiresAt"].is_null(), "{r}");
    assert_eq!(r["endedGenerations"], json!([2]), "{r}");
    assert!(r["apiKey"].as_str().unwrap().starts_with("kgk_") && r["credential"]["generation"] == 4, "{r}");
    let said = human(&sb, &["credential", "rotate", &client]);
    assert!(said.contains("The previous API key (generation 4, and its tokens) stopped working now."), "{said}");
    assert!(!said.contains("older API key"), "nothing older was live: {said}");

    // A grace that outlasts the credential's own expiry says so.
    sb.json(&["credential", "update", &client, "--expires", &(now_ms() + 600_000).to_string()]);
    let said = human(&sb, &["credential", "rotate", &client, "--grace", "1h"]);
    assert!(said.contains("The credential itself expires at"), "{said}");
}

#[test]
fn bad_input_is_refused_with_what_is_wrong() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("bad@example.com");
    let (client, _) = sb.create_credential(&account);
    let owned = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let create = |extra: &[&str]| owned(&[&["credential", "create", "--account", &account][..], extra].concat());
    let update = |extra: &[&str]| owned(&[&["credential", "update", &client][..], extra].concat());

    // Malformed arguments: clap's usage error (2), naming the flag.
    for (args, says) in [
        (create(&["--meta", "[1,2]"]), "must be a JSON object"),
        (create(&["--meta", "{tier: gold}"]), "not JSON"),
        (create(&["--allow-ip", "10.0.0.0/33"]), "10.0.0.0/33"),
        (update(&["--allow-ips", "10.0.0.1,nowhere"]), "nowhere"),
        (update(&["--name", "a", "--no-name"]), "cannot be used with"),
        (update(&["--enable", "--disable"]), "cannot be used with"),
        (update(&["--expires", "2099-01-01", "--no-expiry"]), "cannot be used with"),
        (owned(&["account", "allowlist", &account, "300.1.1.1"]), "300.1.1.1"),
        (owned(&["account", "allowlist", &account, "10.0.0.0/8", "--clear"]), "cannot be used with"),
    ] {
        let err = refused(&sb, &args.iter().map(String::as_str).collect::<Vec<_>>(), 2);
        assert!(err.contains(says), "{args:?}: no {says:?} in {err}");
    }

    // Values the rules refuse: exit 1, what is wrong, and nothing written.
    let before = sb.json(&["credential", "list", "--account", &account]);
    for (args, says) in [
        (create(&["--expires", "tomorrow"]), "--expires must be an RFC 3339 time"),
        (create(&["--permission", "bad perm"]), "permission"),
        (create(&["--role", "ghost", "--name", "ok"]), "ghost"),
        (create(&["--name", "   "]), "name must be 1 to 200 characters"),
        (create(&["--meta", &format!(r#"{{"big":"{}"}}"#, "x".repeat(4100))]), "at most 4096"),
        (update(&["--expires", "31/12/2099"]), "--expires must be"),
        (update(&["--roles", "ghost"]), "ghost"),
        (update(&["--permissions", "videos.read,bad perm"]), "permission"),
        (owned(&["role", "put", "Bad", "--permission", "x"]), "is not a role name"),
        (owned(&["role", "put", "ok", "--permission", "bad perm"]), "permission"),
    ] {
        let err = refused(&sb, &args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
        assert!(err.starts_with("error: ") && err.contains(says), "{args:?}: no {says:?} in {err}");
    }
    assert_eq!(sb.json(&["credential", "list", "--account", &account]), before, "nothing was written");
    assert_eq!(sb.json(&["role", "list"]), json!([]));

    // Unknown things: not found, in which database, and how to point at another.
    for args in [
        &["credential", "update", "0123456789abcdef01234567", "--disable"][..],
        &["account", "allowlist", "0123456789abcdef01234567", "10.0.0.0/8"],
        &["role", "delete", "ghost"],
    ] {
        let err = refused(&sb, args, 1);
        assert!(err.contains("in database sqlite://keygate.db") && err.contains("hint:"), "{args:?}: {err}");
    }
    let err = refused(&sb, &["credential", "update", "not-an-id", "--disable"], 1);
    assert!(err.contains("clientId must be 24 lowercase hexadecimal characters"), "{err}");
}

/// `/auth/verify` with a key and, when given, a requirement.
async fn verify(server: &Server, key: &str, require: Option<&str>) -> Reply {
    let mut req = server.http.get(server.url("/auth/verify")).header("x-api-key", key);
    if let Some(r) = require {
        req = req.header("x-keygate-require", r);
    }
    send(req).await
}

/// Polls until the answer has `code` (the server learns of the CLI's writes through the feed).
async fn until_code(server: &Server, key: &str, require: Option<&str>, code: i64) -> Reply {
    let start = Instant::now();
    loop {
        let r = verify(server, key, require).await;
        if r.code() == code {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still {r:?}, not {code}, after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_running_server_applies_what_the_cli_sets() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("served@example.com");
    sb.json(&["role", "put", "viewer", "--permission", "images.read"]);
    let issued = sb.json(&[
        "credential",
        "create",
        "--account",
        &account,
        "--name",
        "pipeline",
        "--meta",
        r#"{"tier":"gold"}"#,
        "--permission",
        "videos.create",
        "--role",
        "viewer",
    ]);
    let (client, key) = (issued["clientId"].as_str().unwrap(), issued["apiKey"].as_str().unwrap());
    let server = sb.start(&[], &[]).await;

    let r = verify(&server, key, Some("videos.create AND images.read")).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    assert_eq!(r.body["data"]["name"], "pipeline");
    assert_eq!(r.body["data"]["meta"], json!({"tier": "gold"}));
    let r = verify(&server, key, Some("images.write")).await;
    assert_eq!((r.status, r.code()), (403, 1009), "{r:?}");

    // A role the CLI changes reaches the key; so do a disable, an allowlist, an enable.
    sb.json(&["role", "put", "viewer", "--permission", "images.read,images.write"]);
    until_code(&server, key, Some("images.write"), 1000).await;
    sb.json(&["credential", "update", client, "--disable"]);
    let r = until_code(&server, key, None, 1101).await;
    assert!(r.body["msg"].as_str().unwrap().contains("disabled"), "{r:?}");
    sb.json(&["credential", "update", client, "--enable"]);
    until_code(&server, key, None, 1000).await;
    sb.json(&["account", "allowlist", &account, "203.0.113.0/24"]);
    let r = until_code(&server, key, None, 1009).await;
    assert!(r.body["msg"].as_str().unwrap().contains("address"), "{r:?}");
    sb.json(&["account", "allowlist", &account, "--clear"]);
    until_code(&server, key, None, 1000).await;
    sb.json(&["credential", "update", client, "--expires", "2000-01-01"]);
    let r = until_code(&server, key, None, 1101).await;
    assert!(r.body["msg"].as_str().unwrap().contains("expired"), "{r:?}");
}
