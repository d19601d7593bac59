//! STUN on the wire: constants, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY(-SHA256),
//! FINGERPRINT and the attribute walk (RFC 8489 §5, §14).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the fixed STUN header.
pub(crate) const HEADER_LEN: usize = 20;
/// The SOFTWARE value sent in authenticated replies.
pub(crate) const SOFTWARE: &str = concat!("commucat ", env!("CARGO_PKG_VERSION"));

/// Attribute types this module cares about.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
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
pub(super) const SHA1_MAC_LEN: usize = 20;
pub(super) const SHA256_MAC_LEN: usize = 32;

/// Which integrity attribute a request used (the reply uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

impl IntegrityKind {
    pub(super) fn attr_type(self) -> u16 {
        match self {
            IntegrityKind::Sha1 => attr::MESSAGE_INTEGRITY,
            IntegrityKind::Sha256 => attr::MESSAGE_INTEGRITY_SHA256,
        }
    }

    pub(super) fn mac_len(self) -> usize {
        match self {
            IntegrityKind::Sha1 => SHA1_MAC_LEN,
            IntegrityKind::Sha256 => SHA256_MAC_LEN,
        }
    }
}

/// Appends XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
pub(crate) fn put_xor_mapped_address(out: &mut Vec<u8>, tid: &[u8; 12], source: SocketAddr) {
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
pub(crate) fn decode_xor_mapped_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (family, value.len()) {
        (0x01, 8) => {
            let raw = u32::from_be_bytes(value[4..8].try_into().ok()?) ^ MAGIC_COOKIE;
            Some(SocketAddr::from((Ipv4Addr::from(raw), port)))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::from((Ipv6Addr::from(octets), port)))
        }
        _ => None,
    }
}

/// Rewrites the header length to cover everything after the header.
pub(super) fn set_length(out: &mut [u8]) {
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

/// Whether `mac` is the integrity MAC of `kind` over `prefix` (the message up to the
/// integrity attribute), keyed with `key`. The comparison is constant-time.
pub(super) fn mac_matches(kind: IntegrityKind, prefix: &[u8], mac: &[u8], key: &[u8]) -> bool {
    let Some(expected) = integrity_mac(kind, key, prefix) else {
        return false;
    };
    mac.len() == expected.len && bool::from(expected.as_slice().ct_eq(mac))
}

/// Appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
pub(crate) fn append_integrity(out: &mut Vec<u8>, kind: IntegrityKind, key: &[u8]) {
    let Some(mac) = integrity_mac(kind, key, out) else {
        return;
    };
    out.extend_from_slice(&kind.attr_type().to_be_bytes());
    out.extend_from_slice(&(kind.mac_len() as u16).to_be_bytes());
    out.extend_from_slice(mac.as_slice());
    set_length(out);
}

/// Appends FINGERPRINT (RFC 8489 §14.7).
pub(crate) fn append_fingerprint(out: &mut Vec<u8>) {
    let covered = (out.len() + 8 - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&covered.to_be_bytes());
    let crc = crc32(out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&[0, 4]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Whether `value` is the FINGERPRINT of `prefix` (the message up to the attribute,
/// whose header length already covers the FINGERPRINT since it is last).
pub(super) fn fingerprint_matches(prefix: &[u8], value: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 4]>::try_from(value) else {
        return false;
    };
    u32::from_be_bytes(bytes) == crc32(prefix) ^ FINGERPRINT_XOR
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
pub(super) fn crc32(data: &[u8]) -> u32 {
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
