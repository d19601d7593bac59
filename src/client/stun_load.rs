//! `commucat-cli bench-stun`: a closed-loop STUN load generator, loopback only.
//!
//! `sockets` UDP sockets each keep `outstanding_per_socket` Binding requests (the
//! minimal 20-byte form) in flight: every reply is answered with a new request. A
//! socket that sees no reply for `STALL` starts over (its requests count as lost).
//! Latency is measured per request from its own send time. The tool refuses any
//! target that is not a loopback address and runs at most `MAX_DURATION`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::ice::stun::{self as wire, RequestBuilder};

/// The longest run the tool accepts.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(300);
/// Replies still accepted after the sending stops.
const DRAIN: Duration = Duration::from_millis(200);
/// A socket with requests in flight and no reply for this long starts over.
const STALL: Duration = Duration::from_millis(200);
/// Latency histogram: 1 µs buckets up to this many µs, one overflow bucket after.
const HISTOGRAM_MICROS: usize = 200_000;
/// Sequence numbers in flight per socket are tracked in a ring of this size.
const RING: usize = 4096;
const TID_TAG: [u8; 4] = *b"CCLD";
/// Datagrams per system call.
const BATCH: usize = 32;
/// Receive slot: replies to a 20-byte Binding request are far smaller; longer ones
/// are truncated, which only matters for the echo baseline (never longer).
const REPLY_SLOT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0} is not a loopback address; the load tool only targets this machine")]
    NotLoopback(SocketAddr),
    #[error("duration {0:?} is over the limit of {MAX_DURATION:?}")]
    TooLong(Duration),
    #[error(
        "sockets, outstanding requests and threads must be at least 1 (outstanding at most {RING})"
    )]
    BadShape,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// Result of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub target: SocketAddr,
    pub sockets: usize,
    pub outstanding_per_socket: usize,
    pub elapsed: Duration,
    pub sent: u64,
    pub received: u64,
    /// Replies that were Binding success responses with XOR-MAPPED-ADDRESS.
    pub binding_successes: u64,
    pub lost: u64,
    pub responses_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl LoadReport {
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        writeln!(f, "target:        {}", self.target)?;
        writeln!(
            f,
            "shape:         {} sockets x {} outstanding",
            self.sockets, self.outstanding_per_socket
        )?;
        writeln!(f, "elapsed:       {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "responses/s:   {:.0}", self.responses_per_sec)?;
        writeln!(
            f,
            "sent/received: {} / {} ({} Binding successes)",
            self.sent, self.received, self.binding_successes
        )?;
        writeln!(
            f,
            "lost:          {} ({:.3} %)",
            self.lost,
            self.loss_ratio() * 100.0
        )?;
        writeln!(
            f,
            "latency:       p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            us(self.p50),
            us(self.p99),
            us(self.p999),
            us(self.max)
        )
    }
}

/// Runs the load for `duration` over `threads` threads and reports.
pub fn run(
    target: SocketAddr,
    sockets: usize,
    outstanding_per_socket: usize,
    duration: Duration,
    threads: usize,
) -> Result<LoadReport, LoadError> {
    if !target.ip().to_canonical().is_loopback() {
        return Err(LoadError::NotLoopback(target));
    }
    if duration > MAX_DURATION {
        return Err(LoadError::TooLong(duration));
    }
    if sockets == 0 || threads == 0 || outstanding_per_socket == 0 || outstanding_per_socket > RING
    {
        return Err(LoadError::BadShape);
    }
    let threads = threads.min(sockets);
    let mut groups: Vec<Vec<Flow>> = (0..threads).map(|_| Vec::new()).collect();
    for index in 0..sockets {
        groups[index % threads].push(Flow::connect(target, index as u32)?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|flows| scope.spawn(move || drive(flows, outstanding_per_socket, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Tally::new()))
            .collect()
    });
    let elapsed = started.elapsed().min(duration);
    let mut total = Tally::new();
    for t in &results {
        total.merge(t);
    }
    Ok(total.report(target, sockets, outstanding_per_socket, elapsed))
}

/// One socket and its requests in flight.
struct Flow {
    socket: UdpSocket,
    index: u32,
    next_seq: u32,
    in_flight: usize,
    /// `(seq, sent_at)` by `seq % RING`.
    ring: Vec<Option<(u32, Instant)>>,
    last_progress: Instant,
}

