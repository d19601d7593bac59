//! The assist request and response as they travel (docs/protocol.md §2, §3).

use std::sync::Arc;

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, Unexpected, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::ice::candidates::LiteCandidate;

// The ranges below are what `request::validate` enforces: the OpenAPI document states
// exactly what the daemon accepts (tests/schemathesis checks the two agree).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AssistRequest {
    /// Device id of the peer (≤ 128 characters).
    #[schema(max_length = 128)]
    pub peer_hint: Option<String>,
    /// Candidate paths for multipath; default: the configured transports. Their
    /// effective ids (given, or `path-<n>`) must be distinct.
    #[schema(max_items = 8)]
    #[serde(default, deserialize_with = "optional_objects")]
    pub paths: Option<Vec<PathHint>>,
    /// List REALITY transports first in `transports`.
    pub prefer_reality: Option<bool>,
    #[serde(default, deserialize_with = "optional_object")]
    pub fec: Option<FecHint>,
    /// 1–8, default 2.
    #[schema(minimum = 1, maximum = 8)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub min_paths: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathHint {
    /// Hostname or IP address.
    #[schema(schema_with = host_schema)]
    pub address: String,
    /// 1–65535.
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(deserialize_with = "integer")]
    pub port: i64,
    /// Default `path-<n>` (1-based position).
    #[schema(min_length = 1, max_length = 64)]
    pub id: Option<String>,
    pub server_name: Option<String>,
    /// Lower is preferred; default 100.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub priority: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FecHint {
    /// 256–9000, default 1152.
    #[schema(minimum = 256, maximum = 9000)]
    #[serde(default, deserialize_with = "optional_integer")]
    pub mtu: Option<i64>,
    /// 0.0–1.0, default 0.35.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub repair_overhead: Option<f64>,
}

// serde's derive reads a struct from a positional array as well as from an object, and
// refuses `1.0` where it wants an integer; the contract (docs/protocol.md §2) and JSON
// Schema, which the OpenAPI document speaks, say the opposite of both.

/// A struct read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMaps(PhantomData)).map(Object)
    }
}

fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0))
}

fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let items = Option::<Vec<Object<T>>>::deserialize(d)?;
    Ok(items.map(|items| items.into_iter().map(|o| o.0).collect()))
}

/// A JSON number with no fractional part (`5` or `5.0`) that fits `T`.
fn integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    });
    whole.and_then(|v| T::try_from(v).ok()).ok_or_else(|| {
        D::Error::invalid_value(Unexpected::Other(&n.to_string()), &"an integer in range")
    })
}

fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Integer<T: TryFrom<i64>>(#[serde(deserialize_with = "integer")] T);
    Ok(Option::<Integer<T>>::deserialize(d)?.map(|i| i.0))
}

/// A DNS name as `config::is_host` accepts it (labels of letters, digits and inner
/// hyphens, up to 63 each, an optional final dot; IPv4 addresses match too), or an IPv6
/// address.
fn host_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
    };
    const LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(253))
        .pattern(Some(format!("^{LABEL}(\\.{LABEL})*\\.?$")));
    let ipv6 = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6)));
    Schema::AnyOf(AnyOfBuilder::new().item(name).item(ipv6).build())
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
