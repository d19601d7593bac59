//! The initiator: message 1 out, message 2 in, then (XK) message 3 out.

use core::fmt;

use ml_kem::array::Array;
use ml_kem::{DecapsulationKey, KeyExport, MlKem768};
use rand::CryptoRng;
use zeroize::Zeroizing;

use super::error::{HandshakeError, Malformed};
use super::header::{HEADER_LEN, Header, Pattern, Version};
use super::hello::ServerHello;
use super::noise::{DH_LEN, params_for, read_noise, session_keys, write_noise};
use super::pq::{
    Message1Payload, SharedSecret, decapsulate, encapsulate, split_message2_ciphertext,
};
use super::resolver::HandshakeResolver;
use crate::crypto::kdf::SessionKeys;

/// Length of the seed an ML-KEM-768 key pair is derived from (d ‖ z).
const KEM_SEED_LEN: usize = 64;

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
    /// The configured prologue (default [`super::DEFAULT_PROLOGUE`]).
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
    /// Session keys (see [`crate::crypto::transport::Transport::client`]).
    pub keys: SessionKeys,
}

/// Client (initiator) side, after message 1 was built.
pub struct ClientHandshake {
    noise: snow::HandshakeState,
    header: Header,
    ss_s: Option<SharedSecret>,
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
    pub(super) fn build<R: CryptoRng + ?Sized>(
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
        // The Noise ephemeral key is drawn first: the documented draw order above.
        let resolver = HandshakeResolver::new(rng, None);

        let mut payload = Vec::with_capacity(Message1Payload::len_for(&header));
        let ss_s = if params.pq {
            Some(encapsulate_to_server(&params, rng, &mut payload)?)
        } else {
            None
        };
        let ephemeral_kem = if params.version == Version::V2 {
            Some(ephemeral_kem_key(rng, &mut payload))
        } else {
            None
        };

        edit_payload(&mut payload);

        let mut noise = initiator(&params, &header, resolver)?;
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
    pub(super) fn read_message2_answering(
        mut self,
        message2: &[u8],
        message3_payload: &[u8],
    ) -> Result<ClientEstablished, HandshakeError> {
        let payload = read_noise(&mut self.noise, message2)?;
        let (ss_e, json) = match &self.ephemeral_kem {
            Some(dk) => {
                let (ct_e, json) = split_message2_ciphertext(&payload)?;
                (Some(decapsulate(dk, ct_e)), json)
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

fn initiator(
    params: &ClientParams,
    header: &Header,
    resolver: HandshakeResolver,
) -> Result<snow::HandshakeState, HandshakeError> {
    let prologue = header.prologue(&params.prologue);
    snow::Builder::with_resolver(params_for(header.pattern).clone(), Box::new(resolver))
        .local_private_key(params.client_static_secret.as_slice())
        .and_then(|b| b.remote_public_key(&params.server_static_public))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|_| HandshakeError::Internal("building the Noise initiator"))
}

/// Appends `ct_s` to `payload` and returns its shared secret.
fn encapsulate_to_server<R: CryptoRng + ?Sized>(
    params: &ClientParams,
    rng: &mut R,
    payload: &mut Vec<u8>,
) -> Result<SharedSecret, HandshakeError> {
    let server_ek =
        params
            .server_kem_public
            .as_deref()
            .ok_or(HandshakeError::InvalidClientParams(
                "PQ needs the server KEM key",
            ))?;
    let (ct_s, ss_s) = encapsulate(server_ek, rng).ok_or(HandshakeError::InvalidClientParams(
        "server KEM key is invalid",
    ))?;
    payload.extend_from_slice(&ct_s);
    Ok(ss_s)
}

/// Appends `ek_e` to `payload` and returns the key that will open `ct_e`.
fn ephemeral_kem_key<R: CryptoRng + ?Sized>(
    rng: &mut R,
    payload: &mut Vec<u8>,
) -> Box<DecapsulationKey<MlKem768>> {
    let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
    rng.fill_bytes(seed.as_mut_slice());
    let dk = Box::new(DecapsulationKey::<MlKem768>::from_seed(Array::from(*seed)));
    payload.extend_from_slice(&dk.encapsulation_key().to_bytes());
    dk
}
