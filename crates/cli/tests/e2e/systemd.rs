//! The shipped systemd unit, `examples/systemd/keygate.service`: its `ExecStart` line is run as
//! systemd would run it (in its `WorkingDirectory`, the state directory), with this build's binary
//! and a test directory in place of `/usr/local/bin/keygate`, `/etc/keygate` and
//! `/var/lib/keygate`, and the shipped `examples/keygate.toml` as the configuration (only its
//! `listen` moved to a free port). It must serve `/healthz`, put its database in the state
//! directory and stop cleanly on the unit's `KillSignal` within `TimeoutStopSec`.

use std::collections::BTreeMap;

use crate::support::{BIN, Sandbox, free_port};

const UNIT: &str = include_str!("../../../../examples/systemd/keygate.service");
const CONFIG: &str = include_str!("../../../../examples/keygate.toml");

/// The `[Service]` section's settings (a repeated key keeps every value).
fn service_section() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut settings: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut in_service = false;
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
            settings.entry(key).or_default().push(value);
        }
    }
    settings
}

fn one<'a>(settings: &BTreeMap<&str, Vec<&'a str>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("the unit should set {key}= once, got {other:?}"),
    }
}

#[tokio::test]
async fn the_systemd_unit_runs_keygate() {
    let service = service_section();
    // Hardened: no privileges, a read-only system, a private state directory of its own.
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "keygate"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(&service, key), value, "{key}");
    }
    let state_dir = one(&service, "WorkingDirectory");
    assert_eq!(state_dir, format!("/var/lib/{}", one(&service, "StateDirectory")), "state directory");
    let stop_timeout = humantime::parse_duration(one(&service, "TimeoutStopSec")).expect("TimeoutStopSec");

    let exec: Vec<&str> = one(&service, "ExecStart").split_whitespace().collect();
    assert!(!exec.iter().any(|w| w.contains(['"', '\'', '\\', '$', '%'])), "keep ExecStart plain: {exec:?}");
    assert_eq!(exec[0], "/usr/local/bin/keygate", "{exec:?}");
    let config_path = exec.iter().skip_while(|w| **w != "--config").nth(1).expect("ExecStart passes --config");
    assert!(config_path.starts_with("/etc/keygate/"), "{config_path}");

    // The state directory is the sandbox; the configuration directory a directory in it.
    let sb = Sandbox::new();
    let etc = tempfile::Builder::new().prefix("keygate-etc-").tempdir().unwrap();
    let config = etc.path().join(config_path.strip_prefix("/etc/keygate/").unwrap());
    let substitute = |word: &str| -> String {
        match word {
            "/usr/local/bin/keygate" => BIN.to_owned(),
            w if w == *config_path => config.display().to_string(),
            w => {
                assert!(!w.starts_with('/'), "ExecStart names a path the test does not substitute: {w}");
                w.to_owned()
            }
        }
    };
    let args: Vec<String> = exec[1..].iter().map(|w| substitute(w)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let listen_default = "listen = \"127.0.0.1:8080\"";
        assert_eq!(CONFIG.matches(listen_default).count(), 1, "examples/keygate.toml: {listen_default}");
        std::fs::write(&config, CONFIG.replace(listen_default, &format!("listen = \"127.0.0.1:{port}\""))).unwrap();
        let mut server = sb.spawn(&args, &[], port);
        match server.wait_ready().await {
            Ok(()) => {
                let health = server.http.get(server.url("/healthz")).send().await.unwrap();
                assert_eq!(health.status(), 200);
                // The default database and its key landed in the state directory.
                assert!(sb.path("keygate.db").is_file() && sb.path("keygate.key").is_file());
                let status = server.terminate(stop_timeout).unwrap_or_else(|| {
                    panic!("no exit within TimeoutStopSec={stop_timeout:?}: {}", server.output_text())
                });
                assert!(status.success(), "{status}: {}", server.output_text());
                verify_with_systemd(&config);
                return;
            }
            Err(e) if e.contains("binding") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("keygate did not start: {last}");
}

/// `systemd-analyze verify` on the unit with the test's binary, where systemd's tools are
/// installed (they are not needed to run keygate, so their absence only skips this check).
fn verify_with_systemd(config: &std::path::Path) {
    let available = std::process::Command::new("systemd-analyze").arg("--version").output();
    if !available.is_ok_and(|o| o.status.success()) {
        eprintln!("note: systemd-analyze is not installed; the unit's syntax was not verified by systemd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("keygate.service");
    let text =
        UNIT.replace("/usr/local/bin/keygate", BIN).replace("/etc/keygate/keygate.toml", &config.display().to_string());
    std::fs::write(&unit, text).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("keygate.service:"), "systemd-analyze verify:\n{said}");
}
