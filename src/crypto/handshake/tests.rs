use super::header::HEADER_LEN;
use super::noise::{MAX_NOISE_MESSAGE_LEN, read_noise, session_keys, write_noise};
use super::pq::{KEM_CIPHERTEXT_LEN, encapsulate};
use super::*;
use crate::crypto::testing::SeededRng;
use crate::crypto::transport::Transport;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ml_kem::array::Array;
use ml_kem::{DecapsulationKey, KeyExport, MlKem768};
use rand::Rng;
use sha3::{Digest, Sha3_256};
use zeroize::Zeroizing;

const NOW: u64 = 1_790_000_000;

/// Deterministic byte stream `SHA3-256(label || counter)`: fixes every random input
/// (the same stream the fuzz targets use).
fn test_rng(label: &str) -> SeededRng {
    SeededRng::new(label.as_bytes())
}

fn secret32(label: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    test_rng(label).fill_bytes(&mut out);
    out
}

struct TestKeys {
    statics: Vec<(u32, NoiseStaticKey, u64)>,
    kem: Option<DecapsulationKey<MlKem768>>,
}

impl ServerKeys for TestKeys {
    fn noise_static(
        &self,
        key_version: u32,
        now_unix: u64,
    ) -> Result<&NoiseStaticKey, KeyLookupError> {
        let (_, key, expires_at) = self
            .statics
            .iter()
            .find(|(version, _, _)| *version == key_version)
            .ok_or(KeyLookupError::Unknown)?;
        if now_unix >= *expires_at {
            return Err(KeyLookupError::Expired);
        }
        Ok(key)
    }

    fn kem(&self) -> Option<&DecapsulationKey<MlKem768>> {
        self.kem.as_ref()
    }
}

fn test_keys() -> TestKeys {
    let mut seed = [0u8; 64];
    test_rng("server-kem").fill_bytes(&mut seed);
    TestKeys {
        statics: vec![
            (
                1,
                NoiseStaticKey::from_secret(secret32("server-static-1")),
                NOW - 1,
            ),
            (
                2,
                NoiseStaticKey::from_secret(secret32("server-static-2")),
                NOW + 3600,
            ),
            (
                3,
                NoiseStaticKey::from_secret(secret32("server-static-3")),
                NOW + 7200,
            ),
        ],
        kem: Some(DecapsulationKey::from_seed(Array::from(seed))),
    }
}

fn policy() -> ServerPolicy {
    ServerPolicy {
        prologue: DEFAULT_PROLOGUE.to_vec(),
        pq_enabled: true,
        require_pq: false,
        ttl_seconds: 120,
        keepalive_interval: 30,
    }
}

fn params(
    keys: &TestKeys,
    pattern: Pattern,
    version: Version,
    pq: bool,
    key_version: u32,
) -> ClientParams {
    let server_static_public = keys
        .statics
        .iter()
        .find(|(v, _, _)| *v == key_version)
        .map_or([9u8; 32], |(_, key, _)| *key.public());
    ClientParams {
        pattern,
        version,
        pq,
        key_version,
        server_static_public,
        server_kem_public: keys
            .kem
            .as_ref()
            .map(|dk| dk.encapsulation_key().to_bytes().to_vec()),
        prologue: DEFAULT_PROLOGUE.to_vec(),
        client_static_secret: Zeroizing::new(secret32("client-static")),
    }
}

fn client(params: ClientParams, label: &str) -> ClientHandshake {
    ClientHandshake::new(params, &mut test_rng(label)).unwrap()
}

fn start(
    policy: &ServerPolicy,
    keys: &TestKeys,
    message1: &[u8],
    label: &str,
) -> Result<(ServerStart, Vec<u8>), HandshakeError> {
    ServerHandshake::start(policy, keys, message1, NOW, &mut test_rng(label))
}

struct Run {
    server: Established,
    client: ClientEstablished,
    message1: Vec<u8>,
    message2: Vec<u8>,
}

