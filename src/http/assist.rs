//! `GET`/`POST /api/p2p/assist`: per-client P2P advice (PROTOCOL.md §2 and §3).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::problem::Problem;
use super::server_info::MAX_BODY_BYTES;
use crate::config::{TransportKind, is_host};
use crate::ice::candidates::{LiteCandidate, host_candidates};
use crate::metrics::{KindLabels, MethodLabels};
use crate::state::AppState;
use crate::timefmt::{rfc3339, unix_now};

/// Path id of the daemon's own WebSocket endpoint in `transports` and `multipath`.
pub const SERVER_PATH_ID: &str = "commucat-ws";
const DEFAULT_MTU: u16 = 1152;
const DEFAULT_OVERHEAD: f64 = 0.35;
const MAX_PATHS: usize = 8;
const MAX_PEER_HINT_CHARS: usize = 128;

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

/// The parts of every assist response that never change while the process runs,
/// encoded to JSON once: the public keys are kilobytes of hex.
pub struct StaticAdvice {
    kem_public_hex: Option<Arc<RawValue>>,
    signature_public_hex: Arc<RawValue>,
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

/// Validated request parameters.
struct AssistParams {
    paths: Option<Vec<Path>>,
    prefer_reality: bool,
    mtu: u16,
    overhead: f64,
}

/// A path for multipath planning.
struct Path {
    id: String,
    priority: u32,
}

/// P2P advice with the configured transports and default FEC parameters.
#[utoipa::path(
    get,
    path = "/api/p2p/assist",
    responses(
        (status = 200, description = "P2P advice", body = AssistResponse),
    )
)]
pub async fn get_assist(
    State(state): State<Arc<AppState>>,
) -> Result<Json<AssistResponse>, Problem> {
    count_assist(&state, "GET");
    let params = validate(AssistRequest::default())?;
    build_response(&state, params).map(Json)
}

/// P2P advice for the given paths and FEC parameters. An empty body is the same as GET.
#[utoipa::path(
    post,
    path = "/api/p2p/assist",
    request_body(content = AssistRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "P2P advice", body = AssistResponse),
        (status = 400, description = "Invalid JSON or a value out of range; `detail` names the field", content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", content_type = "application/problem+json"),
    )
)]
pub async fn post_assist(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AssistResponse>, Problem> {
    count_assist(&state, "POST");
    let request = read_request(&headers, body).await?;
    let params = validate(request)?;
    build_response(&state, params).map(Json)
}

fn count_assist(state: &AppState, method: &'static str) {
    state
        .metrics
        .assist_requests
        .get_or_create(&MethodLabels { method })
        .inc();
}

/// Size first (413), then content type (415), then JSON (400 naming the field).
async fn read_request(headers: &HeaderMap, body: Body) -> Result<AssistRequest, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    if bytes.is_empty() {
        return Ok(AssistRequest::default());
    }
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    // serde would also accept a positional array for a struct; the contract wants an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request("body: must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.starts_with('?') {
            Problem::bad_request(format!("body: invalid JSON: {inner}"))
        } else {
            Problem::bad_request(format!("{path}: {inner}"))
        }
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

fn validate(request: AssistRequest) -> Result<AssistParams, Problem> {
    if let Some(hint) = &request.peer_hint
        && hint.chars().count() > MAX_PEER_HINT_CHARS
    {
        return Err(Problem::bad_request(format!(
            "peer_hint: longer than {MAX_PEER_HINT_CHARS} characters"
        )));
    }
    if let Some(min) = request.min_paths
        && !(1..=MAX_PATHS as i64).contains(&min)
    {
        return Err(Problem::bad_request("min_paths: must be between 1 and 8"));
    }
    let (mtu, overhead) = validate_fec(request.fec.as_ref())?;
    let paths = match request.paths {
        Some(paths) if !paths.is_empty() => Some(validate_paths(paths)?),
        _ => None,
    };
    Ok(AssistParams {
        paths,
        prefer_reality: request.prefer_reality.unwrap_or(false),
        mtu,
        overhead,
    })
}

fn validate_fec(fec: Option<&FecHint>) -> Result<(u16, f64), Problem> {
    let mtu = match fec.and_then(|f| f.mtu) {
        None => DEFAULT_MTU,
        Some(m) if (256..=9000).contains(&m) => m as u16,
        Some(_) => {
            return Err(Problem::bad_request(
                "fec.mtu: must be between 256 and 9000",
            ));
        }
    };
    let overhead = match fec.and_then(|f| f.repair_overhead) {
        None => DEFAULT_OVERHEAD,
        Some(o) if (0.0..=1.0).contains(&o) => o,
        Some(_) => {
            return Err(Problem::bad_request(
                "fec.repair_overhead: must be between 0.0 and 1.0",
            ));
        }
    };
    Ok((mtu, overhead))
}

