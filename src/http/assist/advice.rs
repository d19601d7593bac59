//! Building the advice for one validated request from the shared state.

use axum::http::StatusCode;

use super::request::{AssistParams, Path};
use super::wire::*;
use crate::config::{SERVER_PATH_ID, TransportKind};
use crate::http::problem::Problem;
use crate::http::turn_credentials;
use crate::ice::candidates::host_candidates;
use crate::ice::credentials::IceSecret;
use crate::state::{AppState, KeySnapshot};
use crate::time::{rfc3339, unix_now};

pub(super) fn build_response(
    state: &AppState,
    params: AssistParams,
) -> Result<AssistResponse, Problem> {
    let now = unix_now();
    let paths = params.paths.unwrap_or_else(|| configured_paths(state));
    // One snapshot for the whole response: its Noise key, public keys and ICE
    // credential all belong to one keyring, even while a cluster adopts another.
    let snapshot = state.keys();
    let static_advice = &snapshot.long_term.static_advice;
    Ok(AssistResponse {
        noise: noise_advice(state, &snapshot, now)?,
        pq: static_advice.kem_public_hex.as_ref().map(|kem| PqAdvice {
            identity_public_hex: "",
            signed_prekey_public_hex: "",
            kem_public_hex: kem.clone(),
            signature_public_hex: static_advice.signature_public_hex.clone(),
        }),
        ice: ice_advice(state, &snapshot.long_term.ice_secret, now),
        transports: transports(state, params.prefer_reality),
        multipath: multipath(state, paths, params.mtu, params.overhead)?,
        obfuscation: obfuscation(state),
        security: security(state),
    })
}

fn noise_advice(
    state: &AppState,
    snapshot: &KeySnapshot,
    now: u64,
) -> Result<NoiseAdvice, Problem> {
    let key = snapshot
        .advertised
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

fn ice_advice(state: &AppState, secret: &IceSecret, now: u64) -> IceAdvice {
    let ice = &state.config.ice;
    let credential = secret.issue(now, ice.credential_ttl, rand::random());
    let minted = turn_credentials::mint(state, &state.turn, &credential.ufrag, now);
    let ice_servers = turn_credentials::ice_servers(state, &minted);
    let servers = minted
        .into_iter()
        .map(|m| TurnAdvice {
            urls: m.server.urls.clone(),
            ttl_secs: m.issued.expires_at.map(|_| ice.turn_ttl),
            expires_at: m.issued.expires_at.map(rfc3339),
            username: m.issued.username,
            credential: m.issued.credential,
            realm: m.server.realm.clone(),
        })
        .collect();
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
