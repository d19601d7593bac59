//! The sans-I/O ICE-lite STUN responder (PROTOCOL.md §3).
//!
//! `StunResponder::handle` takes one datagram, its observed source address and the
//! current unix time, writes the reply (possibly none) and says what happened. It owns
//! no socket and no clock.
//!
//! Parsing is two-layered. A small framing walk (`Frame::parse`) checks the header,
//! the attribute framing and FINGERPRINT, and records where the integrity attributes
//! sit (their offsets are needed to recompute the HMACs). Requests that carry anything
//! besides FINGERPRINT are then decoded by `stun-rs`, which validates every known
//! attribute; its replies are built with the `stun-rs` encoder. The hot case — a
//! Binding request with no attribute or only FINGERPRINT — is answered by
//! `plain_reply` directly; tests check that both paths produce the same bytes.
//!
//! Integrity (HMAC-SHA1 and HMAC-SHA256) and FINGERPRINT are computed here so that
//! the short-term key (the ICE password) is only ever held in zeroizing storage and
//! MACs are compared in constant time.
//!
//! Where PROTOCOL.md §3 is silent, this module decides (and the tests pin down):
//! - A request of another method than Binding gets 400, as an error response of its
//!   own method.
//! - FINGERPRINT with a wrong CRC, or followed by another attribute, means "not STUN"
//!   (RFC 7983 demultiplexing): dropped. A FINGERPRINT whose length is not 4 is a
//!   malformed known attribute: 400.
//! - Attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256
//!   and FINGERPRINT, those after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT
//!   (RFC 8489 §14.5, §14.6). With both present, the SHA-256 one is checked and used
//!   in the reply. MESSAGE-INTEGRITY-SHA256 must be the full 32 bytes (ICE agents do
//!   not truncate; `stun-rs` rejects shorter values), else 400.
//! - `require_integrity` refuses a request without integrity at the credential step,
//!   after the 400 and 420 checks.
//! - A credential is valid up to and including its expiry second.
//! - TURN attributes (RFC 8656), which `stun-rs` decodes for `client::turn`, are not
//!   understood by the responder: a comprehension-required one gets 420 like any unknown
//!   attribute, but one whose value `stun-rs` cannot decode gets 400.
//! - IPv4-mapped IPv6 sources (dual-stack sockets) are reported as IPv4.

use std::net::{IpAddr, SocketAddr};

use hmac::{KeyInit, Mac};
use stun_rs::attributes::StunAttribute;
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, Software, UnknownAttributes, UserName, XorMappedAddress,
};
use stun_rs::error::StunErrorLevel;
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoder, MessageDecoderBuilder, MessageEncoder, MessageEncoderBuilder,
    MessageMethod, StunMessageBuilder, TransactionId,
};
use subtle::ConstantTimeEq;

use crate::ice::credentials::{IceSecret, password_if_valid};

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// The SOFTWARE value sent in authenticated replies.
pub const SOFTWARE: &str = concat!("commucat ", env!("CARGO_PKG_VERSION"));

/// Attribute types this module cares about.
pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// Message types (method Binding).
pub mod msg_type {
    pub const BINDING_REQUEST: u16 = 0x0001;
    pub const BINDING_INDICATION: u16 = 0x0011;
    pub const BINDING_SUCCESS: u16 = 0x0101;
    pub const BINDING_ERROR: u16 = 0x0111;
}

const FINGERPRINT_XOR: u32 = 0x5354_554E;
const SHA1_MAC_LEN: usize = 20;
const SHA256_MAC_LEN: usize = 32;
/// Bound on the UNKNOWN-ATTRIBUTES list, so that the 420 reply stays small.
const MAX_UNKNOWN_LISTED: usize = 16;
/// Large enough for any reply this module builds (the largest is a 420 with 16 types).
const REPLY_CAPACITY: usize = 256;

/// What `StunResponder::handle` did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Authenticated Binding success (integrity verified).
    Success,
    /// Plain Binding success, without integrity.
    Unauthenticated,
    /// 401: bad, unknown or expired credential.
    AuthFailure,
    /// 487: the request carried ICE-CONTROLLED.
    RoleConflict,
    /// 400.
    BadRequest,
    /// 420.
    UnknownAttribute,
    /// No reply: indications, responses, non-STUN or unparseable datagrams.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Unauthenticated,
        Outcome::AuthFailure,
        Outcome::RoleConflict,
        Outcome::BadRequest,
        Outcome::UnknownAttribute,
        Outcome::Dropped,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::AuthFailure => "auth_failure",
            Outcome::RoleConflict => "role_conflict",
            Outcome::BadRequest => "bad_request",
            Outcome::UnknownAttribute => "unknown_attribute",
            Outcome::Dropped => "dropped",
        }
    }

    /// Dense index in `ALL`, for per-outcome counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which integrity attribute a request used (the reply uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

impl IntegrityKind {
    fn attr_type(self) -> u16 {
        match self {
            IntegrityKind::Sha1 => attr::MESSAGE_INTEGRITY,
            IntegrityKind::Sha256 => attr::MESSAGE_INTEGRITY_SHA256,
        }
    }

    fn mac_len(self) -> usize {
        match self {
            IntegrityKind::Sha1 => SHA1_MAC_LEN,
            IntegrityKind::Sha256 => SHA256_MAC_LEN,
        }
    }
}

/// An integrity attribute found in a request: where it starts and its MAC.
#[derive(Debug, Clone, Copy)]
struct IntegrityAttr<'a> {
    kind: IntegrityKind,
    offset: usize,
    mac: &'a [u8],
}

/// The result of the framing walk over a datagram that looks like STUN.
#[derive(Debug)]
struct Frame<'a> {
    msg_type: u16,
    transaction_id: [u8; 12],
    /// Attributes that are not ignored (those after an integrity attribute are).
    attr_count: usize,
    has_fingerprint: bool,
    /// A known attribute with a wrong length (MI, MI-SHA256, FINGERPRINT, ICE ones).
    malformed_known: bool,
    has_ice_controlled: bool,
    /// MESSAGE-INTEGRITY-SHA256 wins over MESSAGE-INTEGRITY when both are present.
    integrity: Option<IntegrityAttr<'a>>,
}

