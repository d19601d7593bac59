use std::net::SocketAddr;

use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder, TransactionId,
};

use super::message::Message;
use super::responder::plain_reply;
use super::values;
use super::wire::{
    append_fingerprint, append_integrity, crc32, put_xor_mapped_address, set_length,
};
use super::*;
use crate::ice::credentials::{IceCredential, IceSecret};

mod legacy;

const NOW: u64 = 1_800_000_000;

fn responder(require_integrity: bool) -> StunResponder {
    StunResponder::new(IceSecret::from_bytes([42u8; 32]), require_integrity)
}

/// The random part of test ufrags (any fixed bytes do).
const RANDOM: [u8; 8] = [0x5E; 8];

fn credential(r: &StunResponder) -> IceCredential {
    r.secret.load().issue(NOW, 600, RANDOM)
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
    RequestBuilder::new(msg_type, TID).build()
}

fn binding() -> RequestBuilder {
    RequestBuilder::binding(TID)
}

/// An ICE connectivity check as browsers send it.
fn ice_check(
    cred: &IceCredential,
    kind: IntegrityKind,
    extra: &[(u16, &[u8])],
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = binding()
        .username(&format!("{}:remoteufrag", cred.ufrag))
        .priority(0x6e00_01ff);
    for (k, v) in extra {
        m = m.attribute(*k, v);
    }
    m = m.integrity(kind, cred.password.as_bytes());
    if fingerprint {
        m = m.fingerprint();
    }
    m.build()
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
    assert!(Message::parse(reply).is_some(), "reply is well-framed STUN");
    assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), msg_type);
    assert_eq!(&reply[8..20], &TID);
}

// RFC 5769 §2.1
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];
// RFC 5769 §2.2
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];
// RFC 5769 §2.3
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];
const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_request_integrity_and_fingerprint_verify() {
    let frame = Message::parse(&SAMPLE_REQUEST).expect("sample request frames");
    assert!(frame.has_fingerprint());
    assert!(frame.has_ice_controlled);
    let integrity = frame.integrity.expect("has MESSAGE-INTEGRITY");
    assert_eq!(integrity.kind, IntegrityKind::Sha1);
    assert!(frame.integrity_matches(integrity, RFC5769_PASSWORD));
    assert!(!frame.integrity_matches(integrity, b"VOkJxbRl1RmTxUk/WvJxBu"));
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
    assert!(Message::parse(&bad).is_none());
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
    let m = binding().fingerprint().build();
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
            let mut m = binding();
            if fingerprint {
                m = m.fingerprint();
            }
            let m = m.build();
            let frame = Message::parse(&m).unwrap();
            assert!(frame.is_minimal_binding_request());
            let mut fast = Vec::new();
            plain_reply(frame.transaction_id, source, fingerprint, &mut fast);
            let mut general = Vec::new();
            let outcome = r.handle_general(&frame, source, NOW, &mut general);
            assert_eq!(outcome, Outcome::Unauthenticated);
            assert_eq!(fast, general, "source {source} fingerprint {fingerprint}");
        }
    }
}

