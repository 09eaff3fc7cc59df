//! The configuration file: `toml::from_str::<keygate_server::Config>` then `Config::validate`, and
//! the settings derived from it; plus the parsers of the values that flags and `KEYGATE_*`
//! variables carry (each line of the input): enums by name, upstream URLs, networks, the master
//! key's hex. Nothing here may panic; `validate` is what may refuse.
//! Invariants: a valid configuration gives its gateway settings and master key source; a master
//! key read from hex prints back to the same (lowercase) hex.
#![no_main]

use keygate_auth::StatusMode;
use keygate_auth::ratelimit::FailMode;
use keygate_console::SecureCookies;
use keygate_core::MasterKey;
use keygate_core::net::Cidr;
use keygate_gateway::Upstream;
use keygate_server::Config;
use keygate_server::config::LogFormat;
use libfuzzer_sys::fuzz_target;

fn check_config(text: &str) {
    let Ok(config) = toml::from_str::<Config>(text) else { return };
    let valid = config.validate();
    // What start-up hands each part (no IO: not `limits()`, which raises the open-file limit).
    let _ = config.auth_settings();
    let _ = config.console_settings();
    let proxies = config.trusted_proxies();
    assert_eq!(proxies.is_empty(), config.trusted_proxies.is_empty());
    let gateway = config.gateway();
    let source = config.master_key_source();
    if valid.is_ok() {
        let gateway = gateway.expect("a valid configuration has a gateway configuration");
        assert!(source.is_ok());
        if let Some(g) = gateway {
            assert!(!g.routes.is_empty() && g.routes.iter().all(|r| r.prefix.starts_with('/')));
            assert!(g.routes.windows(2).all(|w| w[0].prefix.len() >= w[1].prefix.len()));
            for r in &g.routes {
                let _ = (r.matches("/"), r.matches(&r.prefix), r.matches("/v1/x"));
            }
        }
    }
    let _ = format!("{config:?}");
}

fn check_value(s: &str) {
    let _ = s.parse::<LogFormat>();
    let _ = s.parse::<StatusMode>();
    let _ = s.parse::<FailMode>();
    let _ = s.parse::<SecureCookies>();
    let _ = s.parse::<Cidr>();
    if let Ok(u) = s.parse::<Upstream>() {
        assert!(u.base_path.is_empty() || (u.base_path.starts_with('/') && !u.base_path.ends_with('/')));
    }
    if let Ok(k) = MasterKey::from_hex(s) {
        let hex = k.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(MasterKey::from_hex(&hex).ok().map(|k| k.to_hex()), Some(hex.clone()));
        assert!(hex.eq_ignore_ascii_case(s.trim()), "{s:?} read as {hex}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_config(text);
    for line in text.lines().take(16) {
        check_value(line);
        // A `key = "value"` line: its value as a flag or variable would carry it.
        if let Some((_, v)) = line.split_once('=') {
            check_value(v.trim().trim_matches('"'));
        }
    }
});
