//! Server-side cost of one hybrid Noise XK handshake (versions 1 and 2) next to the
//! primitives it consists of, so that "handshake / sum of primitives" can be read off:
//!
//! - v1: X25519 keygen + 3 X25519 DH (es, ee, se) + ML-KEM-768 decapsulation + HKDF
//! - v2: the same + ML-KEM-768 encapsulation to the client's `ek_e` (decoding it included,
//!   since the server receives it as bytes)
//!
//! A classical XK handshake is measured too (paired part only), to separate the fixed
//! Noise overhead from the cost of carrying the KEM payloads through Noise.
//!
//! The handshakes use the thread RNG, as the daemon does; only the server's work
//! (`ServerHandshake::start` and `read_message3`) is timed, the client's is not.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::time::{Duration, Instant};

use commucat::crypto::handshake::{
    ClientHandshake, ClientParams, DEFAULT_PROLOGUE, KeyLookupError, NoiseStaticKey, Pattern,
    ServerHandshake, ServerKeys, ServerPolicy, ServerStart, Version,
};
use commucat::crypto::kdf::{CombinerInput, derive_session_keys};
use criterion::{Criterion, criterion_group};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, KeyExport, MlKem768};
use rand::Rng;
use zeroize::Zeroizing;

const NOW: u64 = 1_790_000_000;

struct BenchKeys {
    noise: NoiseStaticKey,
    kem: DecapsulationKey<MlKem768>,
}

impl ServerKeys for BenchKeys {
    fn noise_static(&self, key_version: u32, _now: u64) -> Result<&NoiseStaticKey, KeyLookupError> {
        if key_version == 1 {
            Ok(&self.noise)
        } else {
            Err(KeyLookupError::Unknown)
        }
    }

    fn kem(&self) -> Option<&DecapsulationKey<MlKem768>> {
        Some(&self.kem)
    }
}

