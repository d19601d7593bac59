//! A small TURN client (RFC 8656) over UDP: what `commucat-cli doctor` uses to check
//! that the TURN credentials of `/api/p2p/assist` open a relay, and what the tests use
//! to prove them against coturn.
//!
//! [`allocate`] obtains a relayed address with the long-term credential mechanism (the
//! TURN REST credentials the daemon mints, or a static username and password). The
//! [`Allocation`] then creates permissions, sends data to peers in Send indications,
//! receives what peers send as Data indications, and refreshes or releases itself.
//! Channels (ChannelBind, ChannelData), TCP and TLS are not implemented.
//!
//! Messages are built and parsed with `stun-rs` (feature `turn`); MESSAGE-INTEGRITY and
//! FINGERPRINT are computed by `ice::stun`, so the long-term key lives in zeroizing
//! storage and MACs are compared in constant time (`stun-rs` derives the key, applying
//! the OpaqueString profile to realm and password, RFC 8489 §9.2.2).
//!
//! **Waiting.** Every operation that waits takes a timeout that bounds all of it, the
//! authentication round trips included. Within it, a request is retransmitted as RFC
//! 8489 §6.2.1 says: RTO 500 ms doubling, at most 7 transmissions, then 16 × RTO.
//!
//! **Responses.** Only datagrams from the server's address count. A response must carry
//! the request's transaction id and method; other transactions' responses (late answers
//! to earlier retransmissions) are ignored, and a Data indication that arrives while a
//! request waits is queued for [`Allocation::recv`] (at most 64; the oldest are dropped).
//!
//! **Authentication** (RFC 8489 §9.2). The first Allocate goes without credentials; the
//! 401 that answers it carries REALM and NONCE, and the request is repeated (a new
//! transaction) with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY. A 438 (Stale Nonce)
//! carries a new NONCE and the request is repeated with it; an operation makes at most
//! three requests. A 401 to a request that carried credentials is
//! [`TurnError::Unauthorized`]. A success response to an authenticated request must
//! carry a MESSAGE-INTEGRITY that verifies, else it is discarded as if never received (a
//! forged relayed address would steer the client's traffic). An error response is taken
//! without one (401 and 438 never carry one; another can only make the operation fail,
//! which anyone on the path can cause anyway), but one whose MESSAGE-INTEGRITY is wrong
//! is discarded.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    Data, LifeTime, RequestedAddressFamily, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, CREATE_PERMMISSION, DATA, REFRESH, SEND};
use stun_rs::{
    AddressFamily, Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder,
    MessageEncoderBuilder, MessageMethod, StunAttribute, StunMessage, StunMessageBuilder,
    TransactionId,
};
use tokio::net::UdpSocket;
use zeroize::Zeroizing;

use crate::ice::stun::{self as wire, IntegrityKind};

/// Initial retransmission timeout (RFC 8489 §6.2.1).
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Rc: total transmissions of one request.
const MAX_TRANSMISSIONS: u32 = 7;
/// Rm: the wait after the last transmission, in RTOs.
const FINAL_WAIT_RTOS: u32 = 16;
/// Requests of one operation: the first, after a 401, after a 438.
const MAX_ATTEMPTS: usize = 3;
/// Data indications kept while a request waits for its response.
const MAX_QUEUED: usize = 64;
/// Receive buffer: the largest UDP payload.
const RECV_BUFFER_LEN: usize = 65_536;
/// Room for the header and every attribute of a request besides DATA.
const REQUEST_CAPACITY: usize = 1024;

/// The largest payload of one Send indication: a UDP datagram over IPv4 (65 507 bytes)
/// less the header, XOR-PEER-ADDRESS of an IPv6 peer, the DATA header and FINGERPRINT,
/// with DATA padded to 4 bytes.
pub const MAX_DATA_LEN: usize = 65_448;

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no {operation} from {server} in {waited:?}")]
    Timeout {
        server: SocketAddr,
        /// What was awaited: `"Allocate response"`, …, `"Data indication"`.
        operation: &'static str,
        waited: Duration,
    },
    /// The server refused the credentials: 401 to a request that carried them, 441
    /// (Wrong Credentials), or 438 (Stale Nonce) again after a new nonce.
    #[error("credentials refused: {code} {reason}")]
    Unauthorized { code: u16, reason: String },
    /// Any other error response (403 Forbidden, 437 Allocation Mismatch, 440 Address
    /// Family not Supported, 486 Allocation Quota Reached, 508 Insufficient Capacity, …).
    #[error("TURN error response: {code} {reason}")]
    Refused { code: u16, reason: String },
    /// The server's answer breaks RFC 8656 (a required attribute missing, a response of
    /// another method to our transaction, …).
    #[error("TURN protocol error: {0}")]
    Protocol(String),
    /// The username or password cannot be sent (OpaqueString profile, length).
    #[error("credential rejected locally: {0}")]
    Credential(String),
    #[error("{len} bytes of data exceed the {max}-byte limit of a Send indication")]
    TooLarge { len: usize, max: usize },
    /// The allocation was released (refresh with lifetime 0); nothing more can be done.
    #[error("the allocation was released")]
    Released,
}

/// The address family of the relayed address (REQUESTED-ADDRESS-FAMILY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFamily {
    Ipv4,
    Ipv6,
}