impl<'a> Frame<'a> {
    /// Checks header, length, magic cookie, attribute framing and FINGERPRINT.
    /// `None` means "not STUN": the datagram is dropped silently.
    fn parse(packet: &'a [u8]) -> Option<Self> {
        Self::parse_checked(packet, true)
    }

    /// `check_fingerprint = false` accepts a wrong FINGERPRINT value (a client
    /// reports it instead of discarding the message).
    fn parse_checked(packet: &'a [u8], check_fingerprint: bool) -> Option<Self> {
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
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&header[8..20]);
        let mut frame = Frame {
            msg_type,
            transaction_id,
            attr_count: 0,
            has_fingerprint: false,
            malformed_known: false,
            has_ice_controlled: false,
            integrity: None,
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
            if next > packet.len() {
                return None;
            }
            if frame.has_fingerprint {
                // FINGERPRINT must be the last attribute (RFC 8489 §14.7).
                return None;
            }
            if kind == attr::FINGERPRINT {
                if value_len != 4 {
                    frame.malformed_known = true;
                } else if check_fingerprint && !fingerprint_matches(&packet[..offset], value) {
                    return None;
                }
                frame.has_fingerprint = true;
                frame.attr_count += 1;
                offset = next;
                continue;
            }
            let ignored =
                sha256.is_some() || (sha1.is_some() && kind != attr::MESSAGE_INTEGRITY_SHA256);
            if !ignored {
                frame.attr_count += 1;
                frame.note_attribute(kind, offset, value, &mut sha1, &mut sha256);
            }
            offset = next;
        }
        frame.integrity = sha256.or(sha1);
        Some(frame)
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
            self.malformed_known = true;
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
            _ => {}
        }
    }

    /// The 12-bit method, with the class bits taken out (RFC 8489 §5).
    fn method(&self) -> u16 {
        let t = self.msg_type;
        ((t & 0x3E00) >> 2) | ((t & 0x00E0) >> 1) | (t & 0x000F)
    }

    fn is_binding_request(&self) -> bool {
        self.msg_type == msg_type::BINDING_REQUEST
    }

    fn is_request(&self) -> bool {
        // Class bits C1 (0x0100) and C0 (0x0010) are both zero for requests.
        self.msg_type & 0x0110 == 0
    }

    /// A Binding request with no attribute, or only FINGERPRINT.
    fn is_minimal_binding_request(&self) -> bool {
        self.is_binding_request()
            && !self.malformed_known
            && self.attr_count == usize::from(self.has_fingerprint)
    }
}

/// A reply to send, before integrity and FINGERPRINT are appended.
enum Reply {
    Success {
        authenticated: bool,
    },
    Error {
        method: u16,
        code: u16,
        unknown: Vec<u16>,
    },
}

/// The ICE-lite STUN responder. Cheap to share (`&self` only).
pub struct StunResponder {
    secret: IceSecret,
    require_integrity: bool,
    decoder: MessageDecoder,
    encoder: MessageEncoder,
}

impl std::fmt::Debug for StunResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunResponder")
            .field("require_integrity", &self.require_integrity)
            .finish_non_exhaustive()
    }
}

impl StunResponder {
    pub fn new(secret: IceSecret, require_integrity: bool) -> Self {
        Self {
            secret,
            require_integrity,
            decoder: MessageDecoderBuilder::default().build(),
            encoder: MessageEncoderBuilder::default().build(),
        }
    }

    pub fn require_integrity(&self) -> bool {
        self.require_integrity
    }

    /// Handles one datagram from `source`; the reply (if any) replaces `out`'s contents.
    pub fn handle(
        &self,
        packet: &[u8],
        source: SocketAddr,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let source = canonical(source);
        let Some(frame) = Frame::parse(packet) else {
            return Outcome::Dropped;
        };
        if !frame.is_request() {
            return Outcome::Dropped;
        }
        if frame.is_minimal_binding_request() && !self.require_integrity {
            plain_reply(&frame.transaction_id, source, frame.has_fingerprint, out);
            return Outcome::Unauthenticated;
        }
        self.handle_general(&frame, packet, source, now_unix, out)
    }

    /// Every request that is not the minimal Binding request: decoded by `stun-rs`.
    fn handle_general(
        &self,
        frame: &Frame<'_>,
        packet: &[u8],
        source: SocketAddr,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let tid = &frame.transaction_id;
        let fingerprint = frame.has_fingerprint;
        if !frame.is_binding_request() || frame.malformed_known {
            return self.reply_error(frame, 400, &[], None, fingerprint, out);
        }
        let message = match self.decoder.decode(packet) {
            Ok((message, _)) => message,
            Err(stun_rs::error::StunDecodeError(StunErrorLevel::Attribute(e)))
                if e.attr_type.is_some() =>
            {
                return self.reply_error(frame, 400, &[], None, fingerprint, out);
            }
            Err(_) => return Outcome::Dropped,
        };
        let username = message
            .get::<UserName>()
            .and_then(|a| a.as_user_name().ok());
        if frame.integrity.is_some() && username.is_none() {
            return self.reply_error(frame, 400, &[], None, fingerprint, out);
        }
        let unknown = unknown_comprehension_required(message.attributes());
        if !unknown.is_empty() {
            return self.reply_error(frame, 420, &unknown, None, fingerprint, out);
        }
        let (Some(integrity), Some(username)) = (frame.integrity, username) else {
            if self.require_integrity {
                return self.reply_error(frame, 400, &[], None, fingerprint, out);
            }
            self.encode(
                tid,
                source,
                Reply::Success {
                    authenticated: false,
                },
                None,
                fingerprint,
                out,
            );
            return Outcome::Unauthenticated;
        };
        let ufrag = username.as_str().split(':').next().unwrap_or_default();
        let Some(password) = password_if_valid(&self.secret, ufrag, now_unix) else {
            return self.reply_error(frame, 401, &[], None, fingerprint, out);
        };
        if !integrity_matches(packet, integrity, password.as_bytes()) {
            return self.reply_error(frame, 401, &[], None, fingerprint, out);
        }
        let key = Some((integrity.kind, password.as_bytes()));
        if frame.has_ice_controlled {
            return self.reply_error(frame, 487, &[], key, fingerprint, out);
        }
        self.encode(
            tid,
            source,
            Reply::Success {
                authenticated: true,
            },
            key,
            // The contract lists FINGERPRINT in every authenticated success.
            true,
            out,
        );
        Outcome::Success
    }

