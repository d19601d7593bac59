//! Cluster mode (`[cluster]`, docs/cluster.md) with real daemons on one real
//! `redis-server` on loopback: shared keys, cross-node signal, relay, lookup and
//! replacement, rotation, node death, Redis outages, wrong secrets, import.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::redis::{Redis, TlsFiles};
use common::{Daemon, client, run_to_exit, runtime, temp_dir};
use commucat::client::connect::{
    ConnectOptions, Connection, connect, connect_with_info, device_id, fresh_device_secret,
};
use commucat::client::http::{fetch_assist, fetch_server_info, verify_server_info};
use commucat::client::stun::probe_addr;
use commucat::discovery::ServerInfo;
use commucat::keys::bundle::{decode_verifying_key, device_certificate_text, verify_hex};
use commucat::signal::messages::{ClientMessage, ErrorCode, ServerMessage};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const OTHER_SECRET: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// A node's configuration: heartbeat 1 s, nodes gone after 3 s.
fn node_config(redis: &Redis, secret: &str, extra: &str) -> String {
    format!(
        "{extra}\n[cluster]\nredis_url = \"{}\"\nkeys_secret = \"{secret}\"\n\
         heartbeat_seconds = 1\nnode_ttl_seconds = 3\n",
        redis.url()
    )
}

fn node(redis: &Redis) -> Daemon {
    Daemon::start(&node_config(redis, SECRET, ""))
}

/// A session on `d` with a fresh device.
async fn open(d: &Daemon) -> Connection {
    connect(&d.base(), ConnectOptions::default()).await.unwrap()
}

async fn info(d: &Daemon) -> ServerInfo {
    fetch_server_info(&client(), &d.base(), None).await.unwrap()
}

async fn recv(c: &mut Connection) -> ServerMessage {
    tokio::time::timeout(WAIT, c.recv())
        .await
        .expect("no message within the bound")
        .unwrap()
}

/// A signal from `from` to `to` that the server answers with `code`.
async fn signal_refused(from: &mut Connection, to: &str, n: u64, code: ErrorCode) {
    from.send(&ClientMessage::Signal {
        to: to.to_owned(),
        body: json!(n),
    })
    .await
    .unwrap();
    expect_error(recv(from).await, code);
}

fn expect_error(m: ServerMessage, expected: ErrorCode) {
    match m {
        ServerMessage::Error { code, .. } => assert_eq!(code, expected),
        other => panic!("expected error {expected:?}, got {other:?}"),
    }
}

async fn lookup(c: &mut Connection, device: &str) -> ServerMessage {
    c.send(&ClientMessage::Lookup {
        device: device.to_owned(),
    })
    .await
    .unwrap();
    recv(c).await
}

fn presence(device: &str, online: bool) -> ServerMessage {
    ServerMessage::Presence {
        device: device.to_owned(),
        online,
    }
}

