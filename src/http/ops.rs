//! Operational endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::state::AppState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics; bearer token required when `[admin] token` is set.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "Metrics in the OpenMetrics text format", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "Missing or wrong bearer token", content_type = "application/problem+json"),
    )
)]
pub async fn get_metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.admin.token
        && !bearer_matches(&headers, token)
    {
        let mut response =
            Problem::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
                .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"commucat-metrics\""),
        );
        return response;
    }
    let mut response = state.metrics.encode().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    // Constant time in the content; the length of the token is not secret.
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Keys are loaded and the UDP sockets are serving.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "Not ready", content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, Problem> {
    if state.is_ready() {
        Ok("ready\n")
    } else {
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: keys not loaded or STUN sockets not serving",
        ))
    }
}