    fn reply_error(
        &self,
        frame: &Frame<'_>,
        code: u16,
        unknown: &[u16],
        key: Option<(IntegrityKind, &[u8])>,
        fingerprint: bool,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let reply = Reply::Error {
            method: frame.method(),
            code,
            unknown: unknown.to_vec(),
        };
        // The source address is not part of an error reply.
        let unused = SocketAddr::from(([0, 0, 0, 0], 0));
        self.encode(&frame.transaction_id, unused, reply, key, fingerprint, out);
        match code {
            400 => Outcome::BadRequest,
            401 => Outcome::AuthFailure,
            420 => Outcome::UnknownAttribute,
            _ => Outcome::RoleConflict,
        }
    }

    /// Builds a reply with the `stun-rs` encoder, then appends integrity and FINGERPRINT.
    fn encode(
        &self,
        tid: &[u8; 12],
        source: SocketAddr,
        reply: Reply,
        key: Option<(IntegrityKind, &[u8])>,
        fingerprint: bool,
        out: &mut Vec<u8>,
    ) {
        let mut builder = match reply {
            Reply::Success { authenticated } => {
                let builder = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
                    .with_attribute(XorMappedAddress::from(source));
                if authenticated {
                    match Software::new(SOFTWARE) {
                        Ok(software) => builder.with_attribute(software),
                        Err(_) => builder,
                    }
                } else {
                    builder
                }
            }
            Reply::Error {
                method,
                code,
                unknown,
            } => {
                // A request of another method gets its error in that method.
                let method = MessageMethod::try_from(method).unwrap_or(BINDING);
                let mut builder = StunMessageBuilder::new(method, MessageClass::ErrorResponse);
                if let Ok(error) = stun_rs::ErrorCode::new(code, reason_phrase(code)) {
                    builder = builder.with_attribute(ErrorCode::from(error));
                }
                if !unknown.is_empty() {
                    builder = builder.with_attribute(UnknownAttributes::from(unknown.as_slice()));
                }
                builder
            }
        };
        builder = builder.with_transaction_id(TransactionId::from(*tid));
        // Without integrity, stun-rs computes FINGERPRINT itself; with it, the MAC must
        // come first and is computed here (the key must not leave zeroizing storage).
        let library_fingerprint = fingerprint && key.is_none();
        if library_fingerprint {
            builder = builder.with_attribute(Fingerprint::default());
        }
        let message = builder.build();
        out.clear();
        out.resize(REPLY_CAPACITY, 0);
        match self.encoder.encode(out, &message) {
            Ok(len) => out.truncate(len),
            Err(_) => {
                out.clear();
                return;
            }
        }
        if let Some((kind, key)) = key {
            append_integrity(out, kind, key);
        }
        if fingerprint && !library_fingerprint {
            append_fingerprint(out);
        }
    }
}

/// IPv4-mapped IPv6 sources (dual-stack sockets) are reported as IPv4.
fn canonical(source: SocketAddr) -> SocketAddr {
    SocketAddr::new(source.ip().to_canonical(), source.port())
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthenticated",
        420 => "Unknown Attribute",
        487 => "Role Conflict",
        _ => "Error",
    }
}

fn is_ice_attribute(kind: u16) -> bool {
    matches!(
        kind,
        attr::PRIORITY | attr::USE_CANDIDATE | attr::ICE_CONTROLLED | attr::ICE_CONTROLLING
    )
}

/// The comprehension-required TURN attributes (RFC 8656 §18). `stun-rs` decodes them
/// because its `turn` feature is on (for `client::turn`); the responder is no TURN
/// server, so for it they stay unknown, as they were before the feature was enabled.
fn is_turn_attribute(kind: u16) -> bool {
    matches!(
        kind,
        0x000C // CHANNEL-NUMBER
            | 0x000D // LIFETIME
            | 0x0012 // XOR-PEER-ADDRESS
            | 0x0013 // DATA
            | 0x0016 // XOR-RELAYED-ADDRESS
            | 0x0017 // REQUESTED-ADDRESS-FAMILY
            | 0x0018 // EVEN-PORT
            | 0x0019 // REQUESTED-TRANSPORT
            | 0x001A // DONT-FRAGMENT
            | 0x0022 // RESERVATION-TOKEN
    )
}

/// Comprehension-required (0x0000–0x7FFF) attributes that neither `stun-rs` (without
/// TURN) nor ICE knows.
fn unknown_comprehension_required(attributes: &[StunAttribute]) -> Vec<u16> {
    let mut unknown = Vec::new();
    for attribute in attributes {
        let kind = attribute.attribute_type().as_u16();
        let not_understood = match attribute {
            StunAttribute::Unknown(_) => !is_ice_attribute(kind),
            _ => is_turn_attribute(kind),
        };
        if kind < 0x8000 && not_understood && !unknown.contains(&kind) {
            unknown.push(kind);
            if unknown.len() == MAX_UNKNOWN_LISTED {
                break;
            }
        }
    }
    unknown
}

/// The minimal Binding success: XOR-MAPPED-ADDRESS, plus FINGERPRINT if asked.
fn plain_reply(tid: &[u8; 12], source: SocketAddr, fingerprint: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&msg_type::BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(tid);
    put_xor_mapped_address(out, tid, source);
    set_length(out);
    if fingerprint {
        append_fingerprint(out);
    }
}

/// Appends XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
pub fn put_xor_mapped_address(out: &mut Vec<u8>, tid: &[u8; 12], source: SocketAddr) {
    let port = source.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out.extend_from_slice(&attr::XOR_MAPPED_ADDRESS.to_be_bytes());
    match source.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 8, 0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            let xored = u32::from(ip) ^ MAGIC_COOKIE;
            out.extend_from_slice(&xored.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 20, 0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            for (byte, m) in ip.octets().iter().zip(mask) {
                out.push(byte ^ m);
            }
        }
    }
}

