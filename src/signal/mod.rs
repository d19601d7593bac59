//! Signaling sessions over `/api/connect` (docs/protocol.md §4).
//!
//! - [`messages`]: the JSON messages, shared with the client library;
//! - [`session`]: one session as a sans-I/O state machine;
//! - [`registry`]: live sessions by device id;
//! - [`limits`]: token buckets (per source address, per session relay bytes);
//! - `connection`: the tokio tasks that move frames.
//!
//! Where the contract is silent, the readings this module takes are written once, in
//! docs/protocol.md ("Readings for §4", R4.1–R4.15); its measured costs (memory per idle
//! session, handshake rate, the blocking-pool A/B) are in docs/development.md.
//!
//! 10 000 sessions need as many file descriptors: run the daemon with
//! `LimitNOFILE=65536` (systemd) or `ulimit -n` of at least 20 000.

mod certificates;
mod connection;
pub mod limits;
pub mod messages;
pub mod registry;
pub mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::sync::Semaphore;

use crate::cluster::wire::Outcome;
use crate::cluster::{Cluster, LocalSessions};
use crate::config::LimitsConfig;
use crate::crypto::transport::MAX_CIPHERTEXT_LEN;
use crate::http::access::{Peer, authorize, bearer_token, query_token};
use crate::http::problem::Problem;
use crate::ratelimit::{ConcurrencyCap, RateLimitConfig, SourceLimiter};
use crate::state::AppState;
use certificates::CertificateCache;
use messages::ServerMessage;
use registry::Registry;

/// The WebSocket read buffer: a whole message 1 (about 2.4 KB) fits; idle sessions
/// keep this much (tungstenite's default is 128 KiB).
pub const READ_BUFFER: usize = 4096;
/// Bytes gathered before a write reaches the socket.
pub const WRITE_BUFFER: usize = 8192;
/// Largest write backlog per connection before sends wait.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// Shared state of the signaling endpoint.
#[derive(Debug)]
pub struct Hub {
    pub registry: Registry,
    connect_limiter: SourceLimiter,
    /// Sessions per source (IPv6 per /64, and per /48).
    per_source: Arc<ConcurrencyCap>,
    /// Flips to true on daemon shutdown: sessions close with 1001.
    shutdown: watch::Receiver<bool>,
    connections: AtomicUsize,
    handshake_permits: Semaphore,
    /// Device certificates reused for half their lifetime.
    certificates: Mutex<CertificateCache>,
    /// Cluster mode: the registry and routes shared with the other nodes.
    pub cluster: Option<Arc<Cluster>>,
}

/// What the cluster reaches on this node: the registry.
impl LocalSessions for Hub {
    fn deliver(&self, device: &str, message: bytes::Bytes) -> Outcome {
        match self.registry.deliver(device, message) {
            Ok(()) => Outcome::Delivered,
            Err(registry::DeliveryError::Busy) => Outcome::Busy,
            Err(_) => Outcome::Offline,
        }
    }

    fn evict(&self, device: &str, generation: u64) {
        self.registry.evict(device, generation);
    }

    fn sessions(&self) -> Vec<(String, u64)> {
        self.registry.sessions()
    }
}

impl Hub {
    pub fn new(
        limits: &LimitsConfig,
        shutdown: watch::Receiver<bool>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            registry: Registry::default(),
            connect_limiter: SourceLimiter::new(RateLimitConfig {
                per_second: limits.connect_rate_per_ip,
                burst: limits.connect_burst,
                table_size: CONNECT_LIMIT_TABLE,
            }),
            per_source: ConcurrencyCap::new(limits.max_sessions_per_ip as usize),
            shutdown,
            connections: AtomicUsize::new(0),
            // Enough to keep every core busy with handshakes, few enough that a flood
            // queues here (cheaply) instead of in the blocking pool.
            handshake_permits: Semaphore::new(cores * 2),
            certificates: Mutex::new(CertificateCache::default()),
            cluster,
        }
    }

    fn cached_certificate(
        &self,
        device_id: &str,
        now_unix: u64,
        epoch: u64,
    ) -> Option<ServerMessage> {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id, now_unix, epoch)
    }

    fn remember_certificate(
        &self,
        device_id: &str,
        certificate: ServerMessage,
        issued_at: u64,
        ttl: u64,
        epoch: u64,
    ) {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id, certificate, issued_at, ttl, epoch);
    }
}

/// One admitted connection; frees its place on drop.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    fn admit(&self, max: u32) -> Option<Slot<'_>> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.connections);
        (before < max).then_some(slot)
    }

    /// WebSocket connections open now (handshaking or established).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn allow_connect(&self, client: IpAddr) -> bool {
        self.connect_limiter.allow(client)
    }
}

/// Sources tracked by the `/api/connect` limiter (fixed memory, LRU within a set).
const CONNECT_LIMIT_TABLE: usize = 65_536;

/// Routes of the signaling endpoint; in cluster mode the cluster reaches this node's
/// sessions through them.
pub fn routes(
    limits: &LimitsConfig,
    shutdown: watch::Receiver<bool>,
    cluster: Option<Arc<Cluster>>,
) -> Router<Arc<AppState>> {
    let hub = Arc::new(Hub::new(limits, shutdown, cluster.clone()));
    if let Some(cluster) = cluster {
        cluster.attach(hub.clone());
    }
    Router::new()
        .route("/api/connect", get(connect))
        .layer(Extension(hub))
}

async fn connect(
    State(state): State<Arc<AppState>>,
    Extension(hub): Extension<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Peer,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Behind a trusted proxy, the client it names; else the TCP peer.
    let client = client.0.unwrap_or(peer.ip());
    if !hub.allow_connect(client) {
        state.metrics.connect_rate_limited.inc();
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connection attempts",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let query = query_token(uri.query(), "access_token");
    let token = bearer_token(&headers).or(query.as_deref());
    let grant = match authorize(&state.auth, token) {
        Ok(grant) => grant,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(held) = hub.per_source.try_hold(client) else {
        state.metrics.connect_rate_limited.inc();
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions from this address",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return Problem::new(
                rejection.status(),
                format!("expected a WebSocket upgrade: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CIPHERTEXT_LEN)
        .max_frame_size(MAX_CIPHERTEXT_LEN)
        .on_upgrade(move |socket| async move {
            connection::serve(state, hub, socket, grant).await;
            // The source's share is freed when the session ends.
            drop(held);
        })
}
