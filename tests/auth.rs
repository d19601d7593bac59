//! `[auth]` against the real daemon: assist and `/api/connect` need a valid static token
//! or JWT when access control is required, and a JWT's `device` claim binds the session
//! to the device the handshake proves.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Daemon, client, runtime};
use commucat::auth::{Claims, issue_token};
use commucat::client::connect::{ConnectOptions, connect, device_id, fresh_device_secret};
use commucat::time::unix_now;
use std::time::Duration;

const STATIC_TOKEN: &str = "static-token-for-tests-0001";
const JWT_SECRET: &str = "jwt-secret-for-the-test-backend";

fn daemon() -> Daemon {
    Daemon::start(&format!(
        "[auth]\nrequired = true\ntokens = [\"{STATIC_TOKEN}\"]\njwt_secrets = [\"{JWT_SECRET}\"]\n"
    ))
}

fn jwt(exp: u64, device: Option<String>) -> String {
    let claims = Claims {
        sub: "alice".into(),
        exp,
        device,
    };
    issue_token(JWT_SECRET.as_bytes(), &claims).unwrap()
}

async fn assist_status(d: &Daemon, token: Option<&str>) -> (u16, reqwest::header::HeaderMap) {
    let mut request = client().get(d.url("/api/p2p/assist"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.headers().clone())
}

#[test]
fn assist_needs_a_valid_token() {
    let d = daemon();
    runtime().block_on(async {
        let (status, headers) = assist_status(&d, None).await;
        assert_eq!(status, 401);
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"commucat\"");
        assert_eq!(
            assist_status(&d, Some("wrong-token-0000000000")).await.0,
            401
        );
        assert_eq!(assist_status(&d, Some(STATIC_TOKEN)).await.0, 200);
        assert_eq!(
            assist_status(&d, Some(&jwt(unix_now() + 600, None)))
                .await
                .0,
            200
        );
        assert_eq!(
            assist_status(&d, Some(&jwt(unix_now() - 600, None)))
                .await
                .0,
            401,
            "an expired JWT"
        );
        // A POST is refused before its body is read.
        let response = client()
            .post(d.url("/api/p2p/assist"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        // Discovery stays public.
        let info = client()
            .get(d.url("/api/server-info"))
            .send()
            .await
            .unwrap();
        assert_eq!(info.status(), 200);
    });
}

#[test]
fn sessions_need_a_token_in_the_header_or_the_query() {
    let d = daemon();
    runtime().block_on(async {
        let refused = client().get(d.url("/api/connect")).send().await.unwrap();
        assert_eq!(refused.status(), 401);

        let with = |token: Option<String>| ConnectOptions {
            access_token: token,
            ..ConnectOptions::default()
        };
        let Err(err) = connect(&d.base(), with(None)).await else {
            panic!("connected without a token");
        };
        assert!(err.to_string().contains("401"), "{err}");
        let c = connect(&d.base(), with(Some(STATIC_TOKEN.into())))
            .await
            .unwrap();
        c.close().await.unwrap();

        // Browsers cannot set headers on a WebSocket: ?access_token= works as well.
        let url = format!(
            "{}/api/connect?access_token={STATIC_TOKEN}",
            d.base().replace("http://", "ws://")
        );
        let socket =
            commucat::client::connect::open_socket(&url, None, std::time::Duration::from_secs(10))
                .await
                .expect("the upgrade is accepted with a query token");
        drop(socket);
    });
}

#[test]
fn a_jwt_bound_to_a_device_admits_only_that_device() {
    let d = daemon();
    runtime().block_on(async {
        let secret = fresh_device_secret();
        let mine = device_id(&secret);
        let token = jwt(unix_now() + 600, Some(mine.to_uppercase()));
        let options = ConnectOptions {
            access_token: Some(token.clone()),
            device_secret: Some(secret),
            ..ConnectOptions::default()
        };
        let c = connect(&d.base(), options).await.unwrap();
        assert_eq!(c.device_id, mine);
        c.close().await.unwrap();

        let someone_else = ConnectOptions {
            access_token: Some(token),
            ..ConnectOptions::default()
        };
        let Err(err) = connect(&d.base(), someone_else).await else {
            panic!("another device was admitted");
        };
        assert_eq!(err.close_code(), Some(4403), "{err:?}");
    });
}

#[test]
fn sighup_reloads_the_tokens_file() {
    let dir = common::temp_dir("tokens");
    let file = dir.join("tokens");
    std::fs::write(&file, "# first\nfirst-token-aaaaaaaaaa\n").unwrap();
    let config = format!(
        "[auth]\nrequired = true\ntokens_file = \"{}\"\n",
        file.display()
    );
    let d = Daemon::start_in(&dir, &config, &[]);
    runtime().block_on(async {
        assert_eq!(
            assist_status(&d, Some("first-token-aaaaaaaaaa")).await.0,
            200
        );
        std::fs::write(&file, "second-token-bbbbbbbbb\n").unwrap();
        common::sighup(d.pid());
        let reloaded = d.wait_for_log("access tokens file reloaded", Duration::from_secs(10));
        assert!(reloaded.is_some(), "no reload logged");
        assert_eq!(
            assist_status(&d, Some("first-token-aaaaaaaaaa")).await.0,
            401
        );
        assert_eq!(
            assist_status(&d, Some("second-token-bbbbbbbbb")).await.0,
            200
        );
        // A broken file keeps the tokens in use.
        std::fs::write(&file, "short\n").unwrap();
        common::sighup(d.pid());
        let kept = d.wait_for_log("access tokens file not reloaded", Duration::from_secs(10));
        assert!(kept.is_some(), "no refusal logged");
        assert_eq!(
            assist_status(&d, Some("second-token-bbbbbbbbb")).await.0,
            200
        );
    });
}
