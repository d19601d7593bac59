//! The server-info document (docs/protocol.md §2): its wire types, shared by the daemon
//! and the client, and its rendering and ML-DSA-65 signing. The document is rendered and
//! signed once per key change and served as bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Config;
use crate::keys::bundle::{BundleNoiseKey, key_bundle_text, sign_hex};
use crate::keys::{IdentityKeys, NoiseKeyRing};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub domain: String,
    /// Public key of the newest Noise static key: the one new clients should use.
    pub noise_public: String,
    /// Every Noise key that has not expired, oldest first.
    pub noise_keys: Vec<NoiseKeyInfo>,
    /// ML-DSA-65 public key that signs device certificates (hex).
    pub device_ca_public: String,
    pub supported_patterns: Vec<String>,
    pub supported_versions: Vec<u8>,
    pub session: SessionInfo,
    pub presence: PresenceInfo,
    pub device_rotation: DeviceRotationInfo,
    pub pairing: PairingInfo,
    pub post_quantum: PostQuantumInfo,
    pub endpoints: EndpointsInfo,
    pub limits: LimitsInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoiseKeyInfo {
    pub version: u32,
    pub public: String,
    pub valid_after: String,
    pub rotates_at: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub ttl_seconds: u64,
    pub keepalive_interval: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceInfo {
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceRotationInfo {
    pub enabled: bool,
    pub min_interval_seconds: u64,
    pub proof_ttl_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairingInfo {
    pub auto_approve: bool,
    pub pairing_ttl: u64,
    pub max_auto_devices: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostQuantumInfo {
    /// Whether the ML-KEM-768 hybrid handshake is available.
    pub enabled: bool,
    /// `ML-KEM-768`; absent when PQ is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_algorithm: Option<String>,
    pub signature_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_public_hex: Option<String>,
    pub signature_public_hex: String,
    /// ML-DSA-65 over the key bundle text (docs/protocol.md §2.3).
    pub key_bundle_signature_hex: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointsInfo {
    /// WebSocket URL of `/api/connect`.
    pub connect: String,
    /// `stun:host:port` URLs of the ICE-lite responder.
    pub stun: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LimitsInfo {
    pub max_request_body_bytes: u32,
    pub max_signal_body_bytes: u32,
    pub max_relay_data_bytes: u32,
    pub relay_bytes_per_second: u32,
    pub max_sessions: u32,
    pub handshake_timeout_seconds: u64,
}

impl ServerInfo {
    /// The key bundle text this document's signature covers (docs/protocol.md §2.3),
    /// rebuilt from its own fields: what a client verifies.
    pub fn key_bundle_text(&self) -> String {
        let keys: Vec<BundleNoiseKey> = self
            .noise_keys
            .iter()
            .map(|k| BundleNoiseKey {
                version: k.version,
                public_hex: k.public.clone(),
                valid_after: k.valid_after.clone(),
                rotates_at: k.rotates_at.clone(),
                expires_at: k.expires_at.clone(),
            })
            .collect();
        key_bundle_text(
            &self.domain,
            &keys,
            self.post_quantum.kem_public_hex.as_deref(),
        )
    }
}

/// What the document is rendered from, besides the Noise keys: each part from the layer
/// that owns it (the limits from the layers that enforce them).
pub struct Sources<'a> {
    pub config: &'a Config,
    /// `None` when PQ is off.
    pub kem_public_hex: Option<&'a str>,
    pub identity: &'a IdentityKeys,
    pub connect_url: &'a str,
    pub stun_urls: &'a [String],
    pub limits: &'a LimitsInfo,
}

/// The document could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the server-info document: {0}")]
pub struct RenderError(#[from] serde_json::Error);

/// The key bundle entries for `ring` at `now`, in `noise_keys` order.
pub fn bundle_keys(ring: &NoiseKeyRing, now: u64) -> Vec<BundleNoiseKey> {
    ring.listed(now)
        .map(|k| {
            BundleNoiseKey::from_times(
                k.version,
                k.public_hex(),
                k.valid_after,
                k.rotates_at,
                k.expires_at,
            )
        })
        .collect()
}

/// Renders and signs the document for `ring` at `now`.
pub fn render(src: &Sources<'_>, ring: &NoiseKeyRing, now: u64) -> Result<Bytes, RenderError> {
    let info = build(src, ring, now);
    Ok(Bytes::from(serde_json::to_vec(&info)?))
}

fn build(src: &Sources<'_>, ring: &NoiseKeyRing, now: u64) -> ServerInfo {
    let config = src.config;
    let keys = bundle_keys(ring, now);
    let kem_hex = src.kem_public_hex.map(str::to_string);
    let identity = src.identity;
    let bundle = key_bundle_text(&config.server.domain, &keys, kem_hex.as_deref());
    let signature = sign_hex(&identity.signing, bundle.as_bytes());
    let noise_public = ring
        .listed(now)
        .filter(|k| k.usable_at(now))
        .last()
        .map(|k| k.public_hex())
        .unwrap_or_default();
    let pq = kem_hex.is_some();
    ServerInfo {
        domain: config.server.domain.clone(),
        noise_public,
        noise_keys: keys
            .into_iter()
            .map(|k| NoiseKeyInfo {
                version: k.version,
                public: k.public_hex,
                valid_after: k.valid_after,
                rotates_at: k.rotates_at,
                expires_at: k.expires_at,
            })
            .collect(),
        device_ca_public: identity.public_hex.clone(),
        supported_patterns: vec!["XK".into(), "IK".into()],
        supported_versions: if pq { vec![1, 2] } else { vec![1] },
        session: SessionInfo {
            ttl_seconds: config.session.ttl_seconds,
            keepalive_interval: config.session.keepalive_interval,
        },
        presence: PresenceInfo {
            ttl_seconds: config.presence.ttl_seconds,
        },
        device_rotation: DeviceRotationInfo {
            enabled: config.device_rotation.enabled,
            min_interval_seconds: config.device_rotation.min_interval_seconds,
            proof_ttl_seconds: config.device_rotation.proof_ttl_seconds,
        },
        pairing: PairingInfo {
            auto_approve: config.pairing.auto_approve,
            pairing_ttl: config.pairing.pairing_ttl,
            max_auto_devices: config.pairing.max_auto_devices,
        },
        post_quantum: PostQuantumInfo {
            enabled: pq,
            kem_algorithm: pq.then(|| "ML-KEM-768".to_string()),
            signature_algorithm: "ML-DSA-65".into(),
            kem_public_hex: kem_hex,
            signature_public_hex: identity.public_hex.clone(),
            key_bundle_signature_hex: signature,
        },
        endpoints: EndpointsInfo {
            connect: src.connect_url.to_string(),
            stun: src.stun_urls.to_vec(),
        },
        limits: src.limits.clone(),
    }
}
