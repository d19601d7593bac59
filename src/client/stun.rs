//! `commucat-cli stun HOST:PORT`: a STUN Binding probe.
//!
//! Sends one Binding request (plain with FINGERPRINT, or with USERNAME, integrity and
//! FINGERPRINT when credentials are given), retransmits as RFC 8489 §6.2.1 says
//! (RTO 500 ms doubling, 7 transmissions, then 16 × RTO), bounded by the caller's
//! timeout, and reports what came back.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use stun_rs::MessageDecoderBuilder;
use stun_rs::attributes::stun::{ErrorCode, MappedAddress, Software, XorMappedAddress};
use tokio::net::UdpSocket;
use zeroize::Zeroizing;

use crate::ice::stun::{self as wire, IntegrityKind, RequestBuilder};

/// Initial retransmission timeout (RFC 8489 §6.2.1).
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Rc: total transmissions.
const MAX_TRANSMISSIONS: u32 = 7;
/// Rm: the wait after the last transmission, in RTOs.
const FINAL_WAIT_RTOS: u32 = 16;
const DEFAULT_PORT: u16 = 3478;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("credential rejected locally: {0}")]
    BadCredential(String),
    #[error("no STUN response from {server} after {transmissions} transmissions in {waited:?}")]
    Timeout {
        server: SocketAddr,
        transmissions: u32,
        waited: Duration,
    },
}

/// What the probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub server: SocketAddr,
    pub local: SocketAddr,
    /// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an old server) of a success response.
    pub reflexive: Option<SocketAddr>,
    /// Time from the last transmission to the response.
    pub rtt: Duration,
    pub transmissions: u32,
    /// `None` when no credentials were given; else whether the response's integrity
    /// attribute (of the kind sent) verified with the password.
    pub integrity: Option<bool>,
    pub integrity_kind: Option<IntegrityKind>,
    /// `None` when the response had no FINGERPRINT.
    pub fingerprint: Option<bool>,
    pub software: Option<String>,
    /// ERROR-CODE of an error response: code and reason phrase.
    pub error: Option<(u16, String)>,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server:            {}", self.server)?;
        writeln!(f, "local address:     {}", self.local)?;
        match (&self.error, self.reflexive) {
            (Some((code, reason)), _) => writeln!(
                f,
                "result:            error {code} {}",
                describe_error(*code, reason)
            )?,
            (None, Some(addr)) => writeln!(f, "reflexive address: {addr}")?,
            (None, None) => writeln!(f, "reflexive address: (missing from the response)")?,
        }
        let plural = if self.transmissions == 1 { "" } else { "s" };
        writeln!(
            f,
            "round trip:        {:.3} ms ({} transmission{plural})",
            self.rtt.as_secs_f64() * 1000.0,
            self.transmissions
        )?;
        let kind = match self.integrity_kind {
            Some(IntegrityKind::Sha256) => "MESSAGE-INTEGRITY-SHA256",
            _ => "MESSAGE-INTEGRITY",
        };
        match self.integrity {
            None => writeln!(f, "integrity:         not requested")?,
            Some(true) => writeln!(f, "integrity:         verified ({kind})")?,
            Some(false) => writeln!(
                f,
                "integrity:         NOT verified ({kind} missing or wrong)"
            )?,
        }
        match self.fingerprint {
            None => writeln!(f, "fingerprint:       absent")?,
            Some(true) => writeln!(f, "fingerprint:       verified")?,
            Some(false) => writeln!(f, "fingerprint:       INVALID")?,
        }
        if let Some(software) = &self.software {
            writeln!(f, "software:          {software}")?;
        }
        Ok(())
    }
}

/// Probes `target` ("host:port"; port 3478 if omitted) with a Binding request.
/// `creds` is (username, password): the USERNAME sent as is (the server uses the part
/// before the first ':' as its ufrag) and the ICE password as the short-term key.
pub async fn probe(
    target: &str,
    creds: Option<(String, String)>,
    sha256: bool,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let server = resolve(target).await?;
    probe_addr(server, creds, sha256, timeout, false)
        .await
        .map(|(report, _)| report)
}