impl Flow {
    fn connect(target: SocketAddr, index: u32) -> io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            index,
            next_seq: 0,
            in_flight: 0,
            ring: vec![None; RING],
            last_progress: Instant::now(),
        })
    }

    fn request(&self, seq: u32) -> [u8; wire::HEADER_LEN] {
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&TID_TAG);
        tid[4..8].copy_from_slice(&self.index.to_be_bytes());
        tid[8..].copy_from_slice(&seq.to_be_bytes());
        RequestBuilder::minimal_binding(tid)
    }

    /// Sends requests until `outstanding` are in flight (or the socket is full).
    fn top_up(&mut self, outstanding: usize, tally: &mut Tally) {
        while self.in_flight < outstanding {
            let need = (outstanding - self.in_flight).min(BATCH);
            let mut requests = [[0u8; wire::HEADER_LEN]; BATCH];
            for (k, r) in requests[..need].iter_mut().enumerate() {
                *r = self.request(self.next_seq.wrapping_add(k as u32));
            }
            let sent = batch_io::send(&self.socket, &requests[..need]);
            let now = Instant::now();
            for _ in 0..sent {
                let seq = self.next_seq;
                self.ring[seq as usize % RING] = Some((seq, now));
                self.next_seq = seq.wrapping_add(1);
            }
            self.in_flight += sent;
            tally.sent += sent as u64;
            if sent < need {
                return;
            }
        }
    }

    /// Reads every waiting reply; returns how many matched a request in flight.
    fn receive(&mut self, bufs: &mut [[u8; REPLY_SLOT]; BATCH], tally: &mut Tally) -> usize {
        let mut matched = 0;
        let mut lens = [0usize; BATCH];
        loop {
            let n = batch_io::recv(&self.socket, bufs, &mut lens);
            for (buf, &len) in bufs.iter().zip(&lens).take(n) {
                let reply = &buf[..len];
                let Some(seq) = self.sequence_of(reply) else {
                    continue;
                };
                let slot = &mut self.ring[seq as usize % RING];
                let Some((expected, sent_at)) = *slot else {
                    continue;
                };
                if expected != seq {
                    continue;
                }
                *slot = None;
                self.in_flight -= 1;
                matched += 1;
                tally.record(sent_at.elapsed(), is_binding_success(reply));
            }
            if n < BATCH {
                break;
            }
        }
        if matched > 0 {
            self.last_progress = Instant::now();
        }
        matched
    }

    fn sequence_of(&self, reply: &[u8]) -> Option<u32> {
        let tid = reply.get(8..20)?;
        if tid[..4] != TID_TAG || tid[4..8] != self.index.to_be_bytes() {
            return None;
        }
        Some(u32::from_be_bytes([tid[8], tid[9], tid[10], tid[11]]))
    }

    /// Gives up on everything in flight (the replies were lost).
    fn restart_if_stalled(&mut self) {
        if self.in_flight > 0 && self.last_progress.elapsed() > STALL {
            self.ring.iter_mut().for_each(|s| *s = None);
            self.in_flight = 0;
            self.last_progress = Instant::now();
        }
    }
}

fn is_binding_success(reply: &[u8]) -> bool {
    reply.len() >= 2
        && u16::from_be_bytes([reply[0], reply[1]]) == wire::msg_type::BINDING_SUCCESS
        && wire::attributes(reply).any(|(k, _)| k == wire::attr::XOR_MAPPED_ADDRESS)
}

fn drive(mut flows: Vec<Flow>, outstanding: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::new();
    let mut bufs = [[0u8; REPLY_SLOT]; BATCH];
    while Instant::now() < deadline {
        let mut progress = 0;
        for flow in &mut flows {
            flow.restart_if_stalled();
            flow.top_up(outstanding, &mut tally);
            progress += flow.receive(&mut bufs, &mut tally);
        }
        if progress == 0 {
            wait_readable(&flows, Duration::from_millis(1));
        }
    }
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until && flows.iter().any(|f| f.in_flight > 0) {
        for flow in &mut flows {
            flow.receive(&mut bufs, &mut tally);
        }
        wait_readable(&flows, Duration::from_millis(1));
    }
    tally
}

/// Batched send and receive on a connected, non-blocking socket.
#[cfg(target_os = "linux")]
mod batch_io {
    use super::{BATCH, REPLY_SLOT};
    use crate::sys::mmsg::{self, RecvMeta, Transmit};
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// Sends `requests` with one `sendmmsg`; returns how many were sent.
    pub(super) fn send(socket: &UdpSocket, requests: &[[u8; 20]]) -> usize {
        let mut transmits = [Transmit {
            contents: &[],
            destination: None,
        }; BATCH];
        for (transmit, request) in transmits.iter_mut().zip(requests) {
            transmit.contents = request;
        }
        let n = requests.len().min(BATCH);
        mmsg::send(socket.as_fd(), &transmits[..n]).unwrap_or(0)
    }

