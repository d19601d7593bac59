//! The STUN server over real sockets, in both I/O modes.

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
    let cred = r.secret.issue(crate::time::unix_now(), 600, [8; 8]);
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
