//! Who the client is when proxies stand in between: the TCP peer, unless the peer is one of the
//! configured trusted proxies (`trusted_proxies`), in which case the address that the nearest
//! untrusted hop is, read from the right of `X-Forwarded-For` (each proxy appends the address it
//! saw; a client can write anything to the left of what the first trusted proxy appended, nothing
//! to the right of it). RFC 7239 names the problem; `X-Forwarded-For` is what nginx, Caddy and
//! load balancers send.

use std::net::IpAddr;

/// A network in CIDR form, `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or a network like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) as the
/// IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Request-Id` are believed.
/// Empty (the default): none; every client is its TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

/// The client of a request, as far as it can be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the TCP peer is a trusted proxy (whose forwarding headers are believed).
    pub via_proxy: bool,
}

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> Self {
        Self(networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request from `peer` carrying these `X-Forwarded-For` header values (in
    /// order). From a trusted peer: the rightmost address that is not a trusted proxy (every
    /// address trusted: the leftmost); an unreadable entry stops the walk at the hop after it.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> ClientAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return ClientAddr { ip: peer, via_proxy: false };
        }
        let mut client = peer;
        for value in forwarded_for.rev() {
            for entry in value.rsplit(',') {
                match entry.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = canonical(ip);
                        if !self.contains(client) {
                            return ClientAddr { ip: client, via_proxy: true };
                        }
                    }
                    Err(_) => return ClientAddr { ip: client, via_proxy: true },
                }
            }
        }
        ClientAddr { ip: client, via_proxy: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn networks() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.1.2.3")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")), "IPv4 written as IPv6");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0", "localhost", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let none = TrustedProxies::default();
        // Nobody trusted: the peer, whatever the headers say.
        assert_eq!(
            none.client(ip("127.0.0.1"), ["6.6.6.6"].into_iter()),
            ClientAddr { ip: ip("127.0.0.1"), via_proxy: false }
        );
        let t = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // An untrusted peer's headers count for nothing.
        assert_eq!(t.client(ip("9.9.9.9"), ["6.6.6.6"].into_iter()).ip, ip("9.9.9.9"));
        // nginx on loopback appended the client it saw; what the client wrote before is ignored.
        assert_eq!(
            t.client(ip("127.0.0.1"), ["6.6.6.6, 1.2.3.4"].into_iter()),
            ClientAddr { ip: ip("1.2.3.4"), via_proxy: true }
        );
        // Two trusted hops (a load balancer, then nginx): skipped from the right.
        assert_eq!(t.client(ip("127.0.0.1"), ["6.6.6.6, 1.2.3.4", "10.0.0.5"].into_iter()).ip, ip("1.2.3.4"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("127.0.0.1"), std::iter::empty()).ip, ip("127.0.0.1"));
        // An unreadable entry stops the walk at the hop that appended it.
        assert_eq!(t.client(ip("127.0.0.1"), ["1.2.3.4, garbage, 10.0.0.7"].into_iter()).ip, ip("10.0.0.7"));
    }
}