#[test]
fn username_without_integrity_is_plain_success() {
    let m = binding().username("someufrag:other").build();
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
    let m = binding().username("someufrag:other").fingerprint().build();
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
    // FINGERPRINT whether or not the request had one (docs/protocol.md §3).
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
    cred.password = r.secret.load().password_for("AAAAAAAAAAAAAAAA");
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
    let cred = r.secret.load().issue(NOW - 700, 600, RANDOM);
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
fn a_replaced_shared_secret_takes_effect_and_the_old_one_lasts_until_its_deadline() {
    use crate::ice::credentials::SharedIceSecret;
    let shared = SharedIceSecret::from(IceSecret::from_bytes([42u8; 32]));
    let r = StunResponder::new(shared.clone(), false);
    let old = credential(&r);
    let check =
        |cred: &IceCredential| run(&r, &ice_check(cred, IntegrityKind::Sha1, &[], true), v4()).0;
    assert_eq!(check(&old), Outcome::Success);
    // A cluster adopting another keyring replaces the secret under the running responder;
    // the old credential lasts as long as the replaced secret is accepted.
    shared.replace(std::sync::Arc::new(IceSecret::from_bytes([43u8; 32])), NOW);
    assert_eq!(check(&old), Outcome::Success);
    let new = shared.load().issue(NOW, 600, RANDOM);
    assert_eq!(check(&new), Outcome::Success);
    shared.replace(
        std::sync::Arc::new(IceSecret::from_bytes([44u8; 32])),
        NOW - 1,
    );
    assert_eq!(check(&old), Outcome::AuthFailure);
    // One replaced secret is kept ([43], past its deadline now), and [42] is gone.
    assert_eq!(check(&new), Outcome::AuthFailure);
}

#[test]
fn ufrag_is_the_part_before_the_first_colon_or_the_whole_value() {
    let r = responder(false);
    let cred = credential(&r);
    let m = binding()
        .username(&cred.ufrag)
        .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
        .build();
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
    let m = binding()
        .attribute(attr::ICE_CONTROLLED, &[2; 8])
        .priority(1)
        .build();
    let (outcome, reply) = run(&responder(false), &m, v4());
    assert_eq!(outcome, Outcome::Unauthenticated);
    assert_eq!(reply.len(), 32);
}

#[test]
fn integrity_without_username_gets_400() {
    let r = responder(false);
    for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
        let m = binding().integrity(kind, b"key").fingerprint().build();
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
    let m = binding()
        .attribute(0x7777, b"x")
        .attribute(0x0003, &[0; 4])
        .attribute(0xC001, b"optional")
        .build();
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

#[test]
fn unknown_comprehension_optional_is_ignored() {
    let m = binding()
        .attribute(0xC001, b"optional")
        .attribute(attr::SOFTWARE, b"client")
        .build();
    assert_eq!(run(&responder(false), &m, v4()).0, Outcome::Unauthenticated);
}

#[test]
fn order_400_before_420() {
    let m = binding()
        .attribute(0x7777, b"x")
        .integrity(IntegrityKind::Sha1, b"key")
        .build();
    assert_eq!(run(&responder(false), &m, v4()).0, Outcome::BadRequest);
    let m = binding()
        .attribute(0x7777, b"x")
        .attribute(attr::PRIORITY, &[1, 2, 3])
        .build();
    assert_eq!(run(&responder(false), &m, v4()).0, Outcome::BadRequest);
}

#[test]
fn order_420_before_401() {
    let r = responder(false);
    let mut cred = credential(&r);
    cred.password = r.secret.load().password_for("AAAAAAAAAAAAAAAA");
    let m = ice_check(&cred, IntegrityKind::Sha1, &[(0x7777, b"x")], true);
    assert_eq!(run(&r, &m, v4()).0, Outcome::UnknownAttribute);
}

#[test]
fn order_401_before_487() {
    let r = responder(false);
    let mut cred = credential(&r);
    cred.password = r.secret.load().password_for("AAAAAAAAAAAAAAAA");
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
        let m = binding().attribute(kind, value).fingerprint().build();
        let (outcome, reply) = run(&r, &m, v4());
        assert_eq!(outcome, Outcome::BadRequest, "attribute {kind:#06x}");
        assert_eq!(error_code(&reply), Some(400));
    }
    let m = binding().attribute(attr::FINGERPRINT, &[0; 8]).build();
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
        let m = RequestBuilder::new(t, TID).fingerprint().build();
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
    let after_fingerprint = binding()
        .fingerprint()
        .attribute(attr::SOFTWARE, b"late")
        .build();
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
    let m = binding()
        .username(&format!("{}:remoteufrag", cred.ufrag))
        .priority(0x6e00_01ff)
        .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
        .attribute(0x7777, b"ignored")
        .attribute(attr::ICE_CONTROLLED, &[2; 8])
        .build();
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

#[test]
fn builder_makes_the_bytes_of_a_hand_made_request() {
    let cred = credential(&responder(false));
    let mut m = request(msg_type::BINDING_REQUEST);
    for (kind, value) in [
        (attr::USERNAME, cred.ufrag.as_bytes()),
        (attr::PRIORITY, &[0x6e, 0, 1, 0xff][..]),
        (attr::ICE_CONTROLLING, &[1; 8][..]),
        (attr::USE_CANDIDATE, &[][..]),
    ] {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    set_length(&mut m);
    append_integrity(&mut m, IntegrityKind::Sha256, cred.password.as_bytes());
    append_fingerprint(&mut m);
    let built = binding()
        .username(&cred.ufrag)
        .priority(0x6e00_01ff)
        .ice_controlling(0x0101_0101_0101_0101)
        .use_candidate()
        .integrity(IntegrityKind::Sha256, cred.password.as_bytes())
        .fingerprint()
        .build();
    assert_eq!(built, m);
    assert_eq!(
        RequestBuilder::minimal_binding(TID)[..],
        request(msg_type::BINDING_REQUEST)[..]
    );
    assert_eq!(
        binding().raw(&[1, 2, 3, 4, 5]).build()[HEADER_LEN..],
        [1, 2, 3, 4, 5, 0, 0, 0]
    );
    assert_eq!(
        binding().ice_controlled(2).build()[HEADER_LEN..],
        [0x80, 0x29, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]
    );
}

#[test]
fn malformed_values_get_400_even_after_integrity() {
    let r = responder(false);
    let cred = credential(&r);
    let late: [(u16, &[u8]); 4] = [
        (attr::USERNAME, &[0xff]),
        (attr::MESSAGE_INTEGRITY, &[0; 19]),
        (attr::ERROR_CODE, &[0, 0, 2, 0]),
        (attr::REALM, b" padded"),
    ];
    for (kind, value) in late {
        let m = binding()
            .username(&cred.ufrag)
            .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
            .attribute(kind, value)
            .build();
        assert_eq!(run(&r, &m, v4()).0, Outcome::BadRequest, "{kind:#06x}");
    }
}

#[test]
fn username_is_used_as_the_precis_profile_prepares_it() {
    let r = responder(false);
    // A ufrag with a 'K', sent with KELVIN SIGN (U+212A), which OpaqueString maps to 'K'.
    let cred = (0..=255u8)
        .map(|b| r.secret.load().issue(NOW, 600, [b; 8]))
        .find(|c| c.ufrag.contains('K'))
        .expect("some ufrag has a K");
    let kelvin = cred.ufrag.replacen('K', "\u{212A}", 1);
    let m = binding()
        .username(&kelvin)
        .integrity(IntegrityKind::Sha1, cred.password.as_bytes())
        .build();
    let mut out = Vec::new();
    assert_eq!(
        legacy::handle(&r, &m, v4(), NOW, &mut out),
        Outcome::Success
    );
    assert_eq!(run(&r, &m, v4()), (Outcome::Success, out));
    // Control characters are refused by the profile.
    let m = binding().username("ufrag\u{1}:peer").build();
    assert_eq!(run(&r, &m, v4()).0, Outcome::BadRequest);
    assert_eq!(values::username(b"").as_deref(), None);
    assert_eq!(values::username(b"a b").as_deref(), Some("a b"));
    assert_eq!(
        values::username("\u{3000}x".as_bytes()).as_deref(),
        Some(" x")
    );
}

#[test]
fn value_rules() {
    let ok = |kind, value: &[u8]| values::is_well_formed(kind, value);
    assert!(ok(attr::REALM, b""));
    assert!(ok(attr::REALM, b"example.org"));
    assert!(ok(attr::NONCE, b"a\\\"b c"));
    assert!(!ok(attr::NONCE, b"a\\\""), "ends with a double quote");
    assert!(!ok(attr::REALM, b"a\"b"), "bare double quote");
    assert!(!ok(attr::REALM, b"\"quoted\""));
    assert!(ok(attr::REALM, b"a \r\n b"));
    assert!(
        !ok(attr::REALM, b"a\r\nb"),
        "CRLF not followed by whitespace"
    );
    assert!(
        !ok(attr::REALM, "caf\u{e9}".as_bytes()),
        "U+00E9 wants continuations"
    );
    assert!(ok(attr::REALM, "\u{c3}\u{a9}".as_bytes()));
    assert!(ok(attr::REALM, &[b'a'; 763]));
    assert!(!ok(attr::REALM, &[b'a'; 764]));
    assert!(ok(attr::SOFTWARE, &[b'a'; 763]));
    assert!(!ok(attr::SOFTWARE, &[0xC0]));
    assert!(ok(attr::ERROR_CODE, &[0, 0, 4, 99]));
    assert!(!ok(attr::ERROR_CODE, &[0, 0, 7, 0]));
    assert!(!ok(attr::ERROR_CODE, &[0, 0, 4, 100]));
    assert!(!ok(attr::ERROR_CODE, &[0, 0, 4]));
    assert!(ok(attr::XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3, 4, 9]));
    assert!(!ok(attr::MAPPED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4]));
    assert!(ok(attr::PASSWORD_ALGORITHMS, &[]));
    assert!(ok(
        attr::PASSWORD_ALGORITHMS,
        &[0, 1, 0, 1, 9, 0, 0, 0, 0, 2, 0, 0]
    ));
    assert!(!ok(attr::PASSWORD_ALGORITHMS, &[0, 1, 0, 1, 9, 0, 0, 0]));
    assert!(ok(attr::PASSWORD_ALGORITHM, &[0, 1, 0, 1, 9, 0, 0, 0]));
    assert!(!ok(attr::PASSWORD_ALGORITHM, &[0, 1, 0, 2, 9]));
    assert!(ok(attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0, 2]));
    assert!(!ok(attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0]));
    assert!(ok(attr::USERHASH, &[0; 32]));
    assert!(!ok(attr::USERHASH, &[0; 31]));
    assert!(ok(0x7777, &[0xff]));
}

