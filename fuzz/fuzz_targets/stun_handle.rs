//! Feeds arbitrary datagrams to the STUN responder. Half of the inputs are wrapped
//! into a Binding request that carries a valid USERNAME and MESSAGE-INTEGRITY, so that
//! the fuzzer also reaches the authenticated checks (420, 487, success).
#![no_main]

use std::net::SocketAddr;

use commucat::ice::credentials::IceSecret;
use commucat::ice::stun::{self, IntegrityKind, MAGIC_COOKIE, Outcome, RequestBuilder, StunResponder};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

fn authenticated_wrapper(secret: &IceSecret, flags: u8, attrs: &[u8]) -> Vec<u8> {
    // Fixed random bytes: the same input always makes the same request.
    let cred = secret.issue(NOW, 600, [flags; 8]);
    let kind = if flags & 2 == 0 {
        IntegrityKind::Sha1
    } else {
        IntegrityKind::Sha256
    };
    let m = RequestBuilder::binding([7u8; 12])
        .raw(attrs)
        .username(&format!("{}:peer", cred.ufrag))
        .integrity(kind, cred.password.as_bytes());
    if flags & 4 != 0 {
        m.fingerprint().build()
    } else {
        m.build()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let secret = IceSecret::from_bytes([9u8; 32]);
    let responder = StunResponder::new(secret.clone(), flags & 8 != 0);
    let packet = if flags & 1 == 0 {
        rest.to_vec()
    } else {
        authenticated_wrapper(&secret, flags, rest)
    };
    let source: SocketAddr = if flags & 16 == 0 {
        "192.0.2.7:4242".parse().unwrap()
    } else {
        "[2001:db8::7]:4242".parse().unwrap()
    };
    let mut out = Vec::new();
    let outcome = responder.handle(&packet, source, NOW, &mut out);
    if outcome == Outcome::Dropped {
        assert!(out.is_empty());
        return;
    }
    assert!(out.len() >= 20 && out.len() % 4 == 0);
    assert_eq!(
        usize::from(u16::from_be_bytes([out[2], out[3]])) + 20,
        out.len()
    );
    assert_eq!(out[4..8], MAGIC_COOKIE.to_be_bytes());
    assert_eq!(
        &out[8..20],
        &packet[8..20],
        "reply keeps the transaction id"
    );
    assert_eq!(
        stun::attributes(&out)
            .map(|(_, v)| 4 + v.len().next_multiple_of(4))
            .sum::<usize>()
            + 20,
        out.len()
    );
    assert!(out.len() <= 256);
});
