//! The PROXY protocol (HAProxy's, versions 1 and 2) in front of connections from
//! trusted proxies (`[server] proxy_protocol`): the header names the client the proxy
//! accepted, and every per-source limit then keys on that client. Parsing is the `ppp`
//! crate's; this module decides what a header means and reads it off the socket.
//!
//! The specification forbids guessing: where it is on, a connection from a trusted
//! proxy must start with a header (or it is closed), and a connection from anyone else
//! is never read for one, so a client cannot name its own address.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, v1, v2};
use tokio::net::TcpStream;

/// Longest header accepted: version 1 is at most 107 bytes; version 2 carries TLVs
/// (load balancers add a few dozen bytes of them).
const MAX_HEADER: usize = 1024;
/// While a header is incomplete, how long to wait before looking again.
const RETRY: Duration = Duration::from_millis(2);

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProxyHeader {
    /// Its length: the stream proper starts after it.
    pub(super) len: usize,
    /// The client, or `None` for the proxy's own connections (v1 `UNKNOWN`, v2 `LOCAL`
    /// or an unspecified family): then the connection's peer stands.
    pub(super) source: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum ProxyHeaderError {
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// Version 2's signature; version 1 starts with `PROXY `.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
const V1_MAX: usize = 107;

/// Parses the start of a stream: `Ok(None)` while more bytes are needed.
pub(super) fn parse(bytes: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let Some(len) = framed_len(bytes)? else {
        return Ok(None);
    };
    let header = match HeaderResult::parse(&bytes[..len]) {
        HeaderResult::V1(Ok(h)) => ProxyHeader {
            len,
            source: v1_source(&h.addresses),
        },
        HeaderResult::V2(Ok(h)) => ProxyHeader {
            len,
            source: match h.command {
                v2::Command::Local => None,
                v2::Command::Proxy => v2_source(&h.addresses),
            },
        },
        HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
    };
    Ok(Some(header))
}

/// The header's length once all of it is in `bytes`. `ppp` reads some cut headers as
/// invalid (a version 1 line cut after a space), so the framing is decided here and
/// `ppp` sees whole headers only.
fn framed_len(bytes: &[u8]) -> Result<Option<usize>, ProxyHeaderError> {
    let not_a_header = || ProxyHeaderError::Invalid("no PROXY protocol signature".into());
    if bytes.starts_with(V2_SIGNATURE) {
        let Some(length) = bytes.get(14..16) else {
            return Ok(None);
        };
        let total = 16 + usize::from(u16::from_be_bytes([length[0], length[1]]));
        return match total {
            t if t > MAX_HEADER => Err(ProxyHeaderError::TooLong),
            t if bytes.len() < t => Ok(None),
            t => Ok(Some(t)),
        };
    }
    if bytes.starts_with(V1_PREFIX) {
        return match bytes.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") {
            Some(end) => Ok(Some(end + 2)),
            None if bytes.len() >= V1_MAX => Err(ProxyHeaderError::TooLong),
            None => Ok(None),
        };
    }
    let prefix_of =
        |signature: &[u8]| signature.starts_with(&bytes[..bytes.len().min(signature.len())]);
    if prefix_of(V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        Ok(None)
    } else {
        Err(not_a_header())
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Unknown => None,
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
    }
}

fn v2_source(addresses: &v2::Addresses) -> Option<SocketAddr> {
    match addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// Reads the header off `stream` within `limit`, consuming exactly its bytes, and
/// returns the client it names (`None`: the peer itself).
pub(super) async fn read(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(limit, read_unbounded(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout)?
}

async fn read_unbounded(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use tokio::io::AsyncReadExt as _;
    let io = |e: std::io::Error| ProxyHeaderError::Io(e.to_string());
    let mut buf = [0u8; MAX_HEADER];
    // Peek until the whole header is there, so that not a byte of what follows it is
    // taken from the stream.
    let header = loop {
        let seen = stream.peek(&mut buf).await.map_err(io)?;
        if seen == 0 {
            return Err(ProxyHeaderError::Io("closed before the header".into()));
        }
        if let Some(header) = parse(&buf[..seen])? {
            break header;
        }
        // A header split over segments: rare (proxies send it in one write).
        tokio::time::sleep(RETRY).await;
    };
    stream
        .read_exact(&mut buf[..header.len])
        .await
        .map_err(io)?;
    Ok(header.source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v2_header(command: v2::Command, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | command,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn version_1_names_the_client_and_its_length() {
        let text = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nGET / HTTP/1.1\r\n";
        let header = parse(text).unwrap().unwrap();
        assert_eq!(header.len, 44);
        assert_eq!(&text[header.len..header.len + 3], b"GET");
        assert_eq!(
            header.source,
            Some(SocketAddr::from(([203, 0, 113, 7], 51000)))
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        assert_eq!(
            parse(v6).unwrap().unwrap().source,
            Some(SocketAddr::from((
                "2001:db8::7".parse::<Ipv6Addr>().unwrap(),
                51000
            )))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
    }

    #[test]
    fn version_2_names_the_client_unless_it_is_local() {
        let client = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9), 40000));
        let us = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 443));
        let mut bytes = v2_header(v2::Command::Proxy, client, us);
        let len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        let header = parse(&bytes).unwrap().unwrap();
        assert_eq!((header.len, header.source), (len, Some(client)));
        let local = v2_header(v2::Command::Local, client, us);
        assert_eq!(parse(&local).unwrap().unwrap().source, None);
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        let text = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
        for cut in 1..text.len() {
            assert_eq!(parse(&text[..cut]), Ok(None), "{cut}");
        }
        let client = SocketAddr::from(([198, 51, 100, 9], 40000));
        let binary = v2_header(v2::Command::Proxy, client, client);
        for cut in 1..binary.len() {
            assert_eq!(parse(&binary[..cut]), Ok(None), "{cut}");
        }
        for garbage in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n",
        ] {
            assert!(
                matches!(parse(garbage), Err(ProxyHeaderError::Invalid(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn endless_headers_are_refused_at_their_caps() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_MAX, b'1');
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
        let mut binary = V2_SIGNATURE.to_vec();
        binary.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&binary), Err(ProxyHeaderError::TooLong));
    }
}