fn run(pattern: Pattern, version: Version, pq: bool) -> Run {
    let keys = test_keys();
    let client = client(params(&keys, pattern, version, pq, 2), "client");
    let message1 = client.message1().to_vec();
    let (next, message2) = start(&policy(), &keys, &message1, "server").unwrap();
    let client = client.read_message2(&message2).unwrap();
    let server = match next {
        ServerStart::AwaitingMessage3(state) => {
            assert_eq!(pattern, Pattern::Xk);
            state
                .read_message3(client.message3.as_deref().unwrap())
                .unwrap()
        }
        ServerStart::Established(done) => {
            assert_eq!(pattern, Pattern::Ik);
            assert!(client.message3.is_none());
            done
        }
    };
    Run {
        server,
        client,
        message1,
        message2,
    }
}

fn expect_err(result: Result<(ServerStart, Vec<u8>), HandshakeError>) -> HandshakeError {
    match result {
        Ok(_) => panic!("handshake unexpectedly accepted"),
        Err(err) => err,
    }
}

fn awaiting(result: Result<(ServerStart, Vec<u8>), HandshakeError>) -> (ServerHandshake, Vec<u8>) {
    match result {
        Ok((ServerStart::AwaitingMessage3(state), message2)) => (state, message2),
        other => panic!("expected an XK state, got {other:?}"),
    }
}

const MATRIX: [(Version, bool); 3] = [
    (Version::V1, false),
    (Version::V1, true),
    (Version::V2, true),
];

#[test]
fn full_matrix_completes_with_matching_keys_and_exact_sizes() {
    let client_public =
        hex::encode(MontgomeryPoint::mul_base_clamped(secret32("client-static")).to_bytes());
    for pattern in [Pattern::Xk, Pattern::Ik] {
        for (version, pq) in MATRIX {
            let run = run(pattern, version, pq);
            let (server, client) = (&run.server, &run.client);
            assert_eq!(server.keys.root_key(), client.keys.root_key());
            assert_eq!(
                server.keys.client_to_server(),
                client.keys.client_to_server()
            );
            assert_eq!(
                server.keys.server_to_client(),
                client.keys.server_to_client()
            );
            assert_ne!(
                server.keys.client_to_server(),
                server.keys.server_to_client()
            );
            assert_eq!(server.device_id, client_public);
            assert_eq!(
                (
                    server.pattern,
                    server.version,
                    server.pq,
                    server.key_version
                ),
                (pattern, version, pq, 2)
            );
            assert_eq!(server.key_confirmed, pattern == Pattern::Xk);
            assert_eq!(
                client.hello,
                ServerHello {
                    session_id: server.session_id.clone(),
                    pq,
                    key_version: 2,
                    ttl_seconds: 120,
                    keepalive_interval: 30,
                }
            );

            let payload1 = usize::from(pq) * 1088 + usize::from(version == Version::V2) * 1184;
            let static_part = if pattern == Pattern::Ik { 48 } else { 0 };
            assert_eq!(run.message1.len(), 7 + 32 + static_part + payload1 + 16);
            assert_eq!(
                run.message1[..7],
                [version.wire(), pattern.wire(), 0, 0, 0, 2, u8::from(pq)]
            );
            let json = serde_json::to_vec(&client.hello).unwrap();
            let payload2 = usize::from(version == Version::V2) * 1088 + json.len();
            assert_eq!(run.message2.len(), 32 + payload2 + 16);
            if let Some(message3) = &client.message3 {
                assert_eq!(message3.len(), 48 + 16);
            }

            let mut server_transport = Transport::server(&server.keys);
            let mut client_transport = Transport::client(&client.keys);
            let ping = client_transport.seal(br#"{"type":"ping","id":1}"#).unwrap();
            assert_eq!(
                server_transport.open(&ping).unwrap(),
                br#"{"type":"ping","id":1}"#
            );
            let welcome = server_transport.seal(br#"{"type":"welcome"}"#).unwrap();
            assert_eq!(
                client_transport.open(&welcome).unwrap(),
                br#"{"type":"welcome"}"#
            );
        }
    }
}

#[test]
fn server_hello_json_has_the_contract_field_order() {
    let run = run(Pattern::Xk, Version::V1, true);
    let json = String::from_utf8(serde_json::to_vec(&run.client.hello).unwrap()).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"session_id":"{}","pq":true,"key_version":2,"ttl_seconds":120,"keepalive_interval":30}}"#,
            run.server.session_id
        )
    );
}

