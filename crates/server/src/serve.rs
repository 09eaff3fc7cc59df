//! Serving HTTP, one thread per core. This module knows connections and threads, not what a
//! request means: it runs any handler `Fn(Request) -> Future<Response>` (the server's
//! [`crate::router::Dispatch`]).
//!
//! keygate sits on every request of someone else's API, so the request path avoids what costs
//! most on a loaded machine: waking other threads. Each worker is an OS thread running its own
//! single-threaded tokio runtime; a connection is accepted once (on the caller's runtime), handed
//! to the next worker in turn, and from then on everything about it (parsing, authentication, the
//! upstream request of the gateway and its pooled connection) runs on that one thread. A
//! work-stealing runtime instead moves tasks between threads and wakes parked workers all the time
//! (measured: about a fifth of the gateway's CPU went to thread wake-ups and switches).
//!
//! No connection can hold the server's resources for free ([`Limits`]):
//! - a new connection must send its first bytes within `header_read_timeout`, and a request's
//!   headers must arrive within it (hyper's timer, which is also the idle limit between HTTP/1
//!   requests);
//! - a connection with no request in flight is closed after `idle_timeout` (HTTP/1 and HTTP/2: a
//!   client that sends its HTTP/2 preface and nothing else is closed too);
//! - a request body must keep moving: `body_read_timeout` between two reads (a stalled upload
//!   answers 408);
//! - at most `max_connections` are open (counted until their socket closes, upgrades included);
//!   past it, a new connection gets a short `503` and is closed, and accepting goes on, so the
//!   server never runs out of file descriptors.
//!
//! Background work (change feed, usage flushes, pruning) stays on the caller's runtime.
//!
//! Shutdown, in order: stop accepting; every worker finishes its in-flight requests and closes its
//! connections (at most [`DRAIN_LIMIT`]); the caller stops its background tasks (the last usage
//! flush); then [`Workers::finish`] ends the worker threads. Workers outlive the drain because
//! database connections opened on a worker (a cache miss) stay bound to its runtime's reactor.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use keygate_auth::body::IdleBody;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// How long in-flight requests (and open WebSockets) may run on after shutdown began.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The default number of workers: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// File descriptors kept for what is not a client connection: the listener, the database pool,
/// the runtimes' own, logs.
const RESERVED_FDS: u64 = 64;

/// Raises this process's open-file limit to its hard limit (as nginx's `worker_rlimit_nofile` and
/// Go's runtime do) and returns it.
pub fn open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024)
}

/// The connections an open-file limit allows: half of the descriptors left after
/// [`RESERVED_FDS`], since a gateway request may hold an upstream connection too (and a quarter
/// is left for refusing connections over the limit).
pub fn default_max_connections(open_files: u64) -> usize {
    (open_files.saturating_sub(RESERVED_FDS) / 2).clamp(16, 1 << 20) as usize
}

/// Connections over the limit answered at once (see `Refusals`).
pub fn default_refusing(open_files: u64) -> usize {
    (open_files.saturating_sub(RESERVED_FDS) / 4).clamp(4, 1024) as usize
}

/// How long a connection may make the server wait, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    /// Connections over the limit being answered 503 at once.
    pub refusing: usize,
}

struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

