//! The signed key bundle of `/api/server-info` (docs/protocol.md §2.3) and device certificates.

use ml_dsa::signature::{Signer as _, Verifier as _};
use ml_dsa::{EncodedVerifyingKey, MlDsa65, Signature, SigningKey, VerifyingKey};

use crate::time::rfc3339;

/// One `noise=` line of the bundle, as published in `noise_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleNoiseKey {
    pub version: u32,
    pub public_hex: String,
    pub valid_after: String,
    pub rotates_at: String,
    pub expires_at: String,
}

impl BundleNoiseKey {
    pub fn from_times(
        version: u32,
        public_hex: String,
        valid_after: u64,
        rotates_at: u64,
        expires_at: u64,
    ) -> Self {
        Self {
            version,
            public_hex,
            valid_after: rfc3339(valid_after),
            rotates_at: rfc3339(rotates_at),
            expires_at: rfc3339(expires_at),
        }
    }
}

/// The exact bytes that `key_bundle_signature_hex` signs.
pub fn key_bundle_text(
    domain: &str,
    noise_keys: &[BundleNoiseKey],
    kem_public_hex: Option<&str>,
) -> String {
    let mut lines = Vec::with_capacity(noise_keys.len() + 3);
    lines.push("commucat-keybundle-v1".to_string());
    lines.push(format!("domain={domain}"));
    for k in noise_keys {
        lines.push(format!(
            "noise={},{},{},{},{}",
            k.version, k.public_hex, k.valid_after, k.rotates_at, k.expires_at
        ));
    }
    lines.push(format!("kem={}", kem_public_hex.unwrap_or("")));
    lines.join("\n")
}

/// ML-DSA-65 signature (deterministic, empty context), lower hex.
pub fn sign_hex(key: &SigningKey<MlDsa65>, message: &[u8]) -> String {
    let signature: Signature<MlDsa65> = key.sign(message);
    hex::encode(signature.encode())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("public key is not {0} hex bytes")]
    PublicKeyLength(usize),
    #[error("signature is not {0} hex bytes")]
    SignatureLength(usize),
    #[error("signature does not verify")]
    Invalid,
}

/// Decodes an ML-DSA-65 verifying key from hex.
pub fn decode_verifying_key(public_hex: &str) -> Result<VerifyingKey<MlDsa65>, VerifyError> {
    let expected = std::mem::size_of::<EncodedVerifyingKey<MlDsa65>>();
    let bytes = hex::decode(public_hex).map_err(|_| VerifyError::PublicKeyLength(expected))?;
    let encoded = EncodedVerifyingKey::<MlDsa65>::try_from(bytes.as_slice())
        .map_err(|_| VerifyError::PublicKeyLength(expected))?;
    Ok(VerifyingKey::<MlDsa65>::decode(&encoded))
}

/// Verifies a hex ML-DSA-65 signature over `message`.
pub fn verify_hex(
    key: &VerifyingKey<MlDsa65>,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), VerifyError> {
    let bytes = hex::decode(signature_hex).map_err(|_| VerifyError::SignatureLength(3309))?;
    let signature = Signature::<MlDsa65>::try_from(bytes.as_slice())
        .map_err(|_| VerifyError::SignatureLength(3309))?;
    key.verify(message, &signature)
        .map_err(|_| VerifyError::Invalid)
}

/// The exact bytes a device certificate signs (docs/protocol.md §4.9, `certify`).
pub fn device_certificate_text(
    domain: &str,
    device_id: &str,
    not_before: &str,
    not_after: &str,
) -> String {
    format!(
        "commucat-device-cert-v1\ndomain={domain}\ndevice={device_id}\nnot_before={not_before}\nnot_after={not_after}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeys;

    #[test]
    fn bundle_text_matches_contract_layout() {
        let keys = vec![BundleNoiseKey::from_times(1, "ab".into(), 0, 60, 120)];
        let text = key_bundle_text("example.org", &keys, None);
        assert_eq!(
            text,
            "commucat-keybundle-v1\ndomain=example.org\n\
             noise=1,ab,1970-01-01T00:00:00Z,1970-01-01T00:01:00Z,1970-01-01T00:02:00Z\nkem="
        );
    }

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let id = IdentityKeys::from_seed(&[9u8; 32]);
        let sig = sign_hex(&id.signing, b"hello");
        let vk = decode_verifying_key(&id.public_hex).unwrap();
        assert_eq!(verify_hex(&vk, b"hello", &sig), Ok(()));
        assert_eq!(verify_hex(&vk, b"hellO", &sig), Err(VerifyError::Invalid));
        assert!(verify_hex(&vk, b"hello", "abcd").is_err());
        assert!(decode_verifying_key("00").is_err());
    }
}
