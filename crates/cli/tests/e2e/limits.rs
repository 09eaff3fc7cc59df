//! The probe's denial of service, replayed: with the open-file limit at 200, 250 sockets that
//! send nothing must neither make the server stop answering nor exhaust its file descriptors.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::{Sandbox, client, free_port};

#[tokio::test]
async fn silent_sockets_cannot_exhaust_file_descriptors() {
    let sb = Sandbox::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server =
        sb.spawn_with_fd_limit(200, &["serve", "--listen", &listen, "--header-read-timeout", "2s"], &[], port);
    server.wait_ready().await.expect("the server starts under a 200-file limit");

    let mut silent = Vec::new();
    for _ in 0..250 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            silent.push(s);
        }
    }
    // While they are open: an answer at once (503 while the connection slots are taken), no hang.
    let http = client();
    let started = Instant::now();
    let r = http.get(server.url("/healthz")).timeout(Duration::from_secs(2)).send().await;
    let status = r.expect("/healthz answers while 250 silent sockets are open").status().as_u16();
    assert!(status == 200 || status == 503, "status {status}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // After the header timeout the server has closed them, and serves as before.
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(server.url("/healthz")).timeout(Duration::from_secs(2)).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "/healthz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each was closed by the server: refused at once (a 503) or after the header timeout (nothing).
    let (mut closed, mut refused) = (0, 0);
    for s in &mut silent {
        let mut got = Vec::new();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), s.read_to_end(&mut got)).await {
            closed += 1;
            refused += usize::from(got.starts_with(b"HTTP/1.1 503"));
        }
    }
    eprintln!("{closed} of 250 silent sockets closed by the server, {refused} of them with a 503");
    let silent_count = silent.len();
    drop(silent);
    server.stop();
    let log = server.stderr_text();
    assert_eq!(closed, silent_count, "silent sockets left open by the server\n{log}");
    assert!(!log.contains("Too many open files"), "file descriptors ran out:\n{log}");
    assert!(log.contains("connection limit reached"), "the limit is logged:\n{log}");
}
