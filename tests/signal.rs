//! `/api/connect` through the real daemon on loopback: the handshake matrix, every
//! failure's close code and counter, key rotation, sessions and their limits.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Daemon, client, run_to_exit, runtime};
use commucat::client::connect::{
    ConnectError, ConnectOptions, Connection, Socket, client_params, connect, connect_with_info,
    device_id, fresh_device_secret, open_socket,
};
use commucat::client::http::{ClientError, IdentityError, fetch_server_info};
use commucat::crypto::{ClientHandshake, Pattern, Version};
use commucat::discovery::ServerInfo;
use commucat::keys::bundle::{decode_verifying_key, device_certificate_text, verify_hex};
use commucat::signal::messages::{ClientMessage, ErrorCode, ServerMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

const WAIT: Duration = Duration::from_secs(20);

fn options(pattern: Pattern, version: Version, pq: bool) -> ConnectOptions {
    ConnectOptions {
        pattern,
        version,
        pq,
        ..ConnectOptions::default()
    }
}

fn with_key(mut o: ConnectOptions, secret: &Zeroizing<[u8; 32]>) -> ConnectOptions {
    o.device_secret = Some(secret.clone());
    o
}

async fn info(d: &Daemon) -> ServerInfo {
    fetch_server_info(&client(), &d.base(), None).await.unwrap()
}

async fn metrics(d: &Daemon) -> String {
    common::fetch_metrics(d).await
}

/// Value of one series (`name{labels}`) in the exposition; 0 if absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

fn handshakes(text: &str, pattern: &str, version: &str, pq: &str, outcome: &str) -> u64 {
    metric(
        text,
        &format!(
            "commucat_handshakes_total{{pattern=\"{pattern}\",version=\"{version}\",pq=\"{pq}\",outcome=\"{outcome}\"}}"
        ),
    )
}

fn ws_url(d: &Daemon) -> String {
    format!("ws://{}/api/connect", d.http)
}

async fn raw_socket(d: &Daemon) -> Socket {
    open_socket(&ws_url(d), None, WAIT).await.unwrap()
}

/// Reads until the server's close frame; its code (None if the connection just ended).
async fn close_code(ws: &mut Socket) -> Option<u16> {
    let reading = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .expect("no close within the bound")
}

async fn recv(c: &mut Connection) -> ServerMessage {
    tokio::time::timeout(WAIT, c.recv())
        .await
        .expect("no message within the bound")
        .unwrap()
}

async fn ping(c: &mut Connection, id: u64) {
    c.send(&ClientMessage::Ping { id: id.into() })
        .await
        .unwrap();
    assert_eq!(recv(c).await, ServerMessage::Pong { id: id.into() });
}

fn expect_error(m: ServerMessage, expected: ErrorCode) {
    match m {
        ServerMessage::Error { code, .. } => assert_eq!(code, expected),
        other => panic!("expected error {expected:?}, got {other:?}"),
    }
}

async fn closed_with(result: Result<ServerMessage, ConnectError>) -> Option<u16> {
    match result {
        Err(e) => e.close_code(),
        Ok(m) => panic!("expected a close, got {m:?}"),
    }
}

/// Message 1 built by the library for `o` against `info`.
fn message1(info: &ServerInfo, o: &ConnectOptions) -> (ClientHandshake, Vec<u8>) {
    let secret = o.device_secret.clone().unwrap_or_else(fresh_device_secret);
    let params = client_params(info, o, secret).unwrap();
    let hs = ClientHandshake::new(params, &mut rand::rng()).unwrap();
    let m1 = hs.message1().to_vec();
    (hs, m1)
}

async fn send_binary(ws: &mut Socket, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).await.unwrap();
}

