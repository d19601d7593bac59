//! The STUN server: sockets, batches, rate limit, metrics, around the sans-I/O
//! [`StunResponder`].
//!
//! Each configured address gets `sockets_per_addr` sockets in one `SO_REUSEPORT`
//! group (Linux), so that the kernel spreads sources over tasks. On Linux a task reads
//! and writes up to `BATCH` datagrams per system call (`recvmmsg`/`sendmmsg`, in
//! [`crate::sys`]), driven by tokio readiness; elsewhere it falls back to one
//! `recv_from`/`send_to` per datagram. Buffers are allocated once per task; the clocks
//! are read once per batch; the rate limiter is locked once per step of a batch
//! (`batch::LimitedResponder`, which holds the policy) and metrics are accumulated per
//! batch into counters resolved at start.

mod batch;
mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

#[cfg(target_os = "linux")]
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::ice::stun::StunResponder;
use crate::ratelimit::RateLimitConfig;
use crate::time::unix_now;
use batch::{BATCH, Batch, BatchTime, LimitedResponder, SLOT};
use metrics::RunningGuard;
pub use metrics::{StunMetrics, StunReadiness};

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
            responder: LimitedResponder::new(responder, limits),
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
    responder: LimitedResponder,
    metrics: StunMetrics,
    /// Origin of the rate limiter's monotonic clock.
    origin: Instant,
    mode: IoMode,
}

impl Shared {
    fn now(&self) -> BatchTime {
        BatchTime {
            unix_secs: unix_now(),
            mono_nanos: u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
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
            IoMode::Batched => socket.try_io(Interest::READABLE, || batched::recv(socket, batch)),
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
        shared.responder.respond(batch, n, shared.now());
        // Outcomes are final now; bytes sent are added after the send.
        batch.counts.flush(&shared.metrics);
        match shared.mode {
            #[cfg(target_os = "linux")]
            IoMode::Batched => batched::send_all(socket, batch, n).await,
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
mod batched {
    use std::os::fd::AsFd;

    use super::batch::OVERSIZED;
    use super::*;
    use crate::sys::mmsg::{self, RecvMeta, Transmit};

    pub(super) fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<usize> {
        let mut meta = [RecvMeta::default(); BATCH];
        let n = mmsg::recv(socket.as_fd(), &mut batch.recv, SLOT, &mut meta)?;
        for (i, m) in meta[..n].iter().enumerate() {
            match m.source {
                Some(source) if !m.truncated => {
                    batch.lens[i] = m.len;
                    batch.sources[i] = source;
                }
                // Truncated, or an unknown family: dropped unread.
                Some(source) => {
                    batch.lens[i] = OVERSIZED;
                    batch.sources[i] = source;
                }
                None => batch.lens[i] = OVERSIZED,
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
        let sent = mmsg::send(socket.as_fd(), &transmits[..count])?;
        let bytes = which[..sent]
            .iter()
            .map(|&i| batch.replies[i].len() as u64)
            .sum();
        Ok((sent, bytes))
    }
}
#[cfg(test)]
mod tests;
