//! Properties of the STUN responder: it never panics, and every reply is a
//! well-formed STUN response carrying the request's transaction id.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use commucat::ice::credentials::IceSecret;
use commucat::ice::stun::{self, IntegrityKind, Outcome, RequestBuilder, StunResponder};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn secret() -> IceSecret {
    IceSecret::from_bytes([21u8; 32])
}

/// Checks the invariants of a reply to `request`.
fn check_reply(request: &[u8], outcome: Outcome, reply: &[u8]) -> Result<(), TestCaseError> {
    if outcome == Outcome::Dropped {
        prop_assert!(reply.is_empty());
        return Ok(());
    }
    prop_assert!(
        stun::is_well_framed(reply),
        "reply not well-framed: {reply:02x?}"
    );
    prop_assert_eq!(&reply[8..20], &request[8..20]);
    let msg_type = u16::from_be_bytes([reply[0], reply[1]]);
    let request_type = u16::from_be_bytes([request[0], request[1]]);
    match outcome {
        Outcome::Success | Outcome::Unauthenticated => {
            prop_assert_eq!(msg_type, stun::msg_type::BINDING_SUCCESS)
        }
        // An error response of the request's method.
        _ => prop_assert_eq!(msg_type, request_type | 0x0110),
    }
    prop_assert!(reply.len() <= 256);
    // A reply carries a valid FINGERPRINT when the request did, and always when it
    // is an authenticated success; otherwise none.
    let wanted = outcome == Outcome::Success || stun::fingerprint_status(request).is_some();
    prop_assert_eq!(stun::fingerprint_status(reply), wanted.then_some(true));
    Ok(())
}

fn source() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// Attribute types worth mixing: known ones, ICE ones and unknown ones of both ranges.
fn attr_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(stun::attr::USERNAME),
        Just(stun::attr::MESSAGE_INTEGRITY),
        Just(stun::attr::MESSAGE_INTEGRITY_SHA256),
        Just(stun::attr::PRIORITY),
        Just(stun::attr::USE_CANDIDATE),
        Just(stun::attr::ICE_CONTROLLED),
        Just(stun::attr::ICE_CONTROLLING),
        Just(stun::attr::SOFTWARE),
        Just(stun::attr::XOR_MAPPED_ADDRESS),
        Just(stun::attr::ERROR_CODE),
        Just(0x0014u16),
        Just(0x0015u16),
        // FINGERPRINT is appended (or not) by the test itself.
        any::<u16>().prop_filter("not FINGERPRINT", |&t| t != stun::attr::FINGERPRINT),
    ]
}

fn build(msg_type: u16, tid: [u8; 12], attrs: &[(u16, Vec<u8>)]) -> RequestBuilder {
    attrs
        .iter()
        .fold(RequestBuilder::new(msg_type, tid), |m, (kind, value)| {
            m.attribute(*kind, value)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..600), src in source(), strict in any::<bool>()) {
        let responder = StunResponder::new(secret(), strict);
        let mut out = Vec::new();
        let outcome = responder.handle(&packet, src, NOW, &mut out);
        check_reply(&packet, outcome, &out)?;
    }

    #[test]
    fn structured_requests_get_well_formed_replies(
        msg_type in prop_oneof![Just(0x0001u16), Just(0x0011u16), Just(0x0003u16), Just(0x0101u16), any::<u16>().prop_map(|t| t & 0x3FFF)],
        tid in any::<[u8; 12]>(),
        attrs in prop::collection::vec((attr_type(), prop::collection::vec(any::<u8>(), 0..40)), 0..8),
        authenticate in any::<bool>(),
        sha256 in any::<bool>(),
        fingerprint in any::<bool>(),
        strict in any::<bool>(),
        src in source(),
    ) {
        let secret = secret();
        let responder = StunResponder::new(secret.clone(), strict);
        let mut attrs = attrs;
        let cred = secret.issue(NOW, 600, [0x77; 8]);
        if authenticate {
            attrs.push((stun::attr::USERNAME, format!("{}:x", cred.ufrag).into_bytes()));
        }
        let mut packet = build(msg_type, tid, &attrs);
        if authenticate {
            let kind = if sha256 { IntegrityKind::Sha256 } else { IntegrityKind::Sha1 };
            packet = packet.integrity(kind, cred.password.as_bytes());
        }
        if fingerprint {
            packet = packet.fingerprint();
        }
        let packet = packet.build();
        let mut out = Vec::new();
        let outcome = responder.handle(&packet, src, NOW, &mut out);
        check_reply(&packet, outcome, &out)?;
        // Well-framed requests are never dropped; everything else is.
        let is_request = msg_type & 0x0110 == 0;
        prop_assert_eq!(outcome == Outcome::Dropped, !is_request);
        if outcome == Outcome::Success || outcome == Outcome::RoleConflict {
            let kind = if sha256 { IntegrityKind::Sha256 } else { IntegrityKind::Sha1 };
            prop_assert!(stun::verify_integrity(&out, kind, cred.password.as_bytes()));
        }
    }
}