async fn next_binary(ws: &mut Socket) -> Vec<u8> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[test]
fn handshake_matrix_and_security_counters() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let mut expected_ok = 0;
        let mut expected_pq = 0;
        for pattern in [Pattern::Xk, Pattern::Ik] {
            for version in [Version::V1, Version::V2] {
                for pq in [true, false] {
                    let result = connect(&d.base(), options(pattern, version, pq)).await;
                    if version == Version::V2 && !pq {
                        assert!(
                            matches!(result, Err(ConnectError::Handshake(_))),
                            "{result:?}"
                        );
                        continue;
                    }
                    let mut c = result.unwrap();
                    assert_eq!(c.pq, pq);
                    assert_eq!(c.session_id.len(), 32);
                    assert_eq!(c.device_id.len(), 64);
                    ping(&mut c, 7).await;
                    c.close().await.unwrap();
                    expected_ok += 1;
                    expected_pq += u64::from(pq);
                    let m = metrics(&d).await;
                    assert_eq!(
                        handshakes(
                            &m,
                            pattern.as_str(),
                            &version.wire().to_string(),
                            &pq.to_string(),
                            "ok"
                        ),
                        1,
                        "{pattern:?} {version:?} {pq}"
                    );
                }
            }
        }
        assert_eq!(expected_ok, 6);
        let m = metrics(&d).await;
        assert_eq!(metric(&m, "commucat_noise_handshakes_total"), 6);
        assert_eq!(metric(&m, "commucat_pq_handshakes_total"), expected_pq);
        let assist = commucat::client::http::fetch_assist(&client(), &d.base(), None, None)
            .await
            .unwrap();
        assert_eq!(assist["security"]["noise_handshakes"], json!(6));
        assert_eq!(assist["security"]["pq_handshakes"], json!(expected_pq));

        // A hand-made version 2 message 1 without the PQ flag: 4400 from the server.
        let mut ws = raw_socket(&d).await;
        let mut m1 = vec![2, 1, 0, 0, 0, 1, 0];
        m1.extend_from_slice(&[0u8; 48]);
        send_binary(&mut ws, m1).await;
        assert_eq!(close_code(&mut ws).await, Some(4400));
        let m = metrics(&d).await;
        assert_eq!(
            handshakes(&m, "unknown", "unknown", "unknown", "malformed"),
            1
        );
    });
}

#[test]
fn handshake_failures_close_with_their_codes_and_count() {
    let d = Daemon::start("[limits]\nhandshake_timeout_seconds = 2\n");
    runtime().block_on(async {
        let info = info(&d).await;
        let xk1 = options(Pattern::Xk, Version::V1, true);

        // Truncated header.
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, vec![1, 1, 0]).await;
        assert_eq!(close_code(&mut ws).await, Some(4400));

        // Text frame.
        let mut ws = raw_socket(&d).await;
        ws.send(Message::Text("hello".into())).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(4400));

        // A message over 65 551 bytes.
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, vec![0u8; 65_552]).await;
        assert_eq!(close_code(&mut ws).await, Some(4400));

        // Tampered message 1 (a byte of the encrypted payload).
        let (_, mut m1) = message1(&info, &xk1);
        let n = m1.len();
        m1[n - 20] ^= 1;
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, m1).await;
        assert_eq!(close_code(&mut ws).await, Some(4401));

        // Tampered message 3.
        let (hs, m1) = message1(&info, &xk1);
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, m1).await;
        let m2 = next_binary(&mut ws).await;
        let mut m3 = hs.read_message2(&m2).unwrap().message3.unwrap();
        m3[40] ^= 1;
        send_binary(&mut ws, m3).await;
        assert_eq!(close_code(&mut ws).await, Some(4401));

        // Unknown key version.
        let mut o = xk1.clone();
        o.key_version = Some(1);
        let (_, mut m1) = message1(&info, &o);
        m1[2..6].copy_from_slice(&99u32.to_be_bytes());
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, m1).await;
        assert_eq!(close_code(&mut ws).await, Some(4404));

        // Replayed XK message 1: the server answers, but the replayer cannot finish.
        let (hs, m1) = message1(&info, &xk1);
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, m1.clone()).await;
        let m2 = next_binary(&mut ws).await;
        let m3 = hs.read_message2(&m2).unwrap().message3.unwrap();
        send_binary(&mut ws, m3).await;
        let mut replay = raw_socket(&d).await;
        send_binary(&mut replay, m1).await;
        assert_eq!(close_code(&mut replay).await, Some(4408));

        // Nothing at all: handshake timeout.
        let mut ws = raw_socket(&d).await;
        assert_eq!(close_code(&mut ws).await, Some(4408));

        let m = metrics(&d).await;
        let unknown = |outcome| handshakes(&m, "unknown", "unknown", "unknown", outcome);
        assert_eq!(unknown("malformed"), 1, "truncated header\n{m}");
        assert_eq!(unknown("text_frame"), 1);
        assert_eq!(unknown("too_large"), 1);
        assert_eq!(unknown("timeout"), 1);
        assert_eq!(handshakes(&m, "XK", "1", "true", "decrypt"), 2);
        assert_eq!(handshakes(&m, "XK", "1", "true", "unknown_key"), 1);
        assert_eq!(handshakes(&m, "XK", "1", "true", "timeout"), 1);
        assert_eq!(handshakes(&m, "XK", "1", "true", "ok"), 1);
    });
}

