//! `/demo/`: the embedded demo page of the JavaScript SDK, served by the real daemon:
//! the committed files byte for byte, content types, caching, the Content-Security-Policy,
//! and the `[demo] enabled` switch (off: a 404 problem like any unknown route).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::{Daemon, runtime, temp_dir};
use reqwest::header::HeaderMap;

/// A client that does not follow redirects (the library's own client installs the
/// process's TLS crypto provider, which any reqwest client needs here).
fn plain_client() -> reqwest::Client {
    let _ = common::client();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Vec<u8>) {
    runtime().block_on(async {
        let mut req = plain_client().get(d.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
}

fn committed(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sdk/js/demo")
            .join(name),
    )
    .unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap().to_str().unwrap()
}

#[test]
fn the_demo_files_are_served_as_committed_with_a_strict_policy() {
    let d = Daemon::start("");
    let host = d.http.to_string();
    for (path, file, content_type) in [
        ("/demo/", "index.html", "text/html; charset=utf-8"),
        ("/demo/demo.js", "demo.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "demo.css", "text/css; charset=utf-8"),
        (
            "/demo/commucat-sdk.min.js",
            "commucat-sdk.min.js",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let (status, h, body) = get(&d, path, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, committed(file), "{path}");
        assert_eq!(header(&h, "content-type"), content_type, "{path}");
        assert_eq!(header(&h, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        let csp = header(&h, "content-security-policy");
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{csp}"
        );
        assert!(
            csp.ends_with(&format!("connect-src 'self' ws://{host} wss://{host}")),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        // Revalidation with the strong validator: 304 without a body.
        let etag = header(&h, "etag").to_string();
        let (status, h2, body) = get(&d, path, &[("if-none-match", &etag)]);
        assert_eq!(status, 304, "{path}");
        assert!(body.is_empty());
        assert_eq!(header(&h2, "etag"), etag);
        let (status, _, _) = get(&d, path, &[("if-none-match", "\"other\"")]);
        assert_eq!(status, 200, "{path}");
    }

    // A Host that is not a plain host and port is never copied into the policy.
    let (status, h, _) = get(&d, "/demo/", &[("host", "x.org;script-src *")]);
    assert_eq!(status, 200);
    let csp = header(&h, "content-security-policy");
    assert!(csp.ends_with("connect-src 'self'"), "{csp}");

    let (status, h, _) = get(&d, "/demo", &[]);
    assert_eq!(status, 308);
    assert_eq!(header(&h, "location"), "/demo/");

    for path in ["/demo/nope.js", "/demo/..%2fCargo.toml", "/demo/index.html"] {
        let (status, h, _) = get(&d, path, &[]);
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&h, "content-type"), "application/problem+json");
    }
    let (status, _, _) = runtime().block_on(async {
        let r = plain_client().post(d.url("/demo/")).send().await.unwrap();
        (r.status().as_u16(), (), ())
    });
    assert_eq!(status, 405);
}

#[test]
fn the_page_has_no_inline_script_or_style() {
    let html = String::from_utf8(committed("index.html")).unwrap();
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!lower.contains("<style"));
    assert!(!lower.contains(" style="));
    assert!(!lower.contains(" onclick=") && !lower.contains(" onload="));
}

#[test]
fn the_demo_is_off_when_disabled() {
    let d = Daemon::start_in(
        &temp_dir("demo-off"),
        "",
        &[("COMMUCAT_DEMO_ENABLED", "false")],
    );
    for path in ["/demo/", "/demo/demo.js", "/demo"] {
        let (status, h, body) = get(&d, path, &[]);
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&h, "content-type"), "application/problem+json");
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["detail"], "no such route");
    }
    let d = Daemon::start("[demo]\nenabled = false\n");
    assert_eq!(get(&d, "/demo/", &[]).0, 404);
}
