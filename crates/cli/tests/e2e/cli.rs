//! The admin CLI, round trip with `--json`, and its answers to bad input.

use serde_json::Value;

use crate::support::Sandbox;

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {list}"))
        .iter()
        .map(|v| v[field].as_str().expect("string field").to_owned())
        .collect()
}

#[test]
fn cli_round_trip_json() {
    let sb = Sandbox::with_database();

    // Accounts.
    let alice = sb.json(&["account", "create", "--email", "alice@example.com", "--first-name", "Alice"]);
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    assert_eq!(alice_id.len(), 24, "{alice}");
    assert!(alice_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["firstName"], "Alice");
    assert_eq!(alice["status"], "active");
    assert!(alice["uid"].as_i64().is_some(), "{alice}");
    let bob_id = sb.create_account("bob@example.com");
    assert!(sb.path("keygate.db").exists());
    assert!(sb.path("keygate.key").exists());

    let list = sb.json(&["account", "list"]);
    let listed = ids(&list, "id");
    assert!(listed.contains(&alice_id) && listed.contains(&bob_id), "{list}");
    assert_eq!(listed.len(), 2);

    let show = sb.json(&["account", "show", &alice_id]);
    assert_eq!(show["account"]["id"], alice_id.as_str());
    assert_eq!(show["account"]["email"], "alice@example.com");
    assert!(show["events"].is_array(), "{show}");

    // Credentials.
    let issued = sb.json(&["credential", "create", "--account", &alice_id]);
    let client_id = issued["clientId"].as_str().unwrap().to_owned();
    let api_key = issued["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(client_id.len(), 24, "{issued}");
    assert!(api_key.starts_with("kgk_") && api_key.len() == 32, "{issued}");
    assert_eq!(issued["credential"]["clientId"], client_id.as_str());
    assert_eq!(issued["credential"]["accountId"], alice_id.as_str());
    assert_eq!(issued["credential"]["status"], "active");
    assert_eq!(issued["credential"]["generation"], 1);
    let (second_client, _) = sb.create_credential(&alice_id);

    let creds = sb.json(&["credential", "list", "--account", &alice_id]);
    let listed = ids(&creds, "clientId");
    assert_eq!(listed.len(), 2, "{creds}");
    assert!(listed.contains(&client_id) && listed.contains(&second_client));
    assert!(!creds.to_string().contains(&api_key), "credential list shows the API key: {creds}");
    let bob_creds = sb.json(&["credential", "list", "--account", &bob_id]);
    assert_eq!(bob_creds, Value::Array(vec![]));

    let shown = sb.json(&["credential", "show", &client_id]);
    assert_eq!(shown["clientId"], client_id.as_str());
    assert_eq!(shown["accountId"], alice_id.as_str());
    assert_eq!(shown["status"], "active");
    let hint = shown["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("kgk_") && hint.ends_with(&api_key[api_key.len() - 4..]),
        "hint {hint:?} should be the key's prefix and last four"
    );
    assert!(!shown.to_string().contains(&api_key), "{shown}");

    // Ban with a reason, visible in `account show` events; then unban.
    let banned = sb.json(&["account", "ban", &alice_id, "--reason", "chargeback fraud 42"]);
    assert_eq!(banned["status"], "banned");
    assert_eq!(banned["banReason"], "chargeback fraud 42");
    let show = sb.json(&["account", "show", &alice_id]);
    assert_eq!(show["account"]["status"], "banned");
    let events = show["events"].as_array().expect("events");
    let ban_event = events.iter().find(|e| e["kind"] == "banned").unwrap_or_else(|| panic!("no ban event in {show}"));
    assert_eq!(ban_event["reason"], "chargeback fraud 42");
    // The CLI's actor is the OS user on this host (the audit log's name for it).
    assert!(ban_event["actor"].as_str().is_some_and(|a| a.starts_with("cli:") && a.contains('@')), "{ban_event}");
    // The human output shows the reason too.
    let human = sb.run(&["account", "show", &alice_id]);
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("chargeback fraud 42"), "{human:?}");

    let unbanned = sb.json(&["account", "unban", &alice_id]);
    assert_eq!(unbanned["status"], "active");
    assert!(unbanned.get("banReason").is_none(), "{unbanned}");
    let show = sb.json(&["account", "show", &alice_id]);
    let kinds: Vec<&str> = show["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["banned", "unbanned"], "{show}");

    // Rotate: same clientId, a new key, the next generation.
    let rotated = sb.json(&["credential", "rotate", &client_id]);
    assert_eq!(rotated["clientId"], client_id.as_str());
    let new_key = rotated["apiKey"].as_str().unwrap();
    assert!(new_key.starts_with("kgk_") && new_key.len() == 32);
    assert_ne!(new_key, api_key, "rotation must issue a new key");
    assert_eq!(rotated["credential"]["generation"], 2);
    let with_grace = sb.json(&["credential", "rotate", &client_id, "--grace", "24h"]);
    assert_eq!(with_grace["credential"]["generation"], 3);
    let live = with_grace["credential"]["liveGenerations"].as_array().unwrap();
    assert_eq!(live.len(), 2, "generation 2 keeps working for 24h: {with_grace}");

    // Revoke.
    let revoked = sb.json(&["credential", "revoke", &client_id]);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revokedAt"].as_i64().is_some(), "{revoked}");
    assert_eq!(sb.json(&["credential", "show", &client_id])["status"], "revoked");
    assert_eq!(sb.json(&["credential", "show", &second_client])["status"], "active");

    // Signing keys.
    let keys = sb.json(&["signing-key", "list"]);
    let before = ids(&keys, "kid");
    assert_eq!(before.len(), 1, "one signing key is created at setup: {keys}");
    let new = sb.json(&["signing-key", "rotate"]);
    let new_kid = new["kid"].as_str().unwrap().to_owned();
    assert!(!before.contains(&new_kid));
    let after = ids(&sb.json(&["signing-key", "list"]), "kid");
    assert_eq!(after.len(), 2);
    assert!(after.contains(&new_kid) && after.contains(&before[0]));
    let retired = sb.json(&["signing-key", "retire", &before[0]]);
    assert!(retired["retiredAt"].as_i64().is_some(), "{retired}");
    let err = sb.fails(&["signing-key", "retire", &new_kid]);
    assert!(err.contains("only live signing key"), "{err}");
}

#[test]
fn cli_rejects_bad_input_with_helpful_messages() {
    let sb = Sandbox::with_database();
    let id = sb.create_account("carol@example.com");

    for bad in ["not-an-email", "a@b", "@example.com", "a b@example.com"] {
        let err = sb.fails(&["account", "create", "--email", bad]);
        assert!(err.contains("email must look like name@example.com"), "{bad}: {err}");
    }

    // Duplicate email.
    let err = sb.fails(&["account", "create", "--email", "carol@example.com"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(sb.json(&["account", "list"]).as_array().unwrap().len(), 1);

    // Malformed ids.
    for args in [
        &["account", "show", "zzz"][..],
        &["account", "ban", "12345"],
        &["account", "unban", "ABCDEFABCDEFABCDEFABCDEF"],
        &["credential", "create", "--account", "not-hex-not-hex-not-hex!"],
        &["credential", "list", "--account", "x"],
    ] {
        let err = sb.fails(args);
        assert!(err.contains("account id must be 24 lowercase hexadecimal characters"), "{args:?}: {err}");
    }
    for args in [
        &["credential", "show", "nope"][..],
        &["credential", "revoke", "0123"],
        &["credential", "rotate", "g123456789abcdef01234567"],
    ] {
        let err = sb.fails(args);
        assert!(err.contains("clientId must be 24 lowercase hexadecimal characters"), "{args:?}: {err}");
    }

    // Well-formed but unknown ids.
    let unknown = "0123456789abcdef01234567";
    for args in [
        &["account", "show", unknown][..],
        &["account", "ban", unknown],
        &["credential", "create", "--account", unknown],
        &["credential", "list", "--account", unknown],
    ] {
        let err = sb.fails(args);
        assert!(err.contains("not found") && err.contains("account"), "{args:?}: {err}");
    }
    for args in
        [&["credential", "show", unknown][..], &["credential", "revoke", unknown], &["credential", "rotate", unknown]]
    {
        let err = sb.fails(args);
        assert!(err.contains("not found") && err.contains("credential"), "{args:?}: {err}");
    }
    let err = sb.fails(&["signing-key", "retire", "k000000000000"]);
    assert!(err.contains("no such signing key"), "{err}");

    // Bad flag values.
    let (client, _) = sb.create_credential(&id);
    let err = sb.fails(&["credential", "rotate", &client, "--grace", "soon"]);
    assert!(err.contains("--grace"), "{err}");
    let err = sb.fails(&["credential", "rotate", &client, "--grace", "100d"]);
    assert!(err.contains("grace must be at most 90 days"), "{err}");

    // Nothing changed through all of that.
    assert_eq!(sb.json(&["credential", "show", &client])["generation"], 1);
    assert_eq!(sb.json(&["account", "show", &id])["account"]["status"], "active");
}

#[test]
fn cli_rate_limits_and_plans() {
    let sb = Sandbox::with_database();
    let id = sb.create_account("dana@example.com");
    let (client, _) = sb.create_credential(&id);

    let plan = sb.json(&["plan", "put", "free", "--ratelimit", "requests=10/1s", "--ratelimit", "daily=10000/1d"]);
    assert_eq!(plan["ratelimits"][1], serde_json::json!({"name": "daily", "limit": 10000, "duration": "1d"}));
    let account = sb.json(&["account", "limits", &id, "--plan", "free", "--ratelimit", "requests=1000/1s"]);
    assert_eq!(account["account"]["plan"], "free");
    let sources: Vec<_> = account["effectiveRatelimits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_owned(), l["source"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(sources, [("daily".into(), "plan".into()), ("requests".into(), "account".into())]);
    let cred = sb.json(&["credential", "limits", &client, "--ratelimit", "burst=5/1m"]);
    assert_eq!(cred["effectiveRatelimits"][0]["source"], "credential");
    assert_eq!(cred["effectiveRatelimits"].as_array().unwrap().len(), 3);
    // Without flags: shows what applies, for people.
    let out = sb.run(&["credential", "limits", &client]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("burst=5/1m  from credential") && shown.contains("daily=10000/1d  from plan free"),
        "{shown}"
    );
    assert_eq!(sb.json(&["plan", "show", "free"])["accounts"], 1);

    // Bad input says what is wrong; a used plan cannot go.
    let err = sb.fails(&["credential", "limits", &client, "--ratelimit", "requests=10"]);
    assert!(err.contains("NAME=LIMIT/DURATION"), "{err}");
    let err = sb.fails(&["credential", "limits", &client, "--ratelimit", "requests=10/31d"]);
    assert!(err.contains("30d"), "{err}");
    let err = sb.fails(&["plan", "delete", "free"]);
    assert!(err.contains("used by 1 account"), "{err}");
    let err = sb.fails(&["account", "limits", &id, "--plan", "gold"]);
    assert!(err.contains("no plan named \"gold\""), "{err}");
    sb.json(&["account", "limits", &id, "--no-plan", "--clear"]);
    sb.json(&["plan", "delete", "free"]);
    assert_eq!(sb.json(&["plan", "list"]), serde_json::json!([]));
}
