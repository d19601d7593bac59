//! Access control at the HTTP edge: where a request's token comes from, and the 401
//! answer when `[auth]` refuses it (the decision itself is `crate::auth`'s).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::auth::{AuthError, Authorizer, Grant};

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
