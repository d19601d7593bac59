//! Encrypted transport after the handshake (docs/protocol.md §4, "Transport").
//!
//! Every message is ChaCha20-Poly1305 with an empty aad under the current key of its
//! direction; the nonce is 4 zero bytes || the u64 little-endian message counter, from 0
//! in each direction. After every 4096th message of a direction its key is ratcheted
//! with `kdf::ratchet_key`; the counter keeps counting. The two directions are independent
//! state machines, so a session can hand them to different tasks.

use core::fmt;

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::kdf::{KEY_LEN, SessionKeys, ratchet_key};

/// Poly1305 tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Largest plaintext one message may carry.
pub(crate) const MAX_PLAINTEXT_LEN: usize = 65_535;
/// Largest ciphertext accepted: anything longer closes the session with 4400
/// (docs/protocol.md §4).
pub(crate) const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + TAG_LEN;
/// Messages per direction between two ratchet steps.
pub(crate) const REKEY_INTERVAL: u64 = 4096;

/// Why a transport message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Ciphertext over `MAX_CIPHERTEXT_LEN` (or plaintext over `MAX_PLAINTEXT_LEN`).
    #[error("transport message of {0} bytes is too large")]
    TooLarge(usize),
    /// Authentication failed, or the message is shorter than a tag.
    #[error("transport message failed authentication")]
    Decrypt,
    /// All 2^64 nonces of this direction have been used.
    #[error("transport message counter exhausted")]
    CounterExhausted,
}

impl TransportError {
    /// WebSocket close code for this failure.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge(_) => 4400,
            Self::Decrypt => 4401,
            // No defined code: the session is simply over; 1008 is "policy violation".
            Self::CounterExhausted => 1008,
        }
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Decrypt => "decrypt",
            Self::CounterExhausted => "counter_exhausted",
        }
    }
}

/// Key, ratchet salt and counter of one direction.
struct Direction {
    cipher: ChaCha20Poly1305,
    key: Zeroizing<[u8; KEY_LEN]>,
    root_key: Zeroizing<[u8; KEY_LEN]>,
    /// Counter of the next message; `None` once every nonce has been used.
    next: Option<u64>,
}

impl Direction {
    fn new(root_key: &[u8; KEY_LEN], key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(key.into()),
            key: Zeroizing::new(*key),
            root_key: Zeroizing::new(*root_key),
            next: Some(0),
        }
    }

    fn current_nonce(&self) -> Result<(u64, Nonce), TransportError> {
        let counter = self.next.ok_or(TransportError::CounterExhausted)?;
        let mut nonce = Nonce::default();
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        Ok((counter, nonce))
    }

    /// Called after message `counter` was sealed or opened successfully.
    fn advance(&mut self, counter: u64) {
        self.next = counter.checked_add(1);
        if counter % REKEY_INTERVAL == REKEY_INTERVAL - 1 {
            self.key = ratchet_key(&self.root_key, &self.key);
            self.cipher = ChaCha20Poly1305::new((&*self.key).into());
        }
    }
}

/// Sealing half of a transport (one direction).
pub struct TransportSender {
    direction: Direction,
}

impl TransportSender {
    /// Encrypts one message under the next counter.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(TransportError::TooLarge(plaintext.len()));
        }
        let (counter, nonce) = self.direction.current_nonce()?;
        let ciphertext = self
            .direction
            .cipher
            .encrypt(&nonce, plaintext)
            // ChaCha20-Poly1305 refuses only plaintexts over 256 GiB.
            .map_err(|_| TransportError::TooLarge(plaintext.len()))?;
        self.direction.advance(counter);
        Ok(ciphertext)
    }

    /// Counter the next sealed message will carry (`None` once exhausted).
    pub fn next_counter(&self) -> Option<u64> {
        self.direction.next
    }
}

/// Opening half of a transport (one direction).
pub struct TransportReceiver {
    direction: Direction,
}

impl TransportReceiver {
    /// Decrypts the next message; on failure the state is unchanged (and the session
    /// is expected to close).
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, TransportError> {
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(TransportError::TooLarge(ciphertext.len()));
        }
        if ciphertext.len() < TAG_LEN {
            return Err(TransportError::Decrypt);
        }
        let (counter, nonce) = self.direction.current_nonce()?;
        let plaintext = self
            .direction
            .cipher
            .decrypt(&nonce, ciphertext)
            .map_err(|_| TransportError::Decrypt)?;
        self.direction.advance(counter);
        Ok(plaintext)
    }

    /// Counter the next opened message must carry (`None` once exhausted).
    pub fn next_counter(&self) -> Option<u64> {
        self.direction.next
    }
}

