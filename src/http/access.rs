//! Access control at the HTTP edge: where a request's token comes from, the 401 answer
//! when `[auth]` refuses it (the decision itself is `crate::auth`'s), and the per-source
//! limit of the routes that mint credentials (429).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::problem::Problem;
use crate::auth::{AuthError, Authorizer, Grant};
use crate::state::AppState;

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `name=` parameter of a query string, percent-decoded; browsers cannot set headers
/// on a WebSocket, so `/api/connect` also takes `?access_token=`.
pub fn query_token<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Authorizes a request presenting `token`; the refusal renders as 401 problem+json.
pub fn authorize(auth: &Authorizer, token: Option<&str>) -> Result<Grant, Unauthorized> {
    auth.authorize(token).map_err(Unauthorized)
}

/// A refused request: 401 problem+json with `WWW-Authenticate: Bearer`.
#[derive(Debug)]
pub struct Unauthorized(pub AuthError);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response =
            Problem::new(StatusCode::UNAUTHORIZED, self.0.to_string()).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"commucat\""),
        );
        response
    }
}

/// The address a request came from, as the accept loop recorded it; `None` for
/// requests handed to the router in process (benchmarks), which no limit applies to.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// Takes a token of the credential routes' per-source limit; the refusal renders as
/// 429 problem+json with `Retry-After`.
pub fn limit_credentials(state: &AppState, peer: Peer) -> Result<(), TooManyRequests> {
    let Some(ip) = peer.0 else {
        return Ok(());
    };
    if state.credential_limiter.allow(ip) {
        return Ok(());
    }
    state.metrics.credential_requests_limited.inc();
    Err(TooManyRequests)
}

/// A request over the per-source limit.
#[derive(Debug)]
pub struct TooManyRequests;

impl IntoResponse for TooManyRequests {
    fn into_response(self) -> Response {
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests for credentials from this address",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        assert_eq!(bearer_token(&h), Some("abc.def"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  xyz "),
        );
        assert_eq!(bearer_token(&h), Some("xyz"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        assert_eq!(bearer_token(&h), None);
        assert_eq!(
            query_token(Some("a=1&access_token=t%2Bk&b=2"), "access_token").as_deref(),
            Some("t+k")
        );
        assert_eq!(query_token(Some("a=1"), "access_token"), None);
        assert_eq!(query_token(None, "access_token"), None);
    }
}