/// [`probe`] of an address. With `any_source`, a response to the request counts from
/// whatever address it comes (a multi-homed server may answer from another address than
/// the one asked); the address it came from is returned with the report.
pub async fn probe_addr(
    server: SocketAddr,
    creds: Option<(String, String)>,
    sha256: bool,
    timeout: Duration,
    any_source: bool,
) -> Result<(ProbeReport, SocketAddr), ProbeError> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    let local = socket.local_addr()?;
    let kind = if sha256 {
        IntegrityKind::Sha256
    } else {
        IntegrityKind::Sha1
    };
    let password = creds
        .as_ref()
        .map(|(_, p)| Zeroizing::new(p.clone().into_bytes()));
    let mut tid = [0u8; 12];
    rand::rng().fill(&mut tid);
    let request = build_request(
        &tid,
        creds.as_ref().map(|(u, _)| u.as_str()),
        password.as_ref().map(|p| (kind, p.as_slice())),
    )?;

    let started = Instant::now();
    let deadline = started + timeout;
    let mut rto = INITIAL_RTO;
    let mut transmissions = 0;
    let mut buf = vec![0u8; 2048];
    loop {
        socket.send_to(&request, server).await?;
        transmissions += 1;
        let sent_at = Instant::now();
        let wait = if transmissions == MAX_TRANSMISSIONS {
            rto * FINAL_WAIT_RTOS
        } else {
            rto
        };
        let until = (sent_at + wait).min(deadline);
        while let Ok(received) =
            tokio::time::timeout_at(until.into(), socket.recv_from(&mut buf)).await
        {
            let (len, from) = received?;
            let reply = &buf[..len];
            if (!any_source && from != server) || !is_response_to(reply, &tid) {
                continue;
            }
            let rtt = sent_at.elapsed();
            let key = password.as_ref().map(|p| (kind, p.as_slice()));
            let report = report(reply, &tid, server, local, rtt, transmissions, key);
            return Ok((report, from));
        }
        if transmissions == MAX_TRANSMISSIONS || Instant::now() >= deadline {
            return Err(ProbeError::Timeout {
                server,
                transmissions,
                waited: started.elapsed(),
            });
        }
        rto *= 2;
    }
}

async fn resolve(target: &str) -> Result<SocketAddr, ProbeError> {
    let with_port = if target.parse::<SocketAddr>().is_ok() || has_port(target) {
        target.to_owned()
    } else {
        format!("{target}:{DEFAULT_PORT}")
    };
    let mut addrs = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|source| ProbeError::Resolve {
            target: target.to_owned(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| ProbeError::NoAddress(target.to_owned()))
}

/// "host:port" or "[v6]:port"; a bare IPv6 address has several colons and no port.
fn has_port(target: &str) -> bool {
    match target.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (host.starts_with('[') || !host.contains(':'))
        }
        None => false,
    }
}

/// The longest USERNAME sent (RFC 8489 §14.3: less than 509 bytes).
const MAX_USERNAME: usize = 508;

fn build_request(
    tid: &[u8; 12],
    username: Option<&str>,
    key: Option<(IntegrityKind, &[u8])>,
) -> Result<Vec<u8>, ProbeError> {
    let mut request = RequestBuilder::binding(*tid);
    if let (Some(username), Some((kind, key))) = (username, key) {
        if username.len() > MAX_USERNAME {
            return Err(ProbeError::BadCredential(format!(
                "username longer than {MAX_USERNAME} bytes"
            )));
        }
        request = request.username(username).integrity(kind, key);
    }
    Ok(request.fingerprint().build())
}

fn is_response_to(reply: &[u8], tid: &[u8; 12]) -> bool {
    wire::is_well_framed(reply)
        && reply.get(8..20) == Some(&tid[..])
        && matches!(
            u16::from_be_bytes([reply[0], reply[1]]),
            wire::msg_type::BINDING_SUCCESS | wire::msg_type::BINDING_ERROR
        )
}

fn report(
    reply: &[u8],
    tid: &[u8; 12],
    server: SocketAddr,
    local: SocketAddr,
    rtt: Duration,
    transmissions: u32,
    key: Option<(IntegrityKind, &[u8])>,
) -> ProbeReport {
    let decoded = MessageDecoderBuilder::default()
        .build()
        .decode(reply)
        .ok()
        .map(|(m, _)| m);
    let software = decoded
        .as_ref()
        .and_then(|m| m.get::<Software>())
        .and_then(|a| a.as_software().ok())
        .map(|s| s.as_str().to_owned());
    let error = decoded
        .as_ref()
        .and_then(|m| m.get::<ErrorCode>())
        .and_then(|a| a.as_error_code().ok())
        .map(|e| {
            (
                e.error_code().error_code(),
                e.error_code().reason().to_owned(),
            )
        });
    let reflexive = if error.is_some() {
        None
    } else {
        wire::attributes(reply)
            .find(|(k, _)| *k == wire::attr::XOR_MAPPED_ADDRESS)
            .and_then(|(_, v)| wire::decode_xor_mapped_address(v, tid))
            .or_else(|| {
                decoded
                    .as_ref()
                    .and_then(|m| m.get::<MappedAddress>())
                    .and_then(|a| a.as_mapped_address().ok())
                    .map(|a| *a.socket_address())
            })
            .or_else(|| {
                decoded
                    .as_ref()
                    .and_then(|m| m.get::<XorMappedAddress>())
                    .and_then(|a| a.as_xor_mapped_address().ok())
                    .map(|a| *a.socket_address())
            })
    };
    ProbeReport {
        server,
        local,
        reflexive,
        rtt,
        transmissions,
        integrity: key.map(|(kind, key)| wire::verify_integrity(reply, kind, key)),
        integrity_kind: key.map(|(kind, _)| kind),
        fingerprint: wire::fingerprint_status(reply),
        software,
        error,
    }
}

