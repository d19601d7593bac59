//! The `snow` resolver of the handshake: X25519 on curve25519-dalek, and randomness
//! drawn in advance from the caller's RNG.

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand::CryptoRng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::keys::NoiseStaticKey;
use super::noise::DH_LEN;

/// `snow` resolver that takes the Noise ephemeral key from the caller's RNG and knows
/// the server's static public key, so that neither a global RNG nor a second fixed-base
/// multiplication per handshake is involved. Hash and cipher are snow's own.
pub(super) struct HandshakeResolver {
    ephemeral: Zeroizing<[u8; DH_LEN]>,
    known_static: Option<NoiseStaticKey>,
}

impl HandshakeResolver {
    pub(super) fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        known_static: Option<NoiseStaticKey>,
    ) -> Self {
        let mut ephemeral = Zeroizing::new([0u8; DH_LEN]);
        rng.fill_bytes(ephemeral.as_mut_slice());
        Self {
            ephemeral,
            known_static,
        }
    }
}

impl CryptoResolver for HandshakeResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(PreparedEntropy {
            bytes: self.ephemeral.clone(),
            used: false,
        }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                secret: Zeroizing::new([0; DH_LEN]),
                public: [0; DH_LEN],
                known_static: self.known_static.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The one ephemeral key a handshake side generates, drawn in advance from the caller's
/// RNG. A second request is an error rather than a silent reuse.
struct PreparedEntropy {
    bytes: Zeroizing<[u8; DH_LEN]>,
    used: bool,
}

impl Random for PreparedEntropy {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        if self.used || dest.len() != DH_LEN {
            return Err(snow::Error::Rng);
        }
        dest.copy_from_slice(self.bytes.as_slice());
        self.bytes.zeroize();
        self.used = true;
        Ok(())
    }
}

/// X25519 for `snow` on curve25519-dalek 4 (precomputed tables for the fixed base).
struct X25519 {
    secret: Zeroizing<[u8; DH_LEN]>,
    public: [u8; DH_LEN],
    known_static: Option<NoiseStaticKey>,
}

impl X25519 {
    fn set_secret(&mut self, secret: &[u8]) {
        self.secret.zeroize();
        let len = secret.len().min(DH_LEN);
        self.secret[..len].copy_from_slice(&secret[..len]);
        let known_public = self
            .known_static
            .as_ref()
            .filter(|known| bool::from(known.secret().ct_eq(&*self.secret)))
            .map(|known| *known.public());
        self.public = match known_public {
            Some(public) => public,
            None => MontgomeryPoint::mul_base_clamped(*self.secret).to_bytes(),
        };
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        DH_LEN
    }

    fn priv_len(&self) -> usize {
        DH_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        self.set_secret(privkey);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut fresh = Zeroizing::new([0u8; DH_LEN]);
        rng.try_fill_bytes(fresh.as_mut_slice())?;
        self.known_static = None;
        self.set_secret(fresh.as_slice());
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_slice()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let (Some(peer), Some(out)) = (pubkey.get(..DH_LEN), out.get_mut(..DH_LEN)) else {
            return Err(snow::Error::Dh);
        };
        let mut peer_bytes = [0u8; DH_LEN];
        peer_bytes.copy_from_slice(peer);
        let mut shared = Zeroizing::new(
            MontgomeryPoint(peer_bytes)
                .mul_clamped(*self.secret)
                .to_bytes(),
        );
        // A low-order peer key yields the all-zero output (RFC 7748 §6.1): refuse it
        // so that neither side's contribution can be cancelled.
        if bool::from(shared.ct_eq(&[0u8; DH_LEN])) {
            shared.zeroize();
            return Err(snow::Error::Dh);
        }
        out.copy_from_slice(shared.as_slice());
        Ok(())
    }
}
