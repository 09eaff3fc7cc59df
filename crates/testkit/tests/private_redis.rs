//! The private Redis (`scripts/private-redis.sh` through `PrivateRedis`): it answers, a kill
//! closes its port, a resume brings it back on the same URL, and dropping it stops it and
//! removes its directory. Spoken to with raw RESP over TCP (no Redis client crate).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use keygate_testkit::PrivateRedis;

/// The address in a `redis://127.0.0.1:PORT` URL.
fn addr(url: &str) -> SocketAddr {
    url.strip_prefix("redis://").expect("a redis:// URL").parse().expect("a host:port")
}

/// Sends `PING` and returns the reply line (`+PONG`), or the connection error.
fn ping(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"PING\r\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// The server's directory: the `keygate-test-redis-*` one under the temp dir whose `port` file
/// holds this port.
fn dir_of(port: u16) -> Option<PathBuf> {
    std::fs::read_dir(std::env::temp_dir()).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("keygate-test-redis-"))
            && std::fs::read_to_string(p.join("port")).is_ok_and(|s| s.trim() == port.to_string())
    })
}

#[test]
fn start_kill_resume_drop() {
    let redis = match PrivateRedis::start() {
        Ok(r) => r,
        Err(why) if why.contains("no redis-server") => keygate_testkit::skip_or_fail!(
            "redis-server is not installed (scripts/test.sh installs Debian's `redis-server`): {why}"
        ),
        Err(why) => panic!("starting a private Redis: {why}"),
    };
    let url = redis.url.clone();
    let a = addr(&url);
    assert!(a.ip().is_loopback(), "{url}");
    assert_ne!(a.port(), 6379, "never the machine's own Redis port");
    assert_eq!(ping(a).expect("PING the private Redis"), "+PONG");
    let dir = dir_of(a.port()).expect("the private Redis's directory");
    assert!(dir.join("redis.pid").is_file(), "{}", dir.display());

    // A crash: the port is closed when kill returns.
    redis.kill();
    let err = ping(a).expect_err("a killed Redis must not answer");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(dir.is_dir(), "kill keeps the directory");

    // Back on the same URL.
    redis.resume();
    assert_eq!(redis.url, url);
    assert_eq!(ping(a).expect("PING the resumed Redis"), "+PONG");

    drop(redis);
    assert!(!dir.exists(), "{} must be removed on drop", dir.display());
    let err = ping(a).expect_err("a dropped Redis must not answer");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
