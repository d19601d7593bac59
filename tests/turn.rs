//! The TURN credentials of `/api/p2p/assist` against a real coturn (issue #9), with the
//! client of `commucat::client::turn`.
//!
//! Every test starts its own `turnserver` on loopback (a free port, a small relay port
//! range, its own temporary directory for log, pid file and database, no configuration
//! file) and kills and reaps it when the guard drops. coturn must be installed: without
//! `turnserver` these tests fail, they do not skip. The one allowed skip is the IPv6
//! test on a machine without `::1`.

// Tests may unwrap (clippy.toml); `allow-unwrap-in-tests` does not reach the helpers of
// an integration test crate (nor those of `common`), so say it for the whole crate.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::coturn::*;
use common::{Daemon, client, runtime, temp_dir};
use commucat::client::turn::{self, AllocateOptions, Allocation, RelayFamily, TurnError};
use commucat::config::TurnUrl;
use commucat::ice::credentials::{turn_rest_credential, turn_rest_username};

/// A 16-character ICE username fragment for credentials minted by the tests.
const UFRAG: &str = "dGVzdHVmcmFnMDEy";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One `ice.servers[0]` entry of an assist response.
#[derive(Debug)]
struct Issued {
    server: SocketAddr,
    username: String,
    credential: String,
    assist: serde_json::Value,
}

