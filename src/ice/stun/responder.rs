//! The sans-I/O responder: one datagram in, the reply (possibly none) out.

use std::net::SocketAddr;

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, Software, UnknownAttributes, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageEncoder, MessageEncoderBuilder, MessageMethod, StunMessageBuilder,
    TransactionId,
};

use super::message::{Message, minimal_binding};
use super::wire::{
    IntegrityKind, MAGIC_COOKIE, SOFTWARE, append_fingerprint, append_integrity, msg_type,
    put_xor_mapped_address, set_length,
};
use crate::ice::credentials::SharedIceSecret;

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

/// A reply to send, before integrity and FINGERPRINT are appended.
pub(super) enum Reply<'a> {
    Success {
        authenticated: bool,
    },
    Error {
        method: u16,
        code: u16,
        unknown: &'a [u16],
    },
}

/// The ICE-lite STUN responder. Cheap to share (`&self` only).
pub struct StunResponder {
    /// Shared with the daemon's state, which replaces it when a cluster adopts another
    /// keyring.
    pub(super) secret: SharedIceSecret,
    require_integrity: bool,
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
    /// `secret` is an [`IceSecret`](crate::ice::credentials::IceSecret) (fixed) or a
    /// [`SharedIceSecret`] (replaceable while serving).
    pub fn new(secret: impl Into<SharedIceSecret>, require_integrity: bool) -> Self {
        Self {
            secret: secret.into(),
            require_integrity,
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
        if !self.require_integrity
            && let Some((tid, fingerprint)) = minimal_binding(packet)
        {
            plain_reply(tid, source, fingerprint, out);
            return Outcome::Unauthenticated;
        }
        let Some(request) = Message::parse(packet) else {
            return Outcome::Dropped;
        };
        if !request.is_request() {
            return Outcome::Dropped;
        }
        if request.is_minimal_binding_request() && !self.require_integrity {
            plain_reply(
                request.transaction_id,
                source,
                request.has_fingerprint(),
                out,
            );
            return Outcome::Unauthenticated;
        }
        self.handle_general(&request, source, now_unix, out)
    }

    /// Every request that is not the minimal Binding request.
    pub(super) fn handle_general(
        &self,
        request: &Message<'_>,
        source: SocketAddr,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let tid = request.transaction_id;
        let method = request.method();
        let fingerprint = request.has_fingerprint();
        let error =
            |code: u16, unknown: &[u16], key: Option<(IntegrityKind, &[u8])>, out: &mut Vec<u8>| {
                self.reply_error(method, tid, code, unknown, key, fingerprint, out)
            };
        if !request.is_binding_request() || request.malformed {
            return error(400, &[], None, out);
        }
        let username = request.username.as_deref();
        if request.integrity.is_some() && username.is_none() {
            return error(400, &[], None, out);
        }
        let unknown = request.unknown.as_slice();
        if !unknown.is_empty() {
            return error(420, unknown, None, out);
        }
        let (Some(integrity), Some(username)) = (request.integrity, username) else {
            if self.require_integrity {
                return error(400, &[], None, out);
            }
            let reply = Reply::Success {
                authenticated: false,
            };
            self.encode(tid, source, reply, None, fingerprint, out);
            return Outcome::Unauthenticated;
        };
        let ufrag = username.split(':').next().unwrap_or_default();
        // The current secret's password, else (for a while after a swap) the replaced one's.
        let matching = self
            .secret
            .passwords(ufrag, now_unix)
            .into_iter()
            .flatten()
            .find(|p| request.integrity_matches(integrity, p.as_bytes()));
        let Some(password) = matching else {
            return error(401, &[], None, out);
        };
        let key = Some((integrity.kind, password.as_bytes()));
        if request.has_ice_controlled {
            return error(487, &[], key, out);
        }
        let reply = Reply::Success {
            authenticated: true,
        };
        // The contract lists FINGERPRINT in every authenticated success.
        self.encode(tid, source, reply, key, true, out);
        Outcome::Success
    }

    /// An error response in the request's `method`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply_error(
        &self,
        method: u16,
        tid: &[u8; 12],
        code: u16,
        unknown: &[u16],
        key: Option<(IntegrityKind, &[u8])>,
        fingerprint: bool,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let reply = Reply::Error {
            method,
            code,
            unknown,
        };
        // The source address is not part of an error reply.
        let unused = SocketAddr::from(([0, 0, 0, 0], 0));
        self.encode(tid, unused, reply, key, fingerprint, out);
        match code {
            400 => Outcome::BadRequest,
            401 => Outcome::AuthFailure,
            420 => Outcome::UnknownAttribute,
            _ => Outcome::RoleConflict,
        }
    }

    /// Builds a reply with the `stun-rs` encoder, then appends integrity and FINGERPRINT.
    pub(super) fn encode(
        &self,
        tid: &[u8; 12],
        source: SocketAddr,
        reply: Reply<'_>,
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
                // No reason phrase: an error reply must not amplify (docs/protocol.md §3.4).
                if let Ok(error) = stun_rs::ErrorCode::new(code, "") {
                    builder = builder.with_attribute(ErrorCode::from(error));
                }
                if !unknown.is_empty() {
                    builder = builder.with_attribute(UnknownAttributes::from(unknown));
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

/// The minimal Binding success: XOR-MAPPED-ADDRESS, plus FINGERPRINT if asked.
pub(super) fn plain_reply(
    tid: &[u8; 12],
    source: SocketAddr,
    fingerprint: bool,
    out: &mut Vec<u8>,
) {
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
