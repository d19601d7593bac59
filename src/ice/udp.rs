//! The tokio layer of the STUN responder: sockets, batches, rate limit, metrics.
//!
//! Each configured address gets `sockets_per_addr` sockets in one `SO_REUSEPORT`
//! group (Linux), so that the kernel spreads sources over tasks. On Linux a task reads
//! and writes up to `BATCH` datagrams per system call (`recvmmsg`/`sendmmsg`), driven by
//! tokio readiness; elsewhere it falls back to one `recv_from`/`send_to` per datagram.
//! Buffers are allocated once per task; the rate limiter is locked once per batch and
//! metrics are accumulated per batch into counters resolved at start.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::ice::stun::{Outcome, StunResponder};
pub use crate::ratelimit::RateLimitConfig;
use crate::ratelimit::SharedRateLimiter;

/// Datagrams per system call.
const BATCH: usize = 32;
/// Receive slot size: larger than any sensible STUN request; longer datagrams are
/// truncated by the kernel, flagged, and dropped.
const SLOT: usize = 2048;
/// Batches handled before yielding to other tasks.
const BATCHES_PER_WAKEUP: usize = 64;
/// Kernel receive buffer asked for (best effort).
const RECV_BUFFER_BYTES: usize = 4 << 20;

/// Why the STUN sockets could not be bound; names the address.
#[derive(Debug, thiserror::Error)]
pub enum StunBindError {
    #[error("no STUN listen address configured")]
    NoAddress,
    #[error("STUN address {addr} is already in use")]
    InUse { addr: SocketAddr, source: io::Error },
    #[error("cannot bind STUN socket on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Label set of `commucat_stun_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Index of the `rate_limited` counter, after the responder's outcomes.
const RATE_LIMITED: usize = Outcome::ALL.len();
const COUNTERS: usize = RATE_LIMITED + 1;

/// STUN metrics: requests by outcome and bytes in/out. Clones share the counters.
#[derive(Debug, Clone)]
pub struct StunMetrics {
    requests: Family<OutcomeLabels, Counter>,
    /// Handles resolved once, indexed by `Outcome::index()` then `RATE_LIMITED`.
    by_outcome: [Counter; COUNTERS],
    bytes_received: Counter,
    bytes_sent: Counter,
}

impl Default for StunMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StunMetrics {
    pub fn new() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let by_outcome = std::array::from_fn(|i| {
            let outcome = Outcome::ALL.get(i).map_or("rate_limited", |o| o.as_str());
            requests.get_or_create_owned(&OutcomeLabels { outcome })
        });
        Self {
            requests,
            by_outcome,
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
        }
    }

    /// Registers into the daemon's registry, whose prefix is `commucat`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stun_requests",
            "STUN datagrams handled, by outcome",
            self.requests.clone(),
        );
        registry.register(
            "stun_bytes_received",
            "Bytes of STUN datagrams received",
            self.bytes_received.clone(),
        );
        registry.register(
            "stun_bytes_sent",
            "Bytes of STUN replies sent",
            self.bytes_sent.clone(),
        );
    }

    /// The count for an outcome label (`Outcome::as_str()` or `rate_limited`).
    pub fn requests(&self, label: &str) -> u64 {
        Outcome::ALL
            .iter()
            .position(|o| o.as_str() == label)
            .or((label == "rate_limited").then_some(RATE_LIMITED))
            .map_or(0, |i| self.by_outcome[i].get())
    }

    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.get()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.get()
    }
}

/// Counts of one batch, flushed into the shared counters at its end.
#[derive(Default)]
struct LocalCounts {
    by_outcome: [u64; COUNTERS],
    bytes_received: u64,
    bytes_sent: u64,
}

impl LocalCounts {
    fn flush(&mut self, metrics: &StunMetrics) {
        for (counter, n) in metrics.by_outcome.iter().zip(self.by_outcome.iter_mut()) {
            if *n != 0 {
                counter.inc_by(*n);
                *n = 0;
            }
        }
        for (counter, n) in [
            (&metrics.bytes_received, &mut self.bytes_received),
            (&metrics.bytes_sent, &mut self.bytes_sent),
        ] {
            if *n != 0 {
                counter.inc_by(*n);
                *n = 0;
            }
        }
    }
}