/// `GET /api/p2p/assist`: the TURN server's address (from its first URL) and the
/// credentials.
async fn issued(d: &Daemon) -> Issued {
    let response = client().get(d.url("/api/p2p/assist")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let assist: serde_json::Value = response.json().await.unwrap();
    let entry = &assist["ice"]["servers"][0];
    let url = TurnUrl::parse(entry["urls"][0].as_str().unwrap()).unwrap();
    let ip: IpAddr = url.host.parse().unwrap();
    Issued {
        server: SocketAddr::new(ip, url.port),
        username: entry["username"].as_str().unwrap().to_owned(),
        credential: entry["credential"].as_str().unwrap().to_owned(),
        assist: assist["ice"]["servers"][0].clone(),
    }
}

/// Allocates, or fails the test with coturn's log.
async fn allocate_ok(coturn: &Coturn, username: &str, password: &str, step: &str) -> Allocation {
    allocate_ok_with(
        coturn,
        username,
        password,
        &AllocateOptions::default(),
        step,
    )
    .await
}

async fn allocate_ok_with(
    coturn: &Coturn,
    username: &str,
    password: &str,
    options: &AllocateOptions,
    step: &str,
) -> Allocation {
    match turn::allocate_with(coturn.addr, username, password, options, TIMEOUT).await {
        Ok(allocation) => {
            coturn.check(&allocation);
            allocation
        }
        Err(e) => panic!(
            "{step}: Allocate as {username:?} failed: {e}\n{}",
            coturn.log_tail()
        ),
    }
}

/// The allocation must be refused with 401.
async fn assert_refused(coturn: &Coturn, username: &str, password: &str, step: &str) {
    match turn::allocate(coturn.addr, username, password, TIMEOUT).await {
        Err(TurnError::Unauthorized { code: 401, .. }) => {}
        Err(e) => panic!(
            "{step}: expected 401 for {username:?}, got: {e}\n{}",
            coturn.log_tail()
        ),
        Ok(allocation) => panic!("{step}: {username:?} was allowed to allocate: {allocation:?}"),
    }
}

/// Two allocations exchange data through the relay: each permits the other's relayed
/// address, A sends to B's relayed address in a Send indication and B receives a Data
/// indication from A's relayed address, then the reverse.
async fn relay_both_ways(a: &mut Allocation, b: &mut Allocation) {
    a.create_permission(b.relayed().ip(), TIMEOUT)
        .await
        .unwrap();
    b.create_permission(a.relayed().ip(), TIMEOUT)
        .await
        .unwrap();
    a.send(b.relayed(), b"hello from A").await.unwrap();
    assert_eq!(
        b.recv(TIMEOUT).await.unwrap(),
        (a.relayed(), b"hello from A".to_vec())
    );
    b.send(a.relayed(), b"and back from B").await.unwrap();
    assert_eq!(
        a.recv(TIMEOUT).await.unwrap(),
        (b.relayed(), b"and back from B".to_vec())
    );
}

/// An allocation exchanges data with a plain UDP peer through the relay.
async fn relay_with_plain_peer(a: &mut Allocation) {
    let peer = tokio::net::UdpSocket::bind((a.relayed().ip(), 0))
        .await
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    a.create_permission(peer_addr.ip(), TIMEOUT).await.unwrap();
    a.send(peer_addr, b"to the peer").await.unwrap();
    let mut buf = [0u8; 64];
    let (len, from) = tokio::time::timeout(TIMEOUT, peer.recv_from(&mut buf))
        .await
        .expect("relayed datagram reached the peer")
        .unwrap();
    assert_eq!((&buf[..len], from), (&b"to the peer"[..], a.relayed()));
    peer.send_to(b"to the client", a.relayed()).await.unwrap();
    assert_eq!(
        a.recv(TIMEOUT).await.unwrap(),
        (peer_addr, b"to the client".to_vec())
    );
}

#[test]
fn assist_credentials_allocate_and_relay_both_ways() {
    let secret = "coturn-shared-secret-1";
    let coturn = Coturn::start(V4, &CoturnAuth::Secrets(vec![secret]), &[]);
    let d = Daemon::start(&rest_config(&turn_url(coturn.addr), &[secret]));
    let rt = runtime();
    rt.block_on(async {
        // Two devices, each with its own assist response.
        let first = issued(&d).await;
        let second = issued(&d).await;
        assert_eq!(first.server, coturn.addr);
        assert_ne!(first.username, second.username);
        assert_eq!(first.assist["ttl_secs"], 600);
        assert_eq!(first.assist["realm"], REALM);
        let mut a = allocate_ok(&coturn, &first.username, &first.credential, "A").await;
        let mut b = allocate_ok(&coturn, &second.username, &second.credential, "B").await;
        assert_ne!(a.relayed(), b.relayed());
        relay_both_ways(&mut a, &mut b).await;
        assert_eq!(
            a.refresh(1200, TIMEOUT).await.unwrap(),
            Duration::from_secs(1200)
        );
        // Below the default of 600 s the server grants the default (RFC 8656 §7.2).
        assert_eq!(
            a.refresh(300, TIMEOUT).await.unwrap(),
            Duration::from_secs(600)
        );
        a.release(TIMEOUT).await.unwrap();
        b.release(TIMEOUT).await.unwrap();
    });
}

#[test]
fn expired_and_foreign_credentials_are_refused() {
    let secret = "coturn-shared-secret-2";
    let coturn = Coturn::start(V4, &CoturnAuth::Secrets(vec![secret]), &[]);
    let rt = runtime();
    rt.block_on(async {
        // The control: minted the daemon's way with the right secret and a future expiry.
        let fresh = turn_rest_username(now() + 600, UFRAG);
        let good = turn_rest_credential(secret.as_bytes(), &fresh);
        let allocation = allocate_ok(&coturn, &fresh, &good, "fresh credential").await;
        allocation.release(TIMEOUT).await.unwrap();

        let expired = turn_rest_username(now() - 60, UFRAG);
        let signed = turn_rest_credential(secret.as_bytes(), &expired);
        assert_refused(&coturn, &expired, &signed, "expired a minute ago").await;

        let foreign = turn_rest_credential(b"another-secret", &fresh);
        assert_refused(&coturn, &fresh, &foreign, "signed with another secret").await;
    });
}

#[test]
fn static_credentials_from_assist_work() {
    let (name, password) = ("commucat-static", "static-password-1");
    let coturn = Coturn::start(V4, &CoturnAuth::User(name, password), &[]);
    let d = Daemon::start(&format!(
        "[[ice.turn]]\nurls = [\"{}\"]\nusername = \"{name}\"\npassword = \"{password}\"\nrealm = \"{REALM}\"\n",
        turn_url(coturn.addr)
    ));
    let rt = runtime();
    rt.block_on(async {
        let issued = issued(&d).await;
        assert_eq!(issued.server, coturn.addr);
        assert_eq!(
            (issued.username.as_str(), issued.credential.as_str()),
            (name, password)
        );
        assert!(issued.assist["ttl_secs"].is_null());
        let mut a = allocate_ok(&coturn, &issued.username, &issued.credential, "A").await;
        let mut b = allocate_ok(&coturn, &issued.username, &issued.credential, "B").await;
        relay_both_ways(&mut a, &mut b).await;
        relay_with_plain_peer(&mut a).await;
        a.release(TIMEOUT).await.unwrap();
        b.release(TIMEOUT).await.unwrap();
        assert_refused(&coturn, name, "not-the-password", "wrong password").await;
    });
}

/// After every step, an allocation with the daemon's current credentials must succeed,
/// and the daemon must sign with the first of its secrets.
async fn check_step(d: &Daemon, coturn: &Coturn, signing: &str, step: &str) -> Issued {
    let issued = issued(d).await;
    assert_eq!(issued.server, coturn.addr, "{step}");
    assert_eq!(
        issued.credential,
        turn_rest_credential(signing.as_bytes(), &issued.username),
        "{step}: the daemon signs with the first of its secrets"
    );
    let allocation = allocate_ok(coturn, &issued.username, &issued.credential, step).await;
    allocation.release(TIMEOUT).await.unwrap();
    issued
}

/// The runbook of docs/operations.md ("Rotating the TURN secret"): add the new secret to
/// coturn; put it first in the daemon's `secrets`; drop the old one from both. No step
/// may refuse the credentials the daemon hands out.
///
/// coturn is restarted here to change its `static-auth-secret` list, which it reads
/// only at start; a restart also drops its allocations (clients allocate again, with
/// credentials that stay valid). In production coturn keeps the secrets in its database
/// instead and reads them on every request, so they change without a restart
/// (`turnadmin --set-secret` / `--delete-secret`): `database_secrets_rotate_without_a_restart`.
#[test]
fn secret_rotation_without_downtime() {
    let (old, new) = ("rotation-secret-old", "rotation-secret-new");
    let rt = runtime();
    let coturn = Coturn::start(V4, &CoturnAuth::Secrets(vec![old]), &[]);
    let url = turn_url(coturn.addr);
    let dir = temp_dir("rotation");

    let d = Daemon::start_in(&dir, &rest_config(&url, &[old]), &[]);
    let before = rt.block_on(check_step(
        &d,
        &coturn,
        old,
        "1: coturn [old], daemon [old]",
    ));

    let coturn = coturn.restart(&CoturnAuth::Secrets(vec![new, old]));
    rt.block_on(check_step(
        &d,
        &coturn,
        old,
        "2: coturn [new, old], daemon [old]",
    ));

    assert!(d.stop().success());
    let d = Daemon::start_in(&dir, &rest_config(&url, &[new, old]), &[]);
    rt.block_on(async {
        check_step(&d, &coturn, new, "3: coturn [new, old], daemon [new, old]").await;
        // Credentials handed out before the switch keep working until they expire.
        let allocation = allocate_ok(&coturn, &before.username, &before.credential, "3: old").await;
        allocation.release(TIMEOUT).await.unwrap();
    });

    let coturn = coturn.restart(&CoturnAuth::Secrets(vec![new]));
    rt.block_on(async {
        check_step(&d, &coturn, new, "4: coturn [new], daemon [new, old]").await;
        // The old secret is gone from coturn: what it signed is refused from now on.
        assert_refused(&coturn, &before.username, &before.credential, "4: old").await;
    });

    assert!(d.stop().success());
    let d = Daemon::start_in(&dir, &rest_config(&url, &[new]), &[]);
    rt.block_on(check_step(
        &d,
        &coturn,
        new,
        "5: coturn [new], daemon [new]",
    ));
    drop(d);
}

/// The production variant of the runbook: the secrets live in coturn's database and
/// change with `turnadmin` while coturn runs, without a restart.
#[test]
fn database_secrets_rotate_without_a_restart() {
    let coturn = Coturn::start(V4, &CoturnAuth::Database, &[]);
    let mint = |secret: &str| {
        let username = turn_rest_username(now() + 600, UFRAG);
        let credential = turn_rest_credential(secret.as_bytes(), &username);
        (username, credential)
    };
    let (old, new) = (mint("db-secret-old"), mint("db-secret-new"));
    let rt = runtime();
    rt.block_on(async {
        assert_refused(&coturn, &old.0, &old.1, "no secret yet").await;
        coturn.turnadmin(&["--set-secret=db-secret-old"]);
        allocate_ok(&coturn, &old.0, &old.1, "old").await;
        coturn.turnadmin(&["--set-secret=db-secret-new"]);
        allocate_ok(&coturn, &new.0, &new.1, "new, old kept").await;
        allocate_ok(&coturn, &old.0, &old.1, "old, new added").await;
        coturn.turnadmin(&["--delete-secret=db-secret-old"]);
        allocate_ok(&coturn, &new.0, &new.1, "new, old deleted").await;
        assert_refused(&coturn, &old.0, &old.1, "old deleted").await;
    });
}

/// coturn's `--stale-nonce`: once the nonce has expired, a request gets 438 with a new
/// nonce, and the client repeats it with that one.
#[test]
fn a_stale_nonce_is_renewed() {
    let secret = "coturn-shared-secret-3";
    let coturn = Coturn::start(
        V4,
        &CoturnAuth::Secrets(vec![secret]),
        &["--stale-nonce=1", "--verbose"],
    );
    let rt = runtime();
    rt.block_on(async {
        let username = turn_rest_username(now() + 600, UFRAG);
        let password = turn_rest_credential(secret.as_bytes(), &username);
        let mut a = allocate_ok(&coturn, &username, &password, "allocate").await;
        // The nonce lives 1 s on coturn's clock, which ticks once a second: after 3.5 s
        // it has expired whatever the phase.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let granted = match a.refresh(600, TIMEOUT).await {
            Ok(granted) => granted,
            Err(e) => panic!(
                "refresh after the nonce expired: {e}\n{}",
                coturn.log_tail()
            ),
        };
        assert_eq!(granted, Duration::from_secs(600));
        a.release(TIMEOUT).await.unwrap();
    });
    let log = coturn.log();
    assert!(
        log.contains("error 438"),
        "coturn never answered 438, so the renewal was not exercised:\n{}",
        coturn.log_tail()
    );
}

#[test]
fn ipv6_relay() {
    if let Err(e) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        eprintln!("ipv6_relay skipped: cannot bind a UDP socket to [::1]:0 ({e})");
        return;
    }
    let secret = "coturn-shared-secret-6";
    let coturn = Coturn::start(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        &CoturnAuth::Secrets(vec![secret]),
        &[],
    );
    let d = Daemon::start(&rest_config(&turn_url(coturn.addr), &[secret]));
    let rt = runtime();
    rt.block_on(async {
        let first = issued(&d).await;
        let second = issued(&d).await;
        assert_eq!(first.server, coturn.addr);
        let v6 = AllocateOptions {
            family: Some(RelayFamily::Ipv6),
            ..AllocateOptions::default()
        };
        let mut a = allocate_ok_with(&coturn, &first.username, &first.credential, &v6, "A").await;
        let mut b = allocate_ok_with(&coturn, &second.username, &second.credential, &v6, "B").await;
        assert!(a.relayed().is_ipv6() && a.mapped().is_ipv6(), "{a:?}");
        relay_both_ways(&mut a, &mut b).await;
        relay_with_plain_peer(&mut a).await;
        a.release(TIMEOUT).await.unwrap();
        b.release(TIMEOUT).await.unwrap();
    });
}
