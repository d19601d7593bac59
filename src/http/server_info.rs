//! `GET /api/server-info`: serves the document [`crate::discovery::server_info`] rendered
//! and signed for the current keys, from the key snapshot, as bytes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::discovery::ServerInfo;
use crate::state::AppState;

/// Discovery document: keys, algorithms, endpoints and limits, signed with ML-DSA-65.
#[utoipa::path(
    get,
    path = "/api/server-info",
    responses((status = 200, description = "Server discovery document", body = ServerInfo))
)]
pub async fn get_server_info(State(state): State<Arc<AppState>>) -> Response {
    let body = state.keys().server_info.clone();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
