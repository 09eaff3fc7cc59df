//! The operator's side of the binary: admin commands never create a database and say which one
//! they looked for, errors are a cause chain (a backtrace only when asked), the help texts, the
//! rotate answer, shell completions and the version.

use std::process::Output;

use crate::support::{Sandbox, now_ms, text};

/// Every admin command group, with arguments that would be valid on a real database.
const ADMIN_COMMANDS: &[&[&str]] = &[
    &["account", "list"],
    &["account", "show", "0123456789abcdef01234567"],
    &["credential", "list", "--account", "0123456789abcdef01234567"],
    &["credential", "revoke", "0123456789abcdef01234567"],
    &["signing-key", "list"],
    &["admin-token", "reset"],
];

const POINTERS: [&str; 3] = ["--database-url", "KEYGATE_DATABASE_URL", "--config"];

fn stderr_of(out: &Output) -> String {
    text(&out.stderr)
}

fn files_in(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(sb.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn admin_commands_never_create_a_database() {
    let sb = Sandbox::new();
    let db = sb.path("keygate.db");
    for args in ADMIN_COMMANDS {
        let out = sb.run(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout: {out:?}");
        // The URL it looked for, the file that URL means from here, and how to point elsewhere.
        assert!(err.starts_with("error: opening database sqlite://keygate.db ("), "{args:?}: {err}");
        assert!(err.contains(&format!("database file {} does not exist", db.display())), "{args:?}: {err}");
        assert!(err.contains("keygate migrate"), "{args:?}: {err}");
        for pointer in POINTERS {
            assert!(err.contains(pointer), "{args:?}: no {pointer} in {err}");
        }
        assert_eq!(files_in(&sb), Vec::<String>::new(), "{args:?} left files behind");
    }

    // A database without its master key file: refused, and no new key is made up.
    assert!(sb.run(&["migrate"]).status.success());
    std::fs::rename(sb.path("keygate.key"), sb.path("keygate.key.bak")).unwrap();
    for args in ADMIN_COMMANDS {
        let err = sb.fails(args);
        assert!(err.contains("opening database sqlite://keygate.db"), "{args:?}: {err}");
        let key = sb.path("keygate.key");
        assert!(err.contains(&format!("master key file {} does not exist", key.display())), "{args:?}: {err}");
        assert!(!key.exists(), "{args:?} created a master key");
    }
    std::fs::rename(sb.path("keygate.key.bak"), sb.path("keygate.key")).unwrap();
    assert_eq!(sb.json(&["account", "list"]), serde_json::json!([]));

    // A file that is no keygate database.
    std::fs::write(sb.path("empty.db"), "").unwrap();
    let err = sb.fails(&["--database-url", "sqlite://empty.db", "--master-key-file", "keygate.key", "account", "list"]);
    assert!(err.contains("no keygate schema") && err.contains("keygate migrate"), "{err}");
}

#[test]
fn a_database_url_with_a_password_is_named_without_it() {
    let sb = Sandbox::new();
    let url = "postgres://keygate:hunter2-secret@127.0.0.1:1/keygate";
    let out = sb
        .cmd()
        .args(["--database-url", url, "account", "list"])
        .env("KEYGATE_MASTER_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(err.contains("opening database postgres://keygate:***@127.0.0.1:1/keygate"), "{err}");
    assert!(err.contains("Connection refused") || err.contains("connection refused"), "{err}");
    assert!(!err.contains("hunter2"), "the password is shown: {err}");
}

#[test]
fn store_errors_name_the_database() {
    let sb = Sandbox::with_database();
    let unknown = "0123456789abcdef01234567";
    for args in [&["credential", "revoke", unknown][..], &["account", "ban", unknown]] {
        let err = sb.fails(args);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains("not found"), "{args:?}: {err}");
        assert!(
            first.contains(&format!("in database sqlite://keygate.db ({})", sb.path("keygate.db").display())),
            "{args:?}: {err}"
        );
        let hint = err.lines().find(|l| l.starts_with("hint: ")).unwrap_or_else(|| panic!("no hint: {err}"));
        for pointer in POINTERS {
            assert!(hint.contains(pointer), "{args:?}: no {pointer} in {hint}");
        }
    }
    sb.create_account("dup@example.com");
    let err = sb.fails(&["account", "create", "--email", "dup@example.com"]);
    assert!(err.contains("already exists") && err.contains("in database sqlite://keygate.db"), "{err}");
    // An error that has nothing to do with the database does not pretend it has.
    let err = sb.fails(&["account", "show", "zzz"]);
    assert!(!err.contains("database"), "{err}");
}

#[test]
fn errors_are_a_cause_chain_and_a_backtrace_only_when_asked() {
    let sb = Sandbox::new();
    let is_frame = |l: &str| {
        let t = l.trim_start();
        t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    for env in [&[("RUST_BACKTRACE", "1")][..], &[("RUST_BACKTRACE", "full"), ("RUST_LIB_BACKTRACE", "1")], &[]] {
        let out = sb.cmd().args(["account", "list"]).envs(env.iter().copied()).output().unwrap();
        let err = stderr_of(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines[0].starts_with("error: "), "{env:?}: {err}");
        assert!(lines[1].starts_with("caused by: "), "{env:?}: {err}");
        assert!(lines[2..].iter().all(|l| l.starts_with("caused by: ") || l.starts_with("hint: ")), "{env:?}: {err}");
        assert!(!err.contains("backtrace") && !err.contains("Stack") && !lines.iter().any(|l| is_frame(l)), "{err}");
    }
    let asked = [
        (&["-v", "account", "list"][..], &[][..]),
        (&["account", "list", "--verbose"], &[("RUST_BACKTRACE", "1")]),
        (&["account", "list"], &[("RUST_LOG", "debug")]),
    ];
    for (args, env) in asked {
        let out = sb.cmd().args(args).envs(env.iter().copied()).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {err}");
        assert!(err.contains("error: opening database") && err.contains("caused by: "), "{args:?} {env:?}: {err}");
        let trace = err.split_once("\nbacktrace:\n").map(|(_, t)| t).unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(trace.lines().filter(|l| is_frame(l)).count() >= 3, "{args:?} {env:?}: {err}");
    }
    assert_eq!(files_in(&sb), Vec::<String>::new());
}

#[test]
fn help_texts_describe_every_argument() {
    let sb = Sandbox::new();
    let help = |args: &[&str]| {
        let out = sb.run(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        text(&out.stdout)
    };
    let rotate = help(&["credential", "rotate", "--help"]);
    assert!(!rotate.contains("[default: none]") && !rotate.contains("[default: 0s]"), "{rotate}");
    assert!(rotate.contains("--grace <DURATION>") && rotate.contains("stop at once"), "{rotate}");
    // Every argument and option line carries a description.
    for (args, must) in [
        (&["credential", "rotate", "--help"][..], &["<CLIENT_ID>  The credential's clientId"][..]),
        (&["credential", "show", "--help"], &["<CLIENT_ID>  The credential's clientId"]),
        (&["credential", "revoke", "--help"], &["<CLIENT_ID>  The credential's clientId"]),
        (&["credential", "create", "--help"], &["--account <ACCOUNT_ID>  The id of the account"]),
        (&["credential", "list", "--help"], &["--account <ACCOUNT_ID>  The id of the account"]),
        (&["account", "show", "--help"], &["<ID>  The account's id"]),
        (&["account", "ban", "--help"], &["<ID>  The account's id", "--reason <REASON>  Why"]),
        (&["account", "create", "--help"], &["--email <EMAIL>  The account's email"]),
        (&["signing-key", "retire", "--help"], &["<KID>  The key id"]),
    ] {
        let h = help(args);
        let squeezed: String = h.split_whitespace().collect::<Vec<_>>().join(" ");
        for m in must {
            let m: String = m.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(squeezed.contains(&m), "{args:?}: no {m:?} in\n{h}");
        }
    }
}

#[test]
fn rotate_says_until_when_the_old_key_works() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("rotate@example.com");
    let (client, _) = sb.create_credential(&account);
    let now = now_ms();

    let rotated = sb.json(&["credential", "rotate", &client, "--grace", "24h"]);
    let until = rotated["oldKeyExpiresAt"].as_i64().unwrap_or_else(|| panic!("{rotated}"));
    assert!((until - (now + 86_400_000)).abs() < 60_000, "{rotated}");
    let rotated = sb.json(&["credential", "rotate", &client]);
    assert!(rotated["oldKeyExpiresAt"].is_null(), "{rotated}");

    let out = sb.run(&["credential", "rotate", &client, "--grace", "1h"]);
    let human = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let line = human.lines().find(|l| l.contains("keeps working until")).unwrap_or_else(|| panic!("{human}"));
    // An RFC 3339 time, an hour from now.
    let soon = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    assert!(line.contains(&soon.to_string()[..10]) && line.ends_with("Z."), "{line}");
    let human = text(&sb.run(&["credential", "rotate", &client]).stdout);
    assert!(human.contains("stopped working now"), "{human}");
}

#[test]
fn completions_for_every_shell() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sb.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        for word in ["keygate", "credential", "rotate", "grace", "signing-key"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let bash = sb.run(&["completions", "bash"]).stdout;
    let path = sb.path("keygate.bash");
    std::fs::write(&path, bash).unwrap();
    let check = std::process::Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    std::fs::remove_file(&path).unwrap();
    assert!(!sb.run(&["completions", "tcsh"]).status.success());
    assert_eq!(files_in(&sb), Vec::<String>::new(), "completions touched the directory");
}

#[test]
fn version_names_the_git_revision() {
    let sb = Sandbox::new();
    let out = sb.run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let version = text(&out.stdout);
    assert!(version.starts_with(&format!("keygate {} (", env!("CARGO_PKG_VERSION"))), "{version}");
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(g) if g.status.success() => {
            let rev = text(&g.stdout).trim().to_owned();
            assert_eq!(version.trim(), format!("keygate {} ({rev})", env!("CARGO_PKG_VERSION")));
        }
        _ => assert!(version.contains("(unknown revision)"), "{version}"),
    }
}
