//! `StunResponder::handle` per request kind.
//! Run: `cargo bench --bench stun`.

use std::hint::black_box;
use std::net::SocketAddr;

use commucat::ice::credentials::IceSecret;
use commucat::ice::stun::{self, IntegrityKind, StunResponder};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_800_000_000;

fn header(msg_type: u16) -> Vec<u8> {
    let mut m = msg_type.to_be_bytes().to_vec();
    m.extend_from_slice(&[0, 0, 0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[0x5A; 12]);
    m
}

fn push_attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    m.resize(m.len().next_multiple_of(4), 0);
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
}

/// A browser-like ICE connectivity check.
fn ice_check(secret: &IceSecret, kind: IntegrityKind) -> Vec<u8> {
    let cred = secret.issue(NOW, 600, [0x11; 8]);
    let mut m = header(stun::msg_type::BINDING_REQUEST);
    push_attr(
        &mut m,
        stun::attr::USERNAME,
        format!("{}:Ab3d", cred.ufrag).as_bytes(),
    );
    push_attr(&mut m, 0xC057, &[0, 1, 0, 10]);
    push_attr(&mut m, stun::attr::ICE_CONTROLLING, &[7; 8]);
    push_attr(&mut m, stun::attr::USE_CANDIDATE, &[]);
    push_attr(&mut m, stun::attr::PRIORITY, &[0x6E, 0, 1, 0xFF]);
    stun::append_integrity(&mut m, kind, cred.password.as_bytes());
    stun::append_fingerprint(&mut m);
    m
}

fn bench_handle(c: &mut Criterion) {
    let secret = IceSecret::from_bytes([11u8; 32]);
    let responder = StunResponder::new(secret.clone(), false);
    let source: SocketAddr = "203.0.113.9:50000".parse().unwrap();
    let plain = header(stun::msg_type::BINDING_REQUEST);
    let mut plain_fp = plain.clone();
    stun::append_fingerprint(&mut plain_fp);
    let mut username_only = plain.clone();
    push_attr(&mut username_only, stun::attr::USERNAME, b"someufrag:other");
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
