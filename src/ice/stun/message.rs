//! The one parse of a datagram: a borrowed, typed view of a STUN message.
//!
//! [`Message::parse`] walks the header and the attributes once and records everything
//! the responder's checks need: framing and FINGERPRINT (a failure means "not STUN"),
//! where the integrity attribute sits (the HMAC is recomputed over the bytes before
//! it), the USERNAME, ICE-CONTROLLED, malformed values and the unknown
//! comprehension-required types. Nothing is decoded twice, and the minimal Binding
//! request (no attribute or only FINGERPRINT) costs this walk and nothing more.

use std::borrow::Cow;

use super::values;
use super::wire::{
    HEADER_LEN, IntegrityKind, MAGIC_COOKIE, SHA1_MAC_LEN, SHA256_MAC_LEN, attr,
    fingerprint_matches, mac_matches, msg_type,
};

/// Bound on the UNKNOWN-ATTRIBUTES list, so that the 420 reply stays small.
pub(super) const MAX_UNKNOWN_LISTED: usize = 16;

/// An integrity attribute: where it starts and its MAC.
#[derive(Debug, Clone, Copy)]
pub(super) struct IntegrityAttr<'a> {
    pub(super) kind: IntegrityKind,
    pub(super) offset: usize,
    pub(super) mac: &'a [u8],
}

/// Whether [`Message::parse_with`] checks the FINGERPRINT value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FingerprintCheck {
    /// A wrong value means "not STUN" (RFC 7983 demultiplexing): the responder.
    Required,
    /// A wrong value is recorded, not refused: a client reports it.
    Recorded,
}

/// Comprehension-required attribute types the responder does not know, in order of
/// appearance, without repeats, at most [`MAX_UNKNOWN_LISTED`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UnknownTypes {
    types: [u16; MAX_UNKNOWN_LISTED],
    len: usize,
}

