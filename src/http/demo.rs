//! `/demo/`: the two-tab WebRTC demo page of the JavaScript SDK (`sdk/js/demo/`),
//! embedded in the binary and served with a strict Content-Security-Policy.
//!
//! The files are the committed ones: `index.html`, `demo.css`, `demo.js` (the page's own
//! script, plain JavaScript) and `commucat-sdk.min.js` (the SDK's esbuild bundle; the JS
//! suite checks that it is byte-identical to a fresh build of `sdk/js/src`). No inline
//! script or style: `script-src 'self'`.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use super::problem::Problem;
use crate::state::AppState;

/// One embedded file of the demo.
struct Asset {
    /// The name after `/demo/` (`""` is the page itself).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../sdk/js/demo/index.html"),
    },
    Asset {
        name: "demo.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../sdk/js/demo/demo.css"),
    },
    Asset {
        name: "demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../sdk/js/demo/demo.js"),
    },
    Asset {
        name: "commucat-sdk.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../sdk/js/demo/commucat-sdk.min.js"),
    },
];

/// Without a trusted Host, `connect-src 'self'` alone (which CSP Level 3 browsers extend
/// to ws/wss of the same host and port).
const CSP_HEAD: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     connect-src 'self'";

/// The demo's routes, for [`super::router`] when `[demo] enabled`; each file has its
/// own label in [`super::ROUTES`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/demo", get(redirect))
        .route("/demo/", get(index))
        .route("/demo/{file}", get(asset))
}

async fn redirect() -> Redirect {
    Redirect::permanent("/demo/")
}

/// The demo page: two tabs, a WebRTC data channel signaled over the PQ session.
#[utoipa::path(
    get,
    path = "/demo/",
    responses(
        (status = 200, description = "The demo page (HTML); absent when `[demo] enabled = false`", content_type = "text/html"),
        (status = 404, description = "`[demo] enabled = false`", content_type = "application/problem+json"),
    )
)]
pub async fn index(uri: Uri, headers: HeaderMap) -> Response {
    serve(0, &uri, &headers)
}

/// A file of the demo page: its script, its style sheet, or the SDK bundle.
pub async fn asset(
    Path(file): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let index = ASSETS
        .iter()
        .position(|a| !a.name.is_empty() && a.name == file)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "no such file in the demo"))?;
    Ok(serve(index, &uri, &headers))
}

/// `/demo/demo.js`: the page's own script (documented per file: the route takes no
/// other names).
#[utoipa::path(
    get,
    path = "/demo/demo.js",
    responses(
        (status = 200, description = "The demo page's script", content_type = "text/javascript"),
        (status = 404, description = "`[demo] enabled = false`", content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
pub fn demo_js_doc() {}

/// `/demo/demo.css`.
#[utoipa::path(
    get,
    path = "/demo/demo.css",
    responses(
        (status = 200, description = "The demo page's style sheet", content_type = "text/css"),
        (status = 404, description = "`[demo] enabled = false`", content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
pub fn demo_css_doc() {}

/// `/demo/commucat-sdk.min.js`.
#[utoipa::path(
    get,
    path = "/demo/commucat-sdk.min.js",
    responses(
        (status = 200, description = "The SDK's browser bundle (ES module), as `npm run bundle` builds it", content_type = "text/javascript"),
        (status = 404, description = "`[demo] enabled = false`", content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
pub fn demo_bundle_doc() {}

/// Strong validators, one per asset: the first 16 bytes of its SHA-256.
fn etag(index: usize) -> &'static str {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..16])))
            .collect()
    });
    etags.get(index).map_or("\"\"", String::as_str)
}

fn serve(index: usize, uri: &Uri, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.get(index) else {
        return Problem::new(StatusCode::NOT_FOUND, "no such file in the demo").into_response();
    };
    let tag = etag(index);
    let not_modified = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = response.headers_mut();
    // Revalidated on every use: a new daemon version serves a new page and bundle.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(uri, request)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The policy: only this origin's scripts and styles; fetches and WebSockets to this
/// origin, named explicitly as `ws://` and `wss://` of the request's `Host` when that is a
/// well-formed host and port (HTTP/2: the `:authority`; anything else is left out,
/// never copied into the header).
pub fn content_security_policy(uri: &Uri, request: &HeaderMap) -> String {
    let host = request
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| is_authority(h));
    match host {
        Some(h) => format!("{CSP_HEAD} ws://{h} wss://{h}"),
        None => CSP_HEAD.to_string(),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with `host` a DNS name or IPv4 address.
fn is_authority(s: &str) -> bool {
    if s.len() > 262 {
        return false;
    }
    let port_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        return after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && crate::config::is_host(host);
    host_ok && port.is_none_or(port_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for good in [
            "localhost",
            "127.0.0.1:8080",
            "[::1]:443",
            "[::1]",
            "demo.example.org",
        ] {
            assert!(is_authority(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "x;script-src *",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "[::1",
            "[zz]:1",
            "host:80:80",
            "*",
            "-x.org",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }

    #[test]
    fn policy_names_ws_and_wss_of_a_valid_host_only() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let uri = Uri::from_static("/demo/");
        let p = content_security_policy(&uri, &h);
        assert!(p.contains("script-src 'self';"), "{p}");
        assert!(
            p.ends_with("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080"),
            "{p}"
        );
        h.insert(
            header::HOST,
            HeaderValue::from_static("evil.org; script-src *"),
        );
        assert_eq!(content_security_policy(&uri, &h), CSP_HEAD);
        assert_eq!(content_security_policy(&uri, &HeaderMap::new()), CSP_HEAD);
        // HTTP/2 carries the host in the request target's authority.
        let h2 = Uri::from_static("https://[::1]:8443/demo/");
        assert!(
            content_security_policy(&h2, &HeaderMap::new())
                .ends_with("ws://[::1]:8443 wss://[::1]:8443")
        );
    }

    #[test]
    fn every_asset_is_non_empty_and_tagged() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{}", a.name);
            assert_eq!(etag(i).len(), 34);
            // Each has its own metrics label.
            let path = format!("/demo/{}", a.name);
            assert!(crate::http::ROUTES.contains(&path.as_str()), "{path}");
        }
    }
}
