//! The server's keys as a handshake sees them: Noise static keys by version and the
//! ML-KEM-768 decapsulation key.

use core::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroizing;

use super::noise::DH_LEN;
use super::pq::KemDecapsulationKey;

/// A server Noise static key with its public half computed once.
#[derive(Clone)]
pub struct NoiseStaticKey {
    secret: Zeroizing<[u8; DH_LEN]>,
    public: [u8; DH_LEN],
}

impl NoiseStaticKey {
    /// From the X25519 private key (clamping happens at use, as X25519 specifies).
    pub fn from_secret(secret: [u8; DH_LEN]) -> Self {
        let secret = Zeroizing::new(secret);
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Self { secret, public }
    }

    /// X25519 public key.
    pub fn public(&self) -> &[u8; DH_LEN] {
        &self.public
    }

    /// A copy of the private key, for the keystore.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; DH_LEN]> {
        Zeroizing::new(*self.secret)
    }

    pub(super) fn secret(&self) -> &[u8; DH_LEN] {
        &self.secret
    }
}

impl fmt::Debug for NoiseStaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseStaticKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Why [`ServerKeys::noise_static`] has no key (both close with 4404).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key with that version was ever issued (or it has been deleted).
    #[error("unknown key version")]
    Unknown,
    /// The key exists but its `expires_at` has passed.
    #[error("expired key version")]
    Expired,
}

/// What the server's key store provides to a handshake. Implemented by the daemon's
/// key store (typically on a loaded snapshot, so the borrows are cheap).
pub trait ServerKeys {
    /// The Noise static key `key_version`, if it is valid at `now_unix` (every key that
    /// has not expired is accepted, not only the newest).
    fn noise_static(
        &self,
        key_version: u32,
        now_unix: u64,
    ) -> Result<&NoiseStaticKey, KeyLookupError>;

    /// The decoded ML-KEM-768 key (decode once, at load), or `None` when PQ is off.
    fn kem(&self) -> Option<&KemDecapsulationKey>;
}