#[test]
fn replayed_ik_message1_cannot_displace_the_device() {
    let d = Daemon::start("[limits]\nhandshake_timeout_seconds = 2\n");
    runtime().block_on(async {
        let info = info(&d).await;
        let secret = fresh_device_secret();
        let o = with_key(options(Pattern::Ik, Version::V2, true), &secret);
        let (hs, m1) = message1(&info, &o);
        let mut ws = raw_socket(&d).await;
        send_binary(&mut ws, m1.clone()).await;
        let m2 = next_binary(&mut ws).await;
        let keys = hs.read_message2(&m2).unwrap().keys;
        let mut transport = commucat::crypto::Transport::client(&keys);
        let welcome = transport.open(&next_binary(&mut ws).await).unwrap();
        let welcome: ServerMessage = serde_json::from_slice(&welcome).unwrap();
        assert!(matches!(welcome, ServerMessage::Welcome { .. }));
        let ping = ClientMessage::Ping { id: 1.into() }.to_json();
        send_binary(&mut ws, transport.seal(&ping).unwrap()).await;
        let pong = transport.open(&next_binary(&mut ws).await).unwrap();
        assert_eq!(
            serde_json::from_slice::<ServerMessage>(&pong).unwrap(),
            ServerMessage::Pong { id: 1.into() }
        );

        let mut replay = raw_socket(&d).await;
        send_binary(&mut replay, m1).await;
        assert_eq!(close_code(&mut replay).await, Some(4408));

        // The real session is still registered and serving.
        let mut other = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        other
            .send(&ClientMessage::Lookup {
                device: device_id(&secret),
            })
            .await
            .unwrap();
        assert_eq!(
            recv(&mut other).await,
            ServerMessage::Presence {
                device: device_id(&secret),
                online: true
            }
        );
        let ping = ClientMessage::Ping { id: 2.into() }.to_json();
        send_binary(&mut ws, transport.seal(&ping).unwrap()).await;
        let pong = transport.open(&next_binary(&mut ws).await).unwrap();
        assert_eq!(
            serde_json::from_slice::<ServerMessage>(&pong).unwrap(),
            ServerMessage::Pong { id: 2.into() }
        );
        let m = metrics(&d).await;
        assert_eq!(handshakes(&m, "IK", "2", "true", "timeout"), 1);
        assert_eq!(handshakes(&m, "IK", "2", "true", "ok"), 1);
        assert_eq!(metric(&m, "commucat_sessions_replaced_total"), 0);
    });
}

#[test]
fn expired_key_version_is_refused_with_4404() {
    let d = Daemon::start("[crypto]\nrotation_interval = 1\nrotation_grace = 1\n");
    runtime().block_on(async {
        let first = info(&d).await;
        let v = first.noise_keys[0].version;
        // Key `v` expires at most 2 s after it was made; wait until it is no longer listed.
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if info(&d).await.noise_keys.iter().all(|k| k.version != v) {
                gone = true;
                break;
            }
        }
        assert!(gone, "key {v} still listed");
        let mut o = options(Pattern::Xk, Version::V2, true);
        o.key_version = Some(v);
        let err = connect_with_info(&d.base(), &first, o).await.unwrap_err();
        assert_eq!(err.close_code(), Some(4404), "{err:?}");
        let m = metrics(&d).await;
        let refused = handshakes(&m, "XK", "2", "true", "expired_key")
            + handshakes(&m, "XK", "2", "true", "unknown_key");
        assert_eq!(refused, 1);
    });
}

