//! Acknowledged writes survive `kill -9`: what the admin API answered 2xx for is there after a
//! restart on the same database.

use serde_json::json;

use crate::support::{Sandbox, admin_token};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let sb = Sandbox::with_database();
    let admin = admin_token();
    let cli_account = sb.create_account("cli@example.com");
    let (cli_client, cli_key) = sb.create_credential(&cli_account);

    let mut server = sb.start(&["--admin-token", &admin], &[]).await;
    assert_eq!(server.verify_key(&cli_key).await.code(), 1000);

    // An account and two credentials through the admin API; the second is revoked.
    let r = server.admin(&admin, "POST", "/accounts", Some(json!({"email": "http@example.com"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let account = r.body["data"]["id"].as_str().unwrap().to_owned();

    let path = format!("/accounts/{account}/credentials");
    let r = server.admin(&admin, "POST", &path, None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let revoked_client = r.body["data"]["clientId"].as_str().unwrap().to_owned();
    let revoked_key = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    // Used once, so the server has it cached as valid before the revoke.
    assert_eq!(server.verify_key(&revoked_key).await.code(), 1000);
    let r = server.admin(&admin, "POST", &format!("/credentials/{revoked_client}/revoke"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["data"]["status"], "revoked");

    let r = server.admin(&admin, "POST", &path, None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let http_client = r.body["data"]["clientId"].as_str().unwrap().to_owned();
    let http_key = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    // No more requests: SIGKILL right after the 201.
    server.kill9();
    let killed = server.wait_timeout(std::time::Duration::ZERO);
    assert!(killed.is_some_and(|s| s.code().is_none()), "the server should have died of SIGKILL: {killed:?}");
    drop(server);

    let server = sb.start(&["--admin-token", &admin], &[]).await;
    let r = server.verify_key(&http_key).await;
    assert_eq!(r.code(), 1000, "key created over HTTP before kill -9: {r:?}");
    assert_eq!(r.body["data"]["clientId"], http_client.as_str());
    assert_eq!(r.body["data"]["accountId"], account.as_str());
    let token = server.token(&http_client, &http_key).await;
    assert_eq!(server.verify_bearer(&token).await.code(), 1000);

    let r = server.verify_key(&revoked_key).await;
    assert_eq!(r.code(), 1101, "key revoked over HTTP before kill -9: {r:?}");
    assert_eq!(r.status, 401);
    assert_eq!(server.get_token(&revoked_client, &revoked_key).await.code(), 1101);

    assert_eq!(server.verify_key(&cli_key).await.code(), 1000);
    assert_eq!(sb.json(&["credential", "show", &cli_client])["status"], "active");
    assert_eq!(sb.json(&["credential", "show", &revoked_client])["status"], "revoked");
    let listed = sb.json(&["credential", "list", "--account", &account]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}