/// Readiness of the STUN sockets for /readyz: every socket has a running task.
#[derive(Debug, Clone)]
pub struct StunReadiness {
    running: Arc<AtomicUsize>,
    expected: usize,
}

impl StunReadiness {
    pub fn is_ready(&self) -> bool {
        self.expected > 0 && self.running.load(Ordering::Relaxed) == self.expected
    }

    pub fn running_sockets(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// How a socket task moves datagrams. `Portable` is the fallback elsewhere and is
/// also exercised by the tests on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoMode {
    #[cfg(target_os = "linux")]
    Batched,
    Portable,
}

impl IoMode {
    fn native() -> Self {
        #[cfg(target_os = "linux")]
        return IoMode::Batched;
        #[cfg(not(target_os = "linux"))]
        return IoMode::Portable;
    }
}

/// Bound STUN sockets, not yet served.
#[derive(Debug)]
pub struct StunServer {
    sockets: Vec<std::net::UdpSocket>,
    running: Arc<AtomicUsize>,
    mode: IoMode,
}

impl StunServer {
    /// Binds `sockets_per_addr` sockets on each address (one where `SO_REUSEPORT`
    /// is unavailable). A port already taken, by another program or by another
    /// instance of this one, is reported as `InUse`.
    pub fn bind(addrs: &[SocketAddr], sockets_per_addr: usize) -> Result<Self, StunBindError> {
        if addrs.is_empty() {
            return Err(StunBindError::NoAddress);
        }
        let per_addr = if cfg!(target_os = "linux") {
            sockets_per_addr.max(1)
        } else {
            1
        };
        let mut sockets = Vec::with_capacity(addrs.len() * per_addr);
        for &addr in addrs {
            if addr.port() != 0 {
                probe_exclusive(addr)?;
            }
            let first = bind_one(addr)?;
            let actual = first
                .local_addr()
                .map_err(|source| StunBindError::Bind { addr, source })?;
            sockets.push(first);
            for _ in 1..per_addr {
                sockets.push(bind_one(actual)?);
            }
        }
        Ok(Self {
            sockets,
            running: Arc::new(AtomicUsize::new(0)),
            mode: IoMode::native(),
        })
    }

    /// Moves one datagram per system call instead of batches (the only mode off
    /// Linux); for comparison and troubleshooting.
    pub fn portable_io(mut self) -> Self {
        self.mode = IoMode::Portable;
        self
    }

    /// The distinct addresses bound (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect();
        addrs.dedup();
        addrs
    }

    pub fn readiness(&self) -> StunReadiness {
        StunReadiness {
            running: self.running.clone(),
            expected: self.sockets.len(),
        }
    }

    /// Serves every socket until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(
        self,
        responder: Arc<StunResponder>,
        limits: RateLimitConfig,
        metrics: StunMetrics,
        shutdown: watch::Receiver<bool>,
    ) {
        let shared = Arc::new(Shared {
            responder,
            limiter: SharedRateLimiter::new(limits),
            metrics,
            origin: Instant::now(),
            mode: self.mode,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for std_socket in self.sockets {
            let socket = match UdpSocket::from_std(std_socket) {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register STUN socket with the runtime");
                    continue;
                }
            };
            let running = RunningGuard::new(self.running.clone());
            tasks.spawn(serve_socket(
                socket,
                shared.clone(),
                shutdown.clone(),
                running,
            ));
        }
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "STUN socket task failed");
            }
        }
    }
}

/// Binds a plain socket (no `SO_REUSEPORT`) to see whether anyone holds `addr`.
fn probe_exclusive(addr: SocketAddr) -> Result<(), StunBindError> {
    let socket = new_socket(addr, false).map_err(|source| StunBindError::Bind { addr, source })?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(source) if source.kind() == io::ErrorKind::AddrInUse => {
            Err(StunBindError::InUse { addr, source })
        }
        Err(source) => Err(StunBindError::Bind { addr, source }),
    }
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // IPv4 and IPv6 are configured as separate addresses.
        socket.set_only_v6(true)?;
    }
    #[cfg(target_os = "linux")]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reuse_port;
    Ok(socket)
}

