//! The ICE-lite STUN responder of the running daemon, with a client written here, with
//! `commucat-cli stun`, and with coturn's `turnutils_stunclient` (a client nobody here
//! wrote; `.ci/run` installs Debian's `coturn`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{CLI, Daemon, client, run_to_exit, runtime, temp_dir};
use commucat::ice::stun::{IntegrityKind, RequestBuilder};
use hmac::{KeyInit, Mac};

/// Requests come from the library's builder; responses are read with the code below,
/// written here from RFC 8489 and independent of the library's.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// A Binding request with USERNAME and MESSAGE-INTEGRITY keyed with `password`.
fn signed(tid: [u8; 12], username: &str, extra: &[(u16, &[u8])], password: &str) -> Vec<u8> {
    let mut m = RequestBuilder::binding(tid).username(username);
    for (kind, value) in extra {
        m = m.attribute(*kind, value);
    }
    m.integrity(IntegrityKind::Sha1, password.as_bytes())
        .build()
}

/// Walks the attributes of a response: (type, value).
fn attrs(m: &[u8]) -> Vec<(u16, Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 20;
    while i + 4 <= m.len() {
        let t = u16::from_be_bytes([m[i], m[i + 1]]);
        let l = u16::from_be_bytes([m[i + 2], m[i + 3]]) as usize;
        out.push((t, m[i + 4..i + 4 + l].to_vec(), i));
        i += 4 + l.div_ceil(4) * 4;
    }
    out
}

fn xor_mapped(m: &[u8]) -> SocketAddr {
    let (_, v, _) = attrs(m)
        .into_iter()
        .find(|(t, _, _)| *t == 0x0020)
        .expect("XOR-MAPPED-ADDRESS");
    assert_eq!(v[1], 0x01, "IPv4");
    let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
    let ip = std::net::Ipv4Addr::new(
        v[4] ^ COOKIE[0],
        v[5] ^ COOKIE[1],
        v[6] ^ COOKIE[2],
        v[7] ^ COOKIE[3],
    );
    SocketAddr::from((ip, port))
}

