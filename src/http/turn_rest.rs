//! `GET`/`POST /api/turn`: the standard TURN REST API (draft-uberti-behave-turn-rest-00,
//! whose shared-secret scheme coturn implements), as Janus' `turn_rest_api` and other
//! WebRTC servers call it: `?service=turn&username=<id>` (and the draft's `key`, taken as
//! an access token), answered with `{"username","password","ttl","uris"}` where
//! `username` is `<expiry>:<id>`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngExt as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::{Peer, authorize, bearer_token, limit_credentials};
use super::body::read_body;
use super::problem::Problem;
use super::turn_credentials;
use crate::state::AppState;
use crate::time::unix_now;

/// Longest user id accepted in `username`.
const MAX_USER_ID: usize = 128;

/// The draft's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnRestCredential {
    /// `<expiry unix time>:<user id>`.
    pub username: String,
    /// Base64 HMAC-SHA1 of `username` under the TURN server's shared secret.
    pub password: String,
    /// Seconds the credential is valid for.
    pub ttl: u32,
    /// The TURN URIs the credential is good for.
    pub uris: Vec<String>,
}

/// The request's parameters: `service`, `username`, `key`, from the query string and,
/// for a POST, a form-encoded body (whose values win).
#[derive(Debug, Default, ToSchema)]
#[schema(as = TurnRestParams)]
struct Params {
    /// Must be `turn`.
    #[schema(value_type = String, required = true, pattern = "^turn$")]
    service: Option<String>,
    /// User id: 1 to 128 printable ASCII characters without `:`; random when omitted.
    #[schema(value_type = String, required = false, pattern = "^[!-9;-~]{1,128}$")]
    username: Option<String>,
    /// An access token, as the draft's API key.
    #[schema(value_type = String, required = false)]
    key: Option<String>,
}

impl Params {
    /// From a query string and, for a POST, a form-encoded body (which wins).
    fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut params = Self::default();
        let pairs = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .chain(url::form_urlencoded::parse(body));
        for (name, value) in pairs {
            let slot = match &*name {
                "service" => &mut params.service,
                "username" => &mut params.username,
                "key" => &mut params.key,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        params
    }
}

/// TURN REST credentials (draft-uberti-behave-turn-rest-00).
#[utoipa::path(
    get,
    path = "/api/turn",
    params(
        ("service" = String, Query, description = "Must be `turn`", pattern = "^turn$"),
        ("username" = Option<String>, Query, description = "User id: 1 to 128 printable ASCII characters without `:`; a random one when omitted", pattern = "^[!-9;-~]{1,128}$"),
        ("key" = Option<String>, Query, description = "An access token, as the draft's API key"),
    ),
    responses(
        (status = 200, description = "Credentials", body = TurnRestCredential),
        (status = 400, description = "`service` is not `turn`, or `username` is malformed", content_type = "application/problem+json"),
        (status = 401, description = "Access token missing (with `[auth] required`) or invalid", content_type = "application/problem+json"),
        (status = 429, description = "Over the per-source limit of the credential routes", content_type = "application/problem+json"),
        (status = 503, description = "No TURN server with a shared secret is configured", content_type = "application/problem+json"),
    )
)]
pub async fn get_turn(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = limit_credentials(&state, peer) {
        return refusal.into_response();
    }
    answer(&state, &headers, Params::parse(query.as_deref(), b""))
}

/// The same, with the parameters in a form-encoded body (as Janus sends them).
#[utoipa::path(
    post,
    path = "/api/turn",
    request_body(content = Params, content_type = "application/x-www-form-urlencoded", description = "`service=turn&username=<id>&key=<token>`; the query's parameters count too, the body's win"),
    responses(
        (status = 200, description = "Credentials", body = TurnRestCredential),
        (status = 400, description = "`service` is not `turn`, or `username` is malformed", content_type = "application/problem+json"),
        (status = 401, description = "Access token missing (with `[auth] required`) or invalid", content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within `[limits] http_body_timeout_seconds`", content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 KiB", content_type = "application/problem+json"),
        (status = 429, description = "Over the per-source limit of the credential routes", content_type = "application/problem+json"),
        (status = 503, description = "No TURN server with a shared secret is configured", content_type = "application/problem+json"),
    )
)]
pub async fn post_turn(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Charged before the body is read: a refused source costs no read.
    if let Err(refusal) = limit_credentials(&state, peer) {
        return refusal.into_response();
    }
    let deadline = Duration::from_secs(state.config.limits.http_body_timeout_seconds);
    match read_body(&headers, body, deadline).await {
        Ok(body) => answer(&state, &headers, Params::parse(query.as_deref(), &body)),
        Err(problem) => problem.into_response(),
    }
}

/// The draft's `key` may stand in the body of a POST, so access is decided once the
/// parameters are read (the source's limit was charged before that).
fn answer(state: &AppState, headers: &HeaderMap, params: Params) -> Response {
    let token = bearer_token(headers).or(params.key.as_deref());
    if let Err(refusal) = authorize(&state.auth, token) {
        return refusal.into_response();
    }
    match credential(state, params) {
        Ok(credential) => Json(credential).into_response(),
        Err(problem) => problem.into_response(),
    }
}

fn credential(state: &AppState, params: Params) -> Result<TurnRestCredential, Problem> {
    if params.service.as_deref() != Some("turn") {
        return Err(Problem::bad_request("service: must be \"turn\""));
    }
    let user = match params.username {
        Some(user) => valid_user_id(user)?,
        None => hex::encode(rand::rng().random::<[u8; 8]>()),
    };
    let Some(first) = state.turn.iter().find(|t| t.uses_rest_secret()) else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no TURN server with a shared secret (use-auth-secret) is configured",
        ));
    };
    // One credential answers for every server that shares the first one's secret.
    let uris = state
        .turn
        .iter()
        .filter(|t| t.shares_secret_with(first))
        .flat_map(|t| t.urls.iter().cloned())
        .collect();
    let issued = first.issue(&user, unix_now(), state.config.ice.turn_ttl);
    turn_credentials::count(state, first, &issued);
    Ok(TurnRestCredential {
        username: issued.username,
        password: issued.credential,
        ttl: state.config.ice.turn_ttl,
        uris,
    })
}

fn valid_user_id(user: String) -> Result<String, Problem> {
    let fits = (1..=MAX_USER_ID).contains(&user.len())
        && user.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if fits {
        Ok(user)
    } else {
        Err(Problem::bad_request(format!(
            "username: must be 1 to {MAX_USER_ID} printable ASCII characters without ':'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_from_the_query_and_the_form_body() {
        let p = Params::parse(Some("service=turn&username=a%20b"), b"key=k&username=janus");
        assert_eq!(p.service.as_deref(), Some("turn"));
        assert_eq!(p.username.as_deref(), Some("janus"));
        assert_eq!(p.key.as_deref(), Some("k"));
        let empty = Params::parse(None, b"");
        assert!(empty.service.is_none() && empty.username.is_none());
    }

    #[test]
    fn user_ids_are_bounded_and_colon_free() {
        assert!(valid_user_id("janus-1".into()).is_ok());
        for bad in ["", "a:b", "with space", &"x".repeat(MAX_USER_ID + 1)] {
            assert!(valid_user_id(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