#[test]
fn both_listed_key_versions_accept_handshakes_after_rotation() {
    let d = Daemon::start("[crypto]\nrotation_interval = 2\nrotation_grace = 600\n");
    runtime().block_on(async {
        let mut listed = info(&d).await;
        for _ in 0..100 {
            if listed.noise_keys.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            listed = info(&d).await;
        }
        assert!(listed.noise_keys.len() >= 2, "no rotation happened");
        let versions: Vec<u32> = listed.noise_keys.iter().map(|k| k.version).collect();
        for v in versions {
            for pattern in [Pattern::Xk, Pattern::Ik] {
                let mut o = options(pattern, Version::V2, true);
                o.key_version = Some(v);
                let mut c = connect_with_info(&d.base(), &listed, o).await.unwrap();
                assert_eq!(c.key_version, v);
                ping(&mut c, 1).await;
                c.close().await.unwrap();
            }
        }
    });
}

#[test]
fn pq_policy_refusals_close_with_4403() {
    let required = Daemon::start("[crypto]\nrequire_pq = true\n");
    let off = Daemon::start("[crypto]\npq = false\n");
    runtime().block_on(async {
        let err = connect(&required.base(), options(Pattern::Xk, Version::V1, false))
            .await
            .unwrap_err();
        assert_eq!(err.close_code(), Some(4403), "{err:?}");
        let c = connect(&required.base(), options(Pattern::Ik, Version::V2, true))
            .await
            .unwrap();
        c.close().await.unwrap();
        let m = metrics(&required).await;
        assert_eq!(handshakes(&m, "XK", "1", "false", "pq_required"), 1);

        // PQ off: the library refuses by itself; a hand-made hybrid message 1 (to some
        // ML-KEM key) gets 4403 from the server.
        let off_info = info(&off).await;
        assert!(off_info.post_quantum.kem_public_hex.is_none());
        let err = connect(&off.base(), options(Pattern::Xk, Version::V1, true))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::PqUnavailable), "{err:?}");
        let mut with_kem = off_info.clone();
        let mut seed = [0u8; 64];
        rand::fill(&mut seed[..]);
        with_kem.post_quantum.enabled = true;
        with_kem.post_quantum.kem_public_hex =
            Some(commucat::keys::KemKeys::from_seed(&seed).public_hex);
        let (_, m1) = message1(&with_kem, &options(Pattern::Xk, Version::V1, true));
        let mut ws = raw_socket(&off).await;
        send_binary(&mut ws, m1).await;
        assert_eq!(close_code(&mut ws).await, Some(4403));
        let c = connect(&off.base(), options(Pattern::Xk, Version::V1, false))
            .await
            .unwrap();
        c.close().await.unwrap();
        let m = metrics(&off).await;
        assert_eq!(handshakes(&m, "XK", "1", "true", "pq_unavailable"), 1);
    });
}