mod equivalence {
    //! The one-pass parse gives the replies of the two-pass design it replaced
    //! (`legacy`), and the value rules are those of the `stun-rs` decoder.

    use proptest::prelude::*;

    use super::*;

    const KNOWN: [u16; 15] = [
        attr::MAPPED_ADDRESS,
        attr::USERNAME,
        attr::MESSAGE_INTEGRITY,
        attr::ERROR_CODE,
        attr::UNKNOWN_ATTRIBUTES,
        attr::REALM,
        attr::NONCE,
        attr::MESSAGE_INTEGRITY_SHA256,
        attr::PASSWORD_ALGORITHM,
        attr::USERHASH,
        attr::XOR_MAPPED_ADDRESS,
        attr::PASSWORD_ALGORITHMS,
        attr::SOFTWARE,
        attr::ALTERNATE_SERVER,
        attr::FINGERPRINT,
    ];

    fn text() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            ' ',
            '\t',
            '\r',
            '\n',
            '"',
            '\\',
            ':',
            '\u{212A}',
            '\u{3000}',
            '\u{200B}',
            'ß',
            '\u{301}',
            '\u{FB01}',
            '\u{2028}',
            '\u{E000}',
            '\u{FFFF}',
            '\u{378}',
            '\u{1F600}',
            '\u{10FFFF}',
        ]);
        let chars = prop_oneof![
            20 => proptest::char::range('!', '~'),
            4 => special,
            1 => proptest::char::range('\u{0}', '\u{1F}'),
            4 => proptest::char::range('\u{80}', '\u{FF}'),
        ];
        prop::collection::vec(chars, 0..16).prop_map(|v| v.into_iter().collect())
    }

    fn bytes(len: std::ops::Range<usize>) -> BoxedStrategy<Vec<u8>> {
        prop::collection::vec(any::<u8>(), len).boxed()
    }

    /// A value for `kind`: mostly near its rules (valid or just off), else any bytes.
    fn value_for(kind: u16) -> BoxedStrategy<Vec<u8>> {
        let algorithm = (0u16..4, prop::collection::vec(any::<u8>(), 0..6), 0usize..3);
        let near: BoxedStrategy<Vec<u8>> = match kind {
            attr::USERNAME | attr::REALM | attr::NONCE | attr::SOFTWARE => prop_oneof![
                8 => text().prop_map(String::into_bytes),
                1 => prop::sample::select(vec![762usize, 763, 764]).prop_map(|n| vec![b'x'; n]),
            ]
            .boxed(),
            attr::ERROR_CODE => (any::<u8>(), 95u8..105, text())
                .prop_map(|(class, number, reason)| {
                    [vec![0, 0, class, number], reason.into_bytes()].concat()
                })
                .boxed(),
            attr::MAPPED_ADDRESS | attr::XOR_MAPPED_ADDRESS | attr::ALTERNATE_SERVER => {
                (0u8..4, prop::collection::vec(any::<u8>(), 0..22))
                    .prop_map(|(family, rest)| [vec![0, family], rest].concat())
                    .boxed()
            }
            attr::PASSWORD_ALGORITHM => algorithm
                .prop_map(|(id, params, tweak)| {
                    let mut v = id.to_be_bytes().to_vec();
                    v.extend_from_slice(&(params.len() as u16).to_be_bytes());
                    v.extend_from_slice(&params);
                    match tweak {
                        1 => drop(v.pop()),
                        2 => v.push(0),
                        _ => {}
                    }
                    v
                })
                .boxed(),
            attr::PASSWORD_ALGORITHMS => (prop::collection::vec(algorithm, 0..4), any::<bool>())
                .prop_map(|(entries, pad_last)| {
                    let mut v = Vec::new();
                    for (i, (id, params, _)) in entries.iter().enumerate() {
                        v.extend_from_slice(&id.to_be_bytes());
                        v.extend_from_slice(&(params.len() as u16).to_be_bytes());
                        v.extend_from_slice(params);
                        if i + 1 < entries.len() || pad_last {
                            v.resize(v.len().next_multiple_of(4), 0);
                        }
                    }
                    v
                })
                .boxed(),
            attr::MESSAGE_INTEGRITY => bytes(18..23),
            attr::MESSAGE_INTEGRITY_SHA256 | attr::USERHASH => bytes(30..35),
            attr::FINGERPRINT => bytes(2..7),
            attr::UNKNOWN_ATTRIBUTES => bytes(0..9),
            attr::PRIORITY => bytes(3..6),
            attr::ICE_CONTROLLED | attr::ICE_CONTROLLING => bytes(7..10),
            attr::USE_CANDIDATE => bytes(0..2),
            _ => bytes(0..12),
        };
        prop_oneof![3 => near, 1 => bytes(0..40)].boxed()
    }

    fn attribute() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let listed = prop::sample::select(
            [
                &KNOWN[..],
                &[
                    attr::PRIORITY,
                    attr::USE_CANDIDATE,
                    attr::ICE_CONTROLLED,
                    attr::ICE_CONTROLLING,
                    0x0003,
                    0x7777,
                    0xC001,
                    0x8003,
                ],
            ]
            .concat(),
        );
        // The reference decodes TURN attributes (stun-rs's `turn` feature, on for
        // `client::turn`) where the responder, no TURN server, treats them as unknown:
        // `turn_attributes_in_a_binding_request_get_420` covers those on their own.
        let kind = prop_oneof![
            5 => listed,
            1 => any::<u16>().prop_map(|k| if is_turn_type(k) { 0x7777 } else { k }),
        ];
        let ice = prop_oneof![
            Just((attr::PRIORITY, vec![0x6e, 0, 1, 0xff])),
            Just((attr::ICE_CONTROLLED, vec![2; 8])),
            Just((attr::ICE_CONTROLLING, vec![1; 8])),
            Just((attr::USE_CANDIDATE, vec![])),
        ];
        let any_value = kind.prop_flat_map(|k| value_for(k).prop_map(move |v| (k, v)));
        prop_oneof![3 => any_value, 2 => ice]
    }

    /// Comprehension-required TURN attribute types (RFC 8656 §18).
    fn is_turn_type(kind: u16) -> bool {
        matches!(
            kind,
            0x000C | 0x000D | 0x0012 | 0x0013 | 0x0016..=0x001A | 0x0022
        )
    }

    /// The decoder's verdict on one attribute: well-formed or not, and the USERNAME.
    fn decoded(kind: u16, value: &[u8]) -> (bool, Option<String>) {
        use stun_rs::attributes::stun::UserName;
        let m = binding().attribute(kind, value).build();
        match MessageDecoderBuilder::default().build().decode(&m) {
            Ok((message, _)) => {
                let name = message
                    .get::<UserName>()
                    .and_then(|a| a.as_user_name().ok())
                    .map(|u| u.as_str().to_owned());
                (true, name)
            }
            Err(_) => (false, None),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        #[test]
        fn value_rules_are_those_of_the_stun_rs_decoder(
            (kind, value) in prop::sample::select(KNOWN.to_vec())
                .prop_flat_map(|k| value_for(k).prop_map(move |v| (k, v))),
        ) {
            let (well_formed, name) = decoded(kind, &value);
            if kind == attr::USERNAME {
                let ours = values::username(&value).map(|n| n.into_owned());
                prop_assert_eq!(ours.is_some(), well_formed, "{:02x?}", value);
                prop_assert_eq!(ours, name);
            } else {
                prop_assert_eq!(values::is_well_formed(kind, &value), well_formed, "{:02x?}", value);
            }
        }

        #[test]
        fn replies_are_those_of_the_two_pass_design(
            msg_type in prop_oneof![
                6 => Just(msg_type::BINDING_REQUEST),
                1 => Just(msg_type::BINDING_INDICATION),
                1 => Just(0x0003u16),
                1 => any::<u16>().prop_map(|t| t & 0x3FFF),
            ],
            before in prop::collection::vec(attribute(), 0..6),
            after in prop::collection::vec(attribute(), 0..3),
            authenticate in any::<bool>(),
            right_password in prop::bool::weighted(0.8),
            sha256 in any::<bool>(),
            both in prop::bool::weighted(0.1),
            fingerprint in any::<bool>(),
            require_integrity in any::<bool>(),
            late in prop::bool::weighted(0.1),
            v6 in any::<bool>(),
        ) {
            let r = responder(require_integrity);
            let cred = credential(&r);
            let mut m = RequestBuilder::new(msg_type, TID);
            for (kind, value) in &before {
                m = m.attribute(*kind, value);
            }
            let key = if right_password { cred.password.as_bytes() } else { b"wrong".as_slice() };
            let kind = if sha256 { IntegrityKind::Sha256 } else { IntegrityKind::Sha1 };
            if authenticate {
                m = m.username(&format!("{}:peer", cred.ufrag));
                if both {
                    m = m.integrity(IntegrityKind::Sha1, key);
                }
                m = m.integrity(kind, key);
                for (kind, value) in &after {
                    m = m.attribute(*kind, value);
                }
            }
            if fingerprint {
                m = m.fingerprint();
            }
            let m = m.build();
            let now = if late { NOW + 601 } else { NOW };
            let source = if v6 { super::v6() } else { v4() };
            let mut ours = Vec::new();
            let outcome = r.handle(&m, source, now, &mut ours);
            let mut theirs = Vec::new();
            let expected = legacy::handle(&r, &m, source, now, &mut theirs);
            prop_assert_eq!(outcome, expected, "{:02x?}", m);
            prop_assert_eq!(ours, theirs);
        }
    }
}

