//! Configuration precedence as the binary applies it: flag over `KEYGATE_*` environment over
//! the TOML file over defaults.

use std::time::Duration;

use crate::support::{Sandbox, client, free_port, jwt_part};

/// Whether something answers `/healthz` on the port.
async fn answers(port: u16) -> bool {
    client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Three distinct free ports.
fn three_ports() -> [u16; 3] {
    loop {
        let p = [free_port(), free_port(), free_port()];
        if p[0] != p[1] && p[1] != p[2] && p[0] != p[2] {
            return p;
        }
    }
}

/// Starts `keygate ARGS`, expects it to listen on `expect` and on none of `others`, stops it.
async fn listens_on(sb: &Sandbox, args: &[&str], envs: &[(&str, &str)], expect: u16, others: &[u16]) {
    let mut server = sb.spawn(args, envs, expect);
    if let Err(e) = server.wait_ready().await {
        panic!("expected the server on port {expect}: {e}");
    }
    for &p in others {
        assert!(!answers(p).await, "the server also answers on {p} (args {args:?}, env {envs:?})");
    }
    server.stop();
}

#[tokio::test]
async fn config_precedence_flag_env_file() {
    let sb = Sandbox::new();
    let [file_port, env_port, flag_port] = three_ports();
    let config = sb.path("keygate.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{file_port}\"\ntoken_ttl = \"1h\"\n")).unwrap();
    let config = config.to_str().unwrap();
    let env_listen = format!("127.0.0.1:{env_port}");
    let flag_listen = format!("127.0.0.1:{flag_port}");

    // File + environment + flag: the flag wins.
    listens_on(
        &sb,
        &["--config", config, "serve", "--listen", &flag_listen],
        &[("KEYGATE_LISTEN", &env_listen)],
        flag_port,
        &[file_port, env_port],
    )
    .await;

    // File + environment: the environment wins.
    listens_on(
        &sb,
        &["--config", config, "serve"],
        &[("KEYGATE_LISTEN", &env_listen)],
        env_port,
        &[file_port, flag_port],
    )
    .await;

    // File only: the file's port.
    listens_on(&sb, &["--config", config, "serve"], &[], file_port, &[env_port, flag_port]).await;

    // The file named by KEYGATE_CONFIG instead of --config.
    listens_on(&sb, &["serve"], &[("KEYGATE_CONFIG", config)], file_port, &[env_port, flag_port]).await;
}

#[test]
fn config_unknown_key_fails_naming_the_file() {
    let sb = Sandbox::new();
    let path = sb.path("typo.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n").unwrap();
    let path = path.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());

    let out = sb.cmd().args(["--config", path, "serve", "--listen", &listen]).output().unwrap();
    assert!(!out.status.success(), "serve started with an unknown key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path), "the message should name {path}: {err}");
    assert!(err.contains("listen_adress"), "the message should name the unknown key: {err}");
    assert!(!sb.path("keygate.db").exists(), "a bad config must fail before touching the database");

    // The same through KEYGATE_CONFIG, and for an admin command.
    let out = sb.cmd().args(["account", "list"]).env("KEYGATE_CONFIG", path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(path));

    // A config file that does not exist is named too.
    let err = sb.fails(&["--config", "missing.toml", "serve", "--listen", &listen]);
    assert!(err.contains("missing.toml"), "{err}");
}

#[tokio::test]
async fn serve_settings_from_env_and_flags() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("settings@example.com");
    let (client, key) = sb.create_credential(&account);

    // The flag's token lifetime beats the environment's; the environment sets the status mode.
    let mut server =
        sb.start(&["--token-ttl", "1h"], &[("KEYGATE_TOKEN_TTL", "2h"), ("KEYGATE_HTTP_STATUS", "always-200")]).await;
    let token = server.token(&client, &key).await;
    let claims = jwt_part(&token, 1);
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 3600, "{claims}");
    assert_eq!(claims["id"], account.as_str());
    assert_eq!(claims["email"], "settings@example.com");
    assert_eq!(claims["type"], "user");
    let r = server.get_token(&client, "kgk_wrong").await;
    assert_eq!((r.status, r.code()), (200, 1101), "always-200: {r:?}");
    server.stop();

    // Defaults: standard statuses, tokens valid for more than a year.
    let server = sb.start(&[], &[]).await;
    let r = server.get_token(&client, "kgk_wrong").await;
    assert_eq!((r.status, r.code()), (401, 1101), "{r:?}");
    let token = server.token(&client, &key).await;
    let claims = jwt_part(&token, 1);
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(ttl > 365 * 86_400, "{claims}");

    // Invalid settings fail before serving, naming the setting.
    let listen = format!("127.0.0.1:{}", free_port());
    let err = sb.fails(&["serve", "--listen", &listen, "--token-ttl", "soon"]);
    assert!(err.contains("token_ttl"), "{err}");
    let err = sb.fails(&["serve", "--listen", &listen, "--admin-token", "short"]);
    assert!(err.contains("admin token is too short"), "{err}");
    let err = sb.fails(&["serve", "--listen", "nowhere"]);
    assert!(err.contains("is not HOST:PORT"), "{err}");
}

#[test]
fn database_url_from_flag_and_env() {
    let sb = Sandbox::with_database();
    let id = sb.create_account("flag@example.com");
    let other = "sqlite://other.db";
    let env = |args: &[&str]| sb.cmd().args(args).env("KEYGATE_DATABASE_URL", other).output().unwrap();
    let out = env(&["migrate"]);
    assert!(out.status.success(), "{out:?}");
    assert!(sb.path("other.db").is_file() && sb.path("other.key").is_file());
    let out = env(&["--json", "account", "create", "--email", "env@example.com"]);
    assert!(out.status.success(), "{out:?}");

    let listed = sb.json(&["--database-url", other, "account", "list"]);
    let emails: Vec<&str> = listed.as_array().unwrap().iter().map(|a| a["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["env@example.com"]);
    let listed = sb.json(&["account", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // A master key that does not belong to the database is refused.
    let err = sb.fails(&["--database-url", other, "--master-key-file", "keygate.key", "account", "list"]);
    assert!(err.contains("master key does not match"), "{err}");
}
