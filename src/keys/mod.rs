//! The server's keys (docs/protocol.md §1): versioned Noise static keys that rotate, the
//! ML-KEM-768 key, the ML-DSA-65 identity key and the ICE secret.
//!
//! `store` persists them, `rotation` decides when a new Noise key is due, `bundle` signs
//! the public key bundle that `/api/server-info` publishes.

pub mod bundle;
pub mod device;
mod error;
mod load;
pub mod pem;
pub mod rotation;
pub mod sealed;
pub mod store;

use ml_dsa::{Keypair as _, MlDsa65, SigningKey, VerifyingKey};
use ml_kem::{DecapsulationKey, EncapsulationKey, KeyExport as _, MlKem768};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

pub use crate::crypto::KeyLookupError;
use crate::crypto::{NoiseStaticKey, ServerKeys};

pub use error::{ConfiguredKeyError, KeysError};
pub use load::{
    LoadedKeys, configured_kem, keyring_from_state_dir, load, static_keys_from_keyring,
};

/// Length of an ML-KEM-768 seed (d ‖ z).
pub const KEM_SEED_LEN: usize = 64;
/// Length of an ML-KEM-768 encapsulation key.
pub const KEM_PUBLIC_LEN: usize = 1184;
/// Length of an ML-DSA-65 seed.
pub const IDENTITY_SEED_LEN: usize = 32;
/// Length of the ICE credential secret.
pub const ICE_SECRET_LEN: usize = 32;

/// One versioned Noise static key.
#[derive(Clone)]
pub struct NoiseKey {
    pub version: u32,
    key: NoiseStaticKey,
    pub valid_after: u64,
    pub rotates_at: u64,
    pub expires_at: u64,
}

impl NoiseKey {
    pub fn new(
        version: u32,
        secret: [u8; 32],
        valid_after: u64,
        rotates_at: u64,
        expires_at: u64,
    ) -> Self {
        Self {
            version,
            key: NoiseStaticKey::from_secret(secret),
            valid_after,
            rotates_at,
            expires_at,
        }
    }

    /// A fresh key valid at once, rotating after `interval` and expiring `grace` later.
    pub fn generate(version: u32, now: u64, interval: u64, grace: u64) -> Self {
        Self::generate_from(version, now, interval, grace)
    }

    /// A fresh key valid from `start`, rotating `interval` later and expiring `grace`
    /// after that.
    pub fn generate_from(version: u32, start: u64, interval: u64, grace: u64) -> Self {
        let secret = StaticSecret::random_from_rng(&mut rand::rng());
        let rotates_at = start.saturating_add(interval);
        Self::new(
            version,
            secret.to_bytes(),
            start,
            rotates_at,
            rotates_at.saturating_add(grace),
        )
    }

    pub fn public(&self) -> &[u8; 32] {
        self.key.public()
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.public())
    }

    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.key.secret_bytes()
    }

    /// The key as the handshake uses it.
    pub fn static_key(&self) -> &NoiseStaticKey {
        &self.key
    }

    /// Handshakes are accepted on a key from `valid_after` (less
    /// [`rotation::VALID_AFTER_SKEW`]) until `expires_at`.
    pub fn usable_at(&self, now: u64) -> bool {
        self.valid_after <= now.saturating_add(rotation::VALID_AFTER_SKEW) && now < self.expires_at
    }
}

