//! Operational endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::config::AdminConfig;
use crate::state::AppState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics: OpenMetrics when the `Accept` header asks for it (as Prometheus
/// does), else the Prometheus text format 0.0.4. A bearer token is required when
/// `[admin] token` is set; without one, a daemon bound to a non-loopback address serves
/// metrics only when `[admin] public_metrics = true`.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "Metrics: OpenMetrics 1.0 if `Accept` names `application/openmetrics-text`, else Prometheus text 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong bearer token", content_type = "application/problem+json"),
        (status = 403, description = "No `[admin] token` on a non-loopback address and `[admin] public_metrics` is off", content_type = "application/problem+json"),
    )
)]
pub async fn get_metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let admin = &state.config.admin;
    if !metrics_may_be_served(admin, state.endpoints.http.ip()) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "metrics are not served on a public address without [admin] token; set one, or [admin] public_metrics = true",
        )
        .into_response();
    }
    if let Some(token) = &admin.token
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
    let (body, content_type) = if accepts_openmetrics(&headers) {
        (state.metrics.encode(), OPENMETRICS)
    } else {
        (state.metrics.encode_prometheus(), PROMETHEUS_TEXT)
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Prometheus asks `application/openmetrics-text;version=1.0.0,…;q=0.x,text/plain;…`;
/// any mention of OpenMetrics with a non-zero quality is taken as a preference for it.
fn accepts_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// Metrics tell an attacker much about a deployment: without a token they are served
/// only on a loopback address, or where the operator said so.
fn metrics_may_be_served(admin: &AdminConfig, bound: IpAddr) -> bool {
    admin.token.is_some() || admin.public_metrics || bound.is_loopback()
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = super::access::bearer_token(headers) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn metrics_on_a_public_address_need_a_token_or_an_explicit_yes() {
        let public: IpAddr = "192.0.2.7".parse().unwrap();
        let unspecified: IpAddr = "::".parse().unwrap();
        let loopback: IpAddr = "::1".parse().unwrap();
        let mut admin = AdminConfig::default();
        assert!(metrics_may_be_served(&admin, loopback));
        assert!(!metrics_may_be_served(&admin, public));
        assert!(!metrics_may_be_served(&admin, unspecified));
        admin.public_metrics = true;
        assert!(metrics_may_be_served(&admin, public));
        admin.public_metrics = false;
        admin.token = Some(Secret::new("t0ken"));
        assert!(metrics_may_be_served(&admin, unspecified));
    }

    #[test]
    fn openmetrics_is_served_to_whoever_asks_for_it() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            accepts_openmetrics(&h)
        };
        assert!(with(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!with("*/*"));
        assert!(!with("text/plain"));
        assert!(!with("application/openmetrics-text;q=0"));
        assert!(!accepts_openmetrics(&HeaderMap::new()));
    }
}