/// One open connection counted against `max_connections`, until dropped (with its socket).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker threads of one server.
pub struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<Accepted>>,
    drain: watch::Sender<bool>,
    drained: Vec<oneshot::Receiver<()>>,
    exit: watch::Sender<bool>,
    exited: Vec<oneshot::Receiver<()>>,
    limits: Limits,
    /// Connections open now (every worker's), for `max_connections`.
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` worker threads serving `handler`. Each thread first runs `on_start(index)`
    /// (index 1..=count), for per-worker state such as the gateway's upstream pools.
    pub fn start<H, F>(handler: H, count: usize, limits: Limits, on_start: fn(usize)) -> anyhow::Result<Self>
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        let (drain, drain_rx) = watch::channel(false);
        let (exit, exit_rx) = watch::channel(false);
        let mut workers = Self {
            inboxes: Vec::new(),
            drain,
            drained: Vec::new(),
            exit,
            exited: Vec::new(),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
        };
        for index in 1..=count.max(1) {
            let (inbox, rx) = mpsc::unbounded_channel();
            let (drained_tx, drained_rx) = oneshot::channel();
            let (exited_tx, exited_rx) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("keygate-w{index}-blocking"))
                .build()
                .context("starting a worker runtime")?;
            let (handler, drain, mut exit) = (handler.clone(), drain_rx.clone(), exit_rx.clone());
            std::thread::Builder::new()
                .name(format!("keygate-w{index}"))
                .spawn(move || {
                    on_start(index);
                    runtime.block_on(async move {
                        run_worker(rx, handler, drain, limits).await;
                        let _ = drained_tx.send(());
                        let _ = exit.wait_for(|e| *e).await;
                    });
                    // Whatever is left (a connection past the drain limit) is dropped with the runtime.
                    drop(runtime);
                    let _ = exited_tx.send(());
                })
                .context("starting a worker thread")?;
            workers.inboxes.push(inbox);
            workers.drained.push(drained_rx);
            workers.exited.push(exited_rx);
        }
        Ok(workers)
    }

    /// Accepts connections and deals them out to the workers in turn until `shutdown` resolves,
    /// then waits for every worker to finish its in-flight requests.
    pub async fn accept_until(
        &mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next = 0;
        let mut refusals = Refusals::new(self.limits.refusing);
        let mut last_full_warning: Option<Instant> = None;
        let result = loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors (other than connections: max_connections keeps
                        // those below the limit), say: back off rather than spin.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if self.open.load(Ordering::Acquire) >= self.limits.max_connections {
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_full_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = self.limits.max_connections,
                        "connection limit reached: new connections get 503 until some close"
                    );
                }
                refusals.refuse(stream).await;
                continue;
            }
            self.open.fetch_add(1, Ordering::AcqRel);
            let slot = Slot(self.open.clone());
            let _ = stream.set_nodelay(true);
            // A peer that vanished (no FIN, no RST) is found out while a request waits on it.
            let keepalive =
                socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let Ok(stream) = stream.into_std() else { continue };
            let mut conn = Accepted { stream, peer, slot };
            let mut sent = false;
            for _ in 0..self.inboxes.len() {
                let inbox = &self.inboxes[next];
                next = (next + 1) % self.inboxes.len();
                match inbox.send(conn) {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(mpsc::error::SendError(back)) => conn = back,
                }
            }
            if !sent {
                break Err(anyhow::anyhow!("every worker thread has stopped"));
            }
        };
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        let _ = self.drain.send(true);
        for drained in self.drained.drain(..) {
            let _ = drained.await;
        }
        result
    }

    /// Ends the worker threads (after [`Workers::accept_until`] and the caller's own clean-up).
    pub async fn finish(self) {
        let _ = self.exit.send(true);
        for exited in self.exited {
            let _ = exited.await;
        }
    }
}

/// How long a refused connection is kept for its request to arrive, and then for the client to
/// read the answer.
const LINGER: Duration = Duration::from_millis(200);
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 1\r\ncontent-length: 67\r\n\r\n\
{\"code\":1503,\"msg\":\"Too many connections, try again in a moment\"}";

/// Connections over the limit, being answered with 503. Each waits (at most [`LINGER`]) for its
/// request, so that the answer follows it, then for the client to read the answer, so that
/// closing does not reset it away. At most `capacity` at a time, newest first: when full, the
/// oldest (which had its chance) is closed, so a client arriving during a flood of silent
/// connections still gets its answer.
///
/// The bound is on sockets, not tasks: an aborted task closes its socket only when its runtime
/// next gets to it, which a flood of accepts may delay. `held` counts the sockets still open
/// (each task's guard gives its count back when the task is dropped, aborted or not); after
/// aborting the oldest, the acceptor waits a moment for its socket to close, and a connection
/// arriving while `capacity` sockets are still held after that is closed at once, unanswered.
struct Refusals {
    capacity: usize,
    lingering: std::collections::VecDeque<tokio::task::AbortHandle>,
    held: Arc<HeldCount>,
}

#[derive(Default)]
struct HeldCount {
    count: AtomicUsize,
    released: Notify,
}

/// One refused connection's socket, counted in [`Refusals::held`] until dropped.
struct Held(Arc<HeldCount>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

/// How long the acceptor waits for an aborted refusal's socket to close.
const RELEASE_WAIT: Duration = Duration::from_millis(5);

impl Refusals {
    fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), lingering: std::collections::VecDeque::new(), held: Arc::default() }
    }

    fn held(&self) -> usize {
        self.held.count.load(Ordering::Acquire)
    }

    async fn refuse(&mut self, stream: TcpStream) {
        while self.lingering.front().is_some_and(|t| t.is_finished()) {
            self.lingering.pop_front();
        }
        if self.lingering.len() >= self.capacity
            && let Some(oldest) = self.lingering.pop_front()
        {
            oldest.abort();
        }
        if self.held() >= self.capacity {
            // The aborted sockets close when their runtime gets to them: give it a moment.
            let _ = tokio::time::timeout(RELEASE_WAIT, async {
                loop {
                    let released = self.held.released.notified();
                    if self.held() < self.capacity {
                        return;
                    }
                    released.await;
                }
            })
            .await;
        }
        if self.held() >= self.capacity {
            // Still held: this one is closed now rather than held too.
            drop(stream);
            return;
        }
        self.held.count.fetch_add(1, Ordering::AcqRel);
        let held = Held(self.held.clone());
        let task = tokio::spawn(async move {
            let _held = held;
            let mut stream = stream;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, stream.read(&mut sink)).await;
            let _ = tokio::time::timeout(LINGER, async {
                stream.write_all(REFUSAL).await?;
                stream.shutdown().await?;
                while stream.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
        });
        self.lingering.push_back(task.abort_handle());
    }
}

/// Errors about one connection, after which accepting the next one just works.
fn is_connection_error(e: &io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// A worker's connections, counted for the drain.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    ended: Notify,
}

struct LiveGuard(Arc<Live>);

impl LiveGuard {
    fn new(live: &Arc<Live>) -> Self {
        live.count.fetch_add(1, Ordering::AcqRel);
        Self(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

impl Live {
    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

async fn run_worker<H, F>(
    mut inbox: mpsc::UnboundedReceiver<Accepted>,
    handler: H,
    drain: watch::Receiver<bool>,
    limits: Limits,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The CONNECT protocol, for WebSockets over HTTP/2 (as axum::serve does).
    builder.http2().enable_connect_protocol().timer(TokioTimer::new());
    // A client gets this long to send a request's headers (also the idle limit of a kept-alive
    // HTTP/1 connection): slow-header attacks cannot hold connections open.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let live = Arc::new(Live::default());
    let mut draining = drain.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = draining.wait_for(|d| *d) => break,
            accepted = inbox.recv() => match accepted {
                Some(a) => a,
                None => break,
            },
        };
        let stream = match TcpStream::from_std(accepted.stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "registering a connection failed");
                continue;
            }
        };
        let guard = LiveGuard::new(&live);
        let conn = serve_connection(
            builder.clone(),
            stream,
            accepted.slot,
            accepted.peer,
            handler.clone(),
            drain.clone(),
            limits,
        );
        tokio::spawn(async move {
            conn.await;
            drop(guard);
        });
    }
    inbox.close();
    if tokio::time::timeout(DRAIN_LIMIT, live.all_ended()).await.is_err() {
        tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after the drain limit are closed");
    }
}

/// One connection, from its first byte to its close.
async fn serve_connection<H, F>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    slot: Slot,
    peer: SocketAddr,
    handler: H,
    mut drain: watch::Receiver<bool>,
    limits: Limits,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    // A connection that sends nothing is closed: hyper's header timer only starts with a request
    // (and HTTP/2 detection waits for bytes without one).
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        let peer = ConnectInfo(peer);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|b| Body::new(IdleBody::new(b, limits.body_read_timeout)));
            let extensions = req.extensions_mut();
            extensions.insert(peer);
            // In flight until the request is dropped, when its response is ready: carried by the
            // request rather than by a future wrapped around the handler's, which would be moved
            // (copied) on every request.
            extensions.insert(activity.begin());
            handler(req)
        })
    };
    let io = TokioIo::new(Counted { stream, _slot: slot });
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    // After an idle close began: HTTP/2's graceful close waits for the client to acknowledge a
    // ping, which a silent client never does.
    let mut idle_close: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(limits.idle_timeout), if !closing => {
                tracing::trace!(%peer, "closing an idle connection");
                closing = true;
                conn.as_mut().graceful_shutdown();
                idle_close = Some(Box::pin(tokio::time::sleep(IDLE_CLOSE_GRACE)));
            }
            () = async { idle_close.as_mut().expect("armed").await }, if idle_close.is_some() => {
                idle_close = None;
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
            }
        }
    }
}

/// How long an idle connection being closed gracefully may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_end_ms: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Clone for InFlight {
    fn clone(&self) -> Self {
        self.0.begin()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_end_ms.store(a.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self { started: Instant::now(), in_flight: AtomicUsize::new(0), last_end_ms: AtomicU64::new(0) }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let idle_since = self.started + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed));
            let deadline = idle_since + limit;
            if Instant::now() >= deadline && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A client connection's socket with its place in the connection count, released when the
/// socket closes (also after an upgrade, which takes the socket along).
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of connections over the limit, accepted without the runtime getting to the aborted
    /// refusals in between (as a burst of accepts does): the open sockets stay within capacity.
    #[tokio::test(flavor = "current_thread")]
    async fn refusals_hold_at_most_capacity_sockets_during_a_flood() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut refusals = Refusals::new(4);
        let mut clients = Vec::new();
        for _ in 0..50 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            refusals.refuse(stream).await;
            assert!(refusals.held() <= 4, "more refused sockets held than the capacity");
        }
        // Once the runtime has run the aborted tasks, a newcomer is answered again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(refusals.held() <= 4);
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        refusals.refuse(stream).await;
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut answer)).await;
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    }
}