/// How to allocate; the default leaves everything to the server.
#[derive(Debug, Clone, Default)]
pub struct AllocateOptions {
    /// REQUESTED-ADDRESS-FAMILY; `None` sends none (the server then relays on IPv4).
    pub family: Option<RelayFamily>,
    /// LIFETIME asked for, in seconds; `None` takes the server's default (600 s).
    pub lifetime: Option<u32>,
    /// Local address to bind; `None`: the unspecified address of the server's family.
    pub local: Option<SocketAddr>,
}

/// Allocates a relayed transport address on `server` with long-term credentials.
pub async fn allocate(
    server: SocketAddr,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<Allocation, TurnError> {
    allocate_with(
        server,
        username,
        password,
        &AllocateOptions::default(),
        timeout,
    )
    .await
}

/// [`allocate`] with options.
pub async fn allocate_with(
    server: SocketAddr,
    username: &str,
    password: &str,
    options: &AllocateOptions,
    timeout: Duration,
) -> Result<Allocation, TurnError> {
    let deadline = Instant::now() + timeout;
    let mut auth = Auth::new(username, password)?;
    let local = options.local.unwrap_or_else(|| match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    });
    let socket = UdpSocket::bind(local).await?;
    let local = socket.local_addr()?;
    let mut link = Link {
        socket,
        server,
        queued: VecDeque::new(),
        buf: vec![0u8; RECV_BUFFER_LEN],
    };
    let reply = transact(
        &mut link,
        &mut auth,
        ALLOCATE,
        &allocate_attributes(options),
        deadline,
    )
    .await?;
    let granted = allocation_from(&reply)?;
    Ok(Allocation {
        link,
        auth,
        local,
        relayed: granted.relayed,
        mapped: granted.mapped,
        lifetime: granted.lifetime,
        released: false,
    })
}

/// An allocation on a TURN server, with the socket it was made from.
///
/// Dropping it without [`Allocation::release`] sends one best-effort Refresh with
/// lifetime 0 (without waiting for the answer), so that the server frees the relay.
pub struct Allocation {
    link: Link,
    auth: Auth,
    local: SocketAddr,
    relayed: SocketAddr,
    mapped: SocketAddr,
    lifetime: Duration,
    released: bool,
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("server", &self.link.server)
            .field("local", &self.local)
            .field("relayed", &self.relayed)
            .field("mapped", &self.mapped)
            .field("lifetime", &self.lifetime)
            .field("realm", &self.realm())
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

impl Allocation {
    /// XOR-RELAYED-ADDRESS: where peers send to reach this client.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// XOR-MAPPED-ADDRESS: this client's address as the server sees it.
    pub fn mapped(&self) -> SocketAddr {
        self.mapped
    }

    /// The lifetime the server granted in the last Allocate or Refresh.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn server(&self) -> SocketAddr {
        self.link.server
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The REALM of the server's challenge; `None` if it asked for no credentials.
    pub fn realm(&self) -> Option<&str> {
        self.auth.session.as_ref().map(|s| s.realm.as_str())
    }

    /// Installs (or refreshes, for 300 s) a permission for `peer`: from then on the
    /// relay passes datagrams from that IP address, any port, to this client (RFC 8656
    /// §9). Only the IP address of a permission counts.
    pub async fn create_permission(
        &mut self,
        peer: IpAddr,
        timeout: Duration,
    ) -> Result<(), TurnError> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let peer = XorPeerAddress::from(SocketAddr::new(peer, 0));
        transact(
            &mut self.link,
            &mut self.auth,
            CREATE_PERMMISSION,
            &[peer.into()],
            deadline,
        )
        .await?;
        Ok(())
    }

    /// Sends `data` to `peer` through the relay (a Send indication). Nothing is awaited
    /// but the socket: indications are not answered, and the relay drops data to a peer
    /// without a permission.
    pub async fn send(&self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        self.check_open()?;
        let indication = send_indication(&new_transaction_id(), peer, data)?;
        self.link
            .socket
            .send_to(&indication, self.link.server)
            .await?;
        Ok(())
    }

    /// The next datagram a peer sent to the relayed address (a Data indication): the
    /// peer's address and the data.
    pub async fn recv(&mut self, timeout: Duration) -> Result<(SocketAddr, Vec<u8>), TurnError> {
        if let Some(queued) = self.link.queued.pop_front() {
            return Ok(queued);
        }
        self.check_open()?;
        let started = Instant::now();
        let deadline = started + timeout;
        while let Some((len, from)) = self.link.recv_until(deadline).await? {
            if !self.link.is_server(from) {
                continue;
            }
            if let Incoming::Data { peer, data } = classify(&self.link.buf[..len], None, None)? {
                return Ok((peer, data));
            }
        }
        Err(TurnError::Timeout {
            server: self.link.server,
            operation: "Data indication",
            waited: started.elapsed(),
        })
    }

