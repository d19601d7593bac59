//! Building STUN requests: the one way the client, the tests, the benchmarks and the
//! fuzz target assemble them.

use super::wire::{
    HEADER_LEN, IntegrityKind, MAGIC_COOKIE, append_fingerprint, append_integrity, attr, msg_type,
    set_length,
};

/// A STUN request built attribute by attribute; the header length is kept right after
/// each step.
///
/// ```
/// use commucat::ice::stun::{IntegrityKind, RequestBuilder};
///
/// let request = RequestBuilder::binding([7; 12])
///     .username("ufrag:peer")
///     .priority(0x6E00_01FF)
///     .ice_controlling(42)
///     .integrity(IntegrityKind::Sha1, b"password")
///     .fingerprint()
///     .build();
/// assert_eq!(request.len() % 4, 0);
/// ```
///
/// Nothing is validated: tests use the builder to make malformed requests too.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    message: Vec<u8>,
}

impl RequestBuilder {
    /// The 20-byte Binding request without attributes, without allocating.
    pub fn minimal_binding(transaction_id: [u8; 12]) -> [u8; HEADER_LEN] {
        header(msg_type::BINDING_REQUEST, transaction_id)
    }

    /// A Binding request.
    pub fn binding(transaction_id: [u8; 12]) -> Self {
        Self::new(msg_type::BINDING_REQUEST, transaction_id)
    }

    /// A message of any type (the class bits included, e.g. 0x0011 for a Binding
    /// indication).
    pub fn new(msg_type: u16, transaction_id: [u8; 12]) -> Self {
        let mut message = Vec::with_capacity(128);
        message.extend_from_slice(&header(msg_type, transaction_id));
        Self { message }
    }

    /// Appends an attribute, padded to four bytes. `value` must be shorter than 64 KiB.
    pub fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        self.message.extend_from_slice(&kind.to_be_bytes());
        self.message
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.raw(value)
    }

    /// Appends bytes as they are (padded with zeros to four bytes): attributes made
    /// elsewhere, or anything else.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.message.extend_from_slice(bytes);
        self.message
            .resize(self.message.len().next_multiple_of(4), 0);
        set_length(&mut self.message);
        self
    }

    /// USERNAME (ICE: `"<their ufrag>:<our ufrag>"`).
    pub fn username(self, username: &str) -> Self {
        self.attribute(attr::USERNAME, username.as_bytes())
    }

    /// PRIORITY (RFC 8445 §7.1.1).
    pub fn priority(self, priority: u32) -> Self {
        self.attribute(attr::PRIORITY, &priority.to_be_bytes())
    }

    /// ICE-CONTROLLING with its tie-breaker.
    pub fn ice_controlling(self, tie_breaker: u64) -> Self {
        self.attribute(attr::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// ICE-CONTROLLED with its tie-breaker.
    pub fn ice_controlled(self, tie_breaker: u64) -> Self {
        self.attribute(attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// USE-CANDIDATE.
    pub fn use_candidate(self) -> Self {
        self.attribute(attr::USE_CANDIDATE, &[])
    }

    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 over everything so far.
    pub fn integrity(mut self, kind: IntegrityKind, key: &[u8]) -> Self {
        append_integrity(&mut self.message, kind, key);
        self
    }

    /// FINGERPRINT over everything so far; it must come last.
    pub fn fingerprint(mut self) -> Self {
        append_fingerprint(&mut self.message);
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.message
    }
}

fn header(msg_type: u16, transaction_id: [u8; 12]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(&msg_type.to_be_bytes());
    header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    header[8..].copy_from_slice(&transaction_id);
    header
}