/// Decodes an XOR-MAPPED-ADDRESS value; `None` if malformed.
pub fn decode_xor_mapped_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (family, value.len()) {
        (0x01, 8) => {
            let raw = u32::from_be_bytes(value[4..8].try_into().ok()?) ^ MAGIC_COOKIE;
            Some(SocketAddr::from((std::net::Ipv4Addr::from(raw), port)))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::from((std::net::Ipv6Addr::from(octets), port)))
        }
        _ => None,
    }
}

/// Rewrites the header length to cover everything after the header.
fn set_length(out: &mut [u8]) {
    let len = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// The HMAC over `message` as if its header length ended right after an integrity
/// attribute of `kind` appended at `message.len()` (RFC 8489 §14.5, §14.6).
fn integrity_mac(kind: IntegrityKind, key: &[u8], message: &[u8]) -> Option<MacBytes> {
    let covered = message.len().checked_sub(HEADER_LEN)? + 4 + kind.mac_len();
    let length = u16::try_from(covered).ok()?.to_be_bytes();
    let head = [*message.first()?, *message.get(1)?, length[0], length[1]];
    let rest = message.get(4..)?;
    Some(match kind {
        IntegrityKind::Sha1 => {
            let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).ok()?;
            mac.update(&head);
            mac.update(rest);
            MacBytes::from_slice(&mac.finalize().into_bytes())
        }
        IntegrityKind::Sha256 => {
            let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).ok()?;
            mac.update(&head);
            mac.update(rest);
            MacBytes::from_slice(&mac.finalize().into_bytes())
        }
    })
}

/// A MAC of up to 32 bytes on the stack.
struct MacBytes {
    bytes: [u8; SHA256_MAC_LEN],
    len: usize,
}

