//! `commucat-cli doctor URL` against real deployments on loopback (issue #9): the daemon,
//! and for the TURN steps a real coturn (tests/common/coturn.rs). A healthy deployment
//! passes every step; each broken one gives its ✗ line, its hint and a non-zero exit.

// Tests may unwrap (clippy.toml); `allow-unwrap-in-tests` does not reach the helpers of
// an integration test crate.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::coturn::{Coturn, CoturnAuth, rest_config, turn_url};
use common::{Daemon, cli, run_to_exit, temp_dir};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The CLI's bound on each step in the broken cases (a silent UDP port waits this long).
const STEP_TIMEOUT: &str = "3";
/// The bound on a whole doctor run.
const RUN_LIMIT: Duration = Duration::from_secs(90);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// The report line of the step whose name starts with `step`.
    fn line(&self, step: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(step))
            })
            .unwrap_or_else(|| panic!("no line for {step:?} in:\n{}{}", self.stdout, self.stderr))
    }

    /// The step failed with a hint that contains `hint`.
    fn assert_failed(&self, step: &str, detail: &str, hint: &str) {
        assert!(!self.status.success(), "{}", self.stdout);
        let line = self.line(step);
        assert!(line.starts_with("✗ "), "{step} should fail: {line}");
        assert!(line.contains(detail), "{step}: {detail:?} not in {line}");
        let (_, given) = line
            .split_once(" — hint: ")
            .unwrap_or_else(|| panic!("no hint: {line}"));
        assert!(given.contains(hint), "{step}: hint {hint:?} not in {line}");
    }

    fn assert_passed(&self, step: &str) {
        let line = self.line(step);
        assert!(
            line.starts_with("✓ "),
            "{step} should pass: {line}\n{}",
            self.stdout
        );
    }
}