#[test]
fn two_devices_signal_relay_lookup_and_certify() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let info = info(&d).await;
        let mut a = connect(&d.base(), options(Pattern::Xk, Version::V2, true))
            .await
            .unwrap();
        let mut b = connect(&d.base(), options(Pattern::Ik, Version::V1, true))
            .await
            .unwrap();
        let (ida, idb) = (a.device_id.clone(), b.device_id.clone());

        a.send(&ClientMessage::Signal {
            to: idb.clone(),
            body: json!({"sdp": "offer", "n": [1, 2]}),
        })
        .await
        .unwrap();
        assert_eq!(
            recv(&mut b).await,
            ServerMessage::Signal {
                from: ida.clone(),
                body: json!({"sdp": "offer", "n": [1, 2]})
            }
        );
        let data = base64::engine::general_purpose::STANDARD.encode(b"datagram");
        b.send(&ClientMessage::Relay {
            to: ida.clone(),
            data: data.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            recv(&mut a).await,
            ServerMessage::Relay {
                from: idb.clone(),
                data
            }
        );

        a.send(&ClientMessage::Lookup {
            device: idb.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            recv(&mut a).await,
            ServerMessage::Presence {
                device: idb.clone(),
                online: true
            }
        );
        let nobody = "ab".repeat(32);
        a.send(&ClientMessage::Signal {
            to: nobody.clone(),
            body: json!(1),
        })
        .await
        .unwrap();
        expect_error(recv(&mut a).await, ErrorCode::PeerOffline);

        // Certificate, verified with device_ca_public.
        a.send(&ClientMessage::Certify {}).await.unwrap();
        let ServerMessage::Certificate {
            device_id,
            not_before,
            not_after,
            signature_hex,
        } = recv(&mut a).await
        else {
            panic!("expected a certificate")
        };
        assert_eq!(device_id, ida);
        let nb = commucat::time::parse_rfc3339(&not_before).unwrap();
        let na = commucat::time::parse_rfc3339(&not_after).unwrap();
        assert_eq!(na - nb, 86_400);
        let vk = decode_verifying_key(&info.device_ca_public).unwrap();
        let text = device_certificate_text(&info.domain, &ida, &not_before, &not_after);
        verify_hex(&vk, text.as_bytes(), &signature_hex).unwrap();
        assert!(verify_hex(&vk, b"other text", &signature_hex).is_err());

        // Offline as soon as B's session is closed.
        b.close().await.unwrap();
        a.send(&ClientMessage::Lookup {
            device: idb.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            recv(&mut a).await,
            ServerMessage::Presence {
                device: idb.clone(),
                online: false
            }
        );
        a.send(&ClientMessage::Signal {
            to: idb.clone(),
            body: json!("late"),
        })
        .await
        .unwrap();
        expect_error(recv(&mut a).await, ErrorCode::PeerOffline);

        let m = metrics(&d).await;
        assert_eq!(metric(&m, "commucat_signals_total"), 1);
        assert_eq!(metric(&m, "commucat_relay_messages_total"), 1);
        assert_eq!(metric(&m, "commucat_relay_bytes_total"), 8);
        assert_eq!(metric(&m, "commucat_sessions_active"), 1);
        a.close().await.unwrap();
    });
}

#[test]
fn pipelined_certify_costs_one_signature_and_is_rate_limited() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let secret = fresh_device_secret();
        let mut c = connect(
            &d.base(),
            with_key(options(Pattern::Xk, Version::V2, true), &secret),
        )
        .await
        .unwrap();
        for _ in 0..4 {
            c.send(&ClientMessage::Certify {}).await.unwrap();
        }
        let first = recv(&mut c).await;
        assert!(
            matches!(first, ServerMessage::Certificate { .. }),
            "{first:?}"
        );
        for _ in 0..2 {
            assert_eq!(recv(&mut c).await, first, "the same certificate, reused");
        }
        expect_error(recv(&mut c).await, ErrorCode::RateLimited);
        c.close().await.unwrap();
        // A new session of the same device gets the cached certificate: still one signature.
        let mut again = connect(
            &d.base(),
            with_key(options(Pattern::Ik, Version::V2, true), &secret),
        )
        .await
        .unwrap();
        again.send(&ClientMessage::Certify {}).await.unwrap();
        assert_eq!(recv(&mut again).await, first);
        let m = metrics(&d).await;
        assert_eq!(metric(&m, "commucat_certificates_signed_total"), 1, "{m}");
    });
}

