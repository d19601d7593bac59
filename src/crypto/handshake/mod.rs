//! The hybrid handshake of PROTOCOL.md §4 as two sans-I/O state machines.
//!
//! Server: [`ServerHandshake::start`] takes message 1 and returns message 2, plus either
//! the finished session (IK) or a state waiting for message 3 (XK,
//! [`ServerHandshake::read_message3`]). Client: [`ClientHandshake::new`] builds message 1,
//! [`ClientHandshake::read_message2`] returns the server hello, message 3 (XK) and the keys.
//!
//! Noise runs through `snow` with a resolver of our own (`HandshakeResolver`) so that
//! every random input comes from the caller's RNG (known-answer tests fix them all) and
//! so that the server's static public key is not recomputed on every handshake.
//!
//! Replays: a replayed message 1 starts a fresh responder with a fresh ephemeral key. For
//! XK it cannot complete, since message 3 needs the client's ephemeral and static secrets;
//! the session layer's handshake timeout (4408) ends it. For IK the server reaches
//! [`Established`] after message 1, but whoever replayed it cannot read message 2 or send
//! a valid transport message; [`Established::key_confirmed`] is therefore false for IK and
//! the session layer must not let such a session displace another one until the first
//! client message has opened.
//!
//! Where §4 is silent, this module chooses:
//! - a Noise message that `snow` cannot frame (too short, or over 65535 bytes) is 4400;
//! - an `ek_e` that fails the FIPS 203 encapsulation-key check is a malformed payload, 4400;
//! - an X25519 result of all zeros (a low-order peer key) fails like authentication, 4401;
//! - the message 3 payload is compared byte for byte: empty or exactly `{}`;
//! - the client accepts message 2 only if its JSON parses (unknown fields ignored), the
//!   `session_id` is 32 lowercase hex characters, and `pq`/`key_version` echo its header;
//! - `session_id` is 16 bytes of the handshake RNG, hex encoded.

use core::fmt;
use std::sync::LazyLock;

use curve25519_dalek::montgomery::MontgomeryPoint;
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, KeyExport, MlKem768};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::kdf::{CombinerInput, KEY_LEN, SessionKeys, derive_session_keys};

/// Length of the clear header in front of Noise message 1.
pub const HEADER_LEN: usize = 7;
/// ML-KEM-768 ciphertext length (`ct_s`, `ct_e`).
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM-768 encapsulation key length (`ek_e`).
pub const KEM_ENCAPSULATION_KEY_LEN: usize = 1184;
/// Prologue used when the configuration sets none.
pub const DEFAULT_PROLOGUE: &[u8] = b"commucat";

const FLAG_PQ: u8 = 0x01;
const DH_LEN: usize = 32;
const NOISE_TAG_LEN: usize = 16;
/// Largest Noise message (Noise spec; `snow` refuses longer ones).
const MAX_NOISE_MESSAGE_LEN: usize = 65_535;

static XK_PARAMS: LazyLock<NoiseParams> =
    LazyLock::new(|| parse_params("Noise_XK_25519_ChaChaPoly_BLAKE2s"));
static IK_PARAMS: LazyLock<NoiseParams> =
    LazyLock::new(|| parse_params("Noise_IK_25519_ChaChaPoly_BLAKE2s"));

fn parse_params(name: &str) -> NoiseParams {
    match name.parse() {
        Ok(params) => params,
        Err(err) => unreachable!("static Noise protocol name {name} does not parse: {err}"),
    }
}

/// Noise handshake pattern (header byte 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `Noise_XK`: the client's static key travels in message 3.
    Xk,
    /// `Noise_IK`: the client's static key travels in message 1.
    Ik,
}

impl Pattern {
    /// Header byte.
    pub fn wire(self) -> u8 {
        match self {
            Self::Xk => 1,
            Self::Ik => 2,
        }
    }

    /// From the header byte.
    pub fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Xk),
            2 => Some(Self::Ik),
            _ => None,
        }
    }

    /// As spelled in `supported_patterns`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xk => "XK",
            Self::Ik => "IK",
        }
    }

    fn params(self) -> &'static NoiseParams {
        match self {
            Self::Xk => &XK_PARAMS,
            Self::Ik => &IK_PARAMS,
        }
    }
}