fn exchange(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(req, to).unwrap();
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn assist_credentials(d: &Daemon) -> (String, String) {
    let a: serde_json::Value = runtime().block_on(async {
        client()
            .get(d.url("/api/p2p/assist"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    (
        a["ice"]["username_fragment"].as_str().unwrap().to_string(),
        a["ice"]["password"].as_str().unwrap().to_string(),
    )
}

fn metrics(d: &Daemon) -> String {
    common::metrics_text(d)
}

#[test]
fn plain_and_authenticated_binding_with_our_own_client() {
    let d = Daemon::start("");
    let stun = d.stun[0];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = sock.local_addr().unwrap();

    // The minimal 20-byte request gets a 32-byte answer with our observed address.
    let tid = [7u8; 12];
    let reply = exchange(&sock, stun, &RequestBuilder::minimal_binding(tid)).expect("reply");
    assert_eq!(reply.len(), 32);
    assert_eq!(&reply[0..2], &[0x01, 0x01]);
    assert_eq!(&reply[8..20], &tid);
    assert_eq!(xor_mapped(&reply), local);

    // ICE connectivity check with the credentials the daemon handed out.
    let (ufrag, password) = assist_credentials(&d);
    let tid = [9u8; 12];
    let req = signed(
        tid,
        &format!("{ufrag}:remotefrag"),
        &[
            (0x0024, &0x6e7f_1eff_u32.to_be_bytes()), // PRIORITY
            (0x802A, &[1u8; 8]),                      // ICE-CONTROLLING
            (0x0025, &[]),                            // USE-CANDIDATE
        ],
        &password,
    );
    let reply = exchange(&sock, stun, &req).expect("reply");
    assert_eq!(&reply[0..2], &[0x01, 0x01], "success");
    assert_eq!(xor_mapped(&reply), local);
    let list = attrs(&reply);
    let (_, tag, at) = list
        .iter()
        .find(|(t, _, _)| *t == 0x0008)
        .expect("MESSAGE-INTEGRITY")
        .clone();
    let mut covered = reply[..at].to_vec();
    covered[2..4].copy_from_slice(&((at - 20 + 24) as u16).to_be_bytes());
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(&covered);
    mac.verify_slice(&tag)
        .expect("response integrity verifies with the ICE password");
    assert!(list.iter().any(|(t, _, _)| *t == 0x8022), "SOFTWARE");
    assert_eq!(list.last().unwrap().0, 0x8028, "FINGERPRINT last");

    // A wrong password is a 401 without integrity.
    let req = signed([3u8; 12], &ufrag, &[], "not-the-password-not-the-passwor");
    let reply = exchange(&sock, stun, &req).expect("reply");
    assert_eq!(&reply[0..2], &[0x01, 0x11], "error response");
    let list = attrs(&reply);
    let (_, code, _) = list
        .iter()
        .find(|(t, _, _)| *t == 0x0009)
        .expect("ERROR-CODE");
    assert_eq!(code[2] as u16 * 100 + code[3] as u16, 401);
    assert!(!list.iter().any(|(t, _, _)| *t == 0x0008));

    // ICE-CONTROLLED from a valid peer: 487, with integrity.
    let req = signed([4u8; 12], &ufrag, &[(0x8029, &[2u8; 8])], &password);
    let reply = exchange(&sock, stun, &req).expect("reply");
    let list = attrs(&reply);
    let (_, code, _) = list
        .iter()
        .find(|(t, _, _)| *t == 0x0009)
        .expect("ERROR-CODE");
    assert_eq!(code[2] as u16 * 100 + code[3] as u16, 487);
    assert!(list.iter().any(|(t, _, _)| *t == 0x0008));

    // Indications and garbage: silence.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let indication = RequestBuilder::new(0x0011, [5u8; 12]).build();
    assert!(exchange(&sock, stun, &indication).is_none());
    assert!(exchange(&sock, stun, b"GET / HTTP/1.1\r\n\r\n").is_none());

    let text = metrics(&d);
    for (outcome, at_least) in [
        ("unauthenticated", 1),
        ("success", 1),
        ("auth_failure", 1),
        ("role_conflict", 1),
        ("dropped", 2),
    ] {
        let line = format!("commucat_stun_requests_total{{outcome=\"{outcome}\"}} ");
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or("0")
            .parse()
            .unwrap();
        assert!(n >= at_least, "{outcome}: {n}\n{text}");
    }
}

#[test]
fn coturn_turnutils_stunclient_gets_its_reflexive_address() {
    let d = Daemon::start("");
    let stun = d.stun[0];
    let tool = "turnutils_stunclient";
    let mut cmd = Command::new(tool);
    cmd.args(["-p", &stun.port().to_string(), "127.0.0.1"]);
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .status()
            .unwrap()
            .success(),
        "{tool} is missing: apt-get install coturn (.ci/run does)"
    );
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
    let out = format!("{stdout}{stderr}");
    assert!(status.success(), "{tool} failed: {out}");
    assert!(
        out.contains("UDP reflexive addr: 127.0.0.1:"),
        "{tool} printed: {out}"
    );
}

#[test]
fn cli_stun_probe_verifies_integrity_and_fingerprint() {
    let d = Daemon::start("");
    let (ufrag, password) = assist_credentials(&d);
    for sha in [false, true] {
        let mut cmd = Command::new(CLI);
        cmd.args([
            "stun",
            &d.stun[0].to_string(),
            "--ufrag",
            &ufrag,
            "--password",
            &password,
        ]);
        if sha {
            cmd.arg("--sha256");
        }
        let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(30));
        assert!(status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("reflexive address: 127.0.0.1:"), "{stdout}");
        assert!(stdout.contains("integrity:         verified"), "{stdout}");
        assert!(stdout.contains("fingerprint:       verified"), "{stdout}");
    }
    let mut cmd = Command::new(CLI);
    cmd.args([
        "stun",
        &d.stun[0].to_string(),
        "--ufrag",
        &ufrag,
        "--password",
        "wrong",
    ]);
    let (status, stdout, _) = run_to_exit(cmd, Duration::from_secs(30));
    assert!(!status.success());
    assert!(stdout.contains("401"), "{stdout}");
}

#[test]
fn readiness_covers_the_stun_sockets_and_a_taken_port_stops_the_daemon() {
    let d = Daemon::start("");
    let ready = runtime().block_on(async {
        client()
            .get(d.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(ready, 200);

    let taken = d.stun[0].to_string();
    Daemon::refuses_to_start(
        &temp_dir("stun-inuse"),
        "",
        &[("COMMUCAT_ICE_LITE_BIND", &taken)],
        &[&taken, "in use"],
    );
}

#[test]
fn require_integrity_refuses_plain_requests() {
    let d = Daemon::start("[ice]\nrequire_integrity = true\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = RequestBuilder::minimal_binding([1u8; 12]);
    let reply = exchange(&sock, d.stun[0], &request).expect("reply");
    let list = attrs(&reply);
    let (_, code, _) = list
        .iter()
        .find(|(t, _, _)| *t == 0x0009)
        .expect("ERROR-CODE");
    assert_eq!(code[2] as u16 * 100 + code[3] as u16, 400);
}
