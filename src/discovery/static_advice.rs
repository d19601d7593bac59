//! The parts of every assist response that change only with the long-term keys.

use std::sync::Arc;

use serde_json::value::RawValue;

/// The parts of every assist response that change only with the long-term keys (in
/// cluster mode, when another keyring is adopted), encoded to JSON once per keyring:
/// the public keys are kilobytes of hex.
pub struct StaticAdvice {
    pub kem_public_hex: Option<Arc<RawValue>>,
    pub signature_public_hex: Arc<RawValue>,
}

impl StaticAdvice {
    pub fn new(kem_public_hex: Option<&str>, signature_public_hex: &str) -> Self {
        let encode = |s: &str| -> Arc<RawValue> {
            serde_json::value::to_raw_value(s)
                .map(Arc::from)
                .unwrap_or_else(|_| Arc::from(RawValue::NULL.to_owned()))
        };
        Self {
            kem_public_hex: kem_public_hex.map(encode),
            signature_public_hex: encode(signature_public_hex),
        }
    }
}
