//! The 7-byte clear header in front of Noise message 1: version, pattern, key version
//! and flags (docs/protocol.md §4).

use super::error::{HandshakeError, Malformed};

/// Length of the clear header in front of Noise message 1.
pub(crate) const HEADER_LEN: usize = 7;

const FLAG_PQ: u8 = 0x01;

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
        let Some(&[version, pattern, kv0, kv1, kv2, kv3, flags]) =
            message1.first_chunk::<HEADER_LEN>()
        else {
            return Err(Malformed::ShortHeader(message1.len()).into());
        };
        let version = Version::from_wire(version).ok_or(Malformed::UnknownVersion(version))?;
        let pattern = Pattern::from_wire(pattern).ok_or(Malformed::UnknownPattern(pattern))?;
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
            key_version: u32::from_be_bytes([kv0, kv1, kv2, kv3]),
            pq,
        })
    }

    /// Wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [kv0, kv1, kv2, kv3] = self.key_version.to_be_bytes();
        let flags = if self.pq { FLAG_PQ } else { 0 };
        [
            self.version.wire(),
            self.pattern.wire(),
            kv0,
            kv1,
            kv2,
            kv3,
            flags,
        ]
    }

    /// The header is part of the prologue so that tampering with it in transit fails
    /// Noise authentication.
    pub(super) fn prologue(&self, configured: &[u8]) -> Vec<u8> {
        let mut prologue = Vec::with_capacity(configured.len() + HEADER_LEN);
        prologue.extend_from_slice(configured);
        prologue.extend_from_slice(&self.to_bytes());
        prologue
    }
}
