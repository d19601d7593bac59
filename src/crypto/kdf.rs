//! Key schedule of the hybrid handshake and of the transport ratchet (docs/protocol.md §4).
//!
//! Both derivations are HKDF-SHA3-512. `SimpleHkdf` is used because the block-level
//! `Hkdf<Sha3_512>` does not compile with sha3 0.12; the output is identical.

use core::fmt;

use hkdf::{SimpleHkdf, SimpleHkdfExtract};
use sha3::Sha3_512;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// HKDF info of a session whose handshake carried at least one ML-KEM secret.
pub(crate) const SESSION_INFO_HYBRID: &[u8] = b"commucat.hybrid.session.v1";
/// HKDF info of a purely classical (X25519 only) session.
pub(crate) const SESSION_INFO_CLASSICAL: &[u8] = b"commucat.classical.session.v1";
/// HKDF info of the per-direction transport ratchet (hybrid and classical sessions alike).
pub(crate) const RATCHET_INFO: &[u8] = b"commucat.hybrid.ratchet.v1";

/// Length of every symmetric key of the schedule.
pub(crate) const KEY_LEN: usize = 32;

/// The three keys a finished handshake yields; wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    root_key: [u8; KEY_LEN],
    client_to_server: [u8; KEY_LEN],
    server_to_client: [u8; KEY_LEN],
}

impl SessionKeys {
    /// Salt of the transport ratchet.
    pub fn root_key(&self) -> &[u8; KEY_LEN] {
        &self.root_key
    }

    /// First transport key of the client → server direction.
    pub fn client_to_server(&self) -> &[u8; KEY_LEN] {
        &self.client_to_server
    }

    /// First transport key of the server → client direction.
    pub fn server_to_client(&self) -> &[u8; KEY_LEN] {
        &self.server_to_client
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys([redacted])")
    }
}

/// The secrets that feed the session key combiner, in contract order.
pub struct CombinerInput<'a> {
    /// Noise handshake hash `h` (the HKDF salt).
    pub handshake_hash: &'a [u8],
    /// Raw split key initiator → responder.
    pub k1: &'a [u8; KEY_LEN],
    /// Raw split key responder → initiator.
    pub k2: &'a [u8; KEY_LEN],
    /// ML-KEM shared secret of `ct_s` (PQ handshakes).
    pub ss_s: Option<&'a [u8; KEY_LEN]>,
    /// ML-KEM shared secret of `ct_e` (version 2).
    pub ss_e: Option<&'a [u8; KEY_LEN]>,
}

/// `okm = HKDF-SHA3-512(salt = h, ikm = k1 || k2 || ss_s? || ss_e?, info, 96)`.
pub fn derive_session_keys(input: &CombinerInput<'_>) -> SessionKeys {
    let hybrid = input.ss_s.is_some() || input.ss_e.is_some();
    let info = if hybrid {
        SESSION_INFO_HYBRID
    } else {
        SESSION_INFO_CLASSICAL
    };
    // Feeding the ikm piecewise avoids a concatenation buffer full of secrets.
    let mut extract = SimpleHkdfExtract::<Sha3_512>::new(Some(input.handshake_hash));
    extract.input_ikm(input.k1);
    extract.input_ikm(input.k2);
    if let Some(ss_s) = input.ss_s {
        extract.input_ikm(ss_s);
    }
    if let Some(ss_e) = input.ss_e {
        extract.input_ikm(ss_e);
    }
    let (mut prk, hkdf) = extract.finalize();
    prk.as_mut_slice().zeroize();

    let mut okm = Zeroizing::new([0u8; 3 * KEY_LEN]);
    expand_fixed(&hkdf, info, okm.as_mut_slice());
    let mut keys = SessionKeys {
        root_key: [0; KEY_LEN],
        client_to_server: [0; KEY_LEN],
        server_to_client: [0; KEY_LEN],
    };
    keys.root_key.copy_from_slice(&okm[..KEY_LEN]);
    keys.client_to_server
        .copy_from_slice(&okm[KEY_LEN..2 * KEY_LEN]);
    keys.server_to_client.copy_from_slice(&okm[2 * KEY_LEN..]);
    keys
}

/// Next key of one transport direction: the first 32 bytes of
/// `HKDF-SHA3-512(salt = root_key, ikm = key, info = RATCHET_INFO)`.
///
/// HKDF-Expand's first block does not depend on the requested length, so expanding
/// exactly 32 bytes gives "the first 32 bytes" of any longer output.
pub fn ratchet_key(root_key: &[u8; KEY_LEN], key: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let hkdf = SimpleHkdf::<Sha3_512>::new(Some(root_key), key);
    let mut next = Zeroizing::new([0u8; KEY_LEN]);
    expand_fixed(&hkdf, RATCHET_INFO, next.as_mut_slice());
    next
}

