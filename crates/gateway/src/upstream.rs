//! Connections to one upstream, kept alive and reused: the gateway's connection pool.
//!
//! Each worker thread (the server's, see [`set_worker`]) has its own list of HTTP/1.1 connections to each
//! upstream, so a request, its upstream connection and that connection's task are all driven by
//! one thread; the list's lock is only ever taken by that thread. A request goes to the most
//! recently used connection that is idle (its previous response fully read); when every one is
//! busy, a new connection is opened and joins the list. Closed connections leave the list when
//! met; connections idle longer than [`IDLE_TIMEOUT`] are closed.
//!
//! A request that a pooled connection could not take (the upstream closed it meanwhile) is sent
//! again on another connection: it was never written, so this is safe for any method.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An idle upstream connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections kept per worker and upstream; past it, extra connections close after their request.
const MAX_POOLED: usize = 1024;
/// How often the idle timeout is enforced.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as worker `index` (1..=workers) of the server that serves the gateway: its
/// requests use that worker's connections, without locking against other threads. Threads not
/// marked share slot 0.
pub fn set_worker(index: usize) {
    WORKER.set(index);
}

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// Refused, reset, unreachable, closed mid-response, or a malformed response.
    Failed(String),
    /// The request's body failed on the client's side (the client went away mid-upload, or sent
    /// nothing for the body read timeout: `timeout`): not the upstream's fault.
    ClientBody { timeout: bool, cause: String },
}

impl From<hyper::Error> for UpstreamError {
    fn from(e: hyper::Error) -> Self {
        if e.is_user() {
            // A "user" error of the client connection: our own request body (the client's) failed.
            return Self::ClientBody { timeout: keygate_auth::body::is_body_timeout(&e), cause: e.to_string() };
        }
        Self::Failed(e.to_string())
    }
}

struct Pooled {
    sender: SendRequest<Body>,
    last_used: Instant,
}

#[derive(Default)]
struct Slot {
    conns: Vec<Pooled>,
    last_sweep: Option<Instant>,
}

pub struct UpstreamPool {
    authority: Authority,
    connect_timeout: Duration,
    /// Index: the worker of the thread (see [`set_worker`]).
    slots: Box<[Mutex<Slot>]>,
}

impl UpstreamPool {
    pub fn new(authority: Authority, connect_timeout: Duration, workers: usize) -> Self {
        Self { authority, connect_timeout, slots: (0..=workers).map(|_| Mutex::default()).collect() }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    fn slot(&self) -> &Mutex<Slot> {
        self.slots.get(WORKER.with(Cell::get)).unwrap_or(&self.slots[0])
    }

    /// Sends `req` (origin-form URI, `Host` set by the caller) and waits for the response headers.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        loop {
            // Hand the request to an idle pooled connection; the hand-over itself is synchronous,
            // so no other request can take the same connection in between.
            let sent = {
                let mut slot = self.slot().lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                sweep(&mut slot, now);
                let ready = loop {
                    match slot.conns.iter().rposition(|c| c.sender.is_ready() || c.sender.is_closed()) {
                        Some(i) if slot.conns[i].sender.is_closed() => {
                            slot.conns.swap_remove(i);
                        }
                        found => break found,
                    }
                };
                let Some(i) = ready else { break };
                // Most recently used last, so that idle ones age out at the front.
                let last = slot.conns.len() - 1;
                slot.conns.swap(i, last);
                let c = &mut slot.conns[last];
                c.last_used = now;
                c.sender.try_send_request(req)
            };
            match sent.await {
                Ok(res) => return Ok(res),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let sent = sender.try_send_request(req);
        {
            let mut slot = self.slot().lock().unwrap_or_else(|p| p.into_inner());
            if slot.conns.len() < MAX_POOLED {
                slot.conns.push(Pooled { sender, last_used: Instant::now() });
            }
        }
        sent.await.map_err(|e| e.into_error().into())
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, async {
            let mut last = None;
            for addr in tokio::net::lookup_host((host, port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("the host name resolved to no address")))
        })
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(|e| UpstreamError::Failed(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Failed(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Closes connections idle past [`IDLE_TIMEOUT`] (dropping the sender ends the connection).
fn sweep(slot: &mut Slot, now: Instant) {
    if slot.last_sweep.is_some_and(|t| now.duration_since(t) < SWEEP_EVERY) {
        return;
    }
    slot.last_sweep = Some(now);
    slot.conns.retain(|c| {
        let expired = c.sender.is_ready() && now - c.last_used > IDLE_TIMEOUT;
        !(c.sender.is_closed() || expired)
    });
}