/// Asks `lookup` until it answers `online` (bounded); how long it took.
async fn wait_presence(
    c: &mut Connection,
    device: &str,
    online: bool,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = lookup(c, device).await;
        if got == presence(device, online) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{device} still not online={online} after {limit:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key bundle part of server-info: what every node must publish identically.
fn bundle(i: &ServerInfo) -> (String, String, Vec<(u32, String)>) {
    (
        i.key_bundle_text(),
        i.post_quantum.key_bundle_signature_hex.clone(),
        i.noise_keys
            .iter()
            .map(|k| (k.version, k.public.clone()))
            .collect(),
    )
}

async fn signal(from: &mut Connection, to: &mut Connection, n: u64) {
    from.send(&ClientMessage::Signal {
        to: to.device_id.clone(),
        body: json!({"n": n}),
    })
    .await
    .unwrap();
    assert_eq!(
        recv(to).await,
        ServerMessage::Signal {
            from: from.device_id.clone(),
            body: json!({"n": n})
        }
    );
}

async fn relay(from: &mut Connection, to: &mut Connection, bytes: &[u8]) {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    from.send(&ClientMessage::Relay {
        to: to.device_id.clone(),
        data: data.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        recv(to).await,
        ServerMessage::Relay {
            from: from.device_id.clone(),
            data
        }
    );
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

#[test]
fn nodes_share_keys_and_route_signal_relay_lookup_and_replacement() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    runtime().block_on(async {
        let infos = [
            info(&nodes[0]).await,
            info(&nodes[1]).await,
            info(&nodes[2]).await,
        ];
        assert!(!infos[0].noise_keys.is_empty());
        assert_eq!(bundle(&infos[0]), bundle(&infos[1]));
        assert_eq!(bundle(&infos[0]), bundle(&infos[2]));
        assert_eq!(infos[0].device_ca_public, infos[2].device_ca_public);

        let (n1, n2) = (&nodes[0], &nodes[1]);
        let mut a = open(n1).await;
        let secret_b = fresh_device_secret();
        let ob = ConnectOptions {
            device_secret: Some(secret_b.clone()),
            ..ConnectOptions::default()
        };
        // B reads server-info from node 3 and holds its session on node 2.
        let mut b = connect_with_info(&n2.base(), &infos[2], ob.clone())
            .await
            .unwrap();
        let (ida, idb) = (a.device_id.clone(), b.device_id.clone());

        signal(&mut a, &mut b, 1).await;
        signal(&mut b, &mut a, 2).await;
        relay(&mut a, &mut b, b"from a").await;
        relay(&mut b, &mut a, &[7u8; 16 * 1024]).await;
        assert_eq!(lookup(&mut a, &idb).await, presence(&idb, true));
        assert_eq!(lookup(&mut b, &ida).await, presence(&ida, true));
        let nobody = "ab".repeat(32);
        assert_eq!(lookup(&mut a, &nobody).await, presence(&nobody, false));
        signal_refused(&mut a, &nobody, 1, ErrorCode::PeerOffline).await;

        // A newer session of B on node 1 closes the one on node 2 with 4409.
        let mut b2 = connect(&n1.base(), ob).await.unwrap();
        let ended = tokio::time::timeout(WAIT, b.recv()).await.unwrap();
        match ended {
            Err(e) => assert_eq!(e.close_code(), Some(4409), "{e:?}"),
            Ok(m) => panic!("expected 4409, got {m:?}"),
        }
        assert_eq!(b2.device_id, device_id(&secret_b));
        signal(&mut a, &mut b2, 3).await;
        // Node 3 sees B on node 1 now.
        let mut c = open(&nodes[2]).await;
        signal(&mut c, &mut b2, 4).await;
        relay(&mut b2, &mut c, b"back").await;

        // Closed: offline everywhere at once.
        b2.close().await.unwrap();
        wait_presence(&mut c, &idb, false, Duration::from_secs(5)).await;

        let m1 = common::fetch_metrics(n1).await;
        assert_eq!(metric(&m1, "commucat_cluster_connected"), 1, "{m1}");
        assert!(metric(&m1, "commucat_cluster_messages_total{direction=\"sent\"}") >= 2);
        assert!(
            metric(
                &m1,
                "commucat_cluster_messages_total{direction=\"received\"}"
            ) >= 2
        );
        assert!(m1.contains("commucat_cluster_redis_rtt_seconds_count"));
        let m2 = common::fetch_metrics(n2).await;
        assert!(metric(&m2, "commucat_sessions_replaced_total") >= 1, "{m2}");
    });
}

#[test]
fn a_killed_node_s_devices_go_offline_within_node_ttl() {
    let redis = Redis::start();
    let survivor = node(&redis);
    let doomed = node(&redis);
    runtime().block_on(async {
        let mut a = open(&survivor).await;
        let b = open(&doomed).await;
        let idb = b.device_id.clone();
        assert_eq!(lookup(&mut a, &idb).await, presence(&idb, true));
        // SIGKILL: no clean-up at all.
        doomed.kill9();
        let took = wait_presence(
            &mut a,
            &idb,
            false,
            Duration::from_secs(3) + Duration::from_secs(2),
        )
        .await;
        assert!(took <= Duration::from_secs(4), "offline after {took:?}");
        signal_refused(&mut a, &idb, 1, ErrorCode::PeerOffline).await;
        // The survivor's sweep forgets the dead node's entry; A's stays.
        let deadline = Instant::now() + Duration::from_secs(5);
        while redis.integer(&["HLEN", "commucat:devices"]) != 1 {
            assert!(Instant::now() < deadline, "the dead node's entry stayed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ida = a.device_id.clone();
        assert_eq!(lookup(&mut a, &ida).await, presence(&ida, true));
        drop(b);
    });
}

#[test]
fn a_wrong_keys_secret_refuses_to_start() {
    let redis = Redis::start();
    let _first = node(&redis);
    let failed = Daemon::refuses_to_start(
        &temp_dir("wrong-secret"),
        &node_config(&redis, OTHER_SECRET, ""),
        &[],
        &["keys_secret"],
    );
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
}

#[test]
fn an_unreachable_redis_refuses_to_start_and_names_it() {
    let mut redis = Redis::start();
    let config = node_config(&redis, SECRET, "");
    redis.kill();
    let failed =
        Daemon::refuses_to_start(&temp_dir("no-redis"), &config, &[], &["cannot reach Redis"]);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
}

/// A node's configuration for Redis over TLS: `ca` to trust, and (when `client_cert`)
/// the client certificate Redis asks for.
fn tls_node_config(
    redis: &Redis,
    tls: &TlsFiles,
    ca: &std::path::Path,
    client_cert: bool,
) -> String {
    let mut config = format!(
        "[cluster]\nredis_url = \"{}\"\nkeys_secret = \"{SECRET}\"\n\
         heartbeat_seconds = 1\nnode_ttl_seconds = 3\nredis_ca_file = \"{}\"\n",
        redis.tls_url(),
        ca.display()
    );
    if client_cert {
        config.push_str(&format!(
            "redis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"\n",
            tls.path("client.pem").display(),
            tls.path("client.key").display()
        ));
    }
    config
}

/// `rediss://`: the nodes verify Redis' certificate against a private CA and present
/// client certificates; keys, lookup and signals cross nodes as over plain TCP. A node
/// that does not trust Redis' certificate, or has no client certificate to show,
/// refuses to start and says it could not reach Redis.
#[test]
fn nodes_reach_redis_over_tls_with_a_private_ca_and_client_certificates() {
    let tls = TlsFiles::generate();
    let redis = Redis::start_tls(&tls);
    let config = tls_node_config(&redis, &tls, &tls.path("ca.pem"), true);
    let n1 = Daemon::start(&config);
    let n2 = Daemon::start(&config);
    runtime().block_on(async {
        assert_eq!(bundle(&info(&n1).await), bundle(&info(&n2).await));
        let mut a = open(&n1).await;
        let mut b = open(&n2).await;
        let idb = b.device_id.clone();
        wait_presence(&mut a, &idb, true, Duration::from_secs(5)).await;
        signal(&mut a, &mut b, 1).await;
        signal(&mut b, &mut a, 2).await;
    });

    let stranger = TlsFiles::generate();
    let untrusting = tls_node_config(&redis, &tls, &stranger.path("ca.pem"), true);
    let failed = Daemon::refuses_to_start(
        &temp_dir("tls-other-ca"),
        &untrusting,
        &[],
        &["cannot reach Redis", "certificate"],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    // A CA file without a PEM certificate (DER, say) is a configuration error (exit 2)
    // naming the setting, not a failed handshake.
    let der = stranger.dir.join("ca.der");
    std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a]).unwrap();
    let failed = Daemon::refuses_to_start(
        &temp_dir("tls-der-ca"),
        &tls_node_config(&redis, &tls, &der, true),
        &[],
        &["cluster.redis_ca_file", "holds no certificate"],
    );
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
    let anonymous = tls_node_config(&redis, &tls, &tls.path("ca.pem"), false);
    let failed = Daemon::refuses_to_start(
        &temp_dir("tls-no-client-cert"),
        &anonymous,
        &[],
        &["cannot reach Redis"],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
}

/// A single node's state directory (it made its keys and stopped) and its server-info.
fn single_node_keys(name: &str) -> (std::path::PathBuf, ServerInfo) {
    let dir = temp_dir(name);
    let single = Daemon::start_in(&dir, "", &[]);
    let info = runtime().block_on(info(&single));
    single.stop();
    (dir, info)
}

/// `commucat cluster import [--force]` of `dir`'s state into `redis`.
fn import_into(
    redis: &Redis,
    dir: &std::path::Path,
    force: bool,
) -> (std::process::ExitStatus, String, String) {
    let config_path = dir.join("cluster.toml");
    std::fs::write(&config_path, node_config(redis, SECRET, "")).unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("--config")
        .arg(&config_path)
        .env("COMMUCAT_SERVER_STATE_DIR", dir.join("state"))
        .args(["cluster", "import"]);
    if force {
        cmd.arg("--force");
    }
    run_to_exit(cmd, Duration::from_secs(30))
}

#[test]
fn cluster_import_keeps_the_single_node_keys() {
    let (dir, before) = single_node_keys("import");
    let redis = Redis::start();
    let import = |force: bool| import_into(&redis, &dir, force);
    let (status, out, err) = import(false);
    assert!(status.success(), "{out}{err}");
    let (status, _, err) = import(false);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("--force"), "{err}");
    let (status, out, err) = import(true);
    assert!(status.success(), "{out}{err}");

    // Two nodes with fresh state directories serve the imported keys.
    let n1 = node(&redis);
    let n2 = node(&redis);
    runtime().block_on(async {
        let (i1, i2) = (info(&n1).await, info(&n2).await);
        assert_eq!(i1.device_ca_public, before.device_ca_public);
        assert_eq!(
            i1.post_quantum.kem_public_hex,
            before.post_quantum.kem_public_hex
        );
        assert_eq!(i1.noise_public, before.noise_public);
        assert_eq!(bundle(&i1), bundle(&before));
        assert_eq!(bundle(&i2), bundle(&before));
        // A client holding the old server-info connects to either node.
        for n in [&n1, &n2] {
            let mut c = connect_with_info(&n.base(), &before, ConnectOptions::default())
                .await
                .unwrap();
            c.send(&ClientMessage::Ping { id: 1.into() }).await.unwrap();
            assert_eq!(recv(&mut c).await, ServerMessage::Pong { id: 1.into() });
        }
    });
}

/// What an assist response advertises: Noise key, KEM and identity keys, and the ICE
/// credential it issued (username fragment, password).
struct Advice {
    noise: String,
    kem: String,
    identity: String,
    ice: (String, String),
}

async fn advice(d: &Daemon) -> Advice {
    let a = fetch_assist(&client(), &d.base(), None, None)
        .await
        .unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    Advice {
        noise: text(&a["noise"]["server_static_public_hex"]),
        kem: text(&a["pq"]["kem_public_hex"]),
        identity: text(&a["pq"]["signature_public_hex"]),
        ice: (
            text(&a["ice"]["username_fragment"]),
            text(&a["ice"]["password"]),
        ),
    }
}

/// A STUN check with an assist credential against `d`'s ICE-lite responder: `None` when
/// it authenticates, else the error code.
async fn stun_check(d: &Daemon, (ufrag, password): &(String, String)) -> Option<u16> {
    let creds = Some((format!("{ufrag}:peer"), password.clone()));
    let (report, _) = probe_addr(d.stun[0], creds, false, Duration::from_secs(5), false)
        .await
        .unwrap();
    match report.error {
        None => {
            assert_eq!(report.integrity, Some(true), "{report}");
            None
        }
        Some((code, _)) => Some(code),
    }
}

/// A device certificate over the session, checked against `info`'s identity.
async fn certify_verifies(c: &mut Connection, info: &ServerInfo) -> bool {
    c.send(&ClientMessage::Certify {}).await.unwrap();
    let ServerMessage::Certificate {
        device_id,
        not_before,
        not_after,
        signature_hex,
    } = recv(c).await
    else {
        panic!("expected a certificate")
    };
    let vk = decode_verifying_key(&info.device_ca_public).unwrap();
    let text = device_certificate_text(&info.domain, &device_id, &not_before, &not_after);
    verify_hex(&vk, text.as_bytes(), &signature_hex).is_ok()
}

#[test]
fn a_forced_import_is_adopted_live_by_every_running_node() {
    // A single node's keys: another identity, KEM key, ICE secret and Noise ring than
    // the cluster's.
    let (dir, imported) = single_node_keys("swap");

    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis)];
    let rt = runtime();
    let (old, mut session, old_ice) = rt.block_on(async {
        let old = info(&nodes[0]).await;
        assert_ne!(old.device_ca_public, imported.device_ca_public);
        // A session and a certificate (cached by the node) from before the swap, and an
        // ICE credential issued before it.
        let mut session = open(&nodes[1]).await;
        assert!(certify_verifies(&mut session, &old).await);
        let old_ice = advice(&nodes[0]).await.ice;
        assert_eq!(stun_check(&nodes[1], &old_ice).await, None);
        (old, session, old_ice)
    });

    let (status, out, err) = import_into(&redis, &dir, true);
    assert!(status.success(), "{out}{err}");
    let swapped = Instant::now();

    rt.block_on(async {
        // Within a bounded wait (heartbeat 1 s), both nodes serve the imported keys.
        let mut infos = Vec::new();
        for n in &nodes {
            let i = loop {
                let i = info(n).await;
                if i.device_ca_public == imported.device_ca_public {
                    break i;
                }
                assert!(
                    swapped.elapsed() < Duration::from_secs(10),
                    "node {} still serves the old identity",
                    n.base()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            infos.push(i);
        }
        for i in &infos {
            // fetch_server_info verified the signature with the document's identity;
            // now with the imported identity pinned as well.
            verify_server_info(i, Some(&imported.device_ca_public)).unwrap();
            assert_eq!(
                i.post_quantum.kem_public_hex,
                imported.post_quantum.kem_public_hex
            );
            assert_eq!(
                i.post_quantum.signature_public_hex,
                imported.device_ca_public
            );
            assert_eq!(bundle(i), bundle(&imported));
            assert_ne!(bundle(i), bundle(&old));
        }
        assert_eq!(bundle(&infos[0]), bundle(&infos[1]));

        for (n, other) in [(&nodes[0], &nodes[1]), (&nodes[1], &nodes[0])] {
            // A fresh handshake with the new server-info: new Noise key, new KEM key.
            let mut c = connect_with_info(&n.base(), &infos[0], ConnectOptions::default())
                .await
                .unwrap();
            c.send(&ClientMessage::Ping { id: 1.into() }).await.unwrap();
            assert_eq!(recv(&mut c).await, ServerMessage::Pong { id: 1.into() });
            // Assist advertises the new keys; its ICE credential authenticates at
            // either node's STUN responder, and so does the old one until it expires
            // (live ICE pairs keep passing their consent checks).
            let a = advice(n).await;
            assert_eq!(a.noise, imported.noise_public);
            assert_eq!(Some(&a.kem), imported.post_quantum.kem_public_hex.as_ref());
            assert_eq!(a.identity, imported.device_ca_public);
            assert_eq!(stun_check(n, &a.ice).await, None);
            assert_eq!(stun_check(other, &a.ice).await, None);
            assert_eq!(stun_check(n, &old_ice).await, None);
        }

        // The session from before the swap still answers, and its node now certifies
        // with the new identity (not the certificate it cached before).
        session
            .send(&ClientMessage::Ping { id: 2.into() })
            .await
            .unwrap();
        assert_eq!(
            recv(&mut session).await,
            ServerMessage::Pong { id: 2.into() }
        );
        assert!(certify_verifies(&mut session, &infos[1]).await);
    });
}

#[test]
fn rotation_under_load_against_random_nodes_gives_no_4404() {
    let redis = Redis::start();
    // Rotation 3 s after a key becomes valid; a minted key becomes valid 5 s later
    // (lead = node_ttl 3 + 2 × heartbeat 1): a new key every 8 s.
    // Handshakes as fast as the client goes: the per-source connect limit is not
    // what this test is about.
    let extra = "[crypto]\nrotation_interval = 3\nrotation_grace = 30\n\
                 [limits]\nconnect_rate_per_ip = 100000\nconnect_burst = 100000\n";
    let nodes = [
        Daemon::start(&node_config(&redis, SECRET, extra)),
        Daemon::start(&node_config(&redis, SECRET, extra)),
        Daemon::start(&node_config(&redis, SECRET, extra)),
    ];
    runtime().block_on(async {
        let first = info(&nodes[0]).await.noise_keys.last().unwrap().version;
        let started = Instant::now();
        let mut handshakes = 0u32;
        let mut i = 0usize;
        while started.elapsed() < Duration::from_secs(20) {
            let from = &nodes[i % 3];
            let to = &nodes[(i / 3 + 1) % 3];
            i += 1;
            let listed = info(from).await;
            match connect_with_info(&to.base(), &listed, ConnectOptions::default()).await {
                Ok(c) => {
                    handshakes += 1;
                    drop(c);
                }
                Err(e) => panic!(
                    "handshake {i} (key {:?}) failed: {e:?}",
                    listed.noise_keys.last().map(|k| k.version)
                ),
            }
        }
        let last = info(&nodes[0]).await.noise_keys.last().unwrap().version;
        assert!(last >= first + 2, "rotated from {first} to {last} only");
        assert!(handshakes > 20, "{handshakes}");
        let i0 = info(&nodes[0]).await;
        for n in &nodes[1..] {
            // Allow one reload interval for every node to agree.
            let mut same = false;
            for _ in 0..30 {
                if bundle(&info(n).await) == bundle(&info(&nodes[0]).await) {
                    same = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(same, "{:?} vs {:?}", bundle(&i0), bundle(&info(n).await));
        }
    });
}

#[test]
fn redis_outage_keeps_local_traffic_and_cross_node_traffic_returns() {
    let mut redis = Redis::start();
    let n1 = node(&redis);
    let n2 = node(&redis);
    runtime().block_on(async {
        let mut a = open(&n1).await;
        let mut a2 = open(&n1).await;
        let mut b = open(&n2).await;
        let idb = b.device_id.clone();
        signal(&mut a, &mut b, 1).await;
        // Nothing else is pending for A: its next message is the pong.
        a.send(&ClientMessage::Ping { id: 9.into() }).await.unwrap();
        assert_eq!(recv(&mut a).await, ServerMessage::Pong { id: 9.into() });

        redis.kill();
        // Wait (bounded) until node 1 noticed: cross-node answers `unavailable`.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = lookup(&mut a, &idb).await;
            if matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }
            ) {
                break;
            }
            assert!(Instant::now() < deadline, "still {m:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal_refused(&mut a, &idb, 2, ErrorCode::Unavailable).await;
        // Local traffic, server-info and new sessions keep working.
        signal(&mut a, &mut a2, 3).await;
        relay(&mut a2, &mut a, b"local").await;
        let ida2 = a2.device_id.clone();
        assert_eq!(lookup(&mut a, &ida2).await, presence(&ida2, true));
        let mut fresh = open(&n1).await;
        signal(&mut fresh, &mut a, 4).await;
        let m = common::fetch_metrics(&n1).await;
        assert_eq!(metric(&m, "commucat_cluster_connected"), 0, "{m}");

        // Redis returns empty; within seconds the nodes have re-registered.
        redis.restart();
        let took = wait_presence(&mut a, &idb, true, Duration::from_secs(10)).await;
        assert!(took < Duration::from_secs(10));
        signal(&mut a, &mut b, 5).await;
        signal(&mut b, &mut a, 6).await;
        let idf = fresh.device_id.clone();
        wait_presence(&mut b, &idf, true, Duration::from_secs(5)).await;
        signal(&mut b, &mut fresh, 7).await;
        // The keyring was written back: a new node joins with the same keys.
        let n3 = node(&redis);
        assert_eq!(bundle(&info(&n3).await), bundle(&info(&n1).await));
        let m = common::fetch_metrics(&n1).await;
        assert_eq!(metric(&m, "commucat_cluster_connected"), 1, "{m}");
        assert!(metric(&m, "commucat_cluster_reconnects_total") >= 1, "{m}");
    });
}

/// A hung Redis (stopped, so the kernel still holds its connections open) is noticed by
/// the subscription's ping: cross-node traffic answers `unavailable` at once instead of
/// after a timeout per message, and works again when Redis answers again.
#[test]
fn a_hung_redis_is_noticed_and_cross_node_traffic_returns_when_it_answers() {
    let redis = Redis::start();
    let n1 = node(&redis);
    let n2 = node(&redis);
    runtime().block_on(async {
        let mut a = open(&n1).await;
        let mut a2 = open(&n1).await;
        let mut b = open(&n2).await;
        let idb = b.device_id.clone();
        signal(&mut a, &mut b, 1).await;

        redis.freeze();
        // Heartbeat 1 s, then a ping unanswered for 2 s: well inside 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = common::fetch_metrics(&n1).await;
            if metric(&m, "commucat_cluster_connected") == 0 {
                break;
            }
            if Instant::now() > deadline {
                redis.thaw();
                panic!("node 1 still reads as connected to a hung Redis: {m}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal_refused(&mut a, &idb, 2, ErrorCode::Unavailable).await;
        signal(&mut a, &mut a2, 3).await;

        redis.thaw();
        wait_presence(&mut a, &idb, true, Duration::from_secs(10)).await;
        signal(&mut a, &mut b, 4).await;
        signal(&mut b, &mut a, 5).await;
    });
}

#[test]
fn a_full_queue_on_the_target_node_answers_rate_limited_to_the_sender() {
    let redis = Redis::start();
    // A budget large enough that the receiver's queue, not the sender's budget, is the limit.
    let extra = "[limits]\nrelay_bytes_per_second = 67108864\n";
    let n1 = Daemon::start(&node_config(&redis, SECRET, extra));
    let n2 = Daemon::start(&node_config(&redis, SECRET, extra));
    runtime().block_on(async {
        let mut a = open(&n1).await;
        // B never reads: its socket buffers, write backlog and queue fill up.
        let b = open(&n2).await;
        let data = base64::engine::general_purpose::STANDARD.encode(vec![9u8; 16 * 1024]);
        let relay = ClientMessage::Relay {
            to: b.device_id.clone(),
            data,
        };
        let mut sent = 0;
        let limited = 'outer: loop {
            for _ in 0..50 {
                a.send(&relay).await.unwrap();
                sent += 1;
            }
            if let Ok(m) = tokio::time::timeout(Duration::from_millis(50), a.recv()).await {
                break 'outer m.unwrap();
            }
            assert!(sent < 20_000, "no answer after {sent} relays of 16 KiB");
        };
        expect_error(limited, ErrorCode::RateLimited);
        let m = common::fetch_metrics(&n2).await;
        assert!(
            metric(&m, "commucat_cluster_messages_total{direction=\"dropped\"}") >= 1,
            "{m}"
        );
        drop(b);
    });
}
