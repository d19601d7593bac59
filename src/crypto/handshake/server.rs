//! The responder: message 1 in, message 2 out, then (XK) message 3 in.

use core::fmt;

use rand::CryptoRng;

use super::error::{HandshakeError, Malformed};
use super::header::{HEADER_LEN, Header, Pattern, Version};
use super::hello::{ServerHello, new_session_id};
use super::keys::{KeyLookupError, NoiseStaticKey, ServerKeys};
use super::noise::{DH_LEN, params_for, read_noise, session_keys, write_noise};
use super::pq::{
    KEM_CIPHERTEXT_LEN, KemCiphertext, KemDecapsulationKey, Message1Payload, SharedSecret,
    decapsulate, encapsulate,
};
use super::resolver::HandshakeResolver;
use crate::crypto::kdf::SessionKeys;

/// Server-side handshake policy (from `[crypto]`/`[session]` configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Configured prologue (default [`super::DEFAULT_PROLOGUE`]); the header is appended.
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

/// A finished handshake on the server side.
#[derive(Debug)]
pub struct Established {
    /// Session keys (see [`crate::crypto::transport::Transport::server`]).
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
    ss_s: Option<SharedSecret>,
    ss_e: Option<SharedSecret>,
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
        let static_key = static_key(keys, &header, now_unix)?;
        let kem = kem_for(policy, keys, &header)?;

        let mut noise = responder(policy, &header, static_key, rng)?;
        let plaintext = read_noise(&mut noise, &message1[HEADER_LEN..])?;
        let payload = Message1Payload::parse(&header, &plaintext)?;

        let ss_s = static_kem_secret(kem, payload.ct_s)?;
        let mut message2_payload = Vec::with_capacity(KEM_CIPHERTEXT_LEN + 128);
        let ss_e = match payload.ek_e {
            Some(ek_e) => {
                let (ct_e, ss_e) = encapsulate(ek_e, rng).ok_or(Malformed::EphemeralKemKey)?;
                message2_payload.extend_from_slice(&ct_e);
                Some(ss_e)
            }
            None => None,
        };

        let hello = ServerHello {
            session_id: new_session_id(rng),
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

/// The Noise static key the header names, or the refusal (4404).
fn static_key<'k, K: ServerKeys + ?Sized>(
    keys: &'k K,
    header: &Header,
    now_unix: u64,
) -> Result<&'k NoiseStaticKey, HandshakeError> {
    keys.noise_static(header.key_version, now_unix)
        .map_err(|err| match err {
            KeyLookupError::Unknown => HandshakeError::UnknownKeyVersion(header.key_version),
            KeyLookupError::Expired => HandshakeError::ExpiredKeyVersion(header.key_version),
        })
}

/// The KEM key to use, or the policy refusal (4403).
fn kem_for<'k, K: ServerKeys + ?Sized>(
    policy: &ServerPolicy,
    keys: &'k K,
    header: &Header,
) -> Result<Option<&'k KemDecapsulationKey>, HandshakeError> {
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

/// `kem` and `ct_s` both follow the header's PQ flag, so they are present together.
fn static_kem_secret(
    kem: Option<&KemDecapsulationKey>,
    ct_s: Option<&KemCiphertext>,
) -> Result<Option<SharedSecret>, HandshakeError> {
    match (kem, ct_s) {
        (Some(dk), Some(ct_s)) => Ok(Some(decapsulate(dk, ct_s))),
        (None, None) => Ok(None),
        _ => Err(HandshakeError::Internal("KEM key and ct_s disagree")),
    }
}

/// Draws the responder's ephemeral key from `rng`, before anything else is drawn.
fn responder<R: CryptoRng + ?Sized>(
    policy: &ServerPolicy,
    header: &Header,
    static_key: &NoiseStaticKey,
    rng: &mut R,
) -> Result<snow::HandshakeState, HandshakeError> {
    let resolver = HandshakeResolver::new(rng, Some(static_key.clone()));
    let prologue = header.prologue(&policy.prologue);
    snow::Builder::with_resolver(params_for(header.pattern).clone(), Box::new(resolver))
        .local_private_key(static_key.secret())
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|_| HandshakeError::Internal("building the Noise responder"))
}
