//! `GET /api/ice-servers`: just what `RTCPeerConnection({iceServers})` takes, with fresh
//! TURN credentials, for applications that want nothing else of assist (the shape of the
//! credential APIs of hosted TURN services).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use rand::RngExt as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::{Peer, admit_credentials, bearer_token};
use super::assist::wire::IceServer;
use super::turn_credentials;
use crate::state::AppState;
use crate::time::{rfc3339, unix_now};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServersResponse {
    pub ice_servers: Vec<IceServer>,
    /// Seconds the TURN credentials are valid for.
    pub ttl: u32,
    /// When they expire (RFC 3339).
    #[serde(rename = "expires_at")]
    pub expires_at: String,
}

/// ICE servers for `RTCPeerConnection`, with TURN credentials.
#[utoipa::path(
    get,
    path = "/api/ice-servers",
    responses(
        (status = 200, description = "ICE servers", body = IceServersResponse),
        (status = 401, description = "Access token missing (with `[auth] required`) or invalid", content_type = "application/problem+json"),
        (status = 429, description = "Over the per-source limit of the credential routes", content_type = "application/problem+json"),
    )
)]
pub async fn get_ice_servers(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = admit_credentials(&state, peer, bearer_token(&headers)) {
        return refusal.into_response();
    }
    let now = unix_now();
    let user = hex::encode(rand::rng().random::<[u8; 8]>());
    let minted = turn_credentials::mint(&state, &state.turn, &user, now);
    let ttl = state.config.ice.turn_ttl;
    Json(IceServersResponse {
        ice_servers: turn_credentials::ice_servers(&state, &minted),
        ttl,
        expires_at: rfc3339(now.saturating_add(u64::from(ttl))),
    })
    .into_response()
}
