//! `Cidr::from_str` (the `trusted_proxies` setting) and `TrustedProxies::client` (the client behind
//! trusted proxies, from `X-Forwarded-For` values a client can write).
//! Invariants: a parsed network prints to text that parses to the same network and contains its own
//! address; the client found is the peer (untrusted peer), or the peer or an address written in the
//! headers (trusted peer), and it is untrusted unless every hop is trusted.
//! Input: a line with the TCP peer's address (unreadable: 127.0.0.1), a line of networks separated by
//! spaces (the trusted proxies), then one `X-Forwarded-For` value a line. Every network and every
//! value is also read as a `Cidr`.
#![no_main]

use std::net::IpAddr;

use keygate_core::net::{Cidr, TrustedProxies};
use libfuzzer_sys::fuzz_target;

fn check_cidr(s: &str) -> Option<Cidr> {
    let c = s.parse::<Cidr>().ok()?;
    let shown = c.to_string();
    let again: Cidr = shown.parse().unwrap_or_else(|e| panic!("{s:?} -> {shown:?} does not parse: {e}"));
    assert_eq!(again, c, "{s:?} -> {shown:?}");
    let (addr, prefix) = shown.rsplit_once('/').expect("shown with a prefix");
    let addr: IpAddr = addr.parse().expect("shown address parses");
    let prefix: u8 = prefix.parse().expect("shown prefix parses");
    assert!(prefix <= if addr.is_ipv4() { 32 } else { 128 });
    assert!(c.contains(addr), "{shown} does not contain its own address");
    assert_eq!(c.contains(addr.to_canonical()), c.contains(addr));
    if let IpAddr::V4(v4) = addr {
        assert!(c.contains(IpAddr::V6(v4.to_ipv6_mapped())), "{shown}: mapped form of its address");
    }
    // Through serde as the configuration file reads it.
    let from_toml: Cidr = serde_json::from_value(serde_json::Value::from(s)).expect("serde agrees with FromStr");
    assert_eq!(from_toml, c);
    Some(c)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let peer_line = lines.next().unwrap_or_default();
    let network_line = lines.next().unwrap_or_default();
    let values: Vec<&str> = lines.take(16).collect();
    let peer: IpAddr = peer_line.trim().parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let networks: Vec<Cidr> = network_line.split(' ').take(16).filter_map(check_cidr).collect();
    for s in &values {
        check_cidr(s);
        for entry in s.split(',').take(16) {
            check_cidr(entry);
        }
    }
    let proxies = TrustedProxies::new(networks);
    let found = proxies.client(peer, values.iter().copied());
    if !proxies.contains(peer) {
        assert!(!found.via_proxy);
        assert_eq!(found.ip, peer.to_canonical());
        return;
    }
    assert!(found.via_proxy);
    assert_eq!(found.ip, found.ip.to_canonical());
    let written: Vec<IpAddr> = values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|e| e.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    assert!(found.ip == peer.to_canonical() || written.contains(&found.ip), "{found:?} came from nowhere");
    if !proxies.contains(found.ip) {
        // The rightmost untrusted address: everything to its right is a trusted proxy.
        let right: Vec<IpAddr> = values
            .iter()
            .flat_map(|v| v.split(','))
            .rev()
            .map_while(|e| e.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
            .take_while(|ip| *ip != found.ip)
            .collect();
        assert!(right.iter().all(|ip| proxies.contains(ip.to_canonical())));
    }
    // The headers as one comma-joined value say the same.
    let joined = values.join(",");
    assert_eq!(proxies.client(peer, std::iter::once(joined.as_str())), found);
});