    /// Receives up to `BATCH` datagrams with one `recvmmsg`; returns how many.
    pub(super) fn recv(
        socket: &UdpSocket,
        bufs: &mut [[u8; REPLY_SLOT]; BATCH],
        lens: &mut [usize; BATCH],
    ) -> usize {
        let mut meta = [RecvMeta::default(); BATCH];
        let n = mmsg::recv(
            socket.as_fd(),
            bufs.as_flattened_mut(),
            REPLY_SLOT,
            &mut meta,
        )
        .unwrap_or(0);
        for (len, m) in lens.iter_mut().zip(&meta).take(n) {
            *len = m.len;
        }
        n
    }
}

/// One datagram per system call.
#[cfg(not(target_os = "linux"))]
mod batch_io {
    use super::{BATCH, REPLY_SLOT};
    use std::net::UdpSocket;

    pub(super) fn send(socket: &UdpSocket, requests: &[[u8; 20]]) -> usize {
        requests
            .iter()
            .take_while(|r| socket.send(&r[..]).is_ok())
            .count()
    }

    pub(super) fn recv(
        socket: &UdpSocket,
        bufs: &mut [[u8; REPLY_SLOT]; BATCH],
        lens: &mut [usize; BATCH],
    ) -> usize {
        let mut n = 0;
        while n < BATCH {
            match socket.recv(&mut bufs[n]) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }
}

#[cfg(unix)]
fn wait_readable(flows: &[Flow], timeout: Duration) {
    use std::os::fd::AsFd;
    // Nothing to do on an error: the caller polls its sockets again either way.
    let _ = crate::sys::poll_readable(flows.iter().map(|f| f.socket.as_fd()), timeout);
}

#[cfg(not(unix))]
fn wait_readable(_flows: &[Flow], timeout: Duration) {
    std::thread::sleep(timeout / 10);
}

/// Counts and the latency histogram of one thread.
struct Tally {
    sent: u64,
    received: u64,
    binding_successes: u64,
    histogram: Vec<u64>,
    max: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: 0,
            received: 0,
            binding_successes: 0,
            histogram: vec![0; HISTOGRAM_MICROS + 1],
            max: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration, binding_success: bool) {
        self.received += 1;
        self.binding_successes += u64::from(binding_success);
        let micros = (latency.as_micros() as usize).min(HISTOGRAM_MICROS);
        self.histogram[micros] += 1;
        self.max = self.max.max(latency);
    }

    fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.received += other.received;
        self.binding_successes += other.binding_successes;
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
        self.max = self.max.max(other.max);
    }

    /// The latency under which a fraction `q` of the replies arrived (bucket upper bound).
    fn quantile(&self, q: f64) -> Duration {
        if self.received == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.received as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (micros, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(micros as u64 + 1)
                    .min(self.max.max(Duration::from_micros(1)));
            }
        }
        self.max
    }

    fn report(
        &self,
        target: SocketAddr,
        sockets: usize,
        outstanding: usize,
        elapsed: Duration,
    ) -> LoadReport {
        LoadReport {
            target,
            sockets,
            outstanding_per_socket: outstanding,
            elapsed,
            sent: self.sent,
            received: self.received,
            binding_successes: self.binding_successes,
            lost: self.sent.saturating_sub(self.received),
            responses_per_sec: self.received as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets_and_bad_shapes() {
        let remote: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        assert!(matches!(
            run(remote, 1, 1, Duration::from_millis(10), 1),
            Err(LoadError::NotLoopback(_))
        ));
        let local: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert!(matches!(
            run(local, 1, 1, Duration::from_secs(301), 1),
            Err(LoadError::TooLong(_))
        ));
        assert!(matches!(
            run(local, 0, 1, Duration::from_millis(10), 1),
            Err(LoadError::BadShape)
        ));
        assert!(matches!(
            run(local, 1, RING + 1, Duration::from_millis(10), 1),
            Err(LoadError::BadShape)
        ));
    }

    #[test]
    fn measures_a_reflector_and_counts_losses_of_a_silent_target() {
        // A thread that answers every request with a minimal Binding success.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let target = server.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut out = Vec::new();
            let r = wire::StunResponder::new(
                crate::ice::credentials::IceSecret::from_bytes([0; 32]),
                false,
            );
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    r.handle(&buf[..n], from, 0, &mut out);
                    let _ = server.send_to(&out, from);
                }
            }
        });
        let report = run(target, 2, 2, Duration::from_millis(300), 1).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        responder.join().unwrap();
        assert!(report.received > 0);
        assert_eq!(report.binding_successes, report.received);
        assert!(report.p50 <= report.p99 && report.p99 <= report.max);
        assert!(report.to_string().contains("responses/s"));

        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let report = run(
            silent.local_addr().unwrap(),
            1,
            3,
            Duration::from_millis(500),
            1,
        )
        .unwrap();
        assert_eq!(report.received, 0);
        assert!(report.sent >= 3);
        assert_eq!(report.lost, report.sent);
    }
}