/// Both directions of one endpoint's transport.
pub struct Transport {
    sender: TransportSender,
    receiver: TransportReceiver,
}

impl Transport {
    /// The server seals with `server_to_client` and opens with `client_to_server`.
    pub fn server(keys: &SessionKeys) -> Self {
        Self::from_directions(keys, keys.server_to_client(), keys.client_to_server())
    }

    /// The client seals with `client_to_server` and opens with `server_to_client`.
    pub fn client(keys: &SessionKeys) -> Self {
        Self::from_directions(keys, keys.client_to_server(), keys.server_to_client())
    }

    fn from_directions(
        keys: &SessionKeys,
        send_key: &[u8; KEY_LEN],
        receive_key: &[u8; KEY_LEN],
    ) -> Self {
        Self {
            sender: TransportSender {
                direction: Direction::new(keys.root_key(), send_key),
            },
            receiver: TransportReceiver {
                direction: Direction::new(keys.root_key(), receive_key),
            },
        }
    }

    /// See [`TransportSender::seal`].
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.sender.seal(plaintext)
    }

    /// See [`TransportReceiver::open`].
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.receiver.open(ciphertext)
    }

    /// Separates the directions, e.g. for a reader task and a writer task.
    pub fn split(self) -> (TransportSender, TransportReceiver) {
        (self.sender, self.receiver)
    }
}

impl fmt::Debug for TransportSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportSender")
            .field("next_counter", &self.direction.next)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TransportReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportReceiver")
            .field("next_counter", &self.direction.next)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("sender", &self.sender)
            .field("receiver", &self.receiver)
            .finish()
    }
}

