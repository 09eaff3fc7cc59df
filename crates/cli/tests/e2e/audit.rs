//! `keygate audit list`: the changes made with the CLI, recorded as the OS user on this host,
//! filtered and paged as the admin API does; its human output; a bad time; and a change made
//! through a running server's admin API, seen by the CLI with the admin token and 127.0.0.1.

use serde_json::{Value, json};

use crate::support::{Sandbox, admin_token, text};

/// Who the CLI is in the audit log, found as the binary finds it (`USER@HOST`).
fn cli_actor() -> String {
    let user = whoami::username().ok().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let host = whoami::hostname().unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().unwrap_or_else(|| panic!("a page has items: {page}"))
}

fn actions(page: &Value) -> Vec<&str> {
    items(page).iter().map(|e| e["action"].as_str().expect("an action")).collect()
}

#[test]
fn audit_list_shows_cli_changes_filtered_and_paged() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("audited@example.com");
    let (client_id, api_key) = sb.create_credential(&account);
    let banned = sb.json(&["account", "ban", &account, "--reason", "chargeback fraud"]);
    assert_eq!(banned["status"], "banned");
    // Another account, outside the first one's history.
    let other = sb.create_account("other@example.com");

    // Everything, newest first: the CLI's changes, as USER@HOST; any older entries are keygate's
    // own (the signing key `migrate` made).
    let all = sb.json(&["audit", "list"]);
    assert_eq!(all["next"], Value::Null, "{all}");
    let list = items(&all);
    assert_eq!(actions(&all)[..4], ["account.create", "account.ban", "credential.create", "account.create"], "{all}");
    let actor = cli_actor();
    for e in &list[..4] {
        assert_eq!(e["actorKind"], "cli", "{e}");
        assert_eq!(e["actor"], actor.as_str(), "{e}");
        assert!(e["actor"].as_str().unwrap().contains('@'), "{e}");
        assert!(e.get("sourceIp").is_none() && e.get("requestId").is_none(), "no request behind a CLI change: {e}");
    }
    assert!(list[4..].iter().all(|e| e["actorKind"] == "system"), "{all}");
    let ids: Vec<i64> = list.iter().map(|e| e["id"].as_i64().expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(list[0]["target"], other.as_str());
    assert_eq!((list[1]["target"].as_str(), list[1]["targetKind"].as_str()), (Some(account.as_str()), Some("account")));
    assert_eq!(list[1]["before"]["status"], "active", "{}", list[1]);
    assert_eq!(list[1]["after"]["status"], "banned", "{}", list[1]);
    assert_eq!(list[1]["after"]["banReason"], "chargeback fraud", "{}", list[1]);
    assert_eq!(list[2]["target"], client_id.as_str());
    assert_eq!(list[2]["accountId"], account.as_str());
    assert!(!all.to_string().contains(&api_key), "the audit log shows an API key: {all}");

    // One action.
    let bans = sb.json(&["audit", "list", "--action", "account.ban"]);
    assert_eq!(actions(&bans), ["account.ban"], "{bans}");
    assert_eq!(items(&bans)[0], list[1]);
    // A kind of action.
    let creds = sb.json(&["audit", "list", "--action", "credential"]);
    assert_eq!(actions(&creds), ["credential.create"], "{creds}");
    // An account's history, its credential's entry included.
    let history = sb.json(&["audit", "list", "--account", &account]);
    assert_eq!(actions(&history), ["account.ban", "credential.create", "account.create"], "{history}");
    assert_eq!(items(&history)[..], list[1..4]);
    // A target, an actor.
    let target = sb.json(&["audit", "list", "--target", &client_id]);
    assert_eq!(actions(&target), ["credential.create"], "{target}");
    let mine = sb.json(&["audit", "list", "--actor", &actor]);
    assert_eq!(items(&mine)[..], list[..4]);
    // Times: from a date long ago, nothing from a time to come.
    let since = sb.json(&["audit", "list", "--account", &account, "--from", "2020-01-01", "--to", "2999-01-01"]);
    assert_eq!(since, history);
    let later = sb.json(&["audit", "list", "--from", "4102444800000"]);
    assert_eq!(items(&later).len(), 0, "{later}");

    // Pages of one: `next` is the cursor that continues.
    let first = sb.json(&["audit", "list", "--account", &account, "--limit", "1"]);
    assert_eq!(actions(&first), ["account.ban"], "{first}");
    let mut cursor = first["next"].as_str().unwrap_or_else(|| panic!("a next cursor: {first}")).to_owned();
    let mut paged = items(&first).clone();
    loop {
        let page = sb.json(&["audit", "list", "--account", &account, "--limit", "1", "--cursor", &cursor]);
        paged.extend(items(&page).iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(paged.len() < 10, "the cursor does not end: {page}");
    }
    assert_eq!(paged[..], items(&history)[..]);

    // Human output: one line per entry, with its action and target (and who).
    let out = sb.run(&["audit", "list", "--account", &account]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, (action, target)) in
        lines.iter().zip([("account.ban", &account), ("credential.create", &client_id), ("account.create", &account)])
    {
        assert!(line.contains(&format!("{action} {target}")), "{line:?} should show {action} {target}");
        assert!(line.contains(&format!("cli {actor}")), "{line:?}");
    }
    assert!(lines[0].contains("chargeback fraud"), "the ban's reason: {:?}", lines[0]);
    // A page that is not the last says how to go on.
    let out = sb.run(&["audit", "list", "--account", &account, "--limit", "1"]);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("account.ban"), "{stdout}");
    assert!(lines[1].contains(&format!("--cursor {}", first["next"].as_str().unwrap())), "{stdout}");
    let out = sb.run(&["audit", "list", "--actor", "nobody@nowhere"]);
    assert_eq!(text(&out.stdout).trim(), "no audit entries");

    // Bad filters: a non-zero exit saying what is wrong.
    let err = sb.fails(&["audit", "list", "--from", "yesterday"]);
    assert!(err.contains("from must be an RFC 3339 time") && err.contains("Unix milliseconds"), "{err}");
    let err = sb.fails(&["audit", "list", "--action", "nope"]);
    assert!(err.contains("action must be one of"), "{err}");
    let err = sb.fails(&["audit", "list", "--account", "nope"]);
    assert!(err.contains("account must be an accountId"), "{err}");
    let err = sb.fails(&["audit", "list", "--cursor", "abc"]);
    assert!(err.contains("cursor"), "{err}");
    let err = sb.fails(&["audit", "list", "--limit", "0"]);
    assert!(err.contains("limit"), "{err}");
}

