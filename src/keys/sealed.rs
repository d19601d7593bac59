//! The cluster keyring as it is stored in Redis: every private key of the server
//! (the Noise key ring, the ML-KEM seed, the ML-DSA seed, the ICE secret) sealed with
//! ChaCha20-Poly1305 under a key derived from `[cluster] keys_secret`. Sans-I/O: bytes
//! in, bytes out; the nonce is passed in.
//!
//! ```text
//! blob      = header || nonce (12) || ciphertext (plaintext + 16-byte tag)
//! header    = "CCK1" || generation (u64 big-endian)
//! aad       = "commucat.cluster.keyring.v1" || header
//! key       = HKDF-SHA256(salt = none, ikm = keys_secret, info = "commucat.cluster.keyring.v1")
//! plaintext = identity seed (32) || KEM seed (64) || ICE secret (32) || key count (u32 BE)
//!             || per key: version (u32) || secret (32) || valid_after || rotates_at || expires_at (u64 each)
//! ```
//!
//! The generation is authenticated (it is in the aad) yet readable without the secret,
//! so that a writer can compare-and-set on it; a blob moved to another generation, or a
//! header edited, does not open.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{ICE_SECRET_LEN, IDENTITY_SEED_LEN, KEM_SEED_LEN, NoiseKey, NoiseKeyRing};

const MAGIC: &[u8; 4] = b"CCK1";
const LABEL: &[u8] = b"commucat.cluster.keyring.v1";
const HEADER_LEN: usize = 4 + 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FIXED_LEN: usize = IDENTITY_SEED_LEN + KEM_SEED_LEN + ICE_SECRET_LEN + 4;
const KEY_RECORD_LEN: usize = 4 + 32 + 8 * 3;
/// More keys than this in one ring is not a ring this code wrote.
const MAX_KEYS: usize = 1024;

/// Everything the nodes of a cluster share.
pub struct KeyringContents {
    pub identity_seed: Zeroizing<[u8; IDENTITY_SEED_LEN]>,
    pub kem_seed: Zeroizing<[u8; KEM_SEED_LEN]>,
    pub ice_secret: Zeroizing<[u8; ICE_SECRET_LEN]>,
    pub ring: NoiseKeyRing,
}

impl KeyringContents {
    /// Fresh seeds and secrets, and an empty Noise ring (the caller mints its first key).
    pub fn generate() -> Self {
        let mut identity_seed = Zeroizing::new([0u8; IDENTITY_SEED_LEN]);
        let mut kem_seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        let mut ice_secret = Zeroizing::new([0u8; ICE_SECRET_LEN]);
        rand::fill(&mut identity_seed[..]);
        rand::fill(&mut kem_seed[..]);
        rand::fill(&mut ice_secret[..]);
        Self {
            identity_seed,
            kem_seed,
            ice_secret,
            ring: NoiseKeyRing::default(),
        }
    }

    /// Whether `other` holds the same identity seed, KEM seed and ICE secret: a ring
    /// that differs only in its Noise keys (a rotation) needs no new long-term keys.
    /// Constant time, as every comparison of secrets here.
    pub fn same_long_term_keys(&self, other: &Self) -> bool {
        let same = self.identity_seed[..].ct_eq(&other.identity_seed[..])
            & self.kem_seed[..].ct_eq(&other.kem_seed[..])
            & self.ice_secret[..].ct_eq(&other.ice_secret[..]);
        same.into()
    }

    /// The same secrets with another Noise ring.
    pub fn with_ring(&self, ring: NoiseKeyRing) -> Self {
        Self {
            identity_seed: self.identity_seed.clone(),
            kem_seed: self.kem_seed.clone(),
            ice_secret: self.ice_secret.clone(),
            ring,
        }
    }
}

/// Why a blob does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a CommuCat cluster keyring (unknown format or truncated)")]
    Format,
    #[error(
        "the cluster keyring does not open with this [cluster] keys_secret: the ring was sealed \
         with another secret (or altered); give every node the same keys_secret"
    )]
    WrongSecret,
    #[error("the cluster keyring opened but its contents are malformed: {0}")]
    Malformed(&'static str),
}

fn cipher(secret: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = hkdf::Hkdf::<sha2::Sha256>::new(None, secret).expand(LABEL, &mut key[..]);
    ChaCha20Poly1305::new((&*key).into())
}

fn header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..].copy_from_slice(&generation.to_be_bytes());
    h
}

fn aad(header: &[u8]) -> Vec<u8> {
    [LABEL, header].concat()
}

/// The generation of a blob, read without opening it; `None` if it is not a keyring.
pub fn generation(blob: &[u8]) -> Option<u64> {
    if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || &blob[..4] != MAGIC {
        return None;
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&blob[4..HEADER_LEN]);
    Some(u64::from_be_bytes(g))
}

/// Seals `contents` as generation `generation` with `nonce` (random, never reused
/// under one secret).
pub fn seal(
    contents: &KeyringContents,
    generation: u64,
    secret: &[u8; 32],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let keys = contents.ring.keys();
    let mut plain = Zeroizing::new(Vec::with_capacity(FIXED_LEN + keys.len() * KEY_RECORD_LEN));
    plain.extend_from_slice(&contents.identity_seed[..]);
    plain.extend_from_slice(&contents.kem_seed[..]);
    plain.extend_from_slice(&contents.ice_secret[..]);
    plain.extend_from_slice(&(keys.len() as u32).to_be_bytes());
    for k in keys {
        plain.extend_from_slice(&k.version.to_be_bytes());
        plain.extend_from_slice(&k.secret_bytes()[..]);
        plain.extend_from_slice(&k.valid_after.to_be_bytes());
        plain.extend_from_slice(&k.rotates_at.to_be_bytes());
        plain.extend_from_slice(&k.expires_at.to_be_bytes());
    }
    let header = header(generation);
    let aad = aad(&header);
    // Encryption fails only for plaintexts beyond 2^38 bytes.
    let ciphertext = cipher(secret)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    [&header[..], &nonce[..], &ciphertext].concat()
}

