//! The responder as it was before requests were parsed once: a framing walk, then the
//! `stun-rs` decoder for every request but the minimal Binding one. Kept as an oracle:
//! the replies of the one-pass parse must be byte for byte the same.

use std::net::SocketAddr;

use stun_rs::attributes::StunAttribute;
use stun_rs::attributes::stun::UserName;
use stun_rs::error::StunErrorLevel;
use stun_rs::{MessageDecoder, MessageDecoderBuilder};

use super::super::message::MAX_UNKNOWN_LISTED;
use super::super::responder::{Reply, plain_reply};
use super::super::wire::{
    HEADER_LEN, IntegrityKind, MAGIC_COOKIE, SHA1_MAC_LEN, SHA256_MAC_LEN, attr,
    fingerprint_matches, mac_matches, msg_type,
};
use super::super::{Outcome, StunResponder};
use crate::ice::credentials::password_if_valid;

#[derive(Debug, Clone, Copy)]
struct IntegrityAttr<'a> {
    kind: IntegrityKind,
    offset: usize,
    mac: &'a [u8],
}

#[derive(Debug)]
struct Frame<'a> {
    msg_type: u16,
    transaction_id: [u8; 12],
    attr_count: usize,
    has_fingerprint: bool,
    malformed_known: bool,
    has_ice_controlled: bool,
    integrity: Option<IntegrityAttr<'a>>,
}

impl<'a> Frame<'a> {
    fn parse(packet: &'a [u8]) -> Option<Self> {
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
            if next > packet.len() || frame.has_fingerprint {
                return None;
            }
            if kind == attr::FINGERPRINT {
                if value_len != 4 {
                    frame.malformed_known = true;
                } else if !fingerprint_matches(&packet[..offset], value) {
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
                let expected_len = match kind {
                    attr::MESSAGE_INTEGRITY => Some(SHA1_MAC_LEN),
                    attr::MESSAGE_INTEGRITY_SHA256 => Some(SHA256_MAC_LEN),
                    attr::PRIORITY => Some(4),
                    attr::USE_CANDIDATE => Some(0),
                    attr::ICE_CONTROLLED | attr::ICE_CONTROLLING => Some(8),
                    _ => None,
                };
                if expected_len.is_some_and(|len| len != value.len()) {
                    frame.malformed_known = true;
                } else {
                    let found = |kind| IntegrityAttr {
                        kind,
                        offset,
                        mac: value,
                    };
                    match kind {
                        attr::MESSAGE_INTEGRITY => sha1 = Some(found(IntegrityKind::Sha1)),
                        attr::MESSAGE_INTEGRITY_SHA256 => {
                            sha256 = Some(found(IntegrityKind::Sha256));
                        }
                        attr::ICE_CONTROLLED => frame.has_ice_controlled = true,
                        _ => {}
                    }
                }
            }
            offset = next;
        }
        frame.integrity = sha256.or(sha1);
        Some(frame)
    }

    fn method(&self) -> u16 {
        let t = self.msg_type;
        ((t & 0x3E00) >> 2) | ((t & 0x00E0) >> 1) | (t & 0x000F)
    }
}

fn unknown_comprehension_required(attributes: &[StunAttribute]) -> Vec<u16> {
    let mut unknown = Vec::new();
    for attribute in attributes {
        let StunAttribute::Unknown(u) = attribute else {
            continue;
        };
        let kind = u.attribute_type().as_u16();
        let ice = matches!(
            kind,
            attr::PRIORITY | attr::USE_CANDIDATE | attr::ICE_CONTROLLED | attr::ICE_CONTROLLING
        );
        if kind < 0x8000 && !ice && !unknown.contains(&kind) {
            unknown.push(kind);
            if unknown.len() == MAX_UNKNOWN_LISTED {
                break;
            }
        }
    }
    unknown
}

/// The old `StunResponder::handle`.
pub(super) fn handle(
    r: &StunResponder,
    packet: &[u8],
    source: SocketAddr,
    now_unix: u64,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let Some(frame) = Frame::parse(packet) else {
        return Outcome::Dropped;
    };
    if frame.msg_type & 0x0110 != 0 {
        return Outcome::Dropped;
    }
    let binding = frame.msg_type == msg_type::BINDING_REQUEST;
    let minimal =
        binding && !frame.malformed_known && frame.attr_count == usize::from(frame.has_fingerprint);
    if minimal && !r.require_integrity() {
        plain_reply(&frame.transaction_id, source, frame.has_fingerprint, out);
        return Outcome::Unauthenticated;
    }
    let tid = &frame.transaction_id;
    let fingerprint = frame.has_fingerprint;
    let error =
        |code: u16, unknown: &[u16], key: Option<(IntegrityKind, &[u8])>, out: &mut Vec<u8>| {
            r.reply_error(frame.method(), tid, code, unknown, key, fingerprint, out)
        };
    if !binding || frame.malformed_known {
        return error(400, &[], None, out);
    }
    let decoder: MessageDecoder = MessageDecoderBuilder::default().build();
    let message = match decoder.decode(packet) {
        Ok((message, _)) => message,
        Err(stun_rs::error::StunDecodeError(StunErrorLevel::Attribute(e)))
            if e.attr_type.is_some() =>
        {
            return error(400, &[], None, out);
        }
        Err(_) => return Outcome::Dropped,
    };
    let username = message
        .get::<UserName>()
        .and_then(|a| a.as_user_name().ok());
    if frame.integrity.is_some() && username.is_none() {
        return error(400, &[], None, out);
    }
    let unknown = unknown_comprehension_required(message.attributes());
    if !unknown.is_empty() {
        return error(420, &unknown, None, out);
    }
    let (Some(integrity), Some(username)) = (frame.integrity, username) else {
        if r.require_integrity() {
            return error(400, &[], None, out);
        }
        let reply = Reply::Success {
            authenticated: false,
        };
        r.encode(tid, source, reply, None, fingerprint, out);
        return Outcome::Unauthenticated;
    };
    let ufrag = username.as_str().split(':').next().unwrap_or_default();
    let Some(password) = password_if_valid(&r.secret.load(), ufrag, now_unix) else {
        return error(401, &[], None, out);
    };
    let prefix = &packet[..integrity.offset];
    if !mac_matches(integrity.kind, prefix, integrity.mac, password.as_bytes()) {
        return error(401, &[], None, out);
    }
    let key = Some((integrity.kind, password.as_bytes()));
    if frame.has_ice_controlled {
        return error(487, &[], key, out);
    }
    let reply = Reply::Success {
        authenticated: true,
    };
    r.encode(tid, source, reply, key, true, out);
    Outcome::Success
}