#[test]
fn one_source_holds_at_most_max_sessions_per_ip() {
    let d = Daemon::start("[limits]\nmax_sessions_per_ip = 2\n");
    runtime().block_on(async {
        let a = connect(&d.base(), options(Pattern::Xk, Version::V2, true))
            .await
            .unwrap();
        let b = connect(&d.base(), options(Pattern::Xk, Version::V2, true))
            .await
            .unwrap();
        let Err(refused) = connect(&d.base(), options(Pattern::Xk, Version::V2, true)).await else {
            panic!("a third session from one source was admitted");
        };
        assert!(refused.to_string().contains("429"), "{refused}");
        a.close().await.unwrap();
        // The share is freed when the session ends (the server sees the close first).
        let mut admitted = None;
        for _ in 0..50 {
            if let Ok(c) = connect(&d.base(), options(Pattern::Xk, Version::V2, true)).await {
                admitted = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admitted.expect("a session is admitted once another ended");
        drop(b);
    });
}

#[test]
fn five_thousand_pipelined_pings_cross_the_rekey_in_order() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let c = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        let (mut tx, mut rx) = c.split();
        const N: u64 = 5_000;
        let sending = async {
            for id in 1..=N {
                tx.feed(&ClientMessage::Ping { id: id.into() })
                    .await
                    .unwrap();
            }
            tx.flush().await.unwrap();
        };
        let receiving = async {
            for id in 1..=N {
                let m = tokio::time::timeout(WAIT, rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(m, ServerMessage::Pong { id: id.into() });
            }
        };
        tokio::join!(sending, receiving);
    });
}

#[test]
fn request_limits_answer_errors_and_keep_the_session() {
    let d = Daemon::start("[limits]\nrelay_bytes_per_second = 32768\n");
    runtime().block_on(async {
        let mut a = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        let mut b = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        let idb = b.device_id.clone();

        a.send(&ClientMessage::Signal {
            to: idb.clone(),
            body: json!("x".repeat(20_000)),
        })
        .await
        .unwrap();
        expect_error(recv(&mut a).await, ErrorCode::TooLarge);
        let big = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 16_385]);
        a.send(&ClientMessage::Relay {
            to: idb.clone(),
            data: big,
        })
        .await
        .unwrap();
        expect_error(recv(&mut a).await, ErrorCode::TooLarge);

        // Burst of one second's worth (32 KiB): two maximal relays pass, the third waits.
        let max = base64::engine::general_purpose::STANDARD.encode(vec![2u8; 16_384]);
        for _ in 0..2 {
            a.send(&ClientMessage::Relay {
                to: idb.clone(),
                data: max.clone(),
            })
            .await
            .unwrap();
            assert!(matches!(recv(&mut b).await, ServerMessage::Relay { .. }));
        }
        a.send(&ClientMessage::Relay {
            to: idb.clone(),
            data: max.clone(),
        })
        .await
        .unwrap();
        expect_error(recv(&mut a).await, ErrorCode::RateLimited);

        a.send_plaintext(b"not json").await.unwrap();
        expect_error(recv(&mut a).await, ErrorCode::BadRequest);
        a.send_plaintext(br#"{"type":"subscribe"}"#).await.unwrap();
        expect_error(recv(&mut a).await, ErrorCode::BadRequest);
        ping(&mut a, 99).await;

        let m = metrics(&d).await;
        assert_eq!(metric(&m, "commucat_relay_bytes_total"), 32_768);
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn transport_violations_close_the_session() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let mut c = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        c.socket_mut()
            .send(Message::Text("hi".into()))
            .await
            .unwrap();
        assert_eq!(close_code(c.socket_mut()).await, Some(4400));

        let mut c = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        send_binary(c.socket_mut(), vec![0u8; 65_552]).await;
        assert_eq!(close_code(c.socket_mut()).await, Some(4400));

        let mut c = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        send_binary(c.socket_mut(), vec![0u8; 64]).await;
        assert_eq!(close_code(c.socket_mut()).await, Some(4401));

        let m = metrics(&d).await;
        for reason in ["text_frame", "too_large", "decrypt"] {
            assert_eq!(
                metric(
                    &m,
                    &format!("commucat_session_errors_total{{reason=\"{reason}\"}}")
                ),
                1,
                "{reason}"
            );
        }
    });
}