fn expand_fixed(hkdf: &SimpleHkdf<Sha3_512>, info: &[u8], okm: &mut [u8]) {
    // Lengths here are compile-time constants far below 255 × 64 bytes, the only
    // failure HKDF-Expand has.
    if hkdf.expand(info, okm).is_err() {
        unreachable!("HKDF-SHA3-512 output of {} bytes is in range", okm.len());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha3::Digest;

    /// SHA3-512's rate, the HMAC block size (RFC 2104 with FIPS 202).
    const BLOCK: usize = 72;

    /// HMAC-SHA3-512 written out from RFC 2104, independent of the `hmac`/`hkdf` crates.
    fn hmac_sha3_512(key: &[u8], data: &[u8]) -> [u8; 64] {
        let mut block_key = [0u8; BLOCK];
        if key.len() > BLOCK {
            block_key[..64].copy_from_slice(&Sha3_512::digest(key));
        } else {
            block_key[..key.len()].copy_from_slice(key);
        }
        let inner_pad: Vec<u8> = block_key.iter().map(|b| b ^ 0x36).collect();
        let outer_pad: Vec<u8> = block_key.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha3_512::new()
            .chain_update(&inner_pad)
            .chain_update(data)
            .finalize();
        let outer = Sha3_512::new()
            .chain_update(&outer_pad)
            .chain_update(inner)
            .finalize();
        outer.into()
    }

    /// RFC 5869 extract-then-expand, from [`hmac_sha3_512`].
    pub(crate) fn reference_hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let prk = hmac_sha3_512(salt, ikm);
        let mut okm = Vec::new();
        let mut previous: Vec<u8> = Vec::new();
        let mut counter = 1u8;
        while okm.len() < len {
            let mut input = previous.clone();
            input.extend_from_slice(info);
            input.push(counter);
            previous = hmac_sha3_512(&prk, &input).to_vec();
            okm.extend_from_slice(&previous);
            counter += 1;
        }
        okm.truncate(len);
        okm
    }

    #[test]
    fn reference_hmac_matches_a_published_vector() {
        // NIST CSRC "HMAC_SHA3-512" example 1: key 00..3f, message "Sample message for keylen<blocklen".
        let key: Vec<u8> = (0u8..64).collect();
        let mac = hmac_sha3_512(&key, b"Sample message for keylen<blocklen");
        assert_eq!(
            hex::encode(mac),
            "4efd629d6c71bf86162658f29943b1c308ce27cdfa6db0d9c3ce81763f9cbce5\
             f7ebe9868031db1a8f8eb7b6b95e5c5e3f657a8996c86a2f6527e307f0213196"
        );
    }

    #[test]
    fn session_keys_match_an_independent_hkdf_for_every_mode() {
        let h = [0x11u8; 32];
        let (k1, k2, ss_s, ss_e) = ([0x21u8; 32], [0x22u8; 32], [0x31u8; 32], [0x32u8; 32]);
        type Case<'a> = (Option<&'a [u8; 32]>, Option<&'a [u8; 32]>, &'a [u8]);
        let cases: [Case<'_>; 3] = [
            (None, None, SESSION_INFO_CLASSICAL),
            (Some(&ss_s), None, SESSION_INFO_HYBRID),
            (Some(&ss_s), Some(&ss_e), SESSION_INFO_HYBRID),
        ];
        for (s, e, info) in cases {
            let keys = derive_session_keys(&CombinerInput {
                handshake_hash: &h,
                k1: &k1,
                k2: &k2,
                ss_s: s,
                ss_e: e,
            });
            let mut ikm = [k1, k2].concat();
            ikm.extend(s.into_iter().flatten());
            ikm.extend(e.into_iter().flatten());
            let okm = reference_hkdf(&h, &ikm, info, 96);
            assert_eq!(keys.root_key().as_slice(), &okm[..32]);
            assert_eq!(keys.client_to_server().as_slice(), &okm[32..64]);
            assert_eq!(keys.server_to_client().as_slice(), &okm[64..]);
        }
    }

    #[test]
    fn ratchet_is_the_first_32_bytes_of_an_independent_hkdf() {
        let root = [0x41u8; 32];
        let key = [0x42u8; 32];
        let next = ratchet_key(&root, &key);
        let reference = reference_hkdf(&root, &key, RATCHET_INFO, 64);
        assert_eq!(next.as_slice(), &reference[..32]);
        // A second step chains from the new key.
        let after = ratchet_key(&root, &next);
        let reference2 = reference_hkdf(&root, next.as_slice(), RATCHET_INFO, 64);
        assert_eq!(after.as_slice(), &reference2[..32]);
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let keys = derive_session_keys(&CombinerInput {
            handshake_hash: &[0u8; 32],
            k1: &[0xabu8; 32],
            k2: &[0xabu8; 32],
            ss_s: None,
            ss_e: None,
        });
        let printed = format!("{keys:?}");
        assert_eq!(printed, "SessionKeys([redacted])");
    }
}
