//! The two assist routes: count, read, validate, advise.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::advice::build_response;
use super::request::{read_request, validate};
use super::wire::{AssistRequest, AssistResponse};
use crate::http::access::{Peer, admit_credentials, bearer_token};
use crate::metrics::MethodLabels;
use crate::state::AppState;

/// P2P advice with the configured transports and default FEC parameters.
#[utoipa::path(
    get,
    path = "/api/p2p/assist",
    responses(
        (status = 200, description = "P2P advice", body = AssistResponse),
        (status = 401, description = "`[auth] required` and no valid bearer token, or an invalid one", content_type = "application/problem+json"),
        (status = 429, description = "Over the per-source limit of the credential routes; `Retry-After` says when to retry", content_type = "application/problem+json"),
    )
)]
pub async fn get_assist(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<AssistResponse>, Response> {
    count_assist(&state, "GET");
    admit_credentials(&state, peer, bearer_token(&headers)).map_err(IntoResponse::into_response)?;
    let params = validate(AssistRequest::default()).map_err(IntoResponse::into_response)?;
    build_response(&state, params)
        .map(Json)
        .map_err(IntoResponse::into_response)
}

/// P2P advice for the given paths and FEC parameters. An empty body is the same as GET.
#[utoipa::path(
    post,
    path = "/api/p2p/assist",
    // Optional (an empty body is a GET): see `openapi::OptionalAssistBody`.
    request_body(content = AssistRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "P2P advice", body = AssistResponse),
        (status = 400, description = "Invalid JSON or a value out of range; `detail` names the field", content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within `[limits] http_body_timeout_seconds`", content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", content_type = "application/problem+json"),
        (status = 401, description = "`[auth] required` and no valid bearer token, or an invalid one", content_type = "application/problem+json"),
        (status = 429, description = "Over the per-source limit of the credential routes; `Retry-After` says when to retry", content_type = "application/problem+json"),
    )
)]
pub async fn post_assist(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AssistResponse>, Response> {
    count_assist(&state, "POST");
    admit_credentials(&state, peer, bearer_token(&headers)).map_err(IntoResponse::into_response)?;
    let advice = async {
        let deadline = Duration::from_secs(state.config.limits.http_body_timeout_seconds);
        let request = read_request(&headers, body, deadline).await?;
        let params = validate(request)?;
        build_response(&state, params)
    };
    advice.await.map(Json).map_err(IntoResponse::into_response)
}

fn count_assist(state: &AppState, method: &'static str) {
    state
        .metrics
        .assist_requests
        .get_or_create(&MethodLabels { method })
        .inc();
}