#[test]
fn newer_session_replaces_the_older_one() {
    let d = Daemon::start("");
    runtime().block_on(async {
        for pattern in [Pattern::Xk, Pattern::Ik] {
            let secret = fresh_device_secret();
            let o = with_key(options(pattern, Version::V2, true), &secret);
            let mut old = connect(&d.base(), o.clone()).await.unwrap();
            let mut new = connect(&d.base(), o).await.unwrap();
            assert_eq!(
                closed_with(tokio::time::timeout(WAIT, old.recv()).await.unwrap()).await,
                Some(4409)
            );
            ping(&mut new, 3).await;
            new.send(&ClientMessage::Lookup {
                device: device_id(&secret),
            })
            .await
            .unwrap();
            assert_eq!(
                recv(&mut new).await,
                ServerMessage::Presence {
                    device: device_id(&secret),
                    online: true
                }
            );
            new.close().await.unwrap();
        }
        let m = metrics(&d).await;
        assert_eq!(metric(&m, "commucat_sessions_replaced_total"), 2);
    });
}

#[test]
fn idle_sessions_close_with_4408_and_keepalives_count() {
    let d = Daemon::start("[session]\nttl_seconds = 1\n");
    runtime().block_on(async {
        let mut alive = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            alive.keepalive().await.unwrap();
        }
        ping(&mut alive, 1).await;

        let mut idle = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        assert_eq!(
            closed_with(tokio::time::timeout(WAIT, idle.recv()).await.unwrap()).await,
            Some(4408)
        );
        let m = metrics(&d).await;
        assert!(metric(&m, "commucat_sessions_timed_out_total") >= 1);
    });
}

#[test]
fn connect_rate_limit_and_session_cap() {
    let d =
        Daemon::start("[limits]\nconnect_rate_per_ip = 1\nconnect_burst = 3\nmax_sessions = 1\n");
    runtime().block_on(async {
        let first = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        let err = connect(&d.base(), ConnectOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.close_code(), Some(4429), "{err:?}");
        let mut limited = None;
        for _ in 0..5 {
            let r = client().get(d.url("/api/connect")).send().await.unwrap();
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.expect("no 429");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], json!(429));
        let m = metrics(&d).await;
        assert!(metric(&m, "commucat_connect_rate_limited_total") >= 1);
        assert_eq!(metric(&m, "commucat_sessions_refused_total"), 1);
        first.close().await.unwrap();
    });
}

#[test]
fn cli_connect_prints_the_session() {
    let d = Daemon::start("");
    let mut cmd = std::process::Command::new(common::CLI);
    cmd.args(["connect", &d.base(), "--pattern", "ik", "--version", "1"]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    let session = field("session_id");
    assert_eq!(session.len(), 32);
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(field("device_id").len(), 64);
    assert_eq!(field("pq"), "true");
    assert_eq!(field("pattern"), "IK");
    let m = runtime().block_on(metrics(&d));
    assert_eq!(handshakes(&m, "IK", "1", "true", "ok"), 1);
}

/// A CLI child that is killed and reaped however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("no line containing {wanted:?}");
}

