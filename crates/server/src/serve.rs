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
//! Background work (change feed, usage flushes, pruning) stays on the caller's runtime.
//!
//! Shutdown, in order: stop accepting; every worker finishes its in-flight requests and closes its
//! connections (at most [`DRAIN_LIMIT`]); the caller stops its background tasks (the last usage
//! flush); then [`Workers::finish`] ends the worker threads. Workers outlive the drain because
//! database connections opened on a worker (a cache miss) stay bound to its runtime's reactor.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// How long in-flight requests (and open WebSockets) may run on after shutdown began.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The default number of workers: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
}

/// The worker threads of one server.
pub struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<Accepted>>,
    drain: watch::Sender<bool>,
    drained: Vec<oneshot::Receiver<()>>,
    exit: watch::Sender<bool>,
    exited: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts `count` worker threads serving `handler`. Each thread first runs `on_start(index)`
    /// (index 1..=count), for per-worker state such as the gateway's upstream pools.
    pub fn start<H, F>(
        handler: H,
        count: usize,
        header_read_timeout: Duration,
        on_start: fn(usize),
    ) -> anyhow::Result<Self>
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        let (drain, drain_rx) = watch::channel(false);
        let (exit, exit_rx) = watch::channel(false);
        let mut workers = Self { inboxes: Vec::new(), drain, drained: Vec::new(), exit, exited: Vec::new() };
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
                        run_worker(rx, handler, drain, header_read_timeout).await;
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
        let result = loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors, say: back off rather than spin.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else { continue };
            let mut conn = Accepted { stream, peer };
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

/// Errors about one connection, after which accepting the next one just works.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn run_worker<H, F>(
    mut inbox: mpsc::UnboundedReceiver<Accepted>,
    handler: H,
    mut drain: watch::Receiver<bool>,
    header_read_timeout: Duration,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The CONNECT protocol, for WebSockets over HTTP/2 (as axum::serve does).
    builder.http2().enable_connect_protocol();
    // A client gets this long to send a request's headers (also the idle limit of a kept-alive
    // connection): slow-header attacks cannot hold connections open.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => break,
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
        let peer = ConnectInfo(accepted.peer);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(peer);
            handler(req)
        });
        let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    inbox.close();
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown()).await.is_err() {
        tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after the drain limit are closed");
    }
}