#[test]
fn modes_yield_different_keys() {
    let mut roots = Vec::new();
    for pattern in [Pattern::Xk, Pattern::Ik] {
        for (version, pq) in MATRIX {
            roots.push(*run(pattern, version, pq).server.keys.root_key());
        }
    }
    for (i, a) in roots.iter().enumerate() {
        for b in &roots[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn version_2_without_pq_is_refused_on_both_sides() {
    let keys = test_keys();
    let err = ClientHandshake::new(
        params(&keys, Pattern::Xk, Version::V2, false, 2),
        &mut test_rng("c"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        HandshakeError::InvalidClientParams("version 2 requires PQ")
    );

    let mut message1 = client(params(&keys, Pattern::Xk, Version::V1, false, 2), "c")
        .message1()
        .to_vec();
    message1[0] = 2;
    let err = expect_err(start(&policy(), &keys, &message1, "s"));
    assert_eq!(err, HandshakeError::Malformed(Malformed::Version2WithoutPq));
    assert_eq!(err.close_code(), 4400);
}

#[test]
fn header_checks_close_with_4400() {
    let keys = test_keys();
    let good = client(params(&keys, Pattern::Xk, Version::V1, true, 2), "c")
        .message1()
        .to_vec();
    for len in 0..HEADER_LEN {
        let err = expect_err(start(&policy(), &keys, &good[..len], "s"));
        assert_eq!(err, Malformed::ShortHeader(len).into());
        assert_eq!((err.close_code(), err.label()), (4400, "malformed"));
    }
    let cases: [(usize, u8, Malformed); 6] = [
        (0, 0, Malformed::UnknownVersion(0)),
        (0, 3, Malformed::UnknownVersion(3)),
        (1, 0, Malformed::UnknownPattern(0)),
        (1, 3, Malformed::UnknownPattern(3)),
        (6, 0x03, Malformed::ReservedFlags(0x03)),
        (6, 0x80, Malformed::ReservedFlags(0x80)),
    ];
    for (index, value, expected) in cases {
        let mut message1 = good.clone();
        message1[index] = value;
        assert_eq!(
            expect_err(start(&policy(), &keys, &message1, "s")),
            expected.into()
        );
    }
}

#[test]
fn checks_run_in_contract_order() {
    let keys = test_keys();
    let pq_off = ServerPolicy {
        pq_enabled: false,
        ..policy()
    };
    let require = ServerPolicy {
        require_pq: true,
        ..policy()
    };
    // Unknown key version beats the PQ policy.
    let mut message1 = client(params(&keys, Pattern::Xk, Version::V1, true, 2), "c")
        .message1()
        .to_vec();
    message1[5] = 9;
    assert_eq!(
        expect_err(start(&pq_off, &keys, &message1, "s")),
        HandshakeError::UnknownKeyVersion(9)
    );
    // The PQ policy beats Noise authentication (the garbage after the header).
    let mut garbage = message1[..HEADER_LEN].to_vec();
    garbage[5] = 2;
    garbage.extend_from_slice(&[0x55; 1200]);
    let err = expect_err(start(&pq_off, &keys, &garbage, "s"));
    assert_eq!(
        (err.clone(), err.close_code(), err.label()),
        (HandshakeError::PqUnavailable, 4403, "pq_unavailable")
    );
    // And then Noise authentication decides.
    assert_eq!(
        expect_err(start(&policy(), &keys, &garbage, "s")),
        HandshakeError::Decrypt
    );
    // Classical while PQ is required.
    let classical = client(params(&keys, Pattern::Ik, Version::V1, false, 2), "c");
    let err = expect_err(start(&require, &keys, classical.message1(), "s"));
    assert_eq!(
        (err.clone(), err.close_code(), err.label()),
        (HandshakeError::PqRequired, 4403, "pq_required")
    );
    // PQ on but no KEM key loaded is still "unavailable", not a panic.
    let no_kem = TestKeys {
        kem: None,
        ..test_keys()
    };
    let pq = client(params(&keys, Pattern::Xk, Version::V2, true, 2), "c");
    assert_eq!(
        expect_err(start(&policy(), &no_kem, pq.message1(), "s")),
        HandshakeError::PqUnavailable
    );
}

#[test]
fn unknown_and_expired_key_versions_close_with_4404_and_older_keys_work() {
    let keys = test_keys();
    let unknown = client(params(&keys, Pattern::Xk, Version::V1, true, 77), "c");
    let err = expect_err(start(&policy(), &keys, unknown.message1(), "s"));
    assert_eq!(
        (err.clone(), err.close_code(), err.label()),
        (HandshakeError::UnknownKeyVersion(77), 4404, "unknown_key")
    );

    let expired = client(params(&keys, Pattern::Ik, Version::V1, false, 1), "c");
    let err = expect_err(start(&policy(), &keys, expired.message1(), "s"));
    assert_eq!(
        (err.clone(), err.close_code(), err.label()),
        (HandshakeError::ExpiredKeyVersion(1), 4404, "expired_key")
    );

    // Key 2 is older than key 3 and still valid: both are accepted.
    for key_version in [2, 3] {
        let c = client(
            params(&keys, Pattern::Ik, Version::V2, true, key_version),
            "c",
        );
        let (next, message2) = start(&policy(), &keys, c.message1(), "s").unwrap();
        let done = c.read_message2(&message2).unwrap();
        let ServerStart::Established(server) = next else {
            panic!("IK finishes after message 1");
        };
        assert_eq!(server.key_version, key_version);
        assert_eq!(done.keys.root_key(), server.keys.root_key());
    }
}

#[test]
fn a_key_version_naming_another_valid_key_fails_authentication() {
    let keys = test_keys();
    // Encrypted to key 2 but the header claims key 3 (also in the prologue).
    let mut p = params(&keys, Pattern::Xk, Version::V1, true, 3);
    p.server_static_public = *keys.statics[1].1.public();
    let c = client(p, "c");
    assert_eq!(
        expect_err(start(&policy(), &keys, c.message1(), "s")),
        HandshakeError::Decrypt
    );
}

#[test]
fn tampered_message_1_fails_with_4401() {
    let keys = test_keys();
    for pattern in [Pattern::Xk, Pattern::Ik] {
        let good = client(params(&keys, pattern, Version::V2, true, 2), "c")
            .message1()
            .to_vec();
        // Ephemeral key, (IK) static key, KEM ciphertext, ek_e, tag.
        for index in [
            HEADER_LEN,
            HEADER_LEN + 40,
            HEADER_LEN + 100,
            good.len() - 600,
            good.len() - 1,
        ] {
            let mut message1 = good.clone();
            message1[index] ^= 0x20;
            let err = expect_err(start(&policy(), &keys, &message1, "s"));
            assert_eq!(
                (err.clone(), err.close_code(), err.label()),
                (HandshakeError::Decrypt, 4401, "decrypt"),
                "{pattern:?} byte {index}"
            );
        }
        // A different prologue is a different handshake.
        let other = ServerPolicy {
            prologue: b"commucat-test".to_vec(),
            ..policy()
        };
        assert_eq!(
            expect_err(start(&other, &keys, &good, "s")),
            HandshakeError::Decrypt
        );
    }
}

#[test]
fn tampered_message_2_is_detected_by_the_client() {
    let keys = test_keys();
    for pattern in [Pattern::Xk, Pattern::Ik] {
        for (version, pq) in MATRIX {
            let c = client(params(&keys, pattern, version, pq, 2), "c");
            let (_, mut message2) = start(&policy(), &keys, c.message1(), "s").unwrap();
            let last = message2.len() - 1;
            message2[last] ^= 0x01;
            assert_eq!(
                c.read_message2(&message2).unwrap_err(),
                HandshakeError::Decrypt
            );
        }
    }
    let c = client(params(&keys, Pattern::Xk, Version::V1, true, 2), "c");
    let (_, message2) = start(&policy(), &keys, c.message1(), "s").unwrap();
    assert_eq!(
        c.read_message2(&message2[..20]).unwrap_err(),
        HandshakeError::Malformed(Malformed::NoiseFraming)
    );
}

#[test]
fn tampered_or_truncated_message_3_fails() {
    let keys = test_keys();
    for index in [0, 40, 63] {
        let c = client(params(&keys, Pattern::Xk, Version::V2, true, 2), "c");
        let (state, message2) = awaiting(start(&policy(), &keys, c.message1(), "s"));
        let mut message3 = c.read_message2(&message2).unwrap().message3.unwrap();
        message3[index] ^= 0x04;
        let err = state.read_message3(&message3).unwrap_err();
        assert_eq!(
            (err.clone(), err.close_code()),
            (HandshakeError::Decrypt, 4401)
        );
    }
    let c = client(params(&keys, Pattern::Xk, Version::V1, false, 2), "c");
    let (state, message2) = awaiting(start(&policy(), &keys, c.message1(), "s"));
    let message3 = c.read_message2(&message2).unwrap().message3.unwrap();
    let err = state.read_message3(&message3[..40]).unwrap_err();
    assert_eq!(err.close_code(), 4400);
}

#[test]
fn message_3_payload_must_be_empty_or_empty_object() {
    let keys = test_keys();
    let cases: [(&[u8], bool); 5] = [
        (b"", true),
        (b"{}", true),
        (b"{ }", false),
        (br#"{"a":1}"#, false),
        (b"x", false),
    ];
    for (payload, accepted) in cases {
        let c = client(params(&keys, Pattern::Xk, Version::V1, true, 2), "c");
        let (state, message2) = awaiting(start(&policy(), &keys, c.message1(), "s"));
        let done = c.read_message2_answering(&message2, payload).unwrap();
        let result = state.read_message3(done.message3.as_deref().unwrap());
        match result {
            Ok(server) => {
                assert!(accepted, "{payload:?} accepted");
                assert_eq!(server.keys.root_key(), done.keys.root_key());
            }
            Err(err) => {
                assert!(!accepted, "{payload:?} refused");
                assert_eq!(err, Malformed::Message3Payload.into());
                assert_eq!(err.close_code(), 4400);
            }
        }
    }
}

#[test]
fn payloads_of_the_wrong_length_close_with_4400() {
    let keys = test_keys();
    let cases: [(Version, bool, usize, usize); 6] = [
        (Version::V1, false, 1, 0),
        (Version::V1, true, 1087, 1088),
        (Version::V1, true, 1089, 1088),
        (Version::V2, true, 1088, 2272),
        (Version::V2, true, 2271, 2272),
        (Version::V2, true, 2273, 2272),
    ];
    for pattern in [Pattern::Xk, Pattern::Ik] {
        for (version, pq, actual, expected) in cases {
            let c = ClientHandshake::build(
                params(&keys, pattern, version, pq, 2),
                &mut test_rng("c"),
                |payload| payload.resize(actual, 0x42),
            )
            .unwrap();
            let err = expect_err(start(&policy(), &keys, c.message1(), "s"));
            assert_eq!(err, Malformed::PayloadLength { expected, actual }.into());
            assert_eq!(err.close_code(), 4400);
        }
    }
}

#[test]
fn an_invalid_ephemeral_kem_key_closes_with_4400() {
    let keys = test_keys();
    // Coefficients 0xfff exceed q = 3329: FIPS 203's modulus check fails.
    let c = ClientHandshake::build(
        params(&keys, Pattern::Xk, Version::V2, true, 2),
        &mut test_rng("c"),
        |payload| payload[KEM_CIPHERTEXT_LEN..KEM_CIPHERTEXT_LEN + 384].fill(0xff),
    )
    .unwrap();
    assert_eq!(
        expect_err(start(&policy(), &keys, c.message1(), "s")),
        Malformed::EphemeralKemKey.into()
    );
}

#[test]
fn noise_messages_too_short_or_too_long_are_malformed() {
    let keys = test_keys();
    let good = client(params(&keys, Pattern::Xk, Version::V1, false, 2), "c")
        .message1()
        .to_vec();
    for len in [HEADER_LEN, HEADER_LEN + 10, HEADER_LEN + 31] {
        assert_eq!(
            expect_err(start(&policy(), &keys, &good[..len], "s")),
            Malformed::NoiseFraming.into()
        );
    }
    let mut huge = good[..HEADER_LEN].to_vec();
    huge.resize(HEADER_LEN + MAX_NOISE_MESSAGE_LEN + 1, 0x11);
    assert_eq!(
        expect_err(start(&policy(), &keys, &huge, "s")),
        Malformed::NoiseFraming.into()
    );
}

#[test]
fn a_low_order_ephemeral_key_is_refused() {
    let keys = test_keys();
    let mut message1 = client(params(&keys, Pattern::Xk, Version::V1, false, 2), "c")
        .message1()
        .to_vec();
    // u = 0 and u = 1 are points of small order: X25519 with them is all zero.
    for low_order in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        message1[HEADER_LEN..HEADER_LEN + 32].copy_from_slice(&low_order);
        assert_eq!(
            expect_err(start(&policy(), &keys, &message1, "s")),
            HandshakeError::Decrypt
        );
    }
}

#[test]
fn replayed_xk_message_1_cannot_complete() {
    let keys = test_keys();
    let c = client(params(&keys, Pattern::Xk, Version::V2, true, 2), "c");
    let (genuine, message2) = awaiting(start(&policy(), &keys, c.message1(), "s1"));
    // The replay starts a second, independent responder with its own ephemeral key.
    let (replayed, replay_message2) = awaiting(start(&policy(), &keys, c.message1(), "s2"));
    assert_ne!(message2[..32], replay_message2[..32]);
    let done = c.read_message2(&message2).unwrap();
    let message3 = done.message3.unwrap();
    // Nobody without the client's secrets can finish the replayed one; not even the
    // genuine message 3 does.
    assert_eq!(
        replayed.read_message3(&message3).unwrap_err(),
        HandshakeError::Decrypt
    );
    let server = genuine.read_message3(&message3).unwrap();
    assert_eq!(server.keys.root_key(), done.keys.root_key());
}

#[test]
fn replayed_ik_message_1_is_unconfirmed_and_useless_without_the_client_keys() {
    let keys = test_keys();
    let c = client(params(&keys, Pattern::Ik, Version::V1, true, 2), "c");
    let message1 = c.message1().to_vec();
    let (genuine, message2) = start(&policy(), &keys, &message1, "s1").unwrap();
    let (replayed, _) = start(&policy(), &keys, &message1, "s2").unwrap();
    let done = c.read_message2(&message2).unwrap();
    let (ServerStart::Established(genuine), ServerStart::Established(replayed)) =
        (genuine, replayed)
    else {
        panic!("IK finishes after message 1");
    };
    assert!(!replayed.key_confirmed);
    assert_eq!(replayed.device_id, genuine.device_id);
    assert_ne!(replayed.keys.root_key(), done.keys.root_key());
    // The genuine client's traffic opens only on its own session.
    let mut client_transport = Transport::client(&done.keys);
    let ping = client_transport.seal(br#"{"type":"ping","id":1}"#).unwrap();
    assert!(Transport::server(&replayed.keys).open(&ping).is_err());
    assert!(Transport::server(&genuine.keys).open(&ping).is_ok());
}

#[test]
fn client_checks_the_server_hello() {
    let header = Header {
        version: Version::V1,
        pattern: Pattern::Xk,
        key_version: 4,
        pq: true,
    };
    let good = ServerHello {
        session_id: "0123456789abcdef0123456789abcdef".into(),
        pq: true,
        key_version: 4,
        ttl_seconds: 1,
        keepalive_interval: 1,
    };
    assert!(good.is_valid_for(&header));
    let bad = [
        ServerHello {
            pq: false,
            ..good.clone()
        },
        ServerHello {
            key_version: 5,
            ..good.clone()
        },
        ServerHello {
            session_id: "0123456789ABCDEF0123456789abcdef".into(),
            ..good.clone()
        },
        ServerHello {
            session_id: "0123".into(),
            ..good.clone()
        },
    ];
    for hello in bad {
        assert!(!hello.is_valid_for(&header), "{hello:?}");
    }
}

#[test]
fn client_refuses_bad_parameters() {
    let keys = test_keys();
    let mut p = params(&keys, Pattern::Xk, Version::V1, true, 2);
    p.server_kem_public = None;
    assert_eq!(
        ClientHandshake::new(p, &mut test_rng("c"))
            .unwrap_err()
            .label(),
        "client_params"
    );
    let mut p = params(&keys, Pattern::Xk, Version::V1, true, 2);
    p.server_kem_public = Some(vec![0u8; 1000]);
    assert!(ClientHandshake::new(p, &mut test_rng("c")).is_err());
}

#[test]
fn debug_output_carries_no_secrets() {
    let keys = test_keys();
    let secret = hex::encode(secret32("server-static-2"));
    let printed = format!("{:?}", keys.statics[1].1);
    assert!(!printed.contains(&secret));
    assert!(printed.contains(&hex::encode(keys.statics[1].1.public())));
    let run = run(Pattern::Xk, Version::V2, true);
    let printed = format!("{:?} {:?}", run.server, run.client);
    for key in [
        run.server.keys.root_key(),
        run.server.keys.client_to_server(),
        run.server.keys.server_to_client(),
    ] {
        assert!(!printed.contains(&hex::encode(key)));
    }
    let printed = format!("{:?}", params(&keys, Pattern::Xk, Version::V1, true, 2));
    assert!(!printed.contains(&hex::encode(secret32("client-static"))));
}

#[test]
fn a_stock_snow_initiator_interoperates_with_the_responder() {
    // snow's own resolver (its X25519, OS randomness) on the client side.
    let keys = test_keys();
    let header = Header {
        version: Version::V1,
        pattern: Pattern::Xk,
        key_version: 2,
        pq: true,
    };
    let server_ek = keys.kem.as_ref().unwrap().encapsulation_key().to_bytes();
    let (ct_s, ss_s) = encapsulate(&server_ek, &mut test_rng("kem")).unwrap();
    let client_secret = secret32("client-static");
    let prologue = header.prologue(DEFAULT_PROLOGUE);
    let mut noise = snow::Builder::new("Noise_XK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .local_private_key(&client_secret)
        .unwrap()
        .remote_public_key(keys.statics[1].1.public())
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut message1 = header.to_bytes().to_vec();
    message1.extend(write_noise(&mut noise, &ct_s).unwrap());
    let (state, message2) = awaiting(start(&policy(), &keys, &message1, "s"));
    let hello = read_noise(&mut noise, &message2).unwrap();
    assert!(serde_json::from_slice::<ServerHello>(&hello).unwrap().pq);
    let message3 = write_noise(&mut noise, b"{}").unwrap();
    let server = state.read_message3(&message3).unwrap();
    let client_keys = session_keys(&mut noise, Some(&ss_s), None).unwrap();
    assert_eq!(server.keys.root_key(), client_keys.root_key());
    assert_eq!(
        server.keys.client_to_server(),
        client_keys.client_to_server()
    );
}

#[test]
fn state_machines_can_move_between_tasks() {
    fn send<T: Send + 'static>() {}
    send::<ServerHandshake>();
    send::<ServerStart>();
    send::<ClientHandshake>();
    send::<Established>();
    send::<Transport>();
}

const CLOSE_CODES: [u16; 4] = [4400, 4401, 4403, 4404];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_message_1_never_panics(
        header in proptest::array::uniform7(0u8..4),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2600),
    ) {
        let keys = test_keys();
        let mut message1 = header.to_vec();
        message1.extend_from_slice(&body);
        if let Err(err) = start(&policy(), &keys, &message1, "s") {
            proptest::prop_assert!(CLOSE_CODES.contains(&err.close_code()));
        }
    }

    #[test]
    fn mutated_handshake_messages_never_panic_or_pass(
        index in 0usize..4000,
        flip in 1u8..=255,
        cut in 0usize..4000,
    ) {
        let keys = test_keys();
        let c = client(params(&keys, Pattern::Xk, Version::V2, true, 2), "c");
        let good = c.message1().to_vec();
        let mut message1 = good.clone();
        let at = index % message1.len();
        message1[at] ^= flip;
        let err = expect_err(start(&policy(), &keys, &message1, "s"));
        proptest::prop_assert!(CLOSE_CODES.contains(&err.close_code()));
        let truncated = &good[..cut % good.len()];
        let err = expect_err(start(&policy(), &keys, truncated, "s"));
        proptest::prop_assert!(CLOSE_CODES.contains(&err.close_code()));

        let (state, message2) = awaiting(start(&policy(), &keys, &good, "s"));
        let message3 = c.read_message2(&message2).unwrap().message3.unwrap();
        let mut tampered = message3.clone();
        tampered[index % message3.len()] ^= flip;
        let err = state.read_message3(&tampered).unwrap_err();
        proptest::prop_assert!(CLOSE_CODES.contains(&err.close_code()));
    }
}

/// The shared vectors (tests/vectors/known_answers.json, "handshakes"): the JS SDK's
/// suite replays the same cases, so the two implementations cannot drift.
const SHARED_VECTORS: &str = include_str!("../../../tests/vectors/known_answers.json");

/// Everything random is fixed (static keys, both Noise ephemerals, the KEM seeds and
/// both encapsulations, the session id), so the messages and keys are fixed too.
fn check_known_answer(known: &serde_json::Value) {
    let pattern = match known["pattern"].as_str() {
        Some("XK") => Pattern::Xk,
        Some("IK") => Pattern::Ik,
        other => panic!("pattern {other:?}"),
    };
    let version = match known["version"].as_u64() {
        Some(1) => Version::V1,
        Some(2) => Version::V2,
        other => panic!("version {other:?}"),
    };
    let pq = known["pq"].as_bool().unwrap();
    let run = run(pattern, version, pq);
    let digest = |bytes: &[u8]| hex::encode(Sha3_256::digest(bytes));
    let mut transport = Transport::client(&run.client.keys);
    let ping = transport.seal(br#"{"type":"ping","id":1}"#).unwrap();
    let actual = serde_json::json!({
        "pattern": known["pattern"],
        "version": known["version"],
        "pq": pq,
        "key_version": known["key_version"],
        "message1_sha3": digest(&run.message1),
        "message2_sha3": digest(&run.message2),
        "message3_sha3": run.client.message3.as_deref().map(digest),
        "root_key": hex::encode(run.server.keys.root_key()),
        "client_to_server": hex::encode(run.server.keys.client_to_server()),
        "server_to_client": hex::encode(run.server.keys.server_to_client()),
        "first_ping": hex::encode(ping),
    });
    assert_eq!(&actual, known);
}

#[test]
fn known_answers_of_the_shared_vectors() {
    let vectors: serde_json::Value = serde_json::from_str(SHARED_VECTORS).unwrap();
    let cases = vectors["handshakes"]["cases"].as_array().unwrap();
    let kinds: Vec<_> = cases
        .iter()
        .map(|c| {
            (
                c["pattern"].as_str(),
                c["version"].as_u64(),
                c["pq"].as_bool(),
            )
        })
        .collect();
    // An XK hybrid version 2 and an IK classical version 1 at least.
    assert!(
        kinds.contains(&(Some("XK"), Some(2), Some(true))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(Some("IK"), Some(1), Some(false))),
        "{kinds:?}"
    );
    for case in cases {
        check_known_answer(case);
    }
}