fn validate_paths(paths: Vec<PathHint>) -> Result<Vec<Path>, Problem> {
    if paths.len() > MAX_PATHS {
        return Err(Problem::bad_request(format!(
            "paths: at most {MAX_PATHS} entries"
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(paths.len());
    for (i, p) in paths.into_iter().enumerate() {
        if !is_host(&p.address) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].address: must be a hostname or IP address"
            )));
        }
        if !(1..=65_535).contains(&p.port) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].port: must be between 1 and 65535"
            )));
        }
        let id = p.id.unwrap_or_else(|| format!("path-{}", i + 1));
        if id.is_empty() || id.chars().count() > 64 {
            return Err(Problem::bad_request(format!(
                "paths[{i}].id: must be 1 to 64 characters"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].id: duplicate id {id:?}"
            )));
        }
        out.push(Path {
            id,
            priority: p.priority.unwrap_or(100),
        });
    }
    Ok(out)
}

fn build_response(state: &AppState, params: AssistParams) -> Result<AssistResponse, Problem> {
    let now = unix_now();
    let paths = params.paths.unwrap_or_else(|| configured_paths(state));
    Ok(AssistResponse {
        noise: noise_advice(state, now)?,
        pq: state
            .static_advice
            .kem_public_hex
            .as_ref()
            .map(|kem| PqAdvice {
                identity_public_hex: "",
                signed_prekey_public_hex: "",
                kem_public_hex: kem.clone(),
                signature_public_hex: state.static_advice.signature_public_hex.clone(),
            }),
        ice: ice_advice(state, now),
        transports: transports(state, params.prefer_reality),
        multipath: multipath(state, paths, params.mtu, params.overhead)?,
        obfuscation: obfuscation(state),
        security: security(state),
    })
}

fn noise_advice(state: &AppState, now: u64) -> Result<NoiseAdvice, Problem> {
    let snapshot = state.keys();
    let key = snapshot
        .ring
        .keys()
        .iter()
        .rev()
        .find(|k| k.usable_at(now))
        .ok_or_else(|| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no usable Noise key"))?;
    let device = state.device_keys.take();
    Ok(NoiseAdvice {
        pattern: "XK",
        prologue_hex: hex::encode(state.config.crypto.prologue.as_bytes()),
        device_seed_hex: hex::encode(*device.secret),
        static_public_hex: hex::encode(device.public),
        server_static_public_hex: key.public_hex(),
        key_version: key.version,
    })
}

fn ice_advice(state: &AppState, now: u64) -> IceAdvice {
    let ice = &state.config.ice;
    let credential = state
        .static_keys
        .ice_secret
        .issue(now, ice.credential_ttl, rand::random());
    let mut servers = Vec::with_capacity(state.turn.len());
    let mut ice_servers = Vec::with_capacity(state.turn.len() + 1);
    if !state.endpoints.stun_urls.is_empty() {
        ice_servers.push(IceServer {
            urls: state.endpoints.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    for turn in &state.turn {
        let issued = turn.issue(&credential.ufrag, now, ice.turn_ttl);
        let kind = if issued.is_rest { "rest" } else { "static" };
        state
            .metrics
            .turn_credentials
            .get_or_create(&KindLabels { kind })
            .inc();
        if !turn.browser_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: turn.browser_urls.clone(),
                username: Some(issued.username.clone()),
                credential: Some(issued.credential.clone()),
            });
        }
        servers.push(TurnAdvice {
            urls: turn.urls.clone(),
            username: issued.username,
            credential: issued.credential,
            ttl_secs: issued.expires_at.map(|_| ice.turn_ttl),
            expires_at: issued.expires_at.map(rfc3339),
            realm: turn.realm.clone(),
        });
    }
    IceAdvice {
        username_fragment: credential.ufrag.clone(),
        password: credential.password.as_str().to_string(),
        ttl_secs: ice.credential_ttl,
        keepalive_interval_secs: ice.keepalive_interval,
        trickle: true,
        servers,
        ice_servers,
        lite_candidates: host_candidates(&state.endpoints.candidate_addrs),
        expires_at: rfc3339(credential.expires_at),
    }
}

/// The daemon's own WebSocket endpoint (priority 0), then the configured transports.
fn configured_paths(state: &AppState) -> Vec<Path> {
    std::iter::once(Path {
        id: SERVER_PATH_ID.into(),
        priority: 0,
    })
    .chain(state.config.transport.iter().map(|t| Path {
        id: t.id.clone(),
        priority: t.priority,
    }))
    .collect()
}

fn transport_profile(kind: TransportKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        TransportKind::Websocket => ("basic", "low", "high"),
        TransportKind::Reality => ("maximum", "low", "high"),
        TransportKind::Shadowsocks => ("enhanced", "low", "high"),
        TransportKind::QuicMasque => ("enhanced", "low", "high"),
        TransportKind::Dns => ("maximum", "high", "low"),
    }
}

