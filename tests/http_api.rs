//! The daemon's HTTP API, exercised as a client would: the real binary on loopback.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Daemon, client, runtime, temp_dir};
use hmac::{KeyInit, Mac};
use ml_dsa::signature::Verifier as _;
use serde_json::{Value, json};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn get_json(d: &Daemon, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    runtime().block_on(async {
        let r = client().get(d.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap())
    })
}

fn post(
    d: &Daemon,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    runtime().block_on(async {
        let mut req = client().post(d.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

fn post_json(d: &Daemon, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post(
        d,
        "/api/p2p/assist",
        Some("application/json"),
        serde_json::to_vec(&body).unwrap(),
    )
}

/// Recomputes the key bundle from the JSON exactly as docs/protocol.md §2.3 writes it.
fn bundle_text(info: &Value) -> String {
    let mut lines = vec![
        "commucat-keybundle-v1".to_string(),
        format!("domain={}", info["domain"].as_str().unwrap()),
    ];
    for k in info["noise_keys"].as_array().unwrap() {
        lines.push(format!(
            "noise={},{},{},{},{}",
            k["version"],
            k["public"].as_str().unwrap(),
            k["valid_after"].as_str().unwrap(),
            k["rotates_at"].as_str().unwrap(),
            k["expires_at"].as_str().unwrap()
        ));
    }
    lines.push(format!(
        "kem={}",
        info["post_quantum"]["kem_public_hex"]
            .as_str()
            .unwrap_or("")
    ));
    lines.join("\n")
}

fn verify_bundle(info: &Value) -> bool {
    let pq = &info["post_quantum"];
    let vk_bytes = hex::decode(pq["signature_public_hex"].as_str().unwrap()).unwrap();
    let vk =
        ml_dsa::VerifyingKey::<ml_dsa::MlDsa65>::decode(&vk_bytes.as_slice().try_into().unwrap());
    let sig_bytes = hex::decode(pq["key_bundle_signature_hex"].as_str().unwrap()).unwrap();
    let sig = ml_dsa::Signature::<ml_dsa::MlDsa65>::try_from(sig_bytes.as_slice()).unwrap();
    vk.verify(bundle_text(info).as_bytes(), &sig).is_ok()
}

#[test]
fn server_info_has_contract_shape_and_verifying_signature() {
    let d = Daemon::start("[server]\ndomain = \"cat.example\"\n");
    let (status, headers, info) = get_json(&d, "/api/server-info");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(info["domain"], "cat.example");
    assert_eq!(info["supported_patterns"], json!(["XK", "IK"]));
    assert_eq!(info["supported_versions"], json!([1, 2]));
    let keys = info["noise_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["version"], 1);
    assert_eq!(info["noise_public"], keys[0]["public"]);
    assert_eq!(keys[0]["public"].as_str().unwrap().len(), 64);
    let ts = keys[0]["valid_after"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    let pq = &info["post_quantum"];
    assert_eq!(pq["enabled"], true);
    assert_eq!(pq["kem_algorithm"], "ML-KEM-768");
    assert_eq!(pq["signature_algorithm"], "ML-DSA-65");
    assert_eq!(pq["kem_public_hex"].as_str().unwrap().len(), 1184 * 2);
    assert_eq!(pq["signature_public_hex"].as_str().unwrap().len(), 1952 * 2);
    assert_eq!(
        pq["key_bundle_signature_hex"].as_str().unwrap().len(),
        3309 * 2
    );
    assert_eq!(info["device_ca_public"], pq["signature_public_hex"]);
    assert_eq!(info["session"]["ttl_seconds"], 60);
    assert_eq!(info["presence"]["ttl_seconds"], 30);
    assert!(info["pairing"]["pairing_ttl"].is_u64());
    assert!(info["device_rotation"]["enabled"].is_boolean());
    assert_eq!(
        info["endpoints"]["connect"],
        format!("ws://{}/api/connect", d.http)
    );
    assert_eq!(
        info["endpoints"]["stun"],
        json!([format!("stun:{}", d.stun[0])])
    );
    assert!(
        verify_bundle(&info),
        "bundle signature must verify with ml-dsa"
    );

    // A tampered bundle does not verify.
    let mut tampered = info.clone();
    tampered["domain"] = json!("evil.example");
    assert!(!verify_bundle(&tampered));
}

#[test]
fn pq_off_drops_the_kem_but_keeps_the_signature() {
    let d = Daemon::start("[crypto]\npq = false\n");
    let (_, _, info) = get_json(&d, "/api/server-info");
    let pq = &info["post_quantum"];
    assert_eq!(pq["enabled"], false);
    assert!(pq.get("kem_algorithm").is_none());
    assert!(pq.get("kem_public_hex").is_none());
    assert_eq!(info["supported_versions"], json!([1]));
    assert!(verify_bundle(&info));
    assert!(bundle_text(&info).ends_with("\nkem="));
    let (_, _, assist) = get_json(&d, "/api/p2p/assist");
    assert!(assist["pq"].is_null());
}

#[test]
fn keys_survive_a_restart() {
    let dir = temp_dir("restart");
    let first = Daemon::start_in(&dir, "", &[]);
    let (_, _, a) = get_json(&first, "/api/server-info");
    assert!(first.stop().success());
    let second = Daemon::start_in(&dir, "", &[]);
    let (_, _, b) = get_json(&second, "/api/server-info");
    assert_eq!(a["noise_keys"], b["noise_keys"]);
    assert_eq!(
        a["post_quantum"]["kem_public_hex"],
        b["post_quantum"]["kem_public_hex"]
    );
    assert_eq!(a["device_ca_public"], b["device_ca_public"]);
    // Deterministic ML-DSA over identical input: the same signature.
    assert_eq!(
        a["post_quantum"]["key_bundle_signature_hex"],
        b["post_quantum"]["key_bundle_signature_hex"]
    );
    for name in ["noise_keys.json", "kem.seed", "identity.seed", "ice.secret"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("state").join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn short_rotation_lists_both_keys_until_the_first_expires() {
    let d = Daemon::start("[crypto]\nrotation_interval = 2\nrotation_grace = 3\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut saw_both = None;
    let mut first_gone_at = None;
    while std::time::Instant::now() < deadline {
        let (_, _, info) = get_json(&d, "/api/server-info");
        assert!(verify_bundle(&info));
        let versions: Vec<u64> = info["noise_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["version"].as_u64().unwrap())
            .collect();
        if saw_both.is_none() && versions.contains(&1) && versions.contains(&2) {
            assert_eq!(
                info["noise_public"], info["noise_keys"][1]["public"],
                "newest is published"
            );
            saw_both = Some(
                info["noise_keys"][0]["expires_at"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        if saw_both.is_some() && !versions.contains(&1) {
            first_gone_at = Some(now());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let expires = saw_both.expect("a second key version appeared while the first was listed");
    let gone = first_gone_at.expect("the first key left the list");
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp() as u64;
    assert!(
        gone >= expires,
        "key 1 dropped at {gone}, before its expiry {expires}"
    );
    let metrics = common::metrics_text(&d);
    let rotations: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("commucat_key_rotations_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rotations >= 1, "{metrics}");
}

#[test]
fn assist_get_has_the_contract_shape() {
    let secret = "coturn-shared-secret";
    let d = Daemon::start(&format!(
        "[ice]\nturn_ttl = 900\nlite_public_address = \"203.0.113.42:3478\"\n\
         [[ice.turn]]\nurls = [\"turn:turn.example.org:3478\", \"turns:turn.example.org:5349\", \"turn:turn.example.org:53\"]\nsecret = \"{secret}\"\nrealm = \"commucat\"\n\
         [[ice.turn]]\nurls = \"turn:static.example.org:53\"\nusername = \"u\"\npassword = \"p\"\n\
         [[transport]]\nid = \"reality-1\"\ntransport = \"reality\"\naddress = \"r.example.org\"\nport = 443\npriority = 10\nreality_fingerprint = \"ABCDEF01\"\n"
    ));
    let before = now();
    let (status, headers, a) = get_json(&d, "/api/p2p/assist");
    assert_eq!(status, 200, "{a}");
    assert!(headers.contains_key("x-request-id"));

    let noise = &a["noise"];
    assert_eq!(noise["pattern"], "XK");
    assert_eq!(noise["prologue_hex"], hex::encode("commucat"));
    let (_, _, info) = get_json(&d, "/api/server-info");
    assert_eq!(noise["server_static_public_hex"], info["noise_public"]);
    assert_eq!(noise["key_version"], 1);
    let seed: [u8; 32] = hex::decode(noise["device_seed_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(seed));
    assert_eq!(noise["static_public_hex"], hex::encode(public.as_bytes()));

    assert_eq!(
        a["pq"]["kem_public_hex"],
        info["post_quantum"]["kem_public_hex"]
    );
    assert_eq!(
        a["pq"]["signature_public_hex"],
        info["post_quantum"]["signature_public_hex"]
    );

    let ice = &a["ice"];
    let ufrag = ice["username_fragment"].as_str().unwrap();
    assert_eq!(ufrag.len(), 16);
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(ufrag)
        .unwrap();
    let expiry = u32::from_be_bytes(raw[..4].try_into().unwrap()) as u64;
    assert!(
        expiry >= before + 600 && expiry <= now() + 600,
        "ufrag expiry {expiry}"
    );
    assert_eq!(ice["ttl_secs"], 600);
    assert_eq!(ice["password"].as_str().unwrap().len(), 32);
    assert_eq!(
        time::OffsetDateTime::parse(
            ice["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .unwrap()
        .unix_timestamp() as u64,
        expiry
    );

    // TURN REST credential: HMAC-SHA1 recomputed here.
    let turn = &ice["servers"][0];
    let username = turn["username"].as_str().unwrap();
    let (exp, frag) = username.split_once(':').unwrap();
    assert_eq!(frag, ufrag);
    let exp: u64 = exp.parse().unwrap();
    assert!(exp >= before + 900 && exp <= now() + 900);
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(turn["credential"], expected);
    assert_eq!(turn["ttl_secs"], 900);
    assert_eq!(turn["realm"], "commucat");
    assert_eq!(turn["urls"].as_array().unwrap().len(), 3);
    let static_turn = &ice["servers"][1];
    assert_eq!(static_turn["username"], "u");
    assert_eq!(static_turn["credential"], "p");
    assert!(static_turn["expires_at"].is_null());

    // ice_servers: STUN first, then TURN with transports; port 53 never listed, and a
    // TURN server left with no URL is omitted.
    let servers = ice["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!(servers[0], json!({"urls": ["stun:203.0.113.42:3478"]}));
    assert_eq!(
        servers[1]["urls"],
        json!([
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349?transport=tcp"
        ])
    );
    assert_eq!(servers[1]["username"], turn["username"]);
    assert_eq!(servers[1]["credential"], turn["credential"]);

    let cand = &ice["lite_candidates"][0];
    assert_eq!(cand["priority"], 2_130_706_431u64);
    assert_eq!(cand["ip"], "203.0.113.42");
    assert_eq!(cand["port"], 3478);
    assert_eq!(cand["typ"], "host");
    assert_eq!(
        cand["candidate"],
        format!(
            "candidate:{} 1 udp 2130706431 203.0.113.42 3478 typ host generation 0",
            cand["foundation"].as_str().unwrap()
        )
    );

    let transports = a["transports"].as_array().unwrap();
    assert_eq!(transports[0]["path_id"], "commucat-ws");
    assert_eq!(transports[0]["transport"], "websocket");
    assert_eq!(transports[1]["path_id"], "reality-1");
    assert_eq!(transports[1]["transport"], "reality");

    let mp = &a["multipath"];
    assert_eq!(mp["fec_mtu"], 1152);
    assert_eq!(mp["fec_overhead"], 0.35);
    assert_eq!(mp["primary_path"], "commucat-ws");
    // 3 source + ceil(3 × 0.35) = 2 repair, round-robin over [commucat-ws(0), reality-1(10)].
    assert_eq!(
        mp["sample_segments"],
        json!({"commucat-ws": {"total": 3, "repair": 1}, "reality-1": {"total": 2, "repair": 1}})
    );
    assert_eq!(a["obfuscation"]["reality_fingerprint_hex"], "abcdef01");
    let sec = &a["security"];
    for k in [
        "noise_handshakes",
        "pq_handshakes",
        "zkp_proofs",
        "noise_rotations",
        "uptime_seconds",
        "censorship_deflections",
    ] {
        assert!(sec[k].is_u64(), "{k}");
    }
    assert_eq!(sec["zkp_proofs"], 0);

    // Each call issues a fresh credential.
    let (_, _, b) = get_json(&d, "/api/p2p/assist");
    assert_ne!(b["ice"]["username_fragment"], a["ice"]["username_fragment"]);
    assert_ne!(b["noise"]["device_seed_hex"], a["noise"]["device_seed_hex"]);
}

#[test]
fn assist_post_uses_given_paths_and_fec() {
    let d = Daemon::start("");
    let (status, _, a) = post_json(
        &d,
        json!({
            "peer_hint": "peer-device-id-abc123",
            "paths": [
                {"address": "relay2.example.org", "port": 443, "priority": 5},
                {"address": "relay.example.org", "port": 443, "id": "path-primary", "server_name": "relay.example.org", "priority": 0},
                {"address": "192.0.2.1", "port": 8443}
            ],
            "prefer_reality": true,
            "fec": {"mtu": 1200, "repair_overhead": 1.0},
            "min_paths": 8,
            "unknown_field": {"ignored": true}
        }),
    );
    assert_eq!(status, 200, "{a}");
    let mp = &a["multipath"];
    assert_eq!(mp["fec_mtu"], 1200);
    assert_eq!(mp["fec_overhead"], 1.0);
    assert_eq!(mp["primary_path"], "path-primary");
    // 6 packets (3 source, 3 repair) dealt over [path-primary(0), path-1(5), path-3(100)].
    assert_eq!(
        mp["sample_segments"],
        json!({
            "path-primary": {"total": 2, "repair": 1},
            "path-1": {"total": 2, "repair": 1},
            "path-3": {"total": 2, "repair": 1}
        })
    );
    let keys: Vec<&String> = mp["sample_segments"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);

    // Empty body is a GET; `paths: []` is no paths.
    let (status, _, a) = post(&d, "/api/p2p/assist", None, Vec::new());
    assert_eq!(status, 200);
    assert_eq!(a["multipath"]["primary_path"], "commucat-ws");
    let (status, _, a) = post_json(&d, json!({"paths": []}));
    assert_eq!(status, 200);
    assert_eq!(
        a["multipath"]["sample_segments"],
        json!({"commucat-ws": {"total": 5, "repair": 2}})
    );
}

#[test]
fn every_validation_error_is_problem_json_naming_the_field() {
    let d = Daemon::start("");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"peer_hint": "x".repeat(129)}), "peer_hint"),
        (
            json!({"paths": (0..9).map(|i| json!({"address": format!("h{i}.example"), "port": 1})).collect::<Vec<_>>()}),
            "paths",
        ),
        (
            json!({"paths": [{"address": "bad host", "port": 1}]}),
            "paths[0].address",
        ),
        (
            json!({"paths": [{"address": "ok.example", "port": 0}]}),
            "paths[0].port",
        ),
        (
            json!({"paths": [{"address": "ok.example", "port": 65536}]}),
            "paths[0].port",
        ),
        (json!({"paths": [{"address": "ok.example"}]}), "paths[0]"),
        (
            json!({"paths": [{"address": "a.example", "port": 1, "id": "x"}, {"address": "b.example", "port": 1, "id": "x"}]}),
            "paths[1].id",
        ),
        (json!({"fec": {"mtu": 255}}), "fec.mtu"),
        (json!({"fec": {"mtu": 9001}}), "fec.mtu"),
        (json!({"fec": {"mtu": "big"}}), "fec.mtu"),
        (
            json!({"fec": {"repair_overhead": -0.1}}),
            "fec.repair_overhead",
        ),
        (
            json!({"fec": {"repair_overhead": 1.5}}),
            "fec.repair_overhead",
        ),
        (json!({"min_paths": 0}), "min_paths"),
        (json!({"min_paths": 9}), "min_paths"),
        (json!({"prefer_reality": "yes"}), "prefer_reality"),
        (json!({"paths": {"address": "x"}}), "paths"),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let (status, headers, problem) = post_json(&d, body.clone());
        assert_eq!(status, 400, "{body} → {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(field),
            "{body}: detail {detail:?} should name {field}"
        );
        assert_eq!(problem["status"], 400);
        assert_eq!(
            problem["trace_id"].as_str().unwrap(),
            headers["x-request-id"].to_str().unwrap()
        );
        assert!(problem["title"].is_string() && problem["type"].is_string());
    }

    // Syntax errors name the field where the JSON broke, or the body.
    let (status, _, problem) = post(
        &d,
        "/api/p2p/assist",
        Some("application/json"),
        b"{\"fec\": ".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().starts_with("fec"),
        "{problem}"
    );
    let (status, _, problem) = post(
        &d,
        "/api/p2p/assist",
        Some("application/json"),
        b"{".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().starts_with("body"),
        "{problem}"
    );

    // 415, and 413 before 415.
    let (status, _, problem) = post(&d, "/api/p2p/assist", Some("text/plain"), b"{}".to_vec());
    assert_eq!(status, 415, "{problem}");
    let (status, _, _) = post(&d, "/api/p2p/assist", None, b"{}".to_vec());
    assert_eq!(status, 415);
    let big = vec![b' '; 16 * 1024 + 1];
    let (status, headers, problem) = post(&d, "/api/p2p/assist", Some("text/plain"), big);
    assert_eq!(status, 413, "{problem}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let exactly = format!("{{}}{}", " ".repeat(16 * 1024 - 2)).into_bytes();
    let (status, _, _) = post(
        &d,
        "/api/p2p/assist",
        Some("application/json; charset=utf-8"),
        exactly,
    );
    assert_eq!(status, 200);

    // 404 and 405 are problem+json too.
    let (status, headers, problem) = get_json(&d, "/api/nothing");
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        problem["trace_id"].as_str().unwrap(),
        headers["x-request-id"].to_str().unwrap()
    );
    let (status, headers, problem) = post(&d, "/api/server-info", None, Vec::new());
    assert_eq!(status, 405);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["status"], 405);
}

fn scrape(d: &Daemon, token: Option<&str>) -> (u16, String) {
    runtime().block_on(async {
        let mut req = client().get(d.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(prefix)
                .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}

#[test]
fn metrics_count_real_requests_and_enforce_the_token() {
    let d = Daemon::start(
        "[admin]\ntoken = \"s3cret-token\"\n\n[[ice.turn]]\nurls = \"turn:t.example\"\nsecret = \"x\"\n",
    );
    let (status, body) = scrape(&d, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(scrape(&d, Some("wrong")).0, 401);
    let (status, before) = scrape(&d, Some("s3cret-token"));
    assert_eq!(status, 200);
    for _ in 0..3 {
        get_json(&d, "/api/server-info");
        get_json(&d, "/api/p2p/assist");
    }
    post_json(&d, json!({"min_paths": 0}));
    let (_, after) = scrape(&d, Some("s3cret-token"));
    let si =
        "commucat_http_requests_total{route=\"/api/server-info\",method=\"GET\",status=\"200\"} ";
    assert_eq!(metric(&after, si) - metric(&before, si), 3, "{after}");
    let bad =
        "commucat_http_requests_total{route=\"/api/p2p/assist\",method=\"POST\",status=\"400\"} ";
    assert_eq!(metric(&after, bad), 1);
    assert_eq!(
        metric(&after, "commucat_assist_requests_total{method=\"GET\"} "),
        3
    );
    assert_eq!(
        metric(
            &after,
            "commucat_turn_credentials_issued_total{kind=\"rest\",server=\"turn:t.example\"} "
        ),
        3
    );
    assert_eq!(
        metric(
            &after,
            "commucat_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"401\"} "
        ),
        2
    );
    assert!(
        metric(
            &after,
            "commucat_http_request_duration_seconds_count{route=\"/api/server-info\"} "
        ) >= 3
    );
    assert!(after.contains("commucat_build_info{version=\""));
    assert!(after.contains("commucat_uptime_seconds "));
    assert!(!after.contains("s3cret-token"));
}

#[test]
fn health_ready_and_openapi() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let c = client();
        assert_eq!(c.get(d.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(d.url("/readyz")).send().await.unwrap().status(), 200);
        let doc: Value = c
            .get(d.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/api/server-info",
            "/api/p2p/assist",
            "/api/connect",
            "/metrics",
            "/healthz",
            "/readyz",
            "/api/openapi.json",
            "/demo/",
            "/demo/demo.js",
            "/demo/demo.css",
            "/demo/commucat-sdk.min.js",
        ] {
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from OpenAPI"
            );
        }
        assert!(doc["paths"]["/api/p2p/assist"].get("post").is_some());
        assert!(doc["components"]["schemas"].get("AssistRequest").is_some());
        assert!(doc["components"]["schemas"].get("ServerInfo").is_some());
    });
}

#[test]
fn sigterm_exits_cleanly() {
    let d = Daemon::start("");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_body_that_never_comes_gets_408_instead_of_holding_the_handler() {
    use std::io::{Read, Write};
    let d = Daemon::start("[limits]\nhttp_body_timeout_seconds = 1\n");
    for (path, content_type) in [
        ("/api/p2p/assist", "application/json"),
        ("/api/turn", "application/x-www-form-urlencoded"),
    ] {
        let mut stream = std::net::TcpStream::connect(d.http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 10\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains("\r\n\r\n{") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed without an answer");
            reply.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.contains("application/problem+json"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
}