/// Opens a blob: its generation and contents.
pub fn open(blob: &[u8], secret: &[u8; 32]) -> Result<(u64, KeyringContents), SealError> {
    let generation = generation(blob).ok_or(SealError::Format)?;
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
    let mut nonce = Nonce::default();
    nonce.copy_from_slice(nonce_bytes);
    let plain = Zeroizing::new(
        cipher(secret)
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad(header),
                },
            )
            .map_err(|_| SealError::WrongSecret)?,
    );
    Ok((generation, decode(&plain)?))
}

fn decode(plain: &[u8]) -> Result<KeyringContents, SealError> {
    if plain.len() < FIXED_LEN {
        return Err(SealError::Malformed("too short"));
    }
    let mut identity_seed = Zeroizing::new([0u8; IDENTITY_SEED_LEN]);
    let mut kem_seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
    let mut ice_secret = Zeroizing::new([0u8; ICE_SECRET_LEN]);
    let (a, rest) = plain.split_at(IDENTITY_SEED_LEN);
    identity_seed.copy_from_slice(a);
    let (b, rest) = rest.split_at(KEM_SEED_LEN);
    kem_seed.copy_from_slice(b);
    let (c, rest) = rest.split_at(ICE_SECRET_LEN);
    ice_secret.copy_from_slice(c);
    let (count, mut rest) = rest.split_at(4);
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if count > MAX_KEYS || rest.len() != count * KEY_RECORD_LEN {
        return Err(SealError::Malformed("key count does not match the length"));
    }
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let (record, next) = rest.split_at(KEY_RECORD_LEN);
        rest = next;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&record[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let version = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&record[4..36]);
        let (valid_after, rotates_at, expires_at) = (u64_at(36), u64_at(44), u64_at(52));
        if !(valid_after <= rotates_at && rotates_at <= expires_at) {
            return Err(SealError::Malformed("key times out of order"));
        }
        keys.push(NoiseKey::new(
            version,
            *secret,
            valid_after,
            rotates_at,
            expires_at,
        ));
    }
    let ring = NoiseKeyRing::from_keys(keys).map_err(|_| SealError::Malformed("key versions"))?;
    Ok(KeyringContents {
        identity_seed,
        kem_seed,
        ice_secret,
        ring,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> KeyringContents {
        let mut c = KeyringContents::generate();
        c.ring = NoiseKeyRing::from_keys(vec![
            NoiseKey::new(1, [1; 32], 10, 20, 30),
            NoiseKey::new(2, [2; 32], 20, 40, 50),
        ])
        .unwrap();
        c
    }

    #[test]
    fn long_term_keys_compare_without_the_ring() {
        let c = contents();
        assert!(c.same_long_term_keys(&c.with_ring(NoiseKeyRing::default())));
        let mut other = c.with_ring(c.ring.clone());
        other.ice_secret[0] ^= 1;
        assert!(!c.same_long_term_keys(&other));
        let mut other = c.with_ring(c.ring.clone());
        other.kem_seed[63] ^= 1;
        assert!(!c.same_long_term_keys(&other));
        let mut other = c.with_ring(c.ring.clone());
        other.identity_seed[0] ^= 1;
        assert!(!c.same_long_term_keys(&other));
    }

    #[test]
    fn seal_then_open_round_trips() {
        let c = contents();
        let blob = seal(&c, 7, &[9; 32], [3; 12]);
        assert_eq!(generation(&blob), Some(7));
        let (g, opened) = open(&blob, &[9; 32]).unwrap();
        assert_eq!(g, 7);
        assert_eq!(*opened.identity_seed, *c.identity_seed);
        assert_eq!(*opened.kem_seed, *c.kem_seed);
        assert_eq!(*opened.ice_secret, *c.ice_secret);
        let pubs = |r: &NoiseKeyRing| r.keys().iter().map(|k| k.public_hex()).collect::<Vec<_>>();
        assert_eq!(pubs(&opened.ring), pubs(&c.ring));
        assert_eq!(opened.ring.keys()[1].expires_at, 50);
    }

    #[test]
    fn a_wrong_secret_or_an_edited_header_does_not_open() {
        let blob = seal(&contents(), 7, &[9; 32], [3; 12]);
        assert_eq!(open(&blob, &[8; 32]).err(), Some(SealError::WrongSecret));
        let mut moved = blob.clone();
        moved[11] ^= 1;
        assert_eq!(generation(&moved), Some(6));
        assert_eq!(open(&moved, &[9; 32]).err(), Some(SealError::WrongSecret));
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(open(&flipped, &[9; 32]).err(), Some(SealError::WrongSecret));
        assert_eq!(open(b"CCK1", &[9; 32]).err(), Some(SealError::Format));
        assert_eq!(open(&blob[1..], &[9; 32]).err(), Some(SealError::Format));
    }

    #[test]
    fn the_blob_holds_no_key_in_the_clear() {
        let c = contents();
        let blob = seal(&c, 1, &[9; 32], [3; 12]);
        let contains = |needle: &[u8]| blob.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(&c.identity_seed[..]));
        assert!(!contains(&c.kem_seed[..16]));
        assert!(!contains(&[1u8; 32]));
        // A fresh nonce gives a different blob.
        assert_ne!(blob, seal(&c, 1, &[9; 32], [4; 12]));
    }
}