fn transports(state: &AppState, prefer_reality: bool) -> Vec<TransportAdvice> {
    let (address, port) = state.endpoints.public_host_port.clone();
    let (resistance, latency, throughput) = transport_profile(TransportKind::Websocket);
    let mut list = vec![TransportAdvice {
        path_id: SERVER_PATH_ID.into(),
        transport: TransportKind::Websocket.as_str(),
        address,
        port,
        priority: 0,
        resistance,
        latency,
        throughput,
    }];
    list.extend(state.config.transport.iter().map(|t| {
        let (resistance, latency, throughput) = transport_profile(t.transport);
        TransportAdvice {
            path_id: t.id.clone(),
            transport: t.transport.as_str(),
            address: t.address.clone(),
            port: t.port,
            priority: t.priority,
            resistance,
            latency,
            throughput,
        }
    }));
    if prefer_reality {
        // Stable: REALITY entries first, everything else keeps its order.
        list.sort_by_key(|t| t.transport != TransportKind::Reality.as_str());
    }
    list
}

fn multipath(
    state: &AppState,
    mut paths: Vec<Path>,
    mtu: u16,
    overhead: f64,
) -> Result<MultipathAdvice, Problem> {
    paths.sort_by_key(|p| p.priority);
    let plan = state
        .fec_plans
        .get(mtu, overhead, paths.len())
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("FEC planning failed: {e}"),
            )
        })?;
    let primary_path = paths.first().map(|p| p.id.clone()).unwrap_or_default();
    let sample_segments = SampleSegments(
        paths
            .into_iter()
            .zip(plan.per_path.iter())
            .map(|(p, &(total, repair))| (p.id, SegmentCount { total, repair }))
            .collect(),
    );
    Ok(MultipathAdvice {
        fec_mtu: mtu,
        fec_overhead: overhead,
        primary_path,
        sample_segments,
    })
}

fn obfuscation(state: &AppState) -> ObfuscationAdvice {
    let transports = &state.config.transport;
    ObfuscationAdvice {
        reality_fingerprint_hex: transports
            .iter()
            .filter(|t| t.transport == TransportKind::Reality)
            .find_map(|t| t.reality_fingerprint.as_ref())
            .map(|fp| fp.to_ascii_lowercase()),
        domain_fronting: transports.iter().any(|t| t.domain_fronting),
        protocol_mimicry: transports.iter().any(|t| t.protocol_mimicry),
        tor_bridge: transports.iter().any(|t| t.tor_bridge),
    }
}

fn security(state: &AppState) -> SecurityAdvice {
    let m = &state.metrics;
    SecurityAdvice {
        noise_handshakes: m.noise_handshakes.get(),
        pq_handshakes: m.pq_handshakes.get(),
        zkp_proofs: 0,
        noise_rotations: m.key_rotations.get(),
        uptime_seconds: m.uptime_seconds(),
        censorship_deflections: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> AssistRequest {
        serde_json::from_str(json).unwrap()
    }

    fn detail(r: Result<AssistParams, Problem>) -> String {
        r.err().expect("should fail").detail
    }

    #[test]
    fn defaults_apply() {
        let p = validate(req("{}")).unwrap();
        assert_eq!(p.mtu, 1152);
        assert_eq!(p.overhead, 0.35);
        assert!(p.paths.is_none());
        let p = validate(req(r#"{"paths": []}"#)).unwrap();
        assert!(p.paths.is_none());
    }

    #[test]
    fn every_range_error_names_its_field() {
        assert!(detail(validate(req(r#"{"fec":{"mtu":255}}"#))).starts_with("fec.mtu"));
        assert!(detail(validate(req(r#"{"fec":{"mtu":9001}}"#))).starts_with("fec.mtu"));
        assert!(
            detail(validate(req(r#"{"fec":{"repair_overhead":1.01}}"#)))
                .starts_with("fec.repair_overhead")
        );
        assert!(detail(validate(req(r#"{"min_paths":0}"#))).starts_with("min_paths"));
        assert!(detail(validate(req(r#"{"min_paths":9}"#))).starts_with("min_paths"));
        let long = "é".repeat(129);
        assert!(
            detail(validate(req(&format!(r#"{{"peer_hint":"{long}"}}"#)))).starts_with("peer_hint")
        );
        assert!(validate(req(&format!(r#"{{"peer_hint":"{}"}}"#, "é".repeat(128)))).is_ok());
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a b","port":1}]}"#)))
                .starts_with("paths[0].address")
        );
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a","port":0}]}"#)))
                .starts_with("paths[0].port")
        );
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a","port":65536}]}"#)))
                .starts_with("paths[0].port")
        );
        assert!(
            detail(validate(req(
                r#"{"paths":[{"address":"a","port":1,"id":"x"},{"address":"b","port":2,"id":"x"}]}"#
            )))
            .starts_with("paths[1].id")
        );
        let nine = (0..9)
            .map(|i| format!(r#"{{"address":"h{i}","port":1}}"#))
            .collect::<Vec<_>>()
            .join(",");
        assert!(detail(validate(req(&format!(r#"{{"paths":[{nine}]}}"#)))).starts_with("paths"));
    }

    #[test]
    fn paths_get_default_ids_and_priorities() {
        let p = validate(req(r#"{"paths":[{"address":"a","port":1},{"address":"10.0.0.1","port":2,"id":"b","priority":5}]}"#))
            .unwrap();
        let paths = p.paths.unwrap();
        assert_eq!(paths[0].id, "path-1");
        assert_eq!(paths[0].priority, 100);
        assert_eq!(paths[1].id, "b");
    }
}
