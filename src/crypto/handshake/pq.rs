//! The ML-KEM-768 half of the hybrid handshake: field lengths, encapsulation and
//! decapsulation.

use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, MlKem768};
use rand::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use super::header::{Header, Version};
use crate::crypto::kdf::KEY_LEN;

/// ML-KEM-768 ciphertext length (`ct_s`, `ct_e`).
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM-768 encapsulation key length (`ek_e`).
pub const KEM_ENCAPSULATION_KEY_LEN: usize = 1184;

/// An ML-KEM shared secret, wiped on drop.
pub(super) type SharedSecret = Zeroizing<[u8; KEY_LEN]>;

/// Exact payload length of Noise message 1 for `header`.
pub(super) fn message1_payload_len(header: &Header) -> usize {
    let ct_s = if header.pq { KEM_CIPHERTEXT_LEN } else { 0 };
    let ek_e = if header.version == Version::V2 {
        KEM_ENCAPSULATION_KEY_LEN
    } else {
        0
    };
    ct_s + ek_e
}

/// `ct` must be exactly [`KEM_CIPHERTEXT_LEN`] bytes (callers check lengths first).
pub(super) fn decapsulate(dk: &DecapsulationKey<MlKem768>, ct: &[u8]) -> SharedSecret {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if let Ok(mut shared) = dk.decapsulate_slice(ct) {
        out.copy_from_slice(&shared);
        shared.as_mut_slice().zeroize();
    }
    out
}

/// Encapsulates to an encoded key; `None` if the key is not a valid ML-KEM-768 key.
pub(super) fn encapsulate<R: CryptoRng + ?Sized>(
    ek: &[u8],
    rng: &mut R,
) -> Option<(Vec<u8>, SharedSecret)> {
    let encoded = Array::try_from(ek).ok()?;
    let ek = EncapsulationKey::<MlKem768>::new(&encoded).ok()?;
    let (ct, mut shared) = ek.encapsulate_with_rng(rng);
    let mut ss = Zeroizing::new([0u8; KEY_LEN]);
    ss.copy_from_slice(&shared);
    shared.as_mut_slice().zeroize();
    Some((ct.to_vec(), ss))
}