impl std::fmt::Debug for NoiseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseKey")
            .field("version", &self.version)
            .field("public", &self.public_hex())
            .field("valid_after", &self.valid_after)
            .field("rotates_at", &self.rotates_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The Noise static keys, oldest first: those not expired, and expired ones not yet
/// pruned ([`rotation::Pruning`]).
#[derive(Debug, Default, Clone)]
pub struct NoiseKeyRing {
    keys: Vec<NoiseKey>,
}

impl NoiseKeyRing {
    /// Builds a ring; versions must be strictly increasing.
    pub fn from_keys(mut keys: Vec<NoiseKey>) -> Result<Self, String> {
        keys.sort_by_key(|k| k.version);
        if keys.windows(2).any(|w| w[0].version == w[1].version) {
            return Err("duplicate key version".into());
        }
        if keys.iter().any(|k| k.version == 0) {
            return Err("key version 0 is not allowed".into());
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[NoiseKey] {
        &self.keys
    }

    pub fn newest(&self) -> Option<&NoiseKey> {
        self.keys.last()
    }

    /// The key `version` if a handshake may use it at `now`.
    pub fn lookup(&self, version: u32, now: u64) -> Result<&NoiseKey, KeyLookupError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or(KeyLookupError::Unknown)?;
        if key.usable_at(now) {
            Ok(key)
        } else if now < key.expires_at {
            Err(KeyLookupError::Unknown)
        } else {
            Err(KeyLookupError::Expired)
        }
    }

    /// The keys still listed at `now` (not expired), oldest first.
    pub fn listed(&self, now: u64) -> impl Iterator<Item = &NoiseKey> {
        self.keys.iter().filter(move |k| now < k.expires_at)
    }

    /// The keys that may be deleted at `now`: expired, and not the newest (which is
    /// kept whatever the clock says, so that a ring is never emptied by a clock jump).
    pub fn prunable(&self, now: u64) -> impl Iterator<Item = &NoiseKey> {
        let newest = self.newest().map(|k| k.version);
        self.keys
            .iter()
            .filter(move |k| k.expires_at <= now && Some(k.version) != newest)
    }

    /// A copy of this ring, without the [`prunable`](Self::prunable) keys when `prune`,
    /// plus `added`.
    pub fn successor(&self, now: u64, prune: bool, added: Option<NoiseKey>) -> Self {
        let newest = self.newest().map(|k| k.version);
        let mut keys: Vec<NoiseKey> = self
            .keys
            .iter()
            .filter(|k| !prune || now < k.expires_at || Some(k.version) == newest)
            .cloned()
            .collect();
        keys.extend(added);
        Self { keys }
    }
}

/// What a server handshake needs: the Noise keys of one snapshot and the KEM key.
pub struct HandshakeKeys<'a> {
    pub ring: &'a NoiseKeyRing,
    pub kem: Option<&'a KemKeys>,
}

impl ServerKeys for HandshakeKeys<'_> {
    fn noise_static(
        &self,
        key_version: u32,
        now_unix: u64,
    ) -> Result<&NoiseStaticKey, KeyLookupError> {
        self.ring
            .lookup(key_version, now_unix)
            .map(NoiseKey::static_key)
    }

    fn kem(&self) -> Option<&DecapsulationKey<MlKem768>> {
        self.kem.map(|k| &k.decapsulation)
    }
}

/// The server's ML-KEM-768 key, decoded once.
pub struct KemKeys {
    pub decapsulation: DecapsulationKey<MlKem768>,
    pub public_bytes: Vec<u8>,
    pub public_hex: String,
}

impl KemKeys {
    pub fn from_seed(seed: &[u8; KEM_SEED_LEN]) -> Self {
        let decapsulation = DecapsulationKey::<MlKem768>::from_seed((*seed).into());
        let public_bytes = decapsulation.encapsulation_key().to_bytes().to_vec();
        let public_hex = hex::encode(&public_bytes);
        Self {
            decapsulation,
            public_bytes,
            public_hex,
        }
    }

    pub fn encapsulation_key(&self) -> &EncapsulationKey<MlKem768> {
        self.decapsulation.encapsulation_key()
    }
}

/// The ML-DSA-65 identity key: signs the key bundle and device certificates.
pub struct IdentityKeys {
    pub signing: SigningKey<MlDsa65>,
    pub verifying: VerifyingKey<MlDsa65>,
    pub public_hex: String,
}

impl IdentityKeys {
    pub fn from_seed(seed: &[u8; IDENTITY_SEED_LEN]) -> Self {
        let signing = SigningKey::<MlDsa65>::from_seed(&(*seed).into());
        let verifying = signing.verifying_key();
        let public_hex = hex::encode(verifying.encode());
        Self {
            signing,
            verifying,
            public_hex,
        }
    }
}

/// The long-term keys: loaded once at start; in cluster mode replaced as a whole when
/// the shared keyring brings others (`commucat cluster import --force`).
pub struct StaticKeys {
    /// `None` when PQ is off.
    pub kem: Option<KemKeys>,
    pub identity: IdentityKeys,
    /// The secret ICE credentials are derived from (configured, or kept in the store).
    pub ice_secret: Zeroizing<[u8; ICE_SECRET_LEN]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u32, valid_after: u64, rotates_at: u64, expires_at: u64) -> NoiseKey {
        NoiseKey::new(
            version,
            [version as u8; 32],
            valid_after,
            rotates_at,
            expires_at,
        )
    }

    #[test]
    fn lookup_distinguishes_unknown_and_expired() {
        let ring = NoiseKeyRing::from_keys(vec![key(1, 0, 10, 20), key(2, 10, 30, 40)]).unwrap();
        assert_eq!(ring.lookup(1, 15).unwrap().version, 1);
        assert_eq!(ring.lookup(2, 15).unwrap().version, 2);
        assert_eq!(ring.lookup(1, 20).unwrap_err(), KeyLookupError::Expired);
        assert_eq!(ring.lookup(3, 15).unwrap_err(), KeyLookupError::Unknown);
        assert_eq!(ring.listed(25).count(), 1);
    }

    #[test]
    fn ring_rejects_duplicate_versions() {
        assert!(NoiseKeyRing::from_keys(vec![key(1, 0, 1, 2), key(1, 0, 1, 2)]).is_err());
    }
}
