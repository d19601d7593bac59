//! Hostile HTTP clients against the real daemon: slowloris heads and bodies, ten
//! thousand connections that never send their body, huge heads, deeply nested JSON,
//! invalid UTF-8, and a client that never reads its responses. Each must cost the
//! daemon a bounded time and leave it serving everyone else; every error a route
//! answers is problem+json.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Daemon;

const READ_LIMIT: Duration = Duration::from_secs(10);

fn open(addr: SocketAddr) -> TcpStream {
    open_from(Ipv4Addr::LOCALHOST, addr, None)
}

/// A connection from `source` (any 127/8 address reaches the daemon on 127.0.0.1).
fn open_from(source: Ipv4Addr, addr: SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(READ_LIMIT)).unwrap();
    s.set_write_timeout(Some(READ_LIMIT)).unwrap();
    s
}

/// One response: status, head (lowercase) and body; reads exactly `content-length`.
fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a response head: {data:?}");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while data.len() < head_end + length {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed inside a response body");
        data.extend_from_slice(&buf[..n]);
    }
    (status, head, data[head_end..head_end + length].to_vec())
}

fn assert_problem(status: u16, head: &str, body: &[u8], want: u16) {
    assert_eq!(status, want, "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(problem["status"], want);
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn healthy(d: &Daemon) {
    let mut s = open(d.http);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
}

#[test]
fn a_head_sent_byte_by_byte_is_cut_at_the_header_deadline() {
    let d = Daemon::start("[limits]\nhttp_header_timeout_seconds = 1\n");
    let mut s = open(d.http);
    let head =
        b"GET /api/server-info HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    for byte in head {
        // A write into a socket the daemon closed fails once the reset has come back.
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        !reply.contains(" 200 "),
        "a trickled head was served: {reply}"
    );
    // The head needs 8 s at this pace; the daemon cut it at its 1 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    healthy(&d);
}

#[test]
fn a_body_sent_byte_by_byte_gets_408_at_the_body_deadline() {
    let d = Daemon::start("[limits]\nhttp_body_timeout_seconds = 1\n");
    let mut s = open(d.http);
    let body = br#"{"peer_hint":"slow-slow-slow-slow-slow"}"#;
    let request = post("/api/p2p/assist", "application/json", body);
    let head_len = request.len() - body.len();
    s.write_all(&request[..head_len]).unwrap();
    let started = Instant::now();
    for byte in body {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let (status, head, body) = read_response(&mut s);
    assert_problem(status, &head, &body, 408);
    healthy(&d);
}

#[test]
fn ten_thousand_connections_that_never_send_their_body_do_not_lock_others_out() {
    const SOURCES: u8 = 40;
    const PER_SOURCE: usize = 250;
    let limit = commucat::sys::raise_open_file_limit().unwrap();
    assert!(
        limit >= 10_500,
        "this test holds 10 000 connections open: the hard descriptor limit is {limit}"
    );
    // The per-source request rate would answer most of them 429 at once: lifted, so
    // that every connection really waits for its body.
    let d = Daemon::start(
        "[limits]\nhttp_body_timeout_seconds = 1\nassist_rate_per_ip = 100000\nassist_burst = 100000\n",
    );
    let head = b"POST /api/p2p/assist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n";
    let mut hung = Vec::with_capacity(usize::from(SOURCES) * PER_SOURCE);
    for source in 1..=SOURCES {
        for _ in 0..PER_SOURCE {
            let mut s = open_from(Ipv4Addr::new(127, 0, 0, source), d.http, None);
            s.write_all(head).unwrap();
            hung.push(s);
        }
    }
    // Every slot of the pool (10 000) is held by a body that never comes: a newcomer
    // waits for the body deadline to free slots, not forever.
    let mut newcomer = open_from(Ipv4Addr::new(127, 0, 0, 99), d.http, None);
    newcomer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut newcomer).0, 200);
    for (i, s) in hung.iter_mut().enumerate() {
        let (status, head, body) = read_response(s);
        assert!(status == 408, "connection {i}: {status} {head}");
        assert_problem(status, &head, &body, 408);
    }
}

