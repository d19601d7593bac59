//! The ML-KEM-768 half of the hybrid handshake: where the KEM fields sit in the Noise
//! payloads, and encapsulation and decapsulation.
//!
//! Ciphertexts from the peer are length-checked once, where the payload is split, and
//! are typed from then on: [`decapsulate`] cannot be handed a ciphertext of the wrong
//! length, so there is no failure path that could yield a made-up shared secret.

use ml_kem::array::Array;
use ml_kem::{Ciphertext, Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, MlKem768};
use rand::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use super::error::Malformed;
use super::header::{Header, Version};
use crate::crypto::kdf::KEY_LEN;

/// ML-KEM-768 ciphertext length (`ct_s`, `ct_e`).
pub(crate) const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM-768 encapsulation key length (`ek_e`).
pub(crate) const KEM_ENCAPSULATION_KEY_LEN: usize = 1184;

/// The server's ML-KEM-768 key as [`super::ServerKeys::kem`] hands it out.
pub type KemDecapsulationKey = DecapsulationKey<MlKem768>;

/// An ML-KEM-768 ciphertext of the right length.
pub(super) type KemCiphertext = Ciphertext<MlKem768>;

/// An ML-KEM shared secret, wiped on drop.
pub(super) type SharedSecret = Zeroizing<[u8; KEY_LEN]>;

/// The payload of Noise message 1, split at the lengths its header announces:
/// `ct_s` when PQ, then `ek_e` when version 2, and nothing else.
pub(super) struct Message1Payload<'a> {
    pub(super) ct_s: Option<&'a KemCiphertext>,
    pub(super) ek_e: Option<&'a [u8; KEM_ENCAPSULATION_KEY_LEN]>,
}

impl<'a> Message1Payload<'a> {
    /// Exact payload length of message 1 for `header`.
    pub(super) fn len_for(header: &Header) -> usize {
        let ct_s = if header.pq { KEM_CIPHERTEXT_LEN } else { 0 };
        let ek_e = if header.version == Version::V2 {
            KEM_ENCAPSULATION_KEY_LEN
        } else {
            0
        };
        ct_s + ek_e
    }

    pub(super) fn parse(header: &Header, payload: &'a [u8]) -> Result<Self, Malformed> {
        let wrong_length = Malformed::PayloadLength {
            expected: Self::len_for(header),
            actual: payload.len(),
        };
        let (ct_s, rest) = if header.pq {
            let (ct_s, rest) = payload
                .split_first_chunk::<KEM_CIPHERTEXT_LEN>()
                .ok_or(wrong_length)?;
            (Some(<&KemCiphertext>::from(ct_s)), rest)
        } else {
            (None, payload)
        };
        let (ek_e, rest) = if header.version == Version::V2 {
            let (ek_e, rest) = rest
                .split_first_chunk::<KEM_ENCAPSULATION_KEY_LEN>()
                .ok_or(wrong_length)?;
            (Some(ek_e), rest)
        } else {
            (None, rest)
        };
        if !rest.is_empty() {
            return Err(wrong_length);
        }
        Ok(Self { ct_s, ek_e })
    }
}

/// Splits the version 2 payload of message 2 into `ct_e` and the server hello JSON.
pub(super) fn split_message2_ciphertext(
    payload: &[u8],
) -> Result<(&KemCiphertext, &[u8]), Malformed> {
    let (ct_e, json) =
        payload
            .split_first_chunk::<KEM_CIPHERTEXT_LEN>()
            .ok_or(Malformed::PayloadLength {
                expected: KEM_CIPHERTEXT_LEN,
                actual: payload.len(),
            })?;
    Ok((ct_e.into(), json))
}

/// Infallible by type: FIPS 203 decapsulation has no failure of its own (implicit
/// rejection), and the ciphertext length was settled where the bytes arrived.
pub(super) fn decapsulate(dk: &KemDecapsulationKey, ct: &KemCiphertext) -> SharedSecret {
    let mut shared = dk.decapsulate(ct);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&shared);
    shared.as_mut_slice().zeroize();
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
