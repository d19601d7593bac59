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
mod link;
mod message;
#[cfg(test)]
mod tests;

use link::*;
use message::*;
