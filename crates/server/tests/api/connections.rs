//! Connections cannot hold the server: a silent socket, an idle HTTP/1 or HTTP/2 connection and a
//! stalled request body are closed after their timeouts, and past `max_connections` a new
//! connection gets a quick 503 instead of waiting (the server keeps accepting, and serves again
//! once connections close).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

const SHORT: Duration = Duration::from_millis(300);

/// Reads until the server closes the connection (at most 5 s); what it sent and when it closed.
async fn until_closed(conn: &mut TcpStream) -> (Duration, String) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection is still open after 5 s (read so far: {:?})", String::from_utf8_lossy(&got));
    (started.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let app = TestApp::spawn_with(|c| c.header_read_timeout = SHORT).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let (took, got) = until_closed(&mut silent).await;
    assert!(took >= SHORT - Duration::from_millis(50), "closed after {took:?}, before the timeout");
    assert!(got.is_empty(), "nothing is answered to a client that asked nothing: {got:?}");
    assert_eq!(app.send(app.client.get(app.url("/healthz"))).await.status, 200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timer is long here: the idle timeout is what closes the connection.
    let app = TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_secs(20);
        c.idle_timeout = SHORT;
    })
    .await;
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes()).await.unwrap();
    let (took, got) = until_closed(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(took >= SHORT - Duration::from_millis(50) && took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn an_http2_connection_that_only_says_hello_is_closed() {
    let app = TestApp::spawn_with(|c| c.idle_timeout = SHORT).await;
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    // The client preface, an empty SETTINGS frame, then silence.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    conn.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
    let (took, _) = until_closed(&mut conn).await;
    assert!(took >= SHORT - Duration::from_millis(50), "closed after {took:?}, before the timeout");
}

#[tokio::test]
async fn a_request_body_that_stalls_answers_408() {
    let app = TestApp::spawn_with(|c| c.body_read_timeout = SHORT).await;
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/open/v3/getToken HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        app.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (took, got) = until_closed(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":1408"#), "{got}");
    assert!(took >= SHORT - Duration::from_millis(50), "answered after {took:?}, before the timeout");
}

#[tokio::test]
async fn past_max_connections_a_new_connection_gets_503_and_service_resumes() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections = Some(4);
        c.header_read_timeout = Duration::from_secs(20);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The acceptor counts them as it accepts: give it the moment it needs.
    let started = Instant::now();
    let refused = loop {
        let mut extra = TcpStream::connect(app.addr).await.unwrap();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", app.addr);
        extra.write_all(request.as_bytes()).await.unwrap();
        let (_, got) = until_closed(&mut extra).await;
        if got.starts_with("HTTP/1.1 503") {
            break got;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never refused: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.contains(r#""code":1503"#), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The held connections go away; the server serves again.
    drop(held);
    let started = Instant::now();
    loop {
        if let Ok(r) = app.client.get(app.url("/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the server did not serve again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
