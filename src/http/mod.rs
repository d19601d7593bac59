//! The HTTP API: routes, the observing middleware (request id, metrics, problem
//! rendering) and the operational endpoints.

pub mod access;
pub mod assist;
mod body;
pub mod demo;
pub mod ice_servers;
pub mod openapi;
pub mod ops;
pub mod problem;
mod proxy_header;
pub mod server;
pub mod server_info;
mod stall;
pub mod tls;
mod turn_credentials;
pub mod turn_rest;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use rand::RngExt as _;

use crate::metrics::{HttpLabels, RouteLabels};
use crate::state::AppState;
use problem::{Problem, RequestId};

/// Largest accepted HTTP request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Every route the daemon serves; also the `route` label of the HTTP metrics.
pub const ROUTES: &[&str] = &[
    "/api/server-info",
    "/api/p2p/assist",
    "/api/turn",
    "/api/ice-servers",
    "/api/connect",
    "/api/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/demo/",
    "/demo/demo.css",
    "/demo/demo.js",
    "/demo/commucat-sdk.min.js",
];

/// The full router. `extra` lets other subsystems (the signaling endpoint) add routes.
pub fn router(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    // Off: the demo's paths fall through to the 404 of any unknown route.
    let demo = if state.config.demo.enabled {
        demo::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route("/api/server-info", get(server_info::get_server_info))
        .route(
            "/api/p2p/assist",
            get(assist::get_assist).post(assist::post_assist),
        )
        .route(
            "/api/turn",
            get(turn_rest::get_turn).post(turn_rest::post_turn),
        )
        .route("/api/ice-servers", get(ice_servers::get_ice_servers))
        .route("/api/openapi.json", get(openapi::get_openapi))
        .route("/metrics", get(ops::get_metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(demo)
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on this route"),
    )
}

fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("unmatched")
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// A client-chosen request id is kept if it is short and plain; otherwise a random one.
fn request_id(req: &Request) -> HeaderValue {
    let supplied = req.headers().get("x-request-id").filter(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    });
    if let Some(v) = supplied {
        return v.clone();
    }
    let raw: [u8; 16] = rand::rng().random();
    HeaderValue::from_str(&hex::encode(raw)).unwrap_or(HeaderValue::from_static("0"))
}

/// Request id, problem rendering and metrics for every request.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(req.uri().path());
    let method = method_label(req.method());
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));

    let mut response = next.run(req).await;
    if let Some(problem) = response.extensions_mut().remove::<Problem>() {
        let trace_id = id.to_str().unwrap_or_default();
        let mut rendered = problem.render(trace_id);
        for (name, value) in response.headers() {
            if name != axum::http::header::CONTENT_TYPE
                && name != axum::http::header::CONTENT_LENGTH
            {
                rendered.headers_mut().insert(name.clone(), value.clone());
            }
        }
        response = rendered;
    }
    response.headers_mut().insert("x-request-id", id);

    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    state
        .metrics
        .http_latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