fn bind_one(addr: SocketAddr) -> Result<std::net::UdpSocket, StunBindError> {
    let map = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            StunBindError::InUse { addr, source }
        } else {
            StunBindError::Bind { addr, source }
        }
    };
    let socket = new_socket(addr, true).map_err(map)?;
    // Best effort: a larger buffer absorbs bursts; the kernel caps it at rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    socket.set_nonblocking(true).map_err(map)?;
    socket.bind(&addr.into()).map_err(map)?;
    Ok(socket.into())
}

/// What all socket tasks share.
struct Shared {
    responder: Arc<StunResponder>,
    limiter: SharedRateLimiter,
    metrics: StunMetrics,
    origin: Instant,
    mode: IoMode,
}

/// Counts a running socket task while it lives.
struct RunningGuard(Arc<AtomicUsize>);

impl RunningGuard {
    fn new(running: Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        Self(running)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-task buffers, allocated once.
struct Batch {
    recv: Vec<u8>,
    lens: [usize; BATCH],
    sources: [SocketAddr; BATCH],
    replies: Vec<Vec<u8>>,
    /// Which replies passed the rate limit and are to be sent.
    send: [bool; BATCH],
    counts: LocalCounts,
}

impl Batch {
    fn new() -> Self {
        Self {
            recv: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            sources: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(256)).collect(),
            send: [false; BATCH],
            counts: LocalCounts::default(),
        }
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.recv[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Runs the responder over the first `n` datagrams and applies the rate limit.
    fn respond(&mut self, n: usize, shared: &Shared) {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut replies = std::mem::take(&mut self.replies);
        let mut any_reply = false;
        let mut outcomes = [0usize; BATCH];
        // A source already over its limit gets no reply, so its datagrams are not parsed
        // or MAC-checked at all: a flood costs a table lookup per packet.
        let mut throttled = [false; BATCH];
        {
            let now_nanos = shared.origin.elapsed().as_nanos() as u64;
            let limiter = shared.limiter.lock_batch();
            for (t, source) in throttled.iter_mut().zip(&self.sources).take(n) {
                *t = !limiter.has_token(source.ip(), now_nanos);
            }
        }
        for (i, reply) in replies.iter_mut().enumerate().take(n) {
            self.counts.bytes_received += self.lens[i] as u64;
            let outcome = if throttled[i] {
                reply.clear();
                outcomes[i] = RATE_LIMITED;
                self.send[i] = false;
                continue;
            } else if self.lens[i] > SLOT {
                reply.clear();
                Outcome::Dropped
            } else {
                shared
                    .responder
                    .handle(self.datagram(i), self.sources[i], now_unix, reply)
            };
            outcomes[i] = outcome.index();
            self.send[i] = !reply.is_empty();
            any_reply |= self.send[i];
        }
        self.replies = replies;
        if any_reply {
            let now_nanos = shared.origin.elapsed().as_nanos() as u64;
            let mut limiter = shared.limiter.lock_batch();
            let slots = self.send.iter_mut().zip(&self.sources).zip(&mut outcomes);
            for ((send, source), outcome) in slots.take(n) {
                if *send && !limiter.allow(source.ip(), now_nanos) {
                    *send = false;
                    // A reply that never left is counted as rate_limited only.
                    *outcome = RATE_LIMITED;
                }
            }
        }
        for &outcome in &outcomes[..n] {
            self.counts.by_outcome[outcome] += 1;
        }
        // Outcomes are final now; bytes sent are added after the send.
        self.counts.flush(&shared.metrics);
    }
}

async fn serve_socket(
    socket: UdpSocket,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _running: RunningGuard,
) {
    let mut batch = Batch::new();
    if *shutdown.borrow_and_update() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::error!(error = %e, "STUN socket failed");
                    return;
                }
                drain(&socket, &shared, &mut batch).await;
            }
        }
    }
}

