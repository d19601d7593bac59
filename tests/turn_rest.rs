//! The standard TURN REST endpoint (draft-uberti-behave-turn-rest-00) and
//! `/api/ice-servers`, with the credential recomputed here from the shared secret.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use base64::Engine as _;
use common::{Daemon, client, runtime};
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;

const SECRET: &str = "coturn-shared-secret";

fn daemon(extra: &str) -> Daemon {
    Daemon::start(&format!(
        "[ice]\nturn_ttl = 600\n[[ice.turn]]\nurls = [\"turn:turn.example.org:3478?transport=udp\", \"turns:turn.example.org:5349\"]\nsecret = \"{SECRET}\"\n{extra}"
    ))
}

fn expected_password(username: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn get(d: &Daemon, path_and_query: &str) -> (u16, Value) {
    let response = client().get(d.url(path_and_query)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn turn_rest_answers_the_draft_shape_with_a_credential_coturn_accepts() {
    let d = daemon("");
    runtime().block_on(async {
        let before = commucat::time::unix_now();
        let (status, body) = get(&d, "/api/turn?service=turn&username=janus").await;
        assert_eq!(status, 200, "{body}");
        let username = body["username"].as_str().unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, "janus");
        let expiry: u64 = expiry.parse().unwrap();
        assert!((before + 600..=before + 602).contains(&expiry), "{expiry}");
        assert_eq!(body["password"], expected_password(username));
        assert_eq!(body["ttl"], 600);
        assert_eq!(
            body["uris"],
            serde_json::json!([
                "turn:turn.example.org:3478?transport=udp",
                "turns:turn.example.org:5349"
            ])
        );

        // POST with a form body, as Janus sends it.
        let response = client()
            .post(d.url("/api/turn"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("service=turn&username=janus-2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body["username"].as_str().unwrap().ends_with(":janus-2"));

        // Without a username a random id is used.
        let (_, body) = get(&d, "/api/turn?service=turn").await;
        let (_, user) = body["username"].as_str().unwrap().split_once(':').unwrap();
        assert_eq!(user.len(), 16);

        for bad in [
            "/api/turn?service=stun&username=x",
            "/api/turn?username=x",
            "/api/turn?service=turn&username=a:b",
        ] {
            let response = client().get(d.url(bad)).send().await.unwrap();
            assert_eq!(response.status(), 400, "{bad}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
    });
}

#[test]
fn without_a_shared_secret_server_turn_rest_is_unavailable() {
    let d = Daemon::start(
        "[[ice.turn]]\nurls = [\"turn:turn.example.org\"]\nusername = \"u\"\npassword = \"p\"\n",
    );
    runtime().block_on(async {
        let (status, body) = get(&d, "/api/turn?service=turn&username=janus").await;
        assert_eq!(status, 503, "{body}");
    });
}

#[test]
fn the_draft_key_parameter_is_an_access_token() {
    let token = "turn-rest-access-token-01";
    let d = daemon(&format!(
        "[auth]\nrequired = true\ntokens = [\"{token}\"]\n"
    ));
    runtime().block_on(async {
        assert_eq!(get(&d, "/api/turn?service=turn&username=j").await.0, 401);
        let (status, _) = get(
            &d,
            &format!("/api/turn?service=turn&username=j&key={token}"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(get(&d, "/api/ice-servers").await.0, 401);
        let response = client()
            .get(d.url("/api/ice-servers"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    });
}

#[test]
fn ice_servers_feed_rtc_peer_connection_directly() {
    let d = daemon("");
    runtime().block_on(async {
        let before = commucat::time::unix_now();
        let (status, body) = get(&d, "/api/ice-servers").await;
        assert_eq!(status, 200, "{body}");
        let servers = body["iceServers"].as_array().unwrap();
        assert_eq!(servers.len(), 2, "{body}");
        assert!(servers[0]["urls"][0].as_str().unwrap().starts_with("stun:"));
        assert!(servers[0].get("username").is_none());
        let turn = &servers[1];
        assert_eq!(
            turn["urls"],
            serde_json::json!([
                "turn:turn.example.org:3478?transport=udp",
                "turns:turn.example.org:5349?transport=tcp"
            ])
        );
        let username = turn["username"].as_str().unwrap();
        assert_eq!(turn["credential"], expected_password(username));
        assert_eq!(body["ttl"], 600);
        let expires = commucat::time::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
        assert!((before + 600..=before + 602).contains(&expires));
    });
}

#[test]
fn the_credential_routes_share_a_per_source_limit() {
    let d = daemon("[limits]\nassist_rate_per_ip = 1\nassist_burst = 3\n");
    runtime().block_on(async {
        assert_eq!(get(&d, "/api/p2p/assist").await.0, 200);
        assert_eq!(get(&d, "/api/turn?service=turn&username=a").await.0, 200);
        assert_eq!(get(&d, "/api/ice-servers").await.0, 200);
        let refused = client().get(d.url("/api/p2p/assist")).send().await.unwrap();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(get(&d, "/api/turn?service=turn&username=a").await.0, 429);
        // Discovery is not limited by it.
        assert_eq!(get(&d, "/api/server-info").await.0, 200);
        let metrics = common::fetch_metrics(&d).await;
        assert!(
            metrics.contains("commucat_credential_requests_limited_total 2"),
            "{metrics}"
        );
    });
}

#[test]
fn assist_credentials_are_kept_fresh_at_half_their_ttl() {
    let d = Daemon::start("[ice]\ncredential_ttl = 2\n");
    let results = runtime().block_on(async {
        let mut results = Vec::new();
        commucat::client::refresh::keep_assist_fresh(
            &client(),
            &d.base(),
            None,
            tokio::time::sleep(std::time::Duration::from_millis(3500)),
            |r| results.push((commucat::time::unix_now(), r)),
        )
        .await;
        results
    });
    // Fetched at once, then every second (half of the 2 s ICE TTL): four times in 3.5 s.
    assert!((3..=5).contains(&results.len()), "{}", results.len());
    let mut ufrags = Vec::new();
    for (fetched_at, result) in results {
        let advice = result.unwrap();
        let ice = &advice["ice"];
        assert_eq!(ice["ttl_secs"], 2);
        let expires = commucat::time::parse_rfc3339(ice["expires_at"].as_str().unwrap()).unwrap();
        assert!(
            (fetched_at + 1..=fetched_at + 2).contains(&expires),
            "expires_at {expires} is exactly ttl_secs after {fetched_at}"
        );
        ufrags.push(ice["username_fragment"].as_str().unwrap().to_string());
    }
    ufrags.dedup();
    assert!(ufrags.len() >= 3, "fresh credentials each time: {ufrags:?}");
}

#[test]
fn behind_a_trusted_proxy_limits_key_on_the_client_it_names() {
    async fn assist_from(d: &Daemon, forwarded_for: &str) -> u16 {
        client()
            .get(d.url("/api/p2p/assist"))
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let limits = "[limits]\nassist_rate_per_ip = 1\nassist_burst = 1\n";
    let behind = daemon(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{limits}"
    ));
    let open = daemon(limits);
    runtime().block_on(async {
        assert_eq!(assist_from(&behind, "198.51.100.1").await, 200);
        assert_eq!(assist_from(&behind, "198.51.100.1").await, 429);
        assert_eq!(
            assist_from(&behind, "198.51.100.2").await,
            200,
            "another client"
        );
        // A client cannot pick its bucket by prepending addresses.
        assert_eq!(assist_from(&behind, "203.0.113.5, 198.51.100.1").await, 429);
        // Without trusted proxies the header is ignored: one bucket for the peer.
        assert_eq!(assist_from(&open, "198.51.100.1").await, 200);
        assert_eq!(assist_from(&open, "198.51.100.2").await, 429);
    });
}