/// `stun-rs` decodes TURN attributes (its `turn` feature is on for `client::turn`), but
/// the responder parses requests itself and is no TURN server: to it they are unknown.
#[test]
fn turn_attributes_in_a_binding_request_get_420() {
    let m = binding()
        .attribute(0x0019, &[17, 0, 0, 0]) // REQUESTED-TRANSPORT
        .attribute(0x000D, &600u32.to_be_bytes()) // LIFETIME
        .attribute(0x0013, b"data") // DATA
        .build();
    let (outcome, reply) = run(&responder(false), &m, v4());
    assert_eq!(outcome, Outcome::UnknownAttribute);
    assert_eq!(
        find(&reply, attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x19, 0x00, 0x0D, 0x00, 0x13][..])
    );
}

/// Error replies carry nothing optional (no reason phrase, no SOFTWARE), so no error
/// amplifies by more than 1.5: the worst cases, measured byte for byte.
#[test]
fn error_replies_do_not_amplify() {
    let r = responder(false);
    // 400 to a bare 20-byte request of another method: 28 bytes (1.4).
    let other = request(0x0003);
    let (outcome, reply) = run(&r, &other, v4());
    assert_eq!(outcome, Outcome::BadRequest);
    assert_eq!((other.len(), reply.len()), (20, 28));
    // 420 to a 24-byte request with one empty unknown attribute: 36 bytes (1.5).
    let unknown = binding().attribute(0x0031, &[]).build();
    let (outcome, reply) = run(&r, &unknown, v4());
    assert_eq!(outcome, Outcome::UnknownAttribute);
    assert_eq!((unknown.len(), reply.len()), (24, 36));
    // The ERROR-CODE value is its 4 bytes of class and number, nothing more.
    assert_eq!(find(&reply, attr::ERROR_CODE), Some(&[0u8, 0, 4, 20][..]));
    // Each further unknown attribute costs the request 4 bytes and the reply 2.
    let many = binding()
        .attribute(0x0031, &[])
        .attribute(0x0032, &[])
        .attribute(0x0033, &[])
        .build();
    let (_, reply) = run(&r, &many, v4());
    assert_eq!((many.len(), reply.len()), (32, 40));
}

/// The fixed-offset fast path for minimal Binding requests agrees with the full parse.
#[test]
fn the_minimal_binding_fast_path_agrees_with_the_parse() {
    use super::message::{Message, minimal_binding};
    let bare = binding().build();
    let fingerprinted = binding().fingerprint().build();
    let mut bad_fingerprint = fingerprinted.clone();
    bad_fingerprint[27] ^= 1;
    let with_attribute = binding().attribute(0x8029, &[0; 8]).build();
    let indication = RequestBuilder::new(0x0011, TID).build();
    let mut truncated = bare.clone();
    truncated.pop();
    for packet in [
        bare,
        fingerprinted,
        bad_fingerprint,
        with_attribute,
        indication,
        truncated,
    ] {
        let fast = minimal_binding(&packet).map(|(tid, fp)| (*tid, fp));
        let full = Message::parse(&packet)
            .filter(Message::is_minimal_binding_request)
            .map(|m| (*m.transaction_id, m.has_fingerprint()));
        assert_eq!(fast, full, "{packet:02x?}");
    }
}
