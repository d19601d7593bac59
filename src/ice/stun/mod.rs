//! The sans-I/O ICE-lite STUN responder (docs/protocol.md §3).
//!
//! `StunResponder::handle` takes one datagram, its observed source address and the
//! current unix time, writes the reply (possibly none) and says what happened. It owns
//! no socket and no clock.
//!
//! - `wire`: constants, XOR-MAPPED-ADDRESS, integrity and FINGERPRINT;
//! - `values`: which attribute values are well-formed;
//! - `message`: the one parse of a datagram, into a borrowed view (`Message`);
//! - `responder`: [`StunResponder`];
//! - `builder`: [`RequestBuilder`], for the client, tests, benchmarks and fuzzing.
//!
//! Each datagram is parsed once, by a hand-written walk (`Message::parse`) that checks
//! the header, the attribute framing, FINGERPRINT and every attribute value, and records
//! what the checks need: where the integrity attribute sits (the HMACs are recomputed
//! over the bytes before it), the USERNAME, ICE-CONTROLLED and the unknown
//! comprehension-required types. The hot case, a Binding request with no attribute or
//! only FINGERPRINT, is answered from that walk by `plain_reply`; other replies are
//! built with the `stun-rs` encoder, and tests check that both produce the same bytes.
//!
//! Why a hand-written walk and not the `stun-rs` decoder: the decoder checks
//! MESSAGE-INTEGRITY only with a key given before decoding, while here the key follows
//! from the USERNAME inside the message, and it does not say where the attribute sits,
//! so requests used to be walked by hand and then decoded a second time; one walk does
//! both jobs, and the hot case stays free of the decoder's per-attribute allocations. The measurement that weighs this is `cargo bench --bench
//! stun` (group `stun_handle`, plain and authenticated requests); its figures go with
//! the change that moves them, not into this file. The value rules the decoder applied
//! are kept (`values`), and a test feeds random requests to both this design and the
//! two-pass one (`tests/legacy.rs`) and compares the replies byte for byte.
//!
//! Integrity (HMAC-SHA1 and HMAC-SHA256) and FINGERPRINT are computed here so that
//! the short-term key (the ICE password) is only ever held in zeroizing storage and
//! MACs are compared in constant time.
//!
//! Where docs/protocol.md §3 is silent, this module decides (and the tests pin down):
//! - A request of another method than Binding gets 400, as an error response of its
//!   own method.
//! - FINGERPRINT with a wrong CRC, or followed by another attribute, means "not STUN"
//!   (RFC 7983 demultiplexing): dropped. A FINGERPRINT whose length is not 4 is a
//!   malformed known attribute: 400.
//! - Attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256
//!   and FINGERPRINT, those after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT
//!   (RFC 8489 §14.5, §14.6); a malformed value of a known type gets 400 wherever it
//!   is. With both integrity attributes present, the SHA-256 one is checked and used
//!   in the reply. MESSAGE-INTEGRITY-SHA256 must be the full 32 bytes (ICE agents do
//!   not truncate), else 400.
//! - `require_integrity` refuses a request without integrity at the credential step,
//!   after the 400 and 420 checks.
//! - A credential is valid up to and including its expiry second.
//! - IPv4-mapped IPv6 sources (dual-stack sockets) are reported as IPv4.

mod builder;
mod message;
mod responder;
mod values;
mod wire;

#[cfg(test)]
mod tests;

pub use builder::RequestBuilder;
pub use responder::{Outcome, StunResponder};
#[cfg(test)]
pub(crate) use wire::SOFTWARE;
pub(crate) use wire::{
    HEADER_LEN, append_fingerprint, append_integrity, decode_xor_mapped_address,
};
pub use wire::{IntegrityKind, MAGIC_COOKIE, attr, attributes, msg_type};

use message::{FingerprintCheck, Message};

/// Verifies a message's integrity attribute of `kind` with `key` (used by the client).
pub fn verify_integrity(message: &[u8], kind: IntegrityKind, key: &[u8]) -> bool {
    let Some(parsed) = Message::parse_with(message, FingerprintCheck::Recorded) else {
        return false;
    };
    match parsed.integrity {
        Some(found) if found.kind == kind => parsed.integrity_matches(found, key),
        _ => false,
    }
}

/// Whether a STUN message carries FINGERPRINT with a correct value.
#[cfg(test)]
pub(crate) fn has_valid_fingerprint(message: &[u8]) -> bool {
    fingerprint_status(message) == Some(true)
}

/// `None` if a well-framed message has no FINGERPRINT (or is not well-framed),
/// else whether its FINGERPRINT is correct.
pub fn fingerprint_status(message: &[u8]) -> Option<bool> {
    // Well-framed also means that a FINGERPRINT, if any, is the last attribute.
    Message::parse_with(message, FingerprintCheck::Recorded)?.fingerprint_is_valid()
}

/// Whether `message` is a well-framed STUN message (header, length, attribute
/// framing); FINGERPRINT is not checked.
pub fn is_well_framed(message: &[u8]) -> bool {
    Message::parse_with(message, FingerprintCheck::Recorded).is_some()
}