/// Handles datagrams until the socket would block (or a fairness bound is hit).
async fn drain(socket: &UdpSocket, shared: &Shared, batch: &mut Batch) {
    for _ in 0..BATCHES_PER_WAKEUP {
        let received = match shared.mode {
            #[cfg(target_os = "linux")]
            IoMode::Batched => socket.try_io(Interest::READABLE, || mmsg::recv(socket, batch)),
            IoMode::Portable => portable::recv(socket, batch),
        };
        let n = match received {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "STUN receive error");
                return;
            }
        };
        batch.respond(n, shared);
        match shared.mode {
            #[cfg(target_os = "linux")]
            IoMode::Batched => mmsg::send_all(socket, batch, n).await,
            IoMode::Portable => portable::send_all(socket, batch, n).await,
        }
        batch.counts.flush(&shared.metrics);
    }
    tokio::task::yield_now().await;
}

/// One datagram per system call.
mod portable {
    use super::*;

    pub(super) fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            let slot = &mut batch.recv[n * SLOT..(n + 1) * SLOT];
            match socket.try_recv_from(slot) {
                Ok((len, source)) => {
                    batch.lens[n] = len;
                    batch.sources[n] = source;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    pub(super) async fn send_all(socket: &UdpSocket, batch: &mut Batch, n: usize) {
        for i in 0..n {
            if !batch.send[i] {
                continue;
            }
            let reply = &batch.replies[i];
            let mut sent = socket.try_send_to(reply, batch.sources[i]);
            if matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                && socket.writable().await.is_ok()
            {
                sent = socket.try_send_to(reply, batch.sources[i]);
            }
            match sent {
                Ok(len) => batch.counts.bytes_sent += len as u64,
                Err(e) => tracing::debug!(error = %e, "STUN send error"),
            }
        }
    }
}

/// `recvmmsg`/`sendmmsg` through [`crate::sys::mmsg`].
#[cfg(target_os = "linux")]
mod mmsg {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::mmsg::{self as sys_mmsg, RecvMeta, Transmit};

    pub(super) fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<usize> {
        let mut meta = [RecvMeta::default(); BATCH];
        let n = sys_mmsg::recv(socket.as_fd(), &mut batch.recv, SLOT, &mut meta)?;
        for (i, m) in meta[..n].iter().enumerate() {
            match m.source {
                Some(source) if !m.truncated => {
                    batch.lens[i] = m.len;
                    batch.sources[i] = source;
                }
                // Truncated, or an unknown family: dropped unread.
                Some(source) => {
                    batch.lens[i] = SLOT + 1;
                    batch.sources[i] = source;
                }
                None => batch.lens[i] = SLOT + 1,
            }
        }
        Ok(n)
    }

    pub(super) async fn send_all(socket: &UdpSocket, batch: &mut Batch, n: usize) {
        let mut order = [0usize; BATCH];
        let mut count = 0;
        for i in 0..n {
            if batch.send[i] {
                order[count] = i;
                count += 1;
            }
        }
        let mut done = 0;
        let mut waited = false;
        while done < count {
            match socket.try_io(Interest::WRITABLE, || {
                send(socket, batch, &order[done..count])
            }) {
                Ok((sent, bytes)) => {
                    done += sent.max(1);
                    batch.counts.bytes_sent += bytes;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    waited = true;
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The first datagram is refused (e.g. unreachable): skip it, keep going.
                    tracing::debug!(error = %e, "STUN send error");
                    done += 1;
                    if e.kind() == io::ErrorKind::WouldBlock {
                        return;
                    }
                }
            }
        }
    }

    /// Sends the replies listed in `which`; returns (datagrams sent, bytes sent).
    fn send(socket: &UdpSocket, batch: &Batch, which: &[usize]) -> io::Result<(usize, u64)> {
        let mut transmits = [Transmit {
            contents: &[],
            destination: None,
        }; BATCH];
        for (transmit, &i) in transmits.iter_mut().zip(which) {
            *transmit = Transmit {
                contents: &batch.replies[i],
                destination: Some(batch.sources[i]),
            };
        }
        let count = which.len().min(BATCH);
        let sent = sys_mmsg::send(socket.as_fd(), &transmits[..count])?;
        let bytes = which[..sent]
            .iter()
            .map(|&i| batch.replies[i].len() as u64)
            .sum();
        Ok((sent, bytes))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::credentials::IceSecret;
    use crate::ice::stun::{self, IntegrityKind, RequestBuilder};
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Running {
        addr: SocketAddr,
        metrics: StunMetrics,
        readiness: StunReadiness,
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        secret: IceSecret,
    }

    async fn start(addr: &str, limits: RateLimitConfig, mode: IoMode) -> Running {
        let mut server = StunServer::bind(&[addr.parse().unwrap()], 2).expect("bind");
        if mode == IoMode::Portable {
            server = server.portable_io();
        }
        let addr = server.local_addrs()[0];
        let readiness = server.readiness();
        let secret = IceSecret::from_bytes([5u8; 32]);
        let responder = Arc::new(StunResponder::new(secret.clone(), false));
        let metrics = StunMetrics::new();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(responder, limits, metrics.clone(), rx));
        for _ in 0..500 {
            if readiness.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(readiness.is_ready());
        Running {
            addr,
            metrics,
            readiness,
            shutdown,
            task,
            secret,
        }
    }

    fn client(server: SocketAddr) -> std::net::UdpSocket {
        let bind = if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let c = std::net::UdpSocket::bind(bind).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.connect(server).unwrap();
        c
    }

    fn binding_request(tid: u8) -> Vec<u8> {
        RequestBuilder::minimal_binding([tid; 12]).to_vec()
    }

    async fn exchange(
        c: std::net::UdpSocket,
        requests: Vec<Vec<u8>>,
    ) -> (std::net::UdpSocket, Vec<Vec<u8>>) {
        tokio::task::spawn_blocking(move || {
            for r in &requests {
                c.send(r).unwrap();
            }
            let mut replies = Vec::new();
            let mut buf = [0u8; 1500];
            while let Ok(n) = c.recv(&mut buf) {
                replies.push(buf[..n].to_vec());
                if replies.len() == requests.len() {
                    break;
                }
            }
            (c, replies)
        })
        .await
        .unwrap()
    }

    fn mapped(reply: &[u8]) -> Option<SocketAddr> {
        let tid: [u8; 12] = reply[8..20].try_into().unwrap();
        stun::attributes(reply)
            .find(|(k, _)| *k == stun::attr::XOR_MAPPED_ADDRESS)
            .and_then(|(_, v)| stun::decode_xor_mapped_address(v, &tid))
    }

    async fn stop(r: Running) {
        r.shutdown.send(true).unwrap();
        tokio::time::timeout(TIMEOUT, r.task)
            .await
            .expect("run returns on shutdown")
            .unwrap();
        assert_eq!(r.readiness.running_sockets(), 0);
        assert!(!r.readiness.is_ready());
    }

    async fn plain_binding_round_trip(addr: &str, mode: IoMode) {
        let r = start(addr, RateLimitConfig::default(), mode).await;
        let c = client(r.addr);
        let me = c.local_addr().unwrap();
        let (_, replies) = exchange(c, vec![binding_request(1), binding_request(2)]).await;
        assert_eq!(replies.len(), 2);
        for reply in &replies {
            assert_eq!(reply.len(), if me.is_ipv4() { 32 } else { 44 });
            assert_eq!(mapped(reply), Some(me));
        }
        assert_eq!(r.metrics.requests("unauthenticated"), 2);
        assert_eq!(r.metrics.bytes_received(), 40);
        stop(r).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_binding_over_ipv4_batched() {
        plain_binding_round_trip("127.0.0.1:0", IoMode::native()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_binding_over_ipv4_portable() {
        plain_binding_round_trip("127.0.0.1:0", IoMode::Portable).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_binding_over_ipv6() {
        plain_binding_round_trip("[::1]:0", IoMode::native()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authenticated_check_and_garbage() {
        let r = start("127.0.0.1:0", RateLimitConfig::default(), IoMode::native()).await;
        let cred = r.secret.issue(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            600,
            [8; 8],
        );
        let m = RequestBuilder::binding([3; 12])
            .username(&format!("{}:peer", cred.ufrag))
            .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
            .fingerprint()
            .build();
        let c = client(r.addr);
        let (_, replies) = exchange(c, vec![b"not stun at all".to_vec(), m]).await;
        assert_eq!(replies.len(), 1);
        assert!(stun::verify_integrity(
            &replies[0],
            IntegrityKind::Sha1,
            cred.password.as_bytes()
        ));
        assert!(stun::has_valid_fingerprint(&replies[0]));
        assert_eq!(r.metrics.requests("success"), 1);
        assert_eq!(r.metrics.requests("dropped"), 1);
        stop(r).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_over_the_limit_are_dropped_and_counted() {
        let limits = RateLimitConfig {
            per_second: 0,
            burst: 5,
            table_size: 64,
        };
        let r = start("127.0.0.1:0", limits, IoMode::native()).await;
        let c = client(r.addr);
        let requests: Vec<_> = (0..12u8).map(binding_request).collect();
        let (c, replies) = exchange(c, requests).await;
        assert_eq!(replies.len(), 5);
        // Error replies count too.
        let allocate = RequestBuilder::new(0x0003, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).build();
        let (_, replies) = exchange(c, vec![allocate]).await;
        assert!(replies.is_empty());
        for _ in 0..200 {
            if r.metrics.requests("rate_limited") == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Each datagram is counted once: answered ones by outcome, the rest as rate_limited.
        assert_eq!(r.metrics.requests("rate_limited"), 8);
        assert_eq!(r.metrics.requests("unauthenticated"), 5);
        assert_eq!(r.metrics.requests("bad_request"), 0);
        assert_eq!(r.metrics.bytes_sent(), 5 * 32);
        stop(r).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_already_requested_returns_at_once() {
        let server = StunServer::bind(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
        let (tx, rx) = watch::channel(true);
        let responder = Arc::new(StunResponder::new(IceSecret::from_bytes([1; 32]), false));
        tokio::time::timeout(
            TIMEOUT,
            server.run(
                responder,
                RateLimitConfig::default(),
                StunMetrics::new(),
                rx,
            ),
        )
        .await
        .expect("returns");
        drop(tx);
    }

    #[test]
    fn port_in_use_is_reported_with_the_address() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let err = StunServer::bind(&[addr], 2).unwrap_err();
        assert!(
            matches!(err, StunBindError::InUse { addr: a, .. } if a == addr),
            "{err}"
        );
        assert!(err.to_string().contains(&addr.to_string()));
        drop(holder);
        // Our own reuse-port group is detected as well.
        let first = StunServer::bind(&[addr], 2).unwrap();
        let second = StunServer::bind(&[addr], 2).unwrap_err();
        assert!(matches!(second, StunBindError::InUse { .. }));
        drop(first);
        assert!(matches!(
            StunServer::bind(&[], 1),
            Err(StunBindError::NoAddress)
        ));
    }

    #[test]
    fn several_addresses_and_sockets() {
        let server = StunServer::bind(
            &["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
            3,
        )
        .unwrap();
        let addrs = server.local_addrs();
        assert_eq!(addrs.len(), 2);
        assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
        assert_eq!(
            server.sockets.len(),
            if cfg!(target_os = "linux") { 6 } else { 2 }
        );
        assert!(!server.readiness().is_ready());
    }

    #[test]
    fn metrics_are_registered_under_the_contract_names() {
        let metrics = StunMetrics::new();
        let mut registry = Registry::with_prefix("commucat");
        metrics.register(&mut registry);
        metrics.by_outcome[RATE_LIMITED].inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for label in Outcome::ALL
            .iter()
            .map(|o| o.as_str())
            .chain(["rate_limited"])
        {
            assert!(
                text.contains(&format!(
                    "commucat_stun_requests_total{{outcome=\"{label}\"}}"
                )),
                "{label}\n{text}"
            );
        }
        assert!(text.contains("commucat_stun_requests_total{outcome=\"rate_limited\"} 1"));
        assert!(text.contains("commucat_stun_bytes_received_total 0"));
        assert!(text.contains("commucat_stun_bytes_sent_total 0"));
        assert_eq!(metrics.requests("rate_limited"), 1);
    }
}
