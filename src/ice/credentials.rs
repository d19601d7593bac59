//! Stateless ICE credentials (docs/protocol.md §3) and TURN REST credentials.
//!
//! The ufrag carries its own expiry and the password is an HMAC of the ufrag, so any
//! node holding the same ICE secret validates any credential without shared state.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Domain-separation label for ICE passwords.
const ICE_LABEL: &[u8] = b"commucat-ice-v1:";
/// Raw ufrag: 4-byte expiry followed by `UFRAG_RANDOM_LEN` random bytes.
const UFRAG_RAW_LEN: usize = 12;
/// Random bytes in a ufrag.
pub const UFRAG_RANDOM_LEN: usize = 8;
/// Base64 (no padding) of 12 bytes.
pub(crate) const UFRAG_LEN: usize = 16;
/// ICE passwords are truncated to this many base64 characters.
pub(crate) const PASSWORD_LEN: usize = 32;

/// The 32-byte secret that derives ICE passwords.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IceSecret([u8; 32]);

impl IceSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ICE password for `ufrag`; the key for short-term STUN authentication.
    pub fn password_for(&self, ufrag: &str) -> IcePassword {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(ICE_LABEL);
        mac.update(ufrag.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut encoded = [0u8; 43];
        let written = STANDARD_NO_PAD
            .encode_slice(digest, &mut encoded)
            .expect("43 bytes hold base64 of 32 bytes");
        debug_assert_eq!(written, 43);
        let mut password = [0u8; PASSWORD_LEN];
        password.copy_from_slice(&encoded[..PASSWORD_LEN]);
        encoded.zeroize();
        IcePassword(password)
    }

    /// Issues a fresh credential that expires `ttl_secs` after `now_unix`. `random`
    /// makes the ufrag unique: the caller draws it from a CSPRNG (e.g.
    /// `rand::random()`); tests and fuzzing pass fixed bytes.
    pub fn issue(
        &self,
        now_unix: u64,
        ttl_secs: u32,
        random: [u8; UFRAG_RANDOM_LEN],
    ) -> IceCredential {
        let expiry = now_unix
            .saturating_add(u64::from(ttl_secs))
            .min(u64::from(u32::MAX)) as u32;
        let mut raw = [0u8; UFRAG_RAW_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&random);
        let ufrag = STANDARD_NO_PAD.encode(raw);
        let password = self.password_for(&ufrag);
        IceCredential {
            ufrag,
            password,
            expires_at: u64::from(expiry),
        }
    }
}

impl std::fmt::Debug for IceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IceSecret(<redacted>)")
    }
}

/// The ICE secret a long-running task verifies with, replaceable while it runs: in
/// cluster mode a keyring imported with `--force` brings another secret, and the STUN
/// responder must switch to it together with assist (docs/cluster.md). Clones share
/// the one value.
///
/// The replaced secret stays accepted until the credentials it issued have expired, so
/// that ICE pairs already checked against the daemon's candidate (consent checks every
/// few seconds, RFC 7675) survive the swap; new credentials come from the new secret.
#[derive(Clone)]
pub struct SharedIceSecret(Arc<ArcSwap<Secrets>>);

struct Secrets {
    current: Arc<IceSecret>,
    /// The replaced secret and the last second its credentials are accepted.
    previous: Option<(Arc<IceSecret>, u64)>,
}

impl SharedIceSecret {
    pub fn new(secret: Arc<IceSecret>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(Secrets {
            current: secret,
            previous: None,
        })))
    }

    /// The secret credentials are issued with now.
    pub fn load(&self) -> Arc<IceSecret> {
        self.0.load().current.clone()
    }

    /// From now on every clone issues and verifies with `secret`; the one it replaces
    /// is still accepted up to `previous_until` (unix seconds: the expiry of the last
    /// credential it can have issued). The same secret again changes nothing.
    pub fn replace(&self, secret: Arc<IceSecret>, previous_until: u64) {
        let current = self.0.load();
        if bool::from(current.current.0.ct_eq(&secret.0)) {
            return;
        }
        self.0.store(Arc::new(Secrets {
            previous: Some((current.current.clone(), previous_until)),
            current: secret,
        }));
    }

    /// The passwords a check of `ufrag` at `now_unix` may match: the current secret's,
    /// then the replaced secret's while it is accepted. Empty for an expired or
    /// malformed `ufrag`.
    pub(crate) fn passwords(&self, ufrag: &str, now_unix: u64) -> [Option<IcePassword>; 2] {
        let secrets = self.0.load();
        let previous = secrets
            .previous
            .as_ref()
            .filter(|(_, until)| now_unix <= *until)
            .and_then(|(secret, _)| password_if_valid(secret, ufrag, now_unix));
        [
            password_if_valid(&secrets.current, ufrag, now_unix),
            previous,
        ]
    }
}

impl From<IceSecret> for SharedIceSecret {
    fn from(secret: IceSecret) -> Self {
        Self::new(Arc::new(secret))
    }
}

impl std::fmt::Debug for SharedIceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedIceSecret(<redacted>)")
    }
}

/// An ICE password: 32 base64 characters, used as the STUN short-term key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct IcePassword([u8; PASSWORD_LEN]);

impl IcePassword {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

impl std::fmt::Debug for IcePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IcePassword(<redacted>)")
    }
}

/// A freshly issued ICE credential.
#[derive(Debug, Clone)]
pub struct IceCredential {
    pub ufrag: String,
    pub password: IcePassword,
    pub expires_at: u64,
}

