//! The daemon terminating TLS itself (`[server] tls_cert`, `tls_key`), through the real
//! binary on loopback: HTTPS with HTTP/2 and HTTP/1.1 by ALPN, `wss://` upgrades,
//! deadlines before the first request, SIGHUP reloads, and refusing bad files at start.

// Tests may unwrap (clippy.toml), helpers outside `#[test]` functions included.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, Daemon, run_to_exit, runtime, sighup, temp_dir};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM.
struct Identity {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn identity() -> Identity {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    Identity {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

/// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
fn install(dir: &Path, id: &Identity) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &id.cert_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    (cert, key)
}

fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// A daemon serving `id`, configured in the file; `env` adds overrides.
fn start_tls(id: &Identity, env: &[(&str, &str)]) -> Daemon {
    let dir = temp_dir("tls");
    let (cert, key) = install(&dir, id);
    let d = Daemon::start_in(&dir, &tls_config(&cert, &key), env);
    assert!(d.log().contains("serving HTTPS"), "{}", d.log());
    d
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that trusts only `roots` and offers `alpn`.
fn client_config(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// reqwest trusting only `id`; it offers `h2` and `http/1.1` unless `http1_only`.
fn https_client(id: &Identity, http1_only: bool) -> reqwest::Client {
    install_provider();
    let root = reqwest::Certificate::from_pem(id.cert_pem.as_bytes()).unwrap();
    let builder = reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(WAIT);
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().unwrap()
}

async fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// The end-entity certificate the server presented.
fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 request on an open (keep-alive) connection: status and body.
async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("response in time")
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(mut read: impl tokio::io::AsyncRead + Unpin, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
    started.elapsed()
}

#[test]
fn https_negotiates_http2_and_upgrades_wss() {
    let id = identity();
    let d = start_tls(&id, &[]);
    runtime().block_on(async {
        // HTTP/2 when offered; endpoints say wss://.
        let response = https_client(&id, false)
            .get(d.https_url("/api/server-info"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let info: serde_json::Value = response.json().await.unwrap();
        let connect = info["endpoints"]["connect"].as_str().unwrap();
        assert!(connect.starts_with("wss://"), "{connect}");
        assert_eq!(connect, format!("wss://{}/api/connect", d.http));

        // Several requests on one HTTP/2 connection, and assist over it.
        let client = https_client(&id, false);
        for _ in 0..3 {
            let r = client
                .get(d.https_url("/api/p2p/assist"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
        }

        // HTTP/1.1 when that is all the client offers.
        let response = https_client(&id, true)
            .get(d.https_url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.text().await.unwrap(), "ok\n");

        // The signed document verifies over HTTPS with the library's fetcher.
        let base = format!("https://{}", d.http);
        let typed =
            commucat::client::http::fetch_server_info(&https_client(&id, false), &base, None)
                .await
                .unwrap();
        assert_eq!(typed.endpoints.connect, connect);

        // WebSocket upgrade over TLS (tungstenite offers no ALPN: HTTP/1.1).
        let connector = tokio_tungstenite::Connector::Rustls(client_config(&[&id.der], &[]));
        let (mut ws, response) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_tls_with_config(
                format!("wss://{}/api/connect", d.http),
                None,
                false,
                Some(connector),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status(), 101);
        let _ = ws.close(None).await;

        // No plain HTTP on the TLS port.
        let plain = common::client().get(d.url("/healthz")).send().await;
        assert!(plain.is_err(), "{plain:?}");
    });
    assert!(d.stop().success());
}

#[test]
fn silent_connections_are_closed_and_free_their_slot() {
    let id = identity();
    let d = start_tls(
        &id,
        &[
            ("COMMUCAT_LIMITS_HTTP_HEADER_TIMEOUT_SECONDS", "1"),
            ("COMMUCAT_LIMITS_MAX_HTTP_CONNECTIONS", "1"),
        ],
    );
    runtime().block_on(async {
        // No TLS handshake at all: closed at the header-read deadline.
        let tcp = TcpStream::connect(d.http).await.unwrap();
        let took = closed_after(tcp, WAIT).await;
        assert!(took >= Duration::from_millis(800), "{took:?}");

        // HTTP/2 negotiated, then silence: hyper has no deadline of its own for HTTP/2.
        let h2 = tls_connect(d.http, client_config(&[&id.der], &[b"h2"])).await;
        assert_eq!(h2.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let took = closed_after(h2, WAIT).await;
        assert!(took >= Duration::from_millis(800), "{took:?}");

        // HTTP/1.1, then silence.
        let h1 = tls_connect(d.http, client_config(&[&id.der], &[b"http/1.1"])).await;
        closed_after(h1, WAIT).await;

        // The only connection slot is held by a silent client; a request waits for the
        // deadline to free it, then is served.
        let _silent = TcpStream::connect(d.http).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let response = https_client(&id, false)
            .get(d.https_url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(500));
    });
    assert!(d.stop().success());
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let first = identity();
    let second = identity();
    let dir = temp_dir("tls-reload");
    let (cert, key) = install(&dir, &first);
    // The files given through the environment this time.
    let d = Daemon::start_in(
        &dir,
        "",
        &[
            ("COMMUCAT_SERVER_TLS_CERT", cert.to_str().unwrap()),
            ("COMMUCAT_SERVER_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let both = client_config(&[&first.der, &second.der], &[b"http/1.1"]);
    runtime().block_on(async {
        let mut before = tls_connect(d.http, both.clone()).await;
        assert_eq!(served(&before), first.der);
        assert_eq!(get(&mut before, "/healthz").await, (200, "ok\n".into()));

        install(&dir, &second);
        sighup(d.pid());
        d.wait_for_log("TLS certificate reloaded", WAIT)
            .expect("reload logged");

        let mut after = tls_connect(d.http, both.clone()).await;
        assert_eq!(served(&after), second.der);
        assert_eq!(get(&mut after, "/healthz").await, (200, "ok\n".into()));
        // The connection opened before the reload keeps its session.
        assert_eq!(get(&mut before, "/healthz").await, (200, "ok\n".into()));
        // A client that trusts only the new certificate gets in.
        let only_new = https_client(&second, false);
        let r = only_new.get(d.https_url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);

        // A broken key: the reload fails, says why, and the daemon keeps serving.
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        sighup(d.pid());
        let line = d
            .wait_for_log("keeping the previous one", WAIT)
            .expect("failed reload logged");
        assert!(line.contains("server.tls_key"), "{line}");
        assert!(line.contains("key.pem"), "{line}");
        let mut still = tls_connect(d.http, both.clone()).await;
        assert_eq!(served(&still), second.der);
        assert_eq!(get(&mut still, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(get(&mut before, "/healthz").await, (200, "ok\n".into()));
    });
    assert!(d.stop().success());
}

#[test]
fn plain_http_says_so_and_survives_sighup() {
    let d = Daemon::start("");
    assert!(d.log().contains("serving plain HTTP"), "{}", d.log());
    assert!(d.log().contains("TLS reverse proxy"), "{}", d.log());
    sighup(d.pid());
    d.wait_for_log("nothing to reload", WAIT)
        .expect("reload logged");
    let body = runtime().block_on(async {
        common::client()
            .get(d.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(body, "ok\n");
    assert!(d.stop().success());
}

/// The one `commucat: …` line of a refused start.
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("commucat: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

#[test]
fn bad_tls_files_refuse_to_start_naming_the_setting() {
    let id = identity();
    let other = identity();
    let dir = temp_dir("tls-bad");
    let (cert, key) = install(&dir, &id);
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();

    let cases = [
        (
            tls_config(&missing, &key),
            "server.tls_cert",
            "missing.pem: no such file",
        ),
        (
            tls_config(&garbage, &key),
            "server.tls_cert",
            "holds no certificate",
        ),
        (
            tls_config(&cert, &garbage),
            "server.tls_key",
            "holds no private key",
        ),
        (
            tls_config(&cert, &other_key),
            "server.tls_key",
            "does not match the certificate",
        ),
        (
            format!("[server]\ntls_cert = {:?}\n", cert.display().to_string()),
            "server.tls_key",
            "missing",
        ),
    ];
    for (config, setting, reason) in &cases {
        let failed = Daemon::refuses_to_start(&dir, config, &[], &[setting, reason]);
        assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
        let line = error_line(&failed.stderr);
        assert!(
            line.starts_with(&format!("commucat: config error: {setting}: ")),
            "{line}"
        );
        assert!(line.contains(reason), "{line}");
    }
    assert!(
        !dir.join("state").exists(),
        "nothing is created before the files are checked"
    );

    // check-config reads the files too, so they can be checked before a reload.
    let path = dir.join("check.toml");
    std::fs::write(&path, tls_config(&cert, &other_key)).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config").arg(&path).arg("check-config");
    let (status, _, stderr) = run_to_exit(cmd, WAIT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        error_line(&stderr).starts_with("commucat: config error: server.tls_key: "),
        "{stderr}"
    );
    std::fs::write(&path, tls_config(&cert, &key)).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config").arg(&path).arg("check-config");
    let (status, stdout, stderr) = run_to_exit(cmd, WAIT);
    assert!(status.success(), "{stdout}{stderr}");
}