#[test]
fn huge_heads_are_refused_and_the_daemon_keeps_serving() {
    let d = Daemon::start("");
    // One 1 MiB header, then 200 small ones.
    let big = format!(
        "GET /api/server-info HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many = format!(
        "GET /api/server-info HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for request in [big, many] {
        let mut s = open(d.http);
        // The daemon may close before the whole head is written.
        let _ = s.write_all(request.as_bytes());
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
            "{}",
            &reply[..reply.len().min(200)]
        );
    }
    healthy(&d);
}

#[test]
fn deeply_nested_json_is_refused_or_skipped_never_recursed_into() {
    let d = Daemon::start("");
    let depth = 8000;
    let assist = |body: &str| {
        assert!(body.len() <= 16 * 1024, "{}", body.len());
        let mut s = open(d.http);
        s.write_all(&post(
            "/api/p2p/assist",
            "application/json",
            body.as_bytes(),
        ))
        .unwrap();
        read_response(&mut s)
    };
    // Where the request has a shape, nesting is a 400.
    for body in [
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!("{{\"paths\":{}{}}}", "[".repeat(depth), "]".repeat(depth)),
        format!(
            "{{\"fec\":{{\"mtu\":{}{}}}}}",
            "[".repeat(depth / 2),
            "]".repeat(depth / 2)
        ),
    ] {
        let (status, head, body) = assist(&body);
        assert_problem(status, &head, &body, 400);
    }
    // An unknown field is ignored (PROTOCOL: unknown fields are ignored), however deep:
    // skipping it does not recurse, so it cannot exhaust the stack.
    let unknown = format!("{{\"x\":{}1{}}}", "{\"a\":".repeat(2500), "}".repeat(2500));
    assert_eq!(assist(&unknown).0, 200);
    healthy(&d);
}

#[test]
fn invalid_utf8_anywhere_is_a_clear_error() {
    let d = Daemon::start(&format!(
        "[auth]\nrequired = true\ntokens = [\"{}\"]\n",
        "t".repeat(32)
    ));
    let token = "t".repeat(32);
    // In a JSON body.
    let mut s = open(d.http);
    let mut body = br#"{"peer_hint":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let mut request = format!(
        "POST /api/p2p/assist HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    s.write_all(&request).unwrap();
    let (status, head, body) = read_response(&mut s);
    assert_problem(status, &head, &body, 400);

    // In a form body, in a query string, in a path, in a bearer token.
    let authorized = |request: Vec<u8>| {
        let line_end = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let header = format!("Authorization: Bearer {token}\r\n");
        [
            &request[..line_end],
            header.as_bytes(),
            &request[line_end..],
        ]
        .concat()
    };
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            authorized(post(
                "/api/turn",
                "application/x-www-form-urlencoded",
                b"service=turn&username=%ff%fe",
            )),
            400,
        ),
        (
            authorized(
                b"GET /api/turn?service=turn&username=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ),
            400,
        ),
        (b"GET /api/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (
            [
                b"GET /api/p2p/assist HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".as_slice(),
                &[0xff, 0xfe, 0xfd],
                b"\r\n\r\n",
            ]
            .concat(),
            401,
        ),
    ];
    for (request, want) in cases {
        let mut s = open(d.http);
        s.write_all(&request).unwrap();
        let (status, head, body) = read_response(&mut s);
        assert_problem(status, &head, &body, want);
    }
    healthy(&d);
}

#[test]
fn a_client_that_never_reads_is_cut_at_the_write_deadline() {
    let d = Daemon::start("[limits]\nhttp_write_timeout_seconds = 1\n");
    // Each server-info response is about 17 KB: 3 000 of them are far more than the
    // socket buffers of both sides hold.
    const REQUESTS: usize = 3_000;
    let mut s = open_from(Ipv4Addr::LOCALHOST, d.http, Some(4096));
    let request = b"GET /api/server-info HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipelined: Vec<u8> = request.repeat(REQUESTS);
    let _ = s.write_all(&pipelined);
    // Read nothing while the daemon's writes stall past their deadline.
    std::thread::sleep(Duration::from_secs(3));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answered = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut tail = Vec::new();
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                answered += tail.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
                let keep = tail.len().saturating_sub(11);
                tail.drain(..keep);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "the daemon kept the connection after {answered} responses"
    );
    assert!(
        answered < REQUESTS,
        "every response was written: no stall happened"
    );
    healthy(&d);
}
