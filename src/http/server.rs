//! The HTTP accept loop. `axum::serve` has no header-read timeout and no connection
//! cap, so a client that opens connections and sends nothing would hold a descriptor
//! each, forever. Here every connection gets a header-read deadline (which also bounds
//! keep-alive idleness: hyper starts it whenever it waits for a request head) and the
//! number of open HTTP connections is capped.
//!
//! With TLS, each connection first completes its TLS handshake within that same deadline,
//! then speaks what ALPN chose: HTTP/2 for `h2`, otherwise HTTP/1.1 exactly as the plain
//! path does (with upgrades, so `/api/connect` works over `wss://`). hyper has no
//! header-read deadline for HTTP/2, so an HTTP/2 connection with no request in flight
//! for that long is closed gracefully (GOAWAY), like an idle HTTP/1.1 keep-alive.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

use super::proxy_header;
use super::stall::StallDeadline;
use super::tls::ServerTls;
use crate::ratelimit::{ConcurrencyCap, Held};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's place: in the global pool and in its source's share; freed on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _held: Option<Held>,
}

/// How the accept loop protects itself.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// A request head must arrive within this; also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// A write the peer takes no byte of for this long ends the connection, HTTP or
    /// upgraded WebSocket alike (`http::stall`).
    pub write_stall_timeout: Duration,
    /// HTTP connections open at once; WebSocket sessions leave this pool on upgrade.
    pub max_connections: usize,
    /// HTTP connections one source (IPv6: one /64; a /48 holds 8 times this) may hold.
    pub max_connections_per_ip: usize,
    /// Sources the per-source cap does not apply to: trusted proxies.
    pub uncapped: Vec<ipnet::IpNet>,
    /// Connections from `uncapped` sources start with a PROXY protocol header
    /// (`http::proxy_header`).
    pub proxy_protocol: bool,
    /// After shutdown, how long in-flight requests may take.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            write_stall_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            uncapped: Vec::new(),
            proxy_protocol: false,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` until `shutdown` flips, then lets in-flight requests finish (bounded).
/// With `tls`, every connection is TLS; the configuration is read per connection, so a
/// reload applies to connections accepted after it.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = ConcurrencyCap::new(limits.max_connections_per_ip);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        // Request bodies are at most 16 KiB: no need for hyper's 1 MiB windows.
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024);
    let builders = Arc::new(Builders { http1, http2 });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // One source may not take the whole pool: beyond its share it is closed at once.
        // A trusted proxy carries many clients: only the global cap applies to it, and
        // with the PROXY protocol the client it names gets the per-source cap instead.
        let trusted = limits
            .uncapped
            .iter()
            .any(|net| net.contains(&peer.ip().to_canonical()));
        let held = if trusted {
            None
        } else {
            let Some(held) = per_source.try_hold(peer.ip()) else {
                tracing::debug!(%peer, "HTTP connection refused: too many from this source");
                drop(stream);
                continue;
            };
            Some(held)
        };
        let _ = stream.set_nodelay(true);
        let connection = Accepted {
            stream,
            peer,
            slot: Slot {
                _permit: permit,
                _held: held,
            },
        };
        let serving = Serving {
            app: app.clone(),
            builders: builders.clone(),
            tls: tls.as_ref().map(|tls| tls.config()),
            header_read_timeout: limits.header_read_timeout,
            write_stall_timeout: limits.write_stall_timeout,
            stop: shutdown.clone(),
        };
        if trusted && limits.proxy_protocol {
            let per_source = per_source.clone();
            connections.spawn(async move {
                if let Some(connection) = connection
                    .behind_proxy(&per_source, serving.header_read_timeout)
                    .await
                {
                    serving.serve(connection).await;
                }
            });
        } else {
            connections.spawn(serving.serve(connection));
        }
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight HTTP requests did not finish in time; closing them");
        connections.abort_all();
    }
}

struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// An accepted connection, its peer, and its place in the pool.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

impl Accepted {
    /// Reads the PROXY header a trusted proxy sends first: the client it names becomes
    /// the peer, under the per-source cap. `None`: the connection is dropped.
    async fn behind_proxy(
        mut self,
        per_source: &Arc<ConcurrencyCap>,
        limit: Duration,
    ) -> Option<Self> {
        match proxy_header::read(&mut self.stream, limit).await {
            Ok(None) => Some(self),
            Ok(Some(client)) => {
                let Some(held) = per_source.try_hold(client.ip()) else {
                    tracing::debug!(%client, "proxied connection refused: too many from this source");
                    return None;
                };
                self.slot._held = Some(held);
                self.peer = client;
                Some(self)
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "trusted proxy's connection refused");
                None
            }
        }
    }
}

/// What serving one connection takes.
struct Serving {
    app: Router,
    builders: Arc<Builders>,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_read_timeout: Duration,
    write_stall_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Serving {
    /// HTTP/1.1 (with upgrades) on a plain connection, or TLS then what ALPN chose.
    async fn serve(self, connection: Accepted) {
        let peer = connection.peer;
        let service = self
            .app
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let stream = StallDeadline::new(connection.stream, self.write_stall_timeout);
        match self.tls {
            None => {
                let http = self
                    .builders
                    .http1
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                drive(http, self.stop, None, connection.slot).await;
            }
            Some(config) => {
                serve_tls(
                    stream,
                    config,
                    self.builders,
                    service,
                    self.header_read_timeout,
                    self.stop,
                    connection.slot,
                )
                .await;
            }
        }
    }
}

/// One TLS connection: the handshake within `header_read_timeout`, then HTTP/2 or
/// HTTP/1.1 as ALPN says.
async fn serve_tls<S>(
    stream: StallDeadline<TcpStream>,
    config: Arc<rustls::ServerConfig>,
    builders: Arc<Builders>,
    service: S,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    permit: Slot,
) where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = tokio::select! {
        done = tokio::time::timeout(header_read_timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(stream);
    if h2 {
        let (in_flight, idle) = watch::channel(0usize);
        let in_flight = Arc::new(in_flight);
        let service = hyper::service::service_fn(move |req| {
            let request = InFlight::start(&in_flight);
            let response = service.call(req);
            async move {
                let response = response.await;
                drop(request);
                response
            }
        });
        let connection = builders.http2.serve_connection(io, service);
        drive(
            connection,
            stop,
            Some(IdleLimit {
                in_flight: idle,
                limit: header_read_timeout,
            }),
            permit,
        )
        .await;
    } else {
        let connection = builders.http1.serve_connection(io, service).with_upgrades();
        drive(connection, stop, None, permit).await;
    }
}

/// A served connection that can be asked to finish gracefully: stop taking requests and
/// close once those in flight are answered.
trait Graceful: Future + Send {
    fn finish(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    Self: Future + Send,
{
    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    Self: Future + Send,
{
    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection until it ends, shutdown asks it to finish, or (HTTP/2) it has been
/// idle too long; the connection slot is freed when this returns.
async fn drive<C: Graceful>(
    connection: C,
    mut stop: watch::Receiver<bool>,
    idle: Option<IdleLimit>,
    permit: Slot,
) {
    let mut connection = pin!(connection);
    let idle_for = async {
        match idle {
            Some(idle) => idle.elapsed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped(&mut stop) => {
            connection.as_mut().finish();
            let _ = connection.await;
        }
        limit = idle_for => {
            connection.as_mut().finish();
            // A peer that does not answer the GOAWAY's PING must not keep the slot.
            let _ = tokio::time::timeout(limit, connection).await;
        }
    }
    drop(permit);
}

/// Counts a request as in flight on its HTTP/2 connection while it lives.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(in_flight: &Arc<watch::Sender<usize>>) -> Self {
        in_flight.send_modify(|n| *n += 1);
        Self(in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// An HTTP/2 connection's requests in flight, and how long it may sit without any.
struct IdleLimit {
    in_flight: watch::Receiver<usize>,
    limit: Duration,
}

impl IdleLimit {
    /// Completes (with the limit) once no request has been in flight, or started, for
    /// `limit`.
    async fn elapsed(mut self) -> Duration {
        loop {
            let busy = *self.in_flight.borrow_and_update() > 0;
            let changed = if busy {
                self.in_flight.changed().await
            } else {
                match tokio::time::timeout(self.limit, self.in_flight.changed()).await {
                    Ok(changed) => changed,
                    Err(_) => return self.limit,
                }
            };
            if changed.is_err() {
                // The connection (and its service) is gone; `drive` ends on its own.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Completes once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
