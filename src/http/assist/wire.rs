//! The assist request and response as they travel (docs/protocol.md §2, §3).

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::ice::candidates::LiteCandidate;

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AssistRequest {
    /// Device id of the peer (≤ 128 characters).
    pub peer_hint: Option<String>,
    /// Candidate paths for multipath; default: the configured transports.
    pub paths: Option<Vec<PathHint>>,
    /// List REALITY transports first in `transports`.
    pub prefer_reality: Option<bool>,
    pub fec: Option<FecHint>,
    /// 1–8, default 2.
    pub min_paths: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathHint {
    /// Hostname or IP address.
    pub address: String,
    /// 1–65535.
    pub port: i64,
    /// Default `path-<n>` (1-based position).
    pub id: Option<String>,
    pub server_name: Option<String>,
    /// Lower is preferred; default 100.
    pub priority: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FecHint {
    /// 256–9000, default 1152.
    pub mtu: Option<i64>,
    /// 0.0–1.0, default 0.35.
    pub repair_overhead: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistResponse {
    pub noise: NoiseAdvice,
    /// `null` when PQ is off.
    pub pq: Option<PqAdvice>,
    pub ice: IceAdvice,
    pub transports: Vec<TransportAdvice>,
    pub multipath: MultipathAdvice,
    pub obfuscation: ObfuscationAdvice,
    pub security: SecurityAdvice,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoiseAdvice {
    pub pattern: &'static str,
    pub prologue_hex: String,
    /// A fresh random X25519 private key for a throwaway session; not a device identity
    /// and never stored by the server.
    pub device_seed_hex: String,
    pub static_public_hex: String,
    pub server_static_public_hex: String,
    pub key_version: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PqAdvice {
    /// Filled in by the client in full PQXDH; the server has none to offer.
    pub identity_public_hex: &'static str,
    /// Filled in by the client in full PQXDH; the server has none to offer.
    pub signed_prekey_public_hex: &'static str,
    /// The server's ML-KEM-768 encapsulation key (hex).
    #[schema(value_type = String)]
    pub kem_public_hex: Arc<RawValue>,
    /// The server's ML-DSA-65 identity key (hex).
    #[schema(value_type = String)]
    pub signature_public_hex: Arc<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IceAdvice {
    pub username_fragment: String,
    pub password: String,
    pub ttl_secs: u32,
    pub keepalive_interval_secs: u32,
    pub trickle: bool,
    pub servers: Vec<TurnAdvice>,
    pub ice_servers: Vec<IceServer>,
    pub lite_candidates: Vec<LiteCandidate>,
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TurnAdvice {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    /// `null` for static credentials, which do not expire.
    pub ttl_secs: Option<u32>,
    pub expires_at: Option<String>,
    pub realm: Option<String>,
}

/// One entry usable as is in `RTCPeerConnection({iceServers})`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransportAdvice {
    pub path_id: String,
    pub transport: &'static str,
    pub address: String,
    pub port: u16,
    pub priority: u32,
    pub resistance: &'static str,
    pub latency: &'static str,
    pub throughput: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MultipathAdvice {
    pub fec_mtu: u16,
    pub fec_overhead: f64,
    pub primary_path: String,
    /// Packets per path id, in path order: `{"<id>": {"total": n, "repair": n}}`.
    #[schema(value_type = Object)]
    pub sample_segments: SampleSegments,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentCount {
    pub total: u32,
    pub repair: u32,
}

/// An object whose keys keep the paths' order.
#[derive(Debug)]
pub struct SampleSegments(pub Vec<(String, SegmentCount)>);

impl Serialize for SampleSegments {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, count) in &self.0 {
            map.serialize_entry(id, count)?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObfuscationAdvice {
    pub reality_fingerprint_hex: Option<String>,
    pub domain_fronting: bool,
    pub protocol_mimicry: bool,
    pub tor_bridge: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecurityAdvice {
    pub noise_handshakes: u64,
    pub pq_handshakes: u64,
    /// The server performs no zero-knowledge proofs: always 0.
    pub zkp_proofs: u64,
    pub noise_rotations: u64,
    pub uptime_seconds: u64,
    /// The server has no censorship detection: always 0.
    pub censorship_deflections: u64,
}
