//! `[server] proxy_protocol`: connections from trusted proxies start with a PROXY
//! protocol header (v1 or v2) naming the client, and every per-source limit keys on
//! that client; nobody else can name an address.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::Daemon;

const ASSIST: &[u8] = b"GET /api/p2p/assist HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn from(source: Ipv4Addr, d: &Daemon) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .unwrap();
    socket.connect(&d.http.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `prefix` then an assist request from `source`; the status, or `None` if the
/// daemon closed without an answer.
fn assist(d: &Daemon, source: Ipv4Addr, prefix: &[u8]) -> Option<u16> {
    let mut s = from(source, d);
    s.write_all(&[prefix, ASSIST].concat()).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    reply.get(9..12).map(|status| status.parse().unwrap())
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n").into_bytes()
}

fn v2(client: Ipv4Addr) -> Vec<u8> {
    let source = SocketAddr::from((client, 40000));
    let destination = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

#[test]
fn limits_key_on_the_client_the_header_names() {
    // The proxy is 127.0.0.1; 127.0.0.2 is a client connecting directly.
    let d = Daemon::start(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true\n\
         [limits]\nassist_rate_per_ip = 1\nassist_burst = 1\n",
    );
    let proxy = Ipv4Addr::LOCALHOST;
    assert_eq!(assist(&d, proxy, &v1("198.51.100.1")), Some(200));
    assert_eq!(
        assist(&d, proxy, &v1("198.51.100.1")),
        Some(429),
        "same client"
    );
    assert_eq!(assist(&d, proxy, &v1("198.51.100.2")), Some(200), "another");
    assert_eq!(
        assist(&d, proxy, &v2(Ipv4Addr::new(198, 51, 100, 3))),
        Some(200)
    );
    assert_eq!(
        assist(&d, proxy, &v2(Ipv4Addr::new(198, 51, 100, 3))),
        Some(429)
    );
    // The proxy's own connection (v1 UNKNOWN) counts as the proxy.
    assert_eq!(assist(&d, proxy, b"PROXY UNKNOWN\r\n"), Some(200));

    // A trusted proxy's connection without a header, or with a broken one: closed.
    assert_eq!(assist(&d, proxy, b""), None);
    assert_eq!(assist(&d, proxy, b"PROXY TCP4 nonsense\r\n"), None);

    // Anyone else is never read for a header: theirs is a malformed request, and their
    // own address is what counts.
    let direct = Ipv4Addr::new(127, 0, 0, 2);
    assert_eq!(assist(&d, direct, &v1("198.51.100.9")), Some(400));
    assert_eq!(assist(&d, direct, b""), Some(200));
    assert_eq!(assist(&d, direct, b""), Some(429));
}

#[test]
fn the_header_needs_trusted_proxies() {
    let failed = Daemon::refuses_to_start(
        &common::temp_dir("proxy"),
        "[server]\nproxy_protocol = true\n",
        &[],
        &["server.proxy_protocol", "trusted_proxies"],
    );
    assert_eq!(failed.status.code(), Some(2));
}
