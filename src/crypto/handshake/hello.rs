//! The JSON part of message 2: what the server tells the client about the session.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use super::header::Header;

/// Random bytes behind a `session_id`; hex encoding doubles them.
const SESSION_ID_BYTES: usize = 16;

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
    /// The client's acceptance check of message 2, where §4 is silent (see the
    /// handshake module docs).
    pub(super) fn is_valid_for(&self, header: &Header) -> bool {
        self.session_id.len() == SESSION_ID_BYTES * 2
            && self
                .session_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && self.pq == header.pq
            && self.key_version == header.key_version
    }
}

/// A fresh `session_id`: random bytes from the handshake RNG, hex encoded.
pub(super) fn new_session_id<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut id = [0u8; SESSION_ID_BYTES];
    rng.fill_bytes(&mut id);
    hex::encode(id)
}