/// Handshake version (header byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Static KEM only (when PQ).
    V1,
    /// Static KEM plus an ephemeral KEM for post-quantum forward secrecy (requires PQ).
    V2,
}

impl Version {
    /// Header byte.
    pub fn wire(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// From the header byte.
    pub fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

/// The 7-byte clear header of message 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Handshake version.
    pub version: Version,
    /// Noise pattern.
    pub pattern: Pattern,
    /// Which Noise static key of the server the client used.
    pub key_version: u32,
    /// Flag bit 0: the hybrid (ML-KEM) handshake.
    pub pq: bool,
}

impl Header {
    /// Parses the header at the start of message 1 (the header checks of §4, all 4400).
    pub fn parse(message1: &[u8]) -> Result<Self, HandshakeError> {
        let Some(bytes) = message1.get(..HEADER_LEN) else {
            return Err(Malformed::ShortHeader(message1.len()).into());
        };
        let version = Version::from_wire(bytes[0]).ok_or(Malformed::UnknownVersion(bytes[0]))?;
        let pattern = Pattern::from_wire(bytes[1]).ok_or(Malformed::UnknownPattern(bytes[1]))?;
        let key_version = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let flags = bytes[6];
        if flags & !FLAG_PQ != 0 {
            return Err(Malformed::ReservedFlags(flags).into());
        }
        let pq = flags & FLAG_PQ != 0;
        if version == Version::V2 && !pq {
            return Err(Malformed::Version2WithoutPq.into());
        }
        Ok(Self {
            version,
            pattern,
            key_version,
            pq,
        })
    }

    /// Wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let kv = self.key_version.to_be_bytes();
        let flags = if self.pq { FLAG_PQ } else { 0 };
        [
            self.version.wire(),
            self.pattern.wire(),
            kv[0],
            kv[1],
            kv[2],
            kv[3],
            flags,
        ]
    }

    /// Exact payload length of Noise message 1 for this header.
    fn message1_payload_len(&self) -> usize {
        let ct_s = if self.pq { KEM_CIPHERTEXT_LEN } else { 0 };
        let ek_e = if self.version == Version::V2 {
            KEM_ENCAPSULATION_KEY_LEN
        } else {
            0
        };
        ct_s + ek_e
    }

    fn prologue(&self, configured: &[u8]) -> Vec<u8> {
        let mut prologue = Vec::with_capacity(configured.len() + HEADER_LEN);
        prologue.extend_from_slice(configured);
        prologue.extend_from_slice(&self.to_bytes());
        prologue
    }
}

/// What exactly was malformed (all close with 4400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Message 1 shorter than the header.
    #[error("header of {0} bytes, 7 needed")]
    ShortHeader(usize),
    /// Header version is neither 1 nor 2.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// Header pattern is neither 1 (XK) nor 2 (IK).
    #[error("unknown pattern {0}")]
    UnknownPattern(u8),
    /// Flag bits other than bit 0 set.
    #[error("reserved flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// Version 2 without the PQ flag.
    #[error("version 2 requires the PQ flag")]
    Version2WithoutPq,
    /// A Noise message too short (or too long) to parse.
    #[error("Noise message cannot be parsed")]
    NoiseFraming,
    /// A handshake payload of the wrong length.
    #[error("payload of {actual} bytes, {expected} expected")]
    PayloadLength {
        /// What the header announced.
        expected: usize,
        /// What arrived.
        actual: usize,
    },
    /// `ek_e` is not a valid ML-KEM-768 encapsulation key.
    #[error("ephemeral KEM key is invalid")]
    EphemeralKemKey,
    /// Message 3 payload other than empty or `{}`.
    #[error("message 3 payload must be empty or {{}}")]
    Message3Payload,
    /// Message 2 JSON missing, invalid or not matching the request (client side).
    #[error("server hello is invalid")]
    ServerHello,
}