#[test]
fn cli_chat_carries_lines_between_two_devices() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let d = Daemon::start("");
    let dir = common::temp_dir("chat");
    let key = |name: &str| dir.join(name).display().to_string();
    let id_of = |key_file: String| {
        let mut cmd = Command::new(common::CLI);
        cmd.args(["connect", &d.base(), "--key-file", &key_file]);
        let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
        assert!(status.success(), "{stderr}");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("device_id="))
            .unwrap()
            .to_string()
    };
    let (ida, idb) = (id_of(key("a.key")), id_of(key("b.key")));
    assert_eq!(ida, id_of(key("a.key")), "the key file gives a stable id");

    let chat = |to: &str, key_file: String, pattern: &str| {
        Child(
            Command::new(common::CLI)
                .args(["chat", &d.base(), "--to", to, "--key-file", &key_file])
                .args(["--pattern", pattern])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut b = chat(&ida, key("b.key"), "ik");
    let b_out = stdout_lines(&mut b.0);
    wait_for_line(&b_out, &format!("device_id={idb}"));
    let mut a = chat(&idb, key("a.key"), "xk");
    let a_out = stdout_lines(&mut a.0);
    wait_for_line(&a_out, &format!("device_id={ida}"));
    let mut a_in = a.0.stdin.take().unwrap();
    writeln!(a_in, "hello over the server\n/relay raw bytes").unwrap();
    a_in.flush().unwrap();
    assert_eq!(
        wait_for_line(&b_out, "hello"),
        format!("{ida}: hello over the server")
    );
    assert_eq!(
        wait_for_line(&b_out, "[relay]"),
        format!("{ida} [relay]: raw bytes")
    );
    let mut b_in = b.0.stdin.take().unwrap();
    writeln!(b_in, "hi back").unwrap();
    b_in.flush().unwrap();
    assert_eq!(wait_for_line(&a_out, "hi back"), format!("{idb}: hi back"));
    drop(a_in);
    drop(b_in);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shutdown_closes_sessions_with_1001_and_exits_cleanly() {
    let d = Daemon::start("");
    let pid = d.pid();
    let rt = runtime();
    let mut conn = rt.block_on(async {
        connect(&d.base(), options(Pattern::Xk, Version::V1, true))
            .await
            .unwrap()
    });
    common::sigterm(pid);
    let code = rt.block_on(async {
        closed_with(tokio::time::timeout(WAIT, conn.recv()).await.unwrap()).await
    });
    assert_eq!(code, Some(1001));
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn a_pinned_server_identity_is_enforced() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let info = fetch_server_info(&client(), &d.base(), None).await.unwrap();
        let mut o = options(Pattern::Xk, Version::V2, true);
        o.server_identity = Some(info.device_ca_public.to_uppercase());
        connect(&d.base(), o.clone())
            .await
            .expect("the right pin connects");
        o.server_identity = Some("00".repeat(1952));
        match connect(&d.base(), o).await {
            Err(ConnectError::Http(ClientError::Identity {
                reason: IdentityError::NotPinned,
                ..
            })) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a wrong pin must not connect"),
        }
    });
}

/// A TCP relay to `upstream` for one connection that can stop reading from the daemon
/// (`freeze`), as a client that stops reading its socket does.
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (String, std::sync::Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let freeze = std::sync::Arc::new(tokio::sync::Notify::new());
    let frozen = freeze.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        // A small receive window, so the daemon's writes back up soon.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let server = socket.connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = frozen.notified() => break,
                n = server_read.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
        // Frozen: hold both sockets open and read nothing more.
        std::future::pending::<()>().await;
        drop((server_read, client_write));
    });
    (base, freeze)
}

#[test]
fn a_session_whose_client_stops_reading_is_dropped_at_the_write_deadline() {
    // A long idle limit: only the write deadline can end the stalled session. The byte
    // budget is lifted so that A's signals really reach B's queue.
    let d = Daemon::start(
        "[session]\nttl_seconds = 600\n[limits]\nhttp_write_timeout_seconds = 1\nrelay_bytes_per_second = 100000000\n",
    );
    runtime().block_on(async {
        let info = info(&d).await;
        let (proxied, freeze) = freezable_proxy(d.http).await;
        let mut a = connect(&d.base(), ConnectOptions::default()).await.unwrap();
        let mut b = connect_with_info(&proxied, &info, ConnectOptions::default())
            .await
            .unwrap();
        let idb = b.device_id.clone();
        ping(&mut b, 1).await;
        freeze.notify_one();

        // About 10 MB for B: far more than the daemon's socket buffers hold, so its
        // writes to B stall; the queue then fills and A is told `rate_limited`.
        let body = json!("s".repeat(15_000));
        let mut refused = 0;
        for _ in 0..700 {
            a.send(&ClientMessage::Signal {
                to: idb.clone(),
                body: body.clone(),
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        a.send(&ClientMessage::Lookup {
            device: idb.clone(),
        })
        .await
        .unwrap();
        let online = loop {
            match recv(&mut a).await {
                ServerMessage::Presence { online, .. } => break online,
                ServerMessage::Error { code, detail } => {
                    assert!(
                        matches!(code, ErrorCode::RateLimited | ErrorCode::PeerOffline),
                        "{code:?} {detail}"
                    );
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        };
        assert!(refused > 0, "B's writes never backed up");
        assert!(!online, "a client that reads nothing is still reachable");
        a.close().await.unwrap();
        drop(b);
    });
}