impl MacBytes {
    fn from_slice(mac: &[u8]) -> Self {
        let mut bytes = [0u8; SHA256_MAC_LEN];
        let len = mac.len().min(SHA256_MAC_LEN);
        bytes[..len].copy_from_slice(&mac[..len]);
        Self { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Verifies a request's integrity attribute with `key`, in constant time.
fn integrity_matches(packet: &[u8], integrity: IntegrityAttr<'_>, key: &[u8]) -> bool {
    let Some(prefix) = packet.get(..integrity.offset) else {
        return false;
    };
    let Some(expected) = integrity_mac(integrity.kind, key, prefix) else {
        return false;
    };
    integrity.mac.len() == expected.len && bool::from(expected.as_slice().ct_eq(integrity.mac))
}

/// Verifies a message's integrity attribute of `kind` with `key` (used by the client).
pub fn verify_integrity(message: &[u8], kind: IntegrityKind, key: &[u8]) -> bool {
    let Some(frame) = Frame::parse_checked(message, false) else {
        return false;
    };
    match frame.integrity {
        Some(found) if found.kind == kind => integrity_matches(message, found, key),
        _ => false,
    }
}

/// Appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
pub fn append_integrity(out: &mut Vec<u8>, kind: IntegrityKind, key: &[u8]) {
    let Some(mac) = integrity_mac(kind, key, out) else {
        return;
    };
    out.extend_from_slice(&kind.attr_type().to_be_bytes());
    out.extend_from_slice(&(kind.mac_len() as u16).to_be_bytes());
    out.extend_from_slice(mac.as_slice());
    set_length(out);
}

/// Appends FINGERPRINT (RFC 8489 §14.7).
pub fn append_fingerprint(out: &mut Vec<u8>) {
    let covered = (out.len() + 8 - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&covered.to_be_bytes());
    let crc = crc32(out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&[0, 4]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Whether `value` is the FINGERPRINT of `prefix` (the message up to the attribute,
/// whose header length already covers the FINGERPRINT since it is last).
fn fingerprint_matches(prefix: &[u8], value: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 4]>::try_from(value) else {
        return false;
    };
    u32::from_be_bytes(bytes) == crc32(prefix) ^ FINGERPRINT_XOR
}

/// Whether a STUN message carries FINGERPRINT with a correct value.
pub fn has_valid_fingerprint(message: &[u8]) -> bool {
    fingerprint_status(message) == Some(true)
}

/// `None` if a well-framed message has no FINGERPRINT (or is not well-framed),
/// else whether its FINGERPRINT is correct.
pub fn fingerprint_status(message: &[u8]) -> Option<bool> {
    // Well-framed also means that a FINGERPRINT, if any, is the last attribute.
    Frame::parse_checked(message, false)?;
    let mut offset = HEADER_LEN;
    for (kind, value) in attributes(message) {
        if kind == attr::FINGERPRINT {
            return Some(fingerprint_matches(message.get(..offset)?, value));
        }
        offset += 4 + value.len().next_multiple_of(4);
    }
    None
}

/// Whether `message` is a well-framed STUN message (header, length, attribute
/// framing); FINGERPRINT is not checked.
pub fn is_well_framed(message: &[u8]) -> bool {
    Frame::parse_checked(message, false).is_some()
}

const CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-32 (ISO-HDLC, as zlib), which FINGERPRINT uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC32_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Iterates over the attributes of a well-framed STUN message: `(type, value)`.
pub fn attributes(message: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut offset = HEADER_LEN;
    std::iter::from_fn(move || {
        let head = message.get(offset..offset + 4)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = message.get(offset + 4..offset + 4 + len)?;
        offset += 4 + len.next_multiple_of(4);
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::credentials::IceCredential;

    const NOW: u64 = 1_800_000_000;

    fn responder(require_integrity: bool) -> StunResponder {
        StunResponder::new(IceSecret::from_bytes([42u8; 32]), require_integrity)
    }

    fn credential(r: &StunResponder) -> IceCredential {
        r.secret.issue(NOW, 600)
    }

    fn v4() -> SocketAddr {
        "192.0.2.1:32853".parse().unwrap()
    }

    fn v6() -> SocketAddr {
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap()
    }

    const TID: [u8; 12] = [
        0xB7, 0xE7, 0xA7, 0x01, 0xBC, 0x34, 0xD6, 0x86, 0xFA, 0x87, 0xDF, 0xAE,
    ];

    fn request(msg_type: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&msg_type.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&TID);
        m
    }

    fn push_attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        set_length(m);
    }

    /// An ICE connectivity check as browsers send it.
    fn ice_check(
        cred: &IceCredential,
        kind: IntegrityKind,
        extra: &[(u16, &[u8])],
        fingerprint: bool,
    ) -> Vec<u8> {
        let mut m = request(msg_type::BINDING_REQUEST);
        let username = format!("{}:remoteufrag", cred.ufrag);
        push_attr(&mut m, attr::USERNAME, username.as_bytes());
        push_attr(&mut m, attr::PRIORITY, &[0x6e, 0, 1, 0xff]);
        for (k, v) in extra {
            push_attr(&mut m, *k, v);
        }
        append_integrity(&mut m, kind, cred.password.as_bytes());
        if fingerprint {
            append_fingerprint(&mut m);
        }
        m
    }

    fn run(r: &StunResponder, packet: &[u8], source: SocketAddr) -> (Outcome, Vec<u8>) {
        let mut out = Vec::new();
        let outcome = r.handle(packet, source, NOW, &mut out);
        (outcome, out)
    }

    fn attr_types(message: &[u8]) -> Vec<u16> {
        attributes(message).map(|(k, _)| k).collect()
    }

    fn find(message: &[u8], kind: u16) -> Option<&[u8]> {
        attributes(message)
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }

    fn error_code(message: &[u8]) -> Option<u16> {
        let v = find(message, attr::ERROR_CODE)?;
        Some(u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
    }

    fn assert_reply_header(reply: &[u8], msg_type: u16) {
        assert!(Frame::parse(reply).is_some(), "reply is well-framed STUN");
        assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), msg_type);
        assert_eq!(&reply[8..20], &TID);
    }

    // RFC 5769 §2.1
    const SAMPLE_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    // RFC 5769 §2.2
    const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];
    // RFC 5769 §2.3
    const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];
    const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn rfc5769_request_integrity_and_fingerprint_verify() {
        let frame = Frame::parse(&SAMPLE_REQUEST).expect("sample request frames");
        assert!(frame.has_fingerprint);
        assert!(frame.has_ice_controlled);
        let integrity = frame.integrity.expect("has MESSAGE-INTEGRITY");
        assert_eq!(integrity.kind, IntegrityKind::Sha1);
        assert!(integrity_matches(
            &SAMPLE_REQUEST,
            integrity,
            RFC5769_PASSWORD
        ));
        assert!(!integrity_matches(
            &SAMPLE_REQUEST,
            integrity,
            b"VOkJxbRl1RmTxUk/WvJxBu"
        ));
        assert!(verify_integrity(
            &SAMPLE_REQUEST,
            IntegrityKind::Sha1,
            RFC5769_PASSWORD
        ));
    }

    #[test]
    fn rfc5769_corrupted_fingerprint_is_dropped() {
        let mut bad = SAMPLE_REQUEST;
        bad[107] ^= 1;
        assert!(Frame::parse(&bad).is_none());
        assert_eq!(run(&responder(false), &bad, v4()).0, Outcome::Dropped);
    }

    fn rebuild_response(vector: &[u8], mi_offset: usize) -> Vec<u8> {
        let mut out = vector[..mi_offset].to_vec();
        set_length(&mut out);
        append_integrity(&mut out, IntegrityKind::Sha1, RFC5769_PASSWORD);
        append_fingerprint(&mut out);
        out
    }

    #[test]
    fn rfc5769_ipv4_response_is_reproduced() {
        assert_eq!(
            rebuild_response(&SAMPLE_IPV4_RESPONSE, 48),
            SAMPLE_IPV4_RESPONSE
        );
        let xma = find(&SAMPLE_IPV4_RESPONSE, attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor_mapped_address(xma, &TID), Some(v4()));
        let mut mine = Vec::new();
        put_xor_mapped_address(&mut mine, &TID, v4());
        assert_eq!(&mine[..], &SAMPLE_IPV4_RESPONSE[36..48]);
    }

    #[test]
    fn rfc5769_ipv6_response_is_reproduced() {
        assert_eq!(
            rebuild_response(&SAMPLE_IPV6_RESPONSE, 60),
            SAMPLE_IPV6_RESPONSE
        );
        let mut mine = Vec::new();
        put_xor_mapped_address(&mut mine, &TID, v6());
        assert_eq!(&mine[..], &SAMPLE_IPV6_RESPONSE[36..60]);
    }

    #[test]
    fn rfc5769_request_with_foreign_ufrag_gets_401_with_fingerprint() {
        let (outcome, reply) = run(&responder(false), &SAMPLE_REQUEST, v4());
        assert_eq!(outcome, Outcome::AuthFailure);
        assert_reply_header(&reply, msg_type::BINDING_ERROR);
        assert_eq!(error_code(&reply), Some(401));
        assert_eq!(
            attr_types(&reply),
            vec![attr::ERROR_CODE, attr::FINGERPRINT]
        );
        assert!(has_valid_fingerprint(&reply));
    }

    #[test]
    fn sha256_integrity_matches_stun_rs_encoder() {
        use stun_rs::HMACKey;
        use stun_rs::attributes::stun::MessageIntegritySha256;
        let key = HMACKey::new_short_term("VOkJxbRl1RmTxUk/WvJxBt").unwrap();
        let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(TransactionId::from(TID))
            .with_attribute(XorMappedAddress::from(v4()))
            .with_attribute(MessageIntegritySha256::new(key))
            .with_attribute(Fingerprint::default())
            .build();
        let mut theirs = [0u8; 128];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut theirs, &msg)
            .unwrap();
        let mut mine = Vec::new();
        plain_reply(&TID, v4(), false, &mut mine);
        append_integrity(&mut mine, IntegrityKind::Sha256, RFC5769_PASSWORD);
        append_fingerprint(&mut mine);
        assert_eq!(&mine[..], &theirs[..n]);
        assert!(verify_integrity(
            &mine,
            IntegrityKind::Sha256,
            RFC5769_PASSWORD
        ));
    }

    #[test]
    fn minimal_request_gets_32_byte_reply() {
        let (outcome, reply) = run(&responder(false), &request(msg_type::BINDING_REQUEST), v4());
        assert_eq!(outcome, Outcome::Unauthenticated);
        assert_eq!(reply.len(), 32);
        assert_reply_header(&reply, msg_type::BINDING_SUCCESS);
        assert_eq!(attr_types(&reply), vec![attr::XOR_MAPPED_ADDRESS]);
        let xma = find(&reply, attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor_mapped_address(xma, &TID), Some(v4()));
    }

    #[test]
    fn fingerprint_in_request_means_fingerprint_in_reply() {
        let mut m = request(msg_type::BINDING_REQUEST);
        append_fingerprint(&mut m);
        let (outcome, reply) = run(&responder(false), &m, v6());
        assert_eq!(outcome, Outcome::Unauthenticated);
        assert_eq!(reply.len(), 20 + 24 + 8);
        assert_eq!(
            attr_types(&reply),
            vec![attr::XOR_MAPPED_ADDRESS, attr::FINGERPRINT]
        );
        assert!(has_valid_fingerprint(&reply));
        let xma = find(&reply, attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor_mapped_address(xma, &TID), Some(v6()));
    }

    #[test]
    fn mapped_ipv4_source_is_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().unwrap();
        let (_, reply) = run(
            &responder(false),
            &request(msg_type::BINDING_REQUEST),
            mapped,
        );
        let xma = find(&reply, attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor_mapped_address(xma, &TID), Some(v4()));
    }