#[tokio::test]
async fn audit_list_shows_admin_api_changes_of_a_running_server() {
    let sb = Sandbox::with_database();
    let admin = admin_token();
    let server = sb.start(&["--admin-token", &admin], &[]).await;

    let r = server.admin(&admin, "POST", "/accounts", Some(json!({"email": "api@example.com"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let account = r.body["data"]["id"].as_str().unwrap().to_owned();
    let r = server.admin(&admin, "POST", &format!("/accounts/{account}/ban"), Some(json!({"reason": "spam"}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The CLI's own change, next to the server's.
    sb.json(&["account", "unban", &account]);

    let history = sb.json(&["audit", "list", "--account", &account]);
    assert_eq!(actions(&history), ["account.unban", "account.ban", "account.create"], "{history}");
    let list = items(&history);
    assert_eq!((list[0]["actorKind"].as_str(), list[0]["actor"].as_str()), (Some("cli"), Some(cli_actor().as_str())));
    for e in &list[1..] {
        assert_eq!(e["actorKind"], "admin_token", "{e}");
        assert_eq!(e["actor"], "admin token", "{e}");
        assert_eq!(e["sourceIp"], "127.0.0.1", "{e}");
        assert!(e["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{e}");
    }
    let by_token = sb.json(&["audit", "list", "--actor", "admin token"]);
    assert_eq!(items(&by_token)[..], list[1..]);
    let out = sb.run(&["audit", "list", "--account", &account]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().nth(1).is_some_and(|l| l.contains("admin_token admin token") && l.ends_with("from 127.0.0.1")),
        "{stdout}"
    );

    // The admin API reads the same entries, in its envelope.
    let r = server.admin(&admin, "GET", &format!("/audit?account={account}&limit=2"), None).await;
    assert_eq!((r.status, r.code()), (200, 1000), "{r:?}");
    assert_eq!(r.body["data"].as_array().unwrap()[..], list[..2], "{r:?}");
    let next = r.body["next"].as_str().unwrap_or_else(|| panic!("a next cursor: {r:?}")).to_owned();
    let cli_next = sb.json(&["audit", "list", "--account", &account, "--limit", "2"]);
    assert_eq!(cli_next["next"], next.as_str());
    let r = server.admin(&admin, "GET", &format!("/audit?account={account}&cursor={next}"), None).await;
    assert_eq!(r.body["data"].as_array().unwrap()[..], list[2..], "{r:?}");
    assert!(r.body.get("next").is_none_or(Value::is_null), "{r:?}");
    let r = server.admin(&admin, "GET", "/audit?action=nope", None).await;
    assert_eq!((r.status, r.code()), (400, 1003), "{r:?}");
}