/// Why a handshake failed; [`HandshakeError::close_code`] is the WebSocket close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// 4400.
    #[error("malformed handshake: {0}")]
    Malformed(#[from] Malformed),
    /// 4401: Noise authentication failed (or an X25519 result was all zero).
    #[error("handshake decryption failed")]
    Decrypt,
    /// 4403: the server requires the hybrid handshake.
    #[error("post-quantum handshake required")]
    PqRequired,
    /// 4403: the client asked for the hybrid handshake but the server has PQ off.
    #[error("post-quantum handshake unavailable")]
    PqUnavailable,
    /// 4404.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// 4404.
    #[error("expired key version {0}")]
    ExpiredKeyVersion(u32),
    /// Client side only: parameters that cannot make a valid message 1.
    #[error("invalid client parameters: {0}")]
    InvalidClientParams(&'static str),
    /// A failure no peer input can cause (a bug); 1011 "internal error".
    #[error("internal handshake error: {0}")]
    Internal(&'static str),
}

impl HandshakeError {
    /// WebSocket close code (PROTOCOL.md §4).
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::InvalidClientParams(_) => 4400,
            Self::Decrypt => 4401,
            Self::PqRequired | Self::PqUnavailable => 4403,
            Self::UnknownKeyVersion(_) | Self::ExpiredKeyVersion(_) => 4404,
            Self::Internal(_) => 1011,
        }
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Decrypt => "decrypt",
            Self::PqRequired => "pq_required",
            Self::PqUnavailable => "pq_unavailable",
            Self::UnknownKeyVersion(_) => "unknown_key",
            Self::ExpiredKeyVersion(_) => "expired_key",
            Self::InvalidClientParams(_) => "client_params",
            Self::Internal(_) => "internal",
        }
    }
}

fn noise_error(err: snow::Error) -> HandshakeError {
    match err {
        snow::Error::Decrypt | snow::Error::Dh => HandshakeError::Decrypt,
        snow::Error::Input => Malformed::NoiseFraming.into(),
        _ => HandshakeError::Internal("Noise state"),
    }
}

/// A server Noise static key with its public half computed once.
#[derive(Clone)]
pub struct NoiseStaticKey {
    secret: Zeroizing<[u8; DH_LEN]>,
    public: [u8; DH_LEN],
}

impl NoiseStaticKey {
    /// From the X25519 private key (clamping happens at use, as X25519 specifies).
    pub fn from_secret(secret: [u8; DH_LEN]) -> Self {
        let secret = Zeroizing::new(secret);
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Self { secret, public }
    }

    /// X25519 public key.
    pub fn public(&self) -> &[u8; DH_LEN] {
        &self.public
    }

    /// A copy of the private key, for the keystore.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; DH_LEN]> {
        Zeroizing::new(*self.secret)
    }
}

impl fmt::Debug for NoiseStaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseStaticKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Why [`ServerKeys::noise_static`] has no key (both close with 4404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key with that version was ever issued (or it has been deleted).
    #[error("unknown key version")]
    Unknown,
    /// The key exists but its `expires_at` has passed.
    #[error("expired key version")]
    Expired,
}

/// What the server's key store provides to a handshake. Implemented by the daemon's
/// key store (typically on a loaded snapshot, so the borrows are cheap).
pub trait ServerKeys {
    /// The Noise static key `key_version`, if it is valid at `now_unix` (every key that
    /// has not expired is accepted, not only the newest).
    fn noise_static(
        &self,
        key_version: u32,
        now_unix: u64,
    ) -> Result<&NoiseStaticKey, KeyLookupError>;

    /// The decoded ML-KEM-768 key (decode once, at load), or `None` when PQ is off.
    fn kem(&self) -> Option<&DecapsulationKey<MlKem768>>;
}

/// Server-side handshake policy (from `[crypto]`/`[session]` configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Configured prologue (default [`DEFAULT_PROLOGUE`]); the header is appended.
    pub prologue: Vec<u8>,
    /// `[crypto] pq`: whether the KEM is offered at all.
    pub pq_enabled: bool,
    /// Refuse classical handshakes (4403).
    pub require_pq: bool,
    /// Sent in message 2.
    pub ttl_seconds: u64,
    /// Sent in message 2.
    pub keepalive_interval: u64,
}