/// The expiry (unix seconds) embedded in a ufrag, or `None` if it is not one of ours.
pub fn ufrag_expiry(ufrag: &str) -> Option<u64> {
    if ufrag.len() != UFRAG_LEN {
        return None;
    }
    let mut raw = [0u8; UFRAG_RAW_LEN];
    let n = STANDARD_NO_PAD.decode_slice(ufrag, &mut raw).ok()?;
    if n != UFRAG_RAW_LEN {
        return None;
    }
    Some(u64::from(u32::from_be_bytes([
        raw[0], raw[1], raw[2], raw[3],
    ])))
}

/// Validates `ufrag` and returns its password if it has not expired at `now_unix`.
pub(crate) fn password_if_valid(
    secret: &IceSecret,
    ufrag: &str,
    now_unix: u64,
) -> Option<IcePassword> {
    let expiry = ufrag_expiry(ufrag)?;
    (now_unix <= expiry).then(|| secret.password_for(ufrag))
}

/// The coturn `use-auth-secret` credential: base64(HMAC-SHA1(secret, username)).
pub fn turn_rest_credential(secret: &[u8], username: &str) -> String {
    let mut mac = <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(secret)
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The TURN REST username `"<expiry>:<ufrag>"`.
pub fn turn_rest_username(expiry_unix: u64, ufrag: &str) -> String {
    format!("{expiry_unix}:{ufrag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> IceSecret {
        IceSecret::from_bytes([7u8; 32])
    }

    #[test]
    fn ufrag_embeds_expiry_and_has_fixed_length() {
        let cred = secret().issue(1_700_000_000, 600, [1; UFRAG_RANDOM_LEN]);
        assert_eq!(cred.ufrag.len(), UFRAG_LEN);
        assert_eq!(cred.expires_at, 1_700_000_600);
        assert_eq!(ufrag_expiry(&cred.ufrag), Some(1_700_000_600));
        assert_eq!(cred.password.as_str().len(), PASSWORD_LEN);
    }

    #[test]
    fn ufrag_is_the_expiry_and_the_random_bytes() {
        let cred = secret().issue(0x0102_0304, 0, [0xAB; UFRAG_RANDOM_LEN]);
        let raw = STANDARD_NO_PAD.decode(&cred.ufrag).unwrap();
        assert_eq!(raw[..4], [1, 2, 3, 4]);
        assert_eq!(raw[4..], [0xAB; UFRAG_RANDOM_LEN]);
        // Same inputs, same credential: nothing random is drawn inside.
        let again = secret().issue(0x0102_0304, 0, [0xAB; UFRAG_RANDOM_LEN]);
        assert_eq!(again.ufrag, cred.ufrag);
        assert_eq!(again.password, cred.password);
    }

    #[test]
    fn password_matches_hmac_definition() {
        let s = secret();
        let ufrag = "AAAAAAAAAAAAAAAA";
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(b"commucat-ice-v1:AAAAAAAAAAAAAAAA");
        let full = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(s.password_for(ufrag).as_str(), &full[..32]);
    }

    #[test]
    fn a_replacing_secret_reaches_every_clone_and_the_old_one_lasts_its_credentials() {
        let shared = SharedIceSecret::from(secret());
        let clone = shared.clone();
        let cred = shared.load().issue(1000, 10, [3; UFRAG_RANDOM_LEN]);
        shared.replace(Arc::new(IceSecret::from_bytes([8u8; 32])), 1010);
        assert_eq!(clone.load().as_bytes(), &[8u8; 32]);
        let matches = |now| {
            clone
                .passwords(&cred.ufrag, now)
                .into_iter()
                .flatten()
                .any(|p| p == cred.password)
        };
        // The old secret's credential: accepted until the replaced secret's deadline.
        assert!(matches(1000));
        assert!(matches(1010));
        // A new credential verifies with the new secret first.
        let fresh = clone.load().issue(1005, 10, [4; UFRAG_RANDOM_LEN]);
        assert_eq!(clone.passwords(&fresh.ufrag, 1005)[0], Some(fresh.password));
        // Past the deadline the old secret is gone (even for an unexpired ufrag).
        let long = IceSecret::from_bytes([7u8; 32]).issue(1000, 100, [5; UFRAG_RANDOM_LEN]);
        let old_only = |now| clone.passwords(&long.ufrag, now)[1].clone();
        assert_eq!(old_only(1010), Some(long.password.clone()));
        assert_eq!(old_only(1011), None);
        // Replacing with the same secret keeps the grace as it was.
        shared.replace(Arc::new(IceSecret::from_bytes([8u8; 32])), 5000);
        assert_eq!(old_only(1011), None);
    }

    #[test]
    fn expired_or_foreign_ufrags_are_rejected() {
        let s = secret();
        let cred = s.issue(1000, 10, [2; UFRAG_RANDOM_LEN]);
        assert!(password_if_valid(&s, &cred.ufrag, 1010).is_some());
        assert!(password_if_valid(&s, &cred.ufrag, 1011).is_none());
        assert!(password_if_valid(&s, "short", 0).is_none());
        assert!(password_if_valid(&s, "!!!!!!!!!!!!!!!!", 0).is_none());
    }

    #[test]
    fn turn_credential_is_rfc2104_hmac_sha1() {
        // RFC 2202 test case 2.
        let got = turn_rest_credential(b"Jefe", "what do ya want for nothing?");
        let want =
            STANDARD.encode(hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap());
        assert_eq!(got, want);
    }
}
