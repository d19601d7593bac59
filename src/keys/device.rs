//! Throwaway device keys for `/api/p2p/assist` (`noise.device_seed_hex`).
//!
//! Every assist response carries a fresh X25519 key pair; the public-key computation is
//! the most expensive part of the response. Keys are made in batches: one fixed-base
//! multiplication each with the precomputed basepoint table, and one field inversion for the
//! whole batch (Montgomery's trick) instead of one per key.

use std::sync::Mutex;

use curve25519_dalek5::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek5::edwards::EdwardsPoint;
use curve25519_dalek5::scalar::{Scalar, clamp_integer};
use zeroize::Zeroizing;

const BATCH: usize = 32;

/// An X25519 key pair nobody else has seen; the secret is wiped when dropped.
pub struct DeviceKey {
    pub secret: Zeroizing<[u8; 32]>,
    pub public: [u8; 32],
}

/// A pool of fresh key pairs; each is handed out once.
#[derive(Default)]
pub struct DeviceKeyPool {
    keys: Mutex<Vec<DeviceKey>>,
}

impl DeviceKeyPool {
    pub fn take(&self) -> DeviceKey {
        if let Some(key) = self.lock().pop() {
            return key;
        }
        let mut batch = generate(BATCH);
        let key = batch.pop().expect("a batch is never empty");
        self.lock().append(&mut batch);
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeviceKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `n` fresh key pairs. X25519 public key = u-coordinate of clamp(secret)·B; the scalar
/// may be reduced mod ℓ first because B has order ℓ.
pub fn generate(n: usize) -> Vec<DeviceKey> {
    let secrets: Vec<Zeroizing<[u8; 32]>> = (0..n)
        .map(|_| {
            let mut s = Zeroizing::new([0u8; 32]);
            rand::fill(&mut s[..]);
            s
        })
        .collect();
    let points: Vec<EdwardsPoint> = secrets
        .iter()
        .map(|s| {
            let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(clamp_integer(**s)));
            &*scalar * ED25519_BASEPOINT_TABLE
        })
        .collect();
    let publics = EdwardsPoint::to_montgomery_batch(&points);
    secrets
        .into_iter()
        .zip(publics)
        .map(|(secret, public)| DeviceKey {
            secret,
            public: public.to_bytes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keys_match_x25519_dalek() {
        for key in generate(40) {
            let expected =
                x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*key.secret));
            assert_eq!(&key.public, expected.as_bytes());
        }
    }

    #[test]
    fn pool_never_hands_out_a_key_twice() {
        let pool = DeviceKeyPool::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            assert!(seen.insert(*pool.take().secret));
        }
    }
}