/// The JSON part of message 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// 32 lowercase hex characters.
    pub session_id: String,
    /// Whether the session is hybrid.
    pub pq: bool,
    /// The Noise static key version used.
    pub key_version: u32,
    /// Idle timeout of the session.
    pub ttl_seconds: u64,
    /// How often the client should send something.
    pub keepalive_interval: u64,
}

impl ServerHello {
    fn is_valid_for(&self, header: &Header) -> bool {
        self.session_id.len() == 32
            && self
                .session_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && self.pq == header.pq
            && self.key_version == header.key_version
    }
}

/// A finished handshake on the server side.
#[derive(Debug)]
pub struct Established {
    /// Session keys (see [`super::transport::Transport::server`]).
    pub keys: SessionKeys,
    /// Hex of the client's static X25519 public key.
    pub device_id: String,
    /// The client's static X25519 public key.
    pub client_static_public: [u8; DH_LEN],
    /// Noise pattern used.
    pub pattern: Pattern,
    /// Handshake version used.
    pub version: Version,
    /// Whether the session is hybrid.
    pub pq: bool,
    /// Server Noise static key version used.
    pub key_version: u32,
    /// The `session_id` sent in message 2.
    pub session_id: String,
    /// Whether the client has proven it holds the session keys. True for XK (message 3
    /// authenticates under them); false for IK until the first client transport message
    /// opens, because an IK message 1 can be replayed.
    pub key_confirmed: bool,
}

/// Result of [`ServerHandshake::start`].
#[derive(Debug)]
pub enum ServerStart {
    /// XK: send message 2, then feed message 3 to [`ServerHandshake::read_message3`].
    AwaitingMessage3(ServerHandshake),
    /// IK: send message 2; the handshake is finished.
    Established(Established),
}

