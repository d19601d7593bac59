//! The known answers in `tests/vectors/known_answers.json`, which every implementation
//! of the protocol (this crate, the JavaScript SDK) checks, so that none can drift.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use commucat::crypto::kdf::{CombinerInput, derive_session_keys, ratchet_key};
use commucat::crypto::transport::Transport;
use commucat::ice::candidates::host_candidates;
use commucat::ice::credentials::{
    IceSecret, turn_rest_credential, turn_rest_username, ufrag_expiry,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/known_answers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn session_keys(mode: &str) -> commucat::crypto::SessionKeys {
    let v = vectors();
    let inputs = &v["session_keys"]["inputs"];
    let h = bytes32(&inputs["handshake_hash"]);
    let (k1, k2) = (bytes32(&inputs["k1"]), bytes32(&inputs["k2"]));
    let (ss_s, ss_e) = (bytes32(&inputs["ss_s"]), bytes32(&inputs["ss_e"]));
    let (ss_s, ss_e) = match mode {
        "classical" => (None, None),
        "hybrid_v1" => (Some(&ss_s), None),
        "hybrid_v2" => (Some(&ss_s), Some(&ss_e)),
        other => panic!("unknown mode {other}"),
    };
    derive_session_keys(&CombinerInput {
        handshake_hash: &h,
        k1: &k1,
        k2: &k2,
        ss_s,
        ss_e,
    })
}

#[test]
fn session_keys_match() {
    let v = vectors();
    let cases = v["session_keys"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let keys = session_keys(case["mode"].as_str().unwrap());
        assert_eq!(hex::encode(keys.root_key()), case["root_key"], "{case}");
        assert_eq!(
            hex::encode(keys.client_to_server()),
            case["client_to_server"],
            "{case}"
        );
        assert_eq!(
            hex::encode(keys.server_to_client()),
            case["server_to_client"],
            "{case}"
        );
    }
}

#[test]
fn ratchet_matches() {
    let r = &vectors()["ratchet"];
    let next = ratchet_key(&bytes32(&r["root_key"]), &bytes32(&r["key"]));
    assert_eq!(hex::encode(*next), r["next_key"]);
}

#[test]
fn first_transport_message_matches() {
    let t = &vectors()["transport"];
    let keys = session_keys(t["keys_from"].as_str().unwrap());
    let mut client = Transport::client(&keys);
    let sealed = client
        .seal(t["plaintext_utf8"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(hex::encode(&sealed), t["client_message_0"]);
    let mut server = Transport::server(&keys);
    assert_eq!(
        server.open(&sealed).unwrap(),
        t["plaintext_utf8"].as_str().unwrap().as_bytes()
    );
}

#[test]
fn ice_credentials_match() {
    let ice = &vectors()["ice"];
    let secret = IceSecret::from_bytes(bytes32(&ice["secret"]));
    for c in ice["credentials"].as_array().unwrap() {
        let ufrag = c["ufrag"].as_str().unwrap();
        assert_eq!(secret.password_for(ufrag).as_str(), c["password"], "{c}");
        assert_eq!(ufrag_expiry(ufrag), c["expires_at"].as_u64(), "{c}");
    }
}

#[test]
fn turn_rest_credentials_match() {
    let t = &vectors()["turn_rest"];
    let username = turn_rest_username(t["expiry"].as_u64().unwrap(), t["ufrag"].as_str().unwrap());
    assert_eq!(username, t["username"]);
    let credential = turn_rest_credential(t["secret_utf8"].as_str().unwrap().as_bytes(), &username);
    assert_eq!(credential, t["credential"]);
}

#[test]
fn host_candidates_match() {
    let c = &vectors()["candidates"];
    let addrs: Vec<SocketAddr> = c["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    let candidates = host_candidates(&addrs);
    for (i, candidate) in candidates.iter().enumerate() {
        assert_eq!(candidate.foundation, c["foundations"][i]);
        assert_eq!(u64::from(candidate.priority), c["priorities"][i]);
    }
}