impl UnknownTypes {
    fn note(&mut self, kind: u16) {
        if self.len < MAX_UNKNOWN_LISTED && !self.as_slice().contains(&kind) {
            self.types[self.len] = kind;
            self.len += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[u16] {
        &self.types[..self.len]
    }
}

/// A well-framed STUN message, borrowed from the datagram.
#[derive(Debug)]
pub(super) struct Message<'a> {
    pub(super) packet: &'a [u8],
    pub(super) msg_type: u16,
    pub(super) transaction_id: &'a [u8; 12],
    /// Attributes that count, FINGERPRINT included (those after an integrity attribute
    /// are ignored, RFC 8489 §14.5, §14.6).
    pub(super) attr_count: usize,
    /// FINGERPRINT's offset and value (it is the last attribute).
    pub(super) fingerprint: Option<(usize, &'a [u8])>,
    /// Some attribute is malformed: a wrong length for an integrity, FINGERPRINT or ICE
    /// attribute that counts, or a value of a known type that is not well-formed
    /// (see [`values`]), wherever it is.
    pub(super) malformed: bool,
    pub(super) has_ice_controlled: bool,
    /// MESSAGE-INTEGRITY-SHA256 wins over MESSAGE-INTEGRITY when both are present.
    pub(super) integrity: Option<IntegrityAttr<'a>>,
    /// The first USERNAME that counts, as prepared by [`values::username`].
    pub(super) username: Option<Cow<'a, str>>,
    pub(super) unknown: UnknownTypes,
}

/// The transaction id of a minimal Binding request (a bare header, or a header and a
/// valid FINGERPRINT), and whether it had the FINGERPRINT; `None` for anything else.
/// What browsers and STUN clients send to learn their reflexive address, so the
/// responder answers it from these fixed offsets before building a [`Message`]: that
/// keeps the plain Binding at its pre-parse-once cost (`cargo bench --bench stun`,
/// `plain_20B`; docs/development.md). Anything this rejects still goes through
/// [`Message::parse`], which reaches the same verdict for minimal requests.
pub(super) fn minimal_binding(packet: &[u8]) -> Option<(&[u8; 12], bool)> {
    const WITH_FINGERPRINT: usize = HEADER_LEN + 8;
    let has_fingerprint = match packet.len() {
        HEADER_LEN => false,
        WITH_FINGERPRINT => true,
        _ => return None,
    };
    let header = packet.get(..HEADER_LEN)?;
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if msg_type != msg_type::BINDING_REQUEST
        || cookie != MAGIC_COOKIE
        || length != packet.len() - HEADER_LEN
    {
        return None;
    }
    if has_fingerprint {
        let kind = u16::from_be_bytes([packet[20], packet[21]]);
        let value_len = u16::from_be_bytes([packet[22], packet[23]]);
        if kind != attr::FINGERPRINT
            || value_len != 4
            || !fingerprint_matches(&packet[..HEADER_LEN], &packet[24..])
        {
            return None;
        }
    }
    Some((header[8..20].try_into().ok()?, has_fingerprint))
}

impl<'a> Message<'a> {
    /// Parses a datagram as the responder does. `None` means "not STUN": the datagram
    /// is dropped silently.
    pub(super) fn parse(packet: &'a [u8]) -> Option<Self> {
        Self::parse_with(packet, FingerprintCheck::Required)
    }

    /// Checks header, length, magic cookie and attribute framing (FINGERPRINT last), and
    /// FINGERPRINT's value if `check` says so.
    pub(super) fn parse_with(packet: &'a [u8], check: FingerprintCheck) -> Option<Self> {
        let header: &[u8; HEADER_LEN] = packet.get(..HEADER_LEN)?.try_into().ok()?;
        let msg_type = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if msg_type & 0xC000 != 0
            || cookie != MAGIC_COOKIE
            || length % 4 != 0
            || packet.len() != HEADER_LEN + length
        {
            return None;
        }
        let mut message = Message {
            packet,
            msg_type,
            transaction_id: header[8..20].try_into().ok()?,
            attr_count: 0,
            fingerprint: None,
            malformed: false,
            has_ice_controlled: false,
            integrity: None,
            username: None,
            unknown: UnknownTypes::default(),
        };
        let mut sha1: Option<IntegrityAttr<'a>> = None;
        let mut sha256: Option<IntegrityAttr<'a>> = None;
        let mut offset = HEADER_LEN;
        while offset < packet.len() {
            let head = packet.get(offset..offset + 4)?;
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let value_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = packet.get(offset + 4..offset + 4 + value_len)?;
            let next = offset + 4 + value_len.next_multiple_of(4);
            if next > packet.len() || message.fingerprint.is_some() {
                // FINGERPRINT must be the last attribute (RFC 8489 §14.7).
                return None;
            }
            // USERNAME is checked below, where its prepared form is kept.
            if kind != attr::USERNAME && !values::is_well_formed(kind, value) {
                message.malformed = true;
            }
            if kind == attr::FINGERPRINT {
                if value_len != 4 {
                    message.malformed = true;
                } else if check == FingerprintCheck::Required
                    && !fingerprint_matches(&packet[..offset], value)
                {
                    return None;
                }
                message.fingerprint = Some((offset, value));
                message.attr_count += 1;
                offset = next;
                continue;
            }
            let ignored =
                sha256.is_some() || (sha1.is_some() && kind != attr::MESSAGE_INTEGRITY_SHA256);
            if kind == attr::USERNAME {
                message.note_username(value, ignored);
            }
            if !ignored {
                message.attr_count += 1;
                message.note_attribute(kind, offset, value, &mut sha1, &mut sha256);
            }
            offset = next;
        }
        message.integrity = sha256.or(sha1);
        Some(message)
    }

    fn note_username(&mut self, value: &'a [u8], ignored: bool) {
        match values::username(value) {
            None => self.malformed = true,
            Some(name) if !ignored && self.username.is_none() => self.username = Some(name),
            Some(_) => {}
        }
    }

    fn note_attribute(
        &mut self,
        kind: u16,
        offset: usize,
        value: &'a [u8],
        sha1: &mut Option<IntegrityAttr<'a>>,
        sha256: &mut Option<IntegrityAttr<'a>>,
    ) {
        let expected_len = match kind {
            attr::MESSAGE_INTEGRITY => Some(SHA1_MAC_LEN),
            attr::MESSAGE_INTEGRITY_SHA256 => Some(SHA256_MAC_LEN),
            attr::PRIORITY => Some(4),
            attr::USE_CANDIDATE => Some(0),
            attr::ICE_CONTROLLED | attr::ICE_CONTROLLING => Some(8),
            _ => None,
        };
        if expected_len.is_some_and(|len| len != value.len()) {
            self.malformed = true;
            return;
        }
        match kind {
            attr::MESSAGE_INTEGRITY => {
                *sha1 = Some(IntegrityAttr {
                    kind: IntegrityKind::Sha1,
                    offset,
                    mac: value,
                });
            }
            attr::MESSAGE_INTEGRITY_SHA256 => {
                *sha256 = Some(IntegrityAttr {
                    kind: IntegrityKind::Sha256,
                    offset,
                    mac: value,
                });
            }
            attr::ICE_CONTROLLED => self.has_ice_controlled = true,
            _ if kind < 0x8000 && !values::is_known(kind) && !values::is_ice(kind) => {
                self.unknown.note(kind);
            }
            _ => {}
        }
    }

    pub(super) fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Whether FINGERPRINT's value is right (`None` without FINGERPRINT).
    pub(super) fn fingerprint_is_valid(&self) -> Option<bool> {
        let (offset, value) = self.fingerprint?;
        Some(fingerprint_matches(self.packet.get(..offset)?, value))
    }

    /// The 12-bit method, with the class bits taken out (RFC 8489 §5).
    pub(super) fn method(&self) -> u16 {
        let t = self.msg_type;
        ((t & 0x3E00) >> 2) | ((t & 0x00E0) >> 1) | (t & 0x000F)
    }

    pub(super) fn is_binding_request(&self) -> bool {
        self.msg_type == msg_type::BINDING_REQUEST
    }

    pub(super) fn is_request(&self) -> bool {
        // Class bits C1 (0x0100) and C0 (0x0010) are both zero for requests.
        self.msg_type & 0x0110 == 0
    }

    /// A Binding request with no attribute, or only FINGERPRINT.
    pub(super) fn is_minimal_binding_request(&self) -> bool {
        self.is_binding_request()
            && !self.malformed
            && self.attr_count == usize::from(self.has_fingerprint())
    }

    /// Whether the integrity attribute verifies with `key` (constant-time comparison).
    pub(super) fn integrity_matches(&self, integrity: IntegrityAttr<'_>, key: &[u8]) -> bool {
        self.packet
            .get(..integrity.offset)
            .is_some_and(|prefix| mac_matches(integrity.kind, prefix, integrity.mac, key))
    }
}