/// Server (responder) side of an XK handshake waiting for message 3.
pub struct ServerHandshake {
    // Boxed: the Noise state is ~1 KB and this value travels inside `ServerStart`.
    noise: Box<snow::HandshakeState>,
    header: Header,
    ss_s: Option<Zeroizing<[u8; KEY_LEN]>>,
    ss_e: Option<Zeroizing<[u8; KEY_LEN]>>,
    session_id: String,
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("header", &self.header)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl ServerHandshake {
    /// Processes message 1 and produces message 2.
    ///
    /// Checks run in the order of §4: header (4400), key version (4404), PQ policy
    /// (4403), Noise authentication (4401), payload lengths (4400).
    pub fn start<K, R>(
        policy: &ServerPolicy,
        keys: &K,
        message1: &[u8],
        now_unix: u64,
        rng: &mut R,
    ) -> Result<(ServerStart, Vec<u8>), HandshakeError>
    where
        K: ServerKeys + ?Sized,
        R: CryptoRng + ?Sized,
    {
        let header = Header::parse(message1)?;
        let static_key =
            keys.noise_static(header.key_version, now_unix)
                .map_err(|err| match err {
                    KeyLookupError::Unknown => {
                        HandshakeError::UnknownKeyVersion(header.key_version)
                    }
                    KeyLookupError::Expired => {
                        HandshakeError::ExpiredKeyVersion(header.key_version)
                    }
                })?;
        let kem = Self::kem_for(policy, keys, &header)?;

        let resolver = HandshakeResolver::new(rng, Some(static_key.clone()));
        let prologue = header.prologue(&policy.prologue);
        let mut noise =
            snow::Builder::with_resolver(header.pattern.params().clone(), Box::new(resolver))
                .local_private_key(static_key.secret.as_slice())
                .and_then(|b| b.prologue(&prologue))
                .and_then(|b| b.build_responder())
                .map_err(|_| HandshakeError::Internal("building the Noise responder"))?;

        let payload = read_noise(&mut noise, &message1[HEADER_LEN..])?;
        expect_len(&payload, header.message1_payload_len())?;

        let ss_s = kem.map(|dk| decapsulate(dk, &payload[..KEM_CIPHERTEXT_LEN]));
        let mut message2_payload = Vec::with_capacity(KEM_CIPHERTEXT_LEN + 128);
        let ss_e = if header.version == Version::V2 {
            let ek_e = &payload[KEM_CIPHERTEXT_LEN..];
            let (ct_e, ss_e) = encapsulate(ek_e, rng).ok_or(Malformed::EphemeralKemKey)?;
            message2_payload.extend_from_slice(&ct_e);
            Some(ss_e)
        } else {
            None
        };

        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let hello = ServerHello {
            session_id: hex::encode(id),
            pq: header.pq,
            key_version: header.key_version,
            ttl_seconds: policy.ttl_seconds,
            keepalive_interval: policy.keepalive_interval,
        };
        serde_json::to_writer(&mut message2_payload, &hello)
            .map_err(|_| HandshakeError::Internal("encoding the server hello"))?;
        let message2 = write_noise(&mut noise, &message2_payload)?;

        let state = Self {
            noise: Box::new(noise),
            header,
            ss_s,
            ss_e,
            session_id: hello.session_id,
        };
        let next = match header.pattern {
            Pattern::Xk => ServerStart::AwaitingMessage3(state),
            Pattern::Ik => ServerStart::Established(state.finish(false)?),
        };
        Ok((next, message2))
    }

    /// The KEM key to use, or the policy refusal (4403).
    fn kem_for<'k, K: ServerKeys + ?Sized>(
        policy: &ServerPolicy,
        keys: &'k K,
        header: &Header,
    ) -> Result<Option<&'k DecapsulationKey<MlKem768>>, HandshakeError> {
        if !header.pq {
            return if policy.require_pq {
                Err(HandshakeError::PqRequired)
            } else {
                Ok(None)
            };
        }
        match (policy.pq_enabled, keys.kem()) {
            (true, Some(dk)) => Ok(Some(dk)),
            _ => Err(HandshakeError::PqUnavailable),
        }
    }

    /// XK: processes message 3 and finishes the handshake. On error the state is gone:
    /// the session closes with [`HandshakeError::close_code`].
    pub fn read_message3(mut self, message3: &[u8]) -> Result<Established, HandshakeError> {
        let payload = read_noise(&mut self.noise, message3)?;
        if !(payload.is_empty() || payload.as_slice() == b"{}") {
            return Err(Malformed::Message3Payload.into());
        }
        self.finish(true)
    }

    fn finish(mut self, key_confirmed: bool) -> Result<Established, HandshakeError> {
        let client_static_public: [u8; DH_LEN] = self
            .noise
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or(HandshakeError::Internal("client static key missing"))?;
        let keys = session_keys(&mut self.noise, self.ss_s.as_deref(), self.ss_e.as_deref())?;
        Ok(Established {
            keys,
            device_id: hex::encode(client_static_public),
            client_static_public,
            pattern: self.header.pattern,
            version: self.header.version,
            pq: self.header.pq,
            key_version: self.header.key_version,
            session_id: self.session_id,
            key_confirmed,
        })
    }

    /// The header of message 1 this handshake answers.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

/// What the client needs to build message 1.
pub struct ClientParams {
    /// Noise pattern.
    pub pattern: Pattern,
    /// Handshake version (2 requires `pq`).
    pub version: Version,
    /// Whether to run the hybrid handshake.
    pub pq: bool,
    /// Which server Noise static key `server_static_public` is.
    pub key_version: u32,
    /// The server's Noise static public key of `key_version`.
    pub server_static_public: [u8; DH_LEN],
    /// The server's ML-KEM-768 encapsulation key (1184 bytes); required when `pq`.
    pub server_kem_public: Option<Vec<u8>>,
    /// The configured prologue (default [`DEFAULT_PROLOGUE`]).
    pub prologue: Vec<u8>,
    /// The client's static X25519 private key (its public key is the device id).
    pub client_static_secret: Zeroizing<[u8; DH_LEN]>,
}