    #[test]
    fn fast_path_and_stun_rs_path_produce_identical_bytes() {
        let r = responder(false);
        for source in [
            v4(),
            v6(),
            "127.0.0.1:1".parse().unwrap(),
            "[::1]:65535".parse().unwrap(),
        ] {
            for fingerprint in [false, true] {
                let mut m = request(msg_type::BINDING_REQUEST);
                if fingerprint {
                    append_fingerprint(&mut m);
                }
                let frame = Frame::parse(&m).unwrap();
                assert!(frame.is_minimal_binding_request());
                let mut fast = Vec::new();
                plain_reply(&frame.transaction_id, source, fingerprint, &mut fast);
                let mut general = Vec::new();
                let outcome = r.handle_general(&frame, &m, source, NOW, &mut general);
                assert_eq!(outcome, Outcome::Unauthenticated);
                assert_eq!(fast, general, "source {source} fingerprint {fingerprint}");
            }
        }
    }

    #[test]
    fn username_without_integrity_is_plain_success() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, attr::USERNAME, b"someufrag:other");
        let (outcome, reply) = run(&responder(false), &m, v4());
        assert_eq!(outcome, Outcome::Unauthenticated);
        assert_eq!(reply.len(), 32);
    }

    #[test]
    fn require_integrity_refuses_plain_requests_with_400() {
        let r = responder(true);
        let (outcome, reply) = run(&r, &request(msg_type::BINDING_REQUEST), v4());
        assert_eq!(outcome, Outcome::BadRequest);
        assert_eq!(error_code(&reply), Some(400));
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, attr::USERNAME, b"someufrag:other");
        append_fingerprint(&mut m);
        let (outcome, reply) = run(&r, &m, v4());
        assert_eq!(outcome, Outcome::BadRequest);
        assert_eq!(
            attr_types(&reply),
            vec![attr::ERROR_CODE, attr::FINGERPRINT]
        );
        let cred = credential(&r);
        let (outcome, _) = run(&r, &ice_check(&cred, IntegrityKind::Sha1, &[], true), v4());
        assert_eq!(outcome, Outcome::Success);
    }

    fn assert_authenticated_success(kind: IntegrityKind, fingerprint: bool) {
        let r = responder(false);
        let cred = credential(&r);
        let m = ice_check(
            &cred,
            kind,
            &[(attr::ICE_CONTROLLING, &[1; 8]), (attr::USE_CANDIDATE, &[])],
            fingerprint,
        );
        let (outcome, reply) = run(&r, &m, v4());
        assert_eq!(outcome, Outcome::Success);
        assert_reply_header(&reply, msg_type::BINDING_SUCCESS);
        // FINGERPRINT whether or not the request had one (PROTOCOL.md §3).
        let want = vec![
            attr::XOR_MAPPED_ADDRESS,
            attr::SOFTWARE,
            kind.attr_type(),
            attr::FINGERPRINT,
        ];
        assert_eq!(
            attr_types(&reply),
            want,
            "request fingerprint {fingerprint}"
        );
        assert!(verify_integrity(&reply, kind, cred.password.as_bytes()));
        assert!(has_valid_fingerprint(&reply));
        assert_eq!(find(&reply, attr::SOFTWARE), Some(SOFTWARE.as_bytes()));
        let xma = find(&reply, attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor_mapped_address(xma, &TID), Some(v4()));
    }

    #[test]
    fn authenticated_sha1_success() {
        assert_authenticated_success(IntegrityKind::Sha1, true);
        assert_authenticated_success(IntegrityKind::Sha1, false);
    }

    #[test]
    fn authenticated_sha256_success() {
        assert_authenticated_success(IntegrityKind::Sha256, true);
        assert_authenticated_success(IntegrityKind::Sha256, false);
    }

    #[test]
    fn stun_rs_decoder_validates_our_authenticated_reply() {
        use stun_rs::{DecoderContextBuilder, HMACKey};
        let r = responder(false);
        let cred = credential(&r);
        let (_, reply) = run(&r, &ice_check(&cred, IntegrityKind::Sha1, &[], true), v4());
        let ctx = DecoderContextBuilder::default()
            .with_key(HMACKey::new_short_term(cred.password.as_str()).unwrap())
            .with_validation()
            .build();
        let decoder = MessageDecoderBuilder::default().with_context(ctx).build();
        let (msg, size) = decoder
            .decode(&reply)
            .expect("stun-rs validates MI and FINGERPRINT");
        assert_eq!(size, reply.len());
        assert_eq!(msg.class(), MessageClass::SuccessResponse);
    }

    #[test]
    fn wrong_password_gets_401_without_integrity() {
        let r = responder(false);
        let mut cred = credential(&r);
        cred.password = r.secret.password_for("AAAAAAAAAAAAAAAA");
        let (outcome, reply) = run(&r, &ice_check(&cred, IntegrityKind::Sha1, &[], true), v4());
        assert_eq!(outcome, Outcome::AuthFailure);
        assert_eq!(error_code(&reply), Some(401));
        assert_eq!(
            attr_types(&reply),
            vec![attr::ERROR_CODE, attr::FINGERPRINT]
        );
    }

    #[test]
    fn expired_credential_gets_401() {
        let r = responder(false);
        let cred = r.secret.issue(NOW - 700, 600);
        let m = ice_check(&cred, IntegrityKind::Sha256, &[], false);
        let (outcome, reply) = run(&r, &m, v4());
        assert_eq!(outcome, Outcome::AuthFailure);
        // Error replies carry FINGERPRINT only if the request did.
        assert_eq!(attr_types(&reply), vec![attr::ERROR_CODE]);
        // Valid up to and including the embedded expiry second.
        let mut out = Vec::new();
        assert_eq!(r.handle(&m, v4(), NOW - 100, &mut out), Outcome::Success);
    }

    #[test]
    fn credential_of_another_secret_gets_401() {
        let other = StunResponder::new(IceSecret::from_bytes([1u8; 32]), false);
        let cred = credential(&other);
        let (outcome, _) = run(
            &responder(false),
            &ice_check(&cred, IntegrityKind::Sha1, &[], true),
            v4(),
        );
        assert_eq!(outcome, Outcome::AuthFailure);
    }

    #[test]
    fn ufrag_is_the_part_before_the_first_colon_or_the_whole_value() {
        let r = responder(false);
        let cred = credential(&r);
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, attr::USERNAME, cred.ufrag.as_bytes());
        append_integrity(&mut m, IntegrityKind::Sha1, cred.password.as_bytes());
        assert_eq!(run(&r, &m, v4()).0, Outcome::Success);
    }

    #[test]
    fn ice_controlled_with_integrity_gets_487_with_integrity() {
        let r = responder(false);
        let cred = credential(&r);
        for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
            let m = ice_check(&cred, kind, &[(attr::ICE_CONTROLLED, &[2; 8])], true);
            let (outcome, reply) = run(&r, &m, v4());
            assert_eq!(outcome, Outcome::RoleConflict);
            assert_reply_header(&reply, msg_type::BINDING_ERROR);
            assert_eq!(error_code(&reply), Some(487));
            assert_eq!(
                attr_types(&reply),
                vec![attr::ERROR_CODE, kind.attr_type(), attr::FINGERPRINT]
            );
            assert!(verify_integrity(&reply, kind, cred.password.as_bytes()));
        }
    }

    #[test]
    fn ice_role_attributes_without_integrity_are_ignored() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, attr::ICE_CONTROLLED, &[2; 8]);
        push_attr(&mut m, attr::PRIORITY, &[0, 0, 0, 1]);
        let (outcome, reply) = run(&responder(false), &m, v4());
        assert_eq!(outcome, Outcome::Unauthenticated);
        assert_eq!(reply.len(), 32);
    }

    #[test]
    fn integrity_without_username_gets_400() {
        let r = responder(false);
        for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
            let mut m = request(msg_type::BINDING_REQUEST);
            append_integrity(&mut m, kind, b"key");
            append_fingerprint(&mut m);
            let (outcome, reply) = run(&r, &m, v4());
            assert_eq!(outcome, Outcome::BadRequest);
            assert_eq!(error_code(&reply), Some(400));
            assert_eq!(
                attr_types(&reply),
                vec![attr::ERROR_CODE, attr::FINGERPRINT]
            );
        }
    }

    #[test]
    fn unknown_comprehension_required_gets_420_listing_them() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0x7777, b"x");
        push_attr(&mut m, 0x0003, &[0; 4]);
        push_attr(&mut m, 0xC001, b"optional");
        let (outcome, reply) = run(&responder(false), &m, v4());
        assert_eq!(outcome, Outcome::UnknownAttribute);
        assert_eq!(error_code(&reply), Some(420));
        assert_eq!(
            attr_types(&reply),
            vec![attr::ERROR_CODE, attr::UNKNOWN_ATTRIBUTES]
        );
        assert_eq!(
            find(&reply, attr::UNKNOWN_ATTRIBUTES),
            Some(&[0x77, 0x77, 0x00, 0x03][..])
        );
    }

    /// `stun-rs` decodes TURN attributes (its `turn` feature is on for `client::turn`),
    /// but the responder is no TURN server: to it they are unknown, as before.
    #[test]
    fn turn_attributes_in_a_binding_request_get_420() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0x0019, &[17, 0, 0, 0]); // REQUESTED-TRANSPORT
        push_attr(&mut m, 0x000D, &600u32.to_be_bytes()); // LIFETIME
        push_attr(&mut m, 0x0013, b"data"); // DATA
        let (outcome, reply) = run(&responder(false), &m, v4());
        assert_eq!(outcome, Outcome::UnknownAttribute);
        assert_eq!(
            find(&reply, attr::UNKNOWN_ATTRIBUTES),
            Some(&[0x00, 0x19, 0x00, 0x0D, 0x00, 0x13][..])
        );
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0x000D, &[0, 0, 1]); // LIFETIME of 3 bytes
        assert_eq!(run(&responder(false), &m, v4()).0, Outcome::BadRequest);
    }

    #[test]
    fn unknown_comprehension_optional_is_ignored() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0xC001, b"optional");
        push_attr(&mut m, attr::SOFTWARE, b"client");
        assert_eq!(run(&responder(false), &m, v4()).0, Outcome::Unauthenticated);
    }

    #[test]
    fn order_400_before_420() {
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0x7777, b"x");
        append_integrity(&mut m, IntegrityKind::Sha1, b"key");
        assert_eq!(run(&responder(false), &m, v4()).0, Outcome::BadRequest);
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, 0x7777, b"x");
        push_attr(&mut m, attr::PRIORITY, &[1, 2, 3]);
        assert_eq!(run(&responder(false), &m, v4()).0, Outcome::BadRequest);
    }

    #[test]
    fn order_420_before_401() {
        let r = responder(false);
        let mut cred = credential(&r);
        cred.password = r.secret.password_for("AAAAAAAAAAAAAAAA");
        let m = ice_check(&cred, IntegrityKind::Sha1, &[(0x7777, b"x")], true);
        assert_eq!(run(&r, &m, v4()).0, Outcome::UnknownAttribute);
    }

    #[test]
    fn order_401_before_487() {
        let r = responder(false);
        let mut cred = credential(&r);
        cred.password = r.secret.password_for("AAAAAAAAAAAAAAAA");
        let m = ice_check(
            &cred,
            IntegrityKind::Sha1,
            &[(attr::ICE_CONTROLLED, &[2; 8])],
            true,
        );
        assert_eq!(run(&r, &m, v4()).0, Outcome::AuthFailure);
    }

    #[test]
    fn order_420_before_487() {
        let r = responder(false);
        let cred = credential(&r);
        let m = ice_check(
            &cred,
            IntegrityKind::Sha1,
            &[(attr::ICE_CONTROLLED, &[2; 8]), (0x7777, b"x")],
            true,
        );
        assert_eq!(run(&r, &m, v4()).0, Outcome::UnknownAttribute);
    }

    #[test]
    fn malformed_known_attributes_get_400() {
        let r = responder(false);
        let cases: [(u16, &[u8]); 7] = [
            (attr::PRIORITY, &[1, 2]),
            (attr::USE_CANDIDATE, &[1]),
            (attr::ICE_CONTROLLING, &[1; 4]),
            (attr::ICE_CONTROLLED, &[1; 9]),
            (attr::USERNAME, &[0xff, 0xfe]),
            (attr::XOR_MAPPED_ADDRESS, &[0, 7, 0, 0]),
            (attr::MESSAGE_INTEGRITY, &[0; 19]),
        ];
        for (kind, value) in cases {
            let mut m = request(msg_type::BINDING_REQUEST);
            push_attr(&mut m, kind, value);
            append_fingerprint(&mut m);
            let (outcome, reply) = run(&r, &m, v4());
            assert_eq!(outcome, Outcome::BadRequest, "attribute {kind:#06x}");
            assert_eq!(error_code(&reply), Some(400));
        }
        let mut m = request(msg_type::BINDING_REQUEST);
        push_attr(&mut m, attr::FINGERPRINT, &[0; 8]);
        assert_eq!(run(&r, &m, v4()).0, Outcome::BadRequest);
    }

    #[test]
    fn other_request_methods_get_400_in_their_method() {
        // Allocate request (0x0003) → Allocate error response (0x0113).
        let (outcome, reply) = run(&responder(false), &request(0x0003), v4());
        assert_eq!(outcome, Outcome::BadRequest);
        assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), 0x0113);
        let (_, reply) = run(&responder(false), &request(0x3EEF), v4());
        assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), 0x3FFF);
    }

    #[test]
    fn indications_and_responses_are_dropped() {
        let r = responder(false);
        for t in [
            msg_type::BINDING_INDICATION,
            msg_type::BINDING_SUCCESS,
            msg_type::BINDING_ERROR,
        ] {
            let mut m = request(t);
            append_fingerprint(&mut m);
            let (outcome, reply) = run(&r, &m, v4());
            assert_eq!(outcome, Outcome::Dropped);
            assert!(reply.is_empty());
        }
    }

    #[test]
    fn non_stun_and_broken_framing_are_dropped() {
        let r = responder(false);
        let good = request(msg_type::BINDING_REQUEST);
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello world, not stun".to_vec(),
            good[..19].to_vec(),
        ];
        let mut bad_cookie = good.clone();
        bad_cookie[4] ^= 1;
        cases.push(bad_cookie);
        let mut top_bits = good.clone();
        top_bits[0] |= 0x80;
        cases.push(top_bits);
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 4]);
        cases.push(trailing);
        let mut odd_length = good.clone();
        odd_length.extend_from_slice(&[0, 0x22, 0, 1, b'x', 0]);
        set_length(&mut odd_length);
        cases.push(odd_length);
        let mut overrun = good.clone();
        overrun.extend_from_slice(&[0x80, 0x22, 0, 9, 1, 2, 3, 4]);
        set_length(&mut overrun);
        cases.push(overrun);
        let mut after_fingerprint = good.clone();
        append_fingerprint(&mut after_fingerprint);
        push_attr(&mut after_fingerprint, attr::SOFTWARE, b"late");
        cases.push(after_fingerprint);
        for case in cases {
            let (outcome, reply) = run(&r, &case, v4());
            assert_eq!(outcome, Outcome::Dropped, "{case:02x?}");
            assert!(reply.is_empty());
        }
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let r = responder(false);
        let cred = credential(&r);
        let mut m = ice_check(&cred, IntegrityKind::Sha1, &[], false);
        push_attr(&mut m, 0x7777, b"ignored");
        push_attr(&mut m, attr::ICE_CONTROLLED, &[2; 8]);
        assert_eq!(run(&r, &m, v4()).0, Outcome::Success);
    }

    #[test]
    fn outcome_labels() {
        let labels: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels,
            [
                "success",
                "unauthenticated",
                "auth_failure",
                "role_conflict",
                "bad_request",
                "unknown_attribute",
                "dropped"
            ]
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }

    #[test]
    fn fingerprint_status_reports_absent_valid_and_invalid() {
        let mut m = request(msg_type::BINDING_SUCCESS);
        assert_eq!(fingerprint_status(&m), None);
        append_fingerprint(&mut m);
        assert_eq!(fingerprint_status(&m), Some(true));
        let last = m.len() - 1;
        m[last] ^= 0xFF;
        assert_eq!(fingerprint_status(&m), Some(false));
        assert!(is_well_framed(&m));
        assert!(!is_well_framed(&m[..m.len() - 1]));
    }

    #[test]
    fn crc32_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
