//! Access control at the HTTP edge: where a request's token comes from, the 401 answer
//! when `[auth]` refuses it (the decision itself is `crate::auth`'s), and the per-source
//! limit of the routes that mint credentials (429).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

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

/// The client a request came from: the TCP peer the accept loop recorded, or, when that
/// peer is a trusted proxy (`[server] trusted_proxies`), the client its
/// `X-Forwarded-For` names. `None` for requests handed to the router in process
/// (benchmarks), which no limit applies to.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl FromRequestParts<Arc<AppState>> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let tcp_peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(tcp_peer.map(|ip| {
            client_address(ip, &parts.headers, &state.trusted_proxies)
        })))
    }
}

/// The rightmost address of `X-Forwarded-For` that is not a trusted proxy, when `peer`
/// is one; else `peer`. Each trusted hop appends the address it saw, so the entries
/// right of the first untrusted one were written by proxies we trust, and everything
/// left of it by the client, who may lie. A malformed entry stops the walk at the last
/// trusted hop.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
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

/// The gate of every route that mints credentials: the source's limit, then `[auth]`
/// for `token`.
pub fn admit_credentials(state: &AppState, peer: Peer, token: Option<&str>) -> Result<(), Refusal> {
    limit_credentials(state, peer)?;
    authorize(&state.auth, token)?;
    Ok(())
}

/// Why a credential route refused a request.
#[derive(Debug)]
pub enum Refusal {
    Limited(TooManyRequests),
    Unauthorized(Unauthorized),
}

impl From<TooManyRequests> for Refusal {
    fn from(refusal: TooManyRequests) -> Self {
        Self::Limited(refusal)
    }
}

impl From<Unauthorized> for Refusal {
    fn from(refusal: Unauthorized) -> Self {
        Self::Unauthorized(refusal)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Limited(r) => r.into_response(),
            Self::Unauthorized(r) => r.into_response(),
        }
    }
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
    fn only_trusted_proxies_name_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.7, 10.9.9.9"),
        );
        // The client may prepend anything; the first untrusted hop from the right counts.
        assert_eq!(
            client_address(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(stranger, &h, &trusted), stranger);
        // No header, or garbage: the proxy itself.
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        h.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_address(proxy, &h, &trusted), proxy);
        // Without trusted proxies nothing changes.
        assert_eq!(client_address(proxy, &h, &[]), proxy);
    }

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
