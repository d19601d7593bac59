//! Feeds arbitrary bytes as message 1 to `ServerHandshake::start`. The server's keys
//! come from constant seeds and its randomness from `SeededRng`, so every finding
//! replays exactly. Byte 0 picks the server's PQ policy; the rest is message 1.
#![no_main]

use std::sync::LazyLock;

use commucat::crypto::handshake::DEFAULT_PROLOGUE;
use commucat::crypto::testing::SeededRng;
use commucat::crypto::{
    KemDecapsulationKey, KeyLookupError, NoiseStaticKey, Pattern, ServerHandshake, ServerKeys,
    ServerPolicy, ServerStart,
};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;
/// Every close code a peer can cause; 1011 (internal) would be a bug.
const PEER_CLOSE_CODES: [u16; 4] = [4400, 4401, 4403, 4404];

struct FixedKeys {
    noise: NoiseStaticKey,
    kem: KemDecapsulationKey,
}

// Built once: deriving the ML-KEM key per input would dominate every run.
static KEYS: LazyLock<FixedKeys> = LazyLock::new(|| FixedKeys {
    noise: NoiseStaticKey::from_secret([2; 32]),
    kem: KemDecapsulationKey::from_seed([3; 64].into()),
});

/// The fixed keys, with or without the KEM key loaded. Key version 1 has expired, 2 is
/// valid, any other is unknown, so message 1 can reach both 4404s and go past them.
struct Keys {
    fixed: &'static FixedKeys,
    with_kem: bool,
}

impl ServerKeys for Keys {
    fn noise_static(
        &self,
        key_version: u32,
        _now_unix: u64,
    ) -> Result<&NoiseStaticKey, KeyLookupError> {
        match key_version {
            1 => Err(KeyLookupError::Expired),
            2 => Ok(&self.fixed.noise),
            _ => Err(KeyLookupError::Unknown),
        }
    }

    fn kem(&self) -> Option<&KemDecapsulationKey> {
        self.with_kem.then_some(&self.fixed.kem)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message1)) = data.split_first() else {
        return;
    };
    let policy = ServerPolicy {
        prologue: DEFAULT_PROLOGUE.to_vec(),
        pq_enabled: flags & 1 == 0,
        require_pq: flags & 2 != 0,
        ttl_seconds: 120,
        keepalive_interval: 30,
    };
    let keys = Keys {
        fixed: &KEYS,
        with_kem: flags & 4 == 0,
    };
    let mut rng = SeededRng::new(b"handshake_start");
    match ServerHandshake::start(&policy, &keys, message1, NOW, &mut rng) {
        Err(err) => assert!(
            PEER_CLOSE_CODES.contains(&err.close_code()),
            "peer input caused {err:?}"
        ),
        // Only a holder of a client static key gets here (never the fuzzer, in
        // practice); the IK session must still wait for key confirmation.
        Ok((next, message2)) => {
            assert!(!message2.is_empty());
            if let ServerStart::Established(done) = next {
                assert_eq!(done.pattern, Pattern::Ik);
                assert!(!done.key_confirmed);
            }
        }
    }
});