    /// Refreshes the allocation for `lifetime` seconds and returns what the server
    /// granted. Lifetime 0 deletes the allocation (see [`Allocation::release`]).
    pub async fn refresh(
        &mut self,
        lifetime: u32,
        timeout: Duration,
    ) -> Result<Duration, TurnError> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let result = transact(
            &mut self.link,
            &mut self.auth,
            REFRESH,
            &[LifeTime::new(lifetime).into()],
            deadline,
        )
        .await;
        let reply = match result {
            Ok(reply) => reply,
            // RFC 8656 §8: a 437 to a deletion means the allocation is already gone
            // (the answer to an earlier transmission was lost).
            Err(TurnError::Refused { code: 437, .. }) if lifetime == 0 => {
                self.released = true;
                return Ok(Duration::ZERO);
            }
            Err(e) => return Err(e),
        };
        let granted = lifetime_of(&reply)
            .ok_or_else(|| TurnError::Protocol("Refresh success without LIFETIME".into()))?;
        self.lifetime = granted;
        if lifetime == 0 {
            self.released = true;
        }
        Ok(granted)
    }

    /// Deletes the allocation: a Refresh with lifetime 0.
    pub async fn release(mut self, timeout: Duration) -> Result<(), TurnError> {
        self.refresh(0, timeout).await.map(|_| ())
    }

    fn check_open(&self) -> Result<(), TurnError> {
        if self.released {
            Err(TurnError::Released)
        } else {
            Ok(())
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let lifetime: StunAttribute = LifeTime::new(0).into();
        if let Ok(request) = encode_request(REFRESH, &new_transaction_id(), &[lifetime], &self.auth)
        {
            // Best effort: a full socket buffer or a stale nonce leaves the allocation
            // to expire on its own.
            let _ = self.link.socket.try_send_to(&request, self.link.server);
        }
    }
}

/// The long-term credential, and what the server's challenge added to it.
struct Auth {
    username: String,
    password: Zeroizing<String>,
    /// `None` until the server asks for credentials (401).
    session: Option<Session>,
}

struct Session {
    realm: Realm,
    nonce: Nonce,
    /// MD5(username ":" realm ":" password), RFC 8489 §9.2.2.
    key: Zeroizing<Vec<u8>>,
}

impl Auth {
    fn new(username: &str, password: &str) -> Result<Self, TurnError> {
        UserName::new(username).map_err(|e| TurnError::Credential(format!("username: {e}")))?;
        Ok(Self {
            username: username.to_owned(),
            password: Zeroizing::new(password.to_owned()),
            session: None,
        })
    }

    /// Takes NONCE (and REALM, required the first time) from a 401 or 438.
    fn challenge(&mut self, reply: &StunMessage, code: u16) -> Result<(), TurnError> {
        let nonce = reply
            .get::<Nonce>()
            .and_then(|a| a.as_nonce().ok())
            .cloned()
            .ok_or_else(|| TurnError::Protocol(format!("{code} response without NONCE")))?;
        let realm = reply
            .get::<Realm>()
            .and_then(|a| a.as_realm().ok())
            .cloned()
            .or_else(|| self.session.as_ref().map(|s| s.realm.clone()))
            .ok_or_else(|| TurnError::Protocol(format!("{code} response without REALM")))?;
        let key = HMACKey::new_long_term(
            &self.username,
            realm.as_str(),
            self.password.as_str(),
            Algorithm::from(AlgorithmId::MD5),
        )
        .map_err(|e| TurnError::Credential(format!("password or realm: {e}")))?;
        self.session = Some(Session {
            realm,
            nonce,
            key: Zeroizing::new(key.as_bytes().to_vec()),
        });
        Ok(())
    }
}

/// The socket, the server, and the Data indications received while a request waited.
struct Link {
    socket: UdpSocket,
    server: SocketAddr,
    queued: VecDeque<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
}

impl Link {
    fn is_server(&self, from: SocketAddr) -> bool {
        from.port() == self.server.port()
            && from.ip().to_canonical() == self.server.ip().to_canonical()
    }

    /// One datagram, or `None` once `until` has passed.
    async fn recv_until(
        &mut self,
        until: Instant,
    ) -> Result<Option<(usize, SocketAddr)>, TurnError> {
        match tokio::time::timeout_at(until.into(), self.socket.recv_from(&mut self.buf)).await {
            Ok(received) => Ok(Some(received?)),
            Err(_) => Ok(None),
        }
    }

    fn queue(&mut self, peer: SocketAddr, data: Vec<u8>) {
        if self.queued.len() == MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back((peer, data));
    }

