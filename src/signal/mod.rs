//! Signaling sessions over `/api/connect` (PROTOCOL.md §4).
//!
//! - [`messages`]: the JSON messages, shared with the client library;
//! - [`session`]: one session as a sans-I/O state machine;
//! - [`registry`]: live sessions by device id;
//! - [`limits`]: token buckets (per source address, per session relay bytes);
//! - `connection`: the tokio tasks that move frames.
//!
//! Where §4 is silent, this module chooses:
//! - `[limits] max_sessions` bounds the WebSocket connections open at once, handshaking
//!   ones included (so memory is bounded before any CPU is spent); one over the limit is
//!   closed with 4429 right after the upgrade.
//! - The per-IP limit (`connect_rate_per_ip`/`connect_burst`) applies to every
//!   `GET /api/connect` before the upgrade: HTTP 429 problem+json with `Retry-After`.
//!   IPv6 sources are grouped by /64.
//! - The handshake timeout runs from the upgrade to the completed handshake; for IK it
//!   also covers the first client transport message, since only that message confirms
//!   the keys (a replayed IK message 1 gets 4408 and never displaces a session). IK
//!   clients should therefore send something (e.g. a `ping`) right after the handshake.
//!   A handshake counts as completed (`noise_handshakes`, outcome `ok`) at that point.
//! - Failures with no code in §4: an unparseable or unknown message is `bad_request`
//!   (the session stays open); a signal or relay to a session whose outbound queue is
//!   full gets `rate_limited` (senders never wait on slow receivers); an internal error
//!   closes with 1011; exhausting the 2^64 message counter closes with 1008.
//! - A session's own replies apply backpressure instead: the reader stops reading until
//!   the writer has room, so 5 000 pipelined pings all get their pong, in order.
//! - Device ids in `to`/`device` are 64 hex digits, either case (answers use lowercase);
//!   anything else is `bad_request`.
//! - A reply that cannot be queued within `session.ttl_seconds` (the client sends but
//!   never reads) closes the session with 4408, like an idle one.
//! - Close codes are sent with a short reason (the metric label); after a close the
//!   server waits up to 1 s for the client's close reply, except after an oversized
//!   frame, whose rest is never read.
//!
//! Costs, measured with `cargo bench --bench handshake_load` (release, loopback, client
//! in the same process on the same 2-core machine): about 17 KiB of daemon RSS per idle
//! session with 10 000 open (read buffer 4 KiB, writes unbuffered beyond 8 KiB, an
//! outbound queue of 16). `ServerHandshake::start` runs on the blocking pool behind a
//! semaphore of 2 × cores permits. Against running it inline on the workers, measured
//! A/B interleaved (3 rounds of 8 s each, 16 client loops, XK v2 hybrid): the same rate
//! (about 1 700 handshakes/s either way; the client's own crypto shares the 2 cores),
//! and `/healthz` during the load at p90 2.65–2.85 ms with the blocking pool against
//! 3.1–3.2 ms inline (p99 4.0–4.9 ms against 4.2–5.3 ms). The blocking pool also keeps
//! a flood of handshakes off the threads that serve HTTP.
//!
//! 10 000 sessions need as many file descriptors: run the daemon with
//! `LimitNOFILE=65536` (systemd) or `ulimit -n` of at least 20 000.

mod connection;
pub mod limits;
pub mod messages;
pub mod registry;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::watch;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::crypto::transport::MAX_CIPHERTEXT_LEN;
use crate::http::problem::Problem;
use crate::ratelimit::{RateLimitConfig, SharedRateLimiter};
use crate::state::AppState;
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
    connect_limiter: SharedRateLimiter,
    /// Origin of the limiter's monotonic clock.
    epoch: Instant,
    /// Flips to true on daemon shutdown: sessions close with 1001.
    shutdown: watch::Receiver<bool>,
    connections: AtomicUsize,
    handshake_permits: Semaphore,
}

impl Hub {
    pub fn new(limits: &LimitsConfig, shutdown: watch::Receiver<bool>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            registry: Registry::default(),
            connect_limiter: SharedRateLimiter::new(RateLimitConfig {
                per_second: limits.connect_rate_per_ip,
                burst: limits.connect_burst,
                table_size: CONNECT_LIMIT_TABLE,
            }),
            epoch: Instant::now(),
            shutdown,
            connections: AtomicUsize::new(0),
            // Enough to keep every core busy with handshakes, few enough that a flood
            // queues here (cheaply) instead of in the blocking pool.
            handshake_permits: Semaphore::new(cores * 2),
        }
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

    fn allow_connect(&self, peer: SocketAddr) -> bool {
        let now_nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.connect_limiter.allow(peer.ip(), now_nanos)
    }
}

/// Sources tracked by the `/api/connect` limiter (fixed memory, LRU within a set).
const CONNECT_LIMIT_TABLE: usize = 65_536;

/// Routes of the signaling endpoint.
pub fn routes(limits: &LimitsConfig, shutdown: watch::Receiver<bool>) -> Router<Arc<AppState>> {
    let hub = Arc::new(Hub::new(limits, shutdown));
    Router::new()
        .route("/api/connect", get(connect))
        .layer(Extension(hub))
}

async fn connect(
    State(state): State<Arc<AppState>>,
    Extension(hub): Extension<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !hub.allow_connect(peer) {
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
        .on_upgrade(move |socket| connection::serve(state, hub, socket))
}