impl fmt::Debug for ClientParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientParams")
            .field("pattern", &self.pattern)
            .field("version", &self.version)
            .field("pq", &self.pq)
            .field("key_version", &self.key_version)
            .field(
                "server_static_public",
                &hex::encode(self.server_static_public),
            )
            .finish_non_exhaustive()
    }
}

/// A finished handshake on the client side.
#[derive(Debug)]
pub struct ClientEstablished {
    /// The JSON of message 2.
    pub hello: ServerHello,
    /// XK: message 3, to send before any transport message. IK: `None`.
    pub message3: Option<Vec<u8>>,
    /// Session keys (see [`super::transport::Transport::client`]).
    pub keys: SessionKeys,
}

/// Client (initiator) side, after message 1 was built.
pub struct ClientHandshake {
    noise: snow::HandshakeState,
    header: Header,
    ss_s: Option<Zeroizing<[u8; KEY_LEN]>>,
    ephemeral_kem: Option<Box<DecapsulationKey<MlKem768>>>,
    message1: Vec<u8>,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Builds message 1. Draws from `rng`, in this order: the Noise ephemeral key
    /// (32 bytes), the `ct_s` encapsulation (32), the ephemeral KEM seed (64, version 2).
    pub fn new<R: CryptoRng + ?Sized>(
        params: ClientParams,
        rng: &mut R,
    ) -> Result<Self, HandshakeError> {
        Self::build(params, rng, |_| {})
    }