#[cfg(test)]
impl Direction {
    fn starting_at(root_key: &[u8; KEY_LEN], key: &[u8; KEY_LEN], counter: u64) -> Self {
        let mut direction = Self::new(root_key, key);
        direction.next = Some(counter);
        direction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf::{CombinerInput, derive_session_keys};

    fn test_keys() -> SessionKeys {
        derive_session_keys(&CombinerInput {
            handshake_hash: &[7u8; 32],
            k1: &[1u8; 32],
            k2: &[2u8; 32],
            ss_s: Some(&[3u8; 32]),
            ss_e: None,
        })
    }

    #[test]
    fn client_and_server_agree_in_both_directions() {
        let keys = test_keys();
        let mut client = Transport::client(&keys);
        let mut server = Transport::server(&keys);
        let c = client.seal(br#"{"type":"ping","id":1}"#).unwrap();
        assert_eq!(server.open(&c).unwrap(), br#"{"type":"ping","id":1}"#);
        let s = server.seal(br#"{"type":"pong","id":1}"#).unwrap();
        assert_eq!(client.open(&s).unwrap(), br#"{"type":"pong","id":1}"#);
        // A direction's key never opens the other direction.
        let c2 = client.seal(b"{}").unwrap();
        assert_eq!(client.open(&c2), Err(TransportError::Decrypt));
    }

    #[test]
    fn nonce_layout_is_four_zero_bytes_then_le_counter() {
        let keys = test_keys();
        let mut client = Transport::client(&keys);
        let _ = client.seal(b"{}").unwrap();
        let second = client.seal(b"{\"a\":1}").unwrap();
        let cipher = ChaCha20Poly1305::new(keys.client_to_server().into());
        let mut nonce = [0u8; 12];
        nonce[4] = 1;
        let expected = cipher
            .encrypt(&Nonce::from(nonce), &b"{\"a\":1}"[..])
            .unwrap();
        assert_eq!(second, expected);
    }

    #[test]
    fn five_thousand_messages_cross_the_rekey_in_both_directions() {
        let keys = test_keys();
        let mut client = Transport::client(&keys);
        let mut server = Transport::server(&keys);
        for i in 0..5_000u32 {
            let ping = format!(r#"{{"type":"ping","id":{i}}}"#);
            let sealed = client.seal(ping.as_bytes()).unwrap();
            assert_eq!(server.open(&sealed).unwrap(), ping.as_bytes());
            let pong = format!(r#"{{"type":"pong","id":{i}}}"#);
            let sealed = server.seal(pong.as_bytes()).unwrap();
            assert_eq!(client.open(&sealed).unwrap(), pong.as_bytes());
        }
        assert_eq!(client.sender.next_counter(), Some(5_000));
        assert_eq!(server.receiver.next_counter(), Some(5_000));
    }

    #[test]
    fn message_4096_uses_the_ratcheted_key_and_4095_the_original() {
        let keys = test_keys();
        let mut client = Transport::client(&keys);
        let mut last_before = Vec::new();
        for _ in 0..REKEY_INTERVAL {
            last_before = client.seal(b"{}").unwrap();
        }
        let first_after = client.seal(b"{}").unwrap();

        let original = ChaCha20Poly1305::new(keys.client_to_server().into());
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&4095u64.to_le_bytes());
        assert_eq!(
            original
                .decrypt(&Nonce::from(nonce), &last_before[..])
                .unwrap(),
            b"{}"
        );

        let ratcheted = ratchet_key(keys.root_key(), keys.client_to_server());
        let next = ChaCha20Poly1305::new((&*ratcheted).into());
        nonce[4..].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            next.decrypt(&Nonce::from(nonce), &first_after[..]).unwrap(),
            b"{}"
        );
        assert!(
            original
                .decrypt(&Nonce::from(nonce), &first_after[..])
                .is_err()
        );
    }

    #[test]
    fn oversized_and_short_ciphertexts_are_refused() {
        let keys = test_keys();
        let mut server = Transport::server(&keys);
        let huge = vec![0u8; MAX_CIPHERTEXT_LEN + 1];
        assert_eq!(
            server.open(&huge),
            Err(TransportError::TooLarge(MAX_CIPHERTEXT_LEN + 1))
        );
        assert_eq!(server.open(&huge).unwrap_err().close_code(), 4400);
        assert_eq!(server.open(&[0u8; 15]), Err(TransportError::Decrypt));
        let mut client = Transport::client(&keys);
        assert_eq!(
            client.seal(&vec![b' '; MAX_PLAINTEXT_LEN + 1]),
            Err(TransportError::TooLarge(MAX_PLAINTEXT_LEN + 1))
        );
        // The largest legal message goes through and is exactly the limit.
        let max = client.seal(&vec![b' '; MAX_PLAINTEXT_LEN]).unwrap();
        assert_eq!(max.len(), MAX_CIPHERTEXT_LEN);
        assert_eq!(server.open(&max).unwrap().len(), MAX_PLAINTEXT_LEN);
    }

    #[test]
    fn tampered_ciphertext_fails_and_leaves_the_counter() {
        let keys = test_keys();
        let mut client = Transport::client(&keys);
        let mut server = Transport::server(&keys);
        let mut sealed = client.seal(br#"{"type":"ping","id":9}"#).unwrap();
        sealed[3] ^= 0x01;
        assert_eq!(server.open(&sealed), Err(TransportError::Decrypt));
        assert_eq!(server.receiver.next_counter(), Some(0));
        sealed[3] ^= 0x01;
        assert!(server.open(&sealed).is_ok());
        // A replay of the same message is refused: its counter is in the past.
        assert_eq!(server.open(&sealed), Err(TransportError::Decrypt));
    }

    #[test]
    fn counter_exhaustion_is_an_error_not_a_wrap() {
        let keys = test_keys();
        let mut sender = TransportSender {
            direction: Direction::starting_at(
                keys.root_key(),
                keys.client_to_server(),
                u64::MAX - 1,
            ),
        };
        let mut receiver = TransportReceiver {
            direction: Direction::starting_at(
                keys.root_key(),
                keys.client_to_server(),
                u64::MAX - 1,
            ),
        };
        for _ in 0..2 {
            let sealed = sender.seal(b"{}").unwrap();
            assert_eq!(receiver.open(&sealed).unwrap(), b"{}");
        }
        assert_eq!(sender.next_counter(), None);
        assert_eq!(sender.seal(b"{}"), Err(TransportError::CounterExhausted));
        assert_eq!(
            receiver.open(&[0u8; 32]),
            Err(TransportError::CounterExhausted)
        );
    }
}
