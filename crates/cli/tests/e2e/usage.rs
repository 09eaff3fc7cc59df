//! `keygate usage export`: a server counts traffic (let in, and refused by a rate limit set with
//! the CLI) and flushes it into the SQLite file; the CLI, on the same file, exports it as CSV and
//! JSON for a credential and an account, and refuses bad periods saying why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Sandbox, now_ms, text};

/// `keygate usage export ARGS`: its standard output, asserting success.
fn export(sb: &Sandbox, args: &[&str]) -> String {
    let mut full = vec!["usage", "export"];
    full.extend_from_slice(args);
    let out = sb.run(&full);
    assert!(out.status.success(), "{full:?}: {}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// The CSV's rows summed over their starts: (client_id, outcome) -> (requests, credits).
fn rows(csv: &str) -> BTreeMap<(String, String), (u64, u64)> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("start,client_id,outcome,requests,credits"), "{csv}");
    let mut rows = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert!(f.len() == 5 && f[0].ends_with('Z') && f[0].len() == 20, "{line}");
        let e: &mut (u64, u64) = rows.entry((f[1].to_owned(), f[2].to_owned())).or_default();
        e.0 += f[3].parse::<u64>().unwrap();
        e.1 += f[4].parse::<u64>().unwrap();
    }
    rows
}

#[tokio::test]
async fn cli_usage_export() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("billing@example.com");
    let (limited, limited_key) = sb.create_credential(&account);
    let (other, other_key) = sb.create_credential(&account);
    sb.json(&["credential", "limits", &limited, "--ratelimit", "requests=2/1m"]);
    std::fs::write(sb.path("keygate.toml"), "usage_flush = \"100ms\"\n").unwrap();
    let server = sb.start(&["--config", "keygate.toml"], &[]).await;
    let mut codes = Vec::new();
    for key in [&limited_key, &limited_key, &limited_key, &other_key] {
        codes.push(server.verify_key(key).await.code());
    }
    assert_eq!(codes, [1000, 1000, 1005, 1000]);

    // The server flushes every 100 ms; the CLI reads the same file meanwhile.
    let one = || (limited.clone(), "1000".to_owned());
    let deadline = Instant::now() + Duration::from_secs(10);
    let csv = loop {
        let csv = export(&sb, &["--credential", &limited]);
        if rows(&csv).get(&one()) == Some(&(2, 0)) && rows(&csv).len() == 2 {
            break csv;
        }
        assert!(Instant::now() < deadline, "usage never showed: {csv}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows(&csv).get(&(limited.clone(), "1005".to_owned())), Some(&(1, 0)), "{csv}");
    assert!(csv.ends_with('\n'));

    // An account: each credential's lines, by hour as well.
    let account_rows = rows(&export(&sb, &["--account", &account, "--granularity", "hour"]));
    assert_eq!(
        account_rows,
        BTreeMap::from([
            ((limited.clone(), "1000".to_owned()), (2, 0)),
            ((limited.clone(), "1005".to_owned()), (1, 0)),
            ((other.clone(), "1000".to_owned()), (1, 0)),
        ])
    );

    // JSON (--format json, or --json): what the admin API answers in `data`.
    for args in [
        &["usage", "export", "--account", &account, "--format", "json"][..],
        &["--json", "usage", "export", "--account", &account],
    ] {
        let out = sb.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let days: Value = serde_json::from_slice(&out.stdout).unwrap();
        let total: u64 = days.as_array().unwrap().iter().map(|d| d["total"].as_u64().unwrap()).sum();
        let let_in: u64 = days.as_array().unwrap().iter().map(|d| d["requests"]["1000"].as_u64().unwrap_or(0)).sum();
        assert_eq!((total, let_in), (4, 3), "{days}");
        assert!(days[0]["start"].as_i64().unwrap() % 86_400_000 == 0, "{days}");
    }

    // Periods: RFC 3339, dates and Unix ms; an empty one has only the header.
    let now = now_ms();
    let from = (now - 86_400_000).to_string();
    assert_eq!(rows(&export(&sb, &["--credential", &limited, "--from", &from])), rows(&csv));
    let header = "start,client_id,outcome,requests,credits\n";
    assert_eq!(
        export(&sb, &["--credential", &limited, "--from", "2020-01-01", "--to", "2020-01-31T00:00:00Z"]),
        header
    );

    // Bad input says what is wrong.
    for (args, needle) in [
        (vec!["--credential", &limited, "--from", "yesterday"], "from must be an RFC 3339 time"),
        (vec!["--credential", &limited, "--granularity", "hour", "--from", "2020-01-01"], "kept for the last 7 days"),
        (vec!["--account", &account, "--from", "2020-01-01", "--to", "2022-01-01"], "at most 366 days"),
        (vec!["--credential", "0123456789abcdef01234567"], "credential not found"),
        (vec!["--account", "0123456789abcdef01234567"], "account not found"),
        (vec!["--credential", "nope"], "clientId must be 24 lowercase hexadecimal characters"),
        (vec!["--from", "2020-01-01"], "--credential <CLIENT_ID>|--account <ACCOUNT_ID>"),
        (vec!["--credential", &limited, "--account", &account], "cannot be used with"),
        (vec!["--credential", &limited, "--granularity", "week"], "possible values: day, hour"),
    ] {
        let mut full = vec!["usage", "export"];
        full.extend_from_slice(&args);
        let err = sb.fails(&full);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    drop(server);
}