    /// Sends `request` and retransmits it until its response arrives or `deadline`.
    async fn exchange(
        &mut self,
        request: &[u8],
        expect: (&[u8; 12], MessageMethod),
        key: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, TurnError> {
        let started = Instant::now();
        let mut rto = INITIAL_RTO;
        for transmission in 1..=MAX_TRANSMISSIONS {
            self.socket.send_to(request, self.server).await?;
            let wait = if transmission == MAX_TRANSMISSIONS {
                rto * FINAL_WAIT_RTOS
            } else {
                rto
            };
            let until = (Instant::now() + wait).min(deadline);
            while let Some((len, from)) = self.recv_until(until).await? {
                if !self.is_server(from) {
                    continue;
                }
                match classify(&self.buf[..len], Some(expect), key)? {
                    Incoming::Response(response) => return Ok(response),
                    Incoming::Data { peer, data } => self.queue(peer, data),
                    Incoming::Discard(why) => {
                        tracing::debug!(server = %self.server, why, "TURN datagram discarded");
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            rto *= 2;
        }
        Err(TurnError::Timeout {
            server: self.server,
            operation: response_name(expect.1),
            waited: started.elapsed(),
        })
    }
}

/// One request/response exchange with the authentication dance around it.
async fn transact(
    link: &mut Link,
    auth: &mut Auth,
    method: MessageMethod,
    attributes: &[StunAttribute],
    deadline: Instant,
) -> Result<StunMessage, TurnError> {
    let mut last = (0, String::new());
    for _ in 0..MAX_ATTEMPTS {
        let tid = new_transaction_id();
        let request = encode_request(method, &tid, attributes, auth)?;
        let key = auth.session.as_ref().map(|s| s.key.clone());
        let response = link
            .exchange(
                &request,
                (&tid, method),
                key.as_deref().map(Vec::as_slice),
                deadline,
            )
            .await?;
        let (code, reason, reply) = match response {
            Response::Success(reply) => return Ok(reply),
            Response::Error {
                code,
                reason,
                message,
            } => (code, reason, message),
        };
        match code {
            401 if auth.session.is_none() => auth.challenge(&reply, code)?,
            438 => auth.challenge(&reply, code)?,
            401 | 441 => return Err(TurnError::Unauthorized { code, reason }),
            _ => return Err(TurnError::Refused { code, reason }),
        }
        last = (code, reason);
    }
    let (code, reason) = last;
    Err(TurnError::Unauthorized { code, reason })
}

fn response_name(method: MessageMethod) -> &'static str {
    match method {
        ALLOCATE => "Allocate response",
        REFRESH => "Refresh response",
        CREATE_PERMMISSION => "CreatePermission response",
        _ => "response",
    }
}

fn new_transaction_id() -> [u8; 12] {
    let mut tid = [0u8; 12];
    rand::rng().fill(&mut tid);
    tid
}

fn allocate_attributes(options: &AllocateOptions) -> Vec<StunAttribute> {
    let mut attributes: Vec<StunAttribute> =
        vec![RequestedTrasport::new(stun_rs::protocols::UDP).into()];
    if let Some(family) = options.family {
        let family = match family {
            RelayFamily::Ipv4 => AddressFamily::IPv4,
            RelayFamily::Ipv6 => AddressFamily::IPv6,
        };
        attributes.push(RequestedAddressFamily::new(family).into());
    }
    if let Some(lifetime) = options.lifetime {
        attributes.push(LifeTime::new(lifetime).into());
    }
    attributes
}

fn encode(message: &StunMessage, capacity: usize) -> Result<Vec<u8>, TurnError> {
    let mut out = vec![0u8; capacity];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, message)
        .map_err(|e| TurnError::Protocol(format!("cannot encode a message: {e}")))?;
    out.truncate(len);
    Ok(out)
}

/// A request: `attributes`, then (once challenged) USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY, then FINGERPRINT.
fn encode_request(
    method: MessageMethod,
    tid: &[u8; 12],
    attributes: &[StunAttribute],
    auth: &Auth,
) -> Result<Vec<u8>, TurnError> {
    let mut builder = StunMessageBuilder::new(method, MessageClass::Request)
        .with_transaction_id(TransactionId::from(*tid));
    for attribute in attributes {
        builder = builder.with_attribute(attribute.clone());
    }
    if let Some(session) = &auth.session {
        let username = UserName::new(&auth.username)
            .map_err(|e| TurnError::Credential(format!("username: {e}")))?;
        builder = builder
            .with_attribute(username)
            .with_attribute(session.realm.clone())
            .with_attribute(session.nonce.clone());
    }
    let mut out = encode(&builder.build(), REQUEST_CAPACITY)?;
    if let Some(session) = &auth.session {
        wire::append_integrity(&mut out, IntegrityKind::Sha1, &session.key);
    }
    wire::append_fingerprint(&mut out);
    Ok(out)
}

/// A Send indication: XOR-PEER-ADDRESS, DATA, FINGERPRINT (indications carry no
/// MESSAGE-INTEGRITY, RFC 8656 §11.1).
fn send_indication(tid: &[u8; 12], peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, TurnError> {
    if data.len() > MAX_DATA_LEN {
        return Err(TurnError::TooLarge {
            len: data.len(),
            max: MAX_DATA_LEN,
        });
    }
    let message = StunMessageBuilder::new(SEND, MessageClass::Indication)
        .with_transaction_id(TransactionId::from(*tid))
        .with_attribute(XorPeerAddress::from(peer))
        .with_attribute(Data::new(data))
        .build();
    let mut out = encode(&message, REQUEST_CAPACITY + data.len())?;
    wire::append_fingerprint(&mut out);
    Ok(out)
}

/// The response to the transaction being waited for.
#[derive(Debug)]
enum Response {
    Success(StunMessage),
    Error {
        code: u16,
        reason: String,
        message: StunMessage,
    },
}

/// What one datagram from the server is.
#[derive(Debug)]
enum Incoming {
    Response(Response),
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// Not STUN, a wrong FINGERPRINT or MESSAGE-INTEGRITY, another transaction, …
    Discard(&'static str),
}

/// Sorts one datagram from the server. `expect` is the transaction waited for, `key`
/// the long-term key when the request carried MESSAGE-INTEGRITY. `Err` only for a
/// response to our transaction that breaks the protocol.
fn classify(
    packet: &[u8],
    expect: Option<(&[u8; 12], MessageMethod)>,
    key: Option<&[u8]>,
) -> Result<Incoming, TurnError> {
    if wire::fingerprint_status(packet) == Some(false) {
        return Ok(Incoming::Discard("FINGERPRINT does not match"));
    }
    let Ok((message, _)) = MessageDecoderBuilder::default().build().decode(packet) else {
        return Ok(Incoming::Discard("not a STUN message"));
    };
    if message.class() == MessageClass::Indication && message.method() == DATA {
        let peer = message
            .get::<XorPeerAddress>()
            .and_then(|a| a.as_xor_peer_address().ok())
            .map(|a| *a.socket_address());
        let data = message
            .get::<Data>()
            .and_then(|a| a.as_data().ok())
            .map(|d| d.as_bytes().to_vec());
        return Ok(match (peer, data) {
            (Some(peer), Some(data)) => Incoming::Data { peer, data },
            _ => Incoming::Discard("Data indication without XOR-PEER-ADDRESS or DATA"),
        });
    }
    let Some((tid, method)) = expect else {
        return Ok(Incoming::Discard("no transaction waiting"));
    };
    if message.transaction_id().as_bytes() != tid {
        return Ok(Incoming::Discard("another transaction"));
    }
    let class = message.class();
    if message.method() != method
        || !matches!(
            class,
            MessageClass::SuccessResponse | MessageClass::ErrorResponse
        )
    {
        return Err(TurnError::Protocol(format!(
            "a {class:?} of method {:#05x} answered our {} request",
            message.method().as_u16(),
            response_name(method)
        )));
    }
    if let Some(key) = key {
        let has_integrity = message.get::<MessageIntegrity>().is_some()
            || message.get::<MessageIntegritySha256>().is_some();
        if has_integrity && !wire::verify_integrity(packet, IntegrityKind::Sha1, key) {
            return Ok(Incoming::Discard("MESSAGE-INTEGRITY does not verify"));
        }
        if !has_integrity && class == MessageClass::SuccessResponse {
            return Ok(Incoming::Discard(
                "success response without MESSAGE-INTEGRITY",
            ));
        }
    }
    if class == MessageClass::SuccessResponse {
        return Ok(Incoming::Response(Response::Success(message)));
    }
    let (code, reason) = message
        .get::<ErrorCode>()
        .and_then(|a| a.as_error_code().ok())
        .map(|e| {
            (
                e.error_code().error_code(),
                e.error_code().reason().to_owned(),
            )
        })
        .ok_or_else(|| TurnError::Protocol("error response without ERROR-CODE".into()))?;
    Ok(Incoming::Response(Response::Error {
        code,
        reason,
        message,
    }))
}

/// What an Allocate success response grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Granted {
    relayed: SocketAddr,
    mapped: SocketAddr,
    lifetime: Duration,
}

fn allocation_from(reply: &StunMessage) -> Result<Granted, TurnError> {
    let missing = |name: &str| TurnError::Protocol(format!("Allocate success without {name}"));
    let relayed = reply
        .get::<XorRelayedAddress>()
        .and_then(|a| a.as_xor_relayed_address().ok())
        .map(|a| *a.socket_address())
        .ok_or_else(|| missing("XOR-RELAYED-ADDRESS"))?;
    let mapped = reply
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address())
        .ok_or_else(|| missing("XOR-MAPPED-ADDRESS"))?;
    let lifetime = lifetime_of(reply).ok_or_else(|| missing("LIFETIME"))?;
    Ok(Granted {
        relayed,
        mapped,
        lifetime,
    })
}

fn lifetime_of(reply: &StunMessage) -> Option<Duration> {
    reply
        .get::<LifeTime>()
        .and_then(|a| a.as_life_time().ok())
        .map(|l| Duration::from_secs(u64::from(l.as_u32())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_rs::attributes::stun::Fingerprint;
    use stun_rs::{DecoderContextBuilder, protocols};

    const USER: &str = "alice";
    const REALM: &str = "commucat.test";
    const PASSWORD: &str = "s3cret";
    /// MD5("alice:commucat.test:s3cret"), computed independently of `stun-rs`.
    const KEY: [u8; 16] = [
        82, 175, 13, 90, 107, 240, 182, 222, 160, 49, 8, 73, 22, 146, 128, 139,
    ];
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn relayed() -> SocketAddr {
        "192.0.2.10:50000".parse().unwrap()
    }

    fn mapped() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    fn peer() -> SocketAddr {
        "[2001:db8::7]:4242".parse().unwrap()
    }

    fn decode(packet: &[u8]) -> StunMessage {
        MessageDecoderBuilder::default()
            .build()
            .decode(packet)
            .unwrap()
            .0
    }

    /// The server's key, derived by `stun-rs`.
    fn server_key(password: &str) -> HMACKey {
        HMACKey::new_long_term(USER, REALM, password, Algorithm::from(AlgorithmId::MD5)).unwrap()
    }

    /// A message as a server would send it, encoded by `stun-rs` alone (its own
    /// MESSAGE-INTEGRITY when `key` is given), with FINGERPRINT.
    fn message(
        method: MessageMethod,
        class: MessageClass,
        tid: &[u8; 12],
        attributes: Vec<StunAttribute>,
        key: Option<HMACKey>,
    ) -> Vec<u8> {
        let mut builder =
            StunMessageBuilder::new(method, class).with_transaction_id(TransactionId::from(*tid));
        for attribute in attributes {
            builder = builder.with_attribute(attribute);
        }
        if let Some(key) = key {
            builder = builder.with_attribute(MessageIntegrity::new(key));
        }
        builder = builder.with_attribute(Fingerprint::default());
        encode(&builder.build(), 2048).unwrap()
    }

    fn error(
        method: MessageMethod,
        tid: &[u8; 12],
        code: u16,
        extra: Vec<StunAttribute>,
        key: Option<HMACKey>,
    ) -> Vec<u8> {
        let code = stun_rs::ErrorCode::new(code, "Because").unwrap();
        let mut attributes = vec![ErrorCode::from(code).into()];
        attributes.extend(extra);
        message(method, MessageClass::ErrorResponse, tid, attributes, key)
    }

    fn challenge(nonce: &str) -> Vec<StunAttribute> {
        vec![
            Realm::new(REALM).unwrap().into(),
            Nonce::new(nonce).unwrap().into(),
        ]
    }

    fn allocate_success(tid: &[u8; 12], key: Option<HMACKey>) -> Vec<u8> {
        let attributes = vec![
            XorRelayedAddress::from(relayed()).into(),
            XorMappedAddress::from(mapped()).into(),
            LifeTime::new(600).into(),
        ];
        message(
            ALLOCATE,
            MessageClass::SuccessResponse,
            tid,
            attributes,
            key,
        )
    }

    fn data_indication(tid: &[u8; 12], from: SocketAddr, data: &[u8]) -> Vec<u8> {
        let attributes = vec![XorPeerAddress::from(from).into(), Data::new(data).into()];
        message(DATA, MessageClass::Indication, tid, attributes, None)
    }

    fn challenged(nonce: &str) -> Auth {
        let mut auth = Auth::new(USER, PASSWORD).unwrap();
        let reply = decode(&error(ALLOCATE, &[1; 12], 401, challenge(nonce), None));
        auth.challenge(&reply, 401).unwrap();
        auth
    }

    fn tid_of(m: &StunMessage) -> [u8; 12] {
        *m.transaction_id().as_bytes()
    }

    #[test]
    fn first_allocate_asks_for_a_udp_relay_without_credentials() {
        let auth = Auth::new(USER, PASSWORD).unwrap();
        let options = AllocateOptions {
            family: Some(RelayFamily::Ipv6),
            lifetime: Some(300),
            local: None,
        };
        let tid = [7u8; 12];
        let request =
            encode_request(ALLOCATE, &tid, &allocate_attributes(&options), &auth).unwrap();
        assert_eq!(wire::fingerprint_status(&request), Some(true));
        let m = decode(&request);
        assert_eq!((m.method(), m.class()), (ALLOCATE, MessageClass::Request));
        assert_eq!(tid_of(&m), tid);
        let transport = m.get::<RequestedTrasport>().unwrap();
        assert_eq!(
            transport.as_requested_trasport().unwrap().protocol(),
            protocols::UDP
        );
        let family = m.get::<RequestedAddressFamily>().unwrap();
        assert_eq!(
            family.as_requested_address_family().unwrap().family(),
            AddressFamily::IPv6
        );
        assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &300);
        assert!(m.get::<UserName>().is_none());
        assert!(m.get::<MessageIntegrity>().is_none());
        let plain = encode_request(
            ALLOCATE,
            &tid,
            &allocate_attributes(&AllocateOptions::default()),
            &auth,
        )
        .unwrap();
        // REQUESTED-TRANSPORT and FINGERPRINT only.
        assert_eq!(decode(&plain).attributes().len(), 2);
    }

    #[test]
    fn challenge_takes_realm_and_nonce_and_derives_the_long_term_key() {
        let auth = challenged("nonce-1");
        let session = auth.session.as_ref().unwrap();
        assert_eq!(session.realm.as_str(), REALM);
        assert_eq!(session.nonce.as_str(), "nonce-1");
        assert_eq!(session.key.as_slice(), &KEY);
    }

    #[test]
    fn a_challenge_needs_a_nonce_and_a_realm_once() {
        let mut auth = Auth::new(USER, PASSWORD).unwrap();
        let bare = decode(&error(ALLOCATE, &[1; 12], 401, vec![], None));
        assert!(matches!(
            auth.challenge(&bare, 401),
            Err(TurnError::Protocol(e)) if e.contains("NONCE")
        ));
        let nonce_only = vec![Nonce::new("n1").unwrap().into()];
        let no_realm = decode(&error(ALLOCATE, &[1; 12], 401, nonce_only.clone(), None));
        assert!(matches!(
            auth.challenge(&no_realm, 401),
            Err(TurnError::Protocol(e)) if e.contains("REALM")
        ));
        // A 438 may leave REALM out once it is known.
        let mut auth = challenged("n0");
        let stale = decode(&error(ALLOCATE, &[1; 12], 438, nonce_only, None));
        auth.challenge(&stale, 438).unwrap();
        let session = auth.session.as_ref().unwrap();
        assert_eq!(
            (session.realm.as_str(), session.nonce.as_str()),
            (REALM, "n1")
        );
    }

    #[test]
    fn authenticated_request_carries_a_mac_the_server_verifies() {
        let auth = challenged("nonce-1");
        let tid = [9u8; 12];
        let request = encode_request(REFRESH, &tid, &[LifeTime::new(0).into()], &auth).unwrap();
        // The server side: stun-rs validates MESSAGE-INTEGRITY and FINGERPRINT with its
        // own key.
        let validating = |password: &str| {
            let ctx = DecoderContextBuilder::default()
                .with_key(server_key(password))
                .with_validation()
                .build();
            MessageDecoderBuilder::default()
                .with_context(ctx)
                .build()
                .decode(&request)
                .map(|(m, _)| m)
        };
        let m = validating(PASSWORD).unwrap();
        assert_eq!((m.method(), m.class()), (REFRESH, MessageClass::Request));
        assert_eq!(
            m.get::<UserName>()
                .unwrap()
                .as_user_name()
                .unwrap()
                .as_str(),
            USER
        );
        assert_eq!(
            m.get::<Realm>().unwrap().as_realm().unwrap().as_str(),
            REALM
        );
        assert_eq!(
            m.get::<Nonce>().unwrap().as_nonce().unwrap().as_str(),
            "nonce-1"
        );
        assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &0);
        assert!(validating("wrong").is_err());
        assert!(wire::verify_integrity(&request, IntegrityKind::Sha1, &KEY));
        assert_eq!(wire::fingerprint_status(&request), Some(true));
    }

    #[test]
    fn send_indication_carries_peer_and_data_and_no_mac() {
        let tid = [4u8; 12];
        let indication = send_indication(&tid, peer(), b"hello").unwrap();
        let m = decode(&indication);
        assert_eq!((m.method(), m.class()), (SEND, MessageClass::Indication));
        let to = m.get::<XorPeerAddress>().unwrap();
        assert_eq!(*to.as_xor_peer_address().unwrap().socket_address(), peer());
        assert_eq!(
            m.get::<Data>().unwrap().as_data().unwrap().as_bytes(),
            b"hello"
        );
        assert!(m.get::<MessageIntegrity>().is_none());
        assert_eq!(wire::fingerprint_status(&indication), Some(true));
        let largest = send_indication(&tid, peer(), &vec![0; MAX_DATA_LEN]).unwrap();
        assert!(largest.len() <= 65_507, "{}", largest.len());
        assert!(matches!(
            send_indication(&tid, peer(), &vec![0; MAX_DATA_LEN + 1]),
            Err(TurnError::TooLarge { len, .. }) if len == MAX_DATA_LEN + 1
        ));
    }

    #[test]
    fn a_success_counts_only_with_a_mac_that_verifies() {
        let tid = [3u8; 12];
        let expect = Some((&tid, ALLOCATE));
        let good = allocate_success(&tid, Some(server_key(PASSWORD)));
        let Incoming::Response(Response::Success(m)) = classify(&good, expect, Some(&KEY)).unwrap()
        else {
            panic!("a valid success response was not taken");
        };
        assert_eq!(
            allocation_from(&m).unwrap(),
            Granted {
                relayed: relayed(),
                mapped: mapped(),
                lifetime: Duration::from_secs(600),
            }
        );
        let forged = allocate_success(&tid, Some(server_key("guess")));
        assert!(matches!(
            classify(&forged, expect, Some(&KEY)).unwrap(),
            Incoming::Discard(why) if why.contains("MESSAGE-INTEGRITY")
        ));
        let bare = allocate_success(&tid, None);
        assert!(matches!(
            classify(&bare, expect, Some(&KEY)).unwrap(),
            Incoming::Discard(why) if why.contains("without MESSAGE-INTEGRITY")
        ));
        // A server that asked for no credentials sends none.
        assert!(matches!(
            classify(&bare, expect, None).unwrap(),
            Incoming::Response(Response::Success(_))
        ));
        let mut corrupt = good.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(matches!(
            classify(&corrupt, expect, Some(&KEY)).unwrap(),
            Incoming::Discard(why) if why.contains("FINGERPRINT")
        ));
    }

    #[test]
    fn a_response_must_match_transaction_and_method() {
        let tid = [3u8; 12];
        let other = allocate_success(&[4u8; 12], None);
        assert!(matches!(
            classify(&other, Some((&tid, ALLOCATE)), None).unwrap(),
            Incoming::Discard("another transaction")
        ));
        let ours = allocate_success(&tid, None);
        assert!(matches!(
            classify(&ours, Some((&tid, REFRESH)), None),
            Err(TurnError::Protocol(_))
        ));
        assert!(matches!(
            classify(&ours, None, None).unwrap(),
            Incoming::Discard(_)
        ));
        assert!(matches!(
            classify(b"not STUN at all", Some((&tid, ALLOCATE)), None).unwrap(),
            Incoming::Discard("not a STUN message")
        ));
    }

    #[test]
    fn error_responses_give_code_and_reason() {
        let tid = [5u8; 12];
        let expect = Some((&tid, CREATE_PERMMISSION));
        let forbidden = error(CREATE_PERMMISSION, &tid, 403, vec![], None);
        assert!(matches!(
            classify(&forbidden, expect, Some(&KEY)).unwrap(),
            Incoming::Response(Response::Error { code: 403, reason, .. }) if reason == "Because"
        ));
        let signed = error(
            CREATE_PERMMISSION,
            &tid,
            403,
            vec![],
            Some(server_key(PASSWORD)),
        );
        assert!(matches!(
            classify(&signed, expect, Some(&KEY)).unwrap(),
            Incoming::Response(Response::Error { code: 403, .. })
        ));
        let forged = error(CREATE_PERMMISSION, &tid, 403, vec![], Some(server_key("x")));
        assert!(matches!(
            classify(&forged, expect, Some(&KEY)).unwrap(),
            Incoming::Discard(_)
        ));
        let no_code = message(
            CREATE_PERMMISSION,
            MessageClass::ErrorResponse,
            &tid,
            vec![],
            None,
        );
        assert!(matches!(
            classify(&no_code, expect, None),
            Err(TurnError::Protocol(_))
        ));
    }

    #[test]
    fn data_indications_are_parsed() {
        let indication = data_indication(&[6; 12], peer(), b"payload");
        assert!(matches!(
            classify(&indication, None, None).unwrap(),
            Incoming::Data { peer: p, data } if p == peer() && data == b"payload"
        ));
        // Also while a transaction waits, whatever its id.
        assert!(matches!(
            classify(&indication, Some((&[6; 12], ALLOCATE)), Some(&KEY)).unwrap(),
            Incoming::Data { .. }
        ));
        let empty = message(DATA, MessageClass::Indication, &[6; 12], vec![], None);
        assert!(matches!(
            classify(&empty, None, None).unwrap(),
            Incoming::Discard(_)
        ));
    }

    #[test]
    fn allocate_success_needs_relayed_mapped_and_lifetime() {
        let reply = decode(&message(
            ALLOCATE,
            MessageClass::SuccessResponse,
            &[1; 12],
            vec![
                XorRelayedAddress::from(relayed()).into(),
                LifeTime::new(600).into(),
            ],
            None,
        ));
        assert!(matches!(
            allocation_from(&reply),
            Err(TurnError::Protocol(e)) if e.contains("XOR-MAPPED-ADDRESS")
        ));
    }

    #[test]
    fn bad_usernames_are_refused_locally() {
        assert!(matches!(
            Auth::new(&"u".repeat(600), PASSWORD),
            Err(TurnError::Credential(_))
        ));
    }

    /// What a scripted server does with one request: the datagrams it answers with.
    type Step = Box<dyn FnOnce(&StunMessage, &[u8]) -> Vec<Vec<u8>> + Send>;

    /// A scripted TURN server on loopback: the n-th request it receives gets the n-th
    /// step's answers.
    async fn scripted(script: Vec<Step>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            for step in script {
                let (len, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
                    .await
                    .expect("the client sent its next request")
                    .unwrap();
                let request = &buf[..len];
                for datagram in step(&decode(request), request) {
                    socket.send_to(&datagram, from).await.unwrap();
                }
            }
        });
        (addr, task)
    }

    fn nonce_of(m: &StunMessage) -> Option<String> {
        m.get::<Nonce>()
            .map(|n| n.as_nonce().unwrap().as_str().to_owned())
    }

    #[tokio::test]
    async fn allocation_with_a_scripted_server() {
        let early_peer: SocketAddr = "203.0.113.9:7000".parse().unwrap();
        let script: Vec<Step> = vec![
            Box::new(|m, _| {
                assert!(m.get::<UserName>().is_none());
                vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]
            }),
            Box::new(|m, raw| {
                assert_eq!(nonce_of(m).as_deref(), Some("n1"));
                assert!(wire::verify_integrity(raw, IntegrityKind::Sha1, &KEY));
                let stale = vec![Nonce::new("n2").unwrap().into()];
                vec![error(ALLOCATE, &tid_of(m), 438, stale, None)]
            }),
            Box::new(move |m, raw| {
                assert_eq!(nonce_of(m).as_deref(), Some("n2"));
                assert!(wire::verify_integrity(raw, IntegrityKind::Sha1, &KEY));
                let tid = tid_of(m);
                vec![
                    allocate_success(&[0; 12], Some(server_key(PASSWORD))),
                    allocate_success(&tid, Some(server_key("forged"))),
                    data_indication(&[2; 12], early_peer, b"early"),
                    allocate_success(&tid, Some(server_key(PASSWORD))),
                ]
            }),
            Box::new(|m, _| {
                assert_eq!(m.method(), CREATE_PERMMISSION);
                let to = m.get::<XorPeerAddress>().unwrap();
                let to = to.as_xor_peer_address().unwrap().socket_address().ip();
                assert_eq!(to, peer().ip());
                vec![error(CREATE_PERMMISSION, &tid_of(m), 403, vec![], None)]
            }),
            Box::new(|m, _| {
                assert_eq!(m.method(), REFRESH);
                assert_eq!(m.get::<LifeTime>().unwrap().as_life_time().unwrap(), &0);
                vec![error(REFRESH, &tid_of(m), 437, vec![], None)]
            }),
        ];
        let (server, task) = scripted(script).await;
        let mut allocation = allocate(server, USER, PASSWORD, TIMEOUT).await.unwrap();
        assert_eq!(allocation.relayed(), relayed());
        assert_eq!(allocation.mapped(), mapped());
        assert_eq!(allocation.lifetime(), Duration::from_secs(600));
        assert_eq!(allocation.realm(), Some(REALM));
        assert_eq!(allocation.server(), server);
        // The Data indication that came while Allocate waited was kept.
        assert_eq!(
            allocation.recv(TIMEOUT).await.unwrap(),
            (early_peer, b"early".to_vec())
        );
        assert!(matches!(
            allocation.create_permission(peer().ip(), TIMEOUT).await,
            Err(TurnError::Refused { code: 403, .. })
        ));
        // 437 to a deletion: already gone.
        assert_eq!(
            allocation.refresh(0, TIMEOUT).await.unwrap(),
            Duration::ZERO
        );
        assert!(matches!(
            allocation.send(peer(), b"x").await,
            Err(TurnError::Released)
        ));
        assert!(matches!(
            allocation.create_permission(peer().ip(), TIMEOUT).await,
            Err(TurnError::Released)
        ));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_credentials_are_unauthorized() {
        let script: Vec<Step> = vec![
            Box::new(|m, _| vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]),
            Box::new(|m, _| vec![error(ALLOCATE, &tid_of(m), 401, challenge("n1"), None)]),
        ];
        let (server, task) = scripted(script).await;
        let err = allocate(server, USER, "wrong", TIMEOUT).await.unwrap_err();
        assert!(
            matches!(&err, TurnError::Unauthorized { code: 401, reason } if reason == "Because"),
            "{err}"
        );
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out_within_the_callers_bound() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = silent.local_addr().unwrap();
        let started = Instant::now();
        let err = allocate(server, USER, PASSWORD, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TurnError::Timeout {
                    operation: "Allocate response",
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Retransmitted at 0 and 500 ms: one transmission within 300 ms.
        let mut buf = [0u8; 512];
        let (len, _) = silent.recv_from(&mut buf).await.unwrap();
        assert_eq!(decode(&buf[..len]).method(), ALLOCATE);
    }
}
