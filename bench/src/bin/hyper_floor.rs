//! The floor of the Rust HTTP stack keygate is built on, for `bench/gateway.sh` (scenarios f, g):
//! bare hyper served the way keygate serves (crates/server/src/serve.rs, upstream.rs) and nothing
//! else: N worker threads, each with its own current-thread tokio runtime; one acceptor dealing
//! connections out in turn; HTTP/1.1 keep-alive; per-worker pooled upstream connections.
//!
//! `hyper_floor --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8080`: forwards every request
//! (method, path and query, headers with `Host` set to the upstream, body streamed both ways);
//! 502 when the upstream fails. `hyper_floor --listen 127.0.0.1:8082 --static`: `200 {"code":1000}`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8081.
    #[arg(long)]
    listen: SocketAddr,
    /// Worker threads, each running its own single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Proxy mode: forward every request to this upstream, e.g. http://127.0.0.1:8080.
    #[arg(long, required_unless_present = "static_answer", conflicts_with = "static_answer")]
    upstream: Option<Uri>,
    /// Static mode: answer every request 200 `{"code":1000}` (application/json).
    #[arg(long = "static")]
    static_answer: bool,
}

struct Upstream {
    /// host:port, to connect to.
    addr: String,
    host: HeaderValue,
}

type Body = Either<Incoming, Full<Bytes>>;

thread_local! {
    /// This worker's connections to the upstream, most recently used last.
    static POOL: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream: Option<&'static Upstream> = match &args.upstream {
        None => None,
        Some(uri) => {
            let authority = uri.authority().filter(|_| uri.scheme_str() == Some("http"));
            let authority = authority.context("--upstream must be http://HOST[:PORT]")?;
            let port = authority.port_u16().unwrap_or(80);
            let addr = format!("{}:{port}", authority.host());
            let host = HeaderValue::from_str(authority.as_str())?;
            Some(Box::leak(Box::new(Upstream { addr, host })))
        }
    };
    let mut inboxes = Vec::new();
    for index in 1..=args.workers.max(1) {
        let (inbox, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name(format!("floor-w{index}"))
            .spawn(move || runtime.block_on(worker(rx, upstream)))?;
        inboxes.push(inbox);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let mut next = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else { continue };
            inboxes[next].send(stream).context("a worker thread stopped")?;
            next = (next + 1) % inboxes.len();
        }
    })
}

async fn worker(mut inbox: mpsc::UnboundedReceiver<std::net::TcpStream>, upstream: Option<&'static Upstream>) {
    while let Some(stream) = inbox.recv().await {
        let Ok(stream) = TcpStream::from_std(stream) else { continue };
        let service = hyper::service::service_fn(move |req| handle(req, upstream));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(req: Request<Incoming>, upstream: Option<&'static Upstream>) -> Result<Response<Body>, Infallible> {
    let Some(upstream) = upstream else {
        let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(b"{\"code\":1000}"))));
        res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(res);
    };
    Ok(match forward(req, upstream).await {
        Ok(res) => res.map(Either::Left),
        Err(_) => {
            let mut res = Response::new(Either::Right(Full::default()));
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            res
        }
    })
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[allow(clippy::result_large_err)] // the request comes back when no connection is idle
async fn forward(req: Request<Incoming>, upstream: &Upstream) -> Result<Response<Incoming>, Error> {
    let (mut parts, body) = req.into_parts();
    parts.uri = parts.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.headers.insert(HOST, upstream.host.clone());
    let mut req = Request::from_parts(parts, body);
    // An idle pooled connection takes the request; the hand-over is synchronous, so no other
    // request can take the same connection in between.
    loop {
        let sent = POOL.with_borrow_mut(|pool| match pool.iter().rposition(SendRequest::is_ready) {
            Some(i) => {
                let last = pool.len() - 1;
                pool.swap(i, last);
                Ok(pool[last].try_send_request(req))
            }
            None => Err(req),
        });
        match sent {
            Ok(sent) => match sent.await {
                Ok(res) => return Ok(res),
                // Not written (the upstream closed that connection): try another one.
                Err(mut e) => req = e.take_message().ok_or_else(|| e.into_error())?,
            },
            Err(back) => {
                req = back;
                break;
            }
        }
    }
    let stream = TcpStream::connect(upstream.addr.as_str()).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let sent = sender.try_send_request(req);
    POOL.with_borrow_mut(|pool| {
        pool.retain(|s| !s.is_closed());
        pool.push(sender);
    });
    Ok(sent.await.map_err(|e| e.into_error())?)
}
