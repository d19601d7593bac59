//! Why a handshake failed, and the WebSocket close code each failure maps to
//! (docs/protocol.md §4).

/// What exactly was malformed (all close with 4400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Message 1 shorter than the header.
    #[error("header of {0} bytes, 7 needed")]
    ShortHeader(usize),
    /// Header version is neither 1 nor 2.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// Header pattern is neither 1 (XK) nor 2 (IK).
    #[error("unknown pattern {0}")]
    UnknownPattern(u8),
    /// Flag bits other than bit 0 set.
    #[error("reserved flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// Version 2 without the PQ flag.
    #[error("version 2 requires the PQ flag")]
    Version2WithoutPq,
    /// A Noise message too short (or too long) to parse.
    #[error("Noise message cannot be parsed")]
    NoiseFraming,
    /// A handshake payload of the wrong length.
    #[error("payload of {actual} bytes, {expected} expected")]
    PayloadLength {
        /// What the header announced.
        expected: usize,
        /// What arrived.
        actual: usize,
    },
    /// `ek_e` is not a valid ML-KEM-768 encapsulation key.
    #[error("ephemeral KEM key is invalid")]
    EphemeralKemKey,
    /// Message 3 payload other than empty or `{}`.
    #[error("message 3 payload must be empty or {{}}")]
    Message3Payload,
    /// Message 2 JSON missing, invalid or not matching the request (client side).
    #[error("server hello is invalid")]
    ServerHello,
}

/// Why a handshake failed; [`HandshakeError::close_code`] is the WebSocket close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// 4400.
    #[error("malformed handshake: {0}")]
    Malformed(#[from] Malformed),
    /// 4401: Noise authentication failed (or an X25519 result was all zero).
    #[error("handshake decryption failed")]
    Decrypt,
    /// 4403: the server requires the hybrid handshake.
    #[error("post-quantum handshake required")]
    PqRequired,
    /// 4403: the client asked for the hybrid handshake but the server has PQ off.
    #[error("post-quantum handshake unavailable")]
    PqUnavailable,
    /// 4404.
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// 4404.
    #[error("expired key version {0}")]
    ExpiredKeyVersion(u32),
    /// Client side only: parameters that cannot make a valid message 1.
    #[error("invalid client parameters: {0}")]
    InvalidClientParams(&'static str),
    /// A failure no peer input can cause (a bug); 1011 "internal error".
    #[error("internal handshake error: {0}")]
    Internal(&'static str),
}

impl HandshakeError {
    /// WebSocket close code (docs/protocol.md §4).
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::InvalidClientParams(_) => 4400,
            Self::Decrypt => 4401,
            Self::PqRequired | Self::PqUnavailable => 4403,
            Self::UnknownKeyVersion(_) | Self::ExpiredKeyVersion(_) => 4404,
            Self::Internal(_) => 1011,
        }
    }

    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Decrypt => "decrypt",
            Self::PqRequired => "pq_required",
            Self::PqUnavailable => "pq_unavailable",
            Self::UnknownKeyVersion(_) => "unknown_key",
            Self::ExpiredKeyVersion(_) => "expired_key",
            Self::InvalidClientParams(_) => "client_params",
            Self::Internal(_) => "internal",
        }
    }
}