fn doctor(base: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(cli());
    cmd.arg("doctor").arg(base).args(args);
    let started = Instant::now();
    let (status, stdout, stderr) = run_to_exit(cmd, RUN_LIMIT);
    Run {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// A loopback UDP port nothing listens on (bound, then released).
fn closed_udp_port() -> u16 {
    UdpSocket::bind((V4, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn closed_tcp_port() -> u16 {
    TcpListener::bind((V4, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_healthy_deployment_passes_every_step() {
    let secret = "doctor-shared-secret";
    let coturn = Coturn::start(V4, &CoturnAuth::Secrets(vec![secret]), &[]);
    let d = Daemon::start(&rest_config(&turn_url(coturn.addr), &[secret]));
    let run = doctor(&d.base(), &["--timeout", "5"]);
    assert!(
        run.status.success(),
        "{}{}\n{}",
        run.stdout,
        run.stderr,
        coturn.log_tail()
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 11, "{}", run.stdout);
    for line in &lines {
        assert!(line.starts_with("✓ "), "not passed: {line}\n{}", run.stdout);
    }
    for step in [
        "server-info",
        "signature",
        "post-quantum",
        "clock",
        "assist",
        "ice-servers",
        "credential-expiry",
        "stun 127.0.0.1:",
        "turn turn:127.0.0.1:",
        "handshake pq (XK v2)",
        "handshake classical (XK v1)",
    ] {
        run.assert_passed(step);
    }
    assert!(
        run.line("turn turn:")
            .contains("relayed a packet to itself")
    );

    // The pinned identity, and JSON.
    let info: serde_json::Value = common::runtime().block_on(async {
        common::client()
            .get(d.url("/api/server-info"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let pin = info["device_ca_public"].as_str().unwrap();
    let run = doctor(
        &d.base(),
        &["--timeout", "5", "--json", "--server-identity", pin],
    );
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
    let steps: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert!(steps.len() >= 11);
    for step in &steps {
        assert_eq!(step["ok"], true, "{step}");
        assert_eq!(step["skipped"], false, "{step}");
        assert!(step["ms"].is_u64(), "{step}");
        assert!(step["detail"].is_string(), "{step}");
        assert!(step["hint"].is_null(), "{step}");
        assert!(step["step"].is_string(), "{step}");
    }
    assert!(
        steps[1]["detail"]
            .as_str()
            .unwrap()
            .contains("pinned identity")
    );

    // A wrong pin fails the signature step and skips the handshakes.
    let other = "00".repeat(1952);
    let run = doctor(&d.base(), &["--timeout", "5", "--server-identity", &other]);
    run.assert_failed("signature", "pinned", "device_ca_public");
    assert!(run.line("handshake pq").starts_with("- "), "{}", run.stdout);
}

#[test]
fn a_wrong_turn_secret_is_named() {
    let coturn = Coturn::start(V4, &CoturnAuth::Secrets(vec!["coturn-secret"]), &[]);
    let d = Daemon::start(&rest_config(&turn_url(coturn.addr), &["daemon-secret"]));
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed("turn turn:", "credentials refused", "static-auth-secret");
    run.assert_passed("stun");
    run.assert_passed("handshake pq");
}

#[test]
fn an_unreachable_turn_server_is_named() {
    let addr = SocketAddr::new(V4, closed_udp_port());
    let d = Daemon::start(&rest_config(&turn_url(addr), &["secret"]));
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed("turn turn:", "no Allocate response", "is coturn running");
}

#[test]
fn a_closed_stun_port_is_named() {
    let port = closed_udp_port();
    let d = Daemon::start(&format!(
        "[ice]\nlite_public_address = \"127.0.0.1:{port}\"\n"
    ));
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed(
        &format!("stun 127.0.0.1:{port}"),
        "no STUN answer",
        "closed",
    );
    run.assert_passed("assist");
}

#[test]
fn a_wrong_lite_public_address_is_named() {
    // The responder listens on 0.0.0.0:P and so answers a request sent to 127.0.0.2:P
    // from 127.0.0.1:P: the advertised address is not where the answers come from.
    let port = closed_udp_port();
    let dir = temp_dir("doctor-lite");
    let bind = format!("0.0.0.0:{port}");
    let d = Daemon::start_in(
        &dir,
        &format!("[ice]\nlite_public_address = \"127.0.0.2:{port}\"\n"),
        &[("COMMUCAT_ICE_LITE_BIND", &bind)],
    );
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed(
        &format!("stun 127.0.0.2:{port}"),
        &format!("the answer came from 127.0.0.1:{port}"),
        "lite_public_address",
    );
}

#[test]
fn pq_disabled_is_named() {
    let d = Daemon::start("[crypto]\npq = false\n");
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed(
        "post-quantum",
        "post_quantum.enabled is false",
        "crypto.pq = false on the server",
    );
    assert!(run.line("handshake pq").starts_with("- "), "{}", run.stdout);
    run.assert_passed("handshake classical");
}

#[test]
fn an_unreachable_url_fails_fast() {
    let base = format!("http://127.0.0.1:{}", closed_tcp_port());
    let run = doctor(&base, &[]);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    run.assert_failed("server-info", "Connection refused", "nothing listens there");
    assert!(run.line("assist").starts_with("- "), "{}", run.stdout);
    let run = doctor(&base, &["--json"]);
    let steps: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(steps[0]["ok"], false);
    assert!(steps[0]["hint"].is_string());
    assert!(steps[1..].iter().all(|s| s["skipped"] == true));
}

#[test]
fn a_client_clock_ten_minutes_off_is_named() {
    let d = Daemon::start("");
    let run = doctor(
        &d.base(),
        &["--timeout", STEP_TIMEOUT, "--clock-offset-secs", "600"],
    );
    run.assert_failed("clock", "-600 s", "NTP");
    run.assert_failed("credential-expiry", "ttl_secs", "NTP");
    let run = doctor(
        &d.base(),
        &["--timeout", STEP_TIMEOUT, "--clock-offset-secs", "-600"],
    );
    run.assert_failed("clock", "+600 s", "NTP");

    // Not the daemon's base URL: HTTP 404, and the hint says so.
    let run = doctor(&format!("{}/nope", d.base()), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed("server-info", "HTTP 404", "base URL");
}

#[test]
fn a_missing_access_token_is_named() {
    let token = "doctor-static-token-0123456789";
    let d = Daemon::start(&format!(
        "[auth]\nrequired = true\ntokens = [\"{token}\"]\n"
    ));
    let run = doctor(&d.base(), &["--timeout", STEP_TIMEOUT]);
    run.assert_failed("assist", "401", "--access-token");
    run.assert_failed("handshake pq", "401", "--access-token");
    let run = doctor(
        &d.base(),
        &[
            "--timeout",
            STEP_TIMEOUT,
            "--access-token",
            "not-the-token-0123456789",
        ],
    );
    run.assert_failed("assist", "401", "token was refused");
    let run = doctor(
        &d.base(),
        &["--timeout", STEP_TIMEOUT, "--access-token", token],
    );
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
}