/// The server's reason phrase, or (servers that send none, as ours does to avoid
/// amplification) the RFC 8489 meaning of the code.
fn describe_error(code: u16, reason: &str) -> &str {
    if !reason.is_empty() {
        return reason;
    }
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        420 => "Unknown Attribute",
        438 => "Stale Nonce",
        487 => "Role Conflict",
        500 => "Server Error",
        _ => "(no reason given)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::credentials::IceSecret;
    use crate::ice::stun::StunResponder;
    use crate::ice::stun_server::{StunMetrics, StunServer};
    use crate::ratelimit::RateLimitConfig;
    use std::sync::Arc;
    use tokio::sync::watch;

    struct Server {
        addr: SocketAddr,
        secret: IceSecret,
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn server() -> Server {
        let s = StunServer::bind(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
        let addr = s.local_addrs()[0];
        let secret = IceSecret::from_bytes([3u8; 32]);
        let responder = Arc::new(StunResponder::new(secret.clone(), false));
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(s.run(
            responder,
            RateLimitConfig::default(),
            StunMetrics::new(),
            rx,
        ));
        Server {
            addr,
            secret,
            shutdown,
            task,
        }
    }

    async fn stop(s: Server) {
        s.shutdown.send(true).unwrap();
        s.task.await.unwrap();
    }

    fn now() -> u64 {
        crate::time::unix_now()
    }

    #[tokio::test]
    async fn plain_probe_reports_reflexive_address_and_fingerprint() {
        let s = server().await;
        let report = probe(&s.addr.to_string(), None, false, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            report.reflexive.map(|a| a.ip()),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            report.reflexive.map(|a| a.port()),
            Some(report.local.port())
        );
        assert_eq!(report.integrity, None);
        assert_eq!(report.fingerprint, Some(true));
        assert_eq!(report.error, None);
        assert_eq!(report.transmissions, 1);
        let text = report.to_string();
        assert!(text.contains("reflexive address: 127.0.0.1:"), "{text}");
        assert!(text.contains("fingerprint:       verified"));
        stop(s).await;
    }

    #[tokio::test]
    async fn authenticated_probe_verifies_integrity_both_kinds() {
        let s = server().await;
        let cred = s.secret.issue(now(), 600, rand::random());
        for sha256 in [false, true] {
            let creds = Some((
                format!("{}:probe", cred.ufrag),
                cred.password.as_str().to_owned(),
            ));
            let report = probe(&s.addr.to_string(), creds, sha256, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(report.integrity, Some(true));
            assert_eq!(report.fingerprint, Some(true));
            assert_eq!(report.software.as_deref(), Some(crate::ice::stun::SOFTWARE));
            assert!(report.reflexive.is_some());
            let want = if sha256 {
                "MESSAGE-INTEGRITY-SHA256"
            } else {
                "MESSAGE-INTEGRITY"
            };
            assert!(
                report
                    .to_string()
                    .contains(&format!("integrity:         verified ({want})"))
            );
        }
        stop(s).await;
    }

    #[tokio::test]
    async fn wrong_password_reports_401() {
        let s = server().await;
        let cred = s.secret.issue(now(), 600, rand::random());
        let creds = Some((cred.ufrag.clone(), "not-the-password".to_owned()));
        let report = probe(&s.addr.to_string(), creds, false, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.error, Some((401, String::new())), "no reason phrase");
        assert_eq!(report.integrity, Some(false));
        assert_eq!(report.reflexive, None);
        assert!(
            report
                .to_string()
                .contains("result:            error 401 Unauthenticated")
        );
        stop(s).await;
    }

    #[tokio::test]
    async fn silent_server_times_out_within_the_bound() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let started = Instant::now();
        let err = probe(&target, None, false, Duration::from_millis(1700))
            .await
            .unwrap_err();
        let ProbeError::Timeout { transmissions, .. } = err else {
            panic!("{err}")
        };
        // Sent at 0, 0.5 s and 1.5 s.
        assert_eq!(transmissions, 3);
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut buf = [0u8; 64];
        silent.set_nonblocking(true).unwrap();
        let mut seen = 0;
        while silent.recv_from(&mut buf).is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn requests_are_plain_or_authenticated_with_fingerprint() {
        let tid = [6u8; 12];
        let plain = build_request(&tid, None, None).unwrap();
        assert_eq!(
            wire::attributes(&plain).map(|(k, _)| k).collect::<Vec<_>>(),
            [wire::attr::FINGERPRINT]
        );
        let key = (IntegrityKind::Sha256, &b"password"[..]);
        let signed = build_request(&tid, Some("ufrag:probe"), Some(key)).unwrap();
        assert!(wire::verify_integrity(&signed, key.0, key.1));
        assert_eq!(wire::fingerprint_status(&signed), Some(true));
        let longest = "u".repeat(MAX_USERNAME);
        assert!(build_request(&tid, Some(&longest), Some(key)).is_ok());
        let too_long = "u".repeat(MAX_USERNAME + 1);
        assert!(matches!(
            build_request(&tid, Some(&too_long), Some(key)),
            Err(ProbeError::BadCredential(_))
        ));
    }

    #[test]
    fn targets_without_port_get_3478() {
        assert!(has_port("example.org:3478"));
        assert!(has_port("[::1]:3478"));
        assert!(!has_port("example.org"));
        assert!(!has_port("::1"));
    }
}