    /// `edit_payload` lets tests send payloads an honest client never would.
    fn build<R: CryptoRng + ?Sized>(
        params: ClientParams,
        rng: &mut R,
        edit_payload: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Self, HandshakeError> {
        if params.version == Version::V2 && !params.pq {
            return Err(HandshakeError::InvalidClientParams("version 2 requires PQ"));
        }
        let header = Header {
            version: params.version,
            pattern: params.pattern,
            key_version: params.key_version,
            pq: params.pq,
        };
        let resolver = HandshakeResolver::new(rng, None);

        let mut payload = Vec::with_capacity(header.message1_payload_len());
        let mut ss_s = None;
        if params.pq {
            let server_ek =
                params
                    .server_kem_public
                    .as_deref()
                    .ok_or(HandshakeError::InvalidClientParams(
                        "PQ needs the server KEM key",
                    ))?;
            let (ct_s, ss) = encapsulate(server_ek, rng).ok_or(
                HandshakeError::InvalidClientParams("server KEM key is invalid"),
            )?;
            payload.extend_from_slice(&ct_s);
            ss_s = Some(ss);
        }
        let mut ephemeral_kem = None;
        if params.version == Version::V2 {
            let mut seed = Zeroizing::new([0u8; 64]);
            rng.fill_bytes(seed.as_mut_slice());
            let dk = Box::new(DecapsulationKey::<MlKem768>::from_seed(Array::from(*seed)));
            payload.extend_from_slice(&dk.encapsulation_key().to_bytes());
            ephemeral_kem = Some(dk);
        }

        edit_payload(&mut payload);

        let prologue = header.prologue(&params.prologue);
        let mut noise =
            snow::Builder::with_resolver(header.pattern.params().clone(), Box::new(resolver))
                .local_private_key(params.client_static_secret.as_slice())
                .and_then(|b| b.remote_public_key(&params.server_static_public))
                .and_then(|b| b.prologue(&prologue))
                .and_then(|b| b.build_initiator())
                .map_err(|_| HandshakeError::Internal("building the Noise initiator"))?;
        let noise_message = write_noise(&mut noise, &payload)?;

        let mut message1 = Vec::with_capacity(HEADER_LEN + noise_message.len());
        message1.extend_from_slice(&header.to_bytes());
        message1.extend_from_slice(&noise_message);
        Ok(Self {
            noise,
            header,
            ss_s,
            ephemeral_kem,
            message1,
        })
    }

    /// Message 1 (header and Noise message), to send as one binary frame.
    pub fn message1(&self) -> &[u8] {
        &self.message1
    }

    /// The header this client sent.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Processes message 2; for XK also writes message 3 (empty payload).
    pub fn read_message2(self, message2: &[u8]) -> Result<ClientEstablished, HandshakeError> {
        self.read_message2_answering(message2, &[])
    }

    /// `message3_payload` is empty for every honest client; tests vary it.
    fn read_message2_answering(
        mut self,
        message2: &[u8],
        message3_payload: &[u8],
    ) -> Result<ClientEstablished, HandshakeError> {
        let payload = read_noise(&mut self.noise, message2)?;
        let (ss_e, json) = match &self.ephemeral_kem {
            Some(dk) => {
                if payload.len() < KEM_CIPHERTEXT_LEN {
                    return Err(Malformed::PayloadLength {
                        expected: KEM_CIPHERTEXT_LEN,
                        actual: payload.len(),
                    }
                    .into());
                }
                let ss_e = decapsulate(dk, &payload[..KEM_CIPHERTEXT_LEN]);
                (Some(ss_e), &payload[KEM_CIPHERTEXT_LEN..])
            }
            None => (None, &payload[..]),
        };
        let hello: ServerHello =
            serde_json::from_slice(json).map_err(|_| Malformed::ServerHello)?;
        if !hello.is_valid_for(&self.header) {
            return Err(Malformed::ServerHello.into());
        }
        let message3 = match self.header.pattern {
            Pattern::Xk => Some(write_noise(&mut self.noise, message3_payload)?),
            Pattern::Ik => None,
        };
        let keys = session_keys(&mut self.noise, self.ss_s.as_deref(), ss_e.as_deref())?;
        Ok(ClientEstablished {
            hello,
            message3,
            keys,
        })
    }
}

fn read_noise(noise: &mut snow::HandshakeState, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    if message.len() > MAX_NOISE_MESSAGE_LEN {
        return Err(Malformed::NoiseFraming.into());
    }
    let mut payload = vec![0u8; message.len()];
    let len = noise
        .read_message(message, &mut payload)
        .map_err(noise_error)?;
    payload.truncate(len);
    Ok(payload)
}

fn write_noise(
    noise: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    // Worst case of both patterns: e, encrypted s, payload tag. Our payloads are at
    // most 2272 bytes, far below Noise's 65535-byte message limit.
    let mut message = vec![0u8; DH_LEN + DH_LEN + NOISE_TAG_LEN + payload.len() + NOISE_TAG_LEN];
    let len = noise
        .write_message(payload, &mut message)
        .map_err(|_| HandshakeError::Internal("writing a Noise message"))?;
    message.truncate(len);
    Ok(message)
}

fn expect_len(payload: &[u8], expected: usize) -> Result<(), HandshakeError> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(Malformed::PayloadLength {
            expected,
            actual: payload.len(),
        }
        .into())
    }
}

/// Raw split, handshake hash, and the hybrid combiner of §4.
fn session_keys(
    noise: &mut snow::HandshakeState,
    ss_s: Option<&[u8; KEY_LEN]>,
    ss_e: Option<&[u8; KEY_LEN]>,
) -> Result<SessionKeys, HandshakeError> {
    if !noise.is_handshake_finished() {
        return Err(HandshakeError::Internal("handshake not finished"));
    }
    let (k1, k2) = noise.dangerously_get_raw_split();
    let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
    let handshake_hash = noise.get_handshake_hash();
    Ok(derive_session_keys(&CombinerInput {
        handshake_hash,
        k1: &k1,
        k2: &k2,
        ss_s,
        ss_e,
    }))
}

/// `ct` must be exactly [`KEM_CIPHERTEXT_LEN`] bytes (callers check lengths first).
fn decapsulate(dk: &DecapsulationKey<MlKem768>, ct: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if let Ok(mut shared) = dk.decapsulate_slice(ct) {
        out.copy_from_slice(&shared);
        shared.as_mut_slice().zeroize();
    }
    out
}