fn random32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn bench_keys() -> BenchKeys {
    let mut seed = [0u8; 64];
    rand::rng().fill_bytes(&mut seed);
    BenchKeys {
        noise: NoiseStaticKey::from_secret(random32()),
        kem: DecapsulationKey::from_seed(Array::from(seed)),
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

/// Handshake version and whether it is hybrid.
#[derive(Debug, Clone, Copy)]
struct Mode {
    version: Version,
    pq: bool,
}

const CLASSICAL: Mode = Mode {
    version: Version::V1,
    pq: false,
};
const HYBRID_V1: Mode = Mode {
    version: Version::V1,
    pq: true,
};
const HYBRID_V2: Mode = Mode {
    version: Version::V2,
    pq: true,
};

fn client(keys: &BenchKeys, mode: Mode) -> ClientHandshake {
    let params = ClientParams {
        pattern: Pattern::Xk,
        version: mode.version,
        pq: mode.pq,
        key_version: 1,
        server_static_public: *keys.noise.public(),
        server_kem_public: Some(keys.kem.encapsulation_key().to_bytes().to_vec()),
        prologue: DEFAULT_PROLOGUE.to_vec(),
        client_static_secret: Zeroizing::new(random32()),
    };
    match ClientHandshake::new(params, &mut rand::rng()) {
        Ok(client) => client,
        Err(err) => panic!("client message 1: {err}"),
    }
}

/// Times only the server's two steps of `iters` complete XK handshakes.
fn server_xk_handshakes(
    keys: &BenchKeys,
    policy: &ServerPolicy,
    mode: Mode,
    iters: u64,
) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut rng = rand::rng();
    for _ in 0..iters {
        let client = client(keys, mode);
        let started = Instant::now();
        let result = ServerHandshake::start(policy, keys, client.message1(), NOW, &mut rng);
        server_time += started.elapsed();
        let Ok((ServerStart::AwaitingMessage3(state), message2)) = result else {
            panic!("XK responder did not wait for message 3");
        };
        let message3 = match client.read_message2(&message2) {
            Ok(done) => done.message3.unwrap_or_default(),
            Err(err) => panic!("client message 2: {err}"),
        };
        let started = Instant::now();
        let established = state.read_message3(&message3);
        server_time += started.elapsed();
        assert!(black_box(established).is_ok());
    }
    server_time
}

fn handshake_and_primitives(c: &mut Criterion) {
    let keys = bench_keys();
    let policy = policy();
    let mut group = c.benchmark_group("server_xk");

    group.bench_function("handshake_hybrid_v1", |b| {
        b.iter_custom(|iters| server_xk_handshakes(&keys, &policy, HYBRID_V1, iters));
    });
    group.bench_function("handshake_hybrid_v2", |b| {
        b.iter_custom(|iters| server_xk_handshakes(&keys, &policy, HYBRID_V2, iters));
    });

    let secret = random32();
    let peer = MontgomeryPoint::mul_base_clamped(random32());
    group.bench_function("x25519_keygen", |b| {
        b.iter(|| MontgomeryPoint::mul_base_clamped(black_box(secret)));
    });
    group.bench_function("x25519_dh", |b| {
        b.iter(|| black_box(peer).mul_clamped(black_box(secret)));
    });

    let (ct, _) = keys
        .kem
        .encapsulation_key()
        .encapsulate_with_rng(&mut rand::rng());
    group.bench_function("mlkem768_decapsulate", |b| {
        b.iter(|| keys.kem.decapsulate(black_box(&ct)));
    });

    let mut seed = [0u8; 64];
    rand::rng().fill_bytes(&mut seed);
    let ephemeral = DecapsulationKey::<MlKem768>::from_seed(Array::from(seed));
    let ek_bytes = ephemeral.encapsulation_key().to_bytes();
    group.bench_function("mlkem768_decode_and_encapsulate", |b| {
        let mut rng = rand::rng();
        b.iter(|| {
            let ek = EncapsulationKey::<MlKem768>::new(black_box(&ek_bytes));
            ek.map(|ek| ek.encapsulate_with_rng(&mut rng))
        });
    });

    let (h, k1, k2, ss_s, ss_e) = (random32(), random32(), random32(), random32(), random32());
    group.bench_function("hkdf_session_keys_v1", |b| {
        b.iter(|| {
            derive_session_keys(black_box(&CombinerInput {
                handshake_hash: &h,
                k1: &k1,
                k2: &k2,
                ss_s: Some(&ss_s),
                ss_e: None,
            }))
        });
    });
    group.bench_function("hkdf_session_keys_v2", |b| {
        b.iter(|| {
            derive_session_keys(black_box(&CombinerInput {
                handshake_hash: &h,
                k1: &k1,
                k2: &k2,
                ss_s: Some(&ss_s),
                ss_e: Some(&ss_e),
            }))
        });
    });
    group.finish();
}

/// The primitives one server XK handshake performs, run once.
struct Primitives {
    secret: [u8; 32],
    peer: MontgomeryPoint,
    ct: ml_kem::Ciphertext<MlKem768>,
    ek_bytes: ml_kem::Key<EncapsulationKey<MlKem768>>,
}

impl Primitives {
    fn new(keys: &BenchKeys) -> Self {
        let (ct, _) = keys
            .kem
            .encapsulation_key()
            .encapsulate_with_rng(&mut rand::rng());
        let mut seed = [0u8; 64];
        rand::rng().fill_bytes(&mut seed);
        let ephemeral = DecapsulationKey::<MlKem768>::from_seed(Array::from(seed));
        Self {
            secret: random32(),
            peer: MontgomeryPoint::mul_base_clamped(random32()),
            ct,
            ek_bytes: ephemeral.encapsulation_key().to_bytes(),
        }
    }

    fn run(&self, keys: &BenchKeys, mode: Mode) -> Duration {
        let mut rng = rand::rng();
        let started = Instant::now();
        black_box(MontgomeryPoint::mul_base_clamped(black_box(self.secret)));
        for _ in 0..3 {
            black_box(black_box(self.peer).mul_clamped(black_box(self.secret)));
        }
        let ss_s: Option<[u8; 32]> = mode
            .pq
            .then(|| keys.kem.decapsulate(black_box(&self.ct)).into());
        let mut ss_e: Option<[u8; 32]> = None;
        if mode.version == Version::V2
            && let Ok(ek) = EncapsulationKey::<MlKem768>::new(black_box(&self.ek_bytes))
        {
            ss_e = Some(ek.encapsulate_with_rng(&mut rng).1.into());
        }
        black_box(derive_session_keys(&CombinerInput {
            handshake_hash: &self.secret,
            k1: &self.secret,
            k2: &self.secret,
            ss_s: ss_s.as_ref(),
            ss_e: ss_e.as_ref(),
        }));
        started.elapsed()
    }
}

/// Handshakes and their primitives measured alternately in the same loop, so that load
/// from other processes on the machine affects both alike; prints medians and ratio.
fn paired_ratio(mode: Mode, rounds: usize) {
    let keys = bench_keys();
    let policy = policy();
    let primitives = Primitives::new(&keys);
    let mut handshakes = Vec::with_capacity(rounds);
    let mut sums = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            handshakes.push(server_xk_handshakes(&keys, &policy, mode, 1));
            sums.push(primitives.run(&keys, mode));
        } else {
            sums.push(primitives.run(&keys, mode));
            handshakes.push(server_xk_handshakes(&keys, &policy, mode, 1));
        }
    }
    handshakes.sort_unstable();
    sums.sort_unstable();
    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e6;
    let low = |v: &[Duration]| v[v.len() / 10].as_secs_f64() * 1e6;
    println!(
        "paired {mode:?}: handshake median {:.1} µs (p10 {:.1}), primitives median {:.1} µs (p10 {:.1}), ratio median {:.3} (p10 {:.3})",
        median(&handshakes),
        low(&handshakes),
        median(&sums),
        low(&sums),
        median(&handshakes) / median(&sums),
        low(&handshakes) / low(&sums),
    );
}

criterion_group!(benches, handshake_and_primitives);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes --bench), not in `cargo test --benches`.
    if std::env::args().any(|arg| arg == "--bench") {
        paired_ratio(CLASSICAL, 3000);
        paired_ratio(HYBRID_V1, 3000);
        paired_ratio(HYBRID_V2, 3000);
    }
}
