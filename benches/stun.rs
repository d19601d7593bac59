//! `StunResponder::handle` per request kind.
//! Run: `cargo bench --bench stun`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::net::SocketAddr;

use commucat::ice::credentials::IceSecret;
use commucat::ice::stun::{IntegrityKind, RequestBuilder, StunResponder};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_800_000_000;
const TID: [u8; 12] = [0x5A; 12];

/// A browser-like ICE connectivity check.
fn ice_check(secret: &IceSecret, kind: IntegrityKind) -> Vec<u8> {
    let cred = secret.issue(NOW, 600, [0x11; 8]);
    RequestBuilder::binding(TID)
        .username(&format!("{}:Ab3d", cred.ufrag))
        .attribute(0xC057, &[0, 1, 0, 10])
        .ice_controlling(u64::from_be_bytes([7; 8]))
        .use_candidate()
        .priority(0x6E00_01FF)
        .integrity(kind, cred.password.as_bytes())
        .fingerprint()
        .build()
}

fn bench_handle(c: &mut Criterion) {
    let secret = IceSecret::from_bytes([11u8; 32]);
    let responder = StunResponder::new(secret.clone(), false);
    let source: SocketAddr = "203.0.113.9:50000".parse().unwrap();
    let plain = RequestBuilder::binding(TID).build();
    let plain_fp = RequestBuilder::binding(TID).fingerprint().build();
    let username_only = RequestBuilder::binding(TID)
        .username("someufrag:other")
        .build();
    let auth_sha1 = ice_check(&secret, IntegrityKind::Sha1);
    let auth_sha256 = ice_check(&secret, IntegrityKind::Sha256);
    let garbage = vec![0x17u8; 64];
    let mut out = Vec::with_capacity(256);
    let mut group = c.benchmark_group("stun_handle");
    for (name, packet) in [
        ("plain_20B", &plain),
        ("plain_fingerprint", &plain_fp),
        ("plain_username_only", &username_only),
        ("auth_sha1_fingerprint", &auth_sha1),
        ("auth_sha256_fingerprint", &auth_sha256),
        ("not_stun", &garbage),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| responder.handle(black_box(packet), source, NOW, &mut out));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_handle);
criterion_main!(benches);