/// Encapsulates to an encoded key; `None` if the key is not a valid ML-KEM-768 key.
fn encapsulate<R: CryptoRng + ?Sized>(
    ek: &[u8],
    rng: &mut R,
) -> Option<(Vec<u8>, Zeroizing<[u8; KEY_LEN]>)> {
    let encoded = Array::try_from(ek).ok()?;
    let ek = EncapsulationKey::<MlKem768>::new(&encoded).ok()?;
    let (ct, mut shared) = ek.encapsulate_with_rng(rng);
    let mut ss = Zeroizing::new([0u8; KEY_LEN]);
    ss.copy_from_slice(&shared);
    shared.as_mut_slice().zeroize();
    Some((ct.to_vec(), ss))
}

/// `snow` resolver that takes the Noise ephemeral key from the caller's RNG and knows
/// the server's static public key, so that neither a global RNG nor a second fixed-base
/// multiplication per handshake is involved. Hash and cipher are snow's own.
struct HandshakeResolver {
    ephemeral: Zeroizing<[u8; DH_LEN]>,
    known_static: Option<NoiseStaticKey>,
}

impl HandshakeResolver {
    fn new<R: CryptoRng + ?Sized>(rng: &mut R, known_static: Option<NoiseStaticKey>) -> Self {
        let mut ephemeral = Zeroizing::new([0u8; DH_LEN]);
        rng.fill_bytes(ephemeral.as_mut_slice());
        Self {
            ephemeral,
            known_static,
        }
    }
}

impl CryptoResolver for HandshakeResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(PreparedEntropy {
            bytes: self.ephemeral.clone(),
            used: false,
        }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                secret: Zeroizing::new([0; DH_LEN]),
                public: [0; DH_LEN],
                known_static: self.known_static.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The one ephemeral key a handshake side generates, drawn in advance from the caller's
/// RNG. A second request is an error rather than a silent reuse.
struct PreparedEntropy {
    bytes: Zeroizing<[u8; DH_LEN]>,
    used: bool,
}

impl Random for PreparedEntropy {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        if self.used || dest.len() != DH_LEN {
            return Err(snow::Error::Rng);
        }
        dest.copy_from_slice(self.bytes.as_slice());
        self.bytes.zeroize();
        self.used = true;
        Ok(())
    }
}

/// X25519 for `snow` on curve25519-dalek 4 (precomputed tables for the fixed base).
struct X25519 {
    secret: Zeroizing<[u8; DH_LEN]>,
    public: [u8; DH_LEN],
    known_static: Option<NoiseStaticKey>,
}

impl X25519 {
    fn set_secret(&mut self, secret: &[u8]) {
        self.secret.zeroize();
        let len = secret.len().min(DH_LEN);
        self.secret[..len].copy_from_slice(&secret[..len]);
        let known_public = self
            .known_static
            .as_ref()
            .filter(|known| bool::from(known.secret.ct_eq(&*self.secret)))
            .map(|known| known.public);
        self.public = match known_public {
            Some(public) => public,
            None => MontgomeryPoint::mul_base_clamped(*self.secret).to_bytes(),
        };
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        DH_LEN
    }

    fn priv_len(&self) -> usize {
        DH_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        self.set_secret(privkey);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut fresh = Zeroizing::new([0u8; DH_LEN]);
        rng.try_fill_bytes(fresh.as_mut_slice())?;
        self.known_static = None;
        self.set_secret(fresh.as_slice());
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_slice()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let (Some(peer), Some(out)) = (pubkey.get(..DH_LEN), out.get_mut(..DH_LEN)) else {
            return Err(snow::Error::Dh);
        };
        let mut peer_bytes = [0u8; DH_LEN];
        peer_bytes.copy_from_slice(peer);
        let mut shared = Zeroizing::new(
            MontgomeryPoint(peer_bytes)
                .mul_clamped(*self.secret)
                .to_bytes(),
        );
        // A low-order peer key yields the all-zero output (RFC 7748 §6.1): refuse it
        // so that neither side's contribution can be cancelled.
        if bool::from(shared.ct_eq(&[0u8; DH_LEN])) {
            shared.zeroize();
            return Err(snow::Error::Dh);
        }
        out.copy_from_slice(shared.as_slice());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
