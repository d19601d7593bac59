//! Start-up failures, `check-config`, and the CLI against a running daemon.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, CLI, Daemon, run_to_exit, temp_dir};

fn one_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("commucat:"))
        .unwrap_or("")
}

#[test]
fn bad_config_stops_with_exit_2_naming_the_key() {
    let cases = [
        ("[server]\npublic_url = \"ftp://x\"\n", "server.public_url"),
        ("[server]\ndomain = \"\"\n", "server.domain"),
        ("[ice]\nrate_limit_burst = -1\n", "ice.rate_limit_burst"),
        ("[server]\nbindd = \"127.0.0.1:1\"\n", "bindd"),
        (
            "[crypto]\nrotation_interval = 0\n",
            "crypto.rotation_interval",
        ),
        (
            "[crypto]\npq = false\nrequire_pq = true\n",
            "crypto.require_pq",
        ),
        ("[ice]\nturn_ttl = 5\n", "ice.turn_ttl"),
        (
            "[ice]\ncredential_secret = \"zz\"\n",
            "ice.credential_secret",
        ),
        (
            "[[ice.turn]]\nurls = [\"http://x\"]\nsecret = \"s\"\n",
            "ice.turn[0].urls",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[server\n", "line 1"),
    ];
    for (config, key) in cases {
        let dir = temp_dir("badcfg");
        let result = Daemon::try_start_in(&dir, config, &[]);
        let failed = match result {
            Ok(_) => panic!("daemon started with a bad config: {config}"),
            Err(f) => f,
        };
        assert_eq!(failed.status.code(), Some(2), "{config}: {}", failed.stderr);
        let line = one_line(&failed.stderr);
        assert!(line.contains(key), "{config}: {line:?} should name {key}");
        assert_eq!(
            failed.stderr.trim().lines().count(),
            1,
            "one line: {}",
            failed.stderr
        );

        // check-config says the same without starting.
        let mut cmd = Command::new(BIN);
        cmd.arg("check-config")
            .arg("--config")
            .arg(dir.join("commucat.toml"));
        let (status, _, stderr) = run_to_exit(cmd, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2));
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[test]
fn bad_bind_address_names_the_key() {
    let dir = temp_dir("badbind");
    let env = [("COMMUCAT_SERVER_BIND", "not-an-address")];
    let failed = Daemon::refuses_to_start(&dir, "", &env, &["server.bind"]);
    assert_eq!(failed.status.code(), Some(2));
}

#[test]
fn env_override_errors_name_the_variable() {
    let dir = temp_dir("badenv");
    let env = [("COMMUCAT_CRYPTO_PQ", "perhaps")];
    let failed = Daemon::refuses_to_start(&dir, "", &env, &["COMMUCAT_CRYPTO_PQ"]);
    assert_eq!(failed.status.code(), Some(2));
}

#[test]
fn check_config_accepts_the_example_and_defaults() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/commucat.toml.example");
    let mut cmd = Command::new(BIN);
    cmd.args(["check-config", "--config", example]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("valid"));

    let dir = temp_dir("nocfg");
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").current_dir(&dir);
    let (status, stdout, _) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(status.success());
    assert!(stdout.contains("built-in defaults"), "{stdout}");
}

#[test]
fn corrupt_keystore_stops_the_daemon_and_is_kept() {
    let dir = temp_dir("corrupt");
    let d = Daemon::start_in(&dir, "", &[]);
    assert!(d.stop().success());
    let path = dir.join("state").join("noise_keys.json");
    std::fs::write(&path, b"{\"format\":1,\"keys\":[{\"version\":1,").unwrap();
    let failed = Daemon::refuses_to_start(&dir, "", &[], &["noise_keys.json", "corrupt"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"format\":1,\"keys\":[{\"version\":1,"
    );

    let seed = dir.join("state").join("kem.seed");
    std::fs::write(&path, b"").unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&seed, [1u8; 10]).unwrap();
    Daemon::refuses_to_start(&dir, "", &[], &["kem.seed", "corrupt"]);
    assert_eq!(std::fs::read(&seed).unwrap(), [1u8; 10]);
}

#[test]
fn world_readable_keystore_stops_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("perm");
    let d = Daemon::start_in(&dir, "", &[]);
    assert!(d.stop().success());
    let path = dir.join("state").join("identity.seed");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Daemon::refuses_to_start(&dir, "", &[], &["identity.seed", "chmod 600"]);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("inuse");
    Daemon::refuses_to_start(
        &dir,
        "",
        &[("COMMUCAT_SERVER_BIND", &addr)],
        &[&addr, "HTTP"],
    );
}

#[test]
fn generated_pq_keys_are_accepted_by_the_daemon() {
    let (status, stdout, _) = run_to_exit(
        {
            let mut c = Command::new(CLI);
            c.arg("generate-pq-keys");
            c
        },
        Duration::from_secs(20),
    );
    assert!(status.success());
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pq_kem_public = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let d = Daemon::start(&stdout);
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
    assert_eq!(info["post_quantum"]["kem_public_hex"], public.as_str());
    assert!(
        !d.dir.join("state").join("kem.seed").exists(),
        "configured KEM is not written to disk"
    );
}

#[test]
fn cli_server_info_verifies_and_reports_connection_errors() {
    let d = Daemon::start("");
    let mut cmd = Command::new(CLI);
    cmd.args(["server-info", &d.base()]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("verified"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["supported_patterns"][0], "XK");

    let mut cmd = Command::new(CLI);
    cmd.args([
        "assist",
        &d.base(),
        "--mtu",
        "1300",
        "--overhead",
        "0.5",
        "--min-paths",
        "2",
    ]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    let advice: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(advice["multipath"]["fec_mtu"], 1300);

    let mut cmd = Command::new(CLI);
    cmd.args(["assist", &d.base(), "--mtu", "10"]);
    let (status, _, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        stderr.contains("400") && stderr.contains("fec.mtu"),
        "{stderr}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = Command::new(CLI);
    cmd.args(["server-info", &format!("http://{closed}")]);
    let (status, _, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success());
    assert!(stderr.contains("cannot reach"), "{stderr}");

    let mut cmd = Command::new(CLI);
    cmd.args(["server-info", "ftp://x"]);
    let (status, _, stderr) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success());
    assert!(stderr.contains("invalid URL"), "{stderr}");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    use std::io::{Read, Write};
    let d = Daemon::start("");
    let body = br#"{"min_paths": 2}"#;
    let mut stream = std::net::TcpStream::connect(d.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "POST /api/p2p/assist HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SIGTERM while the request is half sent.
    common::sigterm(d.pid());
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[5..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"multipath\""));
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn silent_http_connections_are_closed_after_the_header_timeout() {
    use std::io::Read;
    let d = Daemon::start("[limits]\nhttp_header_timeout_seconds = 1\n");
    let mut silent = std::net::TcpStream::connect(d.http).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    // The server closes (EOF, possibly after a 408) instead of waiting forever.
    let n = silent
        .read(&mut buf)
        .expect("closed by the server, not timed out here");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The daemon still serves.
    let status = common::runtime().block_on(async {
        common::client()
            .get(d.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

#[test]
fn a_second_daemon_on_the_same_state_directory_refuses_to_start() {
    let dir = temp_dir("locked");
    let first = Daemon::start_in(&dir, "", &[]);
    let failed = Daemon::refuses_to_start(&dir, "", &[], &["in use by another commucat"]);
    assert!(!failed.status.success());
    // The first one still serves, with the keys it had.
    assert!(first.stop().success());
}

#[test]
fn one_source_may_not_take_the_whole_connection_pool() {
    use std::io::{Read, Write};
    let d = Daemon::start("[limits]\nmax_http_connections_per_ip = 2\n");
    let mut first = std::net::TcpStream::connect(d.http).unwrap();
    let _second = std::net::TcpStream::connect(d.http).unwrap();
    // Give the accept loop time to take both.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(d.http).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    // The first still serves.
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}
